/* Known answer: jrzech/reproduce-chexnet's predictions for 22,433 NIH test
 * images + the NIH labels give exactly that project's published 14 AUROCs
 * (tests/data/reference/PROVENANCE.md). Run from the repository root. */
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

#define REF "tests/data/reference/"

static void test_known_aurocs(void **state)
{
    (void)state;
    char msg[512] = "";
    chex_eval_table pred, lab;
    chex_csv aucs;
    chex_eval_err e = chex_eval_table_load(REF "jrzech_preds.csv", &pred, msg, sizeof msg);
    if (e)
        fail_msg("%s", msg);
    e = chex_eval_table_load(REF "Data_Entry_2017_v2020.csv.gz", &lab, msg, sizeof msg);
    if (e)
        fail_msg("%s", msg);
    e = chex_csv_load(REF "jrzech_aucs.csv", &aucs, msg, sizeof msg);
    if (e)
        fail_msg("%s", msg);
    assert_int_equal(chex_eval_table_rows(&pred), 22433);
    assert_int_equal(chex_eval_table_rows(&lab), 112120);
    assert_true(lab.findings_col >= 0);
    assert_int_equal(aucs.nrows, 14);

    const char *names[64];
    int cols[64];
    int L = chex_eval_preds_labels(&pred, names, cols, 64);
    assert_int_equal(L, 14);
    size_t n = chex_eval_table_rows(&pred);
    double *scores = malloc(n * (size_t)L * sizeof *scores), *col = malloc(n * sizeof *col);
    uint8_t *truth = malloc(n * (size_t)L), *y = malloc(chex_eval_table_rows(&lab));
    int has[64];
    assert_non_null(scores);
    assert_non_null(col);
    assert_non_null(truth);
    assert_non_null(y);
    for (int l = 0; l < L; l++) {
        assert_int_equal(chex_eval_preds_scores(&pred, cols[l], col, msg, sizeof msg), CHEX_EVAL_OK);
        has[l] = chex_eval_labels_truth(&lab, names[l], y);
        assert_int_equal(has[l], 1);
        for (size_t r = 0; r < n; r++) {
            long m = chex_eval_table_find(&lab, chex_eval_table_image(&pred, r));
            assert_true(m >= 0);
            scores[r * (size_t)L + (size_t)l] = col[r];
            truth[r * (size_t)L + (size_t)l] = y[m];
        }
    }
    chex_eval_result res[14];
    chex_eval_opts eo = {CHEX_EVAL_CI_DELONG, 2000, 1};
    assert_int_equal(chex_eval_compute(scores, truth, has, n, L, names, &eo, res), CHEX_EVAL_OK);
    int checked = 0;
    for (size_t r = 0; r < aucs.nrows; r++) {
        const char *label = aucs.rows[r][0];
        double want = strtod(aucs.rows[r][1], NULL);
        for (int l = 0; l < L; l++) {
            if (strcmp(res[l].label, label) != 0)
                continue;
            assert_true(res[l].evaluated);
            if (fabs(res[l].r.auc - want) > 1e-6)
                fail_msg("%s: AUROC %.10f, published %.10f", label, res[l].r.auc, want);
            assert_true(res[l].r.ci_low < want && want < res[l].r.ci_high);
            assert_int_equal(res[l].n_unknown, 0);
            checked++;
        }
    }
    assert_int_equal(checked, 14);
    /* counts quoted in the provenance note */
    assert_string_equal(res[0].label, "Atelectasis");
    assert_int_equal(res[0].r.n_pos, 2423);
    assert_string_equal(res[13].label, "Hernia");
    assert_int_equal(res[13].r.n_pos, 42);
    int k;
    assert_true(fabs(chex_eval_mean(res, L, &k) - 0.8383) < 5e-5);
    assert_int_equal(k, 14);

    free(scores);
    free(col);
    free(truth);
    free(y);
    chex_csv_free(&aucs);
    chex_eval_table_free(&pred);
    chex_eval_table_free(&lab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_known_aurocs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
