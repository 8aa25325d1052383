/* model/safetensors.c - safetensors container: checked parser, widening, atomic writer.
 *
 * The parser trusts nothing in the file: every length is compared with len
 * before use, the JSON header is parsed by jansson from exactly N bytes, and
 * every tensor's shape, dtype and offsets are checked against the data section
 * before anyone can read through them.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model_msg.h"

/* Same limit as the reference implementation (MAX_HEADER_SIZE). */
#define ST_MAX_HEADER 100000000ull
/* Largest single dimension accepted: keeps every dim usable as an int. */
#define ST_MAX_DIM 2147483647ll

/* Printable, bounded copy of a name from the file for a one-line message:
 * control bytes become '?', long names are cut and end in "...". */
#define SHOW_LEN 72
static const char *show(char dst[SHOW_LEN], const char *name)
{
    size_t i = 0, n = strlen(name);
    size_t keep = n < SHOW_LEN - 1 ? n : SHOW_LEN - 4;
    for (; i < keep; i++) {
        unsigned char c = (unsigned char)name[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (keep < n) {
        memcpy(dst + i, "...", 3);
        i += 3;
    }
    dst[i] = '\0';
    return dst;
}

static size_t dtype_size(chex_st_dtype d)
{
    return d == CHEX_ST_F32 ? 4 : d == CHEX_ST_I8 ? 1 : 2;
}

static uint64_t rd_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void chex_st_free(chex_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    free(f->tensors);
    memset(f, 0, sizeof(*f));
}

static int cmp_by_begin(const void *a, const void *b)
{
    const chex_st_tensor *x = *(const chex_st_tensor *const *)a;
    const chex_st_tensor *y = *(const chex_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static chex_model_err parse_metadata(json_t *obj, chex_st_file *out, char *msg, size_t msglen)
{
    char s[SHOW_LEN];
    if (!json_is_object(obj)) {
        chex_model_msg(msg, msglen, "__metadata__ is not an object of strings");
        return CHEX_MODEL_ERR_METADATA;
    }
    size_t n = json_object_size(obj);
    if (n == 0)
        return CHEX_MODEL_OK;
    out->meta = calloc(n, sizeof(*out->meta));
    if (!out->meta) {
        chex_model_msg(msg, msglen, "__metadata__: out of memory");
        return CHEX_MODEL_ERR_NOMEM;
    }
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (!json_is_string(v)) {
            chex_model_msg(msg, msglen, "__metadata__ key '%s': value is not a string", show(s, key));
            return CHEX_MODEL_ERR_METADATA;
        }
        chex_st_meta *m = &out->meta[out->nmeta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(v));
        out->nmeta++;
        if (!m->key || !m->value) {
            chex_model_msg(msg, msglen, "__metadata__ key '%s': out of memory", show(s, key));
            return CHEX_MODEL_ERR_NOMEM;
        }
    }
    return CHEX_MODEL_OK;
}

static chex_model_err parse_tensor(const char *name, json_t *e, uint64_t data_len,
                                   chex_st_tensor *t, char *msg, size_t msglen)
{
    char s[SHOW_LEN];
    show(s, name);
    if (strlen(name) == 0) {
        chex_model_msg(msg, msglen, "tensor with an empty name");
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (strlen(name) > CHEX_ST_NAME_LEN - 1) {
        chex_model_msg(msg, msglen, "tensor '%s': name is %zu bytes, longer than %d", s, strlen(name),
                CHEX_ST_NAME_LEN - 1);
        return CHEX_MODEL_ERR_FORMAT;
    }
    memcpy(t->name, name, strlen(name) + 1);
    if (!json_is_object(e)) {
        chex_model_msg(msg, msglen, "tensor '%s': entry is not an object", s);
        return CHEX_MODEL_ERR_FORMAT;
    }

    json_t *jd = json_object_get(e, "dtype");
    if (!jd) {
        chex_model_msg(msg, msglen, "tensor '%s': missing \"dtype\"", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (!json_is_string(jd)) {
        chex_model_msg(msg, msglen, "tensor '%s': \"dtype\" is not a string", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    const char *dt = json_string_value(jd);
    if (strcmp(dt, "F32") == 0)
        t->dtype = CHEX_ST_F32;
    else if (strcmp(dt, "F16") == 0)
        t->dtype = CHEX_ST_F16;
    else if (strcmp(dt, "BF16") == 0)
        t->dtype = CHEX_ST_BF16;
    else if (strcmp(dt, "I8") == 0)
        t->dtype = CHEX_ST_I8;
    else {
        char d[SHOW_LEN];
        chex_model_msg(msg, msglen, "tensor '%s': dtype %s not supported (F32, F16, BF16, I8)", s,
                show(d, dt));
        return CHEX_MODEL_ERR_DTYPE;
    }

    json_t *js = json_object_get(e, "shape");
    if (!js) {
        chex_model_msg(msg, msglen, "tensor '%s': missing \"shape\"", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (!json_is_array(js)) {
        chex_model_msg(msg, msglen, "tensor '%s': \"shape\" is not an array", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    size_t nd = json_array_size(js);
    if (nd > CHEX_ST_MAX_DIMS) {
        chex_model_msg(msg, msglen, "tensor '%s': shape has %zu dimensions, more than %d", s, nd,
                CHEX_ST_MAX_DIMS);
        return CHEX_MODEL_ERR_FORMAT;
    }
    t->ndim = (int)nd;
    uint64_t bytes = dtype_size(t->dtype);
    for (size_t i = 0; i < nd; i++) {
        json_t *jv = json_array_get(js, i);
        if (!json_is_integer(jv)) {
            chex_model_msg(msg, msglen, "tensor '%s': shape[%zu] is not an integer", s, i);
            return CHEX_MODEL_ERR_FORMAT;
        }
        json_int_t v = json_integer_value(jv);
        if (v < 0) {
            chex_model_msg(msg, msglen, "tensor '%s': shape[%zu] = %" JSON_INTEGER_FORMAT " is negative",
                    s, i, v);
            return CHEX_MODEL_ERR_FORMAT;
        }
        if (v > ST_MAX_DIM) {
            chex_model_msg(msg, msglen, "tensor '%s': shape[%zu] = %" JSON_INTEGER_FORMAT " is too large",
                    s, i, v);
            return CHEX_MODEL_ERR_FORMAT;
        }
        t->shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(bytes, (uint64_t)v, &bytes) || bytes > (uint64_t)INT64_MAX) {
            chex_model_msg(msg, msglen, "tensor '%s': element count times dtype size overflows", s);
            return CHEX_MODEL_ERR_FORMAT;
        }
    }

    json_t *jo = json_object_get(e, "data_offsets");
    if (!jo) {
        chex_model_msg(msg, msglen, "tensor '%s': missing \"data_offsets\"", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1))) {
        chex_model_msg(msg, msglen, "tensor '%s': \"data_offsets\" is not [begin, end] integers", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < 0) {
        chex_model_msg(msg, msglen, "tensor '%s': negative data_offsets", s);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (b > en) {
        chex_model_msg(msg, msglen,
                "tensor '%s': data_offsets begin %" JSON_INTEGER_FORMAT
                " is after end %" JSON_INTEGER_FORMAT,
                s, b, en);
        return CHEX_MODEL_ERR_FORMAT;
    }
    t->begin = (uint64_t)b;
    t->end = (uint64_t)en;
    if (t->end > data_len) {
        chex_model_msg(msg, msglen,
                "tensor '%s': data_offsets end %" PRIu64 " is beyond the data section (%" PRIu64
                " bytes)",
                s, t->end, data_len);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (t->end - t->begin != bytes) {
        chex_model_msg(msg, msglen,
                "tensor '%s': data_offsets span %" PRIu64 " bytes but shape and dtype need %" PRIu64,
                s, t->end - t->begin, bytes);
        return CHEX_MODEL_ERR_FORMAT;
    }
    return CHEX_MODEL_OK;
}

static chex_model_err check_overlap(chex_st_file *f, char *msg, size_t msglen)
{
    if (f->ntensors < 2)
        return CHEX_MODEL_OK;
    const chex_st_tensor **idx = malloc((size_t)f->ntensors * sizeof(*idx));
    if (!idx) {
        chex_model_msg(msg, msglen, "safetensors: out of memory");
        return CHEX_MODEL_ERR_NOMEM;
    }
    int n = 0;
    for (int i = 0; i < f->ntensors; i++)
        if (f->tensors[i].end > f->tensors[i].begin) /* empty tensors occupy nothing */
            idx[n++] = &f->tensors[i];
    qsort(idx, (size_t)n, sizeof(*idx), cmp_by_begin);
    chex_model_err rc = CHEX_MODEL_OK;
    const chex_st_tensor *far = NULL; /* the tensor reaching furthest so far */
    for (int i = 0; i < n; i++) {
        if (far && idx[i]->begin < far->end) {
            char a[SHOW_LEN], b[SHOW_LEN];
            chex_model_msg(msg, msglen,
                    "tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64
                    ") overlap",
                    show(a, far->name), far->begin, far->end, show(b, idx[i]->name),
                    idx[i]->begin, idx[i]->end);
            rc = CHEX_MODEL_ERR_FORMAT;
            break;
        }
        if (!far || idx[i]->end > far->end)
            far = idx[i];
    }
    free(idx);
    return rc;
}

chex_model_err chex_st_parse(const uint8_t *buf, size_t len, chex_st_file *out, char *msg,
                             size_t msglen)
{
    memset(out, 0, sizeof(*out));
    chex_model_msg(msg, msglen, "ok");
    if (!buf || len < 8) {
        chex_model_msg(msg, msglen, "file is %zu bytes, shorter than the 8-byte header length", len);
        return CHEX_MODEL_ERR_FORMAT;
    }
    uint64_t n = rd_le64(buf);
    if (n == 0) {
        chex_model_msg(msg, msglen, "header length is 0");
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (n > ST_MAX_HEADER) {
        chex_model_msg(msg, msglen, "header length %" PRIu64 " is absurd (more than %llu bytes)", n,
                ST_MAX_HEADER);
        return CHEX_MODEL_ERR_FORMAT;
    }
    if (n > (uint64_t)(len - 8)) {
        chex_model_msg(msg, msglen,
                "header length %" PRIu64 " is beyond the end of the file (%zu bytes after the "
                "length)",
                n, len - 8);
        return CHEX_MODEL_ERR_FORMAT;
    }
    uint64_t data_len = (uint64_t)(len - 8) - n;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        chex_model_msg(msg, msglen, "header is not valid JSON: %s (line %d, column %d)", jerr.text,
                jerr.line, jerr.column);
        return CHEX_MODEL_ERR_FORMAT;
    }
    chex_model_err rc = CHEX_MODEL_OK;
    if (!json_is_object(root)) {
        chex_model_msg(msg, msglen, "header is not a JSON object");
        rc = CHEX_MODEL_ERR_FORMAT;
        goto done;
    }

    size_t nt = json_object_size(root);
    json_t *jm = json_object_get(root, "__metadata__");
    if (jm)
        nt--;
    if (nt > 0) {
        out->tensors = calloc(nt, sizeof(*out->tensors));
        if (!out->tensors) {
            chex_model_msg(msg, msglen, "safetensors: out of memory for %zu tensors", nt);
            rc = CHEX_MODEL_ERR_NOMEM;
            goto done;
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        rc = parse_tensor(key, v, data_len, &out->tensors[out->ntensors], msg, msglen);
        if (rc != CHEX_MODEL_OK)
            goto done;
        out->ntensors++;
    }
    if (jm) {
        rc = parse_metadata(jm, out, msg, msglen);
        if (rc != CHEX_MODEL_OK)
            goto done;
    }
    rc = check_overlap(out, msg, msglen);
    if (rc != CHEX_MODEL_OK)
        goto done;
    out->data = buf + 8 + n;
    out->data_len = data_len;
    chex_model_msg(msg, msglen, "ok");

done:
    json_decref(root);
    if (rc != CHEX_MODEL_OK)
        chex_st_free(out);
    return rc;
}

const chex_st_tensor *chex_st_find(const chex_st_file *f, const char *name)
{
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *chex_st_meta_get(const chex_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

int64_t chex_st_numel(const chex_st_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* IEEE binary16 -> binary32, exact for every input (subnormals, inf, NaN payloads). */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* Subnormal: shift the mantissa up until its leading 1 is the
             * implicit bit, lowering the exponent once per shift. */
            uint32_t e = 113; /* 127 - 15 + 1 */
            while (!(mant & 0x400u)) {
                mant <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    return bits_to_f32(bits);
}

void chex_st_to_f32(const chex_st_file *f, const chex_st_tensor *t, float *dst)
{
    const uint8_t *p = f->data + t->begin;
    size_t n = (size_t)chex_st_numel(t);
    switch (t->dtype) {
    case CHEX_ST_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n)
            memcpy(dst, p, n * 4); /* file order is the host order */
#else
        for (size_t i = 0; i < n; i++) {
            const uint8_t *q = p + 4 * i;
            dst[i] = bits_to_f32((uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                                 (uint32_t)q[3] << 24);
        }
#endif
        break;
    case CHEX_ST_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case CHEX_ST_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = bits_to_f32((uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16);
        break;
    case CHEX_ST_I8:
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)(int8_t)p[i];
        break;
    }
}

/* ---- writer ---- */

static chex_model_err write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return CHEX_MODEL_ERR_IO;
        }
        if (w == 0) {
            errno = EIO;
            return CHEX_MODEL_ERR_IO;
        }
        b += w;
        n -= (size_t)w;
    }
    return CHEX_MODEL_OK;
}

/* Builds the header JSON (metadata first, then tensors in the given order with
 * consecutive offsets). Returns NULL with msg/rc set on a bad argument. */
static char *build_header(const chex_st_wtensor *t, int nt, const char *const *meta_kv,
                          chex_model_err *rc, char *msg, size_t msglen)
{
    char s[SHOW_LEN];
    json_t *root = json_object();
    if (!root)
        goto nomem;
    if (meta_kv && meta_kv[0]) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0)
            goto nomem;
        for (int i = 0; meta_kv[i]; i += 2) {
            if (!meta_kv[i + 1]) {
                chex_model_msg(msg, msglen, "__metadata__ key '%s': no value", show(s, meta_kv[i]));
                *rc = CHEX_MODEL_ERR_ARG;
                goto fail;
            }
            if (json_object_get(m, meta_kv[i])) {
                chex_model_msg(msg, msglen, "__metadata__ key '%s': given twice", show(s, meta_kv[i]));
                *rc = CHEX_MODEL_ERR_ARG;
                goto fail;
            }
            json_t *v = json_string(meta_kv[i + 1]);
            if (!v || json_object_set_new(m, meta_kv[i], v) != 0) {
                chex_model_msg(msg, msglen, "__metadata__ key '%s': not valid UTF-8",
                        show(s, meta_kv[i]));
                *rc = CHEX_MODEL_ERR_ARG;
                goto fail;
            }
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        const chex_st_wtensor *w = &t[i];
        if (!w->name || !w->name[0] || strlen(w->name) > CHEX_ST_NAME_LEN - 1 ||
            strcmp(w->name, "__metadata__") == 0) {
            chex_model_msg(msg, msglen, "tensor %d: name '%s' is empty, reserved or too long", i,
                    w->name ? show(s, w->name) : "(null)");
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        show(s, w->name);
        if (json_object_get(root, w->name)) {
            chex_model_msg(msg, msglen, "tensor '%s': given twice", s);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        if (w->ndim < 0 || w->ndim > CHEX_ST_MAX_DIMS) {
            chex_model_msg(msg, msglen, "tensor '%s': ndim %d out of range", s, w->ndim);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        if (w->dtype != CHEX_ST_F32 && w->dtype != CHEX_ST_I8) {
            chex_model_msg(msg, msglen, "tensor '%s': the writer writes F32 or I8 only", s);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        const int i8 = w->dtype == CHEX_ST_I8;
        uint64_t bytes = i8 ? 1 : 4;
        json_t *shape = json_array();
        json_t *e = json_object();
        if (!shape || !e) {
            json_decref(shape);
            json_decref(e);
            goto nomem;
        }
        json_object_set_new(e, "dtype", json_string(i8 ? "I8" : "F32"));
        json_object_set_new(e, "shape", shape);
        for (int d = 0; d < w->ndim; d++) {
            if (w->shape[d] < 0 || w->shape[d] > ST_MAX_DIM ||
                __builtin_mul_overflow(bytes, (uint64_t)w->shape[d], &bytes) ||
                bytes > (uint64_t)INT64_MAX) {
                json_decref(e);
                chex_model_msg(msg, msglen, "tensor '%s': shape[%d] = %" PRId64 " is invalid", s, d,
                        w->shape[d]);
                *rc = CHEX_MODEL_ERR_ARG;
                goto fail;
            }
            json_array_append_new(shape, json_integer(w->shape[d]));
        }
        if (bytes > 0 && (i8 ? !w->i8 : !w->data)) {
            json_decref(e);
            chex_model_msg(msg, msglen, "tensor '%s': no data", s);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        if (__builtin_add_overflow(off, bytes, &off) || off > (uint64_t)INT64_MAX) {
            json_decref(e);
            chex_model_msg(msg, msglen, "tensor '%s': total data size overflows", s);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
        json_t *offs = json_pack("[II]", (json_int_t)(off - bytes), (json_int_t)off);
        if (!offs || json_object_set_new(e, "data_offsets", offs) != 0) {
            json_decref(e);
            goto nomem;
        }
        if (json_object_set_new(root, w->name, e) != 0) { /* e is stolen even on failure */
            chex_model_msg(msg, msglen, "tensor '%s': cannot build header (UTF-8 name?)", s);
            *rc = CHEX_MODEL_ERR_ARG;
            goto fail;
        }
    }
    char *txt = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!txt) {
        chex_model_msg(msg, msglen, "safetensors: out of memory for the header");
        *rc = CHEX_MODEL_ERR_NOMEM;
    }
    return txt;
nomem:
    chex_model_msg(msg, msglen, "safetensors: out of memory for the header");
    *rc = CHEX_MODEL_ERR_NOMEM;
fail:
    json_decref(root);
    return NULL;
}

static chex_model_err write_body(int fd, const char *hdr, const chex_st_wtensor *t, int nt)
{
    size_t hl = strlen(hdr);
    size_t pad = (8 - hl % 8) % 8; /* the reference pads with spaces to 8 bytes */
    uint64_t n = (uint64_t)(hl + pad);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(n >> (8 * i));
    if (write_all(fd, lenb, 8) || write_all(fd, hdr, hl) || write_all(fd, "        ", pad))
        return CHEX_MODEL_ERR_IO;
    enum { CHUNK = 16384 };
    uint8_t *buf = malloc(CHUNK * 4);
    if (!buf)
        return CHEX_MODEL_ERR_NOMEM;
    chex_model_err rc = CHEX_MODEL_OK;
    for (int i = 0; i < nt && rc == CHEX_MODEL_OK; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= (size_t)t[i].shape[d];
        if (t[i].dtype == CHEX_ST_I8) {
            rc = write_all(fd, t[i].i8, numel);
            continue;
        }
        for (size_t at = 0; at < numel && rc == CHEX_MODEL_OK; at += CHUNK) {
            size_t k = numel - at < CHUNK ? numel - at : CHUNK;
            for (size_t j = 0; j < k; j++) {
                uint32_t u;
                memcpy(&u, &t[i].data[at + j], 4);
                for (int b = 0; b < 4; b++)
                    buf[4 * j + (size_t)b] = (uint8_t)(u >> (8 * b));
            }
            rc = write_all(fd, buf, 4 * k);
        }
    }
    free(buf);
    return rc;
}

chex_model_err chex_st_write(const char *path, const chex_st_wtensor *t, int nt,
                             const char *const *meta_kv, char *msg, size_t msglen)
{
    chex_model_msg(msg, msglen, "ok");
    if (!path || nt < 0 || (nt > 0 && !t)) {
        chex_model_msg(msg, msglen, "chex_st_write: bad arguments");
        return CHEX_MODEL_ERR_ARG;
    }
    chex_model_err rc = CHEX_MODEL_OK;
    char *hdr = build_header(t, nt, meta_kv, &rc, msg, msglen);
    if (!hdr)
        return rc;

    size_t pl = strlen(path);
    char *tmp = malloc(pl + 5);
    if (!tmp) {
        free(hdr);
        chex_model_msg(msg, msglen, "%s: out of memory", path);
        return CHEX_MODEL_ERR_NOMEM;
    }
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        chex_model_msg(msg, msglen, "%s: cannot create: %s", tmp, strerror(errno));
        free(hdr);
        free(tmp);
        return CHEX_MODEL_ERR_IO;
    }
    rc = write_body(fd, hdr, t, nt);
    int werr = errno;
    free(hdr);
    if (rc != CHEX_MODEL_OK) {
        chex_model_msg(msg, msglen, "%s: cannot write: %s", tmp,
                rc == CHEX_MODEL_ERR_NOMEM ? "out of memory" : strerror(werr));
    } else if (fsync(fd) != 0) {
        chex_model_msg(msg, msglen, "%s: fsync: %s", tmp, strerror(errno));
        rc = CHEX_MODEL_ERR_IO;
    }
    if (close(fd) != 0 && rc == CHEX_MODEL_OK) {
        chex_model_msg(msg, msglen, "%s: close: %s", tmp, strerror(errno));
        rc = CHEX_MODEL_ERR_IO;
    }
    if (rc == CHEX_MODEL_OK && rename(tmp, path) != 0) {
        chex_model_msg(msg, msglen, "%s: cannot rename into place: %s", path, strerror(errno));
        rc = CHEX_MODEL_ERR_IO;
    }
    if (rc != CHEX_MODEL_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}
