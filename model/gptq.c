/* model/gptq.c - input second moments and GPTQ rounding (see model/gptq.h).
 *
 * Same inputs, same bits: every sum here has one order, whatever the thread
 * count, the schedule, the buffers' alignment, the optimisation level or the
 * ISA clone. Threads only ever split outputs (each element is summed whole
 * by one thread), and the long sums are written lane by lane with GCC vector
 * types, whose element-wise IEEE operations the compiler may not reorder or
 * fuse (-std=c11 implies -ffp-contract=off), never as `omp simd reduction`
 * loops, whose order is the vectoriser's choice. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/gptq.h"

#define TJ 64 /* columns of an h tile */
#define TI 4  /* rows of an h tile */

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4))); /* unaligned loads */
#define ld16(p) (*(const v16u *)(p))
typedef double v8d __attribute__((vector_size(64)));
typedef double v8du __attribute__((vector_size(64), aligned(8)));
#define ld8d(p) (*(const v8du *)(p))

/* sum_{i<n} a[i] * b[i] in one fixed order: lane l (of 16) adds the
 * products of i = l, l + 16, ... in turn, the lanes are added pairwise
 * (l + 8, then + 4, + 2, + 1), then the tail n % 16 in order. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static float
dot_f(const float *a, const float *b, int n)
{
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc += ld16(a + i) * ld16(b + i);
    float l[16];
    memcpy(l, &acc, sizeof l);
    for (int w = 8; w >= 1; w /= 2)
        for (int j = 0; j < w; j++)
            l[j] += l[j + w];
    float s = l[0];
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* The same in double, 8 lanes. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static double
dot_d(const double *a, const double *b, int n)
{
    v8d acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc += ld8d(a + i) * ld8d(b + i);
    double l[8];
    memcpy(l, &acc, sizeof l);
    for (int w = 4; w >= 1; w /= 2)
        for (int j = 0; j < w; j++)
            l[j] += l[j + w];
    double s = l[0];
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* acc[r][j] = sum_p x[p][i0 + r] * x[p][j0 + j], the 16 partial sums in
 * registers (GCC vectors: one zmm each on AVX-512, split on narrower ISAs).
 * The compiler's clones for AVX-512 and AVX2 are picked at run time
 * (calibration only: the serving kernels have their own dispatch). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
syrk_tile(float acc[TI][TJ], const float *x, int np, int kp, int i0, int j0)
{
    v16 c00 = {0}, c01 = {0}, c02 = {0}, c03 = {0}, c10 = {0}, c11 = {0}, c12 = {0}, c13 = {0};
    v16 c20 = {0}, c21 = {0}, c22 = {0}, c23 = {0}, c30 = {0}, c31 = {0}, c32 = {0}, c33 = {0};
    for (int p = 0; p < np; p++) {
        const float *xr = x + (long)p * kp;
        const v16 b0 = ld16(xr + j0), b1 = ld16(xr + j0 + 16), b2 = ld16(xr + j0 + 32),
                  b3 = ld16(xr + j0 + 48);
        const float a0 = xr[i0], a1 = xr[i0 + 1], a2 = xr[i0 + 2], a3 = xr[i0 + 3];
        c00 += a0 * b0, c01 += a0 * b1, c02 += a0 * b2, c03 += a0 * b3;
        c10 += a1 * b0, c11 += a1 * b1, c12 += a1 * b2, c13 += a1 * b3;
        c20 += a2 * b0, c21 += a2 * b1, c22 += a2 * b2, c23 += a2 * b3;
        c30 += a3 * b0, c31 += a3 * b1, c32 += a3 * b2, c33 += a3 * b3;
    }
    v16u *o = (v16u *)acc;
    o[0] = c00, o[1] = c01, o[2] = c02, o[3] = c03, o[4] = c10, o[5] = c11, o[6] = c12;
    o[7] = c13, o[8] = c20, o[9] = c21, o[10] = c22, o[11] = c23, o[12] = c30, o[13] = c31;
    o[14] = c32, o[15] = c33;
}

void chex_gptq_syrk(double *h, const float *x, int np, int kp)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int i0 = 0; i0 < kp; i0 += TI) {
        float acc[TI][TJ];
        for (int j0 = i0 / TJ * TJ; j0 < kp; j0 += TJ) {
            syrk_tile(acc, x, np, kp, i0, j0);
            for (int r = 0; r < TI; r++)
                for (int j = 0; j < TJ; j++)
                    h[(long)(i0 + r) * kp + j0 + j] += acc[r][j];
        }
    }
}

void chex_gptq_syrk_naive(double *h, const float *x, int np, int kp)
{
    for (int i = 0; i < kp; i++)
        for (int j = i / TJ * TJ; j < kp; j++) {
            float s = 0.0f;
            for (int p = 0; p < np; p++)
                s += x[(long)p * kp + i] * x[(long)p * kp + j];
            h[(long)i * kp + j] += s;
        }
}

/* H = V V^T with V upper triangular, from the last row up (the Cholesky
 * factor of H with rows and columns reversed, reversed back). Reads the
 * upper triangle of h, writes V's into v (k x k, lower part left 0).
 * Returns 0, or -1 if H is not positive definite.
 *
 * v_ij = (h_ij - sum_{t>j} v_it v_jt) / v_jj, by blocks J = [j0, j1) of CB
 * columns from the right: (A) every row i < j1 gets, for j in J, h_ij minus
 * the sum over t >= j1 (its "far" part, all known); (B) one thread factors
 * the diagonal block; (C) every row i < j0 finishes its columns of J from
 * the right, minus the sum over j < t < j1. Each v_ij is thus computed by one
 * thread as (h_ij - far) - near, both dot_d, whatever the team size: three
 * barriers per block instead of two per column (a loaded machine makes each
 * one expensive). */
#define CB 64
static int chol_upper_rev(double *v, const double *h, int ldh, int k)
{
    memset(v, 0, sizeof(double) * (size_t)k * k);
    int bad = 0;
#pragma omp parallel
    for (int j1 = k; j1 > 0; j1 -= CB) {
        const int j0 = j1 > CB ? j1 - CB : 0;
#pragma omp for schedule(static)
        for (int i = 0; i < j1; i++) {
            double *vi = v + (long)i * k;
            for (int j = i > j0 ? i : j0; j < j1; j++)
                vi[j] = h[(long)i * ldh + j] - dot_d(vi + j1, v + (long)j * k + j1, k - j1);
        }
#pragma omp single
        for (int j = j1 - 1; j >= j0; j--) {
            double *vj = v + (long)j * k;
            const double d = vj[j] - dot_d(vj + j + 1, vj + j + 1, j1 - j - 1);
            if (!(d > 0.0)) {
                bad = 1;
                break;
            }
            const double vjj = sqrt(d);
            for (int i = j0; i < j; i++) {
                double *vi = v + (long)i * k;
                vi[j] = (vi[j] - dot_d(vi + j + 1, vj + j + 1, j1 - j - 1)) / vjj;
            }
            vj[j] = vjj;
        }
        /* the single's barrier: bad is the same for every thread */
        if (bad)
            break;
#pragma omp for schedule(static)
        for (int i = 0; i < j0; i++) {
            double *vi = v + (long)i * k;
            for (int j = j1 - 1; j >= j0; j--) {
                const double *vj = v + (long)j * k;
                vi[j] = (vi[j] - dot_d(vi + j + 1, vj + j + 1, j1 - j - 1)) / vj[j];
            }
        }
    }
    return bad ? -1 : 0;
}

int chex_gptq_round(int8_t *q, float *sw, const float *w, int m, int k, double *h, int ldh,
                    double damp)
{
    double *v = malloc(sizeof(double) * (size_t)k * k);
    float *ut = malloc(sizeof(float) * (size_t)k * k);
    if (!v || !ut) {
        free(v);
        free(ut);
        return -1;
    }
    double mean = 0.0;
    for (int j = 0; j < k; j++) {
        double *d = h + (long)j * ldh + j;
        if (*d <= 0.0)
            *d = 1.0; /* an input that was always 0: any weight is exact */
        mean += *d;
    }
    mean /= k;
    /* Damping keeps the factorisation stable; more if it still fails. */
    double added = 0.0;
    for (double dp = damp > 0.0 ? damp : 1e-6;; dp *= 10.0) {
        for (int j = 0; j < k; j++)
            h[(long)j * ldh + j] += dp * mean - added;
        added = dp * mean;
        if (chol_upper_rev(v, h, ldh, k) == 0)
            break;
    }
    /* ut[j][i] = V_ij / V_jj (i < j): the feedback of input i's error into j. */
    for (int j = 0; j < k; j++) {
        const double vjj = v[(long)j * k + j];
        for (int i = 0; i < j; i++)
            ut[(long)j * k + i] = (float)(v[(long)i * k + j] / vjj);
    }
    free(v);
    for (int o = 0; o < m; o++) {
        float amax = 0.0f;
        for (int j = 0; j < k; j++)
            amax = fmaxf(amax, fabsf(w[(long)o * k + j]));
        sw[o] = amax > 0.0f ? amax / 127.0f : 1.0f;
    }
    int err = 0;
#pragma omp parallel
    {
        float *e = malloc(sizeof(float) * (size_t)k * 8);
        if (!e) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int o0 = 0; o0 < m; o0 += 8) {
            if (!e)
                continue;
            const int nr = m - o0 < 8 ? m - o0 : 8;
            for (int j = 0; j < k; j++) {
                const float *u = ut + (long)j * k;
                for (int r = 0; r < nr; r++) {
                    const float fb = dot_f(e + (long)r * k, u, j);
                    const int o = o0 + r;
                    const float wj = w[(long)o * k + j];
                    float t = nearbyintf((wj + fb) / sw[o]);
                    t = fminf(fmaxf(t, -127.0f), 127.0f);
                    q[(long)o * k + j] = (int8_t)t;
                    e[(long)r * k + j] = wj - t * sw[o];
                }
            }
        }
        free(e);
    }
    free(ut);
    return err ? -1 : 0;
}
