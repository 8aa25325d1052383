/* preprocessing/tensor.c - decoded image -> model input tensor(s), by preset.
 *
 * Every step is done on float32 the way torchvision does it on a float tensor:
 *   resize:    torch.nn.functional.interpolate(mode='bilinear', antialias=True,
 *              align_corners=False): a separable triangle filter whose support is
 *              scaled by the downscale factor; width first, then height; weights
 *              computed in float exactly as PyTorch's _compute_weights_aa.
 *   Resize(R): shorter side -> R, longer -> int(R * long / short).
 *   CenterCrop: offset int(round((side - S) / 2.0)) (round half to even).
 *   TenCrop:   TL, TR, BL, BR, centre, then the same five of the mirrored image.
 *   normalise: (x - mean) / std.
 * Presets (S = spec->size):
 *   resize256-crop224  Resize(round(S*256/224)) (256 for S=224), CenterCrop(S)
 *   tencrop            the same resize, TenCrop(S): 10 tensors
 *   resize224          Resize((S, S)) ignoring the aspect ratio
 *   xrv                torchxrayvision's pipeline instead (xrv_tensor below):
 *                      normalise, channel mean, XRayCenterCrop (start =
 *                      side//2 - short//2), XRayResizer(S) = skimage resize
 *                      (preprocessing/resize_xrv.h), in that order
 * Other presets: colour -> one channel with PIL convert('L')'s weights
 * (0.299, 0.587, 0.114); gray -> three channels by replication.
 *
 * Where this differs from a PIL pipeline: PIL (Image.resize, convert('L'),
 * ToTensor on uint8) rounds to 8 bits after each step (luminance rounded to an
 * integer, resized pixels rounded to 0..255); we keep float32 throughout, so the
 * result equals torchvision's tensor path (interpolate on float) to ~1e-6 and
 * differs from PIL's uint8 path by up to about 1/255 before normalisation
 * (measured on tests/data radiographs: max 0.017, mean 0.005 in ImageNet-
 * normalised units; tests/reference/test_preprocess.sh prints it). 16-bit
 * sources keep their full precision for the same reason.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/pre_internal.h"
#include "preprocessing/preprocess.h"
#include "preprocessing/resample.h"
#include "preprocessing/resize_xrv.h"
#include "preprocessing/stream.h"

/* Resized images above this (and intermediates above 4x this) are refused:
 * only extreme aspect ratios reach them (a 4000 x 5000 radiograph needs 0.08 M
 * and 1.3 M). */
#define MAX_RESIZED_PIXELS (1L << 22)
#define MAX_OUT_SIZE 4096

enum chex_pre_preset chex_pre_parse_preset(const chex_pre_spec *spec)
{
    if (!spec)
        return CHEX_PRESET_UNKNOWN;
    size_t n = strnlen(spec->preset, sizeof spec->preset);
    if (n == sizeof spec->preset)
        return CHEX_PRESET_UNKNOWN;
    if (strcmp(spec->preset, "resize256-crop224") == 0)
        return CHEX_PRESET_CROP;
    if (strcmp(spec->preset, "tencrop") == 0)
        return CHEX_PRESET_TENCROP;
    if (strcmp(spec->preset, "resize224") == 0)
        return CHEX_PRESET_RESIZE;
    if (strcmp(spec->preset, "xrv") == 0)
        return CHEX_PRESET_XRV;
    return CHEX_PRESET_UNKNOWN;
}

int chex_pre_ncrops(const chex_pre_spec *spec)
{
    switch (chex_pre_parse_preset(spec)) {
    case CHEX_PRESET_TENCROP:
        return 10;
    case CHEX_PRESET_CROP:
    case CHEX_PRESET_RESIZE:
    case CHEX_PRESET_XRV:
        return 1;
    default:
        return 0;
    }
}

chex_pre_err chex_pre_spec_check(const chex_pre_spec *spec, char *msg, size_t msglen)
{
    if (!spec) {
        chex_pre_msg(msg, msglen, "no preprocessing spec");
        return CHEX_PRE_ERR_ARG;
    }
    if (chex_pre_parse_preset(spec) == CHEX_PRESET_UNKNOWN) {
        chex_pre_msg(msg, msglen, "unknown preprocessing preset \"%.31s\"", spec->preset);
        return CHEX_PRE_ERR_ARG;
    }
    if (spec->channels != 1 && spec->channels != 3) {
        chex_pre_msg(msg, msglen, "model input must have 1 or 3 channels, not %d", spec->channels);
        return CHEX_PRE_ERR_ARG;
    }
    if (spec->size < 1 || spec->size > MAX_OUT_SIZE) {
        chex_pre_msg(msg, msglen, "model input size %d outside 1..%d", spec->size, MAX_OUT_SIZE);
        return CHEX_PRE_ERR_ARG;
    }
    for (int c = 0; c < spec->channels; c++) {
        if (!isfinite(spec->mean[c]) || !isfinite(spec->std[c]) || spec->std[c] == 0.0f) {
            chex_pre_msg(msg, msglen, "normalisation channel %d: mean %g std %g unusable", c,
                         (double)spec->mean[c], (double)spec->std[c]);
            return CHEX_PRE_ERR_ARG;
        }
    }
    return CHEX_PRE_OK;
}

chex_pre_err chex_pre_geom_make(const chex_pre_spec *spec, int W, int H, chex_pre_geom *g,
                                char *msg, size_t msglen)
{
    if (!spec) {
        chex_pre_msg(msg, msglen, "no preprocessing spec");
        return CHEX_PRE_ERR_ARG;
    }
    chex_pre_err e = chex_pre_spec_check(spec, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    const int S = spec->size;
    memset(g, 0, sizeof *g);
    g->preset = chex_pre_parse_preset(spec);
    g->rw = W;
    g->rh = H;
    if (g->preset == CHEX_PRESET_CROP || g->preset == CHEX_PRESET_TENCROP) {
        long r = lround(S * 256.0 / 224.0);
        long shorter = W <= H ? W : H, longer = W <= H ? H : W;
        long nlong = (long)((double)(r * longer) / (double)shorter);
        if (nlong > MAX_RESIZED_PIXELS || (W <= H ? r : nlong) * (W <= H ? nlong : r) >
                                              MAX_RESIZED_PIXELS) {
            chex_pre_msg(msg, msglen, "%dx%d image: aspect ratio too extreme to resize", W, H);
            return CHEX_PRE_ERR_UNUSABLE;
        }
        g->ow = (int)(W <= H ? r : nlong);
        g->oh = (int)(W <= H ? nlong : r);
        if (g->ow < S || g->oh < S) {
            chex_pre_msg(msg, msglen, "%dx%d image: aspect ratio too extreme to resize", W, H);
            return CHEX_PRE_ERR_UNUSABLE;
        }
    } else {
        if (g->preset == CHEX_PRESET_XRV) {
            int side = W < H ? W : H;
            g->x0 = W / 2 - side / 2;
            g->y0 = H / 2 - side / 2;
            g->rw = g->rh = side;
        }
        g->ow = g->oh = S;
    }
    /* refuses absurd aspect ratios: a bound on the resize's work (rh x ow) */
    if ((long)g->rh * g->ow > MAX_RESIZED_PIXELS * 4) {
        chex_pre_msg(msg, msglen, "%dx%d image: aspect ratio too extreme to resize", W, H);
        return CHEX_PRE_ERR_UNUSABLE;
    }
    return CHEX_PRE_OK;
}

/* One (C, S, S) tensor from the (wc, rh, rw) resized image at (top, left);
 * mirrored: the crop at (top, left) of the horizontally flipped image. */
static void emit_crop(float *out, const float *res, int wc, int rh, int rw, int top, int left,
                      int mirrored, int C, int S, const chex_pre_spec *spec)
{
    size_t rplane = (size_t)rh * (size_t)rw;
    for (int c = 0; c < C; c++) {
        const float *plane = res + (size_t)(wc == 1 ? 0 : c) * rplane;
        float mean = spec->mean[C == 1 ? 0 : c], std = spec->std[C == 1 ? 0 : c];
        if (chex_pre_parse_preset(spec) == CHEX_PRESET_XRV) {
            mean = 0.0f; /* normalised before the resize; (v - 0) / 1 == v */
            std = 1.0f;
        }
        float *o = out + (size_t)c * (size_t)S * (size_t)S;
        for (int y = 0; y < S; y++) {
            const float *row = plane + (size_t)(top + y) * (size_t)rw;
            float *orow = o + (size_t)y * (size_t)S;
            if (mirrored) {
                const float *r = row + (rw - 1 - left);
                for (int x = 0; x < S; x++)
                    orow[x] = (r[-x] - mean) / std;
            } else {
                const float *r = row + left;
                for (int x = 0; x < S; x++)
                    orow[x] = (r[x] - mean) / std;
            }
        }
    }
}

void chex_pre_emit(float *out, chex_pre_crop *crops, const float *res, int wc,
                   const chex_pre_geom *g, const chex_pre_spec *spec)
{
    const int C = spec->channels, S = spec->size, ow = g->ow, oh = g->oh;
    /* Crop positions in the resized image; boxes mapped back by its scale. */
    int ctop = (int)nearbyint((oh - S) / 2.0), cleft = (int)nearbyint((ow - S) / 2.0);
    int tops[5] = {0, 0, oh - S, oh - S, ctop};
    int lefts[5] = {0, ow - S, 0, ow - S, cleft};
    int n = chex_pre_ncrops(spec);
    double sx = (double)g->rw / ow, sy = (double)g->rh / oh;
    size_t tsize = (size_t)C * (size_t)S * (size_t)S;
    for (int k = 0; k < n; k++) {
        int top, left, mirrored = k >= 5;
        if (g->preset == CHEX_PRESET_TENCROP) {
            top = tops[k % 5];
            left = lefts[k % 5];
        } else if (g->preset == CHEX_PRESET_CROP) {
            top = ctop;
            left = cleft;
        } else {
            top = left = 0;
        }
        emit_crop(out + (size_t)k * tsize, res, wc, oh, ow, top, left, mirrored, C, S, spec);
        if (crops) {
            /* a mirrored crop at left covers [ow-left-S, ow-left) of the resized image */
            int l = mirrored ? ow - left - S : left;
            crops[k].x0 = (float)(g->x0 + l * sx);
            crops[k].x1 = (float)(g->x0 + (l + S) * sx);
            crops[k].y0 = (float)(g->y0 + top * sy);
            crops[k].y1 = (float)(g->y0 + (top + S) * sy);
            crops[k].flipped = mirrored;
        }
    }
}

/* Normalised samples for the xrv preset, as torchxrayvision computes them in
 * float32: normalize() per channel ((x - mean) / std with mean 0.5, std
 * 1/2048 is bit-identical to its (2 * x - 1) * 1024 on x = s / maxval), then
 * a colour image's channel mean ((r + g) + b) / 3 (its README's img.mean(2)).
 * stream.c's xrv_push computes the same. */
typedef struct {
    const float *pix;
    size_t plane;
    int ic, C;
    const chex_pre_spec *spec;
} xrv_ctx;

static float xrv_norm(const void *vctx, size_t idx, int c)
{
    const xrv_ctx *x = vctx;
    const float m = x->spec->mean[c], sd = x->spec->std[c];
    if (x->ic == 3 && x->C == 1) {
        float r = (x->pix[idx] - m) / sd, g = (x->pix[x->plane + idx] - m) / sd,
              b = (x->pix[2 * x->plane + idx] - m) / sd;
        return (r + g + b) / 3.0f;
    }
    return (x->pix[(x->ic == 3 ? (size_t)c * x->plane : 0) + idx] - m) / sd;
}

/* The xrv reference: normalise, channel mean, centre square, skimage's
 * resize and clip (chex_pre_xrv_resize), all on the whole image. */
static chex_pre_err xrv_tensor(const chex_pre_image *img, const chex_pre_spec *spec,
                               const chex_pre_geom *g, float *out, chex_pre_crop *crops,
                               char *msg, size_t msglen)
{
    const int C = spec->channels, S = spec->size;
    float *res = malloc((size_t)C * (size_t)S * (size_t)S * sizeof(float));
    xrv_ctx ctx = {img->pix, (size_t)img->width * (size_t)img->height, img->channels, C, spec};
    chex_pre_err e = res ? chex_pre_xrv_resize(res, C, S, img->width, g->x0, g->y0, g->rw,
                                               xrv_norm, &ctx)
                         : CHEX_PRE_ERR_NOMEM;
    if (e == CHEX_PRE_OK)
        chex_pre_emit(out, crops, res, C, g, spec);
    else
        chex_pre_msg(msg, msglen, "out of memory resizing to %dx%d", S, S);
    free(res);
    return e;
}

/* The reference path: the whole float image in memory, resampled by
 * chex_pre_resample_naive (xrv: chex_pre_xrv_resize). chex_pre_prepare's
 * streaming path must agree. */
chex_pre_err chex_pre_tensor(const chex_pre_image *img, const chex_pre_spec *spec, float *out,
                             chex_pre_crop *crops, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!img || !spec || !out) {
        chex_pre_msg(msg, msglen, "chex_pre_tensor: NULL image, spec or output");
        return CHEX_PRE_ERR_ARG;
    }
    if (!img->pix || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3)) {
        chex_pre_msg(msg, msglen, "chex_pre_tensor: no decoded image (%dx%d, %d channels)",
                     img->width, img->height, img->channels);
        return CHEX_PRE_ERR_ARG;
    }
    const int C = spec->channels, W = img->width, H = img->height;
    chex_pre_geom g;
    chex_pre_err e = chex_pre_spec_check(spec, msg, msglen);
    if (e == CHEX_PRE_OK)
        e = chex_pre_geom_make(spec, W, H, &g, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    if (g.preset == CHEX_PRESET_XRV)
        return xrv_tensor(img, spec, &g, out, crops, msg, msglen);
    const size_t plane = (size_t)W * (size_t)H;

    /* Working source: the image itself, or its luminance when the model wants
     * one channel of a colour image. A gray image for a 3-channel model is
     * resized once and replicated in emit_crop. */
    const float *src = img->pix;
    float *lum = NULL, *res = NULL, *tmp = NULL;
    int wc = img->channels;
    if (img->channels == 3 && C == 1) {
        lum = malloc(plane * sizeof(float));
        if (!lum) {
            chex_pre_msg(msg, msglen, "out of memory converting %dx%d to gray", W, H);
            return CHEX_PRE_ERR_NOMEM;
        }
        const float *r = img->pix, *gg = r + plane, *b = gg + plane;
        for (size_t i = 0; i < plane; i++)
            lum[i] = r[i] * 0.299f + gg[i] * 0.587f + b[i] * 0.114f;
        src = lum;
        wc = 1;
    }
    chex_pre_axis ax = {0}, ay = {0};
    e = CHEX_PRE_ERR_NOMEM;
    if (chex_pre_axis_torch_aa(&ax, g.rw, g.ow) != 0 || chex_pre_axis_torch_aa(&ay, g.rh, g.oh) != 0)
        goto done;
    res = malloc((size_t)wc * (size_t)g.ow * (size_t)g.oh * sizeof(float));
    tmp = malloc((size_t)g.rw * sizeof(float));
    if (!res || !tmp)
        goto done;
    chex_pre_resample_naive(res, src, wc, plane, W, g.x0, g.y0, &ax, &ay, tmp);
    chex_pre_emit(out, crops, res, wc, &g, spec);
    e = CHEX_PRE_OK;
done:
    if (e != CHEX_PRE_OK)
        chex_pre_msg(msg, msglen, "out of memory resizing to %dx%d", g.ow, g.oh);
    free(lum);
    free(res);
    free(tmp);
    chex_pre_axis_free(&ax);
    chex_pre_axis_free(&ay);
    return e;
}
