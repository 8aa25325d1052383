/* model/densenet.c - DenseNet-121 (CheXNet): graph from hyper-parameters,
 * checked loader, workspace, fast and reference forward passes.
 *
 * Memory: every weight tensor is widened to F32 into ONE allocation (the
 * arena), in PyTorch layout; per-channel BN scale/shift pairs derived at load
 * live there too. The file itself is mapped only while loading. A workspace
 * holds one buffer per dense block, (n, C_final, H, W): every layer of the block
 * writes its 32 new channels straight after the ones before, so the
 * concatenation the network is defined with never happens as a copy.
 */
#include "model/model.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/densenet_int.h"
#include "model/kernels.h"
#include "model/model_msg.h"
#include "model/qkernels.h"
#include "model/safetensors.h"
#include "model/sha256.h"

static const int BLOCK_LAYERS[NBLOCKS] = {6, 12, 24, 16};

/* ---- the expected tensor table ---- */

typedef struct {
    char name[CHEX_ST_NAME_LEN];
    int ndim;
    int64_t shape[4];
    float **slot;    /* where the arena pointer goes */
    size_t offset;   /* in floats, inside the arena */
} spec_t;

#define MAX_SPECS 640 /* 606 tensors in densenet121 */

typedef struct {
    spec_t s[MAX_SPECS];
    int n;
    size_t floats;
} spec_list;

static void spec_add(spec_list *l, float **slot, int ndim, const int64_t *shape, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static void spec_add(spec_list *l, float **slot, int ndim, const int64_t *shape, const char *fmt,
                     ...)
{
    spec_t *s = &l->s[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof(s->name), fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        s->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    s->slot = slot;
    s->offset = l->floats;
    l->floats += (numel + 15) & ~(size_t)15; /* 64-byte aligned tensors */
}

static void spec_bn(spec_list *l, bn_t *bn, int c, const char *prefix)
{
    const int64_t sh[1] = {c};
    bn->c = c;
    spec_add(l, &bn->gamma, 1, sh, "%s.weight", prefix);
    spec_add(l, &bn->beta, 1, sh, "%s.bias", prefix);
    spec_add(l, &bn->mean, 1, sh, "%s.running_mean", prefix);
    spec_add(l, &bn->var, 1, sh, "%s.running_var", prefix);
}

/* Fills geometry and the list of tensors the graph reads, in a fixed order. */
static void build_graph(chex_model *m, spec_list *l)
{
    char pre[96];
    l->n = 0;
    l->floats = 0;
    int64_t sh[4] = {INIT_FEATURES, m->cin, 7, 7};
    spec_add(l, &m->conv0, 4, sh, "features.conv0.weight");
    spec_bn(l, &m->norm0, INIT_FEATURES, "features.norm0");
    m->stem_hw = (m->size + 2 * 3 - 7) / 2 + 1;
    /* The stem reads its input as the 2x2 polyphase split of the input
     * padded by 3: tap (ky, kx) of output (oy, ox) is phase (ky&1, kx&1) at
     * (oy + ky/2, ox + kx/2), so each GEMM row is a shifted contiguous run. */
    m->ph = (m->size + 6 + 1) / 2;
    for (int q = 0; q < m->cin * 49; q++) {
        const int c = q / 49, ky = q % 49 / 7, kx = q % 7;
        const int pp = m->ph * m->ph;
        m->stem_koff[q] = c * 4 * pp + ((ky & 1) * 2 + (kx & 1)) * pp + (ky >> 1) * m->ph +
                          (kx >> 1);
    }
    int hw = (m->stem_hw + 2 * 1 - 3) / 2 + 1;
    int c = INIT_FEATURES, li = 0;
    m->kmax = m->cin * 49;
    for (int b = 0; b < NBLOCKS; b++) {
        m->hw[b] = hw;
        m->c0[b] = c;
        m->first_layer[b] = li;
        for (int j = 0; j < BLOCK_LAYERS[b]; j++, li++) {
            dlayer_t *d = &m->layers[li];
            d->cin = c;
            snprintf(pre, sizeof(pre), "features.denseblock%d.denselayer%d.norm1", b + 1, j + 1);
            spec_bn(l, &d->norm1, c, pre);
            int64_t s1[4] = {BOTTLENECK, c, 1, 1};
            spec_add(l, &d->conv1, 4, s1, "features.denseblock%d.denselayer%d.conv1.weight",
                     b + 1, j + 1);
            snprintf(pre, sizeof(pre), "features.denseblock%d.denselayer%d.norm2", b + 1, j + 1);
            spec_bn(l, &d->norm2, BOTTLENECK, pre);
            int64_t s2[4] = {GROWTH, BOTTLENECK, 3, 3};
            spec_add(l, &d->conv2, 4, s2, "features.denseblock%d.denselayer%d.conv2.weight",
                     b + 1, j + 1);
            if (c > m->kmax)
                m->kmax = c;
            c += GROWTH;
        }
        m->ct[b] = c;
        if (BOTTLENECK * 9 > m->kmax)
            m->kmax = BOTTLENECK * 9;
        if (b < NBLOCKS - 1) {
            trans_t *t = &m->trans[b];
            t->cin = c;
            t->cout = c / 2;
            snprintf(pre, sizeof(pre), "features.transition%d.norm", b + 1);
            spec_bn(l, &t->norm, c, pre);
            int64_t st[4] = {c / 2, c, 1, 1};
            spec_add(l, &t->conv, 4, st, "features.transition%d.conv.weight", b + 1);
            if (c > m->kmax)
                m->kmax = c;
            c /= 2;
            hw /= 2;
        }
    }
    spec_bn(l, &m->norm5, c, "features.norm5");
    int64_t cw[2] = {m->ncls, FINAL_FEATURES};
    spec_add(l, &m->cls_w, 2, cw, "classifier.weight");
    int64_t cb[1] = {m->ncls};
    spec_add(l, &m->cls_b, 1, cb, "classifier.bias");
}

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf + used, len - used, "[");
    for (int i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
}

/* ---- metadata ---- */

static const char *const PRESETS[] = {"resize256-crop224", "tencrop", "resize224", "xrv"};

static chex_model_err parse_int(const char *v, const char *key, int lo, int hi, int *out,
                                char *msg, size_t msglen)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        chex_model_msg(msg, msglen, "metadata %s: '%.40s' is not an integer in [%d, %d]", key, v, lo, hi);
        return CHEX_MODEL_ERR_METADATA;
    }
    *out = (int)x;
    return CHEX_MODEL_OK;
}

static chex_model_err parse_labels(const char *v, chex_model_info *info, char *msg, size_t msglen)
{
    json_error_t jerr;
    json_t *arr = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
    chex_model_err e = CHEX_MODEL_ERR_METADATA;
    if (!arr || !json_is_array(arr)) {
        chex_model_msg(msg, msglen, "metadata labels: not a JSON array of strings");
        goto out;
    }
    size_t n = json_array_size(arr);
    if (n < 1 || n > CHEX_MODEL_MAX_LABELS) {
        chex_model_msg(msg, msglen, "metadata labels: %zu labels, expected 1..%d", n,
                CHEX_MODEL_MAX_LABELS);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s)) {
            chex_model_msg(msg, msglen, "metadata labels: entry %zu is not a string", i);
            goto out;
        }
        size_t len = json_string_length(s);
        if (len == 0 || len >= CHEX_MODEL_LABEL_LEN || strlen(json_string_value(s)) != len) {
            chex_model_msg(msg, msglen, "metadata labels: entry %zu is empty, too long (max %d bytes) "
                    "or holds NUL", i, CHEX_MODEL_LABEL_LEN - 1);
            goto out;
        }
        memcpy(info->labels[i], json_string_value(s), len + 1);
    }
    info->num_labels = (int)n;
    e = CHEX_MODEL_OK;
out:
    json_decref(arr);
    return e;
}

static int json_to_float(json_t *v, float *out)
{
    if (!json_is_number(v))
        return -1;
    double d = json_number_value(v);
    if (!isfinite(d))
        return -1;
    *out = (float)d;
    return 0;
}

static chex_model_err parse_norm(const char *v, chex_model_info *info, char *msg, size_t msglen)
{
    json_error_t jerr;
    json_t *o = json_loads(v, JSON_REJECT_DUPLICATES, &jerr);
    chex_model_err e = CHEX_MODEL_ERR_METADATA;
    const int c = info->input_channels;
    if (!o || !json_is_object(o)) {
        chex_model_msg(msg, msglen, "metadata normalization: not a JSON object");
        goto out;
    }
    json_t *mean = json_object_get(o, "mean"), *std = json_object_get(o, "std");
    json_t *scale = json_object_get(o, "scale"), *offset = json_object_get(o, "offset");
    if (mean || std) {
        if (!json_is_array(mean) || !json_is_array(std) || (int)json_array_size(mean) != c ||
            (int)json_array_size(std) != c || scale || offset) {
            chex_model_msg(msg, msglen, "metadata normalization: \"mean\" and \"std\" must be arrays of "
                    "%d numbers (one per input channel)", c);
            goto out;
        }
        for (int i = 0; i < c; i++) {
            if (json_to_float(json_array_get(mean, (size_t)i), &info->mean[i]) ||
                json_to_float(json_array_get(std, (size_t)i), &info->std[i]) ||
                !(info->std[i] > 0.0f)) {
                chex_model_msg(msg, msglen, "metadata normalization: channel %d needs a finite mean and "
                        "a positive std", i);
                goto out;
            }
        }
    } else if (scale && offset) {
        float s, of;
        if (json_to_float(scale, &s) || json_to_float(offset, &of) || !(s > 0.0f)) {
            chex_model_msg(msg, msglen, "metadata normalization: \"scale\" must be a positive number and "
                    "\"offset\" a number");
            goto out;
        }
        for (int i = 0; i < c; i++) {
            info->mean[i] = -of / s;
            info->std[i] = 1.0f / s;
        }
    } else {
        chex_model_msg(msg, msglen, "metadata normalization: expected {\"mean\":[..],\"std\":[..]} or "
                "{\"scale\":s,\"offset\":o}");
        goto out;
    }
    for (int i = c; i < 3; i++) {
        info->mean[i] = 0.0f;
        info->std[i] = 1.0f;
    }
    e = CHEX_MODEL_OK;
out:
    json_decref(o);
    return e;
}

static chex_model_err parse_metadata(const chex_st_file *f, const char *path,
                                     chex_model_info *info, char *msg, size_t msglen)
{
    chex_model_err e;
    const char *v;
    memset(info, 0, sizeof(*info));

    /* name: default is the file name without directory and extension. */
    if ((v = chex_st_meta_get(f, "name"))) {
        if (!*v || strlen(v) >= sizeof(info->name)) {
            chex_model_msg(msg, msglen, "metadata name: empty or longer than %zu bytes",
                    sizeof(info->name) - 1);
            return CHEX_MODEL_ERR_METADATA;
        }
        snprintf(info->name, sizeof(info->name), "%s", v);
    } else {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        snprintf(info->name, sizeof(info->name), "%s", base);
        char *dot = strstr(info->name, ".safetensors");
        if (dot && dot != info->name)
            *dot = '\0';
    }

    v = chex_st_meta_get(f, "demo");
    if (!v || !strcmp(v, "false"))
        info->demo = 0;
    else if (!strcmp(v, "true"))
        info->demo = 1;
    else {
        chex_model_msg(msg, msglen, "metadata demo: '%.20s' is neither \"true\" nor \"false\"", v);
        return CHEX_MODEL_ERR_METADATA;
    }

    v = chex_st_meta_get(f, "architecture");
    if (v && strcmp(v, "densenet121")) {
        chex_model_msg(msg, msglen, "metadata architecture: '%.40s' is not supported (densenet121 only)",
                v);
        return CHEX_MODEL_ERR_METADATA;
    }
    snprintf(info->architecture, sizeof(info->architecture), "densenet121");

    if (!(v = chex_st_meta_get(f, "labels"))) {
        chex_model_msg(msg, msglen, "metadata labels: missing (a JSON array of label names is required)");
        return CHEX_MODEL_ERR_METADATA;
    }
    if ((e = parse_labels(v, info, msg, msglen)))
        return e;

    info->input_channels = 3;
    if ((v = chex_st_meta_get(f, "input_channels"))) {
        if (strcmp(v, "1") && strcmp(v, "3")) {
            chex_model_msg(msg, msglen, "metadata input_channels: '%.20s' is neither 1 nor 3", v);
            return CHEX_MODEL_ERR_METADATA;
        }
        info->input_channels = v[0] - '0';
    }

    info->input_size = 224;
    if ((v = chex_st_meta_get(f, "input_size")) &&
        (e = parse_int(v, "input_size", 32, 1024, &info->input_size, msg, msglen)))
        return e;

    if ((v = chex_st_meta_get(f, "normalization"))) {
        if ((e = parse_norm(v, info, msg, msglen)))
            return e;
    } else if (info->input_channels == 3) {
        static const float im_mean[3] = {0.485f, 0.456f, 0.406f}, im_std[3] = {0.229f, 0.224f,
                                                                               0.225f};
        memcpy(info->mean, im_mean, sizeof(im_mean));
        memcpy(info->std, im_std, sizeof(im_std));
    } else {
        chex_model_msg(msg, msglen, "metadata normalization: missing (required when input_channels is "
                "1; the ImageNet default only covers 3 channels)");
        return CHEX_MODEL_ERR_METADATA;
    }

    snprintf(info->preprocess, sizeof(info->preprocess), "resize256-crop224");
    if ((v = chex_st_meta_get(f, "preprocess"))) {
        size_t i, np = sizeof(PRESETS) / sizeof(PRESETS[0]);
        for (i = 0; i < np && strcmp(v, PRESETS[i]); i++)
            ;
        if (i == np) {
            chex_model_msg(msg, msglen, "metadata preprocess: unknown preset '%.40s' (resize256-crop224, "
                    "tencrop, resize224, xrv)", v);
            return CHEX_MODEL_ERR_METADATA;
        }
        snprintf(info->preprocess, sizeof(info->preprocess), "%s", v);
    }
    return CHEX_MODEL_OK;
}

/* ---- loader ---- */

static void bn_fold(bn_t *bn, float **cursor)
{
    bn->scale = *cursor;
    bn->shift = *cursor + ((bn->c + 15) & ~15);
    *cursor += 2 * ((bn->c + 15) & ~15);
    for (int i = 0; i < bn->c; i++) {
        float s = bn->gamma[i] / sqrtf(bn->var[i] + BN_EPS);
        bn->scale[i] = s;
        bn->shift[i] = bn->beta[i] - bn->mean[i] * s;
    }
}

/* Winograd for a dense layer's 3x3 conv (where the ISA has it): returns the
 * output tile side, 4 (F(4x4,3x3), the default), 2 (F(2x2,3x3), with
 * CHEXD_WINOGRAD=2 at load) or 0 (direct, CHEXD_WINOGRAD=0). F(4x4) on sides
 * of at least 14 (blocks 1-3; 14x14 has ragged edge tiles, cropped); on 7x7
 * its 2x2 tiles (3 of 4 rows and columns kept) fill half the lanes and do as
 * many multiplies as direct. F(2x2) only on sides of at least 28, multiples
 * of 2: on 14x14 and 7x7 its short tile rows ate the gain (measured). */
static int use_winograd(const chex_model *m, int layer)
{
    const char *env = getenv("CHEXD_WINOGRAD");
    if (env && strcmp(env, "0") == 0)
        return 0;
    const int f = env && strcmp(env, "2") == 0 ? 2 : 4;
    int b = 0;
    while (b + 1 < NBLOCKS && layer >= m->first_layer[b + 1])
        b++;
    if (f == 4)
        return m->hw[b] >= 14 ? 4 : 0;
    return m->hw[b] % 2 == 0 && m->hw[b] >= 28 ? 2 : 0;
}

/* Floats of a layer's Winograd weights for tile side f (0: none). */
static size_t wino_floats(int f)
{
    return f ? (size_t)(f + 2) * (f + 2) * GROWTH * BOTTLENECK : 0;
}

static void repack(float *w, int mrows, int k, float *tmp)
{
    memcpy(tmp, w, sizeof(float) * (size_t)mrows * k);
    chex_pack_weights(w, tmp, mrows, k);
}

static size_t bn_fold_floats(int c)
{
    return 2 * (size_t)((c + 15) & ~15);
}

static chex_model_err check_tensors(chex_model *m, const chex_st_file *f, spec_list *l,
                                    char *msg, size_t msglen)
{
    char want[96], got[96];
    /* The two free dimensions come from metadata: report a disagreement as a
     * metadata problem naming the key. */
    const chex_st_tensor *t = chex_st_find(f, "features.conv0.weight");
    if (t && t->ndim == 4 && t->shape[0] == INIT_FEATURES && t->shape[2] == 7 &&
        t->shape[3] == 7 && (t->shape[1] == 1 || t->shape[1] == 3) && t->shape[1] != m->cin) {
        chex_model_msg(msg, msglen, "metadata input_channels: %d%s but features.conv0.weight has %lld "
                "input channels", m->cin,
                chex_st_meta_get(f, "input_channels") ? "" : " (default)",
                (long long)t->shape[1]);
        return CHEX_MODEL_ERR_METADATA;
    }
    t = chex_st_find(f, "classifier.weight");
    if (t && t->ndim == 2 && t->shape[1] == FINAL_FEATURES && t->shape[0] != m->ncls) {
        chex_model_msg(msg, msglen, "metadata labels: %d labels but classifier.weight has %lld rows",
                m->ncls, (long long)t->shape[0]);
        return CHEX_MODEL_ERR_METADATA;
    }
    for (int i = 0; i < l->n; i++) {
        const spec_t *s = &l->s[i];
        t = chex_st_find(f, s->name);
        if (!t) {
            chex_model_msg(msg, msglen, "tensor %s: missing", s->name);
            return CHEX_MODEL_ERR_MISSING;
        }
        int same = t->ndim == s->ndim;
        for (int d = 0; same && d < s->ndim; d++)
            same = t->shape[d] == s->shape[d];
        if (!same) {
            fmt_shape(want, sizeof(want), s->ndim, s->shape);
            fmt_shape(got, sizeof(got), t->ndim, t->shape);
            chex_model_msg(msg, msglen, "tensor %s: shape %s, expected %s", s->name, got, want);
            return CHEX_MODEL_ERR_SHAPE;
        }
    }
    for (int i = 0; i < f->ntensors; i++) {
        int j;
        if (chex_model_is_int8_tensor(f->tensors[i].name) ||
            !strcmp(f->tensors[i].name, CHEX_MODEL_OP_THRESHS))
            continue; /* checked by chex_dn_parse_qfile / parse_op_threshs */
        for (j = 0; j < l->n && strcmp(l->s[j].name, f->tensors[i].name); j++)
            ;
        if (j == l->n) {
            chex_model_msg(msg, msglen, "tensor %.100s: unexpected (densenet121 does not use it)",
                    f->tensors[i].name);
            return CHEX_MODEL_ERR_UNEXPECTED;
        }
    }
    return CHEX_MODEL_OK;
}

/* The optional operating points (model.h, chex_model_info.op_norm). */
static chex_model_err parse_op_threshs(const chex_st_file *f, chex_model_info *info, char *msg,
                                       size_t msglen)
{
    const chex_st_tensor *t = chex_st_find(f, CHEX_MODEL_OP_THRESHS);
    info->op_norm = 0;
    info->num_untrained = 0;
    if (!t)
        return CHEX_MODEL_OK;
    if (t->ndim != 1 || t->shape[0] != info->num_labels) {
        char got[96];
        fmt_shape(got, sizeof(got), t->ndim, t->shape);
        chex_model_msg(msg, msglen, "tensor %s: shape %s, expected [%d] (one per label)",
                       CHEX_MODEL_OP_THRESHS, got, info->num_labels);
        return CHEX_MODEL_ERR_SHAPE;
    }
    if (t->dtype != CHEX_ST_F32 && t->dtype != CHEX_ST_F16 && t->dtype != CHEX_ST_BF16) {
        chex_model_msg(msg, msglen, "tensor %s: dtype must be F32, F16 or BF16",
                       CHEX_MODEL_OP_THRESHS);
        return CHEX_MODEL_ERR_DTYPE;
    }
    chex_st_to_f32(f, t, info->op_threshs);
    for (int k = 0; k < info->num_labels; k++) {
        float v = info->op_threshs[k];
        if (isnan(v)) {
            info->untrained[k] = 1;
            info->num_untrained++;
        } else if (!(v > 0.0f && v < 1.0f)) {
            chex_model_msg(msg, msglen, "tensor %s: entry %d (%s) is %g, expected a number in "
                           "(0, 1) or NaN (a label the model was not trained on)",
                           CHEX_MODEL_OP_THRESHS, k, info->labels[k], (double)v);
            return CHEX_MODEL_ERR_METADATA;
        }
    }
    if (info->num_untrained == info->num_labels) {
        chex_model_msg(msg, msglen, "tensor %s: every entry is NaN (no label trained)",
                       CHEX_MODEL_OP_THRESHS);
        return CHEX_MODEL_ERR_METADATA;
    }
    info->op_norm = 1;
    return CHEX_MODEL_OK;
}

float chex_model_op_norm(float p, float t)
{
    /* torchxrayvision/models.py op_norm: outputs / (op_threshs * 2) below the
     * threshold, 1.0 - ((1.0 - outputs) / ((1 - op_threshs) * 2)) otherwise. */
    if (isnan(t))
        return 0.5f;
    if (p < t)
        return p / (t * 2.0f);
    return 1.0f - (1.0f - p) / ((1.0f - t) * 2.0f);
}

/* probs (n, ncls) = sigmoid(logits), then op_norm when the model has it. */
static void output_stage(const chex_model *m, float *probs, const float *logits, int n)
{
    sigmoid_forward_naive(probs, logits, (long)n * m->ncls);
    if (!m->info.op_norm)
        return;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < m->ncls; k++)
            probs[(size_t)i * m->ncls + k] =
                chex_model_op_norm(probs[(size_t)i * m->ncls + k], m->info.op_threshs[k]);
}

static chex_model_err load_from(const uint8_t *buf, size_t len, const char *path, chex_model *m,
                                char *msg, size_t msglen)
{
    chex_st_file f;
    memset(&f, 0, sizeof(f));
    chex_model_err e = chex_st_parse(buf, len, &f, msg, msglen);
    if (e)
        goto out;
    if ((e = parse_metadata(&f, path, &m->info, msg, msglen)))
        goto out;
    m->cin = m->info.input_channels;
    m->size = m->info.input_size;
    m->ncls = m->info.num_labels;

    spec_list *l = malloc(sizeof(*l));
    if (!l) {
        e = CHEX_MODEL_ERR_NOMEM;
        chex_model_msg(msg, msglen, "out of memory");
        goto out;
    }
    build_graph(m, l);
    if ((e = check_tensors(m, &f, l, msg, msglen)) ||
        (e = parse_op_threshs(&f, &m->info, msg, msglen)) ||
        (e = chex_dn_parse_act_max(m, &f, msg, msglen)) ||
        (e = chex_dn_parse_qfile(m, &f, msg, msglen))) {
        free(l);
        goto out;
    }

    size_t fold = bn_fold_floats(m->norm0.c) + bn_fold_floats(m->norm5.c);
    for (int i = 0; i < MAX_LAYERS; i++)
        fold += bn_fold_floats(m->layers[i].norm1.c) + bn_fold_floats(m->layers[i].norm2.c);
    for (int i = 0; i < NBLOCKS - 1; i++)
        fold += bn_fold_floats(m->trans[i].norm.c);
    size_t wino = 0;
    for (int i = 0; i < MAX_LAYERS; i++)
        wino += wino_floats(use_winograd(m, i));
    m->arena_floats = l->floats + fold + wino;
    m->arena = aligned_alloc(64, m->arena_floats * sizeof(float));
    if (!m->arena) {
        free(l);
        e = CHEX_MODEL_ERR_NOMEM;
        chex_model_msg(msg, msglen, "out of memory for %zu MB of weights",
                m->arena_floats * sizeof(float) >> 20);
        goto out;
    }
    for (int i = 0; i < l->n; i++) {
        float *dst = m->arena + l->s[i].offset;
        chex_st_to_f32(&f, chex_st_find(&f, l->s[i].name), dst);
        *l->s[i].slot = dst;
    }
    const size_t l_floats = l->floats;
    free(l);

    /* Convolution weights into the micro-kernels' panel layout, once. */
    float *tmpw = malloc(sizeof(float) * (size_t)FINAL_FEATURES * FINAL_FEATURES / 2);
    if (!tmpw) {
        e = CHEX_MODEL_ERR_NOMEM;
        chex_model_msg(msg, msglen, "out of memory");
        goto out;
    }
    repack(m->conv0, INIT_FEATURES, m->cin * 49, tmpw);
    float *wcur = m->arena + l_floats + fold;
    m->wino_base = wcur;
    m->wino_len = wino;
    for (int i = 0; i < MAX_LAYERS; i++) {
        repack(m->layers[i].conv1, BOTTLENECK, m->layers[i].cin, tmpw);
        const int f = use_winograd(m, i);
        if (f) { /* from the PyTorch-layout weights */
            m->layers[i].wino = wcur;
            m->layers[i].wino_f = f;
            if (f == 4)
                chex_winograd4_weights(wcur, m->layers[i].conv2, GROWTH, BOTTLENECK);
            else
                chex_winograd_weights(wcur, m->layers[i].conv2, GROWTH, BOTTLENECK);
            wcur += wino_floats(f);
        }
        repack(m->layers[i].conv2, GROWTH, BOTTLENECK * 9, tmpw);
    }
    for (int i = 0; i < NBLOCKS - 1; i++)
        repack(m->trans[i].conv, m->trans[i].cout, m->trans[i].cin, tmpw);
    free(tmpw);

    /* BN as per-channel scale/shift (eval mode). */
    float *cur = m->arena + l_floats;
    bn_fold(&m->norm0, &cur);
    for (int i = 0; i < MAX_LAYERS; i++) {
        bn_fold(&m->layers[i].norm1, &cur);
        bn_fold(&m->layers[i].norm2, &cur);
    }
    for (int i = 0; i < NBLOCKS - 1; i++)
        bn_fold(&m->trans[i].norm, &cur);
    bn_fold(&m->norm5, &cur);
    chex_sha256_hex(buf, len, m->info.sha256);
    e = CHEX_MODEL_OK;
out:
    chex_st_free(&f);
    return e;
}

chex_model_err chex_model_load(const char *path, chex_model **out, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!out || !path) {
        chex_model_msg(msg, msglen, "chex_model_load: NULL argument");
        return CHEX_MODEL_ERR_ARG;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        chex_model_msg(msg, msglen, "%s: cannot open: %s", path, strerror(errno));
        return CHEX_MODEL_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        chex_model_msg(msg, msglen, "%s: not a regular file", path);
        close(fd);
        return CHEX_MODEL_ERR_IO;
    }
    size_t len = (size_t)st.st_size;
    static const uint8_t empty[1];
    const uint8_t *buf = empty;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            chex_model_msg(msg, msglen, "%s: cannot map: %s", path, strerror(errno));
            close(fd);
            return CHEX_MODEL_ERR_IO;
        }
        buf = map;
    }
    close(fd);

    chex_model *m = calloc(1, sizeof(*m));
    chex_model_err e;
    if (!m) {
        chex_model_msg(msg, msglen, "out of memory");
        e = CHEX_MODEL_ERR_NOMEM;
    } else {
        e = load_from(buf, len, path, m, msg, msglen);
    }
    if (!e && m->has_qfile) {
        /* chex_model_quantize reads the int8 weights from the mapping; until
         * then its pages (read once for the checksum) need not stay resident. */
        m->fmap = map;
        m->flen = len;
        madvise(map, len, MADV_DONTNEED);
    } else if (map) {
        munmap(map, len);
    }
    if (e) {
        chex_model_free(m);
        return e;
    }
    *out = m;
    return CHEX_MODEL_OK;
}

void chex_model_free(chex_model *m)
{
    if (!m)
        return;
    free(m->arena);
    free(m->qarena);
    if (m->fmap)
        munmap(m->fmap, m->flen);
    free(m);
}

size_t chex_model_bytes(const chex_model *m)
{
    return m ? m->arena_floats * sizeof(float) + m->qarena_bytes : 0;
}

size_t chex_model_ws_bytes(const chex_model_ws *ws)
{
    return ws ? ws->bytes : 0;
}

const chex_model_info *chex_model_info_get(const chex_model *m)
{
    return m ? &m->info : NULL;
}

double chex_model_flops_per_image(const chex_model *m)
{
    double f = 2.0 * INIT_FEATURES * m->cin * 49 * (double)m->stem_hw * m->stem_hw;
    for (int b = 0; b < NBLOCKS; b++) {
        double px = (double)m->hw[b] * m->hw[b];
        for (int j = 0; j < BLOCK_LAYERS[b]; j++) {
            const dlayer_t *d = &m->layers[m->first_layer[b] + j];
            f += 2.0 * BOTTLENECK * d->cin * px + 2.0 * GROWTH * BOTTLENECK * 9 * px;
        }
        if (b < NBLOCKS - 1) /* counted as PyTorch computes it: conv at full size */
            f += 2.0 * m->trans[b].cout * m->trans[b].cin * px;
    }
    f += 2.0 * FINAL_FEATURES * m->ncls;
    return f;
}

/* ---- workspace ---- */

/* Floats of one bottleneck slot (and bytes of its int8 twin): one padded
 * first-block image. */
#define BOTT_SLOT(m) ((size_t)BOTTLENECK * ((m)->hw[0] + 2) * ((m)->hw[0] + 2))

static size_t al16(size_t x)
{
    return (x + 15) & ~(size_t)15;
}

chex_model_err chex_model_ws_create(const chex_model *m, int max_batch, chex_model_ws **out)
{
    if (!out)
        return CHEX_MODEL_ERR_ARG;
    *out = NULL;
    if (!m || max_batch < 1 || max_batch > 1024)
        return CHEX_MODEL_ERR_ARG;
    chex_model_ws *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return CHEX_MODEL_ERR_NOMEM;
    ws->m = m;
    ws->max_batch = max_batch;
    int nt = omp_get_max_threads(), np = omp_get_num_procs();
    ws->nthreads = nt > np ? nt : np;
    ws->scratch_floats = chex_conv_scratch_floats(m->kmax);
    if (chex_winograd_scratch_floats(BOTTLENECK, GROWTH) > ws->scratch_floats)
        ws->scratch_floats = chex_winograd_scratch_floats(BOTTLENECK, GROWTH);
    if (chex_winograd4_scratch_floats(BOTTLENECK, GROWTH) > ws->scratch_floats)
        ws->scratch_floats = chex_winograd4_scratch_floats(BOTTLENECK, GROWTH);

    const size_t n = (size_t)max_batch;
    size_t blk[NBLOCKS], total = 0;
    for (int b = 0; b < NBLOCKS; b++) {
        blk[b] = al16(n * m->ct[b] * m->hw[b] * m->hw[b]);
        total += blk[b];
    }
    size_t stem = (size_t)INIT_FEATURES * m->stem_hw * m->stem_hw;
    /* Image-parallel teams have at most min(threads, max_batch, 64) threads
     * (a thread per image at least), each with its own stem areas. */
    ws->nstem = ws->nthreads < max_batch ? ws->nthreads : max_batch;
    if (ws->nstem > 64)
        ws->nstem = 64;
    /* The padded bottleneck: one slot per image-parallel thread, each the
     * room of one first-block image, which holds 3.7 second-block images,
     * 14 third-block ones... forward_range runs a dense block over as many
     * images at a time as its slots hold (not the whole batch: 13.8 -> 3.4
     * MB at batch 8 on 2 threads). */
    size_t bott_max = (size_t)ws->nstem * BOTT_SLOT(m);
    size_t bott = al16(bott_max + 64); /* + slack the padded 3x3 packing may read */
    size_t tmp = al16(stem) * (size_t)ws->nstem + bott;
    ws->phase_floats = al16((size_t)m->cin * 4 * m->ph * m->ph + 128); /* + read slack */
    tmp += ws->phase_floats * (size_t)ws->nstem;
    size_t feat = al16(n * FINAL_FEATURES * m->hw[3] * m->hw[3]);
    size_t pooled = al16(n * FINAL_FEATURES), logits = al16(n * m->ncls);
    size_t scratch = ws->scratch_floats * (size_t)ws->nthreads;
    total += tmp + feat + pooled + logits + scratch;
    ws->mem = aligned_alloc(64, total * sizeof(float));
    if (!ws->mem) {
        free(ws);
        return CHEX_MODEL_ERR_NOMEM;
    }
    float *p = ws->mem;
    for (int b = 0; b < NBLOCKS; b++) {
        ws->blk[b] = p;
        p += blk[b];
    }
    ws->tmp = p;
    ws->bott = p + al16(stem) * (size_t)ws->nstem;
    ws->phase = ws->bott + bott;
    memset(ws->phase, 0, ws->phase_floats * (size_t)ws->nstem * sizeof(float));
    /* Only the read slack past the last plane needs zeros now: borders are
     * zeroed per block and interiors written by every layer, and leaving the
     * rest untouched keeps it out of an int8 workspace's RSS (int8 uses
     * qbott instead). */
    memset(ws->bott + bott_max, 0, (bott - bott_max) * sizeof(float));
    p += tmp;
    ws->feat = p;
    p += feat;
    ws->pooled = p;
    p += pooled;
    ws->logits = p;
    p += logits;
    ws->scratch = p;
    if (m->qarena) { /* int8 areas only for a quantised model */
        const size_t qb = (size_t)ws->nstem * BOTT_SLOT(m); /* bytes: same geometry */
        const size_t qbott = (qb + 1024 + 63) & ~(size_t)63; /* + read slack of the 3x3 */
        int kq = m->kmax > BOTTLENECK * 9 ? m->kmax : BOTTLENECK * 9;
        ws->qscratch_bytes = (chex_q8_scratch_bytes(kq) + 63) & ~(size_t)63;
        ws->qmem = aligned_alloc(64, qbott + ws->qscratch_bytes * (size_t)ws->nthreads);
        if (!ws->qmem) {
            free(ws->mem);
            free(ws);
            return CHEX_MODEL_ERR_NOMEM;
        }
        memset(ws->qmem, 0, qbott);
        ws->qbott = ws->qmem;
        ws->qscratch = ws->qmem + qbott;
        ws->bytes += qbott + ws->qscratch_bytes * (size_t)ws->nthreads;
    }
    ws->bytes += total * sizeof(float);
    *out = ws;
    return CHEX_MODEL_OK;
}

chex_model_err chex_model_ws_set_precision(chex_model_ws *ws, chex_model_precision p)
{
    if (!ws || (p != CHEX_PRECISION_FP32 && p != CHEX_PRECISION_INT8) ||
        (p == CHEX_PRECISION_INT8 && !ws->qmem))
        return CHEX_MODEL_ERR_ARG;
    ws->precision = p;
    return CHEX_MODEL_OK;
}

void chex_model_ws_free(chex_model_ws *ws)
{
    if (!ws)
        return;
    free(ws->mem);
    free(ws->qmem);
    free(ws);
}

int chex_model_ws_max_batch(const chex_model_ws *ws)
{
    return ws ? ws->max_batch : 0;
}

/* ---- forward ---- */

/* Zeroes the one-pixel border of planes (hw+2)^2. */
static void zero_border(float *p, long planes, int hw)
{
    const long row = hw + 2, plane = row * row;
    for (long i = 0; i < planes; i++) {
        float *q = p + i * plane;
        memset(q, 0, sizeof(float) * row);
        memset(q + (row - 1) * row, 0, sizeof(float) * row);
        for (long y = 1; y < row - 1; y++)
            q[y * row] = q[y * row + row - 1] = 0.0f;
    }
}

/* Zeroes the one-pixel border of grouped u8 planes (hw+2)^2 pixels of 4 bytes. */
static void zero_border_q8(uint8_t *p, long planes, int hw)
{
    const long row = hw + 2, plane = row * row;
    for (long i = 0; i < planes; i++) {
        uint8_t *q = p + 4 * i * plane;
        memset(q, 0, 4 * row);
        memset(q + 4 * (row - 1) * row, 0, 4 * row);
        for (long y = 1; y < row - 1; y++) {
            memset(q + 4 * y * row, 0, 4);
            memset(q + 4 * (y * row + row - 1), 0, 4);
        }
    }
}

static void maxpool_into(float *dst, const float *src, int c, int h, int w, int oh, int ow,
                         int nt)
{
    /* 3x3, stride 2, pad 1: the max of the (up to) 3 rows first, as whole
     * vector rows, then of 3 neighbours in that row; padding never wins. */
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int ci = 0; ci < c; ci++) {
        float vm[2 * 512 + 4]; /* w <= 2 * 512: input_size <= 1024 */
        const float *x = src + (long)ci * h * w;
        float *y = dst + (long)ci * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const int y0 = 2 * oy - 1 < 0 ? 0 : 2 * oy - 1;
            const int y1 = 2 * oy + 1 < h ? 2 * oy + 1 : h - 1;
            const float *r = x + (long)y0 * w;
            for (int i = 0; i < w; i++)
                vm[i + 1] = r[i];
            for (int yy = y0 + 1; yy <= y1; yy++) {
                r = x + (long)yy * w;
#pragma omp simd
                for (int i = 0; i < w; i++)
                    vm[i + 1] = vm[i + 1] > r[i] ? vm[i + 1] : r[i];
            }
            vm[0] = -INFINITY;
            for (int i = w + 1; i < 2 * ow + 2; i++)
                vm[i] = -INFINITY;
            float *yo = y + (long)oy * ow;
#pragma omp simd
            for (int ox = 0; ox < ow; ox++) {
                float a = vm[2 * ox], b = vm[2 * ox + 1], d = vm[2 * ox + 2];
                a = a > b ? a : b;
                yo[ox] = a > d ? a : d;
            }
        }
    }
}

/* One share of a forward: images [i0, i0+cnt) of the batch, every operator
 * run by nt threads. With nt == 1 no OpenMP team is formed and scratch /
 * stem are this thread's own areas (image-parallel batches). Adds the
 * stage times to ms. */
/* Writes image x (c, S, S) as the 2x2 polyphase split of x padded by 3:
 * out[c][py][px][yy][u] = x[c][2yy+py-3][2u+px-3], zero outside. */
static void polyphase(float *out, const float *x, int c, int S, int ph)
{
    const long pp = (long)ph * ph;
    for (int ci = 0; ci < c; ci++)
        for (int py = 0; py < 2; py++)
            for (int px = 0; px < 2; px++) {
                float *o = out + ((long)ci * 4 + py * 2 + px) * pp;
                for (int yy = 0; yy < ph; yy++) {
                    const int y = 2 * yy + py - 3;
                    float *orow = o + (long)yy * ph;
                    if (y < 0 || y >= S) {
                        memset(orow, 0, sizeof(float) * ph);
                        continue;
                    }
                    const float *xr = x + ((long)ci * S + y) * S;
                    for (int u = 0; u < ph; u++) {
                        const int xx = 2 * u + px - 3;
                        orow[u] = xx >= 0 && xx < S ? xr[xx] : 0.0f;
                    }
                }
            }
}

chex_conv_args chex_dn_conv1_args(const chex_model *m, int li, const float *src, long stride,
                                  int n, float *bott, long bimg)
{
    const dlayer_t *d = &m->layers[li];
    int b = 0;
    while (b + 1 < NBLOCKS && li >= m->first_layer[b + 1])
        b++;
    const int hw = m->hw[b];
    const long prow = hw + 2, pplane = prow * prow;
    return (chex_conv_args){.kind = CHEX_PACK_BNRELU_1X1, .n = n, .src = src,
                            .src_img_stride = stride, .c = d->cin, .h = hw, .w = hw, .kh = 1,
                            .kw = 1, .stride = 1, .pad = 0, .oh = hw, .ow = hw,
                            .pre_scale = d->norm1.scale, .pre_shift = d->norm1.shift,
                            .wt = d->conv1, .m = BOTTLENECK, .post_scale = d->norm2.scale,
                            .post_shift = d->norm2.shift, .post_relu = 1, .dst = bott,
                            .dst_img_stride = bimg, .dst_plane = pplane, .dst_row = prow,
                            .dst_off = prow + 1};
}

/* qz: this share's int8 scratch (used when ws->precision is int8).
 * bott, qbott: this share's bottleneck areas, bcap floats (bytes) each.
 * chmax: NULL, or per-channel calibration maxima to raise (fp32 only):
 * chmax[i] has one float per input channel of quantised conv i. */
static void forward_range(const chex_model *m, chex_model_ws *ws, const float *in, int i0,
                          int cnt, int nt, float *scratch, float *stem, float *phase,
                          uint8_t *qz, float *bott, uint8_t *qbott, size_t bcap, float *const *chmax,
                          double *ms)
{
    const chex_kernels *kr = chex_kernels_get();
    const chex_q8_kernels *kq = ws->precision == CHEX_PRECISION_INT8 && !chmax
                                    ? chex_q8_kernels_get()
                                    : NULL;
    double t0 = omp_get_wtime(), t1;
    const int S = m->size, sh = m->stem_hw, h0 = m->hw[0];
    const long in_stride = (long)m->cin * S * S;

    /* Stem, one image at a time so its large output needs one image of room. */
    for (int i = i0; i < i0 + cnt; i++) {
        polyphase(phase, in + i * in_stride, m->cin, S, m->ph);
        chex_conv_args a = {.kind = CHEX_PACK_SHIFTED, .n = 1, .src = phase,
                            .src_img_stride = (long)m->cin * 4 * m->ph * m->ph,
                            .src_row = m->ph, .koff = m->stem_koff, .c = m->cin, .h = S,
                            .w = S, .kh = 7, .kw = 7, .stride = 2, .pad = 3, .oh = sh, .ow = sh,
                            .wt = m->conv0,
                            .m = INIT_FEATURES, .post_scale = m->norm0.scale,
                            .post_shift = m->norm0.shift, .post_relu = 1, .dst = stem,
                            .dst_img_stride = (long)INIT_FEATURES * sh * sh};
        kr->conv(&a, scratch, ws->scratch_floats, nt);
        maxpool_into(ws->blk[0] + i * ((long)m->ct[0] * h0 * h0), stem, INIT_FEATURES, sh, sh,
                     h0, h0, nt);
    }
    t1 = omp_get_wtime();
    ms[CHEX_STAGE_STEM] += (t1 - t0) * 1e3;
    t0 = t1;

    for (int b = 0; b < NBLOCKS; b++) {
        const int hw = m->hw[b];
        const long px = (long)hw * hw, stride = (long)m->ct[b] * px;
        float *const bblk = ws->blk[b] + i0 * stride;
        /* The bottleneck lives with a zero border, so the 3x3 conv packs by
         * plain copies; its interior is rewritten by every layer. It holds
         * `chunk` images of this block's geometry (bcap / bimg, at least 1),
         * so the block runs over the images chunk by chunk. */
        const long prow = hw + 2, pplane = prow * prow, bimg = (long)BOTTLENECK * pplane;
        const int chunk = (long)(bcap / (size_t)bimg) < cnt ? (int)(bcap / (size_t)bimg) : cnt;
        /* int8: the bottleneck as 32 planes of 4-channel groups (pixels of 4
         * bytes), same geometry, its own zero border. */
        for (int i = 0; i < chunk; i++) {
            if (kq)
                zero_border_q8(qbott + i * bimg, BOTTLENECK / 4, hw);
            else
                zero_border(bott + i * bimg, BOTTLENECK, hw);
        }
        for (int c0 = 0; c0 < cnt; c0 += chunk) {
            const int nc = cnt - c0 < chunk ? cnt - c0 : chunk;
            float *const blk = bblk + c0 * stride;
            for (int j = 0; j < BLOCK_LAYERS[b]; j++) {
                const int li = m->first_layer[b] + j;
                const dlayer_t *d = &m->layers[li];
                if (kq) {
                    chex_q8_args q1 = {.kind = CHEX_Q8_BNRELU_1X1, .n = nc, .c = d->cin, .h = hw,
                                       .w = hw, .oh = hw, .ow = hw, .src = blk,
                                       .src_img_stride = stride, .pre_scale = d->q1.pre_scale,
                                       .pre_shift = d->q1.pre_shift, .in_inv_scale = d->q1.in_inv,
                                       .wt = d->q1.w, .m = BOTTLENECK, .out_scale = d->q1.oscale,
                                       .out_shift = d->q1.oshift, .qdst = qbott,
                                       .dst_img_stride = bimg / 4, .dst_plane = pplane,
                                       .dst_row = prow, .dst_off = prow + 1};
                    kq->conv(&q1, qz, ws->qscratch_bytes, nt);
                    chex_q8_args q2 = {.kind = CHEX_Q8_CONV3X3_PADDED, .n = nc, .c = BOTTLENECK,
                                       .h = hw, .w = hw, .oh = hw, .ow = hw, .qsrc = qbott,
                                       .qsrc_img_stride = bimg / 4, .src_plane = pplane,
                                       .src_row = prow, .in_inv_scale = d->q2.in_inv,
                                       .wt = d->q2.w, .m = GROWTH, .out_scale = d->q2.oscale,
                                       .out_shift = d->q2.oshift, .dst = blk + d->cin * px,
                                       .dst_img_stride = stride};
                    kq->conv(&q2, qz, ws->qscratch_bytes, nt);
                    continue;
                }
                if (chmax)
                    chex_dn_chmax_bnrelu(chmax[chex_dn_qidx_layer(m, li)], blk, stride, nc, d->cin,
                                         px, d->norm1.scale, d->norm1.shift);
                const chex_conv_args a1 = chex_dn_conv1_args(m, li, blk, stride, nc, bott, bimg);
                kr->conv(&a1, scratch, ws->scratch_floats, nt);
                chex_conv_args a2 = {.kind = CHEX_PACK_CONV3X3_PADDED, .n = nc, .src = bott,
                                     .src_img_stride = bimg, .src_plane = pplane,
                                     .src_row = prow, .c = BOTTLENECK, .h = hw, .w = hw, .kh = 3,
                                     .kw = 3, .stride = 1, .pad = 1, .oh = hw, .ow = hw,
                                     .wt = d->conv2, .m = GROWTH, .dst = blk + d->cin * px,
                                     .dst_img_stride = stride};
                if (chmax) /* conv2's input: the bottleneck (its zero border is harmless) */
                    chex_dn_chmax(chmax[chex_dn_qidx_layer(m, li) + 1], bott, bimg, nc, BOTTLENECK,
                                  pplane);
                if (d->wino_f == 4 && kr->wino4)
                    kr->wino4(&a2, d->wino, scratch, ws->scratch_floats, nt);
                else if (d->wino_f == 2 && kr->wino)
                    kr->wino(&a2, d->wino, scratch, ws->scratch_floats, nt);
                else
                    kr->conv(&a2, scratch, ws->scratch_floats, nt);
            }
        }
        t1 = omp_get_wtime();
        ms[CHEX_STAGE_BLOCK1 + 2 * b] += (t1 - t0) * 1e3;
        t0 = t1;
        if (b == NBLOCKS - 1)
            break;
        /* Transition: avgpool commutes with the 1x1 conv, so pool first (in
         * the packing) and convolve a quarter of the pixels. */
        const trans_t *t = &m->trans[b];
        const int oh = m->hw[b + 1];
        const long ostride = (long)m->ct[b + 1] * oh * oh;
        chex_conv_args a = {.kind = CHEX_PACK_BNRELU_POOL, .n = cnt, .src = bblk,
                            .src_img_stride = stride, .c = t->cin, .h = hw, .w = hw, .kh = 1,
                            .kw = 1, .stride = 1, .pad = 0, .oh = oh, .ow = oh,
                            .pre_scale = t->norm.scale, .pre_shift = t->norm.shift,
                            .wt = t->conv, .m = t->cout, .dst = ws->blk[b + 1] + i0 * ostride,
                            .dst_img_stride = ostride};
        if (kq) {
            chex_q8_args q = {.kind = CHEX_Q8_BNRELU_POOL, .n = cnt, .c = t->cin, .h = hw,
                              .w = hw, .oh = oh, .ow = oh, .src = bblk, .src_img_stride = stride,
                              .pre_scale = t->q.pre_scale, .pre_shift = t->q.pre_shift,
                              .in_inv_scale = t->q.in_inv, .wt = t->q.w, .m = t->cout,
                              .out_scale = t->q.oscale, .out_shift = t->q.oshift,
                              .dst = a.dst, .dst_img_stride = ostride};
            kq->conv(&q, qz, ws->qscratch_bytes, nt);
        } else {
            if (chmax)
                chex_dn_chmax_bnrelu_pool(chmax[chex_dn_qidx_trans(m, b)], bblk, stride, cnt,
                                          t->cin, hw, hw, t->norm.scale, t->norm.shift);
            kr->conv(&a, scratch, ws->scratch_floats, nt);
        }
        t1 = omp_get_wtime();
        ms[CHEX_STAGE_TRANS1 + 2 * b] += (t1 - t0) * 1e3;
        t0 = t1;
    }

    /* Head: relu(norm5), kept for CAM; global average pool; linear. */
    const long hw = (long)m->hw[3] * m->hw[3];
    const float *x = ws->blk[3];
    const float *s5 = m->norm5.scale, *t5 = m->norm5.shift;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (long plane = (long)i0 * FINAL_FEATURES; plane < (long)(i0 + cnt) * FINAL_FEATURES;
         plane++) {
        const int c = (int)(plane % FINAL_FEATURES);
        const float *xp = x + plane * hw;
        float *fp = ws->feat + plane * hw;
        float sum = 0.0f;
        for (long p = 0; p < hw; p++) {
            float v = xp[p] * s5[c] + t5[c];
            v = v > 0.0f ? v : 0.0f;
            fp[p] = v;
            sum += v;
        }
        ws->pooled[plane] = sum / (float)hw;
    }
    linear_forward_naive(ws->logits + (long)i0 * m->ncls, ws->pooled + (long)i0 * FINAL_FEATURES,
                         m->cls_w, m->cls_b, cnt, FINAL_FEATURES, m->ncls);
    ms[CHEX_STAGE_HEAD] += (omp_get_wtime() - t0) * 1e3;
}

static chex_model_err check_fwd(const chex_model *m, const chex_model_ws *ws, const float *in,
                                int n)
{
    if (!m || !ws || !in || ws->m != m || n < 1 || n > ws->max_batch)
        return CHEX_MODEL_ERR_ARG;
    return CHEX_MODEL_OK;
}

chex_model_err chex_model_forward(const chex_model *m, chex_model_ws *ws, const float *in, int n,
                                  float *logits, float *probs)
{
    chex_model_err e = check_fwd(m, ws, in, n);
    if (e)
        return e;
    int nt = omp_get_max_threads();
    if (nt > ws->nthreads)
        nt = ws->nthreads;
    const size_t stem = al16((size_t)INIT_FEATURES * m->stem_hw * m->stem_hw);
    for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
        ws->stage_ms[s] = 0.0;

    /* Batches of at least one image per thread run image-parallel: each
     * thread takes whole images through the whole network alone, so there is
     * no barrier per layer and no shared packing. Leftover images (and a
     * batch of 1) use all threads inside each operator. */
    const int par = nt > 1 ? n / nt * nt : 0;
    if (par) {
        double tms[64][CHEX_MODEL_NSTAGES];
        /* n >= nt here, so teams <= max_batch and <= nthreads: <= nstem. */
        const int teams = nt < ws->nstem ? nt : ws->nstem, share = par / teams;
#pragma omp parallel num_threads(teams)
        {
            const int tid = omp_get_thread_num();
            for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
                tms[tid][s] = 0.0;
            forward_range(m, ws, in, tid * share, share, 1,
                          ws->scratch + (size_t)tid * ws->scratch_floats, ws->tmp + tid * stem,
                          ws->phase + tid * ws->phase_floats,
                          ws->qscratch ? ws->qscratch + (size_t)tid * ws->qscratch_bytes : NULL,
                          ws->bott + (size_t)tid * BOTT_SLOT(m),
                          ws->qbott ? ws->qbott + (size_t)tid * BOTT_SLOT(m) : NULL,
                          BOTT_SLOT(m), NULL, tms[tid]);
        }
        for (int s = 0; s < CHEX_MODEL_NSTAGES; s++) /* the slowest share */
            for (int t = 0; t < teams; t++)
                if (tms[t][s] > ws->stage_ms[s])
                    ws->stage_ms[s] = tms[t][s];
        if (teams * share < n)
            forward_range(m, ws, in, teams * share, n - teams * share, nt, ws->scratch, ws->tmp,
                          ws->phase, ws->qscratch, ws->bott, ws->qbott,
                          ws->nstem * BOTT_SLOT(m), NULL, ws->stage_ms);
    } else {
        forward_range(m, ws, in, 0, n, nt, ws->scratch, ws->tmp, ws->phase, ws->qscratch,
                      ws->bott, ws->qbott, ws->nstem * BOTT_SLOT(m), NULL, ws->stage_ms);
    }
    if (logits)
        memcpy(logits, ws->logits, sizeof(float) * (size_t)n * m->ncls);
    if (probs)
        output_stage(m, probs, ws->logits, n);
    ws->last_n = n;
    return CHEX_MODEL_OK;
}

chex_model_err chex_dn_calibrate(const chex_model *m, chex_model_ws *ws, const float *in, int n,
                                 float *const *chmax)
{
    chex_model_err e = check_fwd(m, ws, in, n);
    if (e || !chmax)
        return e ? e : CHEX_MODEL_ERR_ARG;
    int nt = omp_get_max_threads();
    if (nt > ws->nthreads)
        nt = ws->nthreads;
    for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
        ws->stage_ms[s] = 0.0;
    forward_range(m, ws, in, 0, n, nt, ws->scratch, ws->tmp, ws->phase, NULL, ws->bott, NULL,
                  ws->nstem * BOTT_SLOT(m), chmax, ws->stage_ms);
    ws->last_n = n;
    return CHEX_MODEL_OK;
}

/* ---- reference forward: naive ops in PyTorch's order ---- */

/* PyTorch layout of packed conv weights, in buf. */
static const float *unpacked(float *buf, const float *w, int mrows, int k)
{
    chex_unpack_weights(buf, w, mrows, k);
    return buf;
}

static void bn_relu_ref(float *x, const bn_t *bn, int n, long hw)
{
    batchnorm_forward_naive(x, x, bn->gamma, bn->beta, bn->mean, bn->var, BN_EPS, n, bn->c, hw);
    relu_forward_naive(x, (long)n * bn->c * hw);
}

/* Copies the first c channels of n images (image stride src_stride) into a
 * contiguous (n, c, hw) tensor, or back with dir < 0. */
static void gather_channels(float *dense, float *strided, long strided_stride, int n, int c,
                            long hw, int dir)
{
    for (int i = 0; i < n; i++) {
        float *a = dense + (long)i * c * hw, *b = strided + i * strided_stride;
        if (dir > 0)
            memcpy(a, b, sizeof(float) * (size_t)c * hw);
        else
            memcpy(b, a, sizeof(float) * (size_t)c * hw);
    }
}

chex_model_err chex_model_forward_reference(const chex_model *m, chex_model_ws *ws,
                                            const float *in, int n, float *logits, float *probs)
{
    chex_model_err e = check_fwd(m, ws, in, n);
    if (e)
        return e;
    const int S = m->size, sh = m->stem_hw;
    size_t big = (size_t)n * INIT_FEATURES * sh * sh;
    for (int b = 0; b < NBLOCKS; b++) {
        size_t s = (size_t)n * m->ct[b] * m->hw[b] * m->hw[b];
        if (s > big)
            big = s;
    }
    float *x = malloc(big * sizeof(float)), *y = malloc(big * sizeof(float));
    float *wb = malloc(sizeof(float) * (size_t)FINAL_FEATURES * FINAL_FEATURES / 2);
    if (!x || !y || !wb) {
        free(x);
        free(y);
        free(wb);
        return CHEX_MODEL_ERR_NOMEM;
    }
    double t0 = omp_get_wtime(), t1;

    conv2d_forward_naive(x, in, unpacked(wb, m->conv0, INIT_FEATURES, m->cin * 49), NULL, n,
                         m->cin, S, S, INIT_FEATURES, 7, 7, 2, 3);
    bn_relu_ref(x, &m->norm0, n, (long)sh * sh);
    const int h0 = m->hw[0];
    maxpool2d_forward_naive(y, x, n, INIT_FEATURES, sh, sh, 3, 2, 1);
    gather_channels(y, ws->blk[0], (long)m->ct[0] * h0 * h0, n, INIT_FEATURES, (long)h0 * h0, -1);
    t1 = omp_get_wtime();
    ws->stage_ms[CHEX_STAGE_STEM] = (t1 - t0) * 1e3;
    t0 = t1;

    for (int b = 0; b < NBLOCKS; b++) {
        const int hw = m->hw[b];
        const long px = (long)hw * hw, stride = (long)m->ct[b] * px;
        for (int j = 0; j < BLOCK_LAYERS[b]; j++) {
            const dlayer_t *d = &m->layers[m->first_layer[b] + j];
            gather_channels(x, ws->blk[b], stride, n, d->cin, px, 1); /* torch.cat */
            bn_relu_ref(x, &d->norm1, n, px);
            conv2d_forward_naive(y, x, unpacked(wb, d->conv1, BOTTLENECK, d->cin), NULL, n,
                                 d->cin, hw, hw, BOTTLENECK, 1, 1, 1, 0);
            bn_relu_ref(y, &d->norm2, n, px);
            conv2d_forward_naive(x, y, unpacked(wb, d->conv2, GROWTH, BOTTLENECK * 9), NULL, n,
                                 BOTTLENECK, hw, hw, GROWTH, 3, 3, 1, 1);
            for (int i = 0; i < n; i++)
                memcpy(ws->blk[b] + i * stride + d->cin * px, x + (long)i * GROWTH * px,
                       sizeof(float) * GROWTH * px);
        }
        t1 = omp_get_wtime();
        ws->stage_ms[CHEX_STAGE_BLOCK1 + 2 * b] = (t1 - t0) * 1e3;
        t0 = t1;
        if (b == NBLOCKS - 1)
            break;
        const trans_t *t = &m->trans[b];
        const int oh = m->hw[b + 1];
        gather_channels(x, ws->blk[b], stride, n, t->cin, px, 1);
        bn_relu_ref(x, &t->norm, n, px);
        conv2d_forward_naive(y, x, unpacked(wb, t->conv, t->cout, t->cin), NULL, n, t->cin, hw,
                             hw, t->cout, 1, 1, 1, 0);
        avgpool2d_forward_naive(x, y, n, t->cout, hw, hw, 2);
        gather_channels(x, ws->blk[b + 1], (long)m->ct[b + 1] * oh * oh, n, t->cout,
                        (long)oh * oh, -1);
        t1 = omp_get_wtime();
        ws->stage_ms[CHEX_STAGE_TRANS1 + 2 * b] = (t1 - t0) * 1e3;
        t0 = t1;
    }

    const long hw = (long)m->hw[3] * m->hw[3];
    memcpy(ws->feat, ws->blk[3], sizeof(float) * (size_t)n * FINAL_FEATURES * hw);
    bn_relu_ref(ws->feat, &m->norm5, n, hw);
    global_avgpool_forward_naive(ws->pooled, ws->feat, n, FINAL_FEATURES, hw);
    linear_forward_naive(ws->logits, ws->pooled, m->cls_w, m->cls_b, n, FINAL_FEATURES, m->ncls);
    if (logits)
        memcpy(logits, ws->logits, sizeof(float) * (size_t)n * m->ncls);
    if (probs)
        output_stage(m, probs, ws->logits, n);
    ws->stage_ms[CHEX_STAGE_HEAD] = (omp_get_wtime() - t0) * 1e3;
    ws->last_n = n;
    free(x);
    free(y);
    free(wb);
    return CHEX_MODEL_OK;
}

/* ---- inspection ---- */

const char *chex_model_stage_name(chex_model_stage s)
{
    static const char *const names[CHEX_MODEL_NSTAGES] = {
        "stem", "block1", "trans1", "block2", "trans2", "block3", "trans3", "block4", "head"};
    return (int)s >= 0 && s < CHEX_MODEL_NSTAGES ? names[s] : "?";
}

chex_model_err chex_model_ws_stage(const chex_model_ws *ws, chex_model_stage s,
                                   chex_model_view *out)
{
    if (!ws || !out || ws->last_n < 1 || (int)s < 0 || s >= CHEX_MODEL_NSTAGES)
        return CHEX_MODEL_ERR_ARG;
    const chex_model *m = ws->m;
    out->n = ws->last_n;
    if (s == CHEX_STAGE_HEAD) {
        out->data = ws->feat;
        out->c = FINAL_FEATURES;
        out->h = out->w = m->hw[3];
        out->img_stride = (long)FINAL_FEATURES * m->hw[3] * m->hw[3];
        return CHEX_MODEL_OK;
    }
    /* Stem and transitions are the leading channels of the next block's buffer. */
    int b = s == CHEX_STAGE_STEM ? 0 : (s - CHEX_STAGE_BLOCK1) / 2 + ((s - CHEX_STAGE_BLOCK1) & 1);
    out->data = ws->blk[b];
    out->h = out->w = m->hw[b];
    out->img_stride = (long)m->ct[b] * m->hw[b] * m->hw[b];
    out->c = (s == CHEX_STAGE_STEM || ((s - CHEX_STAGE_BLOCK1) & 1)) ? m->c0[b] : m->ct[b];
    return CHEX_MODEL_OK;
}

const float *chex_model_ws_features(const chex_model_ws *ws, int *c, int *h, int *w)
{
    if (!ws || ws->last_n < 1)
        return NULL;
    if (c)
        *c = FINAL_FEATURES;
    if (h)
        *h = ws->m->hw[3];
    if (w)
        *w = ws->m->hw[3];
    return ws->feat;
}

void chex_model_ws_stage_ms(const chex_model_ws *ws, double ms[CHEX_MODEL_NSTAGES])
{
    for (int i = 0; i < CHEX_MODEL_NSTAGES; i++)
        ms[i] = ws ? ws->stage_ms[i] : 0.0;
}

const char *chex_model_isa(void)
{
    return chex_kernels_get()->name;
}

chex_model_err chex_model_set_isa(const char *name)
{
    return chex_kernels_select(name) ? CHEX_MODEL_ERR_ARG : CHEX_MODEL_OK;
}

/* The classifier of the network for class activation maps (declared in
 * model/cam.h): w is (ncls, nfeat) row-major, b is (ncls). Borrowed, valid
 * while m lives. Any output pointer may be NULL. */
void chex_model_classifier(const chex_model *m, const float **w, const float **b, int *ncls,
                           int *nfeat)
{
    if (w)
        *w = m->cls_w;
    if (b)
        *b = m->cls_b;
    if (ncls)
        *ncls = m->ncls;
    if (nfeat)
        *nfeat = FINAL_FEATURES;
}
