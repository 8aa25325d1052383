/* model/kernels_avx2.c - AVX2+FMA micro-kernel (4 output channels x 24
 * pixels: 12 ymm accumulators) and the GEMM driver compiled for AVX2. */
#include <immintrin.h>

#include "model/kernels.h"

#define KT_MR 4
#define KT_NR 24
#define KT_FN(x) avx2_##x

static void kt_micro(int k, const float *a, const float *bp, float *c, long ldc, int nc,
                     const float *ps, const float *pt, int relu)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
           c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int q = 0; q < k; q++) {
        const float *aq = a + (long)q * 8;
        const float *b = bp + (long)q * 24;
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8),
                     b2 = _mm256_load_ps(b + 16);
        __m256 v;
        v = _mm256_broadcast_ss(aq + 0);
        c00 = _mm256_fmadd_ps(v, b0, c00);
        c01 = _mm256_fmadd_ps(v, b1, c01);
        c02 = _mm256_fmadd_ps(v, b2, c02);
        v = _mm256_broadcast_ss(aq + 1);
        c10 = _mm256_fmadd_ps(v, b0, c10);
        c11 = _mm256_fmadd_ps(v, b1, c11);
        c12 = _mm256_fmadd_ps(v, b2, c12);
        v = _mm256_broadcast_ss(aq + 2);
        c20 = _mm256_fmadd_ps(v, b0, c20);
        c21 = _mm256_fmadd_ps(v, b1, c21);
        c22 = _mm256_fmadd_ps(v, b2, c22);
        v = _mm256_broadcast_ss(aq + 3);
        c30 = _mm256_fmadd_ps(v, b0, c30);
        c31 = _mm256_fmadd_ps(v, b1, c31);
        c32 = _mm256_fmadd_ps(v, b2, c32);
    }
    __m256 acc[4][3] = {{c00, c01, c02}, {c10, c11, c12}, {c20, c21, c22}, {c30, c31, c32}};
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < 4; r++) {
        const __m256 s = _mm256_set1_ps(ps ? ps[r] : 1.0f), t = _mm256_set1_ps(pt ? pt[r] : 0.0f);
        float *cr = c + r * ldc;
        for (int g = 0; g < 3; g++) {
            __m256 v = _mm256_fmadd_ps(acc[r][g], s, t);
            if (relu)
                v = _mm256_max_ps(v, zero);
            const int left = nc - 8 * g;
            if (left >= 8) {
                _mm256_storeu_ps(cr + 8 * g, v);
            } else if (left > 0) {
                float tmp[8];
                _mm256_storeu_ps(tmp, v);
                for (int j = 0; j < left; j++)
                    cr[8 * g + j] = tmp[j];
            }
        }
    }
}

#include "model/kernels_tmpl.h"

const chex_kernels chex_kernels_avx2 = {"avx2", KT_NR, avx2_conv, NULL, NULL};
