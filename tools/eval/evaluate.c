/* tools/eval/evaluate.c - `chex evaluate`: classify a labelled folder (or read
 * a predictions file), then per-label AUROC with 95% CI, table, metrics.json,
 * predictions.csv and ROC plots. See docs/EVALUATION.md. */
#include "tools/eval/evaluate.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "model/model.h"
#include "server/pipeline.h"
#include "tools/eval/auroc.h"
#include "tools/eval/labels.h"
#include "tools/eval/plot.h"
#include "tools/eval/report.h"

/* The model `make` builds, relative to the checkout (overridable at compile
 * time, and at run time by --model or CHEXD_MODEL). */
#ifndef CHEXD_DEFAULT_MODEL
#define CHEXD_DEFAULT_MODEL "models/chexnet-demo.safetensors"
#endif

#define MAX_IMAGE_BYTES (512u << 20)

extern char **environ;

typedef struct {
    const char *labels, *predictions, *model, *out, *image_dir, *config;
    int threads, threads_set, batch, plots;
    chex_eval_opts eo;
} eval_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chex evaluate --labels LABELS.csv [--model FILE] [--threads N] [--out DIR]\n"
            "                     [--plots] [--ci delong|bootstrap] [--bootstrap-reps N] [--seed S]\n"
            "                     [--batch N] [--config FILE] IMAGE_DIR\n"
            "       chex evaluate --predictions PRED.csv --labels LABELS.csv [--out DIR] [--plots]\n"
            "                     [--ci delong|bootstrap] [--bootstrap-reps N] [--seed S]\n"
            "\n"
            "Classifies every image the labels file lists (names relative to IMAGE_DIR; PNG,\n"
            "JPEG or DICOM), or reads an existing predictions file, and reports per-label AUROC\n"
            "with a 95%% confidence interval, n_pos, n_neg and the mean AUROC.\n"
            "  --labels FILE        NIH Data_Entry_2017 layout ('Image Index', 'Finding Labels'\n"
            "                       joined by '|'), or one 0/1 column per label; .gz accepted\n"
            "  --predictions FILE   'Image Index' + one column prob_<Label> (or <Label>) per label\n"
            "  --model FILE         safetensors weights (default: the config's model, else %s)\n"
            "  --config FILE        chexd's JSON config file: preprocessing options, model and\n"
            "                       threads as the daemon uses them (CHEXD_* variables apply too)\n"
            "  --threads N          OpenMP threads, 0 = all cores (default: config, 0)\n"
            "  --batch N            images per forward pass (default 8 / crops per image)\n"
            "  --out DIR            output folder, created with parents (default: evaluation)\n"
            "  --plots              one ROC curve PNG per evaluated label: DIR/roc_<Label>.png\n"
            "  --ci METHOD          delong (default; fast DeLong, Sun & Xu 2014) or bootstrap\n"
            "  --bootstrap-reps N   stratified bootstrap resamples (default 2000)\n"
            "  --seed S             bootstrap seed (default 1)\n"
            "Writes DIR/predictions.csv (image mode) and DIR/metrics.json; prints the table.\n"
            "Exit status: 0 done (failed images are listed on stderr and in metrics.json),\n"
            "1 nothing could be evaluated or a file could not be read/written, 2 usage.\n",
            CHEXD_DEFAULT_MODEL);
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* 0 ok, 1 --help, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, eval_args *a)
{
    memset(a, 0, sizeof *a);
    a->out = "evaluation";
    a->eo.ci = CHEX_EVAL_CI_DELONG;
    a->eo.reps = 2000;
    a->eo.seed = 1;
    enum { O_LABELS = 256, O_PRED, O_MODEL, O_THREADS, O_OUT, O_PLOTS, O_CI, O_REPS, O_SEED, O_BATCH,
           O_CONFIG };
    static const struct option opts[] = {
        {"labels", required_argument, NULL, O_LABELS},
        {"predictions", required_argument, NULL, O_PRED},
        {"model", required_argument, NULL, O_MODEL},
        {"threads", required_argument, NULL, O_THREADS},
        {"out", required_argument, NULL, O_OUT},
        {"plots", no_argument, NULL, O_PLOTS},
        {"ci", required_argument, NULL, O_CI},
        {"bootstrap-reps", required_argument, NULL, O_REPS},
        {"seed", required_argument, NULL, O_SEED},
        {"batch", required_argument, NULL, O_BATCH},
        {"config", required_argument, NULL, O_CONFIG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_LABELS: a->labels = optarg; break;
        case O_PRED: a->predictions = optarg; break;
        case O_MODEL: a->model = optarg; break;
        case O_CONFIG: a->config = optarg; break;
        case O_OUT: a->out = optarg; break;
        case O_PLOTS: a->plots = 1; break;
        case O_THREADS:
            if (parse_int(optarg, 0, 1024, &v)) {
                fprintf(stderr, "evaluate: --threads '%s': want an integer 0..1024\n", optarg);
                return 2;
            }
            a->threads = (int)v;
            a->threads_set = 1;
            break;
        case O_BATCH:
            if (parse_int(optarg, 1, 256, &v)) {
                fprintf(stderr, "evaluate: --batch '%s': want an integer 1..256\n", optarg);
                return 2;
            }
            a->batch = (int)v;
            break;
        case O_REPS:
            if (parse_int(optarg, 100, 1000000, &v)) {
                fprintf(stderr, "evaluate: --bootstrap-reps '%s': want an integer 100..1000000\n",
                        optarg);
                return 2;
            }
            a->eo.reps = (int)v;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "evaluate: --seed '%s': want a non-negative integer\n", optarg);
                return 2;
            }
            a->eo.seed = (uint64_t)s;
            break;
        }
        case O_CI:
            if (strcmp(optarg, "delong") == 0)
                a->eo.ci = CHEX_EVAL_CI_DELONG;
            else if (strcmp(optarg, "bootstrap") == 0)
                a->eo.ci = CHEX_EVAL_CI_BOOTSTRAP;
            else {
                fprintf(stderr, "evaluate: --ci '%s': want delong or bootstrap\n", optarg);
                return 2;
            }
            break;
        case 'h': return 1;
        case ':':
            fprintf(stderr, "evaluate: option %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "evaluate: unknown option '%s' (see chex evaluate --help)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!a->labels) {
        fprintf(stderr, "evaluate: --labels FILE is required (see chex evaluate --help)\n");
        return 2;
    }
    int npos = argc - optind;
    if (a->predictions) {
        if (npos != 0) {
            fprintf(stderr, "evaluate: with --predictions no IMAGE_DIR is taken ('%s')\n",
                    argv[optind]);
            return 2;
        }
        if (a->model || a->config || a->threads_set || a->batch) {
            fprintf(stderr, "evaluate: --model, --config, --threads and --batch make no sense "
                            "with --predictions\n");
            return 2;
        }
    } else {
        if (npos != 1) {
            fprintf(stderr, "evaluate: want exactly one IMAGE_DIR (got %d; see --help)\n", npos);
            return 2;
        }
        a->image_dir = argv[optind];
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* mkdir -p: creates dir and any missing parents. */
static int make_dir(const char *dir)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n <= 0 || n >= (int)sizeof path) {
        fprintf(stderr, "evaluate: --out: path too long\n");
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "evaluate: --out %s: %s: %s\n", dir, path, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        fprintf(stderr, "evaluate: --out %s: exists and is not a folder\n", dir);
        return -1;
    }
    fprintf(stderr, "evaluate: --out %s: %s\n", dir, strerror(errno));
    return -1;
}

/* dir/name, or name itself when it is absolute. */
static char *join(const char *dir, const char *name)
{
    if (name[0] == '/')
        return strdup(name);
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* Writes the CSV field, quoted when needed. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Opens DIR/name.tmp for writing; commit_file renames it into place. */
static FILE *open_tmp(const char *path, char **tmp)
{
    size_t n = strlen(path);
    *tmp = malloc(n + 5);
    if (!*tmp)
        return NULL;
    memcpy(*tmp, path, n);
    memcpy(*tmp + n, ".tmp", 5);
    FILE *f = fopen(*tmp, "w");
    if (!f)
        fprintf(stderr, "evaluate: %s: %s\n", *tmp, strerror(errno));
    return f;
}

static int commit_file(FILE *f, char *tmp, const char *path)
{
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "evaluate: %s: write error\n", tmp);
        remove(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "evaluate: %s: %s\n", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

/* predictions.csv: Image Index + prob_<label> per model label, scored rows only. */
static int write_predictions(const char *dir, const chex_eval_table *lab, const double *scores,
                             const uint8_t *scored, int L, const char *const *labels)
{
    char *path = join(dir, "predictions.csv"), *tmp = NULL;
    if (!path)
        return -1;
    FILE *f = open_tmp(path, &tmp);
    if (!f) {
        free(tmp);
        free(path);
        return -1;
    }
    fputs("Image Index", f);
    for (int l = 0; l < L; l++) {
        fputs(",prob_", f);
        csv_field(f, labels[l]);
    }
    fputc('\n', f);
    for (size_t r = 0; r < chex_eval_table_rows(lab); r++) {
        if (!scored[r])
            continue;
        csv_field(f, chex_eval_table_image(lab, r));
        for (int l = 0; l < L; l++)
            fprintf(f, ",%.9g", scores[r * (size_t)L + (size_t)l]);
        fputc('\n', f);
    }
    int rc = commit_file(f, tmp, path);
    if (rc == 0)
        fprintf(stderr, "evaluate: wrote %s\n", path);
    free(path);
    return rc;
}

static int write_json(const char *dir, json_t *root)
{
    char *path = join(dir, "metrics.json"), *tmp = NULL;
    if (!path)
        return -1;
    FILE *f = open_tmp(path, &tmp);
    if (!f) {
        free(tmp);
        free(path);
        return -1;
    }
    int rc = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    fputc('\n', f);
    if (rc != 0) {
        fclose(f);
        remove(tmp);
        free(tmp);
        free(path);
        fprintf(stderr, "evaluate: metrics.json: cannot serialise\n");
        return -1;
    }
    rc = commit_file(f, tmp, path);
    if (rc == 0)
        fprintf(stderr, "evaluate: wrote %s\n", path);
    free(path);
    return rc;
}

/* One PNG per evaluated label: DIR/roc_<Label>.png (name reduced to [A-Za-z0-9_-]). */
static int write_plots(const char *dir, const chex_eval_result *res, const double *scores,
                       const uint8_t *truth, size_t n, int L, const chex_eval_opts *eo, int demo)
{
    double *s = malloc((n ? n : 1) * sizeof *s);
    uint8_t *y = malloc(n ? n : 1);
    double *fpr = malloc((n + 1) * sizeof *fpr), *tpr = malloc((n + 1) * sizeof *tpr);
    int rc = 0, count = 0;
    if (!s || !y || !fpr || !tpr) {
        fprintf(stderr, "evaluate: out of memory for plots\n");
        rc = -1;
        goto done;
    }
    for (int l = 0; l < L; l++) {
        if (!res[l].evaluated)
            continue;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            double v = scores[i * (size_t)L + (size_t)l];
            uint8_t t = truth[i * (size_t)L + (size_t)l];
            if (isnan(v) || t > 1)
                continue;
            s[k] = v;
            y[k++] = t;
        }
        size_t npts;
        if (chex_roc_curve(s, y, k, fpr, tpr, &npts) != CHEX_EVAL_OK)
            continue;
        char name[CHEX_EVAL_LABEL_LEN + 16];
        int m = snprintf(name, sizeof name, "roc_");
        for (const char *c = res[l].label; *c && m < (int)sizeof name - 5; c++) {
            char ch = *c;
            int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
            name[m++] = ok ? ch : '_';
        }
        memcpy(name + m, ".png", 5);
        char *path = join(dir, name);
        if (!path) {
            rc = -1;
            break;
        }
        chex_roc_plot p = {
            .title = res[l].label, .fpr = fpr, .tpr = tpr, .npts = npts,
            .auc = res[l].r.auc, .ci_low = res[l].r.ci_low, .ci_high = res[l].r.ci_high,
            .ci_name = chex_eval_ci_name(eo), .n_pos = res[l].r.n_pos, .n_neg = res[l].r.n_neg,
            .demo = demo,
        };
        char msg[256];
        if (chex_eval_plot_roc(path, &p, msg, sizeof msg) != CHEX_EVAL_OK) {
            fprintf(stderr, "evaluate: %s\n", msg);
            rc = -1;
        } else {
            count++;
        }
        free(path);
    }
    if (count)
        fprintf(stderr, "evaluate: wrote %d ROC plot%s in %s\n", count, count == 1 ? "" : "s", dir);
done:
    free(s);
    free(y);
    free(fpr);
    free(tpr);
    return rc;
}

/* Table, metrics.json, plots; root gets the results merged in. */
static int finish(const eval_args *a, json_t *root, const double *scores, const uint8_t *truth,
                  const int *has_truth, size_t n, int L, const char *const *labels, int demo)
{
    chex_eval_result *res = calloc((size_t)L ? (size_t)L : 1, sizeof *res);
    if (!res) {
        fprintf(stderr, "evaluate: out of memory\n");
        return 1;
    }
    chex_eval_err e = chex_eval_compute(scores, truth, has_truth, n, L, labels, &a->eo, res);
    if (e) {
        fprintf(stderr, "evaluate: metrics: %s\n", chex_eval_strerror(e));
        free(res);
        return 1;
    }
    chex_eval_print_table(stdout, res, L, &a->eo, demo);
    fflush(stdout);
    int rc = 0;
    json_t *rj = chex_eval_results_json(res, L, &a->eo);
    if (!rj || json_object_update(root, rj) != 0) {
        fprintf(stderr, "evaluate: out of memory\n");
        rc = 1;
    }
    json_decref(rj);
    if (rc == 0 && write_json(a->out, root) != 0)
        rc = 1;
    if (rc == 0 && a->plots && write_plots(a->out, res, scores, truth, n, L, &a->eo, demo) != 0)
        rc = 1;
    int k;
    chex_eval_mean(res, L, &k);
    if (rc == 0 && k == 0) {
        fprintf(stderr, "evaluate: no label could be evaluated\n");
        rc = 1;
    }
    free(res);
    return rc;
}

/* ---- --predictions mode ---- */

static int run_predictions(const eval_args *a)
{
    char msg[512];
    chex_eval_table pred, lab;
    if (chex_eval_table_load(a->predictions, &pred, msg, sizeof msg)) {
        fprintf(stderr, "evaluate: %s\n", msg);
        return 1;
    }
    if (chex_eval_table_load(a->labels, &lab, msg, sizeof msg)) {
        fprintf(stderr, "evaluate: %s\n", msg);
        chex_eval_table_free(&pred);
        return 1;
    }
    int rc = 1;
    const char *names[CHEX_MODEL_MAX_LABELS];
    int cols[CHEX_MODEL_MAX_LABELS];
    int L = chex_eval_preds_labels(&pred, names, cols, CHEX_MODEL_MAX_LABELS);
    size_t np = chex_eval_table_rows(&pred), nl = chex_eval_table_rows(&lab);
    double *col = malloc((np ? np : 1) * sizeof *col);
    uint8_t *ycol = malloc(nl ? nl : 1);
    long *match = malloc((np ? np : 1) * sizeof *match);
    double *scores = malloc((np ? np : 1) * (size_t)(L ? L : 1) * sizeof *scores);
    uint8_t *truth = malloc((np ? np : 1) * (size_t)(L ? L : 1));
    int has_truth[CHEX_MODEL_MAX_LABELS];
    json_t *root = NULL;
    if (!col || !ycol || !match || !scores || !truth) {
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    if (L == 0) {
        fprintf(stderr, "evaluate: %s: no prediction columns besides '%s'\n", a->predictions,
                pred.csv.header[pred.image_col]);
        goto done;
    }
    if ((int)pred.csv.ncols - 1 > CHEX_MODEL_MAX_LABELS) {
        fprintf(stderr, "evaluate: %s: more than %d prediction columns\n", a->predictions,
                CHEX_MODEL_MAX_LABELS);
        goto done;
    }
    /* rows of the predictions file that the labels file knows */
    size_t n = 0, unlabelled = 0;
    for (size_t r = 0; r < np; r++) {
        const char *img = chex_eval_table_image(&pred, r);
        long m = chex_eval_table_find(&lab, img);
        if (m < 0 && strrchr(img, '/')) /* "images/x.png" predicted, "x.png" labelled */
            m = chex_eval_table_find(&lab, strrchr(img, '/') + 1);
        match[r] = m;
        if (m < 0)
            unlabelled++;
        else
            n++;
    }
    if (unlabelled)
        fprintf(stderr, "evaluate: %zu of %zu predicted images have no row in %s; left out\n",
                unlabelled, np, a->labels);
    for (int l = 0; l < L; l++) {
        if (chex_eval_preds_scores(&pred, cols[l], col, msg, sizeof msg)) {
            fprintf(stderr, "evaluate: %s: %s\n", a->predictions, msg);
            goto done;
        }
        has_truth[l] = chex_eval_labels_truth(&lab, names[l], ycol);
        size_t i = 0;
        for (size_t r = 0; r < np; r++) {
            if (match[r] < 0)
                continue;
            scores[i * (size_t)L + (size_t)l] = col[r];
            truth[i * (size_t)L + (size_t)l] = has_truth[l] ? ycol[match[r]] : CHEX_EVAL_UNKNOWN;
            i++;
        }
    }
    if (make_dir(a->out))
        goto done;
    root = json_object();
    if (!root || json_object_set_new(root, "mode", json_string("predictions")) ||
        json_object_set_new(root, "predictions_file", json_string(a->predictions)) ||
        json_object_set_new(root, "labels_file", json_string(a->labels)) ||
        json_object_set_new(root, "labels_layout",
                            json_string(lab.findings_col >= 0 ? "findings" : "columns")) ||
        json_object_set_new(root, "n_predictions", json_integer((json_int_t)np)) ||
        json_object_set_new(root, "n_unlabelled", json_integer((json_int_t)unlabelled)) ||
        json_object_set_new(root, "n_images", json_integer((json_int_t)n))) {
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    fprintf(stdout, "%zu images with predictions and labels\n", n);
    rc = finish(a, root, scores, truth, has_truth, n, L, names, 0);
done:
    json_decref(root);
    free(col);
    free(ycol);
    free(match);
    free(scores);
    free(truth);
    chex_eval_table_free(&pred);
    chex_eval_table_free(&lab);
    return rc;
}

/* ---- image mode ---- */

/* Reads a whole file; NULL with msg on error. */
static uint8_t *read_image(const char *path, size_t *len, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(msg, msglen, "not a regular file");
        fclose(f);
        return NULL;
    }
    if ((uint64_t)st.st_size > MAX_IMAGE_BYTES) {
        snprintf(msg, msglen, "file larger than %u MiB", MAX_IMAGE_BYTES >> 20);
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        snprintf(msg, msglen, "out of memory");
        fclose(f);
        return NULL;
    }
    if (fread(b, 1, n, f) != n) {
        snprintf(msg, msglen, "read error");
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = n;
    return b;
}

typedef struct {
    int tty;
    size_t total;
    double t0;
} progress;

static void progress_show(const progress *p, size_t done)
{
    if (!p->tty)
        return;
    double dt = now_s() - p->t0;
    double rate = dt > 0 ? (double)done / dt : 0.0;
    char eta[32] = "?";
    if (rate > 0) {
        long s = (long)((double)(p->total - done) / rate + 0.5);
        snprintf(eta, sizeof eta, "%ldm%02lds", s / 60, s % 60);
    }
    fprintf(stderr, "\r\033[Kevaluate: %zu/%zu images, %.2f img/s, ETA %s", done, p->total, rate,
            eta);
    fflush(stderr);
}

static void progress_clear(const progress *p)
{
    if (p->tty)
        fputs("\r\033[K", stderr);
}

static json_t *failure_json(const char *image, const char *err)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (json_object_set_new(o, "image", json_string(image)) ||
        json_object_set_new(o, "error", json_string(err))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int run_images(const eval_args *a)
{
    char msg[512];
    chex_eval_table lab;
    if (chex_eval_table_load(a->labels, &lab, msg, sizeof msg)) {
        fprintf(stderr, "evaluate: %s\n", msg);
        return 1;
    }
    struct stat st;
    int st_rc = stat(a->image_dir, &st);
    if (st_rc != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "evaluate: IMAGE_DIR %s: %s\n", a->image_dir,
                st_rc != 0 ? strerror(errno) : "not a folder");
        chex_eval_table_free(&lab);
        return 1;
    }
    /* the daemon's configuration: defaults < --config file < CHEXD_* variables */
    chex_config cfg;
    char *cargv[] = {"evaluate", "--config", (char *)a->config, NULL};
    chex_config_err ce = chex_config_load(&cfg, a->config ? 3 : 1, cargv, environ,
                                          CHEXD_DEFAULT_MODEL, msg, sizeof msg);
    if (ce != CHEX_CONFIG_OK) {
        fprintf(stderr, "evaluate: %s\n", msg[0] ? msg : chex_config_strerror(ce));
        chex_eval_table_free(&lab);
        return 1;
    }
    const char *model_path = a->model ? a->model : cfg.model;
    int threads = a->threads_set ? a->threads : cfg.threads;
    chex_model *model = NULL;
    chex_model_err me = chex_model_load(model_path, &model, msg, sizeof msg);
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "evaluate: model %s: %s: %s\n", model_path, chex_model_strerror(me), msg);
        chex_eval_table_free(&lab);
        return 1;
    }
    const chex_model_info *info = chex_model_info_get(model);
    chex_pipeline pl;
    chex_pipeline_batch pb = {0};
    chex_model_ws *ws = NULL;
    int rc = 1, B = 0;
    size_t n = chex_eval_table_rows(&lab);
    /* L evaluated labels: the model's outputs (NL) less the labels it was not
     * trained on (op_threshs NaN), which have no meaningful score */
    const int NL = info->num_labels;
    int L = 0;
    const char *names[CHEX_MODEL_MAX_LABELS];
    int outcol[CHEX_MODEL_MAX_LABELS];
    int has_truth[CHEX_MODEL_MAX_LABELS];
    json_t *untrained = json_array();
    for (int l = 0; l < NL; l++) {
        if (info->untrained[l]) {
            json_array_append_new(untrained, json_string(info->labels[l]));
            continue;
        }
        outcol[L] = l;
        names[L++] = info->labels[l];
    }
    double *scores = malloc((n ? n : 1) * (size_t)L * sizeof *scores);
    uint8_t *truth = malloc((n ? n : 1) * (size_t)L);
    uint8_t *ycol = malloc(n ? n : 1);
    uint8_t *scored = calloc(n ? n : 1, 1);
    float *probs = NULL;
    chex_prepared *prep = NULL;
    chex_prepared **ptrs = NULL;
    char (*errs)[256] = NULL;
    int *ok = NULL;
    size_t *pend_row = NULL;
    json_t *root = NULL, *failures = json_array();
    if (!scores || !truth || !ycol || !scored || !failures || !untrained) {
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    if (chex_pipeline_init(&pl, model, &cfg, msg, sizeof msg) != 0) {
        fprintf(stderr, "evaluate: model %s: %s\n", model_path, msg);
        goto done;
    }
    B = a->batch ? a->batch : (8 / pl.ncrops > 0 ? 8 / pl.ncrops : 1);
    if (chex_pipeline_ws_create(&pl, B * pl.ncrops, &ws) != CHEX_MODEL_OK ||
        chex_pipeline_batch_init(&pl, &pb, B) != 0) {
        fprintf(stderr, "evaluate: out of memory for a batch of %d images\n", B);
        goto done;
    }
    probs = malloc((size_t)B * (size_t)NL * sizeof *probs);
    prep = calloc((size_t)B, sizeof *prep);
    ptrs = calloc((size_t)B, sizeof *ptrs);
    errs = calloc((size_t)B, sizeof *errs);
    ok = calloc((size_t)B, sizeof *ok);
    pend_row = calloc((size_t)B, sizeof *pend_row);
    if (!probs || !prep || !ptrs || !errs || !ok || !pend_row) {
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    for (int l = 0; l < L; l++) {
        has_truth[l] = chex_eval_labels_truth(&lab, names[l], ycol);
        for (size_t r = 0; r < n; r++)
            truth[r * (size_t)L + (size_t)l] = has_truth[l] ? ycol[r] : CHEX_EVAL_UNKNOWN;
    }
    for (size_t i = 0; i < n * (size_t)L; i++)
        scores[i] = NAN;
    if (make_dir(a->out))
        goto done;
    if (threads > 0)
        omp_set_num_threads(threads);
    if (info->demo)
        fprintf(stderr, "evaluate: %s\n", chex_eval_demo_warning);
    if (info->num_untrained)
        fprintf(stderr, "evaluate: %d label%s the model was not trained on (op_threshs NaN) "
                "left out\n", info->num_untrained, info->num_untrained == 1 ? "" : "s");
    fprintf(stderr, "evaluate: %zu image%s listed in %s, model %s (%d labels), %d thread%s\n", n,
            n == 1 ? "" : "s", a->labels, info->name, L, omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");

    progress pr = {isatty(2), n, now_s()};
    size_t n_failed = 0, next = 0;
    int npend = 0; /* prepared images waiting in prep[0..npend) for a full batch */
    while (next < n || npend > 0) {
        int k = B - npend;
        if ((size_t)k > n - next)
            k = (int)(n - next);
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < k; i++) {
            const char *name = chex_eval_table_image(&lab, next + (size_t)i);
            ok[i] = 0;
            errs[i][0] = '\0';
            char *path = join(a->image_dir, name);
            if (!path) {
                snprintf(errs[i], sizeof errs[i], "out of memory");
                continue;
            }
            size_t len = 0;
            uint8_t *buf = read_image(path, &len, errs[i], sizeof errs[i]);
            free(path);
            if (!buf)
                continue;
            char m[200];
            chex_pre_err pe = chex_pipeline_prepare(&pl, buf, len, &prep[npend + i], m, sizeof m);
            free(buf);
            if (pe != CHEX_PRE_OK) {
                snprintf(errs[i], sizeof errs[i], "%s: %s", chex_pre_strerror(pe), m);
                continue;
            }
            ok[i] = 1;
        }
        /* keep the prepared ones side by side after those already waiting */
        int w = npend;
        for (int i = 0; i < k; i++) {
            size_t r = next + (size_t)i;
            if (ok[i]) {
                if (w != npend + i) {
                    prep[w] = prep[npend + i];
                    memset(&prep[npend + i], 0, sizeof prep[npend + i]);
                }
                pend_row[w++] = r;
                continue;
            }
            n_failed++;
            const char *name = chex_eval_table_image(&lab, r);
            progress_clear(&pr);
            fprintf(stderr, "evaluate: %s (line %zu): %s\n", name, lab.csv.line[r], errs[i]);
            json_array_append_new(failures, failure_json(name, errs[i]));
        }
        npend = w;
        next += (size_t)k;
        if (npend == B || (next == n && npend > 0)) {
            for (int i = 0; i < npend; i++)
                ptrs[i] = &prep[i];
            me = chex_pipeline_infer_batch(&pl, ws, &pb, ptrs, npend, probs);
            for (int i = 0; i < npend; i++) {
                size_t r = pend_row[i];
                if (me == CHEX_MODEL_OK) {
                    for (int l = 0; l < L; l++)
                        scores[r * (size_t)L + (size_t)l] =
                            probs[(size_t)i * (size_t)NL + (size_t)outcol[l]];
                    scored[r] = 1;
                } else {
                    char m[128];
                    snprintf(m, sizeof m, "inference: %s", chex_model_strerror(me));
                    n_failed++;
                    const char *name = chex_eval_table_image(&lab, r);
                    progress_clear(&pr);
                    fprintf(stderr, "evaluate: %s (line %zu): %s\n", name, lab.csv.line[r], m);
                    json_array_append_new(failures, failure_json(name, m));
                }
                chex_pipeline_prepared_free(&prep[i]);
            }
            npend = 0;
        }
        progress_show(&pr, next);
    }
    progress_clear(&pr);
    double dt = now_s() - pr.t0;
    fprintf(stderr, "evaluate: classified %zu of %zu images in %.1f s (%.2f img/s), %zu failed\n",
            n - n_failed, n, dt, dt > 0 ? (double)n / dt : 0.0, n_failed);

    if (write_predictions(a->out, &lab, scores, scored, L, names) != 0)
        goto done;
    root = json_object();
    json_t *mj = json_object();
    if (!root || !mj) {
        json_decref(mj);
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    /* set_new takes the reference even when it fails */
    int jf = json_object_set_new(root, "model", mj);
    jf |= json_object_set_new(root, "failures", failures);
    failures = NULL;
    jf |= json_object_set_new(root, "untrained_labels", untrained);
    untrained = NULL;
    jf |= json_object_set_new(mj, "probability",
                              json_string(info->op_norm ? "op_norm" : "sigmoid"));
    if (jf || json_object_set_new(mj, "path", json_string(model_path)) ||
        json_object_set_new(mj, "name", json_string(info->name)) ||
        json_object_set_new(mj, "sha256", json_string(info->sha256)) ||
        json_object_set_new(mj, "demo", json_boolean(info->demo)) ||
        json_object_set_new(mj, "preprocess", json_string(info->preprocess)) ||
        json_object_set_new(root, "mode", json_string("images")) ||
        json_object_set_new(root, "demo", json_boolean(info->demo)) ||
        (info->demo && json_object_set_new(root, "warning", json_string(chex_eval_demo_warning))) ||
        json_object_set_new(root, "labels_file", json_string(a->labels)) ||
        json_object_set_new(root, "labels_layout",
                            json_string(lab.findings_col >= 0 ? "findings" : "columns")) ||
        json_object_set_new(root, "image_dir", json_string(a->image_dir)) ||
        json_object_set_new(root, "n_listed", json_integer((json_int_t)n)) ||
        json_object_set_new(root, "n_images", json_integer((json_int_t)(n - n_failed))) ||
        json_object_set_new(root, "n_failed", json_integer((json_int_t)n_failed)) ||
        json_object_set_new(root, "seconds", json_real(dt))) {
        fprintf(stderr, "evaluate: out of memory\n");
        goto done;
    }
    fprintf(stdout, "%zu of %zu listed images classified (%zu failed)\n", n - n_failed, n,
            n_failed);
    rc = finish(a, root, scores, truth, has_truth, n, L, names, info->demo);
done:
    json_decref(root);
    json_decref(failures);
    json_decref(untrained);
    if (prep)
        for (int i = 0; i < B; i++)
            chex_pipeline_prepared_free(&prep[i]);
    free(prep);
    free(ptrs);
    free(errs);
    free(ok);
    free(pend_row);
    free(probs);
    free(scores);
    free(truth);
    free(ycol);
    free(scored);
    chex_pipeline_batch_free(&pb);
    chex_model_ws_free(ws);
    chex_model_free(model);
    chex_eval_table_free(&lab);
    return rc;
}

int chex_eval_main(int argc, char **argv)
{
    eval_args a;
    int pr = parse_args(argc, argv, &a);
    if (pr == 1) {
        usage(stdout);
        return 0;
    }
    if (pr == 2)
        return 2;
    return a.predictions ? run_predictions(&a) : run_images(&a);
}
