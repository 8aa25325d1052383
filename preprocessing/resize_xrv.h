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

/* The largest tap count chex_pre_xrv_axis_weights uses for in -> out. */
int chex_pre_xrv_taps(int in, int out);
/* Heap bytes of chex_pre_xrv_axis_weights(in, out). */
size_t chex_pre_xrv_axis_bytes(int in, int out);

/* Step 3 on one (S x S) plane: clipped to [lo, hi], the input's range,
 * widened to 0 as skimage's _clip_warp_output does. */
void chex_pre_xrv_clip(float *plane, size_t n, float lo, float hi);

/* Streaming engine for the same resize: the region (x0, y0, side, side) of
 * rows pushed in order, each row's width pass as it arrives, each output
 * row's height pass once its last input row is in a ring of a->taps
 * width-resampled rows; the same double operations in the same order as
 * chex_pre_xrv_resize, so (float)out before the clip is bit-identical to it.
 * Also tracks each plane's [lo, hi] over the region. Both axes use the
 * table a (side -> S), borrowed. */
typedef struct {
    const chex_pre_axis_weights *a;
    int nc, x0, y0;
    double *ring;     /* (taps, nc, S) width-resampled rows */
    double *out;      /* (nc, S, S), unclipped */
    const double **rows;
    int next_out;
    int end_out;       /* output rows [.., end_out) are this stream's */
    int first_row;     /* first region row (from y0) any of them reads */
    int mm_lo, mm_hi;  /* region rows [mm_lo, mm_hi) count in lo/hi */
    int own_out;       /* out was allocated by init */
    float lo[3], hi[3];
} chex_pre_xrv_stream;

/* nc 1..3. NOMEM (nothing to free beyond chex_pre_xrv_stream_free). */
chex_pre_err chex_pre_xrv_stream_init(chex_pre_xrv_stream *s, const chex_pre_axis_weights *a,
                                      int nc, int x0, int y0);
/* A band of the same engine: only output rows [o0, o1) of out (borrowed,
 * (nc, S, S) as the whole stream's), from the region rows they read, and
 * lo/hi over region rows [mm_lo, mm_hi) only. Each output row is computed
 * exactly as the whole stream computes it; bands covering [0, S) and whose
 * [mm_lo, mm_hi) cover the region give, with their lo/hi combined by
 * min/max, the whole stream's result. ARG, NOMEM. */
chex_pre_err chex_pre_xrv_stream_init_band(chex_pre_xrv_stream *s,
                                           const chex_pre_axis_weights *a, int nc, int x0,
                                           int y0, double *out, int o0, int o1, int mm_lo,
                                           int mm_hi);
/* Source row y (0, 1, 2, ... in order; rows outside the region are
 * ignored); planes[c][x] is sample x of plane c. */
void chex_pre_xrv_stream_push(chex_pre_xrv_stream *s, int y, const float *const *planes);
/* 1 when chex_pre_xrv_stream_push(s, y, ..) would use row y. */
int chex_pre_xrv_stream_wants(const chex_pre_xrv_stream *s, int y);
void chex_pre_xrv_stream_free(chex_pre_xrv_stream *s);
/* Heap bytes chex_pre_xrv_stream_init allocates for side -> S. */
size_t chex_pre_xrv_stream_bytes(int side, int S, int nc);
/* sum[o] = the weights of output o, summed in order (the resize of a plane
 * of ones is sum[y] * sum[x]). */
void chex_pre_xrv_weight_sums(const chex_pre_axis_weights *a, double *sum);

#endif
