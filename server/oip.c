/* server/oip.c - Open Inference Protocol requests and answers (see oip.h).
 * The JSON header is parsed with jansson from exactly its own bytes (long
 * base64 strings decoded here first, see b64_find_spans); binary data is
 * walked with explicit bounds, so nothing reads past the body. */
#include "server/oip.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const oip_messages[CHEX_OIP_ERR_COUNT] = {
    [CHEX_OIP_OK] = "ok",
    [CHEX_OIP_EREQUEST] = "malformed inference request",
    [CHEX_OIP_ETOOBIG] = "inference request too large",
    [CHEX_OIP_ENOMEM] = "out of memory",
};

const char *chex_oip_strerror(chex_oip_err e)
{
    if ((int)e < 0 || e >= CHEX_OIP_ERR_COUNT)
        return "unknown error";
    return oip_messages[e];
}

static chex_oip_err fail(chex_oip_err e, char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static chex_oip_err fail(chex_oip_err e, char *msg, size_t msglen, const char *fmt, ...)
{
    if (msg && msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* ---------- routes ---------- */

static int seg_is(const char *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}

void chex_oip_path_parse(chex_oip_path *out, const char *path)
{
    memset(out, 0, sizeof *out);
    if (!path)
        return;
    if (strcmp(path, "/v2") == 0 || strcmp(path, "/v2/") == 0) {
        out->route = CHEX_OIP_ROUTE_SERVER;
        return;
    }
    static const char prefix[] = "/v2/models/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return;
    const char *seg[5];
    size_t len[5];
    int n = 0;
    const char *s = path + sizeof prefix - 1;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t l = slash ? (size_t)(slash - s) : strlen(s);
        if (l == 0 || n == 4)
            return; /* empty segment or too many */
        seg[n] = s;
        len[n] = l;
        n++;
        if (!slash)
            break;
        s = slash + 1;
    }
    chex_oip_route action = CHEX_OIP_ROUTE_MODEL;
    int base = n; /* segments before the action */
    if (n == 2 || n == 4) {
        if (seg_is(seg[n - 1], len[n - 1], "ready"))
            action = CHEX_OIP_ROUTE_READY;
        else if (seg_is(seg[n - 1], len[n - 1], "infer"))
            action = CHEX_OIP_ROUTE_INFER;
        else if (n == 4)
            return;
        if (action != CHEX_OIP_ROUTE_MODEL)
            base = n - 1;
    }
    if (base == 2)
        return; /* /v2/models/m/x */
    if (base == 3 && !seg_is(seg[1], len[1], "versions"))
        return;
    out->route = action;
    out->model = seg[0];
    out->model_len = len[0];
    if (base == 3) {
        out->version = seg[2];
        out->version_len = len[2];
    }
}

int chex_oip_path_matches(const chex_oip_path *p, const chex_oip_model *m)
{
    if (!p->model || !m->name || !seg_is(p->model, p->model_len, m->name))
        return 0;
    return !p->version || (m->version && seg_is(p->version, p->version_len, m->version));
}

/* ---------- infer request ---------- */

/* Base64 decodes to at most 3/4 of its characters. A tensor's values are
 * counted against its data before any is written, and each takes at least two
 * bytes of JSON ("0,") or four of binary: at most 2 * body_len bytes. */
size_t chex_oip_scratch_bound(size_t body_len, const chex_oip_model *m, int max_images)
{
    size_t t = (size_t)(max_images > 0 ? max_images : 0) * (size_t)m->channels *
               (size_t)m->size * (size_t)m->size * sizeof(float);
    size_t b64 = body_len / 4 * 3 + 3;
    size_t vals = body_len <= SIZE_MAX / 2 ? 2 * body_len : SIZE_MAX;
    if (vals < t)
        t = vals;
    return (b64 > t ? b64 : t) + sizeof(float);
}

long long chex_oip_header_length(const char *value, size_t body_len, char *msg, size_t msglen)
{
    if (!value || !*value) {
        fail(CHEX_OIP_EREQUEST, msg, msglen, "Inference-Header-Content-Length is empty");
        return -1;
    }
    unsigned long long v = 0;
    for (const char *c = value; *c; c++) {
        if (*c < '0' || *c > '9' || v > (1ULL << 50)) {
            fail(CHEX_OIP_EREQUEST, msg, msglen,
                 "Inference-Header-Content-Length is not a decimal length");
            return -1;
        }
        v = v * 10 + (unsigned)(*c - '0');
    }
    if (v > body_len) {
        fail(CHEX_OIP_EREQUEST, msg, msglen,
             "Inference-Header-Content-Length %llu exceeds the body's %zu bytes", v, body_len);
        return -1;
    }
    return (long long)v;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* 0..63 for a base64 character (standard and URL-safe), 255 for any other. */
static uint8_t b64_table[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_table_init(void)
{
    memset(b64_table, 255, sizeof b64_table);
    for (int c = 0; c < 256; c++) {
        int v = b64_val((unsigned char)c);
        if (v >= 0)
            b64_table[c] = (uint8_t)v;
    }
}

/* Decodes the run of base64 characters that starts in[0..len) into
 * out[0..cap), *used set to the characters read (the run ends at len or at
 * the first other character). Returns the decoded length, -1 when the run
 * ends with a lone character (no whole byte), -2 when out is too small. */
static long long b64_prefix(uint8_t *out, size_t cap, const uint8_t *in, size_t len,
                            size_t *used)
{
    pthread_once(&b64_once, b64_table_init);
    const uint8_t *t = b64_table;
    size_t i = 0, o = 0;
    /* Four characters give three bytes; the checks are one OR per group. */
    while (len - i >= 4) {
        uint8_t a = t[in[i]], b = t[in[i + 1]], c = t[in[i + 2]], d = t[in[i + 3]];
        if ((a | b | c | d) & 0xC0)
            break;
        if (cap - o < 3)
            return -2;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
        out[o] = (uint8_t)(v >> 16);
        out[o + 1] = (uint8_t)(v >> 8);
        out[o + 2] = (uint8_t)v;
        o += 3;
        i += 4;
    }
    uint32_t acc = 0;
    int k = 0;
    while (i < len && t[in[i]] < 64) {
        acc = acc << 6 | t[in[i]];
        k++;
        i++;
    }
    if (k == 1)
        return -1;
    if ((size_t)(k ? k - 1 : 0) > cap - o)
        return -2;
    if (k == 2)
        out[o++] = (uint8_t)(acc >> 4);
    else if (k == 3) {
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    *used = i;
    return (long long)o;
}

/* Standard or URL-safe base64, padding optional. Returns the decoded length,
 * -1 on a bad character, -2 when out[0..cap) is too small. */
static long long b64_decode(uint8_t *out, size_t cap, const char *in, size_t len)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap)
        return -2;
    size_t used = 0;
    long long n = b64_prefix(out, cap, (const uint8_t *)in, len, &used);
    return n >= 0 && used == len ? n : -1;
}

/* ---------- long base64 strings, decoded straight from the body ----------
 * A JSON request carries each image as one base64 string of megabytes.
 * jansson would copy it into a buffer grown by doubling and check every byte
 * as UTF-8, which took most of such a request's CPU (a 15 MB DICOM: ~0.7 s).
 * So strings of at least B64_LONG base64 characters are decoded from the body
 * into the scratch before jansson runs, and jansson reads, in their place, a
 * short marker naming the decoded span (B64_MARK, a private-use character
 * no base64 string holds, then the span's index). A string with an escape or
 * any other character is left to jansson and b64_leaf, as are spans past
 * B64_MAX_SPANS, so every error keeps its message. */
#define B64_LONG 1024
#define B64_MAX_SPANS 64
#define B64_MARK "\xef\xa3\xbf" "chexd-b64 " /* U+F8FF, as jansson returns it */

typedef struct {
    size_t start, end;  /* the string's content [start, end): end is its closing quote */
    size_t off, len;    /* decoded bytes in the scratch */
} b64_span;

typedef struct {
    b64_span sp[B64_MAX_SPANS];
    int n;
    size_t used; /* scratch bytes the spans take */
} b64_spans;

/* Decodes the base64 run starting at j[s] (j[0..n)) into out[0..cap) when it
 * is a whole string: only base64 characters, optional '=' padding, then the
 * closing quote. Returns the decoded length and sets *end to the quote's
 * index, or -1 (not such a string, or out too small). */
static long long b64_run(uint8_t *out, size_t cap, const uint8_t *j, size_t n, size_t s,
                         size_t *end)
{
    size_t used = 0;
    long long len = b64_prefix(out, cap, j + s, n - s, &used);
    size_t i = s + used;
    while (i < n && j[i] == '=')
        i++;
    if (len < 0 || i >= n || j[i] != '"')
        return -1;
    *end = i;
    return len;
}

/* Index just past the string whose content starts at j[s] (its closing
 * quote + 1), or n when it is not closed. */
static size_t skip_string(const uint8_t *j, size_t n, size_t s)
{
    for (size_t i = s; i < n; i++) {
        if (j[i] == '\\')
            i++;
        else if (j[i] == '"')
            return i + 1;
    }
    return n;
}

/* Finds the long base64 strings of the JSON text j[0..n) and decodes them
 * into scratch[0..cap). Outside strings a quote always opens one. */
static void b64_find_spans(b64_spans *out, const uint8_t *j, size_t n, uint8_t *scratch,
                           size_t cap)
{
    out->n = 0;
    out->used = 0;
    size_t i = 0;
    while (i < n) {
        const uint8_t *q = memchr(j + i, '"', n - i);
        if (!q)
            return;
        size_t s = (size_t)(q - j) + 1, end = 0;
        long long len = -1;
        if (out->n < B64_MAX_SPANS && n - s >= B64_LONG)
            len = b64_run(scratch + out->used, cap - out->used, j, n, s, &end);
        if (len >= 0 && end - s >= B64_LONG) {
            out->sp[out->n++] = (b64_span){s, end, out->used, (size_t)len};
            out->used += (size_t)len;
            i = end + 1;
        } else {
            i = skip_string(j, n, s);
        }
    }
}

/* jansson's reader: the JSON text with each span's content replaced by its
 * marker. */
typedef struct {
    const uint8_t *j;
    size_t n, pos;
    const b64_spans *spans;
    int next;
    char mark[40];
    size_t mlen, moff;
} b64_feed;

static size_t b64_feed_read(void *buffer, size_t buflen, void *data)
{
    b64_feed *f = data;
    uint8_t *o = buffer;
    size_t out = 0;
    while (out < buflen) {
        if (f->moff < f->mlen) {
            size_t k = f->mlen - f->moff < buflen - out ? f->mlen - f->moff : buflen - out;
            memcpy(o + out, f->mark + f->moff, k);
            f->moff += k;
            out += k;
            continue;
        }
        size_t stop = f->next < f->spans->n ? f->spans->sp[f->next].start : f->n;
        if (f->pos < stop) {
            size_t k = stop - f->pos < buflen - out ? stop - f->pos : buflen - out;
            memcpy(o + out, f->j + f->pos, k);
            f->pos += k;
            out += k;
            continue;
        }
        if (f->next >= f->spans->n)
            break;
        f->mlen = (size_t)snprintf(f->mark, sizeof f->mark, "%s%d", B64_MARK, f->next);
        f->moff = 0;
        f->pos = f->spans->sp[f->next].end;
        f->next++;
    }
    return out;
}

/* The span a marker string names, or NULL when s is no marker. */
static const b64_span *b64_marked(const b64_spans *spans, const char *s, size_t len)
{
    size_t ml = sizeof B64_MARK - 1;
    if (!spans || len <= ml || len > ml + 3 || memcmp(s, B64_MARK, ml) != 0)
        return NULL;
    int k = 0;
    for (size_t i = ml; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return NULL;
        k = k * 10 + (s[i] - '0');
    }
    return k < spans->n ? &spans->sp[k] : NULL;
}

/* Number of leaves of a (possibly nested) data array, -1 if a leaf is an
 * array deeper than 8 levels or the value is not an array. */
static long long leaf_count(const json_t *d, int depth)
{
    if (!json_is_array(d) || depth > 8)
        return -1;
    long long n = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(d, i, v) {
        if (json_is_array(v)) {
            long long k = leaf_count(v, depth + 1);
            if (k < 0)
                return -1;
            n += k;
        } else {
            n++;
        }
    }
    return n;
}

/* Calls fn on each leaf in row-major order; stops at the first non-zero. */
typedef int (*leaf_fn)(const json_t *leaf, long long index, void *ctx);
static int leaf_walk(const json_t *d, long long *index, leaf_fn fn, void *ctx)
{
    size_t i;
    const json_t *v;
    json_array_foreach(d, i, v) {
        int rc = json_is_array(v) ? leaf_walk(v, index, fn, ctx) : fn(v, (*index)++, ctx);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct {
    const char *name;
    long long shape[8];
    int ndim;
    const char *datatype;
    const json_t *data;
    const json_t *content_type;
    long long binary_size; /* -1: no binary data */
    const uint8_t *bin;    /* binary chunk inside the body */
} input_desc;

static chex_oip_err read_input(input_desc *in, const json_t *j, size_t k, char *msg, size_t msglen)
{
    memset(in, 0, sizeof *in);
    in->binary_size = -1;
    if (!json_is_object(j))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "inputs[%zu] is not an object", k);
    const json_t *name = json_object_get(j, "name");
    if (!json_is_string(name))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "inputs[%zu].name is missing or not a string",
                    k);
    in->name = json_string_value(name);
    const json_t *dt = json_object_get(j, "datatype");
    if (!json_is_string(dt))
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input '%s': datatype is missing or not a string", in->name);
    in->datatype = json_string_value(dt);
    const json_t *shape = json_object_get(j, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > 8)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input '%s': shape is missing or not an array of at most 8 dimensions",
                    in->name);
    size_t i;
    const json_t *v;
    json_array_foreach(shape, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > (1LL << 31))
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "input '%s': shape[%zu] is not a non-negative integer", in->name, i);
        in->shape[i] = json_integer_value(v);
    }
    in->ndim = (int)json_array_size(shape);
    in->data = json_object_get(j, "data");
    const json_t *params = json_object_get(j, "parameters");
    if (params && !json_is_object(params))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "input '%s': parameters is not an object",
                    in->name);
    if (params) {
        in->content_type = json_object_get(params, "content_type");
        const json_t *bs = json_object_get(params, "binary_data_size");
        if (bs) {
            if (!json_is_integer(bs) || json_integer_value(bs) < 0)
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input '%s': parameters.binary_data_size is not a non-negative "
                            "integer",
                            in->name);
            in->binary_size = json_integer_value(bs);
        }
    }
    if (in->binary_size >= 0 && in->data)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input '%s': has both data and parameters.binary_data_size", in->name);
    if (in->binary_size < 0 && !in->data)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input '%s': has neither data nor parameters.binary_data_size", in->name);
    if (in->data && !json_is_array(in->data))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "input '%s': data is not an array",
                    in->name);
    return CHEX_OIP_OK;
}

typedef struct {
    uint8_t *scratch;
    size_t cap, used;
    const b64_spans *spans;
    chex_oip_bytes *images;
    const char *name;
    char *msg;
    size_t msglen;
    chex_oip_err err;
} b64_ctx;

static int b64_leaf(const json_t *leaf, long long index, void *vctx)
{
    b64_ctx *c = vctx;
    if (!json_is_string(leaf)) {
        c->err = fail(CHEX_OIP_EREQUEST, c->msg, c->msglen,
                      "input '%s': data[%lld] is not a base64 string", c->name, index);
        return 1;
    }
    const b64_span *sp = b64_marked(c->spans, json_string_value(leaf), json_string_length(leaf));
    if (sp) {
        c->images[index].data = c->scratch + sp->off;
        c->images[index].len = sp->len;
        return 0;
    }
    long long n = b64_decode(c->scratch + c->used, c->cap - c->used, json_string_value(leaf),
                             json_string_length(leaf));
    if (n == -2) {
        c->err = fail(CHEX_OIP_ETOOBIG, c->msg, c->msglen,
                      "input '%s': decoded images exceed %zu bytes", c->name, c->cap);
        return 1;
    }
    if (n < 0) {
        c->err = fail(CHEX_OIP_EREQUEST, c->msg, c->msglen,
                      "input '%s': data[%lld] is not valid base64", c->name, index);
        return 1;
    }
    c->images[index].data = c->scratch + c->used;
    c->images[index].len = (size_t)n;
    c->used += (size_t)n;
    return 0;
}

static chex_oip_err parse_images(chex_oip_request *out, const input_desc *in,
                                 const chex_oip_buffers *buf, const b64_spans *spans, char *msg,
                                 size_t msglen)
{
    if (strcmp(in->datatype, "BYTES") != 0)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input 'image': datatype %s, expected BYTES", in->datatype);
    if (in->ndim != 1 || in->shape[0] < 1)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input 'image': shape must be [N] with N >= 1 (one encoded image each)");
    long long n = in->shape[0];
    if (n > buf->max_images)
        return fail(CHEX_OIP_ETOOBIG, msg, msglen,
                    "input 'image': %lld images, at most %d per request", n, buf->max_images);
    if (in->data) {
        if (!json_is_string(in->content_type) ||
            strcmp(json_string_value(in->content_type), "base64") != 0)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "input 'image': JSON data needs parameters.content_type \"base64\" "
                        "(or send raw bytes with the binary data extension)");
        long long k = leaf_count(in->data, 0);
        if (k != n)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "input 'image': data holds %lld elements, shape [%lld] needs %lld",
                        k < 0 ? 0 : k, n, n);
        b64_ctx c = {buf->scratch, buf->scratch_len, spans->used, spans, buf->images, "image",
                     msg, msglen, CHEX_OIP_OK};
        long long idx = 0;
        if (leaf_walk(in->data, &idx, b64_leaf, &c))
            return c.err;
    } else {
        const uint8_t *p = in->bin;
        size_t left = (size_t)in->binary_size;
        for (long long i = 0; i < n; i++) {
            if (left < 4)
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input 'image': binary data holds %lld elements, shape [%lld] "
                            "needs %lld",
                            i, n, n);
            uint32_t l = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            p += 4;
            left -= 4;
            if (l > left)
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input 'image': element %lld's length %u overruns "
                            "binary_data_size",
                            i, l);
            buf->images[i].data = p;
            buf->images[i].len = l;
            p += l;
            left -= l;
        }
        if (left)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "input 'image': %zu bytes of binary data after %lld elements", left, n);
    }
    for (long long i = 0; i < n; i++)
        if (buf->images[i].len == 0)
            return fail(CHEX_OIP_EREQUEST, msg, msglen, "input 'image': element %lld is empty",
                        i);
    out->kind = CHEX_OIP_IN_IMAGES;
    out->n = (int)n;
    out->images = buf->images;
    return CHEX_OIP_OK;
}

typedef struct {
    float *dst;
    char *msg;
    size_t msglen;
} f32_ctx;

static int f32_leaf(const json_t *leaf, long long index, void *vctx)
{
    f32_ctx *c = vctx;
    float f = json_is_number(leaf) ? (float)json_number_value(leaf) : NAN;
    if (!isfinite(f)) {
        fail(CHEX_OIP_EREQUEST, c->msg, c->msglen,
             "input 'input': data[%lld] is not a finite FP32 number", index);
        return 1;
    }
    c->dst[index] = f;
    return 0;
}

static chex_oip_err parse_tensor(chex_oip_request *out, const input_desc *in,
                                 const chex_oip_model *m, const chex_oip_buffers *buf, char *msg,
                                 size_t msglen)
{
    if (strcmp(in->datatype, "FP32") != 0)
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "input 'input': datatype %s, expected FP32",
                    in->datatype);
    if (in->ndim != 4 || in->shape[0] < 1 || in->shape[1] != m->channels ||
        in->shape[2] != m->size || in->shape[3] != m->size)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input 'input': shape must be [N, %d, %d, %d] with N >= 1", m->channels,
                    m->size, m->size);
    long long n = in->shape[0];
    if (n > buf->max_images)
        return fail(CHEX_OIP_ETOOBIG, msg, msglen,
                    "input 'input': %lld tensors, at most %d per request", n, buf->max_images);
    size_t per = (size_t)m->channels * (size_t)m->size * (size_t)m->size;
    size_t count = (size_t)n * per;
    /* The data is counted before the scratch is checked (its bound relies
     * on values the body really holds). */
    if (in->data) {
        long long k = leaf_count(in->data, 0);
        if (k < 0 || (size_t)k != count)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "input 'input': data holds %lld values, shape [%lld, %d, %d, %d] "
                        "needs %zu",
                        k < 0 ? 0 : k, n, m->channels, m->size, m->size, count);
    } else if ((size_t)in->binary_size != count * 4) {
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "input 'input': binary_data_size %lld, shape [%lld, %d, %d, %d] needs "
                    "%zu bytes",
                    in->binary_size, n, m->channels, m->size, m->size, count * 4);
    }
    uintptr_t base = (uintptr_t)buf->scratch;
    size_t pad = (sizeof(float) - base % sizeof(float)) % sizeof(float);
    if (buf->scratch_len < pad || (buf->scratch_len - pad) / sizeof(float) < count)
        return fail(CHEX_OIP_ETOOBIG, msg, msglen,
                    "input 'input': %zu values exceed the request buffer", count);
    float *dst = (float *)(void *)(buf->scratch + pad);
    if (in->data) {
        f32_ctx c = {dst, msg, msglen};
        long long idx = 0;
        if (leaf_walk(in->data, &idx, f32_leaf, &c))
            return CHEX_OIP_EREQUEST;
    } else {
        for (size_t i = 0; i < count; i++) {
            const uint8_t *p = in->bin + 4 * i;
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            float f;
            memcpy(&f, &u, sizeof f);
            if (!isfinite(f))
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input 'input': value %zu is not a finite FP32 number", i);
            dst[i] = f;
        }
    }
    out->kind = CHEX_OIP_IN_TENSOR;
    out->n = (int)n;
    out->tensor = dst;
    return CHEX_OIP_OK;
}

static const char *const out_names[CHEX_OIP_OUT_COUNT] = {"probabilities", "labels"};

static chex_oip_err parse_outputs(chex_oip_request *out, const json_t *root, char *msg,
                                  size_t msglen)
{
    int def_binary = 0;
    const json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "parameters is not an object");
    const json_t *bdo = params ? json_object_get(params, "binary_data_output") : NULL;
    if (bdo) {
        if (!json_is_boolean(bdo))
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "parameters.binary_data_output is not a boolean");
        def_binary = json_is_true(bdo);
    }
    const json_t *outs = json_object_get(root, "outputs");
    if (outs && !json_is_array(outs))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "outputs is not an array");
    out->out_count = 0;
    if (!outs || json_array_size(outs) == 0) {
        for (int k = 0; k < CHEX_OIP_OUT_COUNT; k++) {
            out->out_order[out->out_count++] = k;
            out->out_binary[k] = def_binary;
        }
        return CHEX_OIP_OK;
    }
    int seen[CHEX_OIP_OUT_COUNT] = {0};
    size_t i;
    const json_t *o;
    json_array_foreach(outs, i, o) {
        const json_t *name = json_is_object(o) ? json_object_get(o, "name") : NULL;
        if (!json_is_string(name))
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "outputs[%zu].name is missing or not a string", i);
        int k = -1;
        for (int t = 0; t < CHEX_OIP_OUT_COUNT; t++)
            if (strcmp(json_string_value(name), out_names[t]) == 0)
                k = t;
        if (k < 0)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "outputs[%zu]: unknown output '%.64s' (the model has probabilities, "
                        "labels)",
                        i, json_string_value(name));
        if (seen[k])
            return fail(CHEX_OIP_EREQUEST, msg, msglen, "outputs[%zu]: output '%s' repeated", i,
                        out_names[k]);
        seen[k] = 1;
        int bin = def_binary;
        const json_t *op = json_object_get(o, "parameters");
        if (op && !json_is_object(op))
            return fail(CHEX_OIP_EREQUEST, msg, msglen, "outputs[%zu].parameters is not an object",
                        i);
        const json_t *bd = op ? json_object_get(op, "binary_data") : NULL;
        if (bd) {
            if (!json_is_boolean(bd))
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "outputs[%zu].parameters.binary_data is not a boolean", i);
            bin = json_is_true(bd);
        }
        out->out_order[out->out_count++] = k;
        out->out_binary[k] = bin;
    }
    return CHEX_OIP_OK;
}

static chex_oip_err parse_root(chex_oip_request *out, const json_t *root, const uint8_t *body,
                               size_t body_len, size_t hlen, int has_tail,
                               const chex_oip_model *m, const chex_oip_buffers *buf,
                               const b64_spans *spans, char *msg, size_t msglen)
{
    if (!json_is_object(root))
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "the request is not a JSON object");
    const json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id))
            return fail(CHEX_OIP_EREQUEST, msg, msglen, "id is not a string");
        if (json_string_length(id) >= CHEX_OIP_ID_MAX ||
            strlen(json_string_value(id)) != json_string_length(id) ||
            b64_marked(spans, json_string_value(id), json_string_length(id)))
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "id is longer than %d bytes or holds a NUL", CHEX_OIP_ID_MAX - 1);
        memcpy(out->id, json_string_value(id), json_string_length(id) + 1);
        out->has_id = 1;
    }
    chex_oip_err e = parse_outputs(out, root, msg, msglen);
    if (e)
        return e;
    const json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0)
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "inputs is missing or not a non-empty array");
    size_t off = hlen;
    input_desc chosen;
    memset(&chosen, 0, sizeof chosen);
    int have = 0;
    size_t i;
    const json_t *j;
    json_array_foreach(inputs, i, j) {
        input_desc in;
        if ((e = read_input(&in, j, i, msg, msglen)))
            return e;
        if (strcmp(in.name, "image") != 0 && strcmp(in.name, "input") != 0)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "inputs[%zu]: unknown input '%.64s' (the model takes image or input)", i,
                        in.name);
        if (have)
            return fail(CHEX_OIP_EREQUEST, msg, msglen,
                        "inputs[%zu]: '%s' given after '%s' (send one input: image or input)", i,
                        in.name, chosen.name);
        if (in.binary_size >= 0) {
            if (!has_tail)
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input '%s': parameters.binary_data_size needs the "
                            "Inference-Header-Content-Length header",
                            in.name);
            if ((unsigned long long)in.binary_size > body_len - off)
                return fail(CHEX_OIP_EREQUEST, msg, msglen,
                            "input '%s': binary_data_size %lld overruns the body (%zu bytes "
                            "left)",
                            in.name, in.binary_size, body_len - off);
            in.bin = body + off;
            off += (size_t)in.binary_size;
        }
        chosen = in;
        have = 1;
    }
    if (off != body_len)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "%zu bytes after the JSON header are not claimed by any binary_data_size",
                    body_len - off);
    if (strcmp(chosen.name, "image") == 0)
        return parse_images(out, &chosen, buf, spans, msg, msglen);
    return parse_tensor(out, &chosen, m, buf, msg, msglen);
}

chex_oip_err chex_oip_parse_infer(chex_oip_request *out, const uint8_t *body, size_t body_len,
                                  long long header_len, const chex_oip_model *m,
                                  const chex_oip_buffers *buf, char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    if (msg && msglen)
        msg[0] = '\0';
    if (header_len >= 0 && (unsigned long long)header_len > body_len)
        return fail(CHEX_OIP_EREQUEST, msg, msglen,
                    "Inference-Header-Content-Length %lld exceeds the body's %zu bytes",
                    header_len, body_len);
    size_t hlen = header_len >= 0 ? (size_t)header_len : body_len;
    if (hlen == 0)
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "the request has no JSON header");
    b64_spans spans;
    b64_find_spans(&spans, body, hlen, buf->scratch, buf->scratch_len);
    b64_feed feed = {body, hlen, 0, &spans, 0, "", 0, 0};
    json_error_t jerr;
    json_t *root = json_load_callback(b64_feed_read, &feed, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(CHEX_OIP_EREQUEST, msg, msglen, "the JSON header is not valid JSON: %s",
                    jerr.text);
    chex_oip_err e = parse_root(out, root, body, body_len, hlen, header_len >= 0, m, buf, &spans,
                                msg, msglen);
    json_decref(root);
    if (e) {
        out->images = NULL;
        out->tensor = NULL;
        out->n = 0;
    }
    return e;
}

/* ---------- answers ---------- */

static int add_shape(json_t *o, int ndim, const long long *dims)
{
    json_t *s = json_array();
    if (!s || json_object_set_new(o, "shape", s))
        return -1;
    for (int i = 0; i < ndim; i++)
        if (json_array_append_new(s, json_integer(dims[i])))
            return -1;
    return 0;
}

static json_t *tensor_meta(const char *name, const char *datatype, int ndim, const long long *dims)
{
    json_t *o = json_pack("{s:s, s:s}", "name", name, "datatype", datatype);
    if (o && add_shape(o, ndim, dims)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *dump(json_t *j)
{
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(j);
    return s;
}

chex_oip_err chex_oip_build_infer(chex_oip_answer *out, const chex_oip_model *m,
                                  const chex_oip_request *r, const float *probs)
{
    memset(out, 0, sizeof *out);
    out->header_len = -1;
    size_t n = (size_t)r->n, L = (size_t)m->num_labels;
    size_t label_bytes = 0;
    for (size_t i = 0; i < L; i++)
        label_bytes += 4 + strlen(m->labels[i]);
    size_t tail = 0;
    json_t *root = json_pack("{s:s, s:s}", "model_name", m->name, "model_version", m->version);
    json_t *outs = json_array();
    if (!root || !outs || json_object_set_new(root, "outputs", outs))
        goto nomem;
    if (r->has_id && json_object_set_new(root, "id", json_string(r->id)))
        goto nomem;
    if (m->sha256 && json_object_set_new(root, "parameters", json_pack("{s:s}", "sha256", m->sha256)))
        goto nomem;
    for (int q = 0; q < r->out_count; q++) {
        int k = r->out_order[q];
        long long pd[2] = {(long long)n, (long long)L}, ld[1] = {(long long)L};
        json_t *o = k == CHEX_OIP_OUT_PROBABILITIES ? tensor_meta(out_names[k], "FP32", 2, pd)
                                                    : tensor_meta(out_names[k], "BYTES", 1, ld);
        if (!o || json_array_append_new(outs, o))
            goto nomem;
        if (r->out_binary[k]) {
            size_t sz = k == CHEX_OIP_OUT_PROBABILITIES ? n * L * 4 : label_bytes;
            if (json_object_set_new(o, "parameters",
                                    json_pack("{s:I}", "binary_data_size", (json_int_t)sz)))
                goto nomem;
            tail += sz;
            continue;
        }
        json_t *d = json_array();
        if (!d || json_object_set_new(o, "data", d))
            goto nomem;
        if (k == CHEX_OIP_OUT_PROBABILITIES) {
            for (size_t i = 0; i < n * L; i++)
                if (json_array_append_new(d, json_real((double)probs[i])))
                    goto nomem;
        } else {
            for (size_t i = 0; i < L; i++)
                if (json_array_append_new(d, json_string(m->labels[i])))
                    goto nomem;
        }
    }
    char *head = dump(root);
    root = NULL;
    if (!head)
        return CHEX_OIP_ENOMEM;
    size_t hl = strlen(head);
    if (tail == 0) {
        out->body = head;
        out->len = hl;
        return CHEX_OIP_OK;
    }
    char *b = realloc(head, hl + tail);
    if (!b) {
        free(head);
        return CHEX_OIP_ENOMEM;
    }
    uint8_t *p = (uint8_t *)b + hl;
    for (int q = 0; q < r->out_count; q++) {
        int k = r->out_order[q];
        if (!r->out_binary[k])
            continue;
        if (k == CHEX_OIP_OUT_PROBABILITIES) {
            for (size_t i = 0; i < n * L; i++) {
                uint32_t u;
                memcpy(&u, &probs[i], 4);
                for (int s = 0; s < 4; s++)
                    *p++ = (uint8_t)(u >> (8 * s));
            }
        } else {
            for (size_t i = 0; i < L; i++) {
                uint32_t l = (uint32_t)strlen(m->labels[i]);
                for (int s = 0; s < 4; s++)
                    *p++ = (uint8_t)(l >> (8 * s));
                memcpy(p, m->labels[i], l);
                p += l;
            }
        }
    }
    out->body = b;
    out->len = hl + tail;
    out->header_len = (long long)hl;
    return CHEX_OIP_OK;
nomem:
    json_decref(root);
    return CHEX_OIP_ENOMEM;
}

char *chex_oip_server_metadata(const char *name, const char *version)
{
    return dump(json_pack("{s:s, s:s, s:[s]}", "name", name, "version", version, "extensions",
                          "binary_tensor_data"));
}

char *chex_oip_model_metadata(const chex_oip_model *m)
{
    long long img[1] = {-1}, in[4] = {-1, m->channels, m->size, m->size};
    long long pr[2] = {-1, m->num_labels}, lb[1] = {m->num_labels};
    json_t *ins = json_array(), *outs = json_array();
    if (ins) {
        json_array_append_new(ins, tensor_meta("image", "BYTES", 1, img));
        json_array_append_new(ins, tensor_meta("input", "FP32", 4, in));
    }
    if (outs) {
        json_array_append_new(outs, tensor_meta("probabilities", "FP32", 2, pr));
        json_array_append_new(outs, tensor_meta("labels", "BYTES", 1, lb));
    }
    if (!ins || !outs || json_array_size(ins) != 2 || json_array_size(outs) != 2) {
        json_decref(ins);
        json_decref(outs);
        return NULL;
    }
    return dump(json_pack("{s:s, s:[s], s:s, s:o, s:o}", "name", m->name, "versions",
                          m->version, "platform", m->platform, "inputs", ins, "outputs", outs));
}

char *chex_oip_error_json(const char *message)
{
    return dump(json_pack("{s:s}", "error", message ? message : ""));
}
