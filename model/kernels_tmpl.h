/* model/kernels_tmpl.h - the convolution-as-GEMM driver, compiled once per
 * instruction set: kernels.c, kernels_avx2.c and kernels_avx512.c each define
 *   KT_MR, KT_NR        micro-tile rows (output channels) and columns (pixels)
 *   KT_FN(x)            a per-ISA name for x
 *   kt_micro(...)       the MR x NR micro-kernel (see below)
 * and then include this file, so the packing loops below are also compiled
 * with that ISA's flags. Not a public header.
 *
 * kt_micro(k, a, bp, c, ldc, nc, ps, pt, relu):
 *   acc[r][j] = sum_k a[k*8 + r] * bp[k*KT_NR + j]        r < KT_MR, j < KT_NR
 *   (a: weights pre-packed by chex_pack_weights, at row r0 of an 8-row panel)
 * Optionally (KT_HAVE_DIRECT) kt_micro_direct(k, a, base, boff, c, ...): the
 * same with B row k at base + boff[k], for the padded 3x3 read in place.
 * Optionally (KT_HAVE_POOL_RUN) kt_pool_run(x, w, s, t, len, d): d[i] =
 * avgpool2x2 of relu(x*s + t) at input columns 2i, 2i+1 of rows x and x + w,
 * i < len, summed in the order of the generic packing (same bits).
 *   c[r*ldc + j] = relu?(acc*ps[r] + pt[r])               for j < nc only
 *   (ps NULL: scale 1; pt NULL: shift 0).
 */
#include <omp.h>

#include "model/gemm_sched.h"

/* Columns of one image in GEMM space: oh x ow, or oh x src_row for the
 * padded 3x3 kind (whose extra columns are dropped on the way out). */
static long KT_FN(vwidth)(const chex_conv_args *a)
{
    return a->kind == CHEX_PACK_CONV3X3_PADDED || a->kind == CHEX_PACK_SHIFTED ? a->src_row
                                                                               : a->ow;
}

/* Offset of B row q from the image's base for the shifted kinds. */
static long KT_FN(rowoff)(const chex_conv_args *a, int q)
{
    if (a->kind == CHEX_PACK_SHIFTED)
        return a->koff[q];
    return (q / 9) * a->src_plane + (q % 9 / 3) * a->src_row + q % 3;
}

static void KT_FN(pack_padded)(const chex_conv_args *a, int k, long j0, long ncols, float *bp)
{
    const long per = (long)a->oh * a->src_row;
    const long img0 = j0 / per, jl0 = j0 % per;
    if (jl0 + KT_NR <= per) {
        const float *base = a->src + img0 * a->src_img_stride + jl0;
        for (int q = 0; q < k; q++) {
            const float *s = base + KT_FN(rowoff)(a, q);
            float *d = bp + (long)q * KT_NR;
#pragma omp simd
            for (int j = 0; j < KT_NR; j++)
                d[j] = s[j];
        }
        return;
    }
    /* Panel straddles images or runs past the last column: one contiguous
     * run per image, zeros past the last column. */
    const int nc = ncols - j0 < KT_NR ? (int)(ncols - j0) : KT_NR;
    int nrun = 0, rj[KT_NR], rlen[KT_NR];
    long roff[KT_NR];
    for (int j = 0; j < nc;) {
        const long img = (j0 + j) / per, jl = (j0 + j) % per;
        const int len = per - jl < nc - j ? (int)(per - jl) : nc - j;
        rj[nrun] = j, rlen[nrun] = len, roff[nrun++] = img * a->src_img_stride + jl;
        j += len;
    }
    for (int q = 0; q < k; q++) {
        const float *s = a->src + KT_FN(rowoff)(a, q);
        float *d = bp + (long)q * KT_NR;
        for (int r = 0; r < nrun; r++) {
            const float *x = s + roff[r];
            float *dr = d + rj[r];
#pragma omp simd
            for (int j = 0; j < rlen[r]; j++)
                dr[j] = x[j];
        }
        for (int j = nc; j < KT_NR; j++)
            d[j] = 0.0f;
    }
}

/* Gathers the B panel of columns [j0, j0+KT_NR) (k rows of KT_NR floats). */
static void KT_FN(pack)(const chex_conv_args *a, long j0, long ncols, float *bp)
{
    if (a->kind == CHEX_PACK_CONV3X3_PADDED || a->kind == CHEX_PACK_SHIFTED) {
        KT_FN(pack_padded)(a, a->c * a->kh * a->kw, j0, ncols, bp);
        return;
    }
    const long ohw = (long)a->oh * a->ow, hw = (long)a->h * a->w;
    const int nc = ncols - j0 < KT_NR ? (int)(ncols - j0) : KT_NR;
    const long img0 = j0 / ohw, pix0 = j0 % ohw;

    if (a->kind == CHEX_PACK_BNRELU_1X1 && pix0 + KT_NR <= ohw) {
        /* Whole panel inside one image: rows are contiguous runs. */
        const float *base = a->src + img0 * a->src_img_stride + pix0;
        for (int k = 0; k < a->c; k++) {
            const float s = a->pre_scale[k], t = a->pre_shift[k];
            const float *r = base + k * hw;
            float *d = bp + (long)k * KT_NR;
            #pragma omp simd
            for (int j = 0; j < KT_NR; j++) {
                float v = r[j] * s + t;
                d[j] = v > 0.0f ? v : 0.0f;
            }
        }
        return;
    }
    if (a->kind == CHEX_PACK_BNRELU_1X1) {
        /* A short last panel or one straddling images (14x14 and 7x7 at
         * small batches): one contiguous run per image, the rest zero. */
        int nrun = 0, rj[2 * KT_NR], rlen[2 * KT_NR];
        long roff[2 * KT_NR];
        for (int j = 0; j < nc;) {
            const long img = (j0 + j) / ohw, pix = (j0 + j) % ohw;
            const int len = ohw - pix < nc - j ? (int)(ohw - pix) : nc - j;
            rj[nrun] = j, rlen[nrun] = len, roff[nrun++] = img * a->src_img_stride + pix;
            j += len;
        }
        for (int k = 0; k < a->c; k++) {
            const float s = a->pre_scale[k], t = a->pre_shift[k];
            float *d = bp + (long)k * KT_NR;
            for (int r = 0; r < nrun; r++) {
                const float *x = a->src + roff[r] + k * hw;
                float *dr = d + rj[r];
                #pragma omp simd
                for (int j = 0; j < rlen[r]; j++) {
                    float v = x[j] * s + t;
                    dr[j] = v > 0.0f ? v : 0.0f;
                }
            }
            for (int j = nc; j < KT_NR; j++)
                d[j] = 0.0f;
        }
        return;
    }

#ifdef KT_HAVE_POOL_RUN
    if (a->kind == CHEX_PACK_BNRELU_POOL) {
        /* Runs of the panel's pixels along one output row: each is a
         * contiguous stretch of two input rows, pooled by vector code. */
        int nrun = 0, rj[KT_NR], rlen[KT_NR];
        long roff[KT_NR];
        for (int j = 0; j < nc;) {
            const long img = (j0 + j) / ohw, pix = (j0 + j) % ohw;
            const int oy = (int)(pix / a->ow), ox = (int)(pix % a->ow);
            const int len = a->ow - ox < nc - j ? a->ow - ox : nc - j;
            rj[nrun] = j, rlen[nrun] = len;
            roff[nrun++] = img * a->src_img_stride + (long)(2 * oy) * a->w + 2 * ox;
            j += len;
        }
        for (int c = 0; c < a->c; c++) {
            const float *base = a->src + c * hw;
            float *d = bp + (long)c * KT_NR;
            for (int r = 0; r < nrun; r++)
                kt_pool_run(base + roff[r], a->w, a->pre_scale[c], a->pre_shift[c], rlen[r],
                            d + rj[r]);
            for (int j = nc; j < KT_NR; j++)
                d[j] = 0.0f;
        }
        return;
    }
#endif
    const int taps = a->kind == CHEX_PACK_CONV ? a->kh * a->kw : 1;
    long off[49 * KT_NR];
    for (int j = 0; j < KT_NR; j++) {
        long img = (j0 + j) / ohw, pix = (j0 + j) % ohw;
        int oy = (int)(pix / a->ow), ox = (int)(pix % a->ow);
        long ibase = img * a->src_img_stride;
        for (int t = 0; t < taps; t++) {
            long o = -1;
            if (j < nc) {
                if (a->kind == CHEX_PACK_CONV) {
                    int iy = oy * a->stride - a->pad + t / a->kw;
                    int ix = ox * a->stride - a->pad + t % a->kw;
                    if (iy >= 0 && iy < a->h && ix >= 0 && ix < a->w)
                        o = ibase + (long)iy * a->w + ix;
                } else if (a->kind == CHEX_PACK_BNRELU_1X1) {
                    o = ibase + pix;
                } else {
                    o = ibase + (long)(2 * oy) * a->w + 2 * ox;
                }
            }
            off[t * KT_NR + j] = o;
        }
    }

    for (int c = 0; c < a->c; c++) {
        const float *base = a->src + c * hw;
        if (a->kind == CHEX_PACK_CONV) {
            for (int t = 0; t < taps; t++) {
                float *d = bp + ((long)c * taps + t) * KT_NR;
                const long *o = off + t * KT_NR;
                #pragma omp simd
                for (int j = 0; j < KT_NR; j++)
                    d[j] = o[j] >= 0 ? base[o[j]] : 0.0f;
            }
        } else if (a->kind == CHEX_PACK_BNRELU_1X1) {
            const float s = a->pre_scale[c], t = a->pre_shift[c];
            float *d = bp + (long)c * KT_NR;
            #pragma omp simd
            for (int j = 0; j < KT_NR; j++) {
                float v = off[j] >= 0 ? base[off[j]] * s + t : 0.0f;
                d[j] = v > 0.0f ? v : 0.0f;
            }
        } else {
            const float s = a->pre_scale[c], t = a->pre_shift[c];
            const long w = a->w;
            float *d = bp + (long)c * KT_NR;
            #pragma omp simd
            for (int j = 0; j < KT_NR; j++) {
                if (off[j] < 0) {
                    d[j] = 0.0f;
                    continue;
                }
                const float *x = base + off[j];
                float v0 = x[0] * s + t, v1 = x[1] * s + t, v2 = x[w] * s + t,
                      v3 = x[w + 1] * s + t;
                v0 = v0 > 0.0f ? v0 : 0.0f;
                v1 = v1 > 0.0f ? v1 : 0.0f;
                v2 = v2 > 0.0f ? v2 : 0.0f;
                v3 = v3 > 0.0f ? v3 : 0.0f;
                d[j] = (v0 + v1 + v2 + v3) * 0.25f;
            }
        }
    }
}

/* Writes the valid columns of an MR x NR tile (columns j0..j0+nc of GEMM
 * space) to their places in dst. */
static void KT_FN(scatter)(const chex_conv_args *a, const float *tile, long j0, int nc, int m0,
                           long per, long vw, long dplane, long drow)
{
    for (int j = 0; j < nc;) {
        const long img = (j0 + j) / per, jl = (j0 + j) % per;
        const long oy = jl / vw, ox = jl % vw;
        int run = (int)(vw - ox) < nc - j ? (int)(vw - ox) : nc - j;
        int valid = ox < a->ow ? (int)(a->ow - ox < run ? a->ow - ox : run) : 0;
        float *c = a->dst + img * a->dst_img_stride + m0 * dplane + a->dst_off + oy * drow + ox;
        for (int r = 0; r < KT_MR; r++)
            #pragma omp simd
            for (int q = 0; q < valid; q++)
                c[r * dplane + q] = tile[r * KT_NR + j + q];
        j += run;
    }
}

/* Panels of B packed together: enough to keep about 256 KB of them in L2. */
#define KT_BUDGET_FLOATS (64 * 1024)

#define KT_DIRECT_MAXK 2048

typedef struct {
    const chex_conv_args *a;
    long ohw, vw, per, ncols, dplane, drow, panels, nb;
    int dense, k, mp_total, msplit;
    const int *boff; /* padded 3x3 read in place: offset of B row q, or NULL */
} KT_FN(ctx);

/* One task: output channels chunk ms of the panel block blk. bp holds the
 * block's packed panels when *last == blk. */
static void KT_FN(task)(const KT_FN(ctx) *x, long task, float *bp, long *last)
{
    const chex_conv_args *a = x->a;
    const int k = x->k;
    float *tile = bp + (size_t)x->nb * k * KT_NR;
    const long blk = task / x->msplit;
    const int ms = (int)(task % x->msplit);
    const long p0 = blk * x->nb, p1 = p0 + x->nb < x->panels ? p0 + x->nb : x->panels;
    /* Panels inside one image are read in place when the ISA can (the
     * padded source has slack for the last one's spare columns); the
     * others are packed. */
#define KT_IN_PLACE(p) (x->boff && ((p) * KT_NR) / x->per == ((p) * KT_NR + KT_NR - 1) / x->per)
    if (blk != *last) {
        for (long p = p0; p < p1; p++)
            if (!KT_IN_PLACE(p))
                KT_FN(pack)(a, p * KT_NR, x->ncols, bp + (p - p0) * k * KT_NR);
        *last = blk;
    }
    const int mp0 = ms * x->mp_total / x->msplit, mp1 = (ms + 1) * x->mp_total / x->msplit;
    for (int mp = mp0; mp < mp1; mp++) {
        const int m0 = mp * KT_MR;
        const float *ps = a->post_scale ? a->post_scale + m0 : NULL;
        const float *pt = a->post_shift ? a->post_shift + m0 : NULL;
        const float *wr = a->wt + (long)(m0 / 8) * 8 * k + m0 % 8;
        for (long p = p0; p < p1; p++) {
            const long j0 = p * KT_NR;
            const float *b = bp + (p - p0) * k * KT_NR;
            const int nc = x->ncols - j0 < KT_NR ? (int)(x->ncols - j0) : KT_NR;
            const long img0 = j0 / x->per, pix0 = j0 % x->per;
#ifdef KT_HAVE_DIRECT
            if (KT_IN_PLACE(p)) {
                kt_micro_direct(k, wr, a->src + img0 * a->src_img_stride + pix0, x->boff, tile,
                                KT_NR, nc, ps, pt, a->post_relu);
                KT_FN(scatter)(a, tile, j0, nc, m0, x->per, x->vw, x->dplane, x->drow);
                continue;
            }
#endif
            if (x->dense && pix0 + nc <= x->per) {
                float *c = a->dst + img0 * a->dst_img_stride + m0 * x->ohw + pix0;
                kt_micro(k, wr, b, c, x->ohw, nc, ps, pt, a->post_relu);
                continue;
            }
            kt_micro(k, wr, b, tile, KT_NR, nc, ps, pt, a->post_relu);
            KT_FN(scatter)(a, tile, j0, nc, m0, x->per, x->vw, x->dplane, x->drow);
        }
    }
}

static void KT_FN(task_v)(const void *x, long task, void *bp, long *last)
{
    KT_FN(task)((const KT_FN(ctx) *)x, task, (float *)bp, last);
}

static void KT_FN(conv)(const chex_conv_args *a, float *scratch, size_t scratch_floats,
                        int nthreads)
{
    KT_FN(ctx) x;
    x.a = a;
    x.ohw = (long)a->oh * a->ow;
    x.vw = KT_FN(vwidth)(a);
    x.per = (long)a->oh * x.vw;
    x.ncols = a->n * x.per;
    x.dplane = a->dst_plane ? a->dst_plane : x.ohw;
    x.drow = a->dst_row ? a->dst_row : a->ow;
    x.dense = x.dplane == x.ohw && x.drow == a->ow && a->dst_off == 0 && x.vw == a->ow;
    x.k = a->kind == CHEX_PACK_CONV || a->kind == CHEX_PACK_SHIFTED ? a->c * a->kh * a->kw
          : a->kind == CHEX_PACK_CONV3X3_PADDED                     ? a->c * 9
                                                                    : a->c;
    x.panels = (x.ncols + KT_NR - 1) / KT_NR;
    x.mp_total = a->m / KT_MR;
    int boff[KT_DIRECT_MAXK];
    x.boff = NULL;
#ifdef KT_HAVE_DIRECT
    if ((a->kind == CHEX_PACK_CONV3X3_PADDED || a->kind == CHEX_PACK_SHIFTED) &&
        x.k <= KT_DIRECT_MAXK) {
        for (int q = 0; q < x.k; q++)
            boff[q] = (int)KT_FN(rowoff)(a, q);
        x.boff = boff;
    }
#else
    (void)boff;
#endif
    /* Panels of one block stay within the packing budget (and at most 8). */
    long nb_max = KT_BUDGET_FLOATS / ((long)x.k * KT_NR);
    const chex_gemm_plan plan =
        chex_gemm_plan_make(x.panels, x.mp_total, nb_max > 8 ? 8 : nb_max, nthreads);
    x.msplit = plan.msplit;
    x.nb = plan.nb;
    chex_gemm_run(&plan, KT_FN(task_v), &x, scratch, scratch_floats * sizeof(float));
}

#ifdef KT_HAVE_WINO
/* Winograd F(2x2, 3x3) (Lavin & Gray) for the padded 3x3 convs with even h
 * and w: per 2x2 output tile, V = B^T d B of the 4x4 input patch, M_e =
 * U_e * V_e for the 16 positions e (GEMMs on the micro-kernel, U from
 * chex_winograd_weights), Y = A^T M A. 2.25x fewer multiplies than direct.
 * One task = one panel of KT_NR tiles; its V (16 x c x KT_NR, written straight
 * in packed-panel layout) and M (16 x m x KT_NR) stay in the thread's scratch.
 * post_scale / post_shift / post_relu are not supported (the dense blocks'
 * 3x3 conv has none). */
static void KT_FN(wino_task)(const chex_conv_args *a, const float *u, long p, long ncols,
                             float *scratch)
{
    const int c = a->c, m = a->m, tw = a->ow / 2, th = a->oh / 2;
    const long per = (long)th * tw, row = a->src_row, plane = a->src_plane;
    const long ohw = (long)a->oh * a->ow, ow = a->ow;
    float *vb = scratch, *mb = scratch + (size_t)16 * c * KT_NR;
    const long vs = (long)c * KT_NR, ms = (long)m * KT_NR; /* stride between e slices */
    /* Runs of consecutive tiles of one tile row: vector loops over each. */
    int nseg = 0, sj[KT_NR], slen[KT_NR];
    long soff[KT_NR], sdof[KT_NR];
    const long t0 = p * KT_NR, t1 = t0 + KT_NR < ncols ? t0 + KT_NR : ncols;
    for (long t = t0; t < t1;) {
        const long img = t / per, tl = t % per, ty = tl / tw, tx = tl % tw;
        long len = tw - tx < t1 - t ? tw - tx : t1 - t;
        sj[nseg] = (int)(t - t0);
        slen[nseg] = (int)len;
        soff[nseg] = img * a->src_img_stride + 2 * ty * row + 2 * tx;
        sdof[nseg] = img * a->dst_img_stride + 2 * ty * ow + 2 * tx;
        nseg++;
        t += len;
    }
    const int valid = (int)(t1 - t0);
    for (int ch = 0; ch < c; ch++) {
        const float *base = a->src + ch * plane;
        float *vc = vb + (long)ch * KT_NR;
        for (int sg = 0; sg < nseg; sg++) {
            for (int q = 0; q < slen[sg]; q += 16)
                kt_wino_in(base + soff[sg] + 2 * q, row,
                           slen[sg] - q < 16 ? slen[sg] - q : 16, vc + sj[sg] + q, vs);
        }
        for (int e = 0; e < 16; e++)
            for (int j = valid; j < KT_NR; j++)
                vc[e * vs + j] = 0.0f;
    }
    for (int e = 0; e < 16; e++)
        for (int m0 = 0; m0 < m; m0 += KT_MR)
            kt_micro(c, u + (long)e * m * c + (long)(m0 / 8) * 8 * c + m0 % 8,
                     vb + (long)e * c * KT_NR, mb + ((long)e * m + m0) * KT_NR, KT_NR, KT_NR,
                     NULL, NULL, 0);
    for (int o = 0; o < m; o++) {
        float *dst = a->dst + (long)o * ohw;
        const float *mo = mb + (long)o * KT_NR;
        for (int sg = 0; sg < nseg; sg++) {
            for (int q = 0; q < slen[sg]; q += 16)
                kt_wino_out(mo + sj[sg] + q, ms, slen[sg] - q < 16 ? slen[sg] - q : 16,
                            dst + sdof[sg] + 2 * q, ow);
        }
    }
}

static void KT_FN(wino)(const chex_conv_args *a, const float *u, float *scratch,
                        size_t scratch_floats, int nthreads)
{
    const long ncols = (long)a->n * (a->oh / 2) * (a->ow / 2);
    const long panels = (ncols + KT_NR - 1) / KT_NR;
    if (nthreads > panels)
        nthreads = (int)panels;
    if (nthreads <= 1) {
        for (long p = 0; p < panels; p++)
            KT_FN(wino_task)(a, u, p, ncols, scratch);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    {
        float *sc = scratch + (size_t)omp_get_thread_num() * scratch_floats;
#pragma omp for schedule(dynamic, 1)
        for (long p = 0; p < panels; p++)
            KT_FN(wino_task)(a, u, p, ncols, sc);
    }
}
#endif
