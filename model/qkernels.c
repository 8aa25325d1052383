/* model/qkernels.c - int8 convolutions: weight quantisation and packing, the
 * naive reference, the portable-C fast path and the run-time choice of
 * instruction set. */
#include "model/qkernels.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "model/kernels.h"

/* ---- weights ---- */

void chex_q8_quantize_weights(int8_t *q, float *sw, const float *w, int m, int k)
{
    for (int o = 0; o < m; o++) {
        const float *wr = w + (long)o * k;
        float amax = 0.0f;
        for (int i = 0; i < k; i++)
            amax = fmaxf(amax, fabsf(wr[i]));
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        sw[o] = s;
        for (int i = 0; i < k; i++) {
            float v = nearbyintf(wr[i] / s);
            v = fminf(fmaxf(v, -127.0f), 127.0f);
            q[(long)o * k + i] = (int8_t)v;
        }
    }
}

void chex_q8_pack_weights(int8_t *dst, const int8_t *q, int m, int c, int taps)
{
    assert(m % 8 == 0 && c % 4 == 0);
    const int kg = c / 4 * taps;
    for (int o = 0; o < m; o++)
        for (int ch = 0; ch < c; ch++)
            for (int t = 0; t < taps; t++) {
                const int g = ch / 4 * taps + t;
                dst[((long)(o / 8) * kg + g) * 32 + (o % 8) * 4 + ch % 4] =
                    q[((long)o * c + ch) * taps + t];
            }
}

/* ---- naive reference ---- */

/* Quantised input value of channel ch of image i at output pixel (y, x),
 * tap t (3x3 only), exactly as the header specifies. */
static int naive_input(const chex_q8_args *a, int i, int ch, int y, int x, int t)
{
    if (a->kind == CHEX_Q8_CONV3X3_PADDED) {
        const long pix = i * a->qsrc_img_stride + (ch / 4) * a->src_plane +
                         (long)(y + t / 3) * a->src_row + x + t % 3;
        return a->qsrc[4 * pix + ch % 4];
    }
    const float *s = a->src + i * a->src_img_stride + (long)ch * a->h * a->w;
    const float sc = a->pre_scale[ch], sh = a->pre_shift[ch];
    float p;
    if (a->kind == CHEX_Q8_BNRELU_1X1) {
        p = fmaf(s[(long)y * a->w + x], sc, sh);
        p = p > 0.0f ? p : 0.0f;
    } else {
        float v[4];
        for (int d = 0; d < 4; d++) {
            v[d] = fmaf(s[(long)(2 * y + d / 2) * a->w + 2 * x + d % 2], sc, sh);
            v[d] = v[d] > 0.0f ? v[d] : 0.0f;
        }
        p = (((v[0] + v[1]) + v[2]) + v[3]) * 0.25f;
    }
    return (int)nearbyintf(fminf(p * a->in_inv_scale, 255.0f));
}

void chex_q8_conv_naive(const chex_q8_args *a)
{
    assert((a->dst != NULL) != (a->qdst != NULL));
    const int taps = a->kind == CHEX_Q8_CONV3X3_PADDED ? 9 : 1, kg = a->c / 4 * taps;
    const long dplane = a->dst_plane ? a->dst_plane : (long)a->oh * a->ow;
    const long drow = a->dst_row ? a->dst_row : a->ow;
    /* Output channels in chunks, so each input value is quantised once per
     * chunk rather than once per output channel. */
    enum { CHUNK = 64 };
    for (int i = 0; i < a->n; i++)
        for (int y = 0; y < a->oh; y++)
            for (int x = 0; x < a->ow; x++)
                for (int o0 = 0; o0 < a->m; o0 += CHUNK) {
                    const int o1 = o0 + CHUNK < a->m ? o0 + CHUNK : a->m;
                    int32_t acc[CHUNK] = {0};
                    for (int ch = 0; ch < a->c; ch++)
                        for (int t = 0; t < taps; t++) {
                            const int q = naive_input(a, i, ch, y, x, t);
                            const int g = ch / 4 * taps + t;
                            for (int o = o0; o < o1; o++)
                                acc[o - o0] +=
                                    q * a->wt[((long)(o / 8) * kg + g) * 32 + (o % 8) * 4 + ch % 4];
                        }
                    for (int o = o0; o < o1; o++) {
                        float v = fmaf((float)acc[o - o0], a->out_scale[o], a->out_shift[o]);
                        const long pix = i * a->dst_img_stride + a->dst_off + y * drow + x;
                        if (a->qdst) {
                            v = nearbyintf(fminf(fmaxf(v, 0.0f), 255.0f));
                            a->qdst[4 * (pix + (o / 4) * dplane) + o % 4] = (uint8_t)(int)v;
                        } else {
                            if (a->out_relu)
                                v = v > 0.0f ? v : 0.0f;
                            a->dst[pix + o * dplane] = v;
                        }
                    }
                }
}

/* ---- portable fast path ---- */

#define QT_MR 8
#define QT_NR 16
#define QT_FN(x) qgeneric_##x

#include "model/qkernels_tmpl.h"

static void qt_micro(int kg, const int8_t *a, const uint8_t *b, const int *boff,
                     const qt_out *o)
{
    int32_t acc[QT_MR][QT_NR];
    memset(acc, 0, sizeof(acc));
    for (int g = 0; g < kg; g++) {
        const uint8_t *bg = boff ? b + boff[g] : b + (long)g * QT_NR * 4;
        const int8_t *ag = a + (long)g * 32;
        for (int r = 0; r < QT_MR; r++)
            for (int j = 0; j < QT_NR; j++)
                for (int i = 0; i < 4; i++)
                    acc[r][j] += (int32_t)bg[j * 4 + i] * ag[r * 4 + i];
    }
    for (int r = 0; r < QT_MR; r++)
        for (int j = 0; j < o->nc; j++) {
            const float v = fmaf((float)acc[r][j], o->ps[r], o->pt[r]);
            if (o->qc)
                o->qc[4 * ((r / 4) * o->ld + j) + r % 4] =
                    (uint8_t)(int)nearbyintf(fminf(fmaxf(v, 0.0f), 255.0f));
            else
                o->c[r * o->ld + j] = o->relu && !(v > 0.0f) ? 0.0f : v;
        }
}

static void qt_pack_fp32(const qgeneric_ctx *x, long j0, uint8_t *bp)
{
    qgeneric_pack_fp32_scalar(x, j0, bp);
}

const chex_q8_kernels chex_q8_kernels_generic = {"generic", qgeneric_conv};

size_t chex_q8_scratch_bytes(int k)
{
    /* Packed panels (at most the budget, or one panel of the largest NR, 32,
     * when K is long), 64 bytes of alignment, one tile of at most 8 x 32
     * int32. */
    size_t panel = (size_t)k * 32, budget = QT_BUDGET_BYTES;
    return (panel > budget ? panel : budget) + 64 + 8 * 32 * 4;
}

/* ---- run-time choice ---- */

const chex_q8_kernels *chex_q8_kernels_by_name(const char *name)
{
    if (!name)
        return NULL;
    __builtin_cpu_init();
    if (!strcmp(name, "generic"))
        return &chex_q8_kernels_generic;
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   ? &chex_q8_kernels_avx2
                   : NULL;
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
                       __builtin_cpu_supports("avx512vnni")
                   ? &chex_q8_kernels_avx512
                   : NULL;
    return NULL;
}

const chex_q8_kernels *chex_q8_kernels_get(void)
{
    const char *isa = chex_kernels_get()->name;
    const chex_q8_kernels *k = chex_q8_kernels_by_name(isa);
    /* fp32 AVX-512 on a CPU without VNNI: the AVX2 int8 kernels. */
    if (!k && !strcmp(isa, "avx512"))
        k = chex_q8_kernels_by_name("avx2");
    return k ? k : &chex_q8_kernels_generic;
}
