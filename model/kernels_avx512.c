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

/* Winograd F(2x2,3x3) transforms of up to 16 consecutive tiles of one tile
 * row, 16 lanes = 16 tiles. Input: tile q's 4x4 patch starts at r + 2q (rows
 * row apart); writes v[e*vs + q]. Stride-2 columns come out of two loads by
 * permutes; loads are masked to the 2*len+2 floats the tiles cover. */
#define KT_HAVE_WINO 1
static inline __mmask16 first_n(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static void kt_wino_in(const float *r, long row, int len, float *v, long vs)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const int need = 2 * len + 2;
    const __mmask16 a0 = first_n(need), b0 = first_n(need - 16), a2 = first_n(need - 2),
                    b2 = first_n(need - 18);
    __m512 d[4][4];
    for (int i = 0; i < 4; i++) {
        const float *ri = r + i * row;
        const __m512 A = _mm512_maskz_loadu_ps(a0, ri), B = _mm512_maskz_loadu_ps(b0, ri + 16);
        const __m512 A2 = _mm512_maskz_loadu_ps(a2, ri + 2),
                     B2 = _mm512_maskz_loadu_ps(b2, ri + 18);
        d[i][0] = _mm512_permutex2var_ps(A, ie, B);
        d[i][1] = _mm512_permutex2var_ps(A, io, B);
        d[i][2] = _mm512_permutex2var_ps(A2, ie, B2);
        d[i][3] = _mm512_permutex2var_ps(A2, io, B2);
    }
    const __mmask16 mk = first_n(len);
    for (int i = 0; i < 4; i++) {
        /* row i of B^T d, then times B */
        __m512 t0, t1, t2, t3;
        if (i == 0) {
            t0 = _mm512_sub_ps(d[0][0], d[2][0]), t1 = _mm512_sub_ps(d[0][1], d[2][1]),
            t2 = _mm512_sub_ps(d[0][2], d[2][2]), t3 = _mm512_sub_ps(d[0][3], d[2][3]);
        } else if (i == 1) {
            t0 = _mm512_add_ps(d[1][0], d[2][0]), t1 = _mm512_add_ps(d[1][1], d[2][1]),
            t2 = _mm512_add_ps(d[1][2], d[2][2]), t3 = _mm512_add_ps(d[1][3], d[2][3]);
        } else if (i == 2) {
            t0 = _mm512_sub_ps(d[2][0], d[1][0]), t1 = _mm512_sub_ps(d[2][1], d[1][1]),
            t2 = _mm512_sub_ps(d[2][2], d[1][2]), t3 = _mm512_sub_ps(d[2][3], d[1][3]);
        } else {
            t0 = _mm512_sub_ps(d[1][0], d[3][0]), t1 = _mm512_sub_ps(d[1][1], d[3][1]),
            t2 = _mm512_sub_ps(d[1][2], d[3][2]), t3 = _mm512_sub_ps(d[1][3], d[3][3]);
        }
        float *vi = v + (long)(i * 4) * vs;
        _mm512_mask_storeu_ps(vi, mk, _mm512_sub_ps(t0, t2));
        _mm512_mask_storeu_ps(vi + vs, mk, _mm512_add_ps(t1, t2));
        _mm512_mask_storeu_ps(vi + 2 * vs, mk, _mm512_sub_ps(t2, t1));
        _mm512_mask_storeu_ps(vi + 3 * vs, mk, _mm512_sub_ps(t1, t3));
    }
}

/* Output: M of tile q at mj[e*ms + q]; writes the 2x2 outputs at y + 2q and
 * y + ow + 2q. */
static void kt_wino_out(const float *mj, long ms, int len, float *y, long ow)
{
    const __mmask16 mk = first_n(len);
    __m512 mm[16];
    for (int e = 0; e < 16; e++)
        mm[e] = _mm512_maskz_loadu_ps(mk, mj + e * ms);
    __m512 s0[4], s1[4];
    for (int k = 0; k < 4; k++) {
        s0[k] = _mm512_add_ps(_mm512_add_ps(mm[k], mm[4 + k]), mm[8 + k]);
        s1[k] = _mm512_sub_ps(_mm512_sub_ps(mm[4 + k], mm[8 + k]), mm[12 + k]);
    }
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __mmask16 m0 = first_n(2 * len), m1 = first_n(2 * len - 16);
    for (int i = 0; i < 2; i++) {
        const __m512 *si = i ? s1 : s0;
        const __m512 y0 = _mm512_add_ps(_mm512_add_ps(si[0], si[1]), si[2]);
        const __m512 y1 = _mm512_sub_ps(_mm512_sub_ps(si[1], si[2]), si[3]);
        float *yi = y + i * ow;
        _mm512_mask_storeu_ps(yi, m0, _mm512_permutex2var_ps(y0, lo, y1));
        _mm512_mask_storeu_ps(yi + 16, m1, _mm512_permutex2var_ps(y0, hi, y1));
    }
}

#include "model/kernels_tmpl.h"

const chex_kernels chex_kernels_avx512 = {"avx512", KT_NR, avx512_conv, avx512_wino};
