/* tests/reference/ref_driver.c - drives the C network for the PyTorch
 * comparison scripts (no cmocka; compiled by the test script against
 * $BUILD/libchex_model.a).
 *
 *   ref_driver MODEL IN.f32 N OUTPREFIX [--reference] [--isa NAME] [--stages] [--runs R]
 *   ref_driver --isas      (prints the ISA paths this CPU supports, one a line)
 *
 * Reads N normalised images (N, C, S, S) float32 from IN.f32, runs
 * chex_model_forward (or the naive chex_model_forward_reference), writes
 * OUTPREFIX.logits and OUTPREFIX.probs (N, labels) float32 and, with
 * --stages, OUTPREFIX.<stage> contiguous (N, c, h, w) for every stage.
 * Prints one JSON line: isa, threads, labels, channels, size, sha256, ms and
 * stage_ms (with --runs R: medians of R forwards after two warm-ups), and
 * cpu_ms, the mean process CPU time per forward (steadier on a busy machine).
 * Exit 0 on success, 1 on any error (message on stderr). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"

static int write_floats(const char *prefix, const char *ext, const float *p, size_t count)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, sizeof(float), count, f) != count) {
        fprintf(stderr, "ref_driver: cannot write %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) ? -1 : 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--isas")) { /* ISA paths this CPU can run */
        static const char *const isas[] = {"avx512", "avx2", "generic"};
        for (int i = 0; i < 3; i++)
            if (!chex_model_set_isa(isas[i]))
                printf("%s\n", isas[i]);
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL IN.f32 N OUTPREFIX [--reference] [--isa NAME] "
                "[--stages]\n", argv[0]);
        return 1;
    }
    int reference = 0, stages = 0, runs = 1;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--reference"))
            reference = 1;
        else if (!strcmp(argv[i], "--stages"))
            stages = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            if (chex_model_set_isa(argv[++i])) {
                fprintf(stderr, "ref_driver: ISA %s not usable here\n", argv[i]);
                return 1;
            }
        } else {
            fprintf(stderr, "ref_driver: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    char msg[512];
    chex_model *m = NULL;
    chex_model_err e = chex_model_load(argv[1], &m, msg, sizeof(msg));
    if (e) {
        fprintf(stderr, "ref_driver: %s: %s\n", argv[1], msg);
        return 1;
    }
    const chex_model_info *info = chex_model_info_get(m);
    int n = atoi(argv[3]);
    size_t per = (size_t)info->input_channels * info->input_size * info->input_size;
    float *in = malloc(per * (n > 0 ? n : 1) * sizeof(float));
    float *logits = malloc(sizeof(float) * (n > 0 ? n : 1) * info->num_labels);
    float *probs = malloc(sizeof(float) * (n > 0 ? n : 1) * info->num_labels);
    FILE *f = fopen(argv[2], "rb");
    int rc = 1;
    chex_model_ws *ws = NULL;
    if (!in || !logits || !probs || !f || n < 1 ||
        fread(in, sizeof(float) * per, n, f) != (size_t)n) {
        fprintf(stderr, "ref_driver: cannot read %d images from %s\n", n, argv[2]);
        goto out;
    }
    if ((e = chex_model_ws_create(m, n, &ws))) {
        fprintf(stderr, "ref_driver: workspace: %s\n", chex_model_strerror(e));
        goto out;
    }
    /* --runs R: two warm-up forwards, then the median of R (total and per stage). */
    double *tot = calloc((size_t)runs, sizeof(double));
    double *st = calloc((size_t)runs * CHEX_MODEL_NSTAGES, sizeof(double));
    double ms = 0, stage_med[CHEX_MODEL_NSTAGES] = {0};
    if (!tot || !st) {
        free(tot);
        free(st);
        goto out;
    }
    double cpu = 0;
    for (int r = runs > 1 ? -2 : 0; r < runs && !e; r++) {
        double t0 = omp_get_wtime();
        clock_t c0 = clock();
        e = reference ? chex_model_forward_reference(m, ws, in, n, logits, probs)
                      : chex_model_forward(m, ws, in, n, logits, probs);
        if (r >= 0) {
            tot[r] = (omp_get_wtime() - t0) * 1e3;
            cpu += (double)(clock() - c0) * 1e3 / CLOCKS_PER_SEC / runs;
            double sm[CHEX_MODEL_NSTAGES];
            chex_model_ws_stage_ms(ws, sm);
            for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
                st[s * runs + r] = sm[s];
        }
    }
    ms = median(tot, runs);
    for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
        stage_med[s] = median(st + s * runs, runs);
    free(tot);
    free(st);
    if (e) {
        fprintf(stderr, "ref_driver: forward: %s\n", chex_model_strerror(e));
        goto out;
    }
    size_t nl = (size_t)n * info->num_labels;
    if (write_floats(argv[4], "logits", logits, nl) || write_floats(argv[4], "probs", probs, nl))
        goto out;
    for (int s = 0; stages && s < CHEX_MODEL_NSTAGES; s++) {
        chex_model_view v;
        if (chex_model_ws_stage(ws, (chex_model_stage)s, &v))
            goto out;
        size_t img = (size_t)v.c * v.h * v.w;
        float *buf = malloc(img * v.n * sizeof(float));
        if (!buf)
            goto out;
        for (int i = 0; i < v.n; i++)
            memcpy(buf + i * img, v.data + i * v.img_stride, img * sizeof(float));
        int bad = write_floats(argv[4], chex_model_stage_name((chex_model_stage)s), buf, img * v.n);
        free(buf);
        if (bad)
            goto out;
    }
    printf("{\"isa\":\"%s\",\"threads\":%d,\"labels\":%d,\"channels\":%d,\"size\":%d,"
           "\"sha256\":\"%s\",\"gflop\":%.4f,\"ms\":%.2f,\"cpu_ms\":%.2f,\"runs\":%d,"
           "\"stage_ms\":{",
           reference ? "naive" : chex_model_isa(), omp_get_max_threads(), info->num_labels,
           info->input_channels, info->input_size, info->sha256,
           chex_model_flops_per_image(m) / 1e9, ms, cpu, runs);
    for (int s = 0; s < CHEX_MODEL_NSTAGES; s++)
        printf("%s\"%s\":%.2f", s ? "," : "", chex_model_stage_name((chex_model_stage)s),
               stage_med[s]);
    printf("}}\n");
    rc = 0;
out:
    if (f)
        fclose(f);
    chex_model_ws_free(ws);
    chex_model_free(m);
    free(in);
    free(logits);
    free(probs);
    return rc;
}
