/* tools/eval/labels.h - ground truth and predictions files for chex evaluate.
 *
 * Labels file layouts (detected from the header, names compared ignoring case
 * and treating ' ' and '_' alike):
 *  - findings: a column "Finding Labels" (or "finding_labels") whose value
 *    joins findings with '|' ("Effusion|Mass", "No Finding"): NIH ChestX-ray14
 *    Data_Entry_2017 and the shared xrays labels.csv. A case is positive for
 *    a label when the label is one of its findings, negative otherwise; an
 *    empty value is unknown for every label.
 *  - columns: one column per label holding 1 (positive) or 0 (negative);
 *    any other value (empty, -1 "uncertain", text) is unknown for that label.
 * The image column is "Image Index", "file", "filename", "image" or "path",
 * else the first column. Each image may be listed once.
 *
 * Predictions files: the image column as above and one column per label
 * named prob_<Label> or <Label> with a probability (or any score); an empty
 * value or "nan" is unknown. This is the layout chex evaluate writes.
 */
#ifndef CHEX_EVAL_LABELS_H
#define CHEX_EVAL_LABELS_H

#include <stddef.h>
#include <stdint.h>

#include "tools/eval/auroc.h"
#include "tools/eval/csv.h"

/* Truth value of a case whose label is unknown (excluded for that label). */
#define CHEX_EVAL_UNKNOWN 255

typedef struct {
    chex_csv csv;
    int image_col;
    int findings_col;  /* -1 for the columns layout */
    size_t *by_name;   /* row indices sorted by image name */
} chex_eval_table;

/* Loads a labels or predictions file (plain or gzip CSV) and checks the image
 * column (non-empty, no duplicates). msg names the file and line on error. */
chex_eval_err chex_eval_table_load(const char *path, chex_eval_table *t, char *msg, size_t msglen);
void chex_eval_table_free(chex_eval_table *t);

static inline size_t chex_eval_table_rows(const chex_eval_table *t)
{
    return t->csv.nrows;
}
static inline const char *chex_eval_table_image(const chex_eval_table *t, size_t row)
{
    return t->csv.rows[row][t->image_col];
}

/* Row of an image name (exact match), or -1. O(log n). */
long chex_eval_table_find(const chex_eval_table *t, const char *image);

/* Ground truth of `label` for every row into y (rows values: 0, 1 or
 * CHEX_EVAL_UNKNOWN). Returns 1 if the file carries the label (always for the
 * findings layout), 0 if it has no such column (y untouched). */
int chex_eval_labels_truth(const chex_eval_table *t, const char *label, uint8_t *y);

/* Column of label in a predictions file (prob_<label> preferred), or -1. */
int chex_eval_preds_col(const chex_eval_table *t, const char *label);

/* Label names of a predictions file: every column but the image column, with
 * a "prob_" prefix removed. Writes up to max pointers into names (borrowed
 * from t; a stripped name points past the prefix) and their columns into cols;
 * returns the count. */
int chex_eval_preds_labels(const chex_eval_table *t, const char **names, int *cols, int max);

/* Scores of column col for every row into s (NAN when empty or "nan").
 * A value that is not a number is an error naming line and column. */
chex_eval_err chex_eval_preds_scores(const chex_eval_table *t, int col, double *s, char *msg,
                                     size_t msglen);

#endif
