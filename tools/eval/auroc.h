/* tools/eval/auroc.h - area under the ROC curve, its confidence interval, the curve.
 *
 * All functions are reentrant (no global state) and take the caller's arrays:
 * scores[i] is the classifier's output for case i, labels[i] is 1 (positive)
 * or 0 (negative). Ties count one half (midranks), i.e. the AUROC equals the
 * Mann-Whitney U statistic divided by n_pos * n_neg, as scikit-learn's
 * roc_auc_score and pROC compute it.
 */
#ifndef CHEX_EVAL_AUROC_H
#define CHEX_EVAL_AUROC_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHEX_EVAL_OK = 0,
    CHEX_EVAL_ERR_ARG,      /* NULL pointer, label other than 0/1, NaN score */
    CHEX_EVAL_ERR_ONECLASS, /* no positive or no negative case: AUROC undefined */
    CHEX_EVAL_ERR_NOMEM,
    CHEX_EVAL_ERR_IO,       /* cannot open, read or write a file */
    CHEX_EVAL_ERR_FORMAT,   /* malformed CSV, missing column, bad number */
    CHEX_EVAL_ERR_COUNT
} chex_eval_err;

/* Static message for an error code (never NULL). */
const char *chex_eval_strerror(chex_eval_err e);

/* z of the two-sided 95% normal interval. */
#define CHEX_EVAL_Z95 1.959963984540054

typedef struct {
    double auc;
    double se;        /* standard error of auc (DeLong, or bootstrap std) */
    double ci_low;    /* 95% interval, clipped to [0, 1] */
    double ci_high;
    size_t n_pos, n_neg;
} chex_auroc;

/* AUROC only. O(n log n). */
chex_eval_err chex_auroc_compute(const double *scores, const uint8_t *labels, size_t n, double *auc);

/* AUROC with DeLong's variance, computed with the fast algorithm of Sun & Xu
 * (IEEE Signal Processing Letters 21(11), 2014): midranks of the positives
 * among the positives, of the negatives among the negatives and of everyone
 * give the structural components V10 (per positive) and V01 (per negative);
 * var = S10 / n_pos + S01 / n_neg with S the unbiased sample variances.
 * The interval is auc -/+ z95 * sqrt(var), clipped to [0, 1]. O(n log n). */
chex_eval_err chex_auroc_delong(const double *scores, const uint8_t *labels, size_t n,
                                chex_auroc *out);

/* AUROC with a stratified percentile bootstrap: `reps` resamples that draw
 * n_pos positives and n_neg negatives with replacement (so every resample has
 * both classes), generator xoshiro256** seeded from `seed` through splitmix64.
 * ci = 2.5th and 97.5th percentiles of the resampled AUROCs; se = their
 * standard deviation. Same seed, same data -> same interval. O(n log n + reps * n). */
chex_eval_err chex_auroc_bootstrap(const double *scores, const uint8_t *labels, size_t n,
                                   int reps, uint64_t seed, chex_auroc *out);

/* ROC curve: one point per distinct score threshold, from (0,0) to (1,1), in
 * order of decreasing threshold. fpr and tpr must hold n + 1 values; *npts
 * receives the number written. */
chex_eval_err chex_roc_curve(const double *scores, const uint8_t *labels, size_t n, double *fpr,
                             double *tpr, size_t *npts);

#endif
