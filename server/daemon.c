/* server/daemon.c - chexd's HTTP service on libmicrohttpd.
 *
 * Request life: the first callback (headers only) allocates one `req`, routes,
 * authenticates and checks Content-Length/Content-Type (an error decided there
 * is answered once the body has been read and discarded, see reject()). Body
 * callbacks append into a buffer
 * bounded by max_upload_bytes (raw) or feed the multipart post processor; every
 * byte of buffer is reserved in the memory budget (server/budget.h) before it
 * is allocated. The final callback reads each image's header (chex_pre_probe),
 * computes the request's worst-case bytes, pushes it into the bounded queue and
 * suspends the connection. HTTP threads never decode or serialise big answers.
 *
 * The inference workers own the cores (`threads`, shared: a worker claims
 * threads / workers of them for a batch, or all of them for a request alone
 * in the daemon). A free worker takes up to its share of max_batch images
 * from the queue (reserving each new request's bytes; one that does not fit
 * waits while others hold memory, else gets 503), decodes and preprocesses
 * them on its threads, runs one forward pass on its own workspace, draws
 * heat maps, builds every finished request's answer body and resumes its
 * connection; libmicrohttpd then only sends it. A request's images are in
 * one worker's batch at a time. Everything a request owns, and its
 * reservation, is given back in the completion callback.
 */
#include "server/daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
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
#include "server/answer_dicom.h"
#include "server/bodycache.h"
#include "server/budget.h"
#include "server/connguard.h"
#include "server/heatmap.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/oip.h"
#include "server/registry.h"
#include "server/security.h"
#include "server/tlscert.h"
#include "server/token.h"
#include "server/web.h"

#define MAX_PARTS 32
#define POST_BUFFER 16384
/* An answer decided from the headers waits until the body is read and thrown
 * away, at most this long (and at most drain_bound bytes). */
#define DRAIN_MS 30000.0
/* Kept out of the requests' budget for the HTTP side: connection pools,
 * post processors, thread stacks, small allocations and allocator slack. */
#define HTTP_RESERVE_BYTES (UINT64_C(16) << 20)
/* One image's JSON answer without a heat map (labels, timings, ids). */
#define ANSWER_JSON_BYTES 16384
/* A heat map answer per pixel of the map: the float map (4), the gray or RGB
 * rows and their PNG (<= 3 + 3), its base64 and the JSON text (~2 x 1.4). */
#define MAP_BYTES_PER_PIXEL 12
#define MIB(x) ((double)(x) / 1048576.0)

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
    chex_served *sv; /* the weights this request runs on (held until completion) */
    double t0;
    int body;
    bytes raw;
    struct MHD_PostProcessor *pp;
    bytes parts[MAX_PARTS];
    int nparts;
    int part_open; /* the iterator is inside parts[nparts-1] */
    uint64_t received;
    chex_guard_conn *gc; /* the connection's deadlines (may be NULL) */
    /* Decided from the headers: the body is discarded, err_* answered on the
     * final call with Connection: close. */
    int rejected;
    int close;          /* answer with Connection: close */
    const char *allow;  /* Allow header of a rejected request (static) */
    /* An error decided while reading the body, answered on the final call. */
    int err_status;
    char err_code[32];
    char err_msg[256];
    chex_answer_opts opts;
    int cam;        /* CHEX_CAM_NONE, CHEX_CAM_TOP or a label: ?cam= / explain's ?label= */
    int want_dicom; /* Accept: application/dicom (the inputs' bytes are kept) */
    /* Inference, touched by the worker only between enqueue and resume. */
    chex_prepared *imgs;
    int nimg;
    float *probs;
    float *cam_raw; /* (nimg, chex_heatmap_raw_floats) when cam != CHEX_CAM_NONE */
    int *cam_label; /* (nimg) resolved label of each map */
    int next_img; /* next image a worker takes (under the queue lock) */
    int done_img; /* the worker running it only */
    /* Under the queue lock: some of its images are in a worker's batch; no
     * other worker takes its next ones until that batch is done (one
     * worker at a time touches the request). */
    int running;
    double t_enqueued;
    int state;
    int result_status; /* set before resume: 200, 500, 503 or 504 */
    char result_msg[160];
    req *qnext;
    req *lnext; /* POST /v1/models/NAME/reload: the loader's queue */
    /* Memory budget. body_held: bytes of body buffers (HTTP thread while
     * reading, then the worker). work_*: decode scratch, tensors and answer,
     * reserved by the worker when it first takes the request. */
    uint64_t clen; /* Content-Length of a raw body, 0 when not announced */
    uint64_t body_held;
    uint64_t work_need, work_held;
    uint64_t work_more; /* reserved before images are taken (an infer body just parsed) */
    int work_taken;     /* counted in d->holders until completion */
    uint64_t *scratch; /* (nimg) decode scratch of each image, given back after decode */
    bytes *src;        /* (nimg) the encoded images: raw or parts */
    /* Set by the worker only (serially): the first decode error. */
    int failed, fail_status;
    char fail_code[32];
    char fail_msg[300];
    /* The answer built on the worker, sent as is by the HTTP thread. */
    char *ans;
    size_t ans_len;
    int ans_status;
    char ans_ctype[96];    /* image/png (explain), application/dicom, ...; empty: JSON */
    const char *ans_label; /* X-Chexd-Label, borrowed from the model info */
    /* POST .../infer: the parsed request (outputs, id); the
     * Inference-Header-Content-Length of a binary answer. */
    chex_oip_request *oip;
    char oip_hlen[24];
    /* POST .../infer: its images point into the body or oip_scratch
     * (borrowed: never freed through src), its FP32 tensors too. The
     * scratch is a body buffer (counted in body_held) once parsing starts. */
    bytes oip_items[MAX_PARTS];
    bytes oip_scratch;
    size_t oip_slen;    /* bytes the scratch needs, reserved before the parse */
    long long oip_hl;   /* Inference-Header-Content-Length, -1 when absent */
    int parse_pending;  /* queued unparsed: the worker parses it first */
    int src_borrowed;
    /* Answer, for the log line. */
    int status;
    unsigned long long bytes_out;
};

/* An inference worker: runs its batches on its own workspace (chex_served
 * ws[id], batch[id]) with the cores it claims. */
typedef struct {
    chexd *d;
    int id;
    pthread_t th;
    char msg[256][256]; /* decode messages, one per batch slot */
} worker_t;

struct chexd {
    const chex_config *cfg;
    chex_registry *reg; /* the served models (borrowed) */
    int max_batch; /* images in one worker's batch */
    struct MHD_Daemon *mhd;
    int listen_fd;
    int omp_threads;
    chex_token *token; /* API token (chex_token_required 0: no authentication) */
    chex_tls *tls;     /* NULL: plain HTTP */
    chex_guard *guard; /* header deadline, minimum upload rate */
    /* Queue. */
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* worker: work arrived / stop */
    pthread_cond_t reap_cond; /* reaper: stop */
    req *head, *tail;
    int queued;         /* requests in the queue */
    int pending_images; /* images not yet taken by a worker */
    /* Workers and the omp_threads cores they share: a worker claims
     * cores_per_worker of cores_free for a batch, or all of them when its
     * request is the only one in the daemon (an idle daemon's lone request
     * runs on every core). */
    worker_t *workers;
    int nworkers, workers_started;
    int cores_per_worker, cores_free;
    int busy; /* workers running a batch or a parse */
    int stop_worker, stop_reaper;
    pthread_t reaper;
    int reaper_started;
    /* Model reloads asked over HTTP, run by the loader thread (loading
     * takes the file's time; the HTTP threads keep serving). */
    pthread_cond_t load_cond;
    req *load_head, *load_tail;
    int stop_loader, loader_started;
    pthread_t loader;
    /* Memory: the budget requests share, how many requests hold a work
     * reservation (the worker waits for them to finish before refusing), and
     * what was resident at start. */
    chex_budget budget;
    int budget_ready;
    chex_bodycache bodies; /* freed body buffers kept resident for reuse */
    int bodies_ready;
    int holders;
    int warm; /* workers whose warm-up pass is done (under lock) */
    uint64_t rss_model, rss_start, memory_limit;
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

/* /v1/models/NAME/reload: 1, *name_len set (may be NULL); NAME is url + 11. */
static int reload_name(const char *url, size_t *name_len)
{
    static const char pre[] = "/v1/models/", suf[] = "/reload";
    size_t n = strlen(url), lp = sizeof pre - 1, ls = sizeof suf - 1;
    if (n <= lp + ls || strncmp(url, pre, lp) != 0 || strcmp(url + n - ls, suf) != 0)
        return 0;
    if (memchr(url + lp, '/', n - lp - ls))
        return 0;
    if (name_len)
        *name_len = n - lp - ls;
    return 1;
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
    if (strcmp(url, "/v1/models") == 0)
        return CHEX_ROUTE_MODELS;
    if (reload_name(url, NULL))
        return CHEX_ROUTE_RELOAD;
    chex_oip_path op;
    chex_oip_path_parse(&op, url);
    if (op.route == CHEX_OIP_ROUTE_INFER)
        return CHEX_ROUTE_INFER;
    if (op.route != CHEX_OIP_ROUTE_NONE)
        return CHEX_ROUTE_OIP;
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

static int seg_len_eq(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

/* Body buffers are mappings of their own (server/bodycache.h): cap bytes
 * reserved in the budget and counted in r->body_held; buf NULL with cap > 0 is
 * a reservation made before the first byte arrived. A buffer about to grow
 * past 1 MiB is swapped for a kept one of the final size when the cache has
 * it: its pages are resident, so filling it costs no page faults. */
static int body_reuse(req *r, bytes *b, size_t want)
{
    size_t kcap;
    uint8_t *k = chex_bodycache_take(&r->d->bodies, want, &kcap);
    if (!k)
        return 0;
    if (b->len)
        memcpy(k, b->buf, b->len);
    chex_bodybuf_unmap(b->buf, b->cap);
    chex_budget_release(&r->d->budget, b->cap);
    r->body_held = r->body_held - b->cap + kcap;
    b->buf = k;
    b->cap = kcap;
    return 1;
}

/* Appends to a body buffer of r, reserving its growth in the budget first
 * (limit: the announced Content-Length when the data stays within it).
 * Returns 0, -1 out of memory, -2 the budget has no room now. */
static int body_append(req *r, bytes *b, const char *data, size_t n, uint64_t limit)
{
    size_t need = b->len + n;
    if (need > b->cap || !b->buf) {
        size_t nc = b->cap ? b->cap : 65536;
        while (nc < need)
            nc *= 2;
        if (limit && need <= limit && nc > limit)
            nc = (size_t)limit;
        size_t want = limit && need <= limit ? (size_t)limit : nc;
        if (b->len <= (1u << 20) && want > (1u << 20) && body_reuse(r, b, want) && need <= b->cap)
            goto copy;
        if (nc > b->cap) {
            if (chex_budget_try_reserve(&r->d->budget, nc - b->cap) != 0)
                return -2;
            r->body_held += nc - b->cap;
        }
        uint8_t *nb = b->buf ? chex_bodybuf_grow(b->buf, b->cap, nc) : chex_bodybuf_map(nc);
        if (!nb) {
            chex_budget_release(&r->d->budget, nc - b->cap);
            r->body_held -= nc - b->cap;
            return -1;
        }
        b->buf = nb;
        b->cap = nc;
    }
copy:
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    return 0;
}

/* What requests hold: the budget's reservations less the kept bodies (read
 * first, so a buffer moving into or out of the cache is never missed). */
static uint64_t requests_reserved(chexd *d, uint64_t *cached)
{
    uint64_t c = chex_bodycache_bytes(&d->bodies), all = chex_budget_reserved(&d->budget);
    if (cached)
        *cached = c;
    return all > c ? all - c : 0;
}

/* Gives a body buffer of r to the cache (its reservation with it) or back to
 * the system and the budget. */
static void body_free(req *r, bytes *b)
{
    if (b->buf)
        chex_bodycache_give(&r->d->bodies, b->buf, b->cap);
    else
        chex_budget_release(&r->d->budget, b->cap);
    r->body_held -= b->cap < r->body_held ? b->cap : r->body_held;
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
    chex_security_headers(resp, r->route == CHEX_ROUTE_WEB, r->d->tls != NULL);
    if (atomic_load(&r->d->draining) || r->close)
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
    if (r->oip_hlen[0])
        MHD_add_response_header(resp, "Inference-Header-Content-Length", r->oip_hlen);
    if (r->route != CHEX_ROUTE_WEB)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    chex_security_headers(resp, r->route == CHEX_ROUTE_WEB, r->d->tls != NULL);
    if (atomic_load(&r->d->draining) || r->close)
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
    /* The /v2 routes answer in the protocol's shape, {"error": "message"}. */
    int oip = r->route == CHEX_ROUTE_OIP || r->route == CHEX_ROUTE_INFER;
    return send_body(r, status,
                     oip ? chex_oip_error_json(msg)
                         : chex_answer_dump(chex_answer_error(code, msg, r->id)),
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

/* Bytes of one image's (ncrops, C, S, S) tensor. */
static uint64_t tensor_bytes(const chex_pipeline *p)
{
    return (uint64_t)p->ncrops * chex_pipeline_tensor_floats(p) * sizeof(float);
}

/* Pixels of the heat map drawn for an image (its display size, longer side
 * at most max_overlay_side). */
static uint64_t map_pixels(const chex_pipeline *p, const chex_pre_probe_info *in)
{
    int dw = 0, dh = 0;
    chex_pre_display_dims(&p->opts, in->width, in->height, &dw, &dh);
    return (uint64_t)dw * (uint64_t)dh;
}

/* Worst-case bytes one image of r holds besides its body: the decode scratch
 * (given back right after decoding) and what is kept until the answer is
 * sent (tensor, display copy, heat map and answer). */
static void image_need(const req *r, const chex_pre_probe_info *in, uint64_t *scratch,
                       uint64_t *keep)
{
    /* decode_bytes counts the tensor, which stays until the answer is sent */
    uint64_t tb = tensor_bytes(&r->sv->p);
    *scratch = in->decode_bytes > tb ? in->decode_bytes - tb : 0;
    *keep = tb + ANSWER_JSON_BYTES;
    if (r->route == CHEX_ROUTE_EXPLAIN)
        *keep += in->display_bytes; /* the gray copy the overlay is drawn over */
    if (r->cam != CHEX_CAM_NONE)
        *keep += map_pixels(&r->sv->p, in) * MAP_BYTES_PER_PIXEL;
}

/* Reads the header of r's image i (bytes b) and adds what it needs to *need
 * (its decode scratch goes in r->scratch[i]). On error msg has the probe's
 * message (or the error's text). */
static chex_pre_err probe_image(req *r, const bytes *b, int i, chex_pre_probe_info *info,
                                uint64_t *need, char *msg, size_t msglen)
{
    const chex_pipeline *p = &r->sv->p;
    chex_pre_err e = chex_pre_probe(b->buf ? b->buf : (const uint8_t *)"", b->len, &p->opts,
                                    &p->spec, info, msg, msglen);
    if (e != CHEX_PRE_OK) {
        if (msg[0] == '\0')
            snprintf(msg, msglen, "%s", chex_pre_strerror(e));
        return e;
    }
    uint64_t keep;
    image_need(r, info, &r->scratch[i], &keep);
    *need += r->scratch[i] + keep;
    return CHEX_PRE_OK;
}

/* Lock held. Takes up to max_batch images from the head of the queue into
 * who/idx, reserving each request's work bytes when it is first taken. A
 * head that does not fit waits while other requests hold reservations (they
 * give them back when their answers are sent), otherwise it is refused with
 * 503. An unparsed infer request at the head, with nothing taken yet, is
 * unlinked into *parse once its parse scratch is reserved. A request whose
 * images are taken is marked running. Returns the number of images taken
 * (0 with a head: the head is running on another worker). */
static int take_batch(chexd *d, req **who, int *idx, req **parse)
{
    int maxb = d->max_batch, n = 0;
    *parse = NULL;
    while (d->head && n < maxb) {
        req *r = d->head;
        if (r->running) /* its earlier images are on another worker */
            break;
        /* One forward pass runs one set of weights; an unparsed request is
         * parsed before the next batch. */
        if (n > 0 && (r->sv != who[0]->sv || r->parse_pending))
            break;
        if (!r->work_taken || r->work_more) {
            uint64_t want = r->work_taken ? r->work_more : r->work_need;
            if (chex_budget_try_reserve(&d->budget, want) != 0) {
                if (n > 0)
                    break;
                /* Others than r hold memory: wait for them to give it back. */
                if (d->holders - r->work_taken > 0 && !d->stop_worker) {
                    struct timespec ts;
                    clock_gettime(CLOCK_REALTIME, &ts);
                    ts.tv_nsec += 50 * 1000000L;
                    if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                    }
                    pthread_cond_timedwait(&d->cond, &d->lock, &ts);
                    continue; /* the head may have timed out meanwhile */
                }
                unlink_locked(d, r);
                resume_with(r, 503, "memory");
                continue;
            }
            if (!r->work_taken)
                d->holders++;
            r->work_taken = 1;
            r->work_held += want;
            r->work_more = 0;
        }
        if (r->parse_pending) {
            unlink_locked(d, r);
            *parse = r;
            return 0;
        }
        r->running = 1;
        while (r->next_img < r->nimg && n < maxb) {
            who[n] = r;
            idx[n] = r->next_img;
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
    return n;
}

/* Decodes and preprocesses image k of r (a pool thread; touches only that
 * image's slot). Returns the error, msg set. */
static chex_pre_err decode_one(req *r, int k, char *msg, size_t msglen)
{
    if (r->failed) /* an earlier part failed: its answer is that error */
        return CHEX_PRE_OK;
    if (r->oip && r->oip->kind == CHEX_OIP_IN_TENSOR) { /* already preprocessed */
        size_t per = chex_pipeline_tensor_floats(&r->sv->p);
        chex_prepared *pp = &r->imgs[k];
        pp->tensor = malloc(per * sizeof(float));
        if (!pp->tensor) {
            snprintf(msg, msglen, "out of memory for the input tensor");
            return CHEX_PRE_ERR_NOMEM;
        }
        memcpy(pp->tensor, r->oip->tensor + (size_t)k * per, per * sizeof(float));
        pp->ncrops = 1;
        return CHEX_PRE_OK;
    }
    bytes *b = &r->src[k];
    /* Only the explain overlay is drawn over the image (its display copy). */
    return chex_pipeline_prepare_ex(&r->sv->p, b->buf ? b->buf : (const uint8_t *)"", b->len,
                                    r->route == CHEX_ROUTE_EXPLAIN, &r->imgs[k], msg, msglen);
}

static void fail_request(req *r, int status, const char *code, const char *msg)
{
    if (r->failed)
        return;
    r->failed = 1;
    r->fail_status = status;
    snprintf(r->fail_code, sizeof r->fail_code, "%s", code);
    snprintf(r->fail_msg, sizeof r->fail_msg, "%s", msg);
}

/* Accept: application/dicom: the SR(s) or the SC, built in answer_dicom.c
 * from the kept source bytes. An error there is the request's answer. */
static void build_dicom(const chexd *d, req *r)
{
    const chex_pipeline *p = &r->sv->p;
    const uint8_t *src[MAX_PARTS];
    size_t len[MAX_PARTS];
    for (int i = 0; i < r->nimg; i++) {
        src[i] = r->src[i].buf;
        len[i] = r->src[i].len;
    }
    int explain = r->route == CHEX_ROUTE_EXPLAIN;
    chex_answer_dicom_in in = {p,        d->cfg->uid_root, explain,    r->body == BODY_MULTIPART,
                               r->nimg,  src,              len,        r->imgs,
                               r->probs, &r->opts,         r->cam_raw, r->cam_label};
    chex_answer_dicom_out o;
    if (chex_answer_dicom(&in, &o) != 0) {
        r->ans_status = o.status;
        r->ans = chex_answer_dump(chex_answer_error(o.code, o.msg, r->id));
        return;
    }
    r->ans = (char *)o.body;
    r->ans_len = o.len;
    snprintf(r->ans_ctype, sizeof r->ans_ctype, "%s", o.ctype);
    r->ans_label = explain ? p->info->labels[r->cam_label[0]] : NULL;
}

/* The success answer of r: the overlay PNG (explain) or the JSON. Returns 0,
 * or -1 with msg. */
static int build_success(const chexd *d, req *r, char *msg, size_t msglen)
{
    const chex_pipeline *p = &r->sv->p;
    int nl = p->info->num_labels;
    size_t rawf = chex_heatmap_raw_floats(p);
    if (r->want_dicom) {
        build_dicom(d, r);
        return 0;
    }
    if (r->route == CHEX_ROUTE_INFER) {
        chex_oip_answer a;
        if (chex_oip_build_infer(&a, &r->sv->oip, r->oip, r->probs) != CHEX_OIP_OK) {
            snprintf(msg, msglen, "out of memory");
            return -1;
        }
        if (a.header_len >= 0)
            snprintf(r->oip_hlen, sizeof r->oip_hlen, "%lld", a.header_len);
        r->ans = a.body;
        r->ans_len = a.len;
        snprintf(r->ans_ctype, sizeof r->ans_ctype, "%s",
                 a.header_len >= 0 ? "application/octet-stream" : "application/json");
        return 0;
    }
    if (r->route == CHEX_ROUTE_EXPLAIN) {
        const chex_prepared *pp = &r->imgs[0];
        float *map = chex_heatmap_map(p, pp, r->cam_raw, msg, msglen);
        uint8_t *png = NULL;
        size_t len = 0;
        int rc = map ? chex_heatmap_png_overlay(&pp->display, map, &png, &len, msg, msglen) : -1;
        free(map);
        if (rc != 0)
            return -1;
        r->ans = (char *)png;
        r->ans_len = len;
        snprintf(r->ans_ctype, sizeof r->ans_ctype, "image/png");
        r->ans_label = p->info->labels[r->cam_label[0]];
        return 0;
    }
    json_t *arr = r->body == BODY_RAW ? NULL : json_array();
    json_t *single = NULL;
    for (int i = 0; i < r->nimg; i++) {
        const chex_prepared *pp = &r->imgs[i];
        json_t *one = chex_answer_image(p, r->id, pp, r->probs + (size_t)i * nl, &r->opts);
        if (one && r->cam != CHEX_CAM_NONE) {
            float *map = chex_heatmap_map(p, pp, r->cam_raw + (size_t)i * rawf, msg, msglen);
            uint8_t *png = NULL;
            size_t len = 0;
            int rc = map ? chex_heatmap_png_gray(map, pp->display.width, pp->display.height, &png,
                                                 &len, msg, msglen)
                         : -1;
            free(map);
            json_t *cj = rc == 0 ? chex_heatmap_json(p->info->labels[r->cam_label[i]],
                                                     pp->image.width, pp->image.height,
                                                     pp->display.width, pp->display.height, png,
                                                     len)
                                 : NULL;
            free(png);
            if (!cj) {
                if (rc == 0)
                    snprintf(msg, msglen, "out of memory");
                json_decref(one);
                json_decref(arr);
                return -1;
            }
            json_object_set_new(one, "cam", cj);
        }
        if (!one) {
            snprintf(msg, msglen, "out of memory");
            json_decref(arr);
            return -1;
        }
        if (arr)
            json_array_append_new(arr, one);
        else
            single = one;
    }
    r->ans = chex_answer_dump(arr ? arr : single);
    if (!r->ans) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    r->ans_len = strlen(r->ans);
    return 0;
}

/* An error answer body: the /v2 routes' {"error": msg}, else chexd's own. */
static char *error_body(const req *r, const char *code, const char *msg)
{
    if (r->route == CHEX_ROUTE_INFER)
        return chex_oip_error_json(msg);
    return chex_answer_dump(chex_answer_error(code, msg, r->id));
}

/* Builds r's whole answer body on the worker's pool, then frees what only
 * the computation needed (tensors, pixels, maps). */
static void build_answer(const chexd *d, req *r)
{
    char msg[256];
    r->ans_status = 200;
    if (r->failed) {
        r->ans_status = r->fail_status;
        r->ans = error_body(r, r->fail_code, r->fail_msg);
    } else if (r->result_status != 200) {
        r->ans_status = 500;
        r->ans = error_body(r, "inference_failed", r->result_msg);
    } else if (build_success(d, r, msg, sizeof msg) != 0) {
        r->ans_status = 500;
        r->ans = error_body(r, "internal_error", msg);
    }
    if (r->ans && !r->ans_ctype[0])
        r->ans_len = strlen(r->ans);
    for (int i = 0; i < r->nimg; i++)
        chex_pipeline_prepared_free(&r->imgs[i]);
    free(r->cam_raw);
    r->cam_raw = NULL;
}

/* Gives back what r holds beyond its answer body (kept until it is sent)
 * and hands r to its HTTP thread. */
static void resume_answered(chexd *d, req *r)
{
    uint64_t keep = r->ans ? r->ans_len : 0;
    if (r->work_held > keep) {
        chex_budget_release(&d->budget, r->work_held - keep);
        r->work_held = keep;
    }
    r->state = ST_RESUMED;
    MHD_resume_connection(r->conn);
}

/* One batch of worker w on k threads, outside the lock: parallel decode, one
 * forward pass, heat maps, answers of the requests it finishes, resume. */
static void run_batch(chexd *d, worker_t *w, req **who, int *idx, int n, int k)
{
    chex_served *sv = who[0]->sv; /* take_batch: one set of weights per batch */
    const chex_pipeline *p = &sv->p;
    chex_model_ws *ws = sv->ws[w->id];
    int nl = p->info->num_labels;
    char (*msgs)[256] = w->msg;
    chex_pre_err st[256];
    req *fwho[256], *done[256];
    int fidx[256];
    chex_prepared *imgs[256];
    float probs[256 * CHEX_MODEL_MAX_LABELS];

    double td = now_ms();
    /* One image: decoded outside any region, so a large DICOM frame's bands
     * get the worker's k threads (chex_pipeline_prepare_ex); a nested region
     * would get a serialised or freshly created team. */
    if (n == 1)
        st[0] = decode_one(who[0], idx[0], msgs[0], sizeof msgs[0]);
    else
#pragma omp parallel for schedule(dynamic, 1) num_threads(k)
        for (int i = 0; i < n; i++)
            st[i] = decode_one(who[i], idx[i], msgs[i], sizeof msgs[i]);
    /* Serially: give back the bodies and decode scratch, note failures. */
    int m = 0;
    for (int i = 0; i < n; i++) {
        req *r = who[i];
        int k = idx[i];
        r->imgs[k].timing.queue_ms = td - r->t_enqueued;
        /* The SR/SC copies the source's study from its bytes; OIP items are
         * borrowed from the body. */
        if (!r->want_dicom && !r->src_borrowed)
            body_free(r, &r->src[k]);
        chex_budget_release(&d->budget, r->scratch[k]);
        r->work_held -= r->scratch[k];
        r->scratch[k] = 0;
        if (st[i] != CHEX_PRE_OK) {
            char full[300];
            if (r->route == CHEX_ROUTE_INFER)
                snprintf(full, sizeof full, "input 'image' element %d: %s", k, msgs[i]);
            else if (r->body == BODY_MULTIPART)
                snprintf(full, sizeof full, "part %d: %s", k + 1, msgs[i]);
            else
                snprintf(full, sizeof full, "%s", msgs[i]);
            fail_request(r, chex_answer_pre_status(st[i]), chex_answer_pre_code(st[i]), full);
        }
    }
    for (int i = 0; i < n; i++)
        if (!who[i]->failed) {
            fwho[m] = who[i];
            fidx[m] = idx[i];
            imgs[m] = &who[i]->imgs[idx[i]];
            m++;
        }
    chex_model_err e = CHEX_MODEL_OK;
    if (m > 0) {
        double t0 = now_ms();
        e = chex_pipeline_infer_batch(p, ws, &sv->batch[w->id], imgs, m, probs);
        double t1 = now_ms();
        if (e == CHEX_MODEL_OK) {
            chex_metrics_inference((t1 - t0) / 1e3, m);
            chex_metrics_images(m);
            /* Class activation maps read this forward's features: now,
             * before the next pass overwrites them. */
            size_t rawf = chex_heatmap_raw_floats(p);
            for (int j = 0; j < m; j++) {
                req *r = fwho[j];
                if (r->cam == CHEX_CAM_NONE)
                    continue;
                int label = chex_heatmap_resolve(p->info, r->cam, probs + (size_t)j * nl);
                r->cam_label[fidx[j]] = label;
                char cmsg[160];
                if (chex_heatmap_take(p, ws, j * p->ncrops, label,
                                      r->cam_raw + (size_t)fidx[j] * rawf, cmsg,
                                      sizeof cmsg) != 0) {
                    r->result_status = 500;
                    snprintf(r->result_msg, sizeof r->result_msg, "%s", cmsg);
                }
            }
        } else {
            chex_log(CHEX_LOG_ERROR, "inference failed", "error", chex_model_strerror(e), NULL);
        }
        for (int j = 0; j < m; j++) {
            req *r = fwho[j];
            if (e == CHEX_MODEL_OK) {
                memcpy(r->probs + (size_t)fidx[j] * nl, probs + (size_t)j * nl,
                       (size_t)nl * sizeof(float));
            } else {
                r->result_status = 500;
                snprintf(r->result_msg, sizeof r->result_msg, "%s", chex_model_strerror(e));
            }
        }
    }
    int nd = 0;
    for (int i = 0; i < n; i++) {
        req *r = who[i];
        if (++r->done_img == r->nimg) {
            r->result_status = r->result_status ? r->result_status : 200;
            done[nd++] = r;
        }
    }
    /* The unfinished requests' next images may go to any worker now; the
     * finished ones are out of the queue. */
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < n; i++)
        who[i]->running = 0;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
#pragma omp parallel for schedule(dynamic, 1) num_threads(k)
    for (int j = 0; j < nd; j++)
        build_answer(d, done[j]);
    for (int j = 0; j < nd; j++)
        resume_answered(d, done[j]);
}

static int admit(req *r, uint64_t need);

/* Worker, no lock; r is out of the queue with its parse scratch reserved.
 * Parses r's infer body and reads each image's header (JSON and base64 are
 * CPU work: kept off libmicrohttpd's threads). Returns 0 with the bytes
 * still to reserve in r->work_more (r goes back to the queue's head), or -1
 * when r has been answered with its error. */
static int parse_infer(chexd *d, req *r)
{
    const chex_oip_model *m = &r->sv->oip;
    const chex_pipeline *p = &r->sv->p;
    char msg[sizeof r->fail_msg];
    int st = 400;
    const char *code = "bad_request";
    r->parse_pending = 0;
    chex_oip_bytes items[MAX_PARTS];
    /* The scratch is taken like a body buffer: a kept one (resident, so no
     * page faults while base64 fills it) or a fresh mapping; its reservation
     * moves from the work bytes to the body bytes. */
    size_t kcap = 0; /* oip_slen > 0: the bound counts a float at least */
    uint8_t *k = chex_bodycache_take(&d->bodies, r->oip_slen, &kcap);
    if (k) {
        chex_budget_release(&d->budget, r->oip_slen);
    } else {
        kcap = r->oip_slen;
        k = chex_bodybuf_map(r->oip_slen);
    }
    if (k) {
        r->work_held -= r->oip_slen;
        r->work_need -= r->oip_slen;
        r->body_held += kcap;
        r->oip_scratch = (bytes){k, 0, kcap};
    }
    r->oip = calloc(1, sizeof *r->oip);
    if (!r->oip_scratch.buf || !r->oip) {
        st = 500;
        code = "internal_error";
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    const chex_oip_buffers b = {items, MAX_PARTS, r->oip_scratch.buf, r->oip_slen};
    chex_oip_err e = chex_oip_parse_infer(r->oip, r->raw.buf ? r->raw.buf : (const uint8_t *)"",
                                          r->raw.len, r->oip_hl, m, &b, msg, sizeof msg);
    if (e == CHEX_OIP_OK && r->oip->kind == CHEX_OIP_IN_TENSOR && p->ncrops != 1) {
        snprintf(msg, sizeof msg, "input 'input' needs one tensor per image; this model's "
                 "preprocess %s makes %d", p->info->preprocess, p->ncrops);
        e = CHEX_OIP_EREQUEST;
    }
    if (e != CHEX_OIP_OK) {
        st = e == CHEX_OIP_EREQUEST ? 400 : e == CHEX_OIP_ETOOBIG ? 413 : 500;
        if (e == CHEX_OIP_ENOMEM)
            snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    int n = r->oip->n;
    r->imgs = calloc((size_t)n, sizeof *r->imgs);
    r->probs = calloc((size_t)n * (size_t)m->num_labels, sizeof(float));
    r->scratch = calloc((size_t)n, sizeof *r->scratch);
    if (!r->imgs || !r->probs || !r->scratch) {
        st = 500;
        code = "internal_error";
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    uint64_t need = 0;
    for (int i = 0; i < n; i++) {
        if (r->oip->kind == CHEX_OIP_IN_TENSOR) {
            need += tensor_bytes(p) + ANSWER_JSON_BYTES;
            continue;
        }
        r->oip_items[i].buf = (uint8_t *)r->oip->images[i].data;
        r->oip_items[i].len = r->oip->images[i].len;
        chex_pre_probe_info info;
        char pmsg[256];
        chex_pre_err pe = probe_image(r, &r->oip_items[i], i, &info, &need, pmsg, sizeof pmsg);
        if (pe != CHEX_PRE_OK) {
            snprintf(msg, sizeof msg, "input 'image' element %d: %s", i, pmsg);
            st = chex_answer_pre_status(pe);
            code = chex_answer_pre_code(pe);
            goto fail;
        }
    }
    r->oip->images = NULL; /* items is this frame's; oip_items keeps them */
    if (admit(r, need) != 0) {
        st = 413;
        code = "image_too_large";
        snprintf(msg, sizeof msg, "%s", r->err_msg);
        goto fail;
    }
    /* A body that is all JSON has been decoded into the scratch: its buffer
     * goes back now rather than at completion. */
    if (r->oip_hl < 0)
        body_free(r, &r->raw);
    r->work_more = need;
    r->src = r->oip_items;
    r->src_borrowed = 1;
    r->nimg = n;
    return 0;
fail:
    if (r->oip)
        r->oip->images = NULL;
    fail_request(r, st, code, msg);
    build_answer(d, r);
    resume_answered(d, r);
    return -1;
}

/* Touches worker w's whole workspace once (a full batch of zeros) so that
 * what is resident at start includes it. */
static void warm_up(chexd *d, worker_t *w)
{
    for (int i = 0; i < chex_registry_count(d->reg); i++) {
        chex_served *sv = chex_registry_acquire(d->reg, i);
        const chex_pipeline *p = &sv->p;
        chex_pipeline_batch *b = &sv->batch[w->id];
        int rows = b->max_images * p->ncrops;
        memset(b->input, 0, (size_t)rows * chex_pipeline_tensor_floats(p) * sizeof(float));
        chex_model_forward(p->model, sv->ws[w->id], b->input, rows, NULL, b->crop_probs);
        chex_registry_release(d->reg, sv);
    }
    pthread_mutex_lock(&d->lock);
    d->warm++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

/* Lock held: requests among a batch's images (a request's are adjacent). */
static int batch_requests(req *const *who, int n)
{
    int nr = 0;
    for (int i = 0; i < n; i++)
        nr += i == 0 || who[i] != who[i - 1];
    return nr;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    chexd *d = w->d;
    req *who[256];
    int idx[256];
    const int share = d->cores_per_worker;
    omp_set_num_threads(share);
    warm_up(d, w);
    pthread_mutex_lock(&d->lock);
    for (;;) {
        /* Work and a share of the cores; at stop, until the queue is empty.
         * Work arriving at an idle daemon goes to worker 0, whose team and
         * workspace are warm from the last such request (a different worker
         * each time made a lone forward ~1.4x slower). */
        while (!(d->head && d->cores_free >= share && (w->id == 0 || d->busy > 0)) &&
               !(d->stop_worker && !d->head))
            pthread_cond_wait(&d->cond, &d->lock);
        if (!d->head)
            break;
        /* With batch_window_ms > 0, wait until max_batch images are pending
         * or the oldest request has waited that long; with 0 (default) start
         * at once with what queued while the workers were busy. */
        double deadline = d->head->t_enqueued + d->cfg->batch_window_ms;
        if (d->cfg->batch_window_ms > 0 && d->pending_images < d->max_batch &&
            now_ms() < deadline) {
            while (d->head && d->pending_images < d->max_batch && !d->stop_worker &&
                   now_ms() < deadline) {
                double left = deadline - now_ms();
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long long ns = (long long)ts.tv_nsec + (long long)(left * 1e6);
                ts.tv_sec += (time_t)(ns / 1000000000LL);
                ts.tv_nsec = (long)(ns % 1000000000LL);
                pthread_cond_timedwait(&d->cond, &d->lock, &ts);
            }
            continue; /* another worker may have taken it, or the cores */
        }
        /* Cores are claimed before the take: take_batch may wait (unlocked)
         * for memory. */
        int k = share;
        d->cores_free -= k;
        d->busy++;
        req *parse;
        int n = take_batch(d, who, idx, &parse);
        if (d->head) /* more than this batch: another worker may start */
            pthread_cond_broadcast(&d->cond);
        /* The only request in the daemon, no other worker busy: all cores
         * (its forward pass splits each layer among them). */
        if (n > 0 && !d->head && d->busy == 1 && d->cores_free > 0 &&
            atomic_load(&d->active) <= batch_requests(who, n)) {
            k += d->cores_free;
            d->cores_free = 0;
        }
        if (!parse && n == 0) {
            d->cores_free += k;
            d->busy--;
            if (d->head) /* running on another worker: wait for its batch's end */
                pthread_cond_wait(&d->cond, &d->lock);
            continue;
        }
        pthread_mutex_unlock(&d->lock);
        omp_set_num_threads(k);
        int ok = 0;
        if (parse)
            ok = parse_infer(d, parse) == 0;
        else
            run_batch(d, w, who, idx, n, k);
        pthread_mutex_lock(&d->lock);
        if (ok) { /* back at the head, its images now counted */
            parse->qnext = d->head;
            d->head = parse;
            if (!d->tail)
                d->tail = parse;
            d->queued++;
            d->pending_images += parse->nimg;
        }
        d->cores_free += k;
        d->busy--;
        pthread_cond_broadcast(&d->cond);
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
    const chex_pipeline *p = &r->sv->p;
    const chex_model_info *in = p->info;
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
        "preprocess", in->preprocess, "crops_per_image", p->ncrops, "sha256", in->sha256,
        "demo", in->demo ? 1 : 0, "threads", d->omp_threads, "max_batch", d->cfg->max_batch,
        "queue_depth", d->cfg->queue_depth, "version", CHEXD_VERSION, "request_id", r->id);
    if (j) {
        json_object_set_new(j, "isa", json_string(chex_model_isa()));
        json_object_set_new(j, "workers", json_integer(d->nworkers));
        json_object_set_new(j, "outputs", chex_answer_outputs(in));
        chex_pre_decoder_versions dv;
        chex_pre_get_decoder_versions(&dv);
        json_object_set_new(j, "decoders",
                            json_pack("{s:s, s:s}", "openjpeg", dv.openjpeg, "charls", dv.charls));
        json_object_set_new(j, "precision", json_string(p->precision == CHEX_PRECISION_INT8
                                                            ? "int8"
                                                            : "fp32"));
    }
    if (j) {
        uint64_t req_limit = chex_budget_limit(&r->d->budget), cached = 0;
        json_t *mem = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "limit_bytes", (json_int_t)d->memory_limit,
            "resident_at_start_bytes", (json_int_t)d->rss_start, "model_bytes",
            (json_int_t)d->rss_model, "workspace_bytes",
            (json_int_t)(d->rss_start > d->rss_model ? d->rss_start - d->rss_model : 0),
            "requests_limit_bytes", (json_int_t)req_limit, "reserved_bytes",
            (json_int_t)requests_reserved(r->d, &cached), "cached_body_bytes",
            (json_int_t)cached);
        json_object_set_new(j, "memory", mem);
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
    uint64_t cached, held = requests_reserved(d, &cached);
    chex_metrics_memory mem = {held,
                               cached,
                               d->memory_limit,
                               chex_budget_limit(&d->budget),
                               chex_budget_peak(&d->budget),
                               chex_budget_refused(&d->budget)};
    return send_body(r, 200, chex_metrics_render(q, &mem),
                     "text/plain; version=0.0.4; charset=utf-8", NULL, 0);
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

static int reject(req *r, enum MHD_Result *ret, int status, const char *code, const char *msg,
                  const char *allow);

/* "a, b" (the served names), or the versions of name[0..len) when it is served. */
static void served_names(const chex_registry *reg, const char *name, size_t len, char *out,
                         size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < chex_registry_count(reg) && o < cap; i++) {
        const char *n = chex_registry_name(reg, i);
        const char *shown = name ? chex_registry_version(reg, i) : n;
        if (name && !seg_len_eq(name, len, n))
            continue;
        int dup = 0; /* a name with several versions is listed once */
        for (int j = 0; !name && j < i; j++)
            dup |= strcmp(chex_registry_name(reg, j), n) == 0;
        if (dup)
            continue;
        int w = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", shown);
        o = w < 0 ? cap : o + (size_t)w;
    }
}

/* Picks the model a request runs on and holds its weights in r->sv until
 * completion: the /v2 path's model and version (the newest when none), or
 * /v1's ?model=NAME (the first served model when absent). Returns 1, or 0
 * with a 404 answered (*ret set). GET /v2 and routes without a model pass. */
static int pick_model(req *r, enum MHD_Result *ret)
{
    const chex_registry *reg = r->d->reg;
    char msg[512], names[256];
    int slot;
    if (r->route == CHEX_ROUTE_OIP || r->route == CHEX_ROUTE_INFER) {
        chex_oip_path op;
        chex_oip_path_parse(&op, r->path);
        if (op.route == CHEX_OIP_ROUTE_SERVER)
            return 1;
        slot = chex_registry_find(reg, op.model, op.model_len, op.version, op.version_len);
        if (slot < 0) {
            served_names(reg, op.model, op.model_len, names, sizeof names);
            if (names[0])
                snprintf(msg, sizeof msg, "model %.*s has no version %.*s (served: %s)",
                         (int)(op.model_len < 64 ? op.model_len : 64), op.model,
                         (int)(op.version_len < 32 ? op.version_len : 32), op.version, names);
            else {
                served_names(reg, NULL, 0, names, sizeof names);
                snprintf(msg, sizeof msg, "unknown model %.*s (served: %s)",
                         (int)(op.model_len < 64 ? op.model_len : 64), op.model ? op.model : "",
                         names);
            }
            *ret = send_error(r, 404, "not_found", msg);
            return 0;
        }
    } else if (r->route == CHEX_ROUTE_PREDICT || r->route == CHEX_ROUTE_EXPLAIN ||
               r->route == CHEX_ROUTE_MODEL) {
        const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "model");
        slot = chex_registry_find(reg, name, name ? strlen(name) : 0, NULL, 0);
        if (slot < 0) {
            char shown[64];
            safe_copy(shown, sizeof shown, name);
            served_names(reg, NULL, 0, names, sizeof names);
            snprintf(msg, sizeof msg, "unknown model %s (served: %s)", shown, names);
            if (r->route == CHEX_ROUTE_MODEL) {
                *ret = send_error(r, 404, "not_found", msg);
                return 0;
            }
            return reject(r, ret, 404, "not_found", msg, NULL) ? 0 : -1;
        }
    } else {
        return 1;
    }
    r->sv = chex_registry_acquire(r->d->reg, slot);
    return 1;
}

static enum MHD_Result answer_oip(req *r)
{
    chex_oip_path op;
    chex_oip_path_parse(&op, r->path);
    if (op.route == CHEX_OIP_ROUTE_SERVER)
        return send_body(r, 200, chex_oip_server_metadata("chexd", CHEXD_VERSION),
                         "application/json", NULL, 0);
    if (op.route == CHEX_OIP_ROUTE_READY) {
        if (atomic_load(&r->d->draining))
            return send_error(r, 503, "shutting_down", "the server is shutting down");
        return send_json(r, 200, json_pack("{s:s, s:b}", "name", r->sv->oip.name, "ready", 1));
    }
    return send_body(r, 200, chex_oip_model_metadata(&r->sv->oip), "application/json", NULL, 0);
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
    case CHEX_ROUTE_OIP:
        return answer_oip(r);
    case CHEX_ROUTE_MODELS:
        return send_json(r, 200, chex_registry_list(r->d->reg));
    default:
        return send_error(r, 404, "not_found", "no such route");
    }
}

/* The answer of a resumed predict request: built by the worker, or one of
 * the small errors decided without it (timeout, shutdown, memory). */
static enum MHD_Result answer_predict(req *r)
{
    chexd *d = r->d;
    if (r->ans) {
        char *body = r->ans;
        r->ans = NULL;
        if (r->ans_ctype[0])
            return send_bytes(r, r->ans_status, body, r->ans_len, MHD_RESPMEM_MUST_FREE,
                              r->ans_ctype, r->ans_label);
        return send_body(r, r->ans_status, body, "application/json", NULL,
                         r->ans_status == 503 ? 1 : 0);
    }
    if (r->result_status == 504) {
        char msg[128];
        snprintf(msg, sizeof msg, "waited more than request_timeout_ms (%d ms) for the model",
                 d->cfg->request_timeout_ms);
        return send_error(r, 504, "timeout", msg);
    }
    if (r->result_status == 503 && strcmp(r->result_msg, "memory") == 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "this request needs %.1f MiB and the memory budget (memory_limit_mb %d) is "
                 "held by other requests; retry",
                 MIB(r->work_need + r->body_held), d->cfg->memory_limit_mb);
        return send_error(r, 503, "memory_busy", msg);
    }
    if (r->result_status == 503)
        return send_error(r, 503, "shutting_down", "the server is shutting down");
    return send_error(r, 500, "internal_error", "out of memory for the answer");
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
    int rc = size ? body_append(r, &r->parts[r->nparts - 1], data, size, 0) : 0;
    if (rc == -2) {
        set_error(r, 503, "memory_busy",
                  "the memory budget (memory_limit_mb %d) has no room for this upload now; retry",
                  r->d->cfg->memory_limit_mb);
        for (int i = 0; i < r->nparts; i++) /* the rest is read and dropped */
            body_free(r, &r->parts[i]);
    } else if (rc != 0)
        set_error(r, 500, "internal_error", "out of memory reading the upload");
    return MHD_YES;
}

/* Most body bytes read and thrown away after an answer decided from the
 * headers: max(64 MiB, max_upload_bytes). */
static uint64_t drain_bound(const chexd *d)
{
    uint64_t b = (uint64_t)64 << 20;
    return d->cfg->max_upload_bytes > b ? d->cfg->max_upload_bytes : b;
}

/* 1 when the request announces a body (Content-Length > 0 or chunked);
 * *clen gets Content-Length (UINT64_MAX when absent or unparsable). */
static int body_announced(struct MHD_Connection *c, uint64_t *clen)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    *clen = UINT64_MAX;
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (!errno && end != cl && *end == '\0')
            *clen = v;
    }
    return (cl && *clen != 0) || te != NULL;
}

/* An error decided from the headers (status, code, msg; allow: the Allow
 * header or NULL). Answering at once would close the connection with the
 * body unread, and a client that writes the whole body before reading (Python's
 * urllib) gets a reset instead of the answer. So when a body follows, the
 * request is marked and its body read and discarded (bounded by drain_bound
 * and DRAIN_MS), and the answer goes out on the final call. It goes out at
 * once when no body follows, when the client waits for "100 Continue" (it
 * then sends no body), and when Content-Length is past the drain bound. The
 * answer carries Connection: close whenever a body was announced. Returns
 * what first_call returns: 1 when answered (*ret set), 0 to go on reading. */
static int reject(req *r, enum MHD_Result *ret, int status, const char *code, const char *msg,
                  const char *allow)
{
    uint64_t clen;
    int body = body_announced(r->conn, &clen);
    const char *expect = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    int waits = expect && strcasecmp(expect, "100-continue") == 0;
    r->close = body;
    if (!body || waits || (clen != UINT64_MAX && clen > drain_bound(r->d))) {
        *ret = send_error_ex(r, status, code, msg, allow, status == 503 ? 1 : 0);
        return 1;
    }
    set_error(r, status, code, "%s", msg);
    r->rejected = 1;
    r->allow = allow;
    r->body = BODY_NONE;
    return 0;
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
        return reject(r, ret, 404, "not_found", "no such route", NULL);
    }
    /* The health probes and the page (which asks for the token itself) are open. */
    int open_route = r->route == CHEX_ROUTE_HEALTHZ || r->route == CHEX_ROUTE_READYZ ||
                     r->route == CHEX_ROUTE_LIVE || r->route == CHEX_ROUTE_READY ||
                     r->route == CHEX_ROUTE_WEB;
    int post_route = r->route == CHEX_ROUTE_PREDICT || r->route == CHEX_ROUTE_EXPLAIN ||
                     r->route == CHEX_ROUTE_INFER || r->route == CHEX_ROUTE_RELOAD;
    if (post_route ? !is_post : !is_get) {
        char msg[96];
        const char *allow = post_route ? "POST" : "GET, HEAD";
        snprintf(msg, sizeof msg, "method %s not allowed here; allowed: %s", method, allow);
        return reject(r, ret, 405, "method_not_allowed", msg, allow);
    }
    if (!open_route && !chex_token_check(d->token, MHD_lookup_connection_value(
                                                       c, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION)))
        return reject(r, ret, 401, "unauthorized", "missing or wrong bearer token", NULL);
    int picked = pick_model(r, ret);
    if (picked <= 0)
        return picked == 0;
    if (is_get) {
        *ret = answer_get(r);
        return 1;
    }
    /* POST /v1/predict, /v1/explain */
    if (atomic_load(&d->draining)) {
        return reject(r, ret, 503, "shutting_down", "the server is shutting down", NULL);
    }
    if (r->route == CHEX_ROUTE_RELOAD) {
        size_t nlen = 0;
        reload_name(r->path, &nlen);
        if (chex_registry_find(d->reg, r->path + 11, nlen, NULL, 0) < 0) {
            char names[256], msg[400];
            served_names(d->reg, NULL, 0, names, sizeof names);
            snprintf(msg, sizeof msg, "unknown model %.*s (served: %s)", (int)nlen, r->path + 11,
                     names);
            return reject(r, ret, 404, "not_found", msg, NULL);
        }
        return 0; /* a body is read and ignored; the final call queues the reload */
    }
    const chex_pipeline *p = &r->sv->p;
    char qmsg[1536];
    r->cam = CHEX_CAM_NONE;
    r->want_dicom = chex_answer_dicom_accepts(
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT));
    if (r->route == CHEX_ROUTE_INFER) {
    } else if (r->route == CHEX_ROUTE_EXPLAIN) {
        if (chex_heatmap_parse_label(p->info,
                                     MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "label"),
                                     1, &r->cam, qmsg, sizeof qmsg) != 0) {
            return reject(r, ret, 400, "bad_label", qmsg, NULL);
        }
    } else {
        if (chex_answer_opts_parse(&r->opts,
                                   MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "top"),
                                   MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "threshold"),
                                   p->info->num_labels, qmsg, sizeof qmsg) != 0) {
            return reject(r, ret, 400, "bad_query", qmsg, NULL);
        }
        const char *cam = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cam");
        if (cam && chex_heatmap_parse_label(p->info, cam, 1, &r->cam, qmsg, sizeof qmsg) != 0) {
            return reject(r, ret, 400, "bad_label", qmsg, NULL);
        }
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long clen = 0;
    if (cl) {
        char *end = NULL;
        errno = 0;
        clen = strtoull(cl, &end, 10);
        if (errno || end == cl) {
            return reject(r, ret, 400, "bad_request", "unparsable Content-Length", NULL);
        }
        if (clen > d->cfg->max_upload_bytes) {
            char msg[128];
            snprintf(msg, sizeof msg, "body of %llu bytes is over max_upload_bytes (%llu)", clen,
                     (unsigned long long)d->cfg->max_upload_bytes);
            return reject(r, ret, 413, "payload_too_large", msg, NULL);
        }
        if (!chex_budget_fits(&d->budget, clen)) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "body of %.1f MiB is over the %.1f MiB requests may hold "
                     "(memory_limit_mb %d)",
                     MIB(clen), MIB(chex_budget_limit(&d->budget)), d->cfg->memory_limit_mb);
            *ret = send_error(r, 413, "image_too_large", msg);
            return 1;
        }
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (r->route == CHEX_ROUTE_INFER)
        ct = "application/octet-stream"; /* JSON, or JSON + binary tail: read whole */
    static const char accepted[] = "send image/png, image/jpeg, application/dicom, "
                                   "application/octet-stream or multipart/form-data";
    if (!ct) {
        char msg[160];
        snprintf(msg, sizeof msg, "no Content-Type: %s", accepted);
        return reject(r, ret, 415, "unsupported_media_type", msg, NULL);
    }
    if (ct_is(ct, "multipart/form-data")) {
        r->body = BODY_MULTIPART;
        r->pp = MHD_create_post_processor(c, POST_BUFFER, post_iterator, r);
        if (!r->pp) {
            return reject(r, ret, 400, "bad_multipart", "multipart/form-data without a boundary", NULL);
        }
        return 0;
    }
    if (ct_is(ct, "image/png") || ct_is(ct, "image/jpeg") || ct_is(ct, "image/jpg") ||
        ct_is(ct, "application/dicom") || ct_is(ct, "application/octet-stream")) {
        r->body = BODY_RAW;
        /* Reserve what Content-Length announces, up to 1 MiB: a client that
         * sends headers only must not make the daemon reserve the whole body. */
        r->clen = clen;
        if (clen > 0) {
            size_t cap = clen < (1u << 20) ? (size_t)clen : (size_t)1 << 20;
            if (chex_budget_try_reserve(&d->budget, cap) != 0) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "the memory budget (memory_limit_mb %d) has no room for this upload "
                         "now; retry",
                         d->cfg->memory_limit_mb);
                *ret = send_error(r, 503, "memory_busy", msg);
                return 1;
            }
            r->body_held = cap;
            r->raw.cap = cap; /* mapped when the first bytes arrive */
        }
        return 0;
    }
    char msg[256];
    char shown[64];
    safe_copy(shown, sizeof shown, ct);
    snprintf(msg, sizeof msg, "Content-Type %s is not accepted: %s", shown, accepted);
    return reject(r, ret, 415, "unsupported_media_type", msg, NULL);
}

/* Body chunk: always consumed. */
static enum MHD_Result body_chunk(req *r, const char *data, size_t size)
{
    chexd *d = r->d;
    r->received += size;
    chex_guard_body(r->gc, size);
    if (r->rejected) {
        /* Thrown away; past the bounds the sender is cut off. */
        if (r->received > drain_bound(d) || now_ms() - r->t0 > DRAIN_MS)
            return MHD_NO;
        return MHD_YES;
    }
    if (r->received > d->cfg->max_upload_bytes) {
        set_error(r, 413, "payload_too_large", "body is over max_upload_bytes (%llu)",
                  (unsigned long long)d->cfg->max_upload_bytes);
        /* Read and thrown away so the client sees the 413 (see reject());
         * past the drain bounds the sender is cut off. */
        if (r->received > drain_bound(d) || now_ms() - r->t0 > DRAIN_MS)
            return MHD_NO;
        return MHD_YES;
    }
    if (r->err_status)
        return MHD_YES;
    if (r->body == BODY_RAW) {
        int rc = body_append(r, &r->raw, data, size, r->clen);
        if (rc == -2) {
            set_error(r, 503, "memory_busy",
                      "the memory budget (memory_limit_mb %d) has no room for this upload now; "
                      "retry",
                      d->cfg->memory_limit_mb);
            body_free(r, &r->raw); /* the rest of the body is read and dropped */
        } else if (rc != 0) {
            set_error(r, 500, "internal_error", "out of memory reading the upload");
        }
    } else if (r->body == BODY_MULTIPART) {
        if (MHD_post_process(r->pp, data, size) != MHD_YES)
            set_error(r, 400, "bad_multipart", "malformed multipart/form-data body");
    }
    return MHD_YES;
}

/* Final callback of a predict upload: read each image's header, size the
 * request's memory, enqueue, suspend. Decoding happens on the worker. */
static enum MHD_Result enqueue(req *r);

/* Sets r's work need; 0 when it can ever fit the budget, else -1 with the
 * 413 message in r->err_msg. */
static int admit(req *r, uint64_t need)
{
    chexd *d = r->d;
    r->work_need = need;
    if (chex_budget_fits(&d->budget, need + r->body_held))
        return 0;
    snprintf(r->err_msg, sizeof r->err_msg,
             "this request needs %.1f MiB (body %.1f MiB, decoding and answer %.1f MiB), over "
             "the %.1f MiB requests may hold (memory_limit_mb %d less %.1f MiB resident at start)",
             MIB(need + r->body_held), MIB(r->body_held), MIB(need),
             MIB(chex_budget_limit(&d->budget)), d->cfg->memory_limit_mb, MIB(d->rss_start));
    return -1;
}

/* Final callback of POST .../infer: only the header length is read here;
 * the worker parses the body (parse_infer) once its scratch is reserved.
 * Its images then go through the same probe, budget, queue and worker decode
 * as /v1/predict's parts; FP32 tensors go to the network as they are. */
static enum MHD_Result finish_infer(req *r)
{
    char msg[512];
    const char *hv =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    r->oip_hl = -1;
    if (hv && (r->oip_hl = chex_oip_header_length(hv, r->raw.len, msg, sizeof msg)) < 0)
        return send_error(r, 400, "bad_request", msg);
    r->oip_slen = chex_oip_scratch_bound(r->raw.len, &r->sv->oip, MAX_PARTS);
    if (admit(r, r->oip_slen) != 0)
        return send_error(r, 413, "image_too_large", r->err_msg);
    r->parse_pending = 1;
    return enqueue(r);
}

static enum MHD_Result finish_upload(req *r)
{
    if (r->pp) {
        if (MHD_destroy_post_processor(r->pp) != MHD_YES)
            set_error(r, 400, "bad_multipart", "truncated multipart/form-data body");
        r->pp = NULL;
    }
    if (r->err_status)
        return send_error(r, r->err_status, r->err_code, r->err_msg);
    if (r->route == CHEX_ROUTE_INFER)
        return finish_infer(r);
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
    const chex_pipeline *p = &r->sv->p;
    int nl = p->info->num_labels;
    r->imgs = calloc((size_t)n, sizeof *r->imgs);
    r->probs = calloc((size_t)n * (size_t)nl, sizeof(float));
    r->scratch = calloc((size_t)n, sizeof *r->scratch);
    if (!r->imgs || !r->probs || !r->scratch)
        return send_error(r, 500, "internal_error", "out of memory");
    if (r->cam != CHEX_CAM_NONE) {
        r->cam_raw = malloc((size_t)n * chex_heatmap_raw_floats(p) * sizeof(float));
        r->cam_label = calloc((size_t)n, sizeof(int));
        if (!r->cam_raw || !r->cam_label)
            return send_error(r, 500, "internal_error", "out of memory");
    }
    uint64_t need = 0;
    for (int i = 0; i < n; i++) {
        char msg[256], full[300];
        chex_pre_probe_info info;
        chex_pre_err e = probe_image(r, &src[i], i, &info, &need, msg, sizeof msg);
        if (e != CHEX_PRE_OK) {
            if (r->body == BODY_MULTIPART)
                snprintf(full, sizeof full, "part %d: %s", i + 1, msg);
            else
                snprintf(full, sizeof full, "%s", msg);
            return send_error(r, chex_answer_pre_status(e), chex_answer_pre_code(e), full);
        }
        if (r->want_dicom && strcmp(info.format, "dicom") != 0) {
            if (r->body == BODY_MULTIPART)
                snprintf(full, sizeof full, "part %d: %s", i + 1, chex_answer_dicom_not_dicom);
            else
                snprintf(full, sizeof full, "%s", chex_answer_dicom_not_dicom);
            return send_error(r, 406, "not_acceptable", full);
        }
    }
    if (admit(r, need) != 0)
        return send_error(r, 413, "image_too_large", r->err_msg);
    r->src = src;
    r->nimg = n;
    return enqueue(r);
}

/* Puts a prepared request in the queue and suspends its connection. */
static enum MHD_Result enqueue(req *r)
{
    chexd *d = r->d;
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
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return MHD_YES;
}

/* ---------- model reloads ---------- */

/* POST /v1/models/NAME/reload: handed to the loader thread, the connection
 * suspended until its answer is built. */
static enum MHD_Result queue_reload(req *r)
{
    chexd *d = r->d;
    pthread_mutex_lock(&d->lock);
    if (d->stop_loader) {
        pthread_mutex_unlock(&d->lock);
        return send_error(r, 503, "shutting_down", "the server is shutting down");
    }
    r->state = ST_QUEUED;
    MHD_suspend_connection(r->conn);
    if (d->load_tail)
        d->load_tail->lnext = r;
    else
        d->load_head = r;
    d->load_tail = r;
    pthread_cond_signal(&d->load_cond);
    pthread_mutex_unlock(&d->lock);
    return MHD_YES;
}

/* Reloads every version of the model r names; the answer goes in r->ans. */
static void run_reload(chexd *d, req *r)
{
    size_t nlen = 0;
    reload_name(r->path, &nlen);
    const char *name = r->path + 11;
    json_t *done = json_array();
    int status = 200;
    char msg[1024] = "", one[768], sha[65] = "";
    for (int i = 0; i < chex_registry_count(d->reg); i++) {
        if (!seg_len_eq(name, nlen, chex_registry_name(d->reg, i)))
            continue;
        int rc = chex_registry_reload(d->reg, i, sha, one, sizeof one);
        if (rc != 0) {
            status = rc == -2 && status != 422 ? 503 : 422;
            snprintf(msg, sizeof msg, "version %s: %s; still serving sha256 %s",
                     chex_registry_version(d->reg, i), one, sha);
        }
        json_array_append_new(done, json_pack("{s:s, s:s, s:b}", "version",
                                              chex_registry_version(d->reg, i), "sha256", sha,
                                              "reloaded", rc == 0));
    }
    r->ans_status = status;
    if (status == 200)
        r->ans = chex_answer_dump(json_pack("{s:s%, s:o, s:s}", "model", name, nlen, "versions",
                                            done, "request_id", r->id));
    else {
        json_decref(done);
        r->ans = chex_answer_dump(chex_answer_error(status == 503 ? "memory_busy" : "reload_failed",
                                                    msg, r->id));
    }
}

static void *loader_main(void *arg)
{
    chexd *d = arg;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (!d->load_head && !d->stop_loader)
            pthread_cond_wait(&d->load_cond, &d->lock);
        req *r = d->load_head;
        if (!r)
            break;
        d->load_head = r->lnext;
        if (!d->load_head)
            d->load_tail = NULL;
        r->lnext = NULL;
        pthread_mutex_unlock(&d->lock);
        run_reload(d, r);
        r->state = ST_RESUMED;
        MHD_resume_connection(r->conn);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
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
        r->gc = chex_guard_of(conn);
        uint64_t clen;
        chex_guard_headers_done(r->gc, body_announced(conn, &clen));
        enum MHD_Result ret = MHD_YES;
        if (first_call(r, method, &ret)) {
            chex_guard_body_done(r->gc);
            return ret;
        }
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
    chex_guard_body_done(r->gc);
    if (r->rejected)
        return send_error_ex(r, r->err_status, r->err_code, r->err_msg, r->allow,
                             r->err_status == 503 ? 1 : 0);
    if ((r->route == CHEX_ROUTE_PREDICT || r->route == CHEX_ROUTE_EXPLAIN ||
         r->route == CHEX_ROUTE_INFER) &&
        r->body != BODY_NONE)
        return finish_upload(r);
    if (r->route == CHEX_ROUTE_RELOAD)
        return queue_reload(r);
    return MHD_YES;
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    chexd *d = cls;
    req *r = *req_cls;
    chex_guard_request_done(chex_guard_of(conn));
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
    body_free(r, &r->raw);
    body_free(r, &r->oip_scratch);
    for (int i = 0; i < r->nparts; i++)
        body_free(r, &r->parts[i]);
    for (int i = 0; i < r->nimg; i++)
        chex_pipeline_prepared_free(&r->imgs[i]);
    free(r->imgs);
    free(r->probs);
    free(r->cam_raw);
    free(r->cam_label);
    free(r->scratch);
    free(r->ans);
    /* Whatever the outcome, the reservation goes back; a worker waiting for
     * room is woken. */
    chex_budget_release(&d->budget, r->body_held + r->work_held);
    pthread_mutex_lock(&d->lock);
    if (r->work_taken)
        d->holders--;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    free(r->oip);
    chex_registry_release(d->reg, r->sv);
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

/* Resident bytes of this process (VmRSS), 0 when /proc is not readable. */
static uint64_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* Waits for the worker's warm-up pass, then sets the requests' budget: the
 * limit less what is resident now and the HTTP side's reserve. */
static int set_budget(chexd *d, char *msg, size_t msglen)
{
    pthread_mutex_lock(&d->lock);
    while (d->warm < d->nworkers)
        pthread_cond_wait(&d->cond, &d->lock);
    pthread_mutex_unlock(&d->lock);
    malloc_trim(0);
    d->rss_start = resident_bytes();
    d->memory_limit = (uint64_t)d->cfg->memory_limit_mb << 20;
    uint64_t req_limit = 0;
    if (d->memory_limit) {
        uint64_t floor = d->rss_start + HTTP_RESERVE_BYTES;
        if (d->memory_limit <= floor + (UINT64_C(4) << 20)) {
            snprintf(msg, msglen,
                     "memory_limit_mb: %d MiB is below what chexd holds at start: %.0f MiB "
                     "resident (model and libraries %.0f MiB, workspaces of %d workers for "
                     "%d images each %.0f MiB) + %.0f MiB for connections; give it at least %.0f",
                     d->cfg->memory_limit_mb, MIB(d->rss_start), MIB(d->rss_model),
                     d->nworkers, d->max_batch,
                     MIB(d->rss_start > d->rss_model ? d->rss_start - d->rss_model : 0),
                     MIB(HTTP_RESERVE_BYTES), MIB(floor) + 5);
            return -1;
        }
        req_limit = d->memory_limit - floor;
    }
    d->budget.limit = req_limit;
    /* Kept bodies may fill half of what requests share (they are given back
     * whenever a reservation needs the room); without a limit, 256 MiB. */
    d->bodies.max_bytes = req_limit ? req_limit / 2 : UINT64_C(256) << 20;
    return 0;
}

static void free_daemon(chexd *d)
{
    chex_registry_set_budget(d->reg, NULL);
    chex_token_free(d->token);
    chex_tls_free(d->tls);
    chex_guard_stop(d->guard);
    if (d->bodies_ready)
        chex_bodycache_destroy(&d->bodies);
    if (d->budget_ready)
        chex_budget_destroy(&d->budget);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    pthread_cond_destroy(&d->reap_cond);
    pthread_cond_destroy(&d->load_cond);
    free(d->workers);
    free(d);
}

int chexd_start(chexd **out, const chex_config *cfg, chex_registry *reg, int listen_fd,
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
    d->reg = reg;
    d->max_batch = chex_registry_max_batch(reg);
    d->listen_fd = listen_fd;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    pthread_cond_init(&d->reap_cond, NULL);
    pthread_cond_init(&d->load_cond, NULL);
    d->omp_threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
    d->rss_model = resident_bytes();
    if (chex_budget_init(&d->budget, 0) != 0) {
        close(listen_fd);
        free(d);
        snprintf(msg, msglen, "cannot create the memory budget's lock");
        return -1;
    }
    d->budget_ready = 1;
    if (chex_bodycache_init(&d->bodies, &d->budget, 0) != 0) {
        snprintf(msg, msglen, "cannot create the body cache's lock");
        goto fail;
    }
    d->bodies_ready = 1;
    chex_budget_set_reclaim(&d->budget, chex_bodycache_reclaim, &d->bodies);
    if (chex_token_open(&d->token, cfg->api_token_file, msg, msglen) != 0)
        goto fail;
    int tls = cfg->tls_cert_file[0] || cfg->tls_key_file[0];
    if (tls) {
        if (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0]) {
            snprintf(msg, msglen, "%s is set but %s is not: TLS needs both",
                     cfg->tls_cert_file[0] ? "tls_cert_file" : "tls_key_file",
                     cfg->tls_cert_file[0] ? "tls_key_file" : "tls_cert_file");
            goto fail;
        }
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
            MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES) {
            snprintf(msg, msglen, "tls_cert_file: this libmicrohttpd has no TLS certificate callback");
            goto fail;
        }
        if (chex_tls_open(&d->tls, cfg->tls_cert_file, cfg->tls_key_file, msg, msglen) != 0)
            goto fail;
    }
    if (chex_guard_start(&d->guard, cfg->header_timeout_s, cfg->min_upload_bytes_per_s, msg,
                         msglen) != 0)
        goto fail;
    d->nworkers = chex_registry_workers(reg);
    d->cores_per_worker = d->omp_threads / d->nworkers > 0 ? d->omp_threads / d->nworkers : 1;
    d->cores_free = d->omp_threads; /* workers beyond threads wait for cores */
    d->workers = calloc((size_t)d->nworkers, sizeof *d->workers);
    if (!d->workers) {
        snprintf(msg, msglen, "out of memory for %d workers", d->nworkers);
        goto fail;
    }
    for (int i = 0; i < d->nworkers; i++) {
        d->workers[i].d = d;
        d->workers[i].id = i;
        if (pthread_create(&d->workers[i].th, NULL, worker_main, &d->workers[i]) != 0) {
            snprintf(msg, msglen, "cannot start inference worker %d", i);
            goto fail;
        }
        d->workers_started++;
    }
    if (set_budget(d, msg, msglen) != 0)
        goto fail;
    chex_registry_set_budget(reg, &d->budget);
    if (pthread_create(&d->loader, NULL, loader_main, d) != 0) {
        snprintf(msg, msglen, "cannot start the model loader thread");
        goto fail;
    }
    d->loader_started = 1;
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
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)chex_guard_notify,
                                        d->guard};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, NULL};
    if (tls)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0,
                                            chex_tls_mhd_callback()};
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
    d->stop_worker = d->stop_reaper = d->stop_loader = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_cond_broadcast(&d->reap_cond);
    pthread_cond_broadcast(&d->load_cond);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->workers_started; i++)
        pthread_join(d->workers[i].th, NULL);
    if (d->loader_started)
        pthread_join(d->loader, NULL);
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

int chexd_reload(chexd *d)
{
    char msg[512];
    int bad = 0;
    if (chex_token_required(d->token)) {
        if (chex_token_reload(d->token, msg, sizeof msg) != 0) {
            chex_log(CHEX_LOG_ERROR, "reload: keeping the old token", "detail", msg, NULL);
            bad = 1;
        } else {
            chex_log(CHEX_LOG_INFO, "reload: token read", "file", d->cfg->api_token_file, NULL);
        }
    }
    if (d->tls) {
        int rc = chex_tls_reload(d->tls, msg, sizeof msg);
        if (rc < 0) {
            chex_log(CHEX_LOG_ERROR, "reload: keeping the old TLS certificate", "detail", msg,
                     NULL);
            bad = 1;
        } else {
            chex_log(CHEX_LOG_INFO,
                     rc ? "reload: new TLS certificate for new connections"
                        : "reload: TLS certificate unchanged",
                     "file", d->cfg->tls_cert_file, NULL);
        }
    }
    /* Each model's file: loaded beside the weights in use, switched when it
     * passes the checks (a failure is logged by the registry). */
    for (int i = 0; i < chex_registry_count(d->reg); i++)
        if (chex_registry_reload(d->reg, i, NULL, msg, sizeof msg) != 0)
            bad = 1;
    return bad ? -1 : 0;
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
        int idle = !d->head && d->busy == 0;
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
    d->stop_loader = 1; /* after answering the reloads already asked */
    pthread_cond_broadcast(&d->cond);
    pthread_cond_broadcast(&d->reap_cond);
    pthread_cond_broadcast(&d->load_cond);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->workers_started; i++)
        pthread_join(d->workers[i].th, NULL);
    pthread_join(d->reaper, NULL);
    pthread_join(d->loader, NULL);
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
