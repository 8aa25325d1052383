/* tools/eval/report.h - per-label metrics of an evaluation, the printed table,
 * metrics.json. Reentrant; the caller owns every array. */
#ifndef CHEX_EVAL_REPORT_H
#define CHEX_EVAL_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tools/eval/auroc.h"

#define CHEX_EVAL_LABEL_LEN 64

typedef enum { CHEX_EVAL_CI_DELONG = 0, CHEX_EVAL_CI_BOOTSTRAP } chex_eval_ci;

typedef struct {
    chex_eval_ci ci;
    int reps;       /* bootstrap resamples (2000 by default) */
    uint64_t seed;  /* bootstrap seed */
} chex_eval_opts;

typedef struct {
    char label[CHEX_EVAL_LABEL_LEN];
    int evaluated;          /* 0: reason says why; auroc fields are unset */
    char reason[96];
    chex_auroc r;           /* auc, se, 95% CI, n_pos, n_neg */
    size_t n_unknown;       /* cases left out: no truth or no score for this label */
} chex_eval_result;

/* Metrics of L labels over n cases. scores is (n, L) row-major, NAN where a
 * case has no score; truth is (n, L) with 0, 1 or CHEX_EVAL_UNKNOWN;
 * has_truth[l] = 0 when the labels file does not carry label l (reported
 * "not evaluated", never 0.5), as is a label without a positive or without a
 * negative case. Fails only on NOMEM or bad arguments. */
chex_eval_err chex_eval_compute(const double *scores, const uint8_t *truth, const int *has_truth,
                                size_t n, int L, const char *const *labels,
                                const chex_eval_opts *opts, chex_eval_result *res);

/* Mean AUROC over the evaluated labels (NAN if none); *n_eval gets their count. */
double chex_eval_mean(const chex_eval_result *res, int L, int *n_eval);

/* The warning printed with results of demo weights. */
extern const char chex_eval_demo_warning[];

/* Human-readable table: label, AUROC, 95% CI, n_pos, n_neg; the mean AUROC;
 * the demo warning before and after when demo is set. */
void chex_eval_print_table(FILE *f, const chex_eval_result *res, int L, const chex_eval_opts *opts,
                           int demo);

/* {"ci_method", "ci_level", "labels": [...], "mean_auroc", "n_evaluated"};
 * new reference, NULL on ENOMEM. NaN values become null. */
json_t *chex_eval_results_json(const chex_eval_result *res, int L, const chex_eval_opts *opts);

/* Name of the CI method for tables and JSON ("DeLong", "bootstrap"). */
const char *chex_eval_ci_name(const chex_eval_opts *opts);

#endif
