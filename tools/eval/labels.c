/* tools/eval/labels.c - labels and predictions files (see labels.h). */
#include "tools/eval/labels.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const image_names[] = {"Image Index", "file", "filename", "image", "path", NULL};
static const char *const findings_names[] = {"Finding Labels", "finding_labels", "findings", NULL};

static int cmp_rows(const void *a, const void *b, void *ctx)
{
    const chex_eval_table *t = ctx;
    const char *x = chex_eval_table_image(t, *(const size_t *)a);
    const char *y = chex_eval_table_image(t, *(const size_t *)b);
    return strcmp(x, y);
}

void chex_eval_table_free(chex_eval_table *t)
{
    if (!t)
        return;
    chex_csv_free(&t->csv);
    free(t->by_name);
    memset(t, 0, sizeof *t);
}

chex_eval_err chex_eval_table_load(const char *path, chex_eval_table *t, char *msg, size_t msglen)
{
    memset(t, 0, sizeof *t);
    chex_eval_err e = chex_csv_load(path, &t->csv, msg, msglen);
    if (e)
        return e;
    int ic = chex_csv_find_col(&t->csv, image_names);
    t->image_col = ic >= 0 ? ic : 0;
    t->findings_col = chex_csv_find_col(&t->csv, findings_names);
    size_t n = t->csv.nrows;
    t->by_name = malloc((n ? n : 1) * sizeof *t->by_name);
    if (!t->by_name) {
        chex_eval_table_free(t);
        snprintf(msg, msglen, "out of memory");
        return CHEX_EVAL_ERR_NOMEM;
    }
    for (size_t r = 0; r < n; r++) {
        if (chex_eval_table_image(t, r)[0] == '\0') {
            snprintf(msg, msglen, "%s: line %zu: empty image name in column '%s'", path,
                     t->csv.line[r], t->csv.header[t->image_col]);
            chex_eval_table_free(t);
            return CHEX_EVAL_ERR_FORMAT;
        }
        t->by_name[r] = r;
    }
    qsort_r(t->by_name, n, sizeof *t->by_name, cmp_rows, t);
    for (size_t i = 1; i < n; i++) {
        size_t a = t->by_name[i - 1], b = t->by_name[i];
        if (strcmp(chex_eval_table_image(t, a), chex_eval_table_image(t, b)) == 0) {
            size_t la = t->csv.line[a] < t->csv.line[b] ? t->csv.line[a] : t->csv.line[b];
            size_t lb = t->csv.line[a] < t->csv.line[b] ? t->csv.line[b] : t->csv.line[a];
            snprintf(msg, msglen, "%s: line %zu: image '%s' already listed on line %zu", path, lb,
                     chex_eval_table_image(t, a), la);
            chex_eval_table_free(t);
            return CHEX_EVAL_ERR_FORMAT;
        }
    }
    return CHEX_EVAL_OK;
}

long chex_eval_table_find(const chex_eval_table *t, const char *image)
{
    size_t lo = 0, hi = t->csv.nrows;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(chex_eval_table_image(t, t->by_name[mid]), image);
        if (c == 0)
            return (long)t->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* 1 if label is one of the '|'-separated findings (blanks around each trimmed). */
static int has_finding(const char *findings, const char *label)
{
    char tok[256];
    const char *p = findings;
    for (;;) {
        const char *q = strchr(p, '|');
        size_t k = q ? (size_t)(q - p) : strlen(p);
        if (k < sizeof tok) {
            memcpy(tok, p, k);
            tok[k] = '\0';
            if (chex_eval_name_eq(tok, label))
                return 1;
        }
        if (!q)
            return 0;
        p = q + 1;
    }
}

static int blank(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0';
}

/* 1, 0 or unknown from a 0/1 cell. */
static uint8_t truth_value(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !blank(end))
        return CHEX_EVAL_UNKNOWN;
    if (v == 1.0)
        return 1;
    if (v == 0.0)
        return 0;
    return CHEX_EVAL_UNKNOWN;
}

int chex_eval_labels_truth(const chex_eval_table *t, const char *label, uint8_t *y)
{
    size_t n = t->csv.nrows;
    if (t->findings_col >= 0) {
        for (size_t r = 0; r < n; r++) {
            const char *f = t->csv.rows[r][t->findings_col];
            y[r] = blank(f) ? CHEX_EVAL_UNKNOWN : (uint8_t)has_finding(f, label);
        }
        return 1;
    }
    const char *const names[] = {label, NULL};
    int c = chex_csv_find_col(&t->csv, names);
    if (c < 0 || c == t->image_col)
        return 0;
    for (size_t r = 0; r < n; r++)
        y[r] = truth_value(t->csv.rows[r][c]);
    return 1;
}

static const char *strip_prob(const char *name)
{
    return strncasecmp(name, "prob_", 5) == 0 ? name + 5 : name;
}

int chex_eval_preds_col(const chex_eval_table *t, const char *label)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t c = 0; c < t->csv.ncols; c++) {
            if ((int)c == t->image_col)
                continue;
            const char *h = t->csv.header[c];
            int prefixed = strncasecmp(h, "prob_", 5) == 0;
            if (pass == 0 && prefixed && chex_eval_name_eq(h + 5, label))
                return (int)c;
            if (pass == 1 && !prefixed && chex_eval_name_eq(h, label))
                return (int)c;
        }
    }
    return -1;
}

int chex_eval_preds_labels(const chex_eval_table *t, const char **names, int *cols, int max)
{
    int k = 0;
    for (size_t c = 0; c < t->csv.ncols && k < max; c++) {
        if ((int)c == t->image_col)
            continue;
        names[k] = strip_prob(t->csv.header[c]);
        cols[k] = (int)c;
        k++;
    }
    return k;
}

chex_eval_err chex_eval_preds_scores(const chex_eval_table *t, int col, double *s, char *msg,
                                     size_t msglen)
{
    for (size_t r = 0; r < t->csv.nrows; r++) {
        const char *v = t->csv.rows[r][col];
        if (blank(v)) {
            s[r] = NAN;
            continue;
        }
        char *end;
        double x = strtod(v, &end);
        if (end == v || !blank(end) || isinf(x)) {
            snprintf(msg, msglen, "line %zu, column '%s': '%.40s' is not a number", t->csv.line[r],
                     t->csv.header[col], v);
            return CHEX_EVAL_ERR_FORMAT;
        }
        s[r] = x;
    }
    return CHEX_EVAL_OK;
}
