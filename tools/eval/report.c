/* tools/eval/report.c - per-label metrics, table and JSON (see report.h). */
#include "tools/eval/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/eval/labels.h"

const char chex_eval_demo_warning[] =
    "WARNING: demo weights (model metadata demo=true): these AUROCs measure a deterministic "
    "untrained network and say nothing about clinical performance.";

const char *chex_eval_ci_name(const chex_eval_opts *opts)
{
    return opts->ci == CHEX_EVAL_CI_BOOTSTRAP ? "bootstrap" : "DeLong";
}

chex_eval_err chex_eval_compute(const double *scores, const uint8_t *truth, const int *has_truth,
                                size_t n, int L, const char *const *labels,
                                const chex_eval_opts *opts, chex_eval_result *res)
{
    if ((!scores || !truth) && n)
        return CHEX_EVAL_ERR_ARG;
    if (!has_truth || !labels || !opts || !res || L < 0)
        return CHEX_EVAL_ERR_ARG;
    double *s = malloc((n ? n : 1) * sizeof *s);
    uint8_t *y = malloc(n ? n : 1);
    if (!s || !y) {
        free(s);
        free(y);
        return CHEX_EVAL_ERR_NOMEM;
    }
    chex_eval_err err = CHEX_EVAL_OK;
    for (int l = 0; l < L; l++) {
        chex_eval_result *r = &res[l];
        memset(r, 0, sizeof *r);
        snprintf(r->label, sizeof r->label, "%s", labels[l]);
        if (!has_truth[l]) {
            snprintf(r->reason, sizeof r->reason, "no such label in the labels file");
            r->n_unknown = n;
            continue;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            double v = scores[i * (size_t)L + (size_t)l];
            uint8_t t = truth[i * (size_t)L + (size_t)l];
            if (isnan(v) || t > 1) {
                r->n_unknown++;
                continue;
            }
            s[k] = v;
            y[k] = t;
            k++;
        }
        size_t pos = 0;
        for (size_t i = 0; i < k; i++)
            pos += y[i];
        r->r.n_pos = pos;
        r->r.n_neg = k - pos;
        if (k == 0) {
            snprintf(r->reason, sizeof r->reason, "no case with both a score and a truth value");
            continue;
        }
        if (pos == 0 || pos == k) {
            snprintf(r->reason, sizeof r->reason, "%s", pos == 0 ? "no positive case" : "no negative case");
            continue;
        }
        chex_eval_err e = opts->ci == CHEX_EVAL_CI_BOOTSTRAP
                              ? chex_auroc_bootstrap(s, y, k, opts->reps, opts->seed, &r->r)
                              : chex_auroc_delong(s, y, k, &r->r);
        if (e) {
            err = e;
            break;
        }
        r->evaluated = 1;
    }
    free(s);
    free(y);
    return err;
}

double chex_eval_mean(const chex_eval_result *res, int L, int *n_eval)
{
    double sum = 0.0;
    int k = 0;
    for (int l = 0; l < L; l++) {
        if (res[l].evaluated) {
            sum += res[l].r.auc;
            k++;
        }
    }
    if (n_eval)
        *n_eval = k;
    return k ? sum / k : NAN;
}

void chex_eval_print_table(FILE *f, const chex_eval_result *res, int L, const chex_eval_opts *opts,
                           int demo)
{
    if (demo)
        fprintf(f, "%s\n\n", chex_eval_demo_warning);
    char ci_head[32];
    snprintf(ci_head, sizeof ci_head, "95%% CI (%s)", chex_eval_ci_name(opts));
    fprintf(f, "%-20s %7s  %-17s %7s %7s\n", "label", "AUROC", ci_head, "n_pos", "n_neg");
    for (int l = 0; l < L; l++) {
        const chex_eval_result *r = &res[l];
        if (r->evaluated) {
            char ci[32];
            if (isnan(r->r.ci_low))
                snprintf(ci, sizeof ci, "n/a (1 case)");
            else
                snprintf(ci, sizeof ci, "%.4f - %.4f", r->r.ci_low, r->r.ci_high);
            fprintf(f, "%-20s %7.4f  %-17s %7zu %7zu\n", r->label, r->r.auc, ci, r->r.n_pos,
                    r->r.n_neg);
        } else {
            fprintf(f, "%-20s %7s  %-17s %7zu %7zu  (%s)\n", r->label, "-", "not evaluated",
                    r->r.n_pos, r->r.n_neg, r->reason);
        }
    }
    int k;
    double mean = chex_eval_mean(res, L, &k);
    if (k)
        fprintf(f, "mean AUROC over %d evaluated label%s (of %d): %.4f\n", k, k == 1 ? "" : "s", L,
                mean);
    else
        fprintf(f, "mean AUROC: none of the %d labels could be evaluated\n", L);
    if (demo)
        fprintf(f, "\n%s\n", chex_eval_demo_warning);
}

static json_t *num_or_null(double v)
{
    return isnan(v) || isinf(v) ? json_null() : json_real(v);
}

json_t *chex_eval_results_json(const chex_eval_result *res, int L, const chex_eval_opts *opts)
{
    json_t *o = json_object();
    json_t *arr = json_array();
    if (!o || !arr) {
        json_decref(o);
        json_decref(arr);
        return NULL;
    }
    int fail = 0;
    fail |= json_object_set_new(o, "ci_method",
                                json_string(opts->ci == CHEX_EVAL_CI_BOOTSTRAP ? "bootstrap" : "delong"));
    fail |= json_object_set_new(o, "ci_level", json_real(0.95));
    if (opts->ci == CHEX_EVAL_CI_BOOTSTRAP) {
        fail |= json_object_set_new(o, "bootstrap_reps", json_integer(opts->reps));
        fail |= json_object_set_new(o, "bootstrap_seed", json_integer((json_int_t)opts->seed));
    }
    for (int l = 0; l < L; l++) {
        const chex_eval_result *r = &res[l];
        json_t *e = json_object();
        if (!e) {
            fail = 1;
            break;
        }
        fail |= json_object_set_new(e, "label", json_string(r->label));
        fail |= json_object_set_new(e, "evaluated", json_boolean(r->evaluated));
        if (r->evaluated) {
            fail |= json_object_set_new(e, "auroc", json_real(r->r.auc));
            fail |= json_object_set_new(e, "ci_low", num_or_null(r->r.ci_low));
            fail |= json_object_set_new(e, "ci_high", num_or_null(r->r.ci_high));
            fail |= json_object_set_new(e, "se", num_or_null(r->r.se));
        } else {
            fail |= json_object_set_new(e, "auroc", json_null());
            fail |= json_object_set_new(e, "reason", json_string(r->reason));
        }
        fail |= json_object_set_new(e, "n_pos", json_integer((json_int_t)r->r.n_pos));
        fail |= json_object_set_new(e, "n_neg", json_integer((json_int_t)r->r.n_neg));
        fail |= json_object_set_new(e, "n_unknown", json_integer((json_int_t)r->n_unknown));
        fail |= json_array_append_new(arr, e);
    }
    fail |= json_object_set_new(o, "labels", arr);
    int k;
    double mean = chex_eval_mean(res, L, &k);
    fail |= json_object_set_new(o, "mean_auroc", num_or_null(mean));
    fail |= json_object_set_new(o, "n_evaluated", json_integer(k));
    fail |= json_object_set_new(o, "n_labels", json_integer(L));
    if (fail) {
        json_decref(o);
        return NULL;
    }
    return o;
}
