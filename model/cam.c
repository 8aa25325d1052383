/* model/cam.c - class activation maps: raw maps from the workspace's final
 * features, bilinear upsampling, placing back onto the original image,
 * normalisation. See cam.h for the definitions. */
#include "model/cam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

chex_model_err chex_cam_raw(const chex_model *m, const float *feat, int n, int nfeat, int h, int w,
                            int label, float *raw)
{
    const float *cw;
    int ncls, nf;
    chex_model_classifier(m, &cw, NULL, &ncls, &nf);
    if (!feat || !raw || n < 1 || h < 1 || w < 1 || nfeat != nf || label < 0 || label >= ncls)
        return CHEX_MODEL_ERR_ARG;
    const float *wr = cw + (size_t)label * (size_t)nf;
    size_t hw = (size_t)h * (size_t)w;
    for (int i = 0; i < n; i++) {
        const float *f = feat + (size_t)i * (size_t)nf * hw;
        /* Blocks of cells accumulated in double over the channels. */
        for (size_t p0 = 0; p0 < hw; p0 += 64) {
            size_t nb = hw - p0 < 64 ? hw - p0 : 64;
            double acc[64] = {0};
            for (int k = 0; k < nf; k++) {
                double wk = wr[k];
                const float *fk = f + (size_t)k * hw + p0;
                for (size_t p = 0; p < nb; p++)
                    acc[p] += wk * fk[p];
            }
            for (size_t p = 0; p < nb; p++)
                raw[(size_t)i * hw + p0 + p] = (float)acc[p];
        }
    }
    return CHEX_MODEL_OK;
}

chex_model_err chex_cam_raw_ws(const chex_model *m, const chex_model_ws *ws, int first, int n,
                               int label, float *raw)
{
    int c, h, w;
    const float *feat = chex_model_ws_features(ws, &c, &h, &w);
    if (!feat)
        return CHEX_MODEL_ERR_ARG;
    chex_model_view v;
    if (chex_model_ws_stage(ws, CHEX_STAGE_HEAD, &v) != CHEX_MODEL_OK || first < 0 || n < 1 ||
        first + n > v.n)
        return CHEX_MODEL_ERR_ARG;
    return chex_cam_raw(m, feat + (size_t)first * (size_t)c * (size_t)h * (size_t)w, n, c, h, w,
                        label, raw);
}

int chex_cam_grid_side(int S)
{
    if (S < 1)
        return 0;
    int x = (S + 6 - 7) / 2 + 1; /* conv0 */
    x = (x + 2 - 3) / 2 + 1;     /* pool0 */
    return x / 2 / 2 / 2;        /* transition1..3 */
}

/* torch's area_pixel_compute_source_index for align_corners=False (clamped
 * at 0) and the two neighbours with their weights. */
static void lin_coord(int o, int in, int out, int *i0, int *i1, float *l1)
{
    float scale = (float)in / (float)out;
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f)
        src = 0.0f;
    int a = (int)src;
    if (a > in - 1)
        a = in - 1;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    *l1 = src - (float)a;
}

void chex_cam_upsample(float *out, int oh, int ow, const float *in, int h, int w)
{
    for (int y = 0; y < oh; y++) {
        int y0, y1;
        float ly;
        lin_coord(y, h, oh, &y0, &y1, &ly);
        for (int x = 0; x < ow; x++) {
            int x0, x1;
            float lx;
            lin_coord(x, w, ow, &x0, &x1, &lx);
            float a = in[y0 * w + x0], b = in[y0 * w + x1];
            float c = in[y1 * w + x0], d = in[y1 * w + x1];
            out[(size_t)y * (size_t)ow + x] =
                (1.0f - ly) * ((1.0f - lx) * a + lx * b) + ly * ((1.0f - lx) * c + lx * d);
        }
    }
}

/* Sampling positions of one axis of one box: for each output pixel the two
 * neighbouring map samples, the weight of the second, whether the pixel
 * centre lies inside the box, and its distance outside. */
typedef struct {
    int *i0, *i1;
    float *l1, *dist;
    unsigned char *inside;
} axis_tab;

static int axis_tab_init(axis_tab *t, int npix, float b0, float b1, int S, int mirror)
{
    t->i0 = malloc((size_t)npix * sizeof(int));
    t->i1 = malloc((size_t)npix * sizeof(int));
    t->l1 = malloc((size_t)npix * sizeof(float));
    t->dist = malloc((size_t)npix * sizeof(float));
    t->inside = malloc((size_t)npix);
    if (!t->i0 || !t->i1 || !t->l1 || !t->dist || !t->inside)
        return -1;
    double scale = (double)S / ((double)b1 - (double)b0);
    for (int p = 0; p < npix; p++) {
        double c = p + 0.5;
        double u = (c - b0) * scale - 0.5;
        if (mirror)
            u = (S - 1) - u;
        if (u < 0.0)
            u = 0.0;
        if (u > S - 1)
            u = S - 1;
        int a = (int)u;
        if (a > S - 2)
            a = S > 1 ? S - 2 : 0;
        t->i0[p] = a;
        t->i1[p] = S > 1 ? a + 1 : a;
        t->l1[p] = S > 1 ? (float)(u - a) : 0.0f;
        t->inside[p] = c >= b0 && c < b1;
        t->dist[p] = c < b0 ? (float)(b0 - c) : c >= b1 ? (float)(c - b1) : 0.0f;
    }
    return 0;
}

static void axis_tab_free(axis_tab *t)
{
    free(t->i0);
    free(t->i1);
    free(t->l1);
    free(t->dist);
    free(t->inside);
}

static float sample(const float *map, int S, const axis_tab *tx, const axis_tab *ty, int x, int y)
{
    const float *r0 = map + (size_t)ty->i0[y] * (size_t)S;
    const float *r1 = map + (size_t)ty->i1[y] * (size_t)S;
    float lx = tx->l1[x], ly = ty->l1[y];
    int a = tx->i0[x], b = tx->i1[x];
    return (1.0f - ly) * ((1.0f - lx) * r0[a] + lx * r0[b]) +
           ly * ((1.0f - lx) * r1[a] + lx * r1[b]);
}

chex_model_err chex_cam_project(float *out, int W, int H, const float *up, int S,
                                const chex_cam_box *boxes, int n)
{
    if (!out || !up || !boxes || W < 1 || H < 1 || S < 1 || n < 1 || n > 64)
        return CHEX_MODEL_ERR_ARG;
    for (int k = 0; k < n; k++)
        if (!(boxes[k].x1 > boxes[k].x0) || !(boxes[k].y1 > boxes[k].y0))
            return CHEX_MODEL_ERR_ARG;
    axis_tab tx[64], ty[64];
    memset(tx, 0, sizeof tx);
    memset(ty, 0, sizeof ty);
    chex_model_err e = CHEX_MODEL_OK;
    for (int k = 0; k < n && e == CHEX_MODEL_OK; k++)
        if (axis_tab_init(&tx[k], W, boxes[k].x0, boxes[k].x1, S, boxes[k].flipped) != 0 ||
            axis_tab_init(&ty[k], H, boxes[k].y0, boxes[k].y1, S, 0) != 0)
            e = CHEX_MODEL_ERR_NOMEM;
    if (e == CHEX_MODEL_OK) {
        size_t plane = (size_t)S * (size_t)S;
        for (int y = 0; y < H; y++) {
            float *row = out + (size_t)y * (size_t)W;
            for (int x = 0; x < W; x++) {
                float sum = 0.0f;
                int cnt = 0;
                for (int k = 0; k < n; k++) {
                    if (tx[k].inside[x] && ty[k].inside[y]) {
                        sum += sample(up + (size_t)k * plane, S, &tx[k], &ty[k], x, y);
                        cnt++;
                    }
                }
                if (cnt) {
                    row[x] = sum / (float)cnt;
                    continue;
                }
                /* Outside every box: the nearest box, coordinates clamped. */
                int best = 0;
                float bd = INFINITY;
                for (int k = 0; k < n; k++) {
                    float dx = tx[k].dist[x], dy = ty[k].dist[y];
                    float d2 = dx * dx + dy * dy;
                    if (d2 < bd) {
                        bd = d2;
                        best = k;
                    }
                }
                row[x] = sample(up + (size_t)best * plane, S, &tx[best], &ty[best], x, y);
            }
        }
    }
    for (int k = 0; k < n; k++) {
        axis_tab_free(&tx[k]);
        axis_tab_free(&ty[k]);
    }
    return e;
}

void chex_cam_normalise(float *map, size_t n)
{
    if (n == 0)
        return;
    float lo = map[0], hi = map[0];
    for (size_t i = 1; i < n; i++) {
        if (map[i] < lo)
            lo = map[i];
        if (map[i] > hi)
            hi = map[i];
    }
    float range = hi - lo;
    if (!(range > 0.0f) || !isfinite(range)) {
        memset(map, 0, n * sizeof(float));
        return;
    }
    /* A division, not a multiply by 1/range: (hi - lo) / range is exactly 1,
     * so the hottest pixel is always 1.0 whatever the rounding of range. */
    for (size_t i = 0; i < n; i++) {
        float v = (map[i] - lo) / range;
        map[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

chex_model_err chex_cam_map(float *out, int W, int H, const float *raw, int n, int h, int w, int S,
                            const chex_cam_box *boxes)
{
    if (!out || !raw || !boxes || n < 1 || n > 64 || h < 1 || w < 1 || S < 1 || W < 1 || H < 1)
        return CHEX_MODEL_ERR_ARG;
    size_t plane = (size_t)S * (size_t)S;
    float *up = malloc((size_t)n * plane * sizeof(float));
    if (!up)
        return CHEX_MODEL_ERR_NOMEM;
    for (int k = 0; k < n; k++)
        chex_cam_upsample(up + (size_t)k * plane, S, S, raw + (size_t)k * (size_t)h * (size_t)w, h,
                          w);
    chex_model_err e = chex_cam_project(out, W, H, up, S, boxes, n);
    free(up);
    if (e == CHEX_MODEL_OK)
        chex_cam_normalise(out, (size_t)W * (size_t)H);
    return e;
}
