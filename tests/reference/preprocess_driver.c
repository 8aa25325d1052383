/* tests/reference/preprocess_driver.c - drives chex_pre_prepare (the streaming
 * decode + resample the server uses) for the torch comparison
 * (tests/reference/test_preprocess.sh) and the benchmark
 * (tools/bench_preprocess.sh), and checks it against the reference path
 * (chex_pre_decode + chex_pre_tensor on the whole float image): the two
 * tensors must agree within 1e-5 in [0,1] units (difference times std),
 * else exit 1. Compiled by those scripts
 * against $BUILD/libchex_pre.a.
 *
 *   preprocess_driver [options] PRESET CHANNELS SIZE IMAGE OUT.f32
 *     --png16 minmax|sbit|full   16-bit gray mapping (default minmax)
 *     --mean a,b,c --std a,b,c   normalisation (default ImageNet)
 *     --decoded FILE             also write the decoded (C,H,W) float image
 *     --repeat N                 time N runs, print ms ("decode": the reference
 *                                full-image decode alone; "decode+tensor": the
 *                                streaming chex_pre_prepare)
 * Prints one line: width height channels bit_depth scaling ncrops, then one
 * line per crop box "x0 y0 x1 y1 flipped".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "preprocessing/preprocess.h"

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

static int write_floats(const char *path, const float *v, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(v, sizeof(float), n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void parse3(const char *s, float v[3])
{
    if (sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) != 3)
        v[1] = v[2] = v[0] = strtof(s, NULL);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    chex_pre_opts opts = {.max_pixels = 100000000, .min_side = 1,
                          .png16_scaling = CHEX_PNG16_MINMAX};
    chex_pre_spec spec = {.mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
    const char *decoded = NULL;
    int repeat = 0, i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            break;
        if (strcmp(argv[i], "--png16") == 0)
            opts.png16_scaling = strcmp(argv[i + 1], "sbit") == 0   ? CHEX_PNG16_SBIT
                                 : strcmp(argv[i + 1], "full") == 0 ? CHEX_PNG16_FULL
                                                                    : CHEX_PNG16_MINMAX;
        else if (strcmp(argv[i], "--mean") == 0)
            parse3(argv[i + 1], spec.mean);
        else if (strcmp(argv[i], "--std") == 0)
            parse3(argv[i + 1], spec.std);
        else if (strcmp(argv[i], "--decoded") == 0)
            decoded = argv[i + 1];
        else if (strcmp(argv[i], "--repeat") == 0)
            repeat = atoi(argv[i + 1]);
    }
    if (argc - i != 5) {
        fprintf(stderr, "usage: %s [options] PRESET CHANNELS SIZE IMAGE OUT.f32\n", argv[0]);
        return 2;
    }
    snprintf(spec.preset, sizeof spec.preset, "%s", argv[i]);
    spec.channels = atoi(argv[i + 1]);
    spec.size = atoi(argv[i + 2]);
    size_t len;
    uint8_t *buf = read_file(argv[i + 3], &len);
    if (!buf) {
        fprintf(stderr, "cannot read %s\n", argv[i + 3]);
        return 1;
    }
    int n = chex_pre_ncrops(&spec);
    if (n == 0) {
        fprintf(stderr, "unknown preset %s\n", spec.preset);
        return 1;
    }
    size_t tsize = (size_t)n * (size_t)spec.channels * (size_t)spec.size * (size_t)spec.size;
    float *out = malloc(tsize * sizeof(float));
    chex_pre_crop crops[10], ref_crops[10];
    chex_pre_image img, meta;
    char msg[256];
    double best_dec = 1e30, best_all = 1e30, sum_all = 0;
    int runs = repeat > 0 ? repeat : 1;
    for (int r = 0; r < runs; r++) {
        double t0 = now_ms();
        chex_pre_err e = chex_pre_decode(buf, len, &opts, &img, msg, sizeof msg);
        double t1 = now_ms();
        if (e != CHEX_PRE_OK) {
            fprintf(stderr, "decode: %s (%s)\n", chex_pre_strerror(e), msg);
            return 1;
        }
        if (r + 1 < runs)
            chex_pre_image_free(&img);
        double t2 = now_ms();
        e = chex_pre_prepare(buf, len, &opts, &spec, out, crops, &meta, NULL, msg, sizeof msg);
        double t3 = now_ms();
        if (e != CHEX_PRE_OK) {
            fprintf(stderr, "tensor: %s (%s)\n", chex_pre_strerror(e), msg);
            return 1;
        }
        best_dec = t1 - t0 < best_dec ? t1 - t0 : best_dec;
        best_all = t3 - t2 < best_all ? t3 - t2 : best_all;
        sum_all += t3 - t2;
    }
    /* the streaming path against the reference path */
    float *ref = malloc(tsize * sizeof(float));
    chex_pre_err e = ref ? chex_pre_tensor(&img, &spec, ref, ref_crops, msg, sizeof msg)
                         : CHEX_PRE_ERR_NOMEM;
    if (e != CHEX_PRE_OK) {
        fprintf(stderr, "reference tensor: %s (%s)\n", chex_pre_strerror(e), msg);
        return 1;
    }
    double worst = 0;
    size_t plane = (size_t)spec.size * (size_t)spec.size;
    for (size_t k = 0; k < tsize; k++) {
        double d = (out[k] - ref[k]) * spec.std[(k / plane) % (size_t)spec.channels];
        d = d < 0 ? -d : d;
        worst = d > worst ? d : worst;
    }
    free(ref);
    if (!(worst <= 1e-5) || memcmp(crops, ref_crops, (size_t)n * sizeof crops[0]) != 0 ||
        meta.width != img.width || meta.height != img.height || meta.channels != img.channels ||
        strcmp(meta.scaling, img.scaling) != 0) {
        fprintf(stderr, "streaming and reference paths differ (max %g)\n", worst);
        return 1;
    }
    printf("%d %d %d %d %s %d\n", img.width, img.height, img.channels, img.bit_depth, img.scaling,
           n);
    for (int k = 0; k < n; k++)
        printf("%.4f %.4f %.4f %.4f %d\n", crops[k].x0, crops[k].y0, crops[k].x1, crops[k].y1,
               crops[k].flipped);
    if (repeat > 0)
        printf("ms decode %.1f decode+tensor %.1f (best of %d), mean %.1f\n", best_dec, best_all,
               runs, sum_all / runs);
    if (decoded && write_floats(decoded, img.pix,
                                (size_t)img.channels * (size_t)img.width * (size_t)img.height)) {
        fprintf(stderr, "cannot write %s\n", decoded);
        return 1;
    }
    if (write_floats(argv[i + 4], out, tsize)) {
        fprintf(stderr, "cannot write %s\n", argv[i + 4]);
        return 1;
    }
    chex_pre_image_free(&img);
    free(out);
    free(buf);
    return 0;
}
