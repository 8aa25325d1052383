/* server/metrics.h - chexd's Prometheus metrics. Thread-safe: counters are
 * atomics, histograms take a short mutex. One global instance per process
 * (chex_metrics_init once from main before threads start). No per-image labels. */
#ifndef CHEX_METRICS_H
#define CHEX_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef enum {
    CHEX_ROUTE_PREDICT = 0,
    CHEX_ROUTE_HEALTHZ,
    CHEX_ROUTE_READYZ,
    CHEX_ROUTE_MODEL,
    CHEX_ROUTE_LIVE,
    CHEX_ROUTE_READY,
    CHEX_ROUTE_METRICS,
    CHEX_ROUTE_EXPLAIN,
    CHEX_ROUTE_WEB, /* the page at / (index.html, app.js, style.css) */
    CHEX_ROUTE_OIP,   /* GET /v2, /v2/models/{m}[/versions/{v}][/ready] */
    CHEX_ROUTE_INFER, /* POST /v2/models/{m}[/versions/{v}]/infer */
    CHEX_ROUTE_MODELS, /* GET /v1/models */
    CHEX_ROUTE_RELOAD, /* POST /v1/models/{m}/reload */
    CHEX_ROUTE_OTHER,
    CHEX_ROUTE_COUNT
} chex_route;

const char *chex_route_name(chex_route r);

void chex_metrics_init(const chex_model_info *info);
/* chexd_model_info's model (the first served): after a reload, the new weights. */
void chex_metrics_model(const chex_model_info *info);

void chex_metrics_request(chex_route r, int status, double seconds);
void chex_metrics_inference(double seconds, int batch_images);
void chex_metrics_images(int n);
void chex_metrics_in_flight(int delta);

/* The memory budget's figures, sampled by the caller (server/budget.h). */
typedef struct {
    uint64_t reserved; /* held by requests */
    uint64_t cached;   /* kept body buffers (reserved too, given back on demand) */
    uint64_t limit, requests_limit, peak;
    unsigned long long refused;
} chex_metrics_memory;

/* Prometheus text exposition (format 0.0.4), malloc'd; queue_depth and mem
 * (NULL: not shown) sampled by the caller. NULL on ENOMEM. */
char *chex_metrics_render(int queue_depth, const chex_metrics_memory *mem);

#endif
