/* model/kernels_avx512.c - AVX-512F micro-kernel (8 output channels x 32
 * pixels: 16 zmm accumulators) and the GEMM driver compiled for AVX-512. */
#include <immintrin.h>

#include "model/kernels.h"

#define KT_MR 8
#define KT_NR 32
#define KT_FN(x) avx512_##x

/* B row q is bp + q*32 (packed), or base + boff[q] when boff is given: the
 * padded 3x3 read in place (implicit GEMM, unaligned loads, no packing). */
static inline __attribute__((always_inline)) void
micro_body(int k, const float *a, const float *bp, const int *boff, float *c, long ldc, int nc,
           const float *ps, const float *pt, int relu)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00;
    for (int q = 0; q < k; q++) {
        const float *aq = a + (long)q * 8;
        const float *bq = boff ? bp + boff[q] : bp + (long)q * 32;
        const __m512 b0 = boff ? _mm512_loadu_ps(bq) : _mm512_load_ps(bq);
        const __m512 b1 = boff ? _mm512_loadu_ps(bq + 16) : _mm512_load_ps(bq + 16);
        __m512 v;
        v = _mm512_set1_ps(aq[0]);
        c00 = _mm512_fmadd_ps(v, b0, c00);
        c01 = _mm512_fmadd_ps(v, b1, c01);
        v = _mm512_set1_ps(aq[1]);
        c10 = _mm512_fmadd_ps(v, b0, c10);
        c11 = _mm512_fmadd_ps(v, b1, c11);
        v = _mm512_set1_ps(aq[2]);
        c20 = _mm512_fmadd_ps(v, b0, c20);
        c21 = _mm512_fmadd_ps(v, b1, c21);
        v = _mm512_set1_ps(aq[3]);
        c30 = _mm512_fmadd_ps(v, b0, c30);
        c31 = _mm512_fmadd_ps(v, b1, c31);
        v = _mm512_set1_ps(aq[4]);
        c40 = _mm512_fmadd_ps(v, b0, c40);
        c41 = _mm512_fmadd_ps(v, b1, c41);
        v = _mm512_set1_ps(aq[5]);
        c50 = _mm512_fmadd_ps(v, b0, c50);
        c51 = _mm512_fmadd_ps(v, b1, c51);
        v = _mm512_set1_ps(aq[6]);
        c60 = _mm512_fmadd_ps(v, b0, c60);
        c61 = _mm512_fmadd_ps(v, b1, c61);
        v = _mm512_set1_ps(aq[7]);
        c70 = _mm512_fmadd_ps(v, b0, c70);
        c71 = _mm512_fmadd_ps(v, b1, c71);
    }
    __m512 acc[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                        {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    const __mmask16 m0 = nc >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 =
        nc >= 32 ? (__mmask16)0xffff : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < 8; r++) {
        const __m512 s = _mm512_set1_ps(ps ? ps[r] : 1.0f), t = _mm512_set1_ps(pt ? pt[r] : 0.0f);
        __m512 v0 = _mm512_fmadd_ps(acc[r][0], s, t), v1 = _mm512_fmadd_ps(acc[r][1], s, t);
        if (relu) {
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        _mm512_mask_storeu_ps(c + r * ldc, m0, v0);
        _mm512_mask_storeu_ps(c + r * ldc + 16, m1, v1);
    }
}

static void kt_micro(int k, const float *a, const float *bp, float *c, long ldc, int nc,
                     const float *ps, const float *pt, int relu)
{
    micro_body(k, a, bp, NULL, c, ldc, nc, ps, pt, relu);
}

#define KT_HAVE_DIRECT 1
static void kt_micro_direct(int k, const float *a, const float *base, const int *boff, float *c,
                            long ldc, int nc, const float *ps, const float *pt, int relu)
{
    micro_body(k, a, base, boff, c, ldc, nc, ps, pt, relu);
}

#include "model/kernels_tmpl.h"

const chex_kernels chex_kernels_avx512 = {"avx512", KT_NR, avx512_conv};
