/* model/kernels_avx512.c - AVX-512F micro-kernel (8 output channels x 32
 * pixels: 16 zmm accumulators) and the GEMM driver compiled for AVX-512. */
#include <immintrin.h>

#include "model/kernels.h"

#define KT_MR 8
#define KT_NR 32
#define KT_FN(x) avx512_##x

/* B row q is bp + q*32 (packed), or base + boff[q] when boff is given: the
 * padded 3x3 read in place (implicit GEMM, unaligned loads, no packing).
 * wide = 0 computes the first 16 columns only, for panels with nc <= 16 (the
 * last panel of 14x14 and 28x28 images at batch 1, 4 or 16 columns of 32). */
static inline __attribute__((always_inline)) void
micro_body(int k, const float *a, const float *bp, const int *boff, float *c, long ldc, int nc,
           const float *ps, const float *pt, int relu, int wide)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00;
    for (int q = 0; q < k; q++) {
        const float *aq = a + (long)q * 8;
        const float *bq = boff ? bp + boff[q] : bp + (long)q * 32;
        const __m512 b0 = boff ? _mm512_loadu_ps(bq) : _mm512_load_ps(bq);
        const __m512 b1 = !wide ? _mm512_setzero_ps()
                          : boff ? _mm512_loadu_ps(bq + 16)
                                 : _mm512_load_ps(bq + 16);
        __m512 v;
        v = _mm512_set1_ps(aq[0]);
        c00 = _mm512_fmadd_ps(v, b0, c00);
        if (wide)
            c01 = _mm512_fmadd_ps(v, b1, c01);
        v = _mm512_set1_ps(aq[1]);
        c10 = _mm512_fmadd_ps(v, b0, c10);
        if (wide)
            c11 = _mm512_fmadd_ps(v, b1, c11);
        v = _mm512_set1_ps(aq[2]);
        c20 = _mm512_fmadd_ps(v, b0, c20);
        if (wide)
            c21 = _mm512_fmadd_ps(v, b1, c21);
        v = _mm512_set1_ps(aq[3]);
        c30 = _mm512_fmadd_ps(v, b0, c30);
        if (wide)
            c31 = _mm512_fmadd_ps(v, b1, c31);
        v = _mm512_set1_ps(aq[4]);
        c40 = _mm512_fmadd_ps(v, b0, c40);
        if (wide)
            c41 = _mm512_fmadd_ps(v, b1, c41);
        v = _mm512_set1_ps(aq[5]);
        c50 = _mm512_fmadd_ps(v, b0, c50);
        if (wide)
            c51 = _mm512_fmadd_ps(v, b1, c51);
        v = _mm512_set1_ps(aq[6]);
        c60 = _mm512_fmadd_ps(v, b0, c60);
        if (wide)
            c61 = _mm512_fmadd_ps(v, b1, c61);
        v = _mm512_set1_ps(aq[7]);
        c70 = _mm512_fmadd_ps(v, b0, c70);
        if (wide)
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
    if (nc <= 16)
        micro_body(k, a, bp, NULL, c, ldc, nc, ps, pt, relu, 0);
    else
        micro_body(k, a, bp, NULL, c, ldc, nc, ps, pt, relu, 1);
}

#define KT_HAVE_DIRECT 1
static void kt_micro_direct(int k, const float *a, const float *base, const int *boff, float *c,
                            long ldc, int nc, const float *ps, const float *pt, int relu)
{
    if (nc <= 16)
        micro_body(k, a, base, boff, c, ldc, nc, ps, pt, relu, 0);
    else
        micro_body(k, a, base, boff, c, ldc, nc, ps, pt, relu, 1);
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

/* The transitions' BN-ReLU-avgpool packing along an output row: even and
 * odd input columns come apart by permutes instead of per-pixel gathers.
 * x*s + t is a multiply then an add, as the C packing rounds it (ISO C mode
 * does not contract it into an FMA). */
#define KT_HAVE_POOL_RUN 1
static void kt_pool_run(const float *x, long w, float s, float t, int len, float *d)
{
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 vs = _mm512_set1_ps(s), vt = _mm512_set1_ps(t), zero = _mm512_setzero_ps();
    for (int q = 0; q < len; q += 16) {
        const int n = 2 * (len - q);
        const __mmask16 m0 = first_n(n), m1 = first_n(n - 16);
        __m512 v[2][2];
        for (int r = 0; r < 2; r++) {
            const float *xr = x + r * w + 2 * q;
            v[r][0] = _mm512_max_ps(
                _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m0, xr), vs), vt), zero);
            v[r][1] = _mm512_max_ps(
                _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m1, xr + 16), vs), vt), zero);
        }
        /* ((x[0] + x[1]) + x[w]) + x[w + 1], as the C loop adds them */
        __m512 sum = _mm512_add_ps(_mm512_permutex2var_ps(v[0][0], ie, v[0][1]),
                                   _mm512_permutex2var_ps(v[0][0], io, v[0][1]));
        sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(v[1][0], ie, v[1][1]));
        sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(v[1][0], io, v[1][1]));
        _mm512_mask_storeu_ps(d + q, first_n(len - q), _mm512_mul_ps(sum, _mm512_set1_ps(0.25f)));
    }
}

#include "model/kernels_tmpl.h"

/* ---- Winograd F(4x4,3x3) ----
 * Points 0, +-1, +-2 (Lavin & Gray): per 4x4 output tile, V = B^T d B of the
 * 6x6 input patch, M_e = U_e V_e for the 36 positions e, Y = A^T M A; 4x
 * fewer multiplies than direct (F(2x2): 2.25x). One panel = 16 tiles = the 16
 * lanes of every transform vector, made of two "pieces" of at most 8
 * consecutive tiles of one tile row (lanes 0-7 and 8-15), so 28x28 (7 tiles a
 * row) fills 14 of 16 lanes rather than 7, or of four pieces of at most 4
 * (14x14: one image, ragged edge tiles cropped, is one full panel). The
 * GEMMs run on an 8 x 16
 * micro-kernel over 16-tile panels; 32-wide panels would leave one core idle
 * for a seventh of block 1 at batch 1 (14 panels per 56x56 image). */

/* c[r*16 + j] = sum_q a[q*8 + r] * bp[q*ldb + j], r < 8, j < 16. */
static void micro_8x16(int k, const float *a, const float *bp, long ldb, float *c)
{
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0,
           c7 = c0;
    for (int q = 0; q < k; q++) {
        const float *aq = a + (long)q * 8;
        const __m512 b = _mm512_load_ps(bp + (long)q * ldb);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(aq[0]), b, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(aq[1]), b, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(aq[2]), b, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(aq[3]), b, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(aq[4]), b, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(aq[5]), b, c5);
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(aq[6]), b, c6);
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(aq[7]), b, c7);
    }
    _mm512_store_ps(c, c0);
    _mm512_store_ps(c + 16, c1);
    _mm512_store_ps(c + 32, c2);
    _mm512_store_ps(c + 48, c3);
    _mm512_store_ps(c + 64, c4);
    _mm512_store_ps(c + 80, c5);
    _mm512_store_ps(c + 96, c6);
    _mm512_store_ps(c + 112, c7);
}

/* y = B^T x for the 6-vector x (B^T rows: 4 0 -5 0 1 0 / 0 -4 -4 1 1 0 /
 * 0 4 -4 -1 1 0 / 0 -2 -1 2 1 0 / 0 2 -1 -2 1 0 / 0 4 0 -5 0 1). */
static inline __attribute__((always_inline)) void bt6(const __m512 *x, __m512 *y)
{
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    const __m512 t0 = _mm512_fnmadd_ps(four, x[2], x[4]), t1 = _mm512_fnmadd_ps(four, x[1], x[3]);
    const __m512 t2 = _mm512_sub_ps(x[4], x[2]), t3 = _mm512_sub_ps(x[3], x[1]);
    y[0] = _mm512_fmadd_ps(four, x[0], _mm512_fnmadd_ps(five, x[2], x[4]));
    y[1] = _mm512_add_ps(t0, t1);
    y[2] = _mm512_sub_ps(t0, t1);
    y[3] = _mm512_add_ps(t2, _mm512_add_ps(t3, t3));
    y[4] = _mm512_sub_ps(t2, _mm512_add_ps(t3, t3));
    y[5] = _mm512_fmadd_ps(four, x[1], _mm512_fnmadd_ps(five, x[3], x[5]));
}

/* y = A^T x (A^T rows: 1 1 1 1 1 0 / 0 1 -1 2 -2 0 / 0 1 1 4 4 0 /
 * 0 1 -1 8 -8 1). */
static inline __attribute__((always_inline)) void at6(const __m512 *x, __m512 *y)
{
    const __m512 s = _mm512_add_ps(x[1], x[2]), d = _mm512_sub_ps(x[1], x[2]);
    const __m512 s2 = _mm512_add_ps(x[3], x[4]), d2 = _mm512_sub_ps(x[3], x[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(x[0], s), s2);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d2, d);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s2, s);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d2, d), x[5]);
}

/* One input row of a panel from four 16-float loads per lane half (s = 0:
 * lanes 0-7, s = 1: lanes 8-15): the loads k = 0, 1 give columns 4q + 0..3
 * through i01/i23, k = 2, 3 (the same sources 4 floats on) columns 4q + 4, 5.
 * Two pieces of 8 tiles: loads 0, 1 are a piece's floats 0-15 and 16-31;
 * four pieces of 4 tiles: loads 0, 1 are floats 0-15 of two pieces, whose
 * lanes then come out as 0-3 and 4-7 of the half. d[j] lane l = column j of
 * the tile in lane l. Masked loads read only what the tiles cover and give
 * zeros past the padded edge. */
static inline __attribute__((always_inline)) void wino4_row(const float *const *q, long off,
                                                             const __mmask16 *mk, __m512 *d)
{
    const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i i23 =
        _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    const __m512i hi =
        _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    __m512 x[2][3];
    #pragma GCC unroll 6
    for (int s = 0; s < 2; s++) {
        const float *const *p = q + 4 * s;
        const __mmask16 *m = mk + 4 * s;
        const __m512 w0 = _mm512_maskz_loadu_ps(m[0], p[0] + off),
                     w1 = _mm512_maskz_loadu_ps(m[1], p[1] + off),
                     w2 = _mm512_maskz_loadu_ps(m[2], p[2] + off),
                     w3 = _mm512_maskz_loadu_ps(m[3], p[3] + off);
        x[s][0] = _mm512_permutex2var_ps(w0, i01, w1);
        x[s][1] = _mm512_permutex2var_ps(w0, i23, w1);
        x[s][2] = _mm512_permutex2var_ps(w2, i01, w3);
    }
    #pragma GCC unroll 6
    for (int j = 0; j < 3; j++) {
        d[2 * j] = _mm512_permutex2var_ps(x[0][j], lo, x[1][j]);
        d[2 * j + 1] = _mm512_permutex2var_ps(x[0][j], hi, x[1][j]);
    }
}

/* V of one channel of a panel: v[e*16 + lane], e = 6*row + column of B^T d B.
 * q: the 8 load sources of wino4_row for this channel, mk: their masks for
 * each of the 6 input rows. The loops are unrolled so that the arrays stay
 * in registers (GCC -O2 would otherwise copy them through the stack). */
static void kt_wino4_in(const float *const *q, const __mmask16 *mk, long row, float *v)
{
    __m512 t[6][6]; /* t[column l][row i] = (d B)_il */
    #pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
        __m512 d[6], w[6];
        wino4_row(q, i * row, mk + 8 * i, d);
        bt6(d, w);
        #pragma GCC unroll 6
        for (int l = 0; l < 6; l++)
            t[l][i] = w[l];
    }
    #pragma GCC unroll 6
    for (int l = 0; l < 6; l++) {
        __m512 y[6];
        bt6(t[l], y);
        #pragma GCC unroll 6
        for (int k = 0; k < 6; k++)
            _mm512_store_ps(v + (6 * k + l) * 16, y[k]);
    }
}

/* Output of one channel of a panel: M at mj[e*ms + lane]. Output row r of
 * the tiles gives four 16-float vectors, tiles 0-3, 4-7, 8-11, 12-15 (a
 * tile's 4 columns side by side); vector k is stored at o[k] + r*ow under
 * mask om[4*r + k], which crops tiles hanging over the edge. */
static void kt_wino4_out(const float *mj, long ms, float *const *o, const __mmask16 *om, long ow)
{
    __m512 t[4][6]; /* t[column c][row i] = (M A)_ic */
    #pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
        __m512 x[6], z[4];
        #pragma GCC unroll 6
        for (int l = 0; l < 6; l++)
            x[l] = _mm512_load_ps(mj + (6 * i + l) * ms);
        at6(x, z);
        #pragma GCC unroll 6
        for (int c = 0; c < 4; c++)
            t[c][i] = z[c];
    }
    __m512 y[4][4]; /* y[r][c] */
    #pragma GCC unroll 6
    for (int c = 0; c < 4; c++) {
        __m512 z[4];
        at6(t[c], z);
        #pragma GCC unroll 6
        for (int r = 0; r < 4; r++)
            y[r][c] = z[r];
    }
    /* Lane q of y[r][c] goes to column 4q + c: interleave by 4. */
    const __m512i p01l = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i p01h =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512i q0 = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
    const __m512i q1 =
        _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
    #pragma GCC unroll 6
    for (int r = 0; r < 4; r++) {
        const __m512 a01 = _mm512_permutex2var_ps(y[r][0], p01l, y[r][1]),
                     a23 = _mm512_permutex2var_ps(y[r][2], p01l, y[r][3]),
                     b01 = _mm512_permutex2var_ps(y[r][0], p01h, y[r][1]),
                     b23 = _mm512_permutex2var_ps(y[r][2], p01h, y[r][3]);
        const __mmask16 *m = om + 4 * r;
        if (m[0])
            _mm512_mask_storeu_ps(o[0] + r * ow, m[0], _mm512_permutex2var_ps(a01, q0, a23));
        if (m[1])
            _mm512_mask_storeu_ps(o[1] + r * ow, m[1], _mm512_permutex2var_ps(a01, q1, a23));
        if (m[2])
            _mm512_mask_storeu_ps(o[2] + r * ow, m[2], _mm512_permutex2var_ps(b01, q0, b23));
        if (m[3])
            _mm512_mask_storeu_ps(o[3] + r * ow, m[3], _mm512_permutex2var_ps(b01, q1, b23));
    }
}

/* Tiles are ceil(oh/4) x ceil(ow/4); those hanging over the bottom or right
 * edge (14 = 3*4 + 2) are computed whole from zero-extended input and
 * cropped. A panel is 16 tiles, made of "pieces" of consecutive tiles of one
 * tile row: two of at most 8 (lanes 0-7, 8-15) when a tile row has more
 * than 4 tiles, else four of at most 4 (lanes 0-3, ..., 12-15), so 28x28
 * (7 tiles a row) fills 14 lanes and 14x14 (4) all 16. */
static int wino4_ppp(const chex_conv_args *a)
{
    return (a->ow + 3) / 4 > 4 ? 2 : 4;
}

static long wino4_npieces(const chex_conv_args *a)
{
    const int tw = (a->ow + 3) / 4, th = (a->oh + 3) / 4, lanes = 16 / wino4_ppp(a);
    return (long)a->n * th * ((tw + lanes - 1) / lanes);
}

/* Piece P (of the whole batch): image, tile row, first tile, length. Tile rows
 * are split into ceil(tw/lanes) near-equal pieces. */
static void wino4_piece(const chex_conv_args *a, long P, long *img, int *ty, int *tx, int *len)
{
    const int tw = (a->ow + 3) / 4, th = (a->oh + 3) / 4, lanes = 16 / wino4_ppp(a);
    const int npr = (tw + lanes - 1) / lanes;
    const long per = (long)th * npr;
    *img = P / per;
    const int rem = (int)(P % per), k = rem % npr;
    *ty = rem / npr;
    *tx = k * tw / npr;
    *len = (k + 1) * tw / npr - *tx;
}

/* V is channel-major, each channel's 36 x 16 transforms written contiguously
 * (e-major, one 8 KB-strided stream per e, made the input transform wait on
 * its stores); the GEMMs read it with this row stride, 37 lines so that
 * consecutive channels do not share L1 sets. */
#define WINO4_VCH (37 * 16)

/* Panel p, output channels [m0, m1) (multiples of 8). A panel split over
 * output channels repeats the input transform in each part: it lets both
 * cores work on a 14x14 image (one panel) at the cost of ~15 % more work. */
static void wino4_task(const chex_conv_args *a, const float *u, long p, long npieces, int m0,
                       int m1, int pf, float *scratch)
{
    const int c = a->c, m = a->m, ppp = wino4_ppp(a);
    const long row = a->src_row, plane = a->src_plane, ow = a->ow, ohw = (long)a->oh * a->ow;
    const long ms = (long)m * 16; /* stride between e slices of M */
    float *vb = scratch, *mb = scratch + (size_t)WINO4_VCH * c;
    const float *src[4];
    float *dst[4];
    int nin[4], rin[4], nout[4], rout[4];
    for (int s = 0; s < ppp; s++) {
        long img = 0;
        int ty = 0, tx = 0, len = 0;
        if (p * ppp + s < npieces)
            wino4_piece(a, p * ppp + s, &img, &ty, &tx, &len);
        src[s] = a->src + img * a->src_img_stride + 4L * ty * row + 4 * tx;
        dst[s] = a->dst + img * a->dst_img_stride + 4L * ty * ow + 4 * tx;
        /* input floats a row covers, clipped to the padded width (w + 2) */
        nin[s] = len ? 4 * len + 2 : 0;
        if (nin[s] > a->w + 2 - 4 * tx)
            nin[s] = a->w + 2 - 4 * tx;
        rin[s] = len ? a->h + 2 - 4 * ty : 0; /* input rows available (>= 6: all) */
        nout[s] = 4 * len < a->ow - 4 * tx ? 4 * len : a->ow - 4 * tx;
        rout[s] = len ? a->oh - 4 * ty : 0;
    }
    const float *q[8];
    __mmask16 mk[6 * 8], om[16];
    float *o[4];
    for (int i = 0; i < 6; i++)
        for (int h = 0; h < 2; h++) {
            __mmask16 *mi = mk + 8 * i + 4 * h;
            if (ppp == 2) {
                const int n = i < rin[h] ? nin[h] : 0;
                mi[0] = first_n(n), mi[1] = first_n(n - 16), mi[2] = first_n(n - 4),
                mi[3] = first_n(n - 20);
            } else {
                const int na = i < rin[2 * h] ? nin[2 * h] : 0,
                          nb = i < rin[2 * h + 1] ? nin[2 * h + 1] : 0;
                mi[0] = first_n(na), mi[1] = first_n(nb), mi[2] = first_n(na - 4),
                mi[3] = first_n(nb - 4);
            }
        }
    for (int h = 0; h < 2; h++) {
        const float *sa = ppp == 2 ? src[h] : src[2 * h];
        const float *sb = ppp == 2 ? src[h] + 16 : src[2 * h + 1];
        q[4 * h] = sa, q[4 * h + 1] = sb, q[4 * h + 2] = sa + 4, q[4 * h + 3] = sb + 4;
    }
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) {
            int n;
            if (ppp == 2)
                n = r < rout[k / 2] ? nout[k / 2] - 16 * (k % 2) : 0;
            else
                n = r < rout[k] ? nout[k] : 0;
            om[4 * r + k] = first_n(n);
        }
    for (int k = 0; k < 4; k++)
        o[k] = ppp == 2 ? dst[k / 2] + 16 * (k % 2) : dst[k];

    /* At batch 1, U (590 KB a layer on 14x14) comes from DRAM: every other
     * layer's weights pass between two uses. With pf set, fetch this task's
     * rows of it while the input transform computes, spread over the
     * channels (14x14, 2 threads, U not cached: 0.060 -> 0.046 ms; U cached
     * 0.033 -> 0.038 ms). */
    const long lpe = (long)(m1 - m0) * c / 16; /* lines of U per e */
    const float *ul = u + (long)m0 * c;
    long li = 0, done = 0;
    int ue = 0;
    for (int ch = 0; ch < c; ch++) {
        const float *qc[8];
        for (int k = 0; k < 8; k++)
            qc[k] = q[k] + ch * plane;
        kt_wino4_in(qc, mk, row, vb + (long)ch * WINO4_VCH);
        if (!pf)
            continue;
        for (const long end = (ch + 1) * 36 * lpe / c; done < end; done++) {
            _mm_prefetch((const char *)(ul + (long)ue * m * c + li * 16), _MM_HINT_T2);
            if (++li == lpe)
                li = 0, ue++;
        }
    }
    for (int e = 0; e < 36; e++)
        for (int mo = m0; mo < m1; mo += 8)
            micro_8x16(c, u + (long)e * m * c + (long)mo * c, vb + (long)e * 16, WINO4_VCH,
                       mb + (long)e * ms + (long)mo * 16);
    for (int oc = m0; oc < m1; oc++) {
        float *oo[4];
        for (int k = 0; k < 4; k++)
            oo[k] = o[k] + oc * ohw;
        kt_wino4_out(mb + (long)oc * 16, ms, oo, om, ow);
    }
}

/* Winograd F(4x4,3x3) for a CHEX_PACK_CONV3X3_PADDED conv with no post-op
 * (any oh, ow: edge tiles cropped); u from chex_winograd4_weights. */
static void avx512_wino4(const chex_conv_args *a, const float *u, float *scratch,
                         size_t scratch_floats, int nthreads)
{
    const long npieces = wino4_npieces(a);
    const int ppp = wino4_ppp(a), m8 = a->m / 8;
    const long panels = (npieces + ppp - 1) / ppp;
    /* fewer panels than threads (14x14 at batch 1: one): split the output
     * channels too */
    int split = 1;
    while (panels * split < nthreads && split * 2 <= m8)
        split *= 2;
    const long tasks = panels * split;
    if (nthreads > tasks)
        nthreads = (int)tasks;
    if (nthreads <= 1) {
        for (long p = 0; p < panels; p++)
            wino4_task(a, u, p, npieces, 0, a->m, 0, scratch);
        return;
    }
#pragma omp parallel num_threads(nthreads)
    {
        float *sc = scratch + (size_t)omp_get_thread_num() * scratch_floats;
        /* Only split panels prefetch: a task with all of U (590 KB) next to
         * its V (303 KB) would crowd the 1 MB L2 (blocks 1-2 measured no
         * better with it). */
        int first = split > 1; /* later tasks of this thread find U in cache */
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < tasks; t++) {
            const int s = (int)(t % split);
            wino4_task(a, u, t / split, npieces, s * m8 / split * 8, (s + 1) * m8 / split * 8,
                       first, sc);
            first = 0;
        }
    }
}

const chex_kernels chex_kernels_avx512 = {"avx512", KT_NR, avx512_conv, avx512_wino,
                                          avx512_wino4};
