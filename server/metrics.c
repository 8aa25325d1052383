/* server/metrics.c - counters and histograms behind GET /metrics. */
#include "server/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const route_names[CHEX_ROUTE_COUNT] = {
    "/v1/predict", "/healthz", "/readyz", "/v1/model", "/v2/health/live", "/v2/health/ready",
    "/metrics", "/v1/explain", "/", "/v2/models", "/v2/models/infer", "/v1/models",
    "/v1/models/reload", "other"};

const char *chex_route_name(chex_route r)
{
    return (r >= 0 && r < CHEX_ROUTE_COUNT) ? route_names[r] : "other";
}

/* Every status the daemon answers; anything else is counted as 500. */
static const int statuses[] = {200, 400, 401, 404, 405, 413, 415, 422, 500, 503, 504};
#define NSTATUS (sizeof statuses / sizeof statuses[0])

#define MAX_BUCKETS 16
typedef struct {
    const char *name, *help;
    int nb;
    double bounds[MAX_BUCKETS];
    unsigned long long counts[MAX_BUCKETS + 1]; /* last: +Inf */
    double sum;
    unsigned long long total;
} histogram;

static struct {
    pthread_mutex_t lock;
    atomic_ullong requests[CHEX_ROUTE_COUNT][NSTATUS];
    atomic_ullong images;
    atomic_int in_flight;
    histogram req, inf, batch;
    char name[256], sha[65];
    int demo;
} M = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .req = {"chexd_request_duration_seconds", "Time from request headers to the answer sent.", 12,
               {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, {0}, 0, 0},
       .inf = {"chexd_inference_duration_seconds", "Time of one forward pass (one batch).", 12,
               {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, {0}, 0, 0},
       .batch = {"chexd_batch_size", "Images per forward pass.", 8,
                 {1, 2, 4, 8, 16, 32, 64, 128}, {0}, 0, 0}};

/* Prometheus label values escape backslash, double quote and newline. */
static void escape_label(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 3 < cap; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

void chex_metrics_init(const chex_model_info *info)
{
    chex_metrics_model(info);
}

void chex_metrics_model(const chex_model_info *info)
{
    pthread_mutex_lock(&M.lock);
    escape_label(M.name, sizeof M.name, info->name);
    snprintf(M.sha, sizeof M.sha, "%s", info->sha256);
    M.demo = info->demo;
    pthread_mutex_unlock(&M.lock);
}

static void observe(histogram *h, double v)
{
    pthread_mutex_lock(&M.lock);
    int i = 0;
    while (i < h->nb && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->total++;
    pthread_mutex_unlock(&M.lock);
}

void chex_metrics_request(chex_route r, int status, double seconds)
{
    size_t s = 0;
    while (s < NSTATUS && statuses[s] != status)
        s++;
    if (s == NSTATUS) {
        s = 0;
        while (statuses[s] != 500)
            s++;
    }
    if (r < 0 || r >= CHEX_ROUTE_COUNT)
        r = CHEX_ROUTE_OTHER;
    atomic_fetch_add(&M.requests[r][s], 1);
    observe(&M.req, seconds);
}

void chex_metrics_inference(double seconds, int batch_images)
{
    observe(&M.inf, seconds);
    observe(&M.batch, (double)batch_images);
}

void chex_metrics_images(int n) { atomic_fetch_add(&M.images, (unsigned long long)n); }

void chex_metrics_in_flight(int delta) { atomic_fetch_add(&M.in_flight, delta); }

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n;
        char *nb = realloc(b->buf, nc);
        if (!nb) {
            b->failed = 1;
            return;
        }
        b->buf = nb;
        b->cap = nc;
    }
}

static void render_hist(sbuf *b, const histogram *h)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    unsigned long long cum = 0;
    for (int i = 0; i < h->nb; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->bounds[i], cum);
    }
    cum += h->counts[h->nb];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", h->name, cum,
              h->name, h->sum, h->name, h->total);
}

char *chex_metrics_render(int queue_depth, const chex_metrics_memory *mem)
{
    sbuf b = {malloc(8192), 0, 8192, 0};
    if (!b.buf)
        return NULL;
    b.buf[0] = '\0';
    sb_printf(&b, "# HELP chexd_requests_total HTTP requests answered, by route and status.\n"
                  "# TYPE chexd_requests_total counter\n");
    for (int r = 0; r < CHEX_ROUTE_COUNT; r++)
        for (size_t s = 0; s < NSTATUS; s++) {
            unsigned long long v = atomic_load(&M.requests[r][s]);
            if (v)
                sb_printf(&b, "chexd_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          route_names[r], statuses[s], v);
        }
    histogram req, inf, batch;
    char mname[sizeof M.name], msha[sizeof M.sha];
    int mdemo;
    pthread_mutex_lock(&M.lock);
    req = M.req;
    inf = M.inf;
    batch = M.batch;
    memcpy(mname, M.name, sizeof mname);
    memcpy(msha, M.sha, sizeof msha);
    mdemo = M.demo;
    pthread_mutex_unlock(&M.lock);
    render_hist(&b, &req);
    render_hist(&b, &inf);
    render_hist(&b, &batch);
    sb_printf(&b,
              "# HELP chexd_queue_depth Requests waiting for the inference worker.\n"
              "# TYPE chexd_queue_depth gauge\nchexd_queue_depth %d\n"
              "# HELP chexd_in_flight_requests Requests being read, queued, run or answered.\n"
              "# TYPE chexd_in_flight_requests gauge\nchexd_in_flight_requests %d\n"
              "# HELP chexd_images_classified_total Images classified successfully.\n"
              "# TYPE chexd_images_classified_total counter\nchexd_images_classified_total %llu\n"
              "# HELP chexd_model_info The loaded model.\n# TYPE chexd_model_info gauge\n"
              "chexd_model_info{name=\"%s\",sha256=\"%s\",demo=\"%s\"} 1\n",
              queue_depth, atomic_load(&M.in_flight), atomic_load(&M.images), mname, msha,
              mdemo ? "true" : "false");
    if (mem)
        sb_printf(&b,
                  "# HELP chexd_memory_reserved_bytes Bytes requests hold in the memory budget.\n"
                  "# TYPE chexd_memory_reserved_bytes gauge\nchexd_memory_reserved_bytes %llu\n"
                  "# HELP chexd_memory_cached_bytes Freed request bodies kept resident for "
                  "reuse (in the budget, given back when a reservation needs the room).\n"
                  "# TYPE chexd_memory_cached_bytes gauge\nchexd_memory_cached_bytes %llu\n"
                  "# HELP chexd_memory_limit_bytes The whole process's budget (memory_limit_mb; "
                  "0 = none).\n"
                  "# TYPE chexd_memory_limit_bytes gauge\nchexd_memory_limit_bytes %llu\n"
                  "# HELP chexd_memory_requests_limit_bytes What requests may hold together: the "
                  "limit minus what was resident at start and the HTTP side's reserve.\n"
                  "# TYPE chexd_memory_requests_limit_bytes gauge\n"
                  "chexd_memory_requests_limit_bytes %llu\n"
                  "# HELP chexd_memory_reserved_peak_bytes Most bytes requests held at once.\n"
                  "# TYPE chexd_memory_reserved_peak_bytes gauge\n"
                  "chexd_memory_reserved_peak_bytes %llu\n"
                  "# HELP chexd_memory_refusals_total Reservations that did not fit at once.\n"
                  "# TYPE chexd_memory_refusals_total counter\nchexd_memory_refusals_total %llu\n",
                  (unsigned long long)mem->reserved, (unsigned long long)mem->cached,
                  (unsigned long long)mem->limit,
                  (unsigned long long)mem->requests_limit, (unsigned long long)mem->peak,
                  mem->refused);
    if (b.failed) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}
