/* model/qkernels_avx2.c - AVX2 int8 micro-kernel (4 output channels x 8
 * pixels) and the int8 GEMM driver compiled for AVX2.
 *
 * Exact: vpmaddubsw would saturate (255 * 127 * 2 > 32767), so the u8
 * activations are zero-extended and the s8 weights sign-extended to s16 and
 * multiplied by vpmaddwd (pairs of s16 products into s32, exact). One
 * k-group of 4 pixels is then 16 s16 = one ymm; the two s32 halves of each
 * pixel stay in separate lanes until the end, where one vphaddd adds them. */
#include <immintrin.h>

#include "model/qkernels.h"

#define QT_MR 4
#define QT_NR 8
#define QT_FN(x) qavx2_##x

#include "model/qkernels_tmpl.h"

/* Four int32 vectors of values 0..255 into the bytes of one dword per lane. */
static inline __m256i interleave4(const __m256i q[4])
{
    return _mm256_or_si256(
        _mm256_or_si256(q[0], _mm256_slli_epi32(q[1], 8)),
        _mm256_or_si256(_mm256_slli_epi32(q[2], 16), _mm256_slli_epi32(q[3], 24)));
}

static void qt_micro(int kg, const int8_t *a, const uint8_t *b, const int *boff,
                     const qt_out *o)
{
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
            c30 = c00, c31 = c00;
    for (int g = 0; g < kg; g++) {
        const uint8_t *bg = boff ? b + boff[g] : b + (long)g * 32;
        const __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)bg));
        const __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(bg + 16)));
        /* Rows 0..3 of the k-group as s16, one row per 64-bit quarter. */
        const __m256i w =
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + (long)g * 32)));
        __m256i v;
        v = _mm256_permute4x64_epi64(w, 0x00);
        c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(b0, v));
        c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(b1, v));
        v = _mm256_permute4x64_epi64(w, 0x55);
        c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(b0, v));
        c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(b1, v));
        v = _mm256_permute4x64_epi64(w, 0xaa);
        c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(b0, v));
        c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(b1, v));
        v = _mm256_permute4x64_epi64(w, 0xff);
        c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(b0, v));
        c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(b1, v));
    }
    const __m256i acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
    const __m256 zero = _mm256_setzero_ps(), c255 = _mm256_set1_ps(255.0f);
    __m256 v[4];
    for (int r = 0; r < 4; r++) {
        /* hadd gives pixels 0 1 4 5 | 2 3 6 7; the permute restores order. */
        const __m256i s = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xd8);
        v[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(o->ps[r]),
                               _mm256_set1_ps(o->pt[r]));
    }
    if (o->qc) {
        __m256i q[4];
        for (int r = 0; r < 4; r++)
            q[r] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v[r], zero), c255));
        const __m256i d = interleave4(q);
        if (o->nc >= 8) {
            _mm256_storeu_si256((__m256i *)o->qc, d);
        } else {
            uint8_t tmp[32];
            _mm256_storeu_si256((__m256i *)tmp, d);
            memcpy(o->qc, tmp, 4 * (size_t)o->nc);
        }
        return;
    }
    for (int r = 0; r < 4; r++) {
        const __m256 y = o->relu ? _mm256_max_ps(v[r], zero) : v[r];
        float *c = o->c + r * o->ld;
        if (o->nc >= 8) {
            _mm256_storeu_ps(c, y);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, y);
            memcpy(c, tmp, sizeof(float) * (size_t)o->nc);
        }
    }
}

/* quant(relu(x * s + t)) of 8 values, as the header specifies. */
static inline __m256i quant8(__m256 x, __m256 s, __m256 t, __m256 inv)
{
    __m256 v = _mm256_max_ps(_mm256_fmadd_ps(x, s, t), _mm256_setzero_ps());
    v = _mm256_min_ps(_mm256_mul_ps(v, inv), _mm256_set1_ps(255.0f));
    return _mm256_cvtps_epi32(v);
}

/* One panel of the BNRELU kinds: contiguous loads when the panel is a run of
 * one image's pixels (1x1), masked gathers otherwise. */
static void qt_pack_fp32(const qavx2_ctx *x, long j0, uint8_t *bp)
{
    const chex_q8_args *a = x->a;
    const long img0 = j0 / x->per, pix0 = j0 % x->per;
    const float *base = a->src + img0 * a->src_img_stride;
    const __m256 inv = _mm256_set1_ps(a->in_inv_scale);
    const int ncg = a->c / 4;
    if (a->kind == CHEX_Q8_BNRELU_1X1 && pix0 + QT_NR <= x->per) {
        const float *s = base + pix0;
        for (int cg = 0; cg < ncg; cg++) {
            __m256i q[4];
            for (int l = 0; l < 4; l++) {
                const int ch = 4 * cg + l;
                q[l] = quant8(_mm256_loadu_ps(s + ch * x->hw), _mm256_set1_ps(a->pre_scale[ch]),
                              _mm256_set1_ps(a->pre_shift[ch]), inv);
            }
            _mm256_store_si256((__m256i *)(bp + cg * 32), interleave4(q));
        }
        return;
    }
    /* Offsets from base of each column's (top-left) source pixel, 32-bit for
     * the gathers (a panel spans few images; the portable loop otherwise). */
    int32_t off[QT_NR], live[QT_NR];
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
        live[j] = col < x->ncols ? -1 : 0;
    }
    const __m256i idx = _mm256_loadu_si256((const __m256i *)off);
    const __m256 mk = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)live));
    const __m256i idx1 = _mm256_add_epi32(idx, _mm256_set1_epi32(1)),
                  idxw = _mm256_add_epi32(idx, _mm256_set1_epi32(a->w)),
                  idxw1 = _mm256_add_epi32(idx, _mm256_set1_epi32(a->w + 1));
    const __m256 zero = _mm256_setzero_ps(), quarter = _mm256_set1_ps(0.25f);
    for (int cg = 0; cg < ncg; cg++) {
        __m256i q[4];
        for (int l = 0; l < 4; l++) {
            const int ch = 4 * cg + l;
            const float *cb = base + ch * x->hw;
            const __m256 s = _mm256_set1_ps(a->pre_scale[ch]), t = _mm256_set1_ps(a->pre_shift[ch]);
            const __m256 x0 = _mm256_mask_i32gather_ps(zero, cb, idx, mk, 4);
            if (a->kind == CHEX_Q8_BNRELU_1X1) {
                q[l] = quant8(x0, s, t, inv);
                continue;
            }
            const __m256 x1 = _mm256_mask_i32gather_ps(zero, cb, idx1, mk, 4);
            const __m256 x2 = _mm256_mask_i32gather_ps(zero, cb, idxw, mk, 4);
            const __m256 x3 = _mm256_mask_i32gather_ps(zero, cb, idxw1, mk, 4);
            const __m256 v0 = _mm256_max_ps(_mm256_fmadd_ps(x0, s, t), zero);
            const __m256 v1 = _mm256_max_ps(_mm256_fmadd_ps(x1, s, t), zero);
            const __m256 v2 = _mm256_max_ps(_mm256_fmadd_ps(x2, s, t), zero);
            const __m256 v3 = _mm256_max_ps(_mm256_fmadd_ps(x3, s, t), zero);
            __m256 p = _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v0, v1), v2), v3),
                                     quarter);
            p = _mm256_min_ps(_mm256_mul_ps(p, inv), _mm256_set1_ps(255.0f));
            q[l] = _mm256_cvtps_epi32(p);
        }
        _mm256_store_si256((__m256i *)(bp + cg * 32), interleave4(q));
    }
}

const chex_q8_kernels chex_q8_kernels_avx2 = {"avx2", qavx2_conv};
