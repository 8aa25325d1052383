/* model/quant.c - the int8 side of the network: which convolutions are
 * quantised, their calibration (metadata int8_act_max), and building their
 * s8 weights and requantisation scales from the fp32 model at start-up.
 *
 * Per dense layer: conv1 reads u8 relu(norm1(x)) (scale sa = amax/255) and
 * writes u8 relu(norm2(conv1)) straight into the grouped bottleneck with
 * conv2's input scale sb, so norm2 and the change of scale are folded into
 * its requantisation: q = round(acc * sa*sw[o]*norm2.scale[o]/sb +
 * norm2.shift[o]/sb). conv2 and the transitions write fp32 (acc * sa*sw[o]).
 * Each output also loses the average shift its weights' rounding causes
 * (bias correction, from the BN statistics: no data needed at start-up).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/densenet_int.h"
#include "model/kernels.h"
#include "model/model_msg.h"
#include "model/qkernels.h"

static int block_of(const chex_model *m, int li)
{
    int b = 0;
    while (b + 1 < NBLOCKS && li >= m->first_layer[b + 1])
        b++;
    return b;
}

int chex_dn_qidx_layer(const chex_model *m, int li)
{
    return 2 * li + block_of(m, li);
}

int chex_dn_qidx_trans(const chex_model *m, int b)
{
    return 2 * m->first_layer[b + 1] + b;
}

int chex_model_qconv_count(const chex_model *m)
{
    (void)m;
    return MAX_QCONV;
}

const char *chex_model_qconv_name(const chex_model *m, int i, char *buf, size_t len)
{
    if (!m || i < 0 || i >= MAX_QCONV || !buf || len == 0)
        return NULL;
    const qconv_at_t at = chex_dn_qconv_at(m, i);
    if (at.trans >= 0)
        snprintf(buf, len, "features.transition%d.conv.weight", at.trans + 1);
    else
        snprintf(buf, len, "features.denseblock%d.denselayer%d.conv%d.weight", at.block + 1,
                 at.layer - m->first_layer[at.block] + 1, at.conv);
    return buf;
}

int chex_model_has_int8_calibration(const chex_model *m)
{
    return m && m->has_act_max;
}

chex_model_err chex_dn_parse_act_max(chex_model *m, const chex_st_file *f, char *msg,
                                     size_t msglen)
{
    const char *v = chex_st_meta_get(f, CHEX_MODEL_INT8_KEY);
    m->has_act_max = 0;
    if (!v)
        return CHEX_MODEL_OK;
    json_error_t jerr;
    json_t *o = json_loads(v, 0, &jerr);
    if (!o || !json_is_object(o)) {
        chex_model_msg(msg, msglen, "metadata %s: not a JSON object of conv name -> number",
                CHEX_MODEL_INT8_KEY);
        json_decref(o);
        return CHEX_MODEL_ERR_METADATA;
    }
    char name[96];
    for (int i = 0; i < MAX_QCONV; i++) {
        chex_model_qconv_name(m, i, name, sizeof name);
        json_t *x = json_object_get(o, name);
        double d = x && json_is_number(x) ? json_number_value(x) : NAN;
        if (!x || !(d > 0.0) || !isfinite(d) || d > 1e30) {
            chex_model_msg(msg, msglen, "metadata %s: %s %s", CHEX_MODEL_INT8_KEY, name,
                    x ? "is not a positive finite number" : "is missing");
            json_decref(o);
            return CHEX_MODEL_ERR_METADATA;
        }
        m->act_max[i] = (float)d;
    }
    if (json_object_size(o) != MAX_QCONV) {
        const char *k;
        json_t *x;
        json_object_foreach(o, k, x) {
            int i;
            for (i = 0; i < MAX_QCONV; i++)
                if (!strcmp(chex_model_qconv_name(m, i, name, sizeof name), k))
                    break;
            if (i == MAX_QCONV) {
                chex_model_msg(msg, msglen, "metadata %s: '%.100s' is not a quantised conv of "
                        "densenet121", CHEX_MODEL_INT8_KEY, k);
                json_decref(o);
                return CHEX_MODEL_ERR_METADATA;
            }
        }
    }
    json_decref(o);
    m->has_act_max = 1;
    return CHEX_MODEL_OK;
}

/* ---- int8 weights stored in the file (chex calibrate) ---- */

static const char *const QSUFFIX[3] = {".int8_weight", ".int8_scale", ".int8_act_scale"};

int chex_model_is_int8_tensor(const char *name)
{
    if (!name)
        return 0;
    const size_t n = strlen(name);
    for (int s = 0; s < 3; s++) {
        const size_t l = strlen(QSUFFIX[s]);
        if (n > l && !strcmp(name + n - l, QSUFFIX[s]))
            return 1;
    }
    return 0;
}

qconv_at_t chex_dn_qconv_at(const chex_model *m, int i)
{
    for (int b = 0; b < NBLOCKS - 1; b++)
        if (i == chex_dn_qidx_trans(m, b))
            return (qconv_at_t){-1, 0, b, b, m->trans[b].cout, m->trans[b].cin, 1};
    for (int li = 0; li < MAX_LAYERS; li++) {
        const int q = chex_dn_qidx_layer(m, li);
        if (i == q)
            return (qconv_at_t){li, 1, -1, block_of(m, li), BOTTLENECK, m->layers[li].cin, 1};
        if (i == q + 1)
            return (qconv_at_t){li, 2, -1, block_of(m, li), GROWTH, BOTTLENECK, 9};
    }
    return (qconv_at_t){-1, 0, -1, 0, 0, 0, 0};
}

/* The weight's name without ".weight", then the suffix. */
const char *chex_model_int8_tensor_name(const chex_model *m, int i, int kind, char *buf,
                                        size_t len)
{
    char w[96];
    if (kind < 0 || kind > 2 || !chex_model_qconv_name(m, i, w, sizeof w) || !buf || !len)
        return NULL;
    w[strlen(w) - strlen(".weight")] = '\0';
    snprintf(buf, len, "%s%s", w, QSUFFIX[kind]);
    return buf;
}

static float rd_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

chex_model_err chex_dn_parse_qfile(chex_model *m, const chex_st_file *f, char *msg,
                                   size_t msglen)
{
    int nq = 0;
    m->has_qfile = 0;
    for (int i = 0; i < f->ntensors; i++)
        nq += chex_model_is_int8_tensor(f->tensors[i].name);
    if (nq == 0)
        return CHEX_MODEL_OK;
    char name[128];
    if (!m->has_act_max) {
        for (int t = 0; t < f->ntensors; t++)
            if (chex_model_is_int8_tensor(f->tensors[t].name)) {
                chex_model_msg(msg, msglen, "tensor %.100s: int8 weights without the calibration "
                                            "metadata %s", f->tensors[t].name,
                               CHEX_MODEL_INT8_KEY);
                break;
            }
        return CHEX_MODEL_ERR_METADATA;
    }
    for (int i = 0; i < MAX_QCONV; i++) {
        const qconv_at_t at = chex_dn_qconv_at(m, i);
        const int om = at.m, c = at.c, taps = at.taps;
        const int kk = taps == 9 ? 3 : 1;
        const int64_t want[3][4] = {{om, c, kk, kk}, {om}, {c}};
        const int wnd[3] = {4, 1, 1};
        const chex_st_tensor *t[3];
        for (int s = 0; s < 3; s++) {
            chex_model_int8_tensor_name(m, i, s, name, sizeof name);
            t[s] = chex_st_find(f, name);
            if (!t[s]) {
                chex_model_msg(msg, msglen, "tensor %s: missing (a file with int8 weights needs "
                                            "all of them)", name);
                return CHEX_MODEL_ERR_MISSING;
            }
            const chex_st_dtype dt = s == 0 ? CHEX_ST_I8 : CHEX_ST_F32;
            if (t[s]->dtype != dt) {
                chex_model_msg(msg, msglen, "tensor %s: dtype must be %s", name,
                               s == 0 ? "I8" : "F32");
                return CHEX_MODEL_ERR_DTYPE;
            }
            int same = t[s]->ndim == wnd[s];
            for (int d = 0; same && d < wnd[s]; d++)
                same = t[s]->shape[d] == want[s][d];
            if (!same) {
                if (s == 0)
                    chex_model_msg(msg, msglen, "tensor %s: shape must be [%d, %d, %d, %d]", name,
                                   om, c, kk, kk);
                else
                    chex_model_msg(msg, msglen, "tensor %s: shape must be [%d]", name,
                                   s == 1 ? om : c);
                return CHEX_MODEL_ERR_SHAPE;
            }
            if (s > 0) {
                const uint8_t *p = f->data + t[s]->begin;
                for (int64_t j = 0; j < t[s]->shape[0]; j++) {
                    const float v = rd_f32(p + 4 * j);
                    if (!(v > 0.0f) || !isfinite(v)) {
                        chex_model_msg(msg, msglen, "tensor %s: element %lld is not a positive "
                                                    "finite scale", name, (long long)j);
                        return CHEX_MODEL_ERR_METADATA;
                    }
                }
            }
        }
        const int8_t *w = (const int8_t *)(f->data + t[0]->begin);
        for (long j = 0; j < (long)om * c * taps; j++)
            if (w[j] < -127) {
                chex_model_int8_tensor_name(m, i, 0, name, sizeof name);
                chex_model_msg(msg, msglen, "tensor %s: element %ld is -128 (int8 weights are "
                                            "symmetric, -127..127)", name, j);
                return CHEX_MODEL_ERR_METADATA;
            }
        m->qfile[i] = (qfile_t){w, f->data + t[1]->begin, f->data + t[2]->begin};
    }
    /* All 3 per conv were found, so more names than that means one belongs
     * to no quantised conv: name it. */
    for (int t = 0; t < f->ntensors && nq != 3 * MAX_QCONV; t++) {
        if (!chex_model_is_int8_tensor(f->tensors[t].name))
            continue;
        int found = 0;
        for (int i = 0; i < MAX_QCONV && !found; i++)
            for (int s = 0; s < 3 && !found; s++)
                found = !strcmp(chex_model_int8_tensor_name(m, i, s, name, sizeof name),
                                f->tensors[t].name);
        if (!found) {
            chex_model_msg(msg, msglen, "tensor %.100s: unexpected (not an int8 tensor of a "
                                        "quantised densenet121 conv)", f->tensors[t].name);
            return CHEX_MODEL_ERR_UNEXPECTED;
        }
    }
    m->has_qfile = 1;
    return CHEX_MODEL_OK;
}

/* ---- building the int8 weights ---- */

typedef struct {
    qconv_t *q;
    const float *w; /* packed fp32 (m, c*taps) */
    int m, c, taps;
    float sa;       /* input scale */
    const bn_t *post; /* BN + ReLU after it, or NULL */
    float so;       /* u8 output scale (post != NULL) */
    const bn_t *pre;  /* the BN + ReLU its input comes out of */
    const qfile_t *qf;    /* stored int8 weights, or NULL: round the fp32 ones */
    const qfile_t *qnext; /* with qf and post: the next conv's (input scales) */
    int fold_pre;         /* with qf: fold the input scales into pre's arrays */
} qjob;

static size_t al64(size_t x)
{
    return (x + 63) & ~(size_t)63;
}

static size_t job_bytes(const qjob *j)
{
    return al64((size_t)j->m * j->c * j->taps) + 2 * al64(sizeof(float) * (size_t)j->m) +
           (j->fold_pre ? 2 * al64(sizeof(float) * (size_t)j->c) : 0);
}

/* E[relu(y)] for y ~ N(beta, gamma^2): what the BN before a conv makes of
 * inputs that match its running statistics. */
static double relu_mean(const bn_t *bn, int c)
{
    const double g = fabs((double)bn->gamma[c]), b = bn->beta[c];
    return g > 0.0 ? b * 0.5 * erfc(-b / (g * M_SQRT2)) + g * exp(-0.5 * b * b / (g * g)) /
                                                             sqrt(2.0 * M_PI)
                   : (b > 0.0 ? b : 0.0);
}

static void build(const qjob *j, uint8_t **cur, float *wtmp, int8_t *qtmp, float *sw)
{
    const int k = j->c * j->taps;
    qconv_t *q = j->q;
    q->w = (int8_t *)*cur;
    *cur += al64((size_t)j->m * k);
    q->oscale = (float *)*cur;
    *cur += al64(sizeof(float) * (size_t)j->m);
    q->oshift = (float *)*cur;
    *cur += al64(sizeof(float) * (size_t)j->m);
    chex_unpack_weights(wtmp, j->w, j->m, k);
    q->pre_scale = j->pre->scale;
    q->pre_shift = j->pre->shift;
    if (j->qf) {
        /* GPTQ-rounded weights from calibration, in the domain of per-channel
         * input scales: u8 x_c / a_c meets w * a_c. */
        memcpy(qtmp, j->qf->w, (size_t)j->m * k);
        for (int o = 0; o < j->m; o++)
            sw[o] = rd_f32(j->qf->wscale + 4 * o);
        q->in_inv = 1.0f;
        if (j->fold_pre) {
            float *ps = (float *)*cur;
            *cur += al64(sizeof(float) * (size_t)j->c);
            float *pt = (float *)*cur;
            *cur += al64(sizeof(float) * (size_t)j->c);
            for (int c = 0; c < j->c; c++) {
                const float a = rd_f32(j->qf->act_scale + 4 * c);
                ps[c] = j->pre->scale[c] / a;
                pt[c] = j->pre->shift[c] / a;
            }
            q->pre_scale = ps;
            q->pre_shift = pt;
        }
    } else {
        chex_q8_quantize_weights(qtmp, sw, wtmp, j->m, k);
        q->in_inv = 1.0f / j->sa;
    }
    chex_q8_pack_weights(q->w, qtmp, j->m, j->c, j->taps);
    for (int o = 0; o < j->m; o++) {
        /* Bias correction (data-free) of weights rounded to nearest: their
         * rounding shifts row o's output by sum_k (wq - w) * E[x_k] on
         * average. Not for GPTQ's weights: their rounding already minimised
         * the output error over real inputs (H is not centred, so the mean
         * is in it), and E[x] from the BN statistics can be far off the real
         * inputs' (the demo weights': worst |dp| 0.0017 without, 0.070 with). */
        double corr = 0.0;
        for (int c = 0; c < j->c && !j->qf; c++) {
            const double mu = relu_mean(j->pre, c);
            for (int t = 0; t < j->taps; t++) {
                const long i = (long)o * k + (long)c * j->taps + t;
                corr += ((double)qtmp[i] * sw[o] - wtmp[i]) * mu;
            }
        }
        const float s = j->qf ? sw[o] : j->sa * sw[o];
        if (j->post) {
            const float so = j->qf ? rd_f32(j->qnext->act_scale + 4 * o) : j->so;
            q->oscale[o] = s * j->post->scale[o] / so;
            q->oshift[o] = (float)((j->post->shift[o] - j->post->scale[o] * corr) / so);
        } else {
            q->oscale[o] = s;
            q->oshift[o] = (float)-corr;
        }
    }
}

chex_model_err chex_model_quantize(chex_model *m, char *msg, size_t msglen)
{
    if (!m) {
        chex_model_msg(msg, msglen, "chex_model_quantize: NULL model");
        return CHEX_MODEL_ERR_ARG;
    }
    if (m->qarena)
        return CHEX_MODEL_OK;
    if (!m->has_act_max) {
        chex_model_msg(msg, msglen, "metadata %s: missing, so this weights file has no int8 calibration "
                "(make one with tools/calibrate_int8.sh)", CHEX_MODEL_INT8_KEY);
        return CHEX_MODEL_ERR_METADATA;
    }
    static qjob jobs[MAX_QCONV];
    int nj = 0;
    const qfile_t *qf = m->has_qfile ? m->qfile : NULL;
    for (int li = 0; li < MAX_LAYERS; li++) {
        dlayer_t *d = &m->layers[li];
        const int qi = chex_dn_qidx_layer(m, li);
        const float sa = m->act_max[qi] / 255.0f, sb = m->act_max[qi + 1] / 255.0f;
        jobs[nj++] = (qjob){&d->q1, d->conv1, BOTTLENECK, d->cin, 1, sa, &d->norm2, sb, &d->norm1,
                            qf ? &qf[qi] : NULL, qf ? &qf[qi + 1] : NULL, qf != NULL};
        jobs[nj++] = (qjob){&d->q2, d->conv2, GROWTH, BOTTLENECK, 9, sb, NULL, 0.0f, &d->norm2,
                            qf ? &qf[qi + 1] : NULL, NULL, 0};
    }
    for (int b = 0; b < NBLOCKS - 1; b++) {
        trans_t *t = &m->trans[b];
        const int qi = chex_dn_qidx_trans(m, b);
        const float sa = m->act_max[qi] / 255.0f;
        jobs[nj++] = (qjob){&t->q, t->conv, t->cout, t->cin, 1, sa, NULL, 0.0f, &t->norm,
                            qf ? &qf[qi] : NULL, NULL, qf != NULL};
    }
    size_t bytes = 0, kmax = 0, mmax = 0;
    for (int i = 0; i < nj; i++) {
        const size_t mk = (size_t)jobs[i].m * jobs[i].c * jobs[i].taps;
        bytes += job_bytes(&jobs[i]);
        kmax = mk > kmax ? mk : kmax;
        mmax = (size_t)jobs[i].m > mmax ? (size_t)jobs[i].m : mmax;
    }
    uint8_t *arena = aligned_alloc(64, bytes);
    float *wtmp = malloc(sizeof(float) * kmax);
    int8_t *qtmp = malloc(kmax);
    float *sw = malloc(sizeof(float) * mmax);
    if (!arena || !wtmp || !qtmp || !sw) {
        free(arena);
        free(wtmp);
        free(qtmp);
        free(sw);
        chex_model_msg(msg, msglen, "out of memory for %zu MB of int8 weights", bytes >> 20);
        return CHEX_MODEL_ERR_NOMEM;
    }
    /* A quantised model serves int8, which has no Winograd path: hand those
     * weights' pages back (a later fp32 forward on m runs the direct 3x3),
     * before building, so that the peak RSS never holds both. */
    for (int li = 0; li < MAX_LAYERS; li++) {
        m->layers[li].wino = NULL;
        m->layers[li].wino_f = 0;
    }
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)m->wino_base + pg - 1) & ~(pg - 1);
    const uintptr_t hi = ((uintptr_t)(m->wino_base + m->wino_len)) & ~(pg - 1);
    if (m->wino_len && hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
    uint8_t *cur = arena;
    for (int i = 0; i < nj; i++)
        build(&jobs[i], &cur, wtmp, qtmp, sw);
    free(wtmp);
    free(qtmp);
    free(sw);
    m->qarena = arena;
    m->qarena_bytes = bytes;
    if (m->fmap) { /* the stored int8 weights are packed now */
        munmap(m->fmap, m->flen);
        m->fmap = NULL;
        m->has_qfile = 0;
        memset(m->qfile, 0, sizeof m->qfile);
    }
    return CHEX_MODEL_OK;
}

/* ---- calibration statistics ---- */

void chex_dn_chmax(float *chmax, const float *x, long img_stride, int n, int c, long plane)
{
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const float *p = x + i * img_stride + ch * plane;
            float mx = chmax[ch];
#pragma omp simd reduction(max : mx)
            for (long j = 0; j < plane; j++)
                mx = p[j] > mx ? p[j] : mx;
            chmax[ch] = mx;
        }
}

void chex_dn_chmax_bnrelu(float *chmax, const float *x, long img_stride, int n, int c, long hw,
                          const float *s, const float *t)
{
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const float *p = x + i * img_stride + ch * hw;
            float cm = chmax[ch];
#pragma omp simd reduction(max : cm)
            for (long j = 0; j < hw; j++) {
                const float v = fmaf(p[j], s[ch], t[ch]);
                cm = v > cm ? v : cm;
            }
            chmax[ch] = cm;
        }
}

void chex_dn_chmax_bnrelu_pool(float *chmax, const float *x, long img_stride, int n, int c, int h,
                               int w, const float *s, const float *t)
{
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const float *p = x + i * img_stride + (long)ch * h * w;
            float mx = chmax[ch];
            for (int y = 0; y + 1 < h; y += 2)
                for (int xx = 0; xx + 1 < w; xx += 2) {
                    const float a = chex_dn_pool_bnrelu(p + (long)y * w + xx, w, s[ch], t[ch]);
                    mx = a > mx ? a : mx;
                }
            chmax[ch] = mx;
        }
}
