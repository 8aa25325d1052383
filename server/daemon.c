/* server/daemon.c - chexd's HTTP service on libmicrohttpd.
 *
 * Request life: the first callback (headers only) allocates one `req`, routes,
 * authenticates and checks Content-Length/Content-Type (early errors are queued
 * right there, which discards the body). Body callbacks append into a buffer
 * bounded by max_upload_bytes (raw) or feed the multipart post processor. The
 * final callback decodes + preprocesses on this HTTP thread, pushes the request
 * into the bounded queue and suspends the connection. The worker batches
 * images, runs the network, stores the probabilities and resumes; libmicrohttpd
 * then calls the handler again and the answer is serialised here. Everything a
 * request owns is freed in the completion callback.
 */
#include "server/daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/answer.h"
#include "server/heatmap.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/web.h"

#define MAX_PARTS 32
#define POST_BUFFER 16384

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} bytes;

enum { BODY_NONE = 0, BODY_RAW, BODY_MULTIPART };
enum { ST_READING = 0, ST_QUEUED, ST_RESUMED, ST_ANSWERED };

typedef struct req req;
struct req {
    chexd *d;
    struct MHD_Connection *conn;
    char id[65];
    char method[12];
    char path[96];
    chex_route route;
    double t0;
    int body;
    bytes raw;
    struct MHD_PostProcessor *pp;
    bytes parts[MAX_PARTS];
    int nparts;
    int part_open; /* the iterator is inside parts[nparts-1] */
    uint64_t received;
    /* An error decided while reading the body, answered on the final call. */
    int err_status;
    char err_code[32];
    char err_msg[256];
    chex_answer_opts opts;
    int cam;        /* CHEX_CAM_NONE, CHEX_CAM_TOP or a label: ?cam= / explain's ?label= */
    /* Inference, touched by the worker only between enqueue and resume. */
    chex_prepared *imgs;
    int nimg;
    float *probs;
    float *cam_raw; /* (nimg, chex_heatmap_raw_floats) when cam != CHEX_CAM_NONE */
    int *cam_label; /* (nimg) resolved label of each map */
    int next_img; /* next image the worker takes (under the queue lock) */
    int done_img; /* worker only */
    double t_enqueued;
    int state;
    int result_status; /* set before resume: 200, 500, 503 or 504 */
    char result_msg[160];
    req *qnext;
    /* Answer, for the log line. */
    int status;
    unsigned long long bytes_out;
};

struct chexd {
    const chex_config *cfg;
    const chex_pipeline *p;
    struct MHD_Daemon *mhd;
    int listen_fd;
    int omp_threads;
    /* API token (empty: no authentication). */
    char token[512];
    size_t token_len;
    char *tls_cert, *tls_key;
    /* Queue. */
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* worker: work arrived / stop */
    pthread_cond_t reap_cond; /* reaper: stop */
    req *head, *tail;
    int queued;         /* requests in the queue */
    int pending_images; /* images not yet taken by the worker */
    int worker_busy;
    int stop_worker, stop_reaper;
    pthread_t worker, reaper;
    int worker_started, reaper_started;
    chex_model_ws *ws;
    chex_pipeline_batch batch;
    atomic_int draining;
    atomic_int active; /* requests between first callback and completion */
    atomic_int shed;   /* queued requests refused at shutdown */
};

/* ---------- small helpers ---------- */

static void make_request_id(char *out, size_t cap, struct MHD_Connection *c)
{
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given) {
        size_t n = strlen(given), i;
        for (i = 0; i < n; i++) {
            char ch = given[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_' || ch == '.'))
                break;
        }
        if (n >= 1 && n < cap && n <= 64 && i == n) {
            memcpy(out, given, n + 1);
            return;
        }
    }
    static atomic_ullong counter;
    unsigned char r[8];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        unsigned long long v = atomic_fetch_add(&counter, 1) ^ (unsigned long long)time(NULL) << 20;
        memcpy(r, &v, sizeof r);
    }
    snprintf(out, cap, "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
}

static chex_route route_of(const char *url)
{
    static const struct {
        const char *path;
        chex_route r;
    } routes[] = {{"/v1/predict", CHEX_ROUTE_PREDICT},   {"/healthz", CHEX_ROUTE_HEALTHZ},
                  {"/readyz", CHEX_ROUTE_READYZ},        {"/v1/model", CHEX_ROUTE_MODEL},
                  {"/v2/health/live", CHEX_ROUTE_LIVE},  {"/v2/health/ready", CHEX_ROUTE_READY},
                  {"/metrics", CHEX_ROUTE_METRICS},      {"/v1/explain", CHEX_ROUTE_EXPLAIN}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].path) == 0)
            return routes[i].r;
    if (chex_web_find(url))
        return CHEX_ROUTE_WEB;
    return CHEX_ROUTE_OTHER;
}

/* Printable copy of the path for the log (unknown routes are logged as sent). */
static void safe_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src && o + 1 < cap; src++)
        dst[o++] = ((unsigned char)*src >= 0x21 && (unsigned char)*src < 0x7f) ? *src : '?';
    dst[o] = '\0';
}

static int ct_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

/* Constant-time comparison: time depends only on the lengths of the token. */
static int token_ok(const chexd *d, const char *header)
{
    if (!header)
        return 0;
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return 0;
    const char *given = header + 7;
    while (*given == ' ')
        given++;
    size_t glen = strlen(given);
    unsigned diff = (unsigned)(glen ^ d->token_len);
    for (size_t i = 0; i < d->token_len; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)d->token[i]);
    }
    return diff == 0;
}

static int bytes_append(bytes *b, const char *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 65536;
        while (nc < b->len + n)
            nc *= 2;
        uint8_t *nb = realloc(b->buf, nc);
        if (!nb)
            return -1;
        b->buf = nb;
        b->cap = nc;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    return 0;
}

static void bytes_free(bytes *b)
{
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

static void set_error(req *r, int status, const char *code, const char *fmt, ...)
{
    if (r->err_status)
        return; /* the first error wins */
    r->err_status = status;
    snprintf(r->err_code, sizeof r->err_code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof r->err_msg, fmt, ap);
    va_end(ap);
}

/* ---------- responses ---------- */

static enum MHD_Result send_body(req *r, int status, char *body, const char *ctype,
                                 const char *allow, int retry_after)
{
    if (!body) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
        body = strdup(oom);
        status = 500;
        ctype = "application/json";
        if (!body)
            return MHD_NO;
    }
    size_t len = strlen(body);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (atomic_load(&r->d->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    r->status = status;
    r->bytes_out = len;
    r->state = ST_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A binary or static body: mode MHD_RESPMEM_MUST_FREE (data malloc'd, taken
 * over) or MHD_RESPMEM_PERSISTENT (embedded bytes). */
static enum MHD_Result send_bytes(req *r, int status, void *data, size_t len,
                                  enum MHD_ResponseMemoryMode mode, const char *ctype,
                                  const char *label)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (label)
        MHD_add_response_header(resp, "X-Chexd-Label", label);
    if (r->route != CHEX_ROUTE_WEB)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (atomic_load(&r->d->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    r->status = status;
    r->bytes_out = len;
    r->state = ST_ANSWERED;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_json(req *r, int status, json_t *j)
{
    return send_body(r, status, chex_answer_dump(j), "application/json", NULL, 0);
}

static enum MHD_Result send_error_ex(req *r, int status, const char *code, const char *msg,
                                     const char *allow, int retry_after)
{
    return send_body(r, status, chex_answer_dump(chex_answer_error(code, msg, r->id)),
                     "application/json", allow, retry_after);
}

static enum MHD_Result send_error(req *r, int status, const char *code, const char *msg)
{
    return send_error_ex(r, status, code, msg, NULL, status == 503 ? 1 : 0);
}

/* ---------- queue and worker ---------- */

static void resume_with(req *r, int status, const char *msg)
{
    r->result_status = status;
    snprintf(r->result_msg, sizeof r->result_msg, "%s", msg ? msg : "");
    r->state = ST_RESUMED;
    MHD_resume_connection(r->conn);
}

/* Removes r from the queue (lock held). */
static void unlink_locked(chexd *d, req *r)
{
    req **pp = &d->head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = r->qnext;
    if (d->tail == r)
        d->tail = prev;
    r->qnext = NULL;
    d->queued--;
    d->pending_images -= r->nimg - r->next_img;
}

static void *worker_main(void *arg)
{
    chexd *d = arg;
    const chex_pipeline *p = d->p;
    int maxb = d->batch.max_images;
    int nl = p->info->num_labels;
    req *who[256];
    int idx[256];
    chex_prepared *imgs[256];
    float probs[256 * CHEX_MODEL_MAX_LABELS];
    omp_set_num_threads(d->omp_threads);
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (!d->head && !d->stop_worker)
            pthread_cond_wait(&d->cond, &d->lock);
        if (!d->head && d->stop_worker)
            break;
        /* Dynamic batch: wait until max_batch images are pending or the oldest
         * request has waited batch_window_ms. */
        double deadline = d->head->t_enqueued + d->cfg->batch_window_ms;
        while (d->head && d->pending_images < maxb && !d->stop_worker && now_ms() < deadline) {
            double left = deadline - now_ms();
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long ns = (long long)ts.tv_nsec + (long long)(left * 1e6);
            ts.tv_sec += (time_t)(ns / 1000000000LL);
            ts.tv_nsec = (long)(ns % 1000000000LL);
            pthread_cond_timedwait(&d->cond, &d->lock, &ts);
        }
        int n = 0;
        while (d->head && n < maxb) {
            req *r = d->head;
            while (r->next_img < r->nimg && n < maxb) {
                who[n] = r;
                idx[n] = r->next_img;
                imgs[n] = &r->imgs[r->next_img];
                r->next_img++;
                d->pending_images--;
                n++;
            }
            if (r->next_img == r->nimg) {
                d->head = r->qnext;
                if (!d->head)
                    d->tail = NULL;
                r->qnext = NULL;
                d->queued--;
            }
        }
        if (n == 0)
            continue;
        d->worker_busy = 1;
        pthread_mutex_unlock(&d->lock);

        double t0 = now_ms();
        chex_model_err e = chex_pipeline_infer_batch(p, d->ws, &d->batch, imgs, n, probs);
        double t1 = now_ms();
        if (e == CHEX_MODEL_OK) {
            chex_metrics_inference((t1 - t0) / 1e3, n);
            chex_metrics_images(n);
            /* Class activation maps read this forward's features: now,
             * before the next pass overwrites them. Buffers were sized at
             * enqueue time; nothing is allocated here. */
            size_t rawf = chex_heatmap_raw_floats(p);
            for (int i = 0; i < n; i++) {
                req *r = who[i];
                if (r->cam == CHEX_CAM_NONE)
                    continue;
                int label = chex_heatmap_resolve(r->cam, probs + (size_t)i * nl, nl);
                r->cam_label[idx[i]] = label;
                char cmsg[160];
                if (chex_heatmap_take(p, d->ws, i * p->ncrops, label,
                                      r->cam_raw + (size_t)idx[i] * rawf, cmsg, sizeof cmsg) != 0) {
                    r->result_status = 500;
                    snprintf(r->result_msg, sizeof r->result_msg, "%s", cmsg);
                }
            }
        } else {
            chex_log(CHEX_LOG_ERROR, "inference failed", "error", chex_model_strerror(e), NULL);
        }
        for (int i = 0; i < n; i++) {
            req *r = who[i];
            imgs[i]->timing.queue_ms = t0 - r->t_enqueued;
            if (e == CHEX_MODEL_OK)
                memcpy(r->probs + (size_t)idx[i] * nl, probs + (size_t)i * nl,
                       (size_t)nl * sizeof(float));
            else
                r->result_status = 500;
            if (e != CHEX_MODEL_OK)
                snprintf(r->result_msg, sizeof r->result_msg, "%s", chex_model_strerror(e));
            if (++r->done_img == r->nimg) {
                r->result_status = r->result_status ? r->result_status : 200;
                r->state = ST_RESUMED;
                MHD_resume_connection(r->conn);
            }
        }
        pthread_mutex_lock(&d->lock);
        d->worker_busy = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Answers 504 for queued requests (none of their images started) whose wait
 * exceeded request_timeout_ms: suspended connections never time out by
 * themselves. */
static void *reaper_main(void *arg)
{
    chexd *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stop_reaper) {
        double now = now_ms();
        req *r = d->head;
        while (r) {
            req *next = r->qnext;
            if (r->next_img == 0 && now - r->t_enqueued > d->cfg->request_timeout_ms) {
                unlink_locked(d, r);
                resume_with(r, 504, "");
            }
            r = next;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->reap_cond, &d->lock, &ts);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* ---------- routes ---------- */

static enum MHD_Result answer_model(req *r)
{
    const chexd *d = r->d;
    const chex_model_info *in = d->p->info;
    json_t *labels = json_array();
    for (int i = 0; labels && i < in->num_labels; i++)
        json_array_append_new(labels, json_string(in->labels[i]));
    json_t *mean = json_array(), *std = json_array();
    for (int c = 0; mean && std && c < in->input_channels; c++) {
        json_array_append_new(mean, json_real(in->mean[c]));
        json_array_append_new(std, json_real(in->std[c]));
    }
    json_t *j = json_pack(
        "{s:s, s:s, s:o, s:{s:i, s:i, s:o, s:o}, s:s, s:i, s:s, s:b, s:i, s:i, s:i, s:s, s:s}",
        "name", in->name, "architecture", in->architecture, "labels", labels, "input",
        "channels", in->input_channels, "size", in->input_size, "mean", mean, "std", std,
        "preprocess", in->preprocess, "crops_per_image", d->p->ncrops, "sha256", in->sha256,
        "demo", in->demo ? 1 : 0, "threads", d->omp_threads, "max_batch", d->batch.max_images,
        "queue_depth", d->cfg->queue_depth, "version", CHEXD_VERSION, "request_id", r->id);
    if (j) {
        json_object_set_new(j, "isa", json_string(chex_model_isa()));
        chex_pre_decoder_versions dv;
        chex_pre_get_decoder_versions(&dv);
        json_object_set_new(j, "decoders",
                            json_pack("{s:s, s:s}", "openjpeg", dv.openjpeg, "charls", dv.charls));
        json_object_set_new(j, "precision", json_string(d->p->precision == CHEX_PRECISION_INT8
                                                            ? "int8"
                                                            : "fp32"));
    }
    if (j && in->demo)
        json_object_set_new(j, "warning", json_string(chex_answer_demo_warning));
    return send_json(r, 200, j);
}

static enum MHD_Result answer_ready(req *r)
{
    chexd *d = r->d;
    pthread_mutex_lock(&d->lock);
    int q = d->queued;
    pthread_mutex_unlock(&d->lock);
    if (atomic_load(&d->draining))
        return send_error(r, 503, "shutting_down", "the server is shutting down");
    if (!d->p->model)
        return send_error(r, 503, "not_ready", "no model loaded");
    if (q >= d->cfg->queue_depth) {
        char msg[96];
        snprintf(msg, sizeof msg, "queue full (%d of %d)", q, d->cfg->queue_depth);
        return send_error(r, 503, "not_ready", msg);
    }
    return send_json(r, 200, json_pack("{s:s, s:i, s:i}", "status", "ready", "queue", q,
                                       "queue_depth", d->cfg->queue_depth));
}

static enum MHD_Result answer_metrics(req *r)
{
    chexd *d = r->d;
    pthread_mutex_lock(&d->lock);
    int q = d->queued;
    pthread_mutex_unlock(&d->lock);
    return send_body(r, 200, chex_metrics_render(q), "text/plain; version=0.0.4; charset=utf-8",
                     NULL, 0);
}

static enum MHD_Result answer_web(req *r)
{
    chex_web_body body;
    char msg[256];
    int st = chex_web_get(r->d->cfg->web_root, r->path, &body, msg, sizeof msg);
    if (st != 200) {
        chex_log(CHEX_LOG_ERROR, "web page", "detail", msg, NULL);
        return send_error(r, st, st == 404 ? "not_found" : "internal_error",
                          st == 404 ? "no such route" : msg);
    }
    if (body.owned) {
        char *owned = body.owned;
        body.owned = NULL;
        return send_bytes(r, 200, owned, body.len, MHD_RESPMEM_MUST_FREE, body.content_type, NULL);
    }
    return send_bytes(r, 200, (void *)body.data, body.len, MHD_RESPMEM_PERSISTENT,
                      body.content_type, NULL);
}

static enum MHD_Result answer_get(req *r)
{
    switch (r->route) {
    case CHEX_ROUTE_HEALTHZ:
    case CHEX_ROUTE_LIVE:
        return send_json(r, 200, json_pack("{s:s}", "status", "ok"));
    case CHEX_ROUTE_READYZ:
    case CHEX_ROUTE_READY:
        return answer_ready(r);
    case CHEX_ROUTE_MODEL:
        return answer_model(r);
    case CHEX_ROUTE_METRICS:
        return answer_metrics(r);
    case CHEX_ROUTE_WEB:
        return answer_web(r);
    default:
        return send_error(r, 404, "not_found", "no such route");
    }
}

/* The answer of a resumed predict request. */
static enum MHD_Result answer_predict(req *r)
{
    chexd *d = r->d;
    if (r->result_status == 504) {
        char msg[128];
        snprintf(msg, sizeof msg, "waited more than request_timeout_ms (%d ms) for the model",
                 d->cfg->request_timeout_ms);
        return send_error(r, 504, "timeout", msg);
    }
    if (r->result_status == 503)
        return send_error(r, 503, "shutting_down", "the server is shutting down");
    if (r->result_status != 200)
        return send_error(r, 500, "inference_failed", r->result_msg);
    int nl = d->p->info->num_labels;
    size_t rawf = chex_heatmap_raw_floats(d->p);
    char msg[256];
    if (r->route == CHEX_ROUTE_EXPLAIN) {
        const chex_prepared *pp = &r->imgs[0];
        float *map = chex_heatmap_map(d->p, pp, r->cam_raw, msg, sizeof msg);
        uint8_t *png = NULL;
        size_t len = 0;
        int rc = map ? chex_heatmap_png_overlay(&pp->image, map, &png, &len, msg, sizeof msg) : -1;
        free(map);
        if (rc != 0)
            return send_error(r, 500, "internal_error", msg);
        return send_bytes(r, 200, png, len, MHD_RESPMEM_MUST_FREE, "image/png",
                          d->p->info->labels[r->cam_label[0]]);
    }
    json_t *arr = r->body == BODY_RAW ? NULL : json_array();
    json_t *single = NULL;
    for (int i = 0; i < r->nimg; i++) {
        const chex_prepared *pp = &r->imgs[i];
        json_t *one = chex_answer_image(d->p, r->id, pp, r->probs + (size_t)i * nl, &r->opts);
        if (one && r->cam != CHEX_CAM_NONE) {
            float *map = chex_heatmap_map(d->p, pp, r->cam_raw + (size_t)i * rawf, msg, sizeof msg);
            uint8_t *png = NULL;
            size_t len = 0;
            int rc = map ? chex_heatmap_png_gray(map, pp->image.width, pp->image.height, &png,
                                                 &len, msg, sizeof msg)
                         : -1;
            free(map);
            json_t *cj = rc == 0 ? chex_heatmap_json(d->p->info->labels[r->cam_label[i]],
                                                     pp->image.width, pp->image.height, png, len)
                                 : NULL;
            free(png);
            if (!cj) {
                json_decref(one);
                json_decref(arr);
                return send_error(r, 500, "internal_error", rc == 0 ? "out of memory" : msg);
            }
            json_object_set_new(one, "cam", cj);
        }
        if (!one) {
            json_decref(arr);
            return send_error(r, 500, "internal_error", "out of memory");
        }
        if (arr)
            json_array_append_new(arr, one);
        else
            single = one;
    }
    return send_json(r, 200, arr ? arr : single);
}

static enum MHD_Result post_iterator(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data,
                                     uint64_t off, size_t size)
{
    (void)kind;
    (void)key;
    (void)transfer_encoding;
    req *r = cls;
    if (r->err_status)
        return MHD_YES;
    /* File parts are images; plain text fields are ignored. */
    int is_file = filename != NULL ||
                  (content_type != NULL && strncasecmp(content_type, "text/", 5) != 0);
    if (!is_file)
        return MHD_YES;
    if (off == 0 && (!r->part_open || r->parts[r->nparts - 1].len > 0)) {
        if (r->nparts == MAX_PARTS) {
            set_error(r, 400, "too_many_parts", "at most %d file parts per request", MAX_PARTS);
            return MHD_YES;
        }
        r->nparts++;
        r->part_open = 1;
    }
    if (size && bytes_append(&r->parts[r->nparts - 1], data, size) != 0) {
        set_error(r, 500, "internal_error", "out of memory reading the upload");
        return MHD_YES;
    }
    return MHD_YES;
}

/* First callback: route, authenticate, check headers. Returns 1 when an
 * answer was queued (or MHD_NO is to be returned through *ret). */
static int first_call(req *r, const char *method, enum MHD_Result *ret)
{
    chexd *d = r->d;
    struct MHD_Connection *c = r->conn;
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int is_post = strcmp(method, "POST") == 0;
    if (r->route == CHEX_ROUTE_OTHER) {
        *ret = send_error(r, 404, "not_found", "no such route");
        return 1;
    }
    /* The health probes and the page (which asks for the token itself) are open. */
    int open_route = r->route == CHEX_ROUTE_HEALTHZ || r->route == CHEX_ROUTE_READYZ ||
                     r->route == CHEX_ROUTE_LIVE || r->route == CHEX_ROUTE_READY ||
                     r->route == CHEX_ROUTE_WEB;
    int post_route = r->route == CHEX_ROUTE_PREDICT || r->route == CHEX_ROUTE_EXPLAIN;
    if (post_route ? !is_post : !is_get) {
        char msg[96];
        const char *allow = post_route ? "POST" : "GET, HEAD";
        snprintf(msg, sizeof msg, "method %s not allowed here; allowed: %s", method, allow);
        *ret = send_error_ex(r, 405, "method_not_allowed", msg, allow, 0);
        return 1;
    }
    if (d->token_len && !open_route &&
        !token_ok(d, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_AUTHORIZATION))) {
        *ret = send_error(r, 401, "unauthorized", "missing or wrong bearer token");
        return 1;
    }
    if (is_get) {
        *ret = answer_get(r);
        return 1;
    }
    /* POST /v1/predict, /v1/explain */
    if (atomic_load(&d->draining)) {
        *ret = send_error(r, 503, "shutting_down", "the server is shutting down");
        return 1;
    }
    char qmsg[1536];
    r->cam = CHEX_CAM_NONE;
    if (r->route == CHEX_ROUTE_EXPLAIN) {
        if (chex_heatmap_parse_label(d->p->info,
                                     MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "label"),
                                     1, &r->cam, qmsg, sizeof qmsg) != 0) {
            *ret = send_error(r, 400, "bad_label", qmsg);
            return 1;
        }
    } else {
        if (chex_answer_opts_parse(&r->opts,
                                   MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "top"),
                                   MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "threshold"),
                                   d->p->info->num_labels, qmsg, sizeof qmsg) != 0) {
            *ret = send_error(r, 400, "bad_query", qmsg);
            return 1;
        }
        const char *cam = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cam");
        if (cam && chex_heatmap_parse_label(d->p->info, cam, 1, &r->cam, qmsg, sizeof qmsg) != 0) {
            *ret = send_error(r, 400, "bad_label", qmsg);
            return 1;
        }
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long clen = 0;
    if (cl) {
        char *end = NULL;
        errno = 0;
        clen = strtoull(cl, &end, 10);
        if (errno || end == cl) {
            *ret = send_error(r, 400, "bad_request", "unparsable Content-Length");
            return 1;
        }
        if (clen > d->cfg->max_upload_bytes) {
            char msg[128];
            snprintf(msg, sizeof msg, "body of %llu bytes is over max_upload_bytes (%llu)", clen,
                     (unsigned long long)d->cfg->max_upload_bytes);
            *ret = send_error(r, 413, "payload_too_large", msg);
            return 1;
        }
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    static const char accepted[] = "send image/png, image/jpeg, application/dicom, "
                                   "application/octet-stream or multipart/form-data";
    if (!ct) {
        char msg[160];
        snprintf(msg, sizeof msg, "no Content-Type: %s", accepted);
        *ret = send_error(r, 415, "unsupported_media_type", msg);
        return 1;
    }
    if (ct_is(ct, "multipart/form-data")) {
        r->body = BODY_MULTIPART;
        r->pp = MHD_create_post_processor(c, POST_BUFFER, post_iterator, r);
        if (!r->pp) {
            *ret = send_error(r, 400, "bad_multipart", "multipart/form-data without a boundary");
            return 1;
        }
        return 0;
    }
    if (ct_is(ct, "image/png") || ct_is(ct, "image/jpeg") || ct_is(ct, "image/jpg") ||
        ct_is(ct, "application/dicom") || ct_is(ct, "application/octet-stream")) {
        r->body = BODY_RAW;
        /* Reserve what Content-Length announces, up to 1 MiB: a client that
         * sends headers only must not make the daemon reserve the whole body. */
        if (clen > 0) {
            size_t cap = clen < (1u << 20) ? (size_t)clen : (size_t)1 << 20;
            r->raw.buf = malloc(cap);
            if (!r->raw.buf) {
                *ret = send_error(r, 500, "internal_error", "out of memory for the upload");
                return 1;
            }
            r->raw.cap = cap;
        }
        return 0;
    }
    char msg[256];
    char shown[64];
    safe_copy(shown, sizeof shown, ct);
    snprintf(msg, sizeof msg, "Content-Type %s is not accepted: %s", shown, accepted);
    *ret = send_error(r, 415, "unsupported_media_type", msg);
    return 1;
}

/* Body chunk: always consumed. */
static enum MHD_Result body_chunk(req *r, const char *data, size_t size)
{
    chexd *d = r->d;
    r->received += size;
    if (r->received > d->cfg->max_upload_bytes) {
        set_error(r, 413, "payload_too_large", "body is over max_upload_bytes (%llu)",
                  (unsigned long long)d->cfg->max_upload_bytes);
        /* A sender that keeps streaming far past the limit is cut off. */
        if (r->received > 2 * d->cfg->max_upload_bytes + (1u << 20))
            return MHD_NO;
        return MHD_YES;
    }
    if (r->err_status)
        return MHD_YES;
    if (r->body == BODY_RAW) {
        if (bytes_append(&r->raw, data, size) != 0)
            set_error(r, 500, "internal_error", "out of memory reading the upload");
    } else if (r->body == BODY_MULTIPART) {
        if (MHD_post_process(r->pp, data, size) != MHD_YES)
            set_error(r, 400, "bad_multipart", "malformed multipart/form-data body");
    }
    return MHD_YES;
}

/* Final callback of a predict upload: decode, preprocess, enqueue, suspend. */
static enum MHD_Result finish_upload(req *r)
{
    chexd *d = r->d;
    if (r->pp) {
        if (MHD_destroy_post_processor(r->pp) != MHD_YES)
            set_error(r, 400, "bad_multipart", "truncated multipart/form-data body");
        r->pp = NULL;
    }
    if (r->err_status)
        return send_error(r, r->err_status, r->err_code, r->err_msg);
    bytes *src;
    int n;
    if (r->body == BODY_RAW) {
        src = &r->raw;
        n = 1;
    } else {
        src = r->parts;
        n = r->nparts;
        if (n == 0)
            return send_error(r, 400, "bad_multipart", "multipart body has no file part");
    }
    if (r->route == CHEX_ROUTE_EXPLAIN && n != 1) {
        char msg[96];
        snprintf(msg, sizeof msg, "explain takes one image, the body has %d", n);
        return send_error(r, 400, "bad_multipart", msg);
    }
    int nl = d->p->info->num_labels;
    r->imgs = calloc((size_t)n, sizeof *r->imgs);
    r->probs = calloc((size_t)n * (size_t)nl, sizeof(float));
    if (!r->imgs || !r->probs)
        return send_error(r, 500, "internal_error", "out of memory");
    if (r->cam != CHEX_CAM_NONE) {
        r->cam_raw = malloc((size_t)n * chex_heatmap_raw_floats(d->p) * sizeof(float));
        r->cam_label = calloc((size_t)n, sizeof(int));
        if (!r->cam_raw || !r->cam_label)
            return send_error(r, 500, "internal_error", "out of memory");
    }
    for (int i = 0; i < n; i++) {
        char msg[256], full[300];
        chex_pre_err e =
            chex_pipeline_prepare(d->p, src[i].buf ? src[i].buf : (const uint8_t *)"", src[i].len,
                                  &r->imgs[i], msg, sizeof msg);
        bytes_free(&src[i]);
        if (e != CHEX_PRE_OK) {
            if (r->body == BODY_MULTIPART)
                snprintf(full, sizeof full, "part %d: %s", i + 1, msg);
            else
                snprintf(full, sizeof full, "%s", msg);
            r->nimg = i; /* prepared images so far are freed at completion */
            return send_error(r, chex_answer_pre_status(e), chex_answer_pre_code(e), full);
        }
        /* The network needs only the tensor: drop the decoded pixels now,
         * unless the explain overlay is drawn over them. */
        if (r->route != CHEX_ROUTE_EXPLAIN) {
            chex_pre_image meta = r->imgs[i].image;
            chex_pre_image_free(&r->imgs[i].image);
            meta.pix = NULL;
            r->imgs[i].image = meta;
        }
        r->nimg = i + 1;
    }
    /* A request already being read when the stop began is still served,
     * unless the worker is gone (past the shutdown deadline). */
    pthread_mutex_lock(&d->lock);
    if (d->stop_worker || d->queued >= d->cfg->queue_depth) {
        int q = d->queued, stopping = d->stop_worker;
        pthread_mutex_unlock(&d->lock);
        if (stopping)
            return send_error(r, 503, "shutting_down", "the server is shutting down");
        char msg[96];
        snprintf(msg, sizeof msg, "queue full (%d of %d requests waiting)", q, d->cfg->queue_depth);
        return send_error(r, 503, "queue_full", msg);
    }
    r->state = ST_QUEUED;
    r->t_enqueued = now_ms();
    MHD_suspend_connection(r->conn);
    if (d->tail)
        d->tail->qnext = r;
    else
        d->head = r;
    d->tail = r;
    d->queued++;
    d->pending_images += r->nimg;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **req_cls)
{
    (void)version;
    chexd *d = cls;
    req *r = *req_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->d = d;
        r->conn = conn;
        r->t0 = now_ms();
        r->route = route_of(url);
        safe_copy(r->method, sizeof r->method, method);
        safe_copy(r->path, sizeof r->path, url);
        make_request_id(r->id, sizeof r->id, conn);
        *req_cls = r;
        atomic_fetch_add(&d->active, 1);
        chex_metrics_in_flight(1);
        enum MHD_Result ret = MHD_YES;
        if (first_call(r, method, &ret))
            return ret;
        return MHD_YES;
    }
    if (r->state == ST_RESUMED)
        return answer_predict(r);
    if (r->state != ST_READING) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        enum MHD_Result ret = body_chunk(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ret;
    }
    if ((r->route == CHEX_ROUTE_PREDICT || r->route == CHEX_ROUTE_EXPLAIN) && r->body != BODY_NONE)
        return finish_upload(r);
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    chexd *d = cls;
    req *r = *req_cls;
    if (!r)
        return;
    *req_cls = NULL;
    double ms = now_ms() - r->t0;
    const char *route = r->route == CHEX_ROUTE_OTHER ? r->path : chex_route_name(r->route);
    if (r->status) {
        chex_metrics_request(r->route, r->status, ms / 1e3);
        chex_log_request(r->method, route, r->status, r->bytes_out, ms, r->id);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            chex_log(CHEX_LOG_DEBUG, "answer not fully delivered", "request_id", r->id, NULL);
    } else {
        static const char *const why[] = {"completed", "error", "timeout", "daemon shutdown",
                                          "read error", "client abort"};
        chex_log(CHEX_LOG_INFO, "request closed before an answer", "method", r->method, "route",
                 route, "request_id", r->id, "reason",
                 (unsigned)toe < sizeof why / sizeof why[0] ? why[toe] : "unknown", NULL);
    }
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    bytes_free(&r->raw);
    for (int i = 0; i < r->nparts; i++)
        bytes_free(&r->parts[i]);
    for (int i = 0; i < r->nimg; i++)
        chex_pipeline_prepared_free(&r->imgs[i]);
    free(r->imgs);
    free(r->probs);
    free(r->cam_raw);
    free(r->cam_label);
    free(r);
    chex_metrics_in_flight(-1);
    atomic_fetch_sub(&d->active, 1);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    chex_log(CHEX_LOG_DEBUG, "libmicrohttpd", "detail", line, NULL);
}

/* ---------- start / stop ---------- */

int chexd_listen(const char *addr, int port, char *msg, size_t msglen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    int family;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        family = AF_INET;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        family = AF_INET6;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    } else {
        snprintf(msg, msglen, "listen: \"%s\" is not an IPv4 or IPv6 address", addr);
        return -1;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 512) != 0) {
        int e = errno;
        close(fd);
        snprintf(msg, msglen, "cannot listen on %s%s%s:%d: %s", family == AF_INET6 ? "[" : "",
                 addr, family == AF_INET6 ? "]" : "", port, strerror(e));
        return -1;
    }
    return fd;
}

static char *read_small_file(const char *path, const char *key, size_t max, char *msg,
                             size_t msglen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "%s: cannot open %s: %s", key, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (!buf || err || n > max || n == 0) {
        snprintf(msg, msglen, "%s: %s is %s", key, path,
                 !buf ? "not readable (out of memory)"
                      : err ? "unreadable"
                            : n == 0 ? "empty" : "too large");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void free_daemon(chexd *d)
{
    if (d->ws)
        chex_model_ws_free(d->ws);
    chex_pipeline_batch_free(&d->batch);
    free(d->tls_cert);
    free(d->tls_key);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    pthread_cond_destroy(&d->reap_cond);
    memset(d->token, 0, sizeof d->token);
    free(d);
}

int chexd_start(chexd **out, const chex_config *cfg, const chex_pipeline *p, int listen_fd,
                char *msg, size_t msglen)
{
    *out = NULL;
    chexd *d = calloc(1, sizeof *d);
    if (!d) {
        close(listen_fd);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    d->cfg = cfg;
    d->p = p;
    d->listen_fd = listen_fd;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    pthread_cond_init(&d->reap_cond, NULL);
    d->omp_threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
    if (cfg->api_token_file[0]) {
        char *t = read_small_file(cfg->api_token_file, "api_token_file", sizeof d->token - 1, msg,
                                  msglen);
        if (!t)
            goto fail;
        size_t n = strlen(t);
        while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t'))
            n--;
        memcpy(d->token, t, n);
        d->token[n] = '\0';
        d->token_len = n;
        memset(t, 0, strlen(t));
        free(t);
        if (n == 0) {
            snprintf(msg, msglen, "api_token_file: %s holds no token", cfg->api_token_file);
            goto fail;
        }
    }
    int tls = cfg->tls_cert_file[0] || cfg->tls_key_file[0];
    if (tls) {
        if (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0]) {
            snprintf(msg, msglen, "%s is set but %s is not: TLS needs both",
                     cfg->tls_cert_file[0] ? "tls_cert_file" : "tls_key_file",
                     cfg->tls_cert_file[0] ? "tls_key_file" : "tls_cert_file");
            goto fail;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(msg, msglen, "tls_cert_file: this libmicrohttpd has no TLS support");
            goto fail;
        }
        d->tls_cert = read_small_file(cfg->tls_cert_file, "tls_cert_file", 1 << 20, msg, msglen);
        if (!d->tls_cert)
            goto fail;
        d->tls_key = read_small_file(cfg->tls_key_file, "tls_key_file", 1 << 20, msg, msglen);
        if (!d->tls_key)
            goto fail;
    }
    int maxb = cfg->max_batch > 0 ? cfg->max_batch : 1;
    if (maxb > 256)
        maxb = 256;
    if (chex_pipeline_batch_init(p, &d->batch, maxb) != 0) {
        snprintf(msg, msglen, "out of memory for a batch of %d images", maxb);
        goto fail;
    }
    chex_model_err me = chex_pipeline_ws_create(p, maxb * p->ncrops, &d->ws);
    if (me != CHEX_MODEL_OK) {
        snprintf(msg, msglen, "model workspace for %d tensors: %s", maxb * p->ncrops,
                 chex_model_strerror(me));
        goto fail;
    }
    if (pthread_create(&d->worker, NULL, worker_main, d) != 0) {
        snprintf(msg, msglen, "cannot start the inference worker");
        goto fail;
    }
    d->worker_started = 1;
    if (pthread_create(&d->reaper, NULL, reaper_main, d) != 0) {
        snprintf(msg, msglen, "cannot start the timeout thread");
        goto fail;
    }
    d->reaper_started = 1;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[16];
    int k = 0;
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL};
    if (cfg->http_threads > 1)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads, NULL};
    if (cfg->connection_limit > 0)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, cfg->connection_limit, NULL};
    if (cfg->per_ip_connection_limit > 0)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                            cfg->per_ip_connection_limit, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                        cfg->connection_timeout_s > 0 ? cfg->connection_timeout_s : 0,
                                        NULL};
    if (cfg->connection_memory_limit > 0)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                                            (intptr_t)cfg->connection_memory_limit, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed, d};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, NULL};
    if (tls) {
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, d->tls_key};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, d->tls_cert};
    }
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    d->mhd = MHD_start_daemon(flags, 0, NULL, NULL, access_handler, d, MHD_OPTION_ARRAY, opts,
                              MHD_OPTION_END);
    if (!d->mhd) {
        snprintf(msg, msglen,
                 "libmicrohttpd did not start (check tls_cert_file/tls_key_file, http_threads, "
                 "connection limits)");
        goto fail;
    }
    *out = d;
    return 0;
fail:
    pthread_mutex_lock(&d->lock);
    d->stop_worker = d->stop_reaper = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_cond_broadcast(&d->reap_cond);
    pthread_mutex_unlock(&d->lock);
    if (d->worker_started)
        pthread_join(d->worker, NULL);
    if (d->reaper_started)
        pthread_join(d->reaper, NULL);
    close(listen_fd);
    free_daemon(d);
    return -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int chexd_stop(chexd *d)
{
    atomic_store(&d->draining, 1);
    MHD_socket fd = MHD_quiesce_daemon(d->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    double deadline = now_ms() + d->cfg->shutdown_timeout_ms;
    /* Drain: the worker answers what is queued. */
    for (;;) {
        pthread_mutex_lock(&d->lock);
        int idle = !d->head && !d->worker_busy;
        pthread_mutex_unlock(&d->lock);
        if ((idle && atomic_load(&d->active) == 0) || now_ms() >= deadline)
            break;
        sleep_ms(10);
    }
    int shed = 0;
    pthread_mutex_lock(&d->lock);
    /* Past the deadline: refuse what never started; the batch being run
     * finishes and is answered. */
    for (req *r = d->head, *next; r; r = next) {
        next = r->qnext;
        if (r->next_img > 0)
            continue; /* partly run: the worker finishes and answers it */
        unlink_locked(d, r);
        resume_with(r, 503, "");
        shed++;
    }
    d->stop_worker = 1;
    d->stop_reaper = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_cond_broadcast(&d->reap_cond);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->worker, NULL);
    pthread_join(d->reaper, NULL);
    /* Let the resumed connections send their answers. */
    double grace = now_ms() + 2000.0;
    while (atomic_load(&d->active) > 0 && now_ms() < grace)
        sleep_ms(10);
    if (atomic_load(&d->active) > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", atomic_load(&d->active));
        chex_log(CHEX_LOG_WARN, "stopping with requests unanswered", "requests", n, NULL);
    }
    MHD_stop_daemon(d->mhd);
    if (shed) {
        char n[16];
        snprintf(n, sizeof n, "%d", shed);
        chex_log(CHEX_LOG_WARN, "shutdown deadline: queued requests refused with 503", "requests",
                 n, NULL);
    }
    free_daemon(d);
    return shed ? 1 : 0;
}
