/* tools/eval/evaluate.h - `chex evaluate`: site validation of a checkpoint.
 *
 * Classifies every image listed in a labels file (or reads an existing
 * predictions file), then reports per-label AUROC with a 95% confidence
 * interval, positive/negative counts and the mean AUROC; writes
 * predictions.csv, metrics.json and optional ROC plots. See docs/EVALUATION.md.
 */
#ifndef CHEX_EVALUATE_H
#define CHEX_EVALUATE_H

/* Entry point of `chex evaluate ...`; argv[0] is "evaluate". Parses its own
 * options, prints errors on stderr. Returns the process exit status:
 * 0 done, 1 runtime failure (unreadable files, no label evaluable), 2 usage. */
int chex_eval_main(int argc, char **argv);

#endif
