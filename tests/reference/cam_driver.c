/* tests/reference/cam_driver.c - drives the C class activation maps for
 * tests/reference/test_cam.py (no cmocka; compiled by test_cam.sh against the
 * $BUILD libraries).
 *
 *   cam_driver MODEL IMAGE PRESET LABEL OUTPREFIX
 *
 * Decodes IMAGE, preprocesses it with PRESET (resize256-crop224, tencrop,
 * resize224, xrv) and the model's normalisation, runs one forward pass and
 * writes, all float32:
 *   OUTPREFIX.in    (n, C, S, S)  the input tensors (torch runs the same ones)
 *   OUTPREFIX.raw   (n, h, w)     chex_cam_raw_ws
 *   OUTPREFIX.up    (n, S, S)     chex_cam_upsample of each
 *   OUTPREFIX.map   (H, W)        chex_cam_map (placed back, normalised)
 *   OUTPREFIX.boxes (n, 5)        x0 y0 x1 y1 flipped
 * and prints one JSON line: n, channels, size, h, w, width, height.
 * Exit 0 on success, 1 on error (message on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/cam.h"
#include "model/model.h"
#include "preprocessing/preprocess.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int write_floats(const char *prefix, const char *ext, const float *p, size_t count)
{
    char path[1024];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, sizeof(float), count, f) != count) {
        fprintf(stderr, "cam_driver: cannot write %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) ? -1 : 0;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL IMAGE PRESET LABEL OUTPREFIX\n", argv[0]);
        return 1;
    }
    const char *prefix = argv[5];
    char msg[256];
    chex_model *m = NULL;
    chex_model_err me = chex_model_load(argv[1], &m, msg, sizeof msg);
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "cam_driver: %s\n", msg);
        return 1;
    }
    const chex_model_info *in = chex_model_info_get(m);
    chex_pre_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.channels = in->input_channels;
    spec.size = in->input_size;
    snprintf(spec.preset, sizeof spec.preset, "%s", argv[3]);
    memcpy(spec.mean, in->mean, sizeof spec.mean);
    memcpy(spec.std, in->std, sizeof spec.std);
    int n = chex_pre_ncrops(&spec);
    int label = atoi(argv[4]);
    size_t len = 0;
    unsigned char *bytes = read_file(argv[2], &len);
    chex_pre_opts opts = {.max_pixels = 1ull << 28, .min_side = 8,
                          .png16_scaling = CHEX_PNG16_MINMAX};
    chex_pre_image img;
    memset(&img, 0, sizeof img);
    int rc = 1;
    float *tensor = NULL, *raw = NULL, *up = NULL, *map = NULL;
    chex_model_ws *ws = NULL;
    if (!bytes || n < 1) {
        fprintf(stderr, "cam_driver: cannot read %s or unknown preset %s\n", argv[2], argv[3]);
        goto out;
    }
    size_t per = (size_t)spec.channels * (size_t)spec.size * (size_t)spec.size;
    chex_pre_crop crops[10];
    tensor = malloc((size_t)n * per * sizeof(float));
    if (!tensor || chex_pre_prepare(bytes, len, &opts, &spec, tensor, crops, &img, NULL, msg,
                                    sizeof msg) != CHEX_PRE_OK) {
        fprintf(stderr, "cam_driver: preprocess: %s\n", msg);
        goto out;
    }
    double t0 = now_ms();
    if (chex_model_ws_create(m, n, &ws) != CHEX_MODEL_OK ||
        chex_model_forward(m, ws, tensor, n, NULL, NULL) != CHEX_MODEL_OK) {
        fprintf(stderr, "cam_driver: forward failed\n");
        goto out;
    }
    int c, h, w;
    if (!chex_model_ws_features(ws, &c, &h, &w))
        goto out;
    int S = spec.size, W = img.width, H = img.height;
    if (chex_cam_grid_side(S) != h || h != w) {
        fprintf(stderr, "cam_driver: chex_cam_grid_side(%d) = %d but the features are %dx%d\n",
                S, chex_cam_grid_side(S), h, w);
        goto out;
    }
    raw = malloc((size_t)n * (size_t)h * (size_t)w * sizeof(float));
    up = malloc((size_t)n * (size_t)S * (size_t)S * sizeof(float));
    map = malloc((size_t)W * (size_t)H * sizeof(float));
    if (!raw || !up || !map)
        goto out;
    double t1 = now_ms();
    me = chex_cam_raw_ws(m, ws, 0, n, label, raw);
    double t2 = now_ms();
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "cam_driver: chex_cam_raw_ws: %s\n", chex_model_strerror(me));
        goto out;
    }
    for (int k = 0; k < n; k++)
        chex_cam_upsample(up + (size_t)k * (size_t)S * (size_t)S, S, S,
                          raw + (size_t)k * (size_t)h * (size_t)w, h, w);
    chex_cam_box boxes[10];
    float bx[50];
    for (int k = 0; k < n; k++) {
        boxes[k] = (chex_cam_box){crops[k].x0, crops[k].y0, crops[k].x1, crops[k].y1,
                                  crops[k].flipped};
        float row[5] = {crops[k].x0, crops[k].y0, crops[k].x1, crops[k].y1,
                        (float)crops[k].flipped};
        memcpy(bx + 5 * k, row, sizeof row);
    }
    double t3 = now_ms();
    me = chex_cam_map(map, W, H, raw, n, h, w, S, boxes);
    double t4 = now_ms();
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "cam_driver: chex_cam_map: %s\n", chex_model_strerror(me));
        goto out;
    }
    if (write_floats(prefix, "in", tensor, (size_t)n * per) ||
        write_floats(prefix, "raw", raw, (size_t)n * (size_t)h * (size_t)w) ||
        write_floats(prefix, "up", up, (size_t)n * (size_t)S * (size_t)S) ||
        write_floats(prefix, "map", map, (size_t)W * (size_t)H) ||
        write_floats(prefix, "boxes", bx, (size_t)n * 5))
        goto out;
    printf("{\"n\": %d, \"channels\": %d, \"size\": %d, \"h\": %d, \"w\": %d, \"width\": %d, "
           "\"height\": %d, \"forward_ms\": %.3f, \"raw_ms\": %.3f, \"map_ms\": %.3f}\n",
           n, spec.channels, S, h, w, W, H, t1 - t0, t2 - t1, t4 - t3);
    rc = 0;
out:
    free(tensor);
    free(raw);
    free(up);
    free(map);
    free(bytes);
    chex_pre_image_free(&img);
    chex_model_ws_free(ws);
    chex_model_free(m);
    return rc;
}
