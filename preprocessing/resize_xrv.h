/* preprocessing/resize_xrv.h - torchxrayvision's resize as per-axis weight tables.
 *
 * torchxrayvision's XRayResizer(S) (torchxrayvision/datasets.py) is
 *   skimage.transform.resize(img, (1, S, S), mode='constant', preserve_range=True)
 * which, as Debian 12's python3-skimage 0.19.3 runs it
 * (skimage/transform/_warps.py resize, scipy 1.10 ndimage), is per axis:
 *   1. when downsampling (in > out): scipy.ndimage.gaussian_filter with
 *      sigma = max(0, (in/out - 1) / 2), truncate 4.0 (radius
 *      int(4 * sigma + 0.5)), mode 'grid-constant' cval 0 (samples outside
 *      the image are 0);
 *   2. scipy.ndimage.zoom(order=1, grid_mode=True, mode 'grid-constant',
 *      cval 0): output o samples the filtered line at c = (o + 0.5) * in/out
 *      - 0.5, linear between floor(c) and floor(c) + 1, samples outside the
 *      line being 0;
 *   3. the result clipped to the input's [min, max] (widened to include 0
 *      when 0 lies outside it but inside the output's range).
 * Steps 1 and 2 are linear and separable, so each axis is one weight table
 * (their composition, computed in double); step 3 is applied by the caller
 * on the whole plane. The weights of an output near an edge sum to less than
 * 1 (the zero padding), so the resize must run on already normalised values
 * (torchxrayvision normalises to [-1024, 1024] before resizing).
 * Reentrant, no global state.
 */
#ifndef CHEX_RESIZE_XRV_H
#define CHEX_RESIZE_XRV_H

#include "preprocessing/preprocess.h"

/* One axis, in -> out samples: output o = sum_{j < count[o]} w[o*taps + j] *
 * input[first[o] + j]; 0 <= first[o], first[o] + count[o] <= in. Owned by
 * the caller; free with chex_pre_axis_weights_free. */
typedef struct {
    int in, out;
    int taps;    /* row stride of w: the largest count */
    int *first;  /* (out) */
    int *count;  /* (out), 0 when every sample the output sees is padding */
    double *w;   /* (out, taps) */
} chex_pre_axis_weights;

/* skimage resize's weights (steps 1 and 2 above) for one axis. in, out >= 1.
 * CHEX_PRE_ERR_ARG for bad sizes, NOMEM; *a is zeroed first and left empty on
 * error. */
chex_pre_err chex_pre_xrv_axis_weights(chex_pre_axis_weights *a, int in, int out);
void chex_pre_axis_weights_free(chex_pre_axis_weights *a);

/* A (nc, S, S) resize of the square region (x0, y0, side, side) of nc planes,
 * each sample first mapped by norm (torchxrayvision's normalisation, its
 * channel mean included): norm(ctx, y * sw + x, c) returns the normalised
 * value of output plane c at source pixel (x, y).
 * Steps 1-3 above, accumulated in double, rounded to float once. Writes
 * dst (nc, S, S). NOMEM. */
typedef float (*chex_pre_xrv_norm_fn)(const void *ctx, size_t idx, int c);
chex_pre_err chex_pre_xrv_resize(float *dst, int nc, int S, int sw, int x0, int y0, int side,
                                 chex_pre_xrv_norm_fn norm, const void *ctx);

#endif
