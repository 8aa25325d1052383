/* tools/eval/auroc.c - AUROC (midranks), DeLong's variance (Sun & Xu 2014),
 * stratified bootstrap, ROC curve. See auroc.h. */
#include "tools/eval/auroc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const eval_messages[CHEX_EVAL_ERR_COUNT] = {
    [CHEX_EVAL_OK] = "ok",
    [CHEX_EVAL_ERR_ARG] = "invalid argument",
    [CHEX_EVAL_ERR_ONECLASS] = "no positive or no negative case",
    [CHEX_EVAL_ERR_NOMEM] = "out of memory",
    [CHEX_EVAL_ERR_IO] = "input/output error",
    [CHEX_EVAL_ERR_FORMAT] = "malformed input",
};

const char *chex_eval_strerror(chex_eval_err e)
{
    if ((int)e < 0 || e >= CHEX_EVAL_ERR_COUNT || !eval_messages[e])
        return "unknown error";
    return eval_messages[e];
}

typedef struct {
    double s;
    uint8_t y;
} scored;

static int cmp_scored_asc(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

/* Copies the cases, checks them and sorts them by increasing score.
 * On success the caller frees *out. */
static chex_eval_err sorted_cases(const double *scores, const uint8_t *labels, size_t n,
                                  scored **out, size_t *n_pos, size_t *n_neg)
{
    *out = NULL;
    if (!scores || !labels || n == 0)
        return CHEX_EVAL_ERR_ARG;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (labels[i] > 1 || isnan(scores[i]))
            return CHEX_EVAL_ERR_ARG;
        m += labels[i];
    }
    *n_pos = m;
    *n_neg = n - m;
    if (m == 0 || m == n)
        return CHEX_EVAL_ERR_ONECLASS;
    scored *c = malloc(n * sizeof *c);
    if (!c)
        return CHEX_EVAL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        c[i].s = scores[i];
        c[i].y = labels[i];
    }
    qsort(c, n, sizeof *c, cmp_scored_asc);
    *out = c;
    return CHEX_EVAL_OK;
}

/* End (exclusive) of the group of equal scores starting at i. */
static size_t tie_end(const scored *c, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && c[j].s == c[i].s)
        j++;
    return j;
}

/* Walks the tie groups of sorted cases. For a positive in a group, its
 * placement V10 = (midrank among all - midrank among positives) / n_neg,
 * which is (negatives below + half the negatives tied with it) / n_neg; for a
 * negative V01 = 1 - (midrank among all - midrank among negatives) / n_pos.
 * With mean = NULL returns sum V10 (so auc = sum / n_pos); otherwise returns
 * sum (V10 - mean)^2 over positives and stores sum (V01 - mean)^2 in *ss01. */
static double placements(const scored *c, size_t n, size_t m, size_t nn, const double *mean,
                         double *ss01)
{
    double below_neg = 0.0, below_pos = 0.0, acc10 = 0.0, acc01 = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = tie_end(c, n, i);
        double kp = 0.0, kn = 0.0;
        for (size_t t = i; t < j; t++) {
            if (c[t].y)
                kp += 1.0;
            else
                kn += 1.0;
        }
        double v10 = (below_neg + 0.5 * kn) / (double)nn;
        double v01 = 1.0 - (below_pos + 0.5 * kp) / (double)m;
        if (!mean) {
            acc10 += kp * v10;
        } else {
            acc10 += kp * (v10 - *mean) * (v10 - *mean);
            acc01 += kn * (v01 - *mean) * (v01 - *mean);
        }
        below_neg += kn;
        below_pos += kp;
        i = j;
    }
    if (ss01)
        *ss01 = acc01;
    return acc10;
}

chex_eval_err chex_auroc_compute(const double *scores, const uint8_t *labels, size_t n, double *auc)
{
    if (!auc)
        return CHEX_EVAL_ERR_ARG;
    scored *c;
    size_t m, nn;
    chex_eval_err e = sorted_cases(scores, labels, n, &c, &m, &nn);
    if (e)
        return e;
    *auc = placements(c, n, m, nn, NULL, NULL) / (double)m;
    free(c);
    return CHEX_EVAL_OK;
}

static double clip01(double x)
{
    return x < 0.0 ? 0.0 : x > 1.0 ? 1.0 : x;
}

chex_eval_err chex_auroc_delong(const double *scores, const uint8_t *labels, size_t n,
                                chex_auroc *out)
{
    if (!out)
        return CHEX_EVAL_ERR_ARG;
    memset(out, 0, sizeof *out);
    scored *c;
    size_t m, nn;
    chex_eval_err e = sorted_cases(scores, labels, n, &c, &m, &nn);
    out->n_pos = m;
    out->n_neg = nn;
    if (e)
        return e;
    double auc = placements(c, n, m, nn, NULL, NULL) / (double)m;
    double ss01;
    double ss10 = placements(c, n, m, nn, &auc, &ss01);
    free(c);
    out->auc = auc;
    if (m < 2 || nn < 2) {
        /* one case of a class: its sample variance is undefined */
        out->se = out->ci_low = out->ci_high = NAN;
        return CHEX_EVAL_OK;
    }
    double var = ss10 / (double)(m - 1) / (double)m + ss01 / (double)(nn - 1) / (double)nn;
    out->se = sqrt(var);
    out->ci_low = clip01(auc - CHEX_EVAL_Z95 * out->se);
    out->ci_high = clip01(auc + CHEX_EVAL_Z95 * out->se);
    return CHEX_EVAL_OK;
}

/* xoshiro256** (Blackman & Vigna), seeded by splitmix64. */
typedef struct {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, k): multiply-shift, bias below 2^-40 for k < 2^24. */
static size_t rng_below(rng *r, size_t k)
{
    return (size_t)(((unsigned __int128)rng_next(r) * (uint64_t)k) >> 64);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between order statistics (numpy's default). */
static double percentile_sorted(const double *v, size_t n, double q)
{
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    double f = pos - (double)lo;
    return v[lo] + f * (v[hi] - v[lo]);
}

chex_eval_err chex_auroc_bootstrap(const double *scores, const uint8_t *labels, size_t n,
                                   int reps, uint64_t seed, chex_auroc *out)
{
    if (!out || reps < 2)
        return CHEX_EVAL_ERR_ARG;
    memset(out, 0, sizeof *out);
    scored *c;
    size_t m, nn;
    chex_eval_err e = sorted_cases(scores, labels, n, &c, &m, &nn);
    out->n_pos = m;
    out->n_neg = nn;
    if (e)
        return e;
    out->auc = placements(c, n, m, nn, NULL, NULL) / (double)m;

    size_t *pos_idx = malloc(m * sizeof *pos_idx);
    size_t *neg_idx = malloc(nn * sizeof *neg_idx);
    size_t *group = malloc(n * sizeof *group); /* first index of each case's tie group */
    uint32_t *w = malloc(n * sizeof *w);
    double *aucs = malloc((size_t)reps * sizeof *aucs);
    if (!pos_idx || !neg_idx || !group || !w || !aucs) {
        free(pos_idx);
        free(neg_idx);
        free(group);
        free(w);
        free(aucs);
        free(c);
        return CHEX_EVAL_ERR_NOMEM;
    }
    size_t ip = 0, in = 0;
    for (size_t i = 0; i < n;) {
        size_t j = tie_end(c, n, i);
        for (size_t t = i; t < j; t++) {
            group[t] = i;
            if (c[t].y)
                pos_idx[ip++] = t;
            else
                neg_idx[in++] = t;
        }
        i = j;
    }

    uint64_t sm = seed;
    rng r;
    for (int k = 0; k < 4; k++)
        r.s[k] = splitmix64(&sm);

    for (int b = 0; b < reps; b++) {
        memset(w, 0, n * sizeof *w);
        for (size_t t = 0; t < m; t++)
            w[pos_idx[rng_below(&r, m)]]++;
        for (size_t t = 0; t < nn; t++)
            w[neg_idx[rng_below(&r, nn)]]++;
        double below_neg = 0.0, num = 0.0;
        for (size_t i = 0; i < n;) {
            size_t j = i;
            double wp = 0.0, wn = 0.0;
            while (j < n && group[j] == i) {
                if (c[j].y)
                    wp += w[j];
                else
                    wn += w[j];
                j++;
            }
            num += wp * (below_neg + 0.5 * wn);
            below_neg += wn;
            i = j;
        }
        aucs[b] = num / ((double)m * (double)nn);
    }

    double mean = 0.0, ss = 0.0;
    for (int b = 0; b < reps; b++)
        mean += aucs[b];
    mean /= reps;
    for (int b = 0; b < reps; b++)
        ss += (aucs[b] - mean) * (aucs[b] - mean);
    out->se = sqrt(ss / (reps - 1));
    qsort(aucs, (size_t)reps, sizeof *aucs, cmp_double);
    out->ci_low = percentile_sorted(aucs, (size_t)reps, 0.025);
    out->ci_high = percentile_sorted(aucs, (size_t)reps, 0.975);

    free(pos_idx);
    free(neg_idx);
    free(group);
    free(w);
    free(aucs);
    free(c);
    return CHEX_EVAL_OK;
}

chex_eval_err chex_roc_curve(const double *scores, const uint8_t *labels, size_t n, double *fpr,
                             double *tpr, size_t *npts)
{
    if (!fpr || !tpr || !npts)
        return CHEX_EVAL_ERR_ARG;
    *npts = 0;
    scored *c;
    size_t m, nn;
    chex_eval_err e = sorted_cases(scores, labels, n, &c, &m, &nn);
    if (e)
        return e;
    size_t k = 0;
    fpr[k] = tpr[k] = 0.0;
    k++;
    double tp = 0.0, fp = 0.0;
    /* decreasing threshold: walk the ascending order backwards */
    for (size_t j = n; j > 0;) {
        size_t i = j - 1;
        while (i > 0 && c[i - 1].s == c[j - 1].s)
            i--;
        for (size_t t = i; t < j; t++) {
            if (c[t].y)
                tp += 1.0;
            else
                fp += 1.0;
        }
        fpr[k] = fp / (double)nn;
        tpr[k] = tp / (double)m;
        k++;
        j = i;
    }
    *npts = k;
    free(c);
    return CHEX_EVAL_OK;
}
