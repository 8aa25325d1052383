/* model/qkernels_avx512.c - AVX512-VNNI int8 micro-kernel (8 output channels
 * x 32 pixels: 16 zmm int32 accumulators, vpdpbusd u8 x s8 over one k-group
 * of 4 per lane), vectorised packing of the fp32 kinds and the int8 GEMM
 * driver compiled for AVX-512. */
#include <immintrin.h>

#include "model/qkernels.h"

#define QT_MR 8
#define QT_NR 32
#define QT_FN(x) qavx512_##x

#include "model/qkernels_tmpl.h"

static inline __mmask16 first_n(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static inline __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* u8 requantisation of 16 outputs: nearbyintf(fminf(fmaxf(v, 0), 255)). */
static inline __m512i requant_u8(__m512 v)
{
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(v);
}

/* Four int32 vectors of values 0..255 into the bytes of one dword per lane. */
static inline __m512i interleave4(__m512i q0, __m512i q1, __m512i q2, __m512i q3)
{
    return _mm512_or_si512(_mm512_or_si512(q0, _mm512_slli_epi32(q1, 8)),
                           _mm512_or_si512(_mm512_slli_epi32(q2, 16), _mm512_slli_epi32(q3, 24)));
}

static inline __attribute__((always_inline)) void
micro_body(int kg, const int8_t *a, const uint8_t *b, const int *boff, const qt_out *o)
{
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
            c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
            c61 = c00, c70 = c00, c71 = c00;
    for (int g = 0; g < kg; g++) {
        const int8_t *ag = a + (long)g * 32;
        const uint8_t *bg = boff ? b + boff[g] : b + (long)g * 128;
        const __m512i b0 = boff ? _mm512_loadu_si512(bg) : _mm512_load_si512(bg);
        const __m512i b1 = boff ? _mm512_loadu_si512(bg + 64) : _mm512_load_si512(bg + 64);
        __m512i v;
        v = bcast4(ag + 0);
        c00 = _mm512_dpbusd_epi32(c00, b0, v);
        c01 = _mm512_dpbusd_epi32(c01, b1, v);
        v = bcast4(ag + 4);
        c10 = _mm512_dpbusd_epi32(c10, b0, v);
        c11 = _mm512_dpbusd_epi32(c11, b1, v);
        v = bcast4(ag + 8);
        c20 = _mm512_dpbusd_epi32(c20, b0, v);
        c21 = _mm512_dpbusd_epi32(c21, b1, v);
        v = bcast4(ag + 12);
        c30 = _mm512_dpbusd_epi32(c30, b0, v);
        c31 = _mm512_dpbusd_epi32(c31, b1, v);
        v = bcast4(ag + 16);
        c40 = _mm512_dpbusd_epi32(c40, b0, v);
        c41 = _mm512_dpbusd_epi32(c41, b1, v);
        v = bcast4(ag + 20);
        c50 = _mm512_dpbusd_epi32(c50, b0, v);
        c51 = _mm512_dpbusd_epi32(c51, b1, v);
        v = bcast4(ag + 24);
        c60 = _mm512_dpbusd_epi32(c60, b0, v);
        c61 = _mm512_dpbusd_epi32(c61, b1, v);
        v = bcast4(ag + 28);
        c70 = _mm512_dpbusd_epi32(c70, b0, v);
        c71 = _mm512_dpbusd_epi32(c71, b1, v);
    }
    const __m512i acc[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                               {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    const __mmask16 m0 = first_n(o->nc), m1 = first_n(o->nc - 16);
    __m512 v[8][2];
    for (int r = 0; r < 8; r++) {
        const __m512 s = _mm512_set1_ps(o->ps[r]), t = _mm512_set1_ps(o->pt[r]);
        v[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][0]), s, t);
        v[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][1]), s, t);
    }
    if (o->qc) {
        for (int rg = 0; rg < 2; rg++)
            for (int h = 0; h < 2; h++) {
                const __m512i q =
                    interleave4(requant_u8(v[4 * rg][h]), requant_u8(v[4 * rg + 1][h]),
                                requant_u8(v[4 * rg + 2][h]), requant_u8(v[4 * rg + 3][h]));
                _mm512_mask_storeu_epi32(o->qc + 4 * (rg * o->ld + 16 * h), h ? m1 : m0, q);
            }
        return;
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < 8; r++) {
        __m512 v0 = v[r][0], v1 = v[r][1];
        if (o->relu) {
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        _mm512_mask_storeu_ps(o->c + r * o->ld, m0, v0);
        _mm512_mask_storeu_ps(o->c + r * o->ld + 16, m1, v1);
    }
}

/* Two copies: the packed one with aligned loads and the in-place one. */
static void micro_packed(int kg, const int8_t *a, const uint8_t *b, const qt_out *o)
{
    micro_body(kg, a, b, NULL, o);
}

static void micro_direct(int kg, const int8_t *a, const uint8_t *b, const int *boff,
                         const qt_out *o)
{
    micro_body(kg, a, b, boff, o);
}

static void qt_micro(int kg, const int8_t *a, const uint8_t *b, const int *boff,
                     const qt_out *o)
{
    if (boff)
        micro_direct(kg, a, b, boff, o);
    else
        micro_packed(kg, a, b, o);
}

/* quant(relu(x * s + t)) of 16 values, as the header specifies. */
static inline __m512i quant16(__m512 x, __m512 s, __m512 t, __m512 inv)
{
    __m512 v = _mm512_max_ps(_mm512_fmadd_ps(x, s, t), _mm512_setzero_ps());
    v = _mm512_min_ps(_mm512_mul_ps(v, inv), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(v);
}

/* One panel of the BNRELU kinds: per k-group, 4 channels x 16 pixels of fp32
 * become one 64-byte store of grouped u8. Contiguous loads when the panel is
 * a run of one image's pixels (1x1), masked gathers otherwise. */
static void qt_pack_fp32(const qavx512_ctx *x, long j0, uint8_t *bp)
{
    const chex_q8_args *a = x->a;
    const long img0 = j0 / x->per, pix0 = j0 % x->per;
    const float *base = a->src + img0 * a->src_img_stride;
    const __m512 inv = _mm512_set1_ps(a->in_inv_scale);
    const int ncg = a->c / 4;
    if (a->kind == CHEX_Q8_BNRELU_1X1 && pix0 + QT_NR <= x->per) {
        const float *s = base + pix0;
        for (int cg = 0; cg < ncg; cg++)
            for (int h = 0; h < 2; h++) {
                __m512i q[4];
                for (int l = 0; l < 4; l++) {
                    const int ch = 4 * cg + l;
                    q[l] = quant16(_mm512_loadu_ps(s + ch * x->hw + 16 * h),
                                   _mm512_set1_ps(a->pre_scale[ch]),
                                   _mm512_set1_ps(a->pre_shift[ch]), inv);
                }
                _mm512_store_si512(bp + cg * 128 + 64 * h, interleave4(q[0], q[1], q[2], q[3]));
            }
        return;
    }
    /* Offsets from base of each column's (top-left) source pixel, 32-bit for
     * the gathers (a panel spans few images; the portable loop otherwise). */
    int32_t off[QT_NR];
    for (int j = 0; j < QT_NR; j++) {
        const long col = j0 + j;
        long o = 0;
        if (col < x->ncols) {
            const long img = col / x->per, pix = col % x->per;
            o = (img - img0) * a->src_img_stride;
            o += a->kind == CHEX_Q8_BNRELU_1X1 ? pix
                                               : 2 * (pix / a->ow) * a->w + 2 * (pix % a->ow);
        }
        if (o > INT32_MAX) {
            QT_FN(pack_fp32_scalar)(x, j0, bp);
            return;
        }
        off[j] = (int32_t)o;
    }
    const int nc = x->ncols - j0 < QT_NR ? (int)(x->ncols - j0) : QT_NR;
    const __mmask16 mk[2] = {first_n(nc), first_n(nc - 16)};
    const __m512i idx[2] = {_mm512_loadu_si512(off), _mm512_loadu_si512(off + 16)};
    const __m512i w = _mm512_set1_epi32(a->w), w1 = _mm512_set1_epi32(a->w + 1),
                  one = _mm512_set1_epi32(1);
    const __m512 zero = _mm512_setzero_ps(), quarter = _mm512_set1_ps(0.25f);
    for (int cg = 0; cg < ncg; cg++)
        for (int h = 0; h < 2; h++) {
            __m512i q[4];
            for (int l = 0; l < 4; l++) {
                const int ch = 4 * cg + l;
                const float *cb = base + ch * x->hw;
                const __m512 s = _mm512_set1_ps(a->pre_scale[ch]),
                             t = _mm512_set1_ps(a->pre_shift[ch]);
                const __m512 x0 = _mm512_mask_i32gather_ps(zero, mk[h], idx[h], cb, 4);
                if (a->kind == CHEX_Q8_BNRELU_1X1) {
                    q[l] = quant16(x0, s, t, inv);
                    continue;
                }
                const __m512 x1 = _mm512_mask_i32gather_ps(
                    zero, mk[h], _mm512_add_epi32(idx[h], one), cb, 4);
                const __m512 x2 =
                    _mm512_mask_i32gather_ps(zero, mk[h], _mm512_add_epi32(idx[h], w), cb, 4);
                const __m512 x3 =
                    _mm512_mask_i32gather_ps(zero, mk[h], _mm512_add_epi32(idx[h], w1), cb, 4);
                const __m512 v0 = _mm512_max_ps(_mm512_fmadd_ps(x0, s, t), zero);
                const __m512 v1 = _mm512_max_ps(_mm512_fmadd_ps(x1, s, t), zero);
                const __m512 v2 = _mm512_max_ps(_mm512_fmadd_ps(x2, s, t), zero);
                const __m512 v3 = _mm512_max_ps(_mm512_fmadd_ps(x3, s, t), zero);
                __m512 p = _mm512_mul_ps(
                    _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(v0, v1), v2), v3), quarter);
                p = _mm512_min_ps(_mm512_mul_ps(p, inv), _mm512_set1_ps(255.0f));
                q[l] = _mm512_cvtps_epi32(p);
            }
            _mm512_store_si512(bp + cg * 128 + 64 * h, interleave4(q[0], q[1], q[2], q[3]));
        }
}

const chex_q8_kernels chex_q8_kernels_avx512 = {"avx512", qavx512_conv};
