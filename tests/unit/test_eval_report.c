/* Per-label results: not-evaluated labels (never 0.5), unknown cases left
 * out, the mean, the table with the demo warning, metrics JSON. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/eval/labels.h"
#include "tools/eval/report.h"

#define N 6
#define L 4
static const char *const labels[L] = {"Mass", "Nodule", "Hernia", "Edema"};
/* Mass: clean 0/1 truth; Nodule: one unknown truth and one NaN score;
 * Hernia: no positive case; Edema: absent from the labels file. */
static const double scores[N][L] = {
    {0.9, 0.8, 0.1, 0.5}, {0.7, NAN, 0.2, 0.5}, {0.4, 0.3, 0.3, 0.5},
    {0.2, 0.6, 0.4, 0.5}, {0.6, 0.1, 0.5, 0.5}, {0.1, 0.7, 0.6, 0.5},
};
static const uint8_t truth[N][L] = {
    {1, 1, 0, CHEX_EVAL_UNKNOWN}, {1, 1, 0, CHEX_EVAL_UNKNOWN}, {0, CHEX_EVAL_UNKNOWN, 0, CHEX_EVAL_UNKNOWN},
    {0, 0, 0, CHEX_EVAL_UNKNOWN}, {1, 0, 0, CHEX_EVAL_UNKNOWN}, {0, 1, 0, CHEX_EVAL_UNKNOWN},
};
static const int has_truth[L] = {1, 1, 1, 0};

static void compute(chex_eval_result *res, chex_eval_ci ci)
{
    chex_eval_opts eo = {ci, 500, 3};
    assert_int_equal(chex_eval_compute(&scores[0][0], &truth[0][0], has_truth, N, L, labels, &eo, res),
                     CHEX_EVAL_OK);
}

static void test_compute(void **state)
{
    (void)state;
    chex_eval_result res[L];
    compute(res, CHEX_EVAL_CI_DELONG);
    /* Mass: pos {0.9,0.7,0.6} vs neg {0.4,0.2,0.1}: perfect */
    assert_true(res[0].evaluated);
    assert_true(res[0].r.auc == 1.0);
    assert_int_equal(res[0].r.n_pos, 3);
    assert_int_equal(res[0].r.n_neg, 3);
    /* Nodule: rows 0,5 positive (0.8, 0.7), rows 3,4 negative (0.6, 0.1) -> 1.0; 2 left out */
    assert_true(res[1].evaluated);
    assert_true(res[1].r.auc == 1.0);
    assert_int_equal(res[1].r.n_pos, 2);
    assert_int_equal(res[1].r.n_neg, 2);
    assert_int_equal(res[1].n_unknown, 2);
    assert_false(res[2].evaluated);
    assert_string_equal(res[2].reason, "no positive case");
    assert_int_equal(res[2].r.n_neg, 6);
    assert_false(res[3].evaluated);
    assert_string_equal(res[3].reason, "no such label in the labels file");
    int k;
    assert_true(chex_eval_mean(res, L, &k) == 1.0);
    assert_int_equal(k, 2);
}

static void test_mean_skips_unevaluated(void **state)
{
    (void)state;
    /* B has no negative case: counted as 0.5 it would make the mean 0.75;
     * the mean is over evaluated labels only. */
    const double s[4][2] = {{0.9, 0.1}, {0.8, 0.1}, {0.2, 0.1}, {0.3, 0.1}};
    const uint8_t y[4][2] = {{1, 1}, {1, 1}, {0, 1}, {0, 1}};
    const int has[2] = {1, 1};
    const char *const names[2] = {"A", "B"};
    chex_eval_opts eo = {CHEX_EVAL_CI_DELONG, 0, 0};
    chex_eval_result res[2];
    assert_int_equal(chex_eval_compute(&s[0][0], &y[0][0], has, 4, 2, names, &eo, res), CHEX_EVAL_OK);
    assert_true(res[0].evaluated);
    assert_false(res[1].evaluated);
    assert_string_equal(res[1].reason, "no negative case");
    int k;
    assert_true(chex_eval_mean(res, 2, &k) == 1.0);
    assert_int_equal(k, 1);
    res[0].evaluated = 0;
    assert_true(isnan(chex_eval_mean(res, 2, &k)));
    assert_int_equal(k, 0);
}

static char *table_text(const chex_eval_result *res, int demo, chex_eval_ci ci)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    chex_eval_opts eo = {ci, 500, 3};
    chex_eval_print_table(f, res, L, &eo, demo);
    fclose(f);
    return buf;
}

static void test_table(void **state)
{
    (void)state;
    chex_eval_result res[L];
    compute(res, CHEX_EVAL_CI_DELONG);
    char *t = table_text(res, 0, CHEX_EVAL_CI_DELONG);
    assert_non_null(strstr(t, "95% CI (DeLong)"));
    assert_non_null(strstr(t, "Mass                  1.0000"));
    assert_non_null(strstr(t, "Hernia                     -  not evaluated           0       6  (no positive case)"));
    assert_non_null(strstr(t, "Edema                      -  not evaluated           0       0  (no such label in the labels file)"));
    assert_non_null(strstr(t, "mean AUROC over 2 evaluated labels (of 4): 1.0000"));
    assert_null(strstr(t, "WARNING"));
    free(t);
    t = table_text(res, 1, CHEX_EVAL_CI_BOOTSTRAP);
    assert_non_null(strstr(t, "95% CI (bootstrap)"));
    /* warning before and after the table */
    char *w1 = strstr(t, "WARNING: demo weights");
    assert_non_null(w1);
    assert_non_null(strstr(w1 + 1, "WARNING: demo weights"));
    free(t);
}

static void test_json(void **state)
{
    (void)state;
    chex_eval_result res[L];
    compute(res, CHEX_EVAL_CI_BOOTSTRAP);
    chex_eval_opts eo = {CHEX_EVAL_CI_BOOTSTRAP, 500, 3};
    json_t *j = chex_eval_results_json(res, L, &eo);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "ci_method")), "bootstrap");
    assert_int_equal(json_integer_value(json_object_get(j, "bootstrap_reps")), 500);
    assert_int_equal(json_integer_value(json_object_get(j, "n_evaluated")), 2);
    assert_true(json_real_value(json_object_get(j, "mean_auroc")) == 1.0);
    json_t *arr = json_object_get(j, "labels");
    assert_int_equal(json_array_size(arr), L);
    json_t *mass = json_array_get(arr, 0), *edema = json_array_get(arr, 3);
    assert_true(json_is_true(json_object_get(mass, "evaluated")));
    assert_true(json_real_value(json_object_get(mass, "auroc")) == 1.0);
    assert_true(json_is_false(json_object_get(edema, "evaluated")));
    assert_true(json_is_null(json_object_get(edema, "auroc")));
    assert_string_equal(json_string_value(json_object_get(edema, "reason")),
                        "no such label in the labels file");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 1), "n_unknown")), 2);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compute), cmocka_unit_test(test_mean_skips_unevaluated),
        cmocka_unit_test(test_table),   cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
