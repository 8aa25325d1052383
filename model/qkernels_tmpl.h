/* model/qkernels_tmpl.h - the int8 convolution-as-GEMM driver, compiled once
 * per instruction set: qkernels.c, qkernels_avx2.c and qkernels_avx512.c each
 * define
 *   QT_MR, QT_NR   micro-tile rows (output channels, 4 or 8) and columns
 *                  (pixels, at most 32)
 *   QT_FN(x)       a per-ISA name for x
 * then include this file and define after it
 *   qt_micro(kg, a, b, boff, o)  the MR x NR micro-kernel (see qt_out)
 *   qt_pack_fp32(x, j0, bp)      packs one panel of the BNRELU kinds
 * Not a public header. Mirrors model/kernels_tmpl.h: tasks are blocks of
 * column panels x chunks of output channels; panels of the padded 3x3 kind
 * that lie inside one image are read in place through a k-group offset
 * table, the others are packed.
 *
 * Packed B panel: k-group g, column j, lane i at bp[(g * QT_NR + j) * 4 + i],
 * i.e. the grouped layout, so the in-place read of the padded source is the
 * same loop with B row g at b + boff[g] bytes.
 */
#include <assert.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "model/gemm_sched.h"
#include "model/qkernels.h"

/* Where a micro-tile goes once requantised: fp32 rows at c + r * ld floats,
 * or (qc non-NULL) u8 groups of 4 rows at qc + 4 * (rg * ld + j) bytes; only
 * the first nc columns are written. ps / pt point at the tile's first row. */
typedef struct {
    float *c;
    uint8_t *qc;
    long ld;
    int nc;
    const float *ps, *pt;
    int relu;
} qt_out;

/* Panels packed at once: about 256 KB of B, as the fp32 driver. */
#define QT_BUDGET_BYTES (256 * 1024)
/* Longest k-group offset table kept on the stack (K = 9 * c up to 8192). */
#define QT_DIRECT_MAXKG 2048

typedef struct {
    const chex_q8_args *a;
    long ohw, hw, vw, per, ncols, dplane, drow, panels, nb;
    int direct_ok, kg, taps, mp_total, msplit;
    const int *boff; /* padded 3x3 read in place: byte offset of k-group g, or NULL */
} QT_FN(ctx);

/* a: weights of tile row 0 (k-group stride 32 bytes); b: packed panel, or
 * the source base when boff is given (B row g at b + boff[g]). */
static void qt_micro(int kg, const int8_t *a, const uint8_t *b, const int *boff,
                     const qt_out *o);
static void qt_pack_fp32(const QT_FN(ctx) *x, long j0, uint8_t *bp);

/* Pixel offset of k-group g of the padded 3x3 from the image base. */
static long QT_FN(goff)(const chex_q8_args *a, int g)
{
    return (g / 9) * a->src_plane + (g % 9 / 3) * a->src_row + g % 3;
}

/* The input quantisation of the header, in scalar form. */
static inline uint8_t QT_FN(quant)(float v, float inv)
{
    v = v > 0.0f ? v : 0.0f;
    return (uint8_t)(int)nearbyintf(fminf(v * inv, 255.0f));
}

/* Portable packing of one panel of the BNRELU kinds (any columns). */
static inline void QT_FN(pack_fp32_scalar)(const QT_FN(ctx) *x, long j0, uint8_t *bp)
{
    const chex_q8_args *a = x->a;
    const float inv = a->in_inv_scale;
    for (int j = 0; j < QT_NR; j++) {
        const long col = j0 + j;
        if (col >= x->ncols) {
            for (int g = 0; g < x->kg; g++)
                memset(bp + ((long)g * QT_NR + j) * 4, 0, 4);
            continue;
        }
        const long img = col / x->per, pix = col % x->per;
        const float *s = a->src + img * a->src_img_stride;
        if (a->kind == CHEX_Q8_BNRELU_1X1)
            s += pix;
        else
            s += 2 * (pix / a->ow) * a->w + 2 * (pix % a->ow);
        for (int ch = 0; ch < a->c; ch++) {
            const float *p = s + ch * x->hw, sc = a->pre_scale[ch], sh = a->pre_shift[ch];
            uint8_t q;
            if (a->kind == CHEX_Q8_BNRELU_1X1) {
                q = QT_FN(quant)(fmaf(p[0], sc, sh), inv);
            } else {
                float v0 = fmaf(p[0], sc, sh), v1 = fmaf(p[1], sc, sh);
                float v2 = fmaf(p[a->w], sc, sh), v3 = fmaf(p[a->w + 1], sc, sh);
                v0 = v0 > 0.0f ? v0 : 0.0f;
                v1 = v1 > 0.0f ? v1 : 0.0f;
                v2 = v2 > 0.0f ? v2 : 0.0f;
                v3 = v3 > 0.0f ? v3 : 0.0f;
                q = QT_FN(quant)((((v0 + v1) + v2) + v3) * 0.25f, inv);
            }
            bp[((long)(ch / 4) * QT_NR + j) * 4 + ch % 4] = q;
        }
    }
}

/* Packs a panel of the padded 3x3 that straddles images or runs past the
 * last column (the others are read in place): one 32-bit copy per k-group. */
static void QT_FN(pack_padded)(const QT_FN(ctx) *x, long j0, uint8_t *bp)
{
    const chex_q8_args *a = x->a;
    for (int j = 0; j < QT_NR; j++) {
        const long col = j0 + j;
        if (col >= x->ncols) {
            for (int g = 0; g < x->kg; g++)
                memset(bp + ((long)g * QT_NR + j) * 4, 0, 4);
            continue;
        }
        const uint8_t *s = a->qsrc + 4 * ((col / x->per) * a->qsrc_img_stride + col % x->per);
        for (int g = 0; g < x->kg; g++)
            memcpy(bp + ((long)g * QT_NR + j) * 4, s + 4 * QT_FN(goff)(a, g), 4);
    }
}

/* Writes the valid columns of a tile (GEMM columns j0 .. j0+nc) to their
 * places: runs of one virtual row, those past ow dropped. */
static void QT_FN(scatter)(const QT_FN(ctx) *x, const void *tile, long j0, int nc, int m0)
{
    const chex_q8_args *a = x->a;
    for (int j = 0; j < nc;) {
        const long img = (j0 + j) / x->per, jl = (j0 + j) % x->per;
        const long oy = jl / x->vw, ox = jl % x->vw;
        const int run = (int)(x->vw - ox) < nc - j ? (int)(x->vw - ox) : nc - j;
        const int valid = ox < a->ow ? (int)(a->ow - ox < run ? a->ow - ox : run) : 0;
        const long pix = img * a->dst_img_stride + a->dst_off + oy * x->drow + ox;
        if (a->qdst) {
            const uint8_t *t = tile;
            for (int rg = 0; rg < QT_MR / 4; rg++)
                memcpy(a->qdst + 4 * (pix + (m0 / 4 + rg) * x->dplane),
                       t + 4 * ((long)rg * QT_NR + j), 4 * (size_t)valid);
        } else {
            const float *t = tile;
            for (int r = 0; r < QT_MR; r++)
                memcpy(a->dst + pix + (m0 + r) * x->dplane, t + (long)r * QT_NR + j,
                       sizeof(float) * (size_t)valid);
        }
        j += run;
    }
}

/* One task: output channel chunk ms of panel block blk; bp holds the
 * block's packed panels when *last == blk. */
static void QT_FN(task)(const QT_FN(ctx) *x, long task, uint8_t *bp, long *last)
{
    const chex_q8_args *a = x->a;
    const long pbytes = (long)x->kg * QT_NR * 4;
    void *tile = bp + ((x->nb * pbytes + 63) & ~63L);
    const long blk = task / x->msplit;
    const int ms = (int)(task % x->msplit);
    const long p0 = blk * x->nb, p1 = p0 + x->nb < x->panels ? p0 + x->nb : x->panels;
#define QT_IN_PLACE(p) (x->boff && ((p) * QT_NR) / x->per == ((p) * QT_NR + QT_NR - 1) / x->per)
    if (blk != *last) {
        for (long p = p0; p < p1; p++) {
            uint8_t *d = bp + (p - p0) * pbytes;
            if (a->kind == CHEX_Q8_CONV3X3_PADDED) {
                if (!QT_IN_PLACE(p))
                    QT_FN(pack_padded)(x, p * QT_NR, d);
            } else {
                qt_pack_fp32(x, p * QT_NR, d);
            }
        }
        *last = blk;
    }
    const int mp0 = ms * x->mp_total / x->msplit, mp1 = (ms + 1) * x->mp_total / x->msplit;
    for (int mp = mp0; mp < mp1; mp++) {
        const int m0 = mp * QT_MR;
        const int8_t *wr = a->wt + (long)(m0 / 8) * 8 * x->kg * 4 + (m0 % 8) * 4;
        qt_out o = {.ps = a->out_scale + m0, .pt = a->out_shift + m0, .relu = a->out_relu};
        for (long p = p0; p < p1; p++) {
            const long j0 = p * QT_NR;
            const long img0 = j0 / x->per, pix0 = j0 % x->per;
            o.nc = x->ncols - j0 < QT_NR ? (int)(x->ncols - j0) : QT_NR;
            const int direct = x->direct_ok && pix0 + o.nc <= x->per;
            if (direct) {
                /* Columns map to consecutive pixels of the destination. */
                const long pix = img0 * a->dst_img_stride + a->dst_off + pix0;
                o.c = a->qdst ? NULL : a->dst + pix + m0 * x->dplane;
                o.qc = a->qdst ? a->qdst + 4 * (pix + (m0 / 4) * x->dplane) : NULL;
                o.ld = x->dplane;
            } else {
                o.c = a->qdst ? NULL : tile;
                o.qc = a->qdst ? tile : NULL;
                o.ld = QT_NR;
            }
            if (QT_IN_PLACE(p))
                qt_micro(x->kg, wr, a->qsrc + 4 * (img0 * a->qsrc_img_stride + pix0), x->boff,
                         &o);
            else
                qt_micro(x->kg, wr, bp + (p - p0) * pbytes, NULL, &o);
            if (!direct)
                QT_FN(scatter)(x, tile, j0, o.nc, m0);
        }
    }
#undef QT_IN_PLACE
}

static void QT_FN(task_v)(const void *x, long task, void *bp, long *last)
{
    QT_FN(task)((const QT_FN(ctx) *)x, task, (uint8_t *)bp, last);
}

static void QT_FN(conv)(const chex_q8_args *a, uint8_t *scratch, size_t scratch_bytes,
                        int nthreads)
{
    assert(a->m % 8 == 0 && a->c % 4 == 0 && (a->dst != NULL) != (a->qdst != NULL));
    QT_FN(ctx) x;
    x.a = a;
    x.ohw = (long)a->oh * a->ow;
    x.hw = (long)a->h * a->w;
    x.vw = a->kind == CHEX_Q8_CONV3X3_PADDED ? a->src_row : a->ow;
    x.per = (long)a->oh * x.vw;
    x.ncols = a->n * x.per;
    x.dplane = a->dst_plane ? a->dst_plane : x.ohw;
    x.drow = a->dst_row ? a->dst_row : a->ow;
    x.direct_ok = x.vw == a->ow && x.drow == a->ow;
    x.taps = a->kind == CHEX_Q8_CONV3X3_PADDED ? 9 : 1;
    x.kg = a->c / 4 * x.taps;
    x.panels = (x.ncols + QT_NR - 1) / QT_NR;
    x.mp_total = a->m / QT_MR;
    int boff[QT_DIRECT_MAXKG];
    x.boff = NULL;
    if (a->kind == CHEX_Q8_CONV3X3_PADDED && x.kg <= QT_DIRECT_MAXKG &&
        4 * QT_FN(goff)(a, x.kg - 1) <= 0x7fffffffL) {
        for (int g = 0; g < x.kg; g++)
            boff[g] = (int)(4 * QT_FN(goff)(a, g));
        x.boff = boff;
    }
    /* Panels of one block stay within the packing budget (and 256 columns). */
    long nb_max = QT_BUDGET_BYTES / ((long)x.kg * 4 * QT_NR);
    const chex_gemm_plan plan = chex_gemm_plan_make(
        x.panels, x.mp_total, nb_max > 256 / QT_NR ? 256 / QT_NR : nb_max, nthreads);
    x.msplit = plan.msplit;
    x.nb = plan.nb;
    chex_gemm_run(&plan, QT_FN(task_v), &x, scratch, scratch_bytes);
}
