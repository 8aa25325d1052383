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
#include "preprocessing/resize_xrv.h"

enum preset { P_UNKNOWN, P_CROP, P_TENCROP, P_RESIZE, P_XRV };

/* Resized images above this (and intermediates above 4x this) are refused:
 * only extreme aspect ratios reach them (a 4000 x 5000 radiograph needs 0.08 M
 * and 1.3 M). */
#define MAX_RESIZED_PIXELS (1L << 22)
#define MAX_OUT_SIZE 4096

static enum preset parse_preset(const chex_pre_spec *spec)
{
    if (!spec)
        return P_UNKNOWN;
    size_t n = strnlen(spec->preset, sizeof spec->preset);
    if (n == sizeof spec->preset)
        return P_UNKNOWN;
    if (strcmp(spec->preset, "resize256-crop224") == 0)
        return P_CROP;
    if (strcmp(spec->preset, "tencrop") == 0)
        return P_TENCROP;
    if (strcmp(spec->preset, "resize224") == 0)
        return P_RESIZE;
    if (strcmp(spec->preset, "xrv") == 0)
        return P_XRV;
    return P_UNKNOWN;
}

int chex_pre_ncrops(const chex_pre_spec *spec)
{
    switch (parse_preset(spec)) {
    case P_TENCROP:
        return 10;
    case P_CROP:
    case P_RESIZE:
    case P_XRV:
        return 1;
    default:
        return 0;
    }
}

/* Interpolation weights along one axis, in -> out samples. */
typedef struct {
    int taps;
    int *xmin, *xsize;
    float *w; /* out * taps */
} aa_axis;

static float aa_filter(float x)
{
    if (x < 0.0f)
        x = -x;
    return x < 1.0f ? 1.0f - x : 0.0f;
}

static void aa_axis_free(aa_axis *a)
{
    free(a->xmin);
    free(a->xsize);
    free(a->w);
}

/* Mirrors PyTorch's _compute_indices_weights_aa / _compute_weights_aa for float
 * tensors, including where it rounds through double and back to float. */
static int aa_axis_init(aa_axis *a, int in, int out)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? (float)(1.0 * (double)scale) : 1.0f;
    a->taps = (int)ceilf(support) * 2 + 1;
    a->xmin = malloc((size_t)out * sizeof(int));
    a->xsize = malloc((size_t)out * sizeof(int));
    a->w = malloc((size_t)out * (size_t)a->taps * sizeof(float));
    if (!a->xmin || !a->xsize || !a->w) {
        aa_axis_free(a);
        return -1;
    }
    float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;
    for (int i = 0; i < out; i++) {
        float center = (float)((double)scale * (i + 0.5));
        long xmin = (long)((double)(center - support) + 0.5);
        if (xmin < 0)
            xmin = 0;
        long xmax = (long)((double)(center + support) + 0.5);
        if (xmax > in)
            xmax = in;
        long xsize = xmax - xmin;
        if (xsize > a->taps)
            xsize = a->taps;
        float *w = a->w + (size_t)i * (size_t)a->taps;
        float total = 0.0f;
        for (long j = 0; j < xsize; j++) {
            float arg = (float)(((double)((float)(j + xmin) - center) + 0.5) * (double)invscale);
            w[j] = aa_filter(arg);
            total += w[j];
        }
        for (long j = 0; j < xsize; j++)
            if (total != 0.0f)
                w[j] /= total;
        for (long j = xsize; j < a->taps; j++)
            w[j] = 0.0f;
        a->xmin[i] = (int)xmin;
        a->xsize[i] = (int)(xsize > 0 ? xsize : 0);
    }
    return 0;
}

/* Resamples the region (x0, y0, rw, rh) of each of nc planes of src (stride
 * sw, plane size splane) to (nc, oh, ow) in dst. Width pass first, as PyTorch. */
static chex_pre_err resample(float *dst, const float *src, int nc, size_t splane, int sw, int x0,
                             int y0, int rw, int rh, int ow, int oh)
{
    aa_axis ax = {0}, ay = {0};
    float *tmp = NULL;
    chex_pre_err e = CHEX_PRE_ERR_NOMEM;
    if (aa_axis_init(&ax, rw, ow) != 0 || aa_axis_init(&ay, rh, oh) != 0)
        goto done;
    tmp = malloc((size_t)rh * (size_t)ow * sizeof(float));
    if (!tmp)
        goto done;
    for (int c = 0; c < nc; c++) {
        const float *plane = src + (size_t)c * splane;
        for (int y = 0; y < rh; y++) {
            const float *row = plane + (size_t)(y0 + y) * (size_t)sw + x0;
            float *trow = tmp + (size_t)y * (size_t)ow;
            for (int i = 0; i < ow; i++) {
                const float *w = ax.w + (size_t)i * (size_t)ax.taps;
                const float *s = row + ax.xmin[i];
                int n = ax.xsize[i];
                float acc = n > 0 ? s[0] * w[0] : 0.0f;
                for (int j = 1; j < n; j++)
                    acc += s[j] * w[j];
                trow[i] = acc;
            }
        }
        float *oplane = dst + (size_t)c * (size_t)oh * (size_t)ow;
        for (int i = 0; i < oh; i++) {
            const float *w = ay.w + (size_t)i * (size_t)ay.taps;
            const float *s = tmp + (size_t)ay.xmin[i] * (size_t)ow;
            int n = ay.xsize[i];
            float *orow = oplane + (size_t)i * (size_t)ow;
            if (n <= 0) {
                memset(orow, 0, (size_t)ow * sizeof(float));
                continue;
            }
            for (int x = 0; x < ow; x++)
                orow[x] = s[x] * w[0];
            for (int j = 1; j < n; j++) {
                const float *sr = s + (size_t)j * (size_t)ow;
                float wj = w[j];
                for (int x = 0; x < ow; x++)
                    orow[x] += sr[x] * wj;
            }
        }
    }
    e = CHEX_PRE_OK;
done:
    free(tmp);
    aa_axis_free(&ax);
    aa_axis_free(&ay);
    return e;
}

/* One (C, S, S) tensor from the (wc, rh, rw) resized image at (top, left);
 * mirrored: the crop at (top, left) of the horizontally flipped image. */
static void emit_crop(float *out, const float *res, int wc, int rh, int rw, int top, int left,
                      int mirrored, int C, int S, const chex_pre_spec *spec)
{
    (void)rh;
    size_t rplane = (size_t)rh * (size_t)rw;
    for (int c = 0; c < C; c++) {
        const float *plane = res + (size_t)(wc == 1 ? 0 : c) * rplane;
        float mean = spec->mean[C == 1 ? 0 : c], std = spec->std[C == 1 ? 0 : c];
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

static chex_pre_err check_args(const chex_pre_image *img, const chex_pre_spec *spec,
                               const float *out, char *msg, size_t msglen)
{
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
    if (parse_preset(spec) == P_UNKNOWN) {
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

/* Normalised samples for the xrv preset, as torchxrayvision computes them in
 * float32: normalize() per channel ((x - mean) / std with mean 0.5, std
 * 1/2048 is bit-identical to its (2 * x - 1) * 1024 on x = s / maxval), then
 * a colour image's channel mean ((r + g) + b) / 3 (its README's img.mean(2)). */
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

static chex_pre_err xrv_tensor(const chex_pre_image *img, const chex_pre_spec *spec, float *out,
                               chex_pre_crop *crops, char *msg, size_t msglen)
{
    const int W = img->width, H = img->height, S = spec->size;
    const int side = W < H ? W : H, x0 = W / 2 - side / 2, y0 = H / 2 - side / 2;
    if ((long)side * S > MAX_RESIZED_PIXELS * 4) {
        chex_pre_msg(msg, msglen, "%dx%d image: too large to resize", W, H);
        return CHEX_PRE_ERR_UNUSABLE;
    }
    xrv_ctx ctx = {img->pix, (size_t)W * (size_t)H, img->channels, spec->channels, spec};
    chex_pre_err e = chex_pre_xrv_resize(out, spec->channels, S, W, x0, y0, side, xrv_norm, &ctx);
    if (e != CHEX_PRE_OK) {
        chex_pre_msg(msg, msglen, "out of memory resizing to %dx%d", S, S);
        return e;
    }
    if (crops)
        crops[0] = (chex_pre_crop){(float)x0, (float)y0, (float)(x0 + side), (float)(y0 + side), 0};
    return CHEX_PRE_OK;
}

chex_pre_err chex_pre_tensor(const chex_pre_image *img, const chex_pre_spec *spec, float *out,
                             chex_pre_crop *crops, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    chex_pre_err e = check_args(img, spec, out, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    enum preset p = parse_preset(spec);
    if (p == P_XRV)
        return xrv_tensor(img, spec, out, crops, msg, msglen);
    const int C = spec->channels, S = spec->size, W = img->width, H = img->height;
    const size_t plane = (size_t)W * (size_t)H;

    /* Working source: the image itself, or its luminance when the model wants
     * one channel of a colour image. A gray image for a 3-channel model is
     * resized once and replicated in emit_crop. */
    const float *src = img->pix;
    float *lum = NULL, *res = NULL;
    int wc = img->channels;
    if (img->channels == 3 && C == 1) {
        lum = malloc(plane * sizeof(float));
        if (!lum) {
            chex_pre_msg(msg, msglen, "out of memory converting %dx%d to gray", W, H);
            return CHEX_PRE_ERR_NOMEM;
        }
        const float *r = img->pix, *g = r + plane, *b = g + plane;
        for (size_t i = 0; i < plane; i++)
            lum[i] = r[i] * 0.299f + g[i] * 0.587f + b[i] * 0.114f;
        src = lum;
        wc = 1;
    }

    int x0 = 0, y0 = 0, rw = W, rh = H, ow, oh;
    if (p == P_CROP || p == P_TENCROP) {
        long r = lround(S * 256.0 / 224.0);
        long shorter = W <= H ? W : H, longer = W <= H ? H : W;
        long nlong = (long)((double)(r * longer) / (double)shorter);
        ow = (int)(W <= H ? r : nlong);
        oh = (int)(W <= H ? nlong : r);
        if ((long)ow * oh > MAX_RESIZED_PIXELS || ow < S || oh < S) {
            chex_pre_msg(msg, msglen, "%dx%d image: aspect ratio too extreme to resize", W, H);
            return free(lum), CHEX_PRE_ERR_UNUSABLE;
        }
    } else {
        ow = oh = S;
    }
    /* the width pass's intermediate is rh x ow per channel */
    if ((long)rh * ow > MAX_RESIZED_PIXELS * 4) {
        chex_pre_msg(msg, msglen, "%dx%d image: aspect ratio too extreme to resize", W, H);
        return free(lum), CHEX_PRE_ERR_UNUSABLE;
    }
    res = malloc((size_t)wc * (size_t)ow * (size_t)oh * sizeof(float));
    if (!res) {
        free(lum);
        chex_pre_msg(msg, msglen, "out of memory resizing to %dx%d", ow, oh);
        return CHEX_PRE_ERR_NOMEM;
    }
    e = resample(res, src, wc, plane, W, x0, y0, rw, rh, ow, oh);
    free(lum);
    if (e != CHEX_PRE_OK) {
        free(res);
        chex_pre_msg(msg, msglen, "out of memory resizing to %dx%d", ow, oh);
        return e;
    }

    /* Crop positions in the resized image; boxes mapped back by its scale. */
    int ctop = (int)nearbyint((oh - S) / 2.0), cleft = (int)nearbyint((ow - S) / 2.0);
    int tops[5] = {0, 0, oh - S, oh - S, ctop};
    int lefts[5] = {0, ow - S, 0, ow - S, cleft};
    int n = chex_pre_ncrops(spec);
    double sx = (double)rw / ow, sy = (double)rh / oh;
    size_t tsize = (size_t)C * (size_t)S * (size_t)S;
    for (int k = 0; k < n; k++) {
        int top, left, mirrored = k >= 5;
        if (p == P_TENCROP) {
            top = tops[k % 5];
            left = lefts[k % 5];
        } else if (p == P_CROP) {
            top = ctop;
            left = cleft;
        } else {
            top = left = 0;
        }
        emit_crop(out + (size_t)k * tsize, res, wc, oh, ow, top, left, mirrored, C, S, spec);
        if (crops) {
            /* a mirrored crop at left covers [ow-left-S, ow-left) of the resized image */
            int l = mirrored ? ow - left - S : left;
            crops[k].x0 = (float)(x0 + l * sx);
            crops[k].x1 = (float)(x0 + (l + S) * sx);
            crops[k].y0 = (float)(y0 + top * sy);
            crops[k].y1 = (float)(y0 + (top + S) * sy);
            crops[k].flipped = mirrored;
        }
    }
    free(res);
    return CHEX_PRE_OK;
}
