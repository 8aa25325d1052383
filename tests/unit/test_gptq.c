/* tests/unit/test_gptq.c - model/gptq.c: the second-moment accumulation
 * against its naive version (inputs before a PROT_NONE page), and GPTQ
 * rounding: on the int8 grid, equal to round-to-nearest when the inputs are
 * uncorrelated (nothing to steer), a smaller output error than
 * round-to-nearest when they are correlated, and the same bits whatever the
 * thread count and the buffers' alignment (calibration files are
 * reproducible). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "model/gptq.h"
#include "model/qkernels.h"
#include "tests/unit/helpers/guard.h"

static uint32_t seed = 12345u;

static float urand(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) / 16777216.0f;
}

static float nrand(void)
{
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += urand();
    return s - 6.0f;
}

static void test_syrk_matches_naive(void **state)
{
    (void)state;
    const int np = 77, kp = 192;
    float *src = malloc(sizeof(float) * np * kp);
    assert_non_null(src);
    for (int i = 0; i < np * kp; i++)
        src[i] = urand() < 0.3f ? 0.0f : urand() * 3.0f;
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, src, sizeof(float) * np * kp), 0);
    const float *x = (const float *)g.data;
    free(src);
    double *h1 = calloc((size_t)kp * kp, sizeof(double));
    double *h2 = calloc((size_t)kp * kp, sizeof(double));
    assert_non_null(h1);
    assert_non_null(h2);
    h1[5] = h2[5] = 2.5; /* it accumulates */
    chex_gptq_syrk(h1, x, np, kp);
    chex_gptq_syrk_naive(h2, x, np, kp);
    for (int i = 0; i < kp; i++)
        for (int j = i; j < kp; j++) {
            const double a = h1[(long)i * kp + j], b = h2[(long)i * kp + j];
            if (fabs(a - b) > 1e-4 * (fabs(b) + 1.0))
                fail_msg("h[%d][%d]: %g vs naive %g", i, j, a, b);
        }
    assert_true(h1[5] > 2.5);
    free(h1);
    free(h2);
    chex_guard_free(&g);
}

/* Output error of rounded weights over the inputs: sum_p (x_p . (w - wq))^2. */
static double out_err(const float *x, int np, int k, const float *w, const int8_t *q,
                      const float *sw, int m)
{
    double e = 0.0;
    for (int o = 0; o < m; o++)
        for (int p = 0; p < np; p++) {
            double d = 0.0;
            for (int j = 0; j < k; j++)
                d += (double)x[(long)p * k + j] * (w[(long)o * k + j] - sw[o] * q[(long)o * k + j]);
            e += d * d;
        }
    return e;
}

static void moments_naive(double *h, const float *x, int np, int k)
{
    for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) {
            double s = 0.0;
            for (int p = 0; p < np; p++)
                s += (double)x[(long)p * k + i] * x[(long)p * k + j];
            h[(long)i * k + j] = s;
        }
}

static void test_uncorrelated_is_round_to_nearest(void **state)
{
    (void)state;
    enum { M = 16, K = 64 };
    static float w[M * K];
    static double h[K * K];
    static int8_t q[M * K], qr[M * K];
    float sw[M], swr[M];
    for (int i = 0; i < M * K; i++)
        w[i] = nrand() * 0.1f;
    for (int j = 0; j < K; j++) /* diagonal: each input alone, no feedback */
        h[j * K + j] = 1.0 + j;
    h[3 * K + 3] = 0.0; /* an input that was always 0 */
    assert_int_equal(chex_gptq_round(q, sw, w, M, K, h, K, 0.01), 0);
    chex_q8_quantize_weights(qr, swr, w, M, K);
    assert_memory_equal(q, qr, sizeof q);
    assert_memory_equal(sw, swr, sizeof sw);
}

static void test_correlated_beats_round_to_nearest(void **state)
{
    (void)state;
    enum { M = 24, K = 96, NP = 400 };
    static float w[M * K], x[NP * K];
    static double h[K * K];
    static int8_t q[M * K], qr[M * K];
    float sw[M], swr[M];
    for (int i = 0; i < M * K; i++)
        w[i] = nrand() * 0.05f;
    w[7] = 0.9f; /* a large weight: a coarse grid for its row */
    /* Non-negative, correlated inputs (like ReLU outputs of shared causes). */
    for (int p = 0; p < NP; p++) {
        float z[4];
        for (int t = 0; t < 4; t++)
            z[t] = nrand();
        for (int j = 0; j < K; j++) {
            const float v = z[j % 4] + 0.5f * z[(j / 4) % 4] + 0.3f * nrand();
            x[(long)p * K + j] = v > 0.0f ? v : 0.0f;
        }
    }
    moments_naive(h, x, NP, K);
    assert_int_equal(chex_gptq_round(q, sw, w, M, K, h, K, 0.01), 0);
    chex_q8_quantize_weights(qr, swr, w, M, K);
    assert_memory_equal(sw, swr, sizeof sw); /* same grid */
    for (int i = 0; i < M * K; i++)
        assert_true(q[i] >= -127 && q[i] <= 127);
    const double eg = out_err(x, NP, K, w, q, sw, M), er = out_err(x, NP, K, w, qr, swr, M);
    if (!(eg < 0.5 * er))
        fail_msg("GPTQ output error %g not below half of round-to-nearest's %g", eg, er);
}

static void test_not_positive_definite_is_damped(void **state)
{
    (void)state;
    enum { M = 8, K = 32 };
    static float w[M * K];
    static double h[K * K];
    static int8_t q[M * K];
    float sw[M];
    for (int i = 0; i < M * K; i++)
        w[i] = nrand();
    for (int i = 0; i < K; i++) /* rank one: singular without damping */
        for (int j = 0; j < K; j++)
            h[i * K + j] = 1.0;
    assert_int_equal(chex_gptq_round(q, sw, w, M, K, h, K, 0.0), 0);
    for (int i = 0; i < M * K; i++)
        assert_true(q[i] >= -127 && q[i] <= 127);
}

/* Correlated non-negative inputs x (np x k) and weights w (m x k). */
static void correlated(float *x, int np, int k, float *w, int m)
{
    for (int i = 0; i < m * k; i++)
        w[i] = nrand() * 0.05f;
    for (int p = 0; p < np; p++) {
        float z[4];
        for (int t = 0; t < 4; t++)
            z[t] = nrand();
        for (int j = 0; j < k; j++) {
            const float v = z[j % 4] + 0.5f * z[(j / 4) % 4] + 0.3f * nrand();
            x[(long)p * k + j] = v > 0.0f ? v : 0.0f;
        }
    }
}

/* Moments and rounding of one problem on `threads` threads, with every
 * buffer `shift` floats (doubles) past a 64-byte boundary. */
static void run_at(int threads, int shift, const float *x, int np, int kp, const float *w, int m,
                   int k, double *hout, int8_t *q, float *sw)
{
    float *xa = aligned_alloc(64, sizeof(float) * ((size_t)np * kp + 16));
    float *wa = aligned_alloc(64, sizeof(float) * ((size_t)m * k + 16));
    double *ha = aligned_alloc(64, sizeof(double) * ((size_t)kp * kp + 8));
    assert_non_null(xa);
    assert_non_null(wa);
    assert_non_null(ha);
    memcpy(xa + shift, x, sizeof(float) * (size_t)np * kp);
    memcpy(wa + shift, w, sizeof(float) * (size_t)m * k);
    memset(ha, 0, sizeof(double) * ((size_t)kp * kp + 8));
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    chex_gptq_syrk(ha + shift % 8, xa + shift, np, kp);
    memcpy(hout, ha + shift % 8, sizeof(double) * (size_t)kp * kp);
    assert_int_equal(chex_gptq_round(q, sw, wa + shift, m, k, ha + shift % 8, kp, 0.01), 0);
    omp_set_num_threads(saved);
    free(xa);
    free(wa);
    free(ha);
}

static void test_same_bits_any_threads_and_alignment(void **state)
{
    (void)state;
    /* k = 200: four 64-column blocks of the factorisation, the last short;
     * m = 20: a short last group of 8 rows. */
    enum { M = 20, K = 200, KP = 256, NP = 300 };
    static float w[M * K], x[NP * KP], xk[NP * K];
    static double h0[KP * KP], h1[KP * KP];
    static int8_t q0[M * K], q1[M * K], qr[M * K];
    float sw0[M], sw1[M], swr[M];
    correlated(xk, NP, K, w, M);
    memset(x, 0, sizeof x);
    for (int p = 0; p < NP; p++)
        memcpy(x + (long)p * KP, xk + (long)p * K, sizeof(float) * K);
    run_at(1, 0, x, NP, KP, w, M, K, h0, q0, sw0);
    const int runs[][2] = {{2, 0}, {3, 5}, {2, 3}, {1, 7}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        run_at(runs[r][0], runs[r][1], x, NP, KP, w, M, K, h1, q1, sw1);
        assert_memory_equal(h0, h1, sizeof h0);
        assert_memory_equal(q0, q1, sizeof q0);
        assert_memory_equal(sw0, sw1, sizeof sw0);
    }
    /* and it is still GPTQ: well below round-to-nearest's output error */
    chex_q8_quantize_weights(qr, swr, w, M, K);
    const double eg = out_err(xk, NP, K, w, q0, sw0, M), er = out_err(xk, NP, K, w, qr, swr, M);
    if (!(eg < 0.5 * er))
        fail_msg("GPTQ output error %g not below half of round-to-nearest's %g", eg, er);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syrk_matches_naive),
        cmocka_unit_test(test_uncorrelated_is_round_to_nearest),
        cmocka_unit_test(test_correlated_beats_round_to_nearest),
        cmocka_unit_test(test_not_positive_definite_is_damped),
        cmocka_unit_test(test_same_bits_any_threads_and_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
