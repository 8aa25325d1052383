/* AUROC, DeLong variance, bootstrap and ROC curve against hand-computed values
 * and a plain O(n_pos * n_neg) implementation of the definitions. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/eval/auroc.h"

/* psi(x, y) = 1 if x > y, 1/2 if tied, 0 below: the Mann-Whitney kernel. */
static double psi(double x, double y)
{
    return x > y ? 1.0 : x == y ? 0.5 : 0.0;
}

/* DeLong et al. 1988 written out: V10_i = mean_j psi(X_i, Y_j),
 * V01_j = mean_i psi(X_i, Y_j), var = S10/m + S01/n. */
static void naive_delong(const double *s, const uint8_t *y, size_t n, double *auc, double *var)
{
    size_t m = 0, k = 0;
    for (size_t i = 0; i < n; i++)
        m += y[i];
    k = n - m;
    double *v10 = calloc(m, sizeof *v10), *v01 = calloc(k, sizeof *v01);
    assert_non_null(v10);
    assert_non_null(v01);
    size_t a = 0;
    for (size_t i = 0; i < n; i++) {
        if (!y[i])
            continue;
        size_t b = 0;
        for (size_t j = 0; j < n; j++) {
            if (y[j])
                continue;
            double p = psi(s[i], s[j]);
            v10[a] += p / (double)k;
            v01[b] += p / (double)m;
            b++;
        }
        a++;
    }
    double sum = 0.0;
    for (size_t i = 0; i < m; i++)
        sum += v10[i];
    *auc = sum / (double)m;
    double s10 = 0.0, s01 = 0.0;
    for (size_t i = 0; i < m; i++)
        s10 += (v10[i] - *auc) * (v10[i] - *auc);
    for (size_t j = 0; j < k; j++)
        s01 += (v01[j] - *auc) * (v01[j] - *auc);
    *var = s10 / (double)(m - 1) / (double)m + s01 / (double)(k - 1) / (double)k;
    free(v10);
    free(v01);
}

static uint64_t lcg_state = 12345;
static double urand(void)
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg_state >> 11) * (1.0 / 9007199254740992.0);
}

static void test_hand_computed(void **state)
{
    (void)state;
    /* positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4 */
    const double s[] = {0.9, 0.5, 0.4, 0.1};
    const uint8_t y[] = {1, 0, 1, 0};
    double auc;
    assert_int_equal(chex_auroc_compute(s, y, 4, &auc), CHEX_EVAL_OK);
    assert_true(fabs(auc - 0.75) < 1e-15);

    /* perfect, reversed, all tied */
    const double s2[] = {1, 2, 3, 4};
    const uint8_t y2[] = {0, 0, 1, 1}, y3[] = {1, 1, 0, 0};
    assert_int_equal(chex_auroc_compute(s2, y2, 4, &auc), CHEX_EVAL_OK);
    assert_true(auc == 1.0);
    assert_int_equal(chex_auroc_compute(s2, y3, 4, &auc), CHEX_EVAL_OK);
    assert_true(auc == 0.0);
    const double s4[] = {0.3, 0.3, 0.3, 0.3, 0.3};
    const uint8_t y4[] = {1, 0, 0, 1, 0};
    assert_int_equal(chex_auroc_compute(s4, y4, 5, &auc), CHEX_EVAL_OK);
    assert_true(auc == 0.5);

    /* one tie across classes: pos {0.8, 0.6}, neg {0.6, 0.2}: (1 + 1 + 0.5 + 1) / 4 */
    const double s5[] = {0.8, 0.6, 0.6, 0.2};
    const uint8_t y5[] = {1, 1, 0, 0};
    assert_int_equal(chex_auroc_compute(s5, y5, 4, &auc), CHEX_EVAL_OK);
    assert_true(fabs(auc - 0.875) < 1e-15);
}

static void test_errors(void **state)
{
    (void)state;
    const double s[] = {0.1, 0.2, NAN};
    const uint8_t ones[] = {1, 1, 1}, bad[] = {0, 2, 1}, ok[] = {0, 1, 1};
    double auc;
    chex_auroc r;
    assert_int_equal(chex_auroc_compute(s, ones, 2, &auc), CHEX_EVAL_ERR_ONECLASS);
    assert_int_equal(chex_auroc_delong(s, ones, 2, &r), CHEX_EVAL_ERR_ONECLASS);
    assert_int_equal(r.n_pos, 2);
    assert_int_equal(r.n_neg, 0);
    assert_int_equal(chex_auroc_compute(s, bad, 2, &auc), CHEX_EVAL_ERR_ARG);
    assert_int_equal(chex_auroc_compute(s, ok, 3, &auc), CHEX_EVAL_ERR_ARG); /* NaN score */
    assert_int_equal(chex_auroc_compute(NULL, ok, 2, &auc), CHEX_EVAL_ERR_ARG);
    assert_int_equal(chex_auroc_compute(s, ok, 0, &auc), CHEX_EVAL_ERR_ARG);
    assert_int_equal(chex_auroc_bootstrap(s, ok, 2, 1, 1, &r), CHEX_EVAL_ERR_ARG); /* reps < 2 */
    assert_string_equal(chex_eval_strerror(CHEX_EVAL_ERR_ONECLASS), "no positive or no negative case");
    assert_string_equal(chex_eval_strerror(CHEX_EVAL_ERR_COUNT), "unknown error");
}

/* single positive: AUROC defined, DeLong variance not (S10 of one value) */
static void test_single_positive(void **state)
{
    (void)state;
    const double s[] = {0.9, 0.5, 0.4, 0.95};
    const uint8_t y[] = {1, 0, 0, 0};
    chex_auroc r;
    assert_int_equal(chex_auroc_delong(s, y, 4, &r), CHEX_EVAL_OK);
    assert_true(fabs(r.auc - 2.0 / 3.0) < 1e-15);
    assert_true(isnan(r.se) && isnan(r.ci_low) && isnan(r.ci_high));
}

/* fast DeLong == the definition, on continuous and on heavily tied scores */
static void test_delong_vs_naive(void **state)
{
    (void)state;
    for (int trial = 0; trial < 40; trial++) {
        size_t n = 20 + (size_t)(urand() * 400);
        double prev = 0.05 + 0.5 * urand();
        double *s = malloc(n * sizeof *s);
        uint8_t *y = malloc(n);
        assert_non_null(s);
        assert_non_null(y);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            y[i] = urand() < prev;
            m += y[i];
            double v = urand() + 0.4 * y[i];
            /* odd trials: only 6 distinct values -> large tie groups */
            s[i] = trial % 2 ? floor(v * 5.0) / 5.0 : v;
        }
        if (m < 2 || n - m < 2) {
            y[0] = 1;
            y[1] = 1;
            y[2] = 0;
            y[3] = 0;
        }
        double auc_ref, var_ref;
        naive_delong(s, y, n, &auc_ref, &var_ref);
        chex_auroc r;
        assert_int_equal(chex_auroc_delong(s, y, n, &r), CHEX_EVAL_OK);
        assert_true(fabs(r.auc - auc_ref) < 1e-12);
        assert_true(fabs(r.se * r.se - var_ref) < 1e-12 * (1.0 + var_ref));
        double lo = auc_ref - CHEX_EVAL_Z95 * sqrt(var_ref), hi = auc_ref + CHEX_EVAL_Z95 * sqrt(var_ref);
        assert_true(fabs(r.ci_low - (lo < 0 ? 0 : lo)) < 1e-9);
        assert_true(fabs(r.ci_high - (hi > 1 ? 1 : hi)) < 1e-9);
        double auc2;
        assert_int_equal(chex_auroc_compute(s, y, n, &auc2), CHEX_EVAL_OK);
        assert_true(auc2 == r.auc);
        free(s);
        free(y);
    }
}

static void test_bootstrap(void **state)
{
    (void)state;
    size_t n = 600;
    double *s = malloc(n * sizeof *s);
    uint8_t *y = malloc(n);
    assert_non_null(s);
    assert_non_null(y);
    for (size_t i = 0; i < n; i++) {
        y[i] = i % 4 == 0;
        s[i] = floor((urand() + 0.5 * y[i]) * 20.0) / 20.0;
    }
    chex_auroc d, b1, b2, b3;
    assert_int_equal(chex_auroc_delong(s, y, n, &d), CHEX_EVAL_OK);
    assert_int_equal(chex_auroc_bootstrap(s, y, n, 2000, 7, &b1), CHEX_EVAL_OK);
    assert_int_equal(chex_auroc_bootstrap(s, y, n, 2000, 7, &b2), CHEX_EVAL_OK);
    assert_int_equal(chex_auroc_bootstrap(s, y, n, 2000, 8, &b3), CHEX_EVAL_OK);
    /* same seed, same interval; another seed, another (close) interval */
    assert_true(b1.ci_low == b2.ci_low && b1.ci_high == b2.ci_high && b1.se == b2.se);
    assert_true(b1.ci_low != b3.ci_low || b1.ci_high != b3.ci_high);
    assert_true(b1.auc == d.auc);
    assert_int_equal(b1.n_pos, 150);
    assert_int_equal(b1.n_neg, 450);
    assert_true(b1.ci_low < b1.auc && b1.auc < b1.ci_high);
    /* the bootstrap SE estimates the same thing as DeLong's: within 15% */
    assert_true(fabs(b1.se - d.se) < 0.15 * d.se);
    assert_true(fabs(b1.ci_low - d.ci_low) < 0.02 && fabs(b1.ci_high - d.ci_high) < 0.02);
    free(s);
    free(y);
}

/* ROC curve: from (0,0) to (1,1), monotone, one point per distinct score,
 * trapezoid area equal to the AUROC (ties give the diagonal segment). */
static void test_roc_curve(void **state)
{
    (void)state;
    const double s[] = {0.9, 0.8, 0.8, 0.5, 0.3, 0.3, 0.1};
    const uint8_t y[] = {1, 1, 0, 1, 0, 1, 0};
    double fpr[8], tpr[8];
    size_t k;
    assert_int_equal(chex_roc_curve(s, y, 7, fpr, tpr, &k), CHEX_EVAL_OK);
    assert_int_equal(k, 6); /* 5 distinct scores + origin */
    const double efpr[] = {0, 0, 1.0 / 3, 1.0 / 3, 2.0 / 3, 1};
    const double etpr[] = {0, 0.25, 0.5, 0.75, 1, 1};
    double area = 0.0;
    for (size_t i = 0; i < k; i++) {
        assert_true(fabs(fpr[i] - efpr[i]) < 1e-15);
        assert_true(fabs(tpr[i] - etpr[i]) < 1e-15);
        if (i)
            area += (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0;
    }
    double auc;
    assert_int_equal(chex_auroc_compute(s, y, 7, &auc), CHEX_EVAL_OK);
    assert_true(fabs(area - auc) < 1e-15);
    assert_int_equal(chex_roc_curve(s, y, 7, NULL, tpr, &k), CHEX_EVAL_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_computed),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_single_positive), cmocka_unit_test(test_delong_vs_naive),
        cmocka_unit_test(test_bootstrap),       cmocka_unit_test(test_roc_curve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
