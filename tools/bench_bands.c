/* tools/bench_bands.c - wall time of chex_pre_prepare on one image with
 * several opts.threads values (large DICOM frames are resampled in bands,
 * preprocessing/stream.h), runs interleaved so that every thread count sees
 * the same machine load; prints the median of each, its ratio to the
 * first, the process CPU time a run (all threads, spinning included), the
 * busiest team thread's CPU time a run (the wall time on idle cores) and a
 * control: the same team splitting as much plain arithmetic perfectly,
 * interleaved with the decodes (what the machine let threads gain then). Not built by make (docs/PERFORMANCE.md says how):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -fopenmp -I. -o bench_bands tools/bench_bands.c \
 *      build/libchex_pre.a -lpng16 -ljpeg -lturbojpeg -lopenjp2 -lcharls -ljansson -lz -lm
 *   bench_bands [--display SIDE] [--gap MS] IMAGE PRESET RUNS THREADS...
 * --gap: the team idles that long before each decode (as between requests).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "preprocessing/preprocess.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of each of the team's n threads (libgomp keeps the same pool
 * threads for the same team size), so that the busiest thread's share of a
 * run, what its wall time would be on n idle cores, can be told apart from
 * the time the machine's other load took. */
static void team_cpu(int n, double *ms)
{
#pragma omp parallel num_threads(n)
    {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        ms[omp_get_thread_num()] = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
    }
}

/* The control: n threads sharing `iters` iterations of plain arithmetic,
 * a perfect split of about as much work as one decode, in the same run:
 * what the machine lets n threads gain at that time scale. */
static double control(int n, long iters)
{
    double t0 = now_ms(), sink = 0;
#pragma omp parallel num_threads(n) reduction(+ : sink)
    {
        double y = 0;
        for (long k = 0; k < iters / n; k++)
            y += (double)k * 1e-9;
        sink += y;
    }
    double t1 = now_ms();
    return sink < 0 ? 0 : t1 - t0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int i = 1, display = -1, gap_ms = 0;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--display") == 0)
            display = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--gap") == 0) /* idle ms before each decode */
            gap_ms = atoi(argv[i + 1]);
    }
    if (argc - i < 4) {
        fprintf(stderr, "usage: %s [--display SIDE] [--gap MS] IMAGE PRESET RUNS THREADS...\n",
                argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[i], "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", argv[i]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)len);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s\n", argv[i]);
        return 1;
    }
    fclose(f);
    chex_pre_spec spec = {.channels = 3, .size = 224, .mean = {0.485f, 0.456f, 0.406f},
                          .std = {0.229f, 0.224f, 0.225f}};
    snprintf(spec.preset, sizeof spec.preset, "%s", argv[i + 1]);
    int runs = atoi(argv[i + 2]), nt = argc - i - 3;
    if (runs < 1 || chex_pre_ncrops(&spec) < 1) {
        fprintf(stderr, "bad RUNS or PRESET\n");
        return 2;
    }
    float *out = malloc((size_t)chex_pre_ncrops(&spec) * 3 * 224 * 224 * sizeof(float));
    double *ms = malloc((size_t)nt * (size_t)runs * sizeof(double));
    double *cpu = calloc((size_t)nt, sizeof(double));
    double *crit = malloc((size_t)nt * (size_t)runs * sizeof(double));
    double *ctl = malloc((size_t)nt * (size_t)runs * sizeof(double));
    long iters = 1000000;
    if (!out || !ms || !cpu || !crit || !ctl)
        return 1;
    for (int r = -2; r < runs; r++) /* r < 0: warm-up */
        for (int t = 0; t < nt; t++) {
            chex_pre_opts opts = {.max_pixels = 100000000, .min_side = 1,
                                  .max_overlay_side = display, .threads = atoi(argv[i + 3 + t])};
            chex_pre_image meta;
            chex_pre_display disp;
            char msg[256];
            int team = atoi(argv[i + 3 + t]);
            team = team < 1 ? 1 : team > 64 ? 64 : team;
            double before[64], after[64];
            if (gap_ms > 0) {
                struct timespec gap = {gap_ms / 1000, (long)(gap_ms % 1000) * 1000000L};
                nanosleep(&gap, NULL);
            }
            team_cpu(team, before);
            double c0 = cpu_ms(), t0 = now_ms();
            chex_pre_err e = chex_pre_prepare(buf, (size_t)len, &opts, &spec, out, NULL, &meta,
                                              display >= 0 ? &disp : NULL, msg, sizeof msg);
            double t1 = now_ms(), c1 = cpu_ms();
            team_cpu(team, after);
            double busiest = 0;
            for (int k = 0; k < team; k++)
                busiest = after[k] - before[k] > busiest ? after[k] - before[k] : busiest;
            if (e != CHEX_PRE_OK) {
                fprintf(stderr, "%s\n", msg);
                return 1;
            }
            if (display >= 0)
                free(disp.pix);
            if (r == -1 && t == 0) /* control iterations: as long as this decode */
                iters = (long)((double)iters * (t1 - t0) / control(1, iters));
            if (r >= 0) {
                ctl[(size_t)t * (size_t)runs + (size_t)r] = control(team, iters);
                ms[(size_t)t * (size_t)runs + (size_t)r] = t1 - t0;
                cpu[t] += c1 - c0;
                crit[(size_t)t * (size_t)runs + (size_t)r] = busiest;
            }
        }
    double base = 0, cbase = 0;
    for (int t = 0; t < nt; t++) {
        qsort(ctl + (size_t)t * (size_t)runs, (size_t)runs, sizeof(double), cmp);
        double cmed = ctl[(size_t)t * (size_t)runs + (size_t)runs / 2];
        if (t == 0)
            cbase = cmed;
        qsort(ms + (size_t)t * (size_t)runs, (size_t)runs, sizeof(double), cmp);
        double med = ms[(size_t)t * (size_t)runs + (size_t)runs / 2];
        if (t == 0)
            base = med;
        qsort(crit + (size_t)t * (size_t)runs, (size_t)runs, sizeof(double), cmp);
        printf("threads %s: median %.2f ms of %d (min %.2f), %.2fx the first; CPU %.2f ms a "
               "run, busiest thread's CPU median %.2f ms; control %.2f ms, %.2fx\n",
               argv[i + 3 + t], med, runs, ms[(size_t)t * (size_t)runs], med / base,
               cpu[t] / runs, crit[(size_t)t * (size_t)runs + (size_t)runs / 2], cmed,
               cmed / cbase);
    }
    free(ms);
    free(cpu);
    free(crit);
    free(ctl);
    free(out);
    free(buf);
    return 0;
}
