/* model/calib.c - int8 calibration: activation scales per input channel and
 * GPTQ-rounded int8 weights for every quantised conv (model.h, chex
 * `calibrate`).
 *
 * The dense blocks' outputs of a crop hold every input the quantised convs
 * read: conv1 of a layer reads relu(norm1(.)) of the block's first cin
 * channels, a transition the pooled relu(norm(.)) of its block, conv2 the
 * bottleneck relu(norm2(conv1(.))), recomputed here in fp32. So add() keeps
 * those buffers for `keep` crops and finish() builds each conv's input
 * second moments from them, one conv at a time (a 1152 x 1152 H at most).
 *
 * Same file for the same inputs whatever the thread count: the maxima are
 * exact (max does not round), the fp32 forward sums each output in one order
 * (threads split outputs, never a sum), the moments go crop by crop, ROWS
 * pixels at a time, through model/gptq.c's fixed-order arithmetic.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/densenet_int.h"
#include "model/gptq.h"
#include "model/kernels.h"
#include "model/model_msg.h"
#include "model/qkernels.h"

#define ROWS 256 /* rows (pixels) of the input matrix built at a time */

struct chex_model_calib {
    const chex_model *m;
    int keep, kept, added;
    size_t crop_floats;       /* the 4 block outputs of one crop */
    size_t blk_off[NBLOCKS];
    float *crops;             /* keep x crop_floats */
    float *chmax[MAX_QCONV];  /* per input channel, one allocation at chmax[0] */
    float act_max[MAX_QCONV];
    int done;
    int8_t *w[MAX_QCONV];     /* one allocation at w[0] */
    float *w_scale[MAX_QCONV], *act_scale[MAX_QCONV]; /* one at w_scale[0] */
};

chex_model_err chex_model_calib_create(const chex_model *m, int keep, chex_model_calib **out)
{
    if (!m || !out || keep < 1)
        return CHEX_MODEL_ERR_ARG;
    *out = NULL;
    chex_model_calib *c = calloc(1, sizeof *c);
    if (!c)
        return CHEX_MODEL_ERR_NOMEM;
    c->m = m;
    c->keep = keep;
    for (int b = 0; b < NBLOCKS; b++) {
        c->blk_off[b] = c->crop_floats;
        c->crop_floats += (size_t)m->ct[b] * m->hw[b] * m->hw[b];
    }
    size_t nch = 0, nw = 0, nm = 0;
    for (int i = 0; i < MAX_QCONV; i++) {
        const qconv_at_t at = chex_dn_qconv_at(m, i);
        nch += (size_t)at.c;
        nw += (size_t)at.m * at.c * at.taps;
        nm += (size_t)at.m;
    }
    c->crops = malloc(sizeof(float) * c->crop_floats * (size_t)keep);
    c->chmax[0] = calloc(nch, sizeof(float));
    c->w[0] = malloc(nw);
    c->w_scale[0] = malloc(sizeof(float) * (nm + nch));
    if (!c->crops || !c->chmax[0] || !c->w[0] || !c->w_scale[0]) {
        chex_model_calib_free(c);
        return CHEX_MODEL_ERR_NOMEM;
    }
    float *cm = c->chmax[0], *ws = c->w_scale[0];
    int8_t *w = c->w[0];
    for (int i = 0; i < MAX_QCONV; i++) {
        const qconv_at_t at = chex_dn_qconv_at(m, i);
        c->chmax[i] = cm;
        cm += at.c;
        c->w[i] = w;
        w += (size_t)at.m * at.c * at.taps;
        c->w_scale[i] = ws;
        ws += at.m;
        c->act_scale[i] = ws;
        ws += at.c;
    }
    *out = c;
    return CHEX_MODEL_OK;
}

void chex_model_calib_free(chex_model_calib *c)
{
    if (!c)
        return;
    free(c->crops);
    free(c->chmax[0]);
    free(c->w[0]);
    free(c->w_scale[0]);
    free(c);
}

chex_model_err chex_model_calib_add(chex_model_calib *c, chex_model_ws *ws, const float *in,
                                    int n)
{
    if (!c || c->done)
        return CHEX_MODEL_ERR_ARG;
    chex_model_err e = chex_dn_calibrate(c->m, ws, in, n, c->chmax);
    if (e)
        return e;
    const chex_model *m = c->m;
    for (int i = 0; i < n && c->kept < c->keep; i++, c->kept++)
        for (int b = 0; b < NBLOCKS; b++) {
            const size_t per = (size_t)m->ct[b] * m->hw[b] * m->hw[b];
            memcpy(c->crops + c->kept * c->crop_floats + c->blk_off[b], ws->blk[b] + i * per,
                   sizeof(float) * per);
        }
    c->added += n;
    return CHEX_MODEL_OK;
}

/* The bottleneck of dense layer li for one crop's block buffer, in fp32 as
 * the forward computes it: (128, hw+2, hw+2) with a zero border. */
static void bottleneck(float *bott, const chex_model *m, int li, const float *blk, int hw,
                       float *scratch, size_t sf, int nt)
{
    const long pplane = (long)(hw + 2) * (hw + 2);
    memset(bott, 0, sizeof(float) * BOTTLENECK * pplane);
    const chex_conv_args a = chex_dn_conv1_args(m, li, blk, (long)m->layers[li].cin * hw * hw, 1,
                                                bott, BOTTLENECK * pplane);
    chex_kernels_get()->conv(&a, scratch, sf, nt);
}

/* Accumulates into h (kp x kp) the second moments of conv i's input over the
 * kept crops, each input channel ch divided by a[ch]. */
static int moments(double *h, const chex_model_calib *c, int i, const float *a, int kp)
{
    const chex_model *m = c->m;
    const qconv_at_t s = chex_dn_qconv_at(m, i);
    const int ch = s.c, taps = s.taps;
    const int hw = m->hw[s.block];
    const long px = (long)hw * hw;
    const int nt = omp_get_max_threads();
    const size_t sf = chex_conv_scratch_floats(m->kmax);
    const long prow = hw + 2, pplane = prow * prow;
    const int oh = hw / 2;
    float *x = calloc((size_t)ROWS * kp, sizeof(float));
    float *tmp = malloc(sizeof(float) * (size_t)BOTTLENECK * pplane > sizeof(float) * ch * px
                            ? sizeof(float) * (size_t)BOTTLENECK * pplane
                            : sizeof(float) * (size_t)ch * px);
    float *scratch = s.conv == 2 ? aligned_alloc(64, sizeof(float) * sf * nt) : NULL;
    if (!x || !tmp || (s.conv == 2 && !scratch)) {
        free(x);
        free(tmp);
        free(scratch);
        return -1;
    }
    float inv[FINAL_FEATURES];
    for (int k = 0; k < ch; k++)
        inv[k] = 1.0f / a[k];
    for (int r = 0; r < c->kept; r++) {
        const float *blk = c->crops + r * c->crop_floats + c->blk_off[s.block];
        long np;
        if (s.trans >= 0) { /* pooled relu(norm(.)), channel-major in tmp */
            const bn_t *bn = &m->trans[s.trans].norm;
            np = (long)oh * oh;
            for (int k = 0; k < ch; k++)
                for (int y = 0; y < oh; y++)
                    for (int xx = 0; xx < oh; xx++)
                        tmp[k * np + y * oh + xx] = chex_dn_pool_bnrelu(
                            blk + k * px + (long)2 * y * hw + 2 * xx, hw, bn->scale[k],
                            bn->shift[k]);
        } else if (s.conv == 1) {
            const bn_t *bn = &m->layers[s.layer].norm1;
            np = px;
            for (int k = 0; k < ch; k++)
                for (long p = 0; p < px; p++) {
                    const float v = fmaf(blk[k * px + p], bn->scale[k], bn->shift[k]);
                    tmp[k * px + p] = v > 0.0f ? v : 0.0f;
                }
        } else {
            bottleneck(tmp, m, s.layer, blk, hw, scratch, sf, nt);
            np = px;
        }
        for (long p0 = 0; p0 < np; p0 += ROWS) {
            const int nr = np - p0 < ROWS ? (int)(np - p0) : ROWS;
            for (int rr = 0; rr < nr; rr++) {
                float *xr = x + (long)rr * kp;
                const long p = p0 + rr;
                if (taps == 1) {
                    for (int k = 0; k < ch; k++)
                        xr[k] = tmp[k * np + p] * inv[k];
                } else {
                    const long y = p / hw, xx = p % hw;
                    for (int k = 0; k < ch; k++)
                        for (int t = 0; t < 9; t++)
                            xr[k * 9 + t] = tmp[k * pplane + (y + t / 3) * prow + xx + t % 3] *
                                            inv[k];
                }
            }
            chex_gptq_syrk(h, x, nr, kp);
        }
    }
    free(x);
    free(tmp);
    free(scratch);
    return 0;
}

/* Relative damping of H's diagonal: 0.1 measured the same on the torch-made
 * checkpoint (docs/PERFORMANCE.md). */
#define DAMP 0.01

chex_model_err chex_model_calib_finish(chex_model_calib *c, char *msg, size_t msglen)
{
    if (!c || c->done || c->added == 0) {
        chex_model_msg(msg, msglen, "calibration: %s", !c ? "NULL" : c->done ? "already finished"
                                                                   : "no images added");
        return CHEX_MODEL_ERR_ARG;
    }
    const chex_model *m = c->m;
    const int kpmax = (BOTTLENECK * 9 + 63) & ~63;
    double *h = malloc(sizeof(double) * (size_t)kpmax * kpmax);
    float *w = malloc(sizeof(float) * (size_t)FINAL_FEATURES * FINAL_FEATURES / 2 * 2);
    float *wp = malloc(sizeof(float) * (size_t)FINAL_FEATURES * FINAL_FEATURES / 2 * 2);
    chex_model_err e = CHEX_MODEL_OK;
    if (!h || !w || !wp) {
        e = CHEX_MODEL_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < MAX_QCONV; i++) {
        const qconv_at_t s = chex_dn_qconv_at(m, i);
        const int om = s.m, ch = s.c, k = ch * s.taps, kp = (k + 63) & ~63;
        float amax = 0.0f;
        for (int j = 0; j < ch; j++)
            amax = c->chmax[i][j] > amax ? c->chmax[i][j] : amax;
        c->act_max[i] = amax > 0.0f ? amax : 1.0f;
        float *a = c->act_scale[i];
        /* One scale per input channel (its own maximum): measured on the
         * torch-made checkpoint 0.022 worst |dp| against 0.03-0.05 with one
         * per tensor. A channel never seen positive gets the tensor's. */
        for (int j = 0; j < ch; j++)
            a[j] = (c->chmax[i][j] > 0.0f ? c->chmax[i][j] : c->act_max[i]) / 255.0f;
        const float *packed = s.trans >= 0 ? m->trans[s.trans].conv
                              : s.conv == 1 ? m->layers[s.layer].conv1
                                            : m->layers[s.layer].conv2;
        chex_unpack_weights(w, packed, om, k);
        for (int o = 0; o < om; o++)
            for (int j = 0; j < k; j++)
                wp[(long)o * k + j] = w[(long)o * k + j] * a[j / s.taps];
        memset(h, 0, sizeof(double) * (size_t)kp * kp);
        if (moments(h, c, i, a, kp) ||
            chex_gptq_round(c->w[i], c->w_scale[i], wp, om, k, h, kp, DAMP)) {
            e = CHEX_MODEL_ERR_NOMEM;
            goto out;
        }
    }
    c->done = 1;
out:
    if (e == CHEX_MODEL_ERR_NOMEM)
        chex_model_msg(msg, msglen, "calibration: out of memory");
    free(h);
    free(w);
    free(wp);
    return e;
}

chex_model_err chex_model_calib_get(const chex_model_calib *c, int i, chex_model_qconv_calib *out)
{
    if (!c || !out || !c->done || i < 0 || i >= MAX_QCONV)
        return CHEX_MODEL_ERR_ARG;
    const qconv_at_t at = chex_dn_qconv_at(c->m, i);
    *out = (chex_model_qconv_calib){c->act_max[i], at.m, at.c, at.taps, c->act_scale[i], c->w[i],
                                    c->w_scale[i]};
    return CHEX_MODEL_OK;
}

const char *chex_model_calib_path(const chex_model_calib *c)
{
    static const char *const paths[3][3] = {
        {"generic, direct", "generic, winograd F(2x2,3x3)", "generic, winograd F(4x4,3x3)"},
        {"avx2, direct", "avx2, winograd F(2x2,3x3)", "avx2, winograd F(4x4,3x3)"},
        {"avx512, direct", "avx512, winograd F(2x2,3x3)", "avx512, winograd F(4x4,3x3)"}};
    const chex_kernels *kr = chex_kernels_get();
    const int isa = kr == &chex_kernels_avx512 ? 2 : kr == &chex_kernels_avx2 ? 1 : 0;
    int wino = 0; /* the tile the forward's dense 3x3 convs use where any does */
    for (int li = 0; c && li < MAX_LAYERS && !wino; li++) {
        const int f = c->m->layers[li].wino_f;
        wino = f == 4 && kr->wino4 ? 2 : f == 2 && kr->wino ? 1 : 0;
    }
    return paths[isa][wino];
}
