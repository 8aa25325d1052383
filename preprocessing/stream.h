/* preprocessing/stream.h - where decoded rows go (internal).
 *
 * Every decoder (png.c, jpeg.c, dicom.c) produces its image row by row, as
 * planar float rows of 1 (gray) or 3 (RGB) channels, and hands each to a
 * chex_pre_rows. What the rows become depends on how it was set up:
 *   full mode   (chex_pre_decode)  they are stored into a full-resolution
 *               float image (chex_pre_image.pix): the reference path, used by
 *               tests and tools that inspect pixels;
 *   stream mode (chex_pre_prepare) they go straight into the preset's
 *               resampler (and the display copy's); only the model-size
 *               resized plane(s) exist, no full-resolution plane.
 * Colour -> gray (PIL 'L' weights 0.299/0.587/0.114, float) is done per row
 * when the model wants one channel (and always for the display copy).
 *
 * Decoders whose samples need the whole image's range (16-bit gray PNG,
 * minmax) set raw_values, push raw values and pass the affine map at the end
 * (chex_pre_rows_finish): stream mode applies it after resampling, which is
 * exact up to float rounding because the resampling weights are positive
 * and sum to 1 (tests/unit/test_pre_stream.c checks it stays within 1e-4).
 * The xrv preset's weights do not sum to 1 near the borders (skimage's zero
 * padding in normalised units): there the normalised result is
 * a * R + b * sum_y * sum_x, R the resampled raw values, sum_* the per-axis
 * weight sums (the resize of a plane of ones), a, b the map composed with
 * the normalisation; other rows are normalised before the width pass.
 * xrv's clip bounds are the region's min/max, tracked as rows stream.
 *
 * Sequence: chex_pre_rows_begin, then for y = 0 .. height-1:
 * chex_pre_rows_next (where to write row y) and chex_pre_rows_commit, then
 * chex_pre_rows_finish; chex_pre_rows_free in every case.
 */
#ifndef CHEX_PRE_STREAM_H
#define CHEX_PRE_STREAM_H

#include "preprocessing/preprocess.h"
#include "preprocessing/resample.h"
#include "preprocessing/resize_xrv.h"

enum chex_pre_preset { CHEX_PRESET_UNKNOWN, CHEX_PRESET_CROP, CHEX_PRESET_TENCROP,
                       CHEX_PRESET_RESIZE, CHEX_PRESET_XRV };

/* Where a preset resizes from and to: the source region (x0, y0, rw, rh)
 * becomes (ow, oh), then crops of S x S are taken from it. */
typedef struct {
    enum chex_pre_preset preset;
    int x0, y0, rw, rh, ow, oh;
} chex_pre_geom;

enum chex_pre_preset chex_pre_parse_preset(const chex_pre_spec *spec);
/* Preset, channels, size, mean/std usable; else ARG with msg. */
chex_pre_err chex_pre_spec_check(const chex_pre_spec *spec, char *msg, size_t msglen);
/* Checks spec (preset, channels, size, mean/std: ARG) and the image size
 * (aspect ratio too extreme: UNUSABLE) and fills g. */
chex_pre_err chex_pre_geom_make(const chex_pre_spec *spec, int W, int H, chex_pre_geom *g,
                                char *msg, size_t msglen);
/* ncrops (C, S, S) tensors and crop boxes from the resized (wc, oh, ow)
 * image res (wc 1: replicated to C channels). */
void chex_pre_emit(float *out, chex_pre_crop *crops, const float *res, int wc,
                   const chex_pre_geom *g, const chex_pre_spec *spec);

/* Display copy size for a W x H image: unchanged when its longer side is
 * <= max_side (or max_side <= 0), else longer side = max_side and the
 * shorter one scaled (rounded, at least 1). */
void chex_pre_display_size(int W, int H, int max_side, int *dw, int *dh);

typedef struct chex_pre_rows_s {
    /* set by the caller before chex_pre_rows_begin */
    chex_pre_image *img;        /* full mode: receives pix; stream mode: NULL */
    const chex_pre_spec *spec;  /* stream mode */
    chex_pre_display *display;  /* stream mode, optional: gray display copy */
    int max_display_side;       /* stream mode: display copy's longer side */
    float *out;                 /* stream mode: ncrops (C, S, S) tensors */
    chex_pre_crop *crops;       /* stream mode, optional: ncrops boxes */
    int raw_values;             /* rows carry raw values whose map comes
                                   with chex_pre_rows_finish (16-bit gray
                                   PNG, minmax) */
    int threads;                /* stream mode: most threads a decoder may
                                   split the rows over (chex_pre_rows_banded);
                                   <= 1: the calling thread only */
    /* state */
    int width, height, channels, y;
    float *planes[3];           /* where the current row goes */
    float *scratch, *lum;       /* stream mode row buffers */
    chex_pre_geom geom;
    int wc;                     /* channels resampled for the tensor: 1 or 3 */
    chex_pre_axis ax, ay, dax, day;
    chex_pre_stream st, dst;
    float *res;                 /* (wc, oh, ow) */
    /* xrv preset: skimage's resize on normalised rows (nrow), or on raw
     * values mapped afterwards (raw_values, gray) */
    chex_pre_axis_weights xa;
    chex_pre_xrv_stream xs;
    float *nrow;                /* (wc, width) normalised row */
    double *xsum;               /* raw_values: (S) per-axis weight sums */
    int disp_scaled;
} chex_pre_rows;

/* w x h image of channels 1 or 3 (header already checked). Stream mode also
 * checks the geometry (UNUSABLE/ARG as chex_pre_geom_make). NOMEM on
 * allocation failure. */
chex_pre_err chex_pre_rows_begin(chex_pre_rows *r, int w, int h, int channels, char *msg,
                                 size_t msglen);
/* Channel c of row y goes to planes[c][0 .. width) after this call. */
float *const *chex_pre_rows_next(chex_pre_rows *r);
void chex_pre_rows_commit(chex_pre_rows *r);
/* After the last row. with_map: every value v becomes (v - off) / range, or 0
 * when range <= 0 (minmax of a constant image). Stream mode then writes the
 * tensors and crops into r->out and r->crops. */
void chex_pre_rows_finish(chex_pre_rows *r, int with_map, float off, float range);
void chex_pre_rows_free(chex_pre_rows *r);

/* Banded stream mode, for large one-channel images whose rows can be made
 * in any order (DICOM frames in memory): instead of the next/commit loop,
 * after chex_pre_rows_begin, the image's rows are cut into nbands bands of
 * consecutive rows, handed in order to a team of min(nthreads, nbands)
 * OpenMP threads, each taking the next band when it is free (inside an
 * active parallel region the team is one thread: still correct). Each
 * output row of every resampler (the preset's, xrv's, the display copy's)
 * belongs to the band holding the last input row it reads; a band makes
 * with row(ctx, y, dst) (dst: width floats) every row its outputs read (the
 * filter's support above its first row is made again by the band before),
 * runs them through the resampler for its own output rows only, with
 * the same float operations as the next/commit loop: the result is
 * bit-identical to it whatever nbands and nthreads. xrv's lo/hi are each
 * band's own rows' extremes, combined in band order. row is called
 * concurrently from the team. Then chex_pre_rows_finish as usual. Requires
 * stream mode, channels 1, no raw_values, no row pushed yet, 1 <= nbands <=
 * CHEX_PRE_MAX_BANDS, nthreads >= 1 (else ARG); NOMEM. */
typedef void (*chex_pre_row_fn)(void *ctx, int y, float *dst);
chex_pre_err chex_pre_rows_banded(chex_pre_rows *r, int nbands, int nthreads,
                                  chex_pre_row_fn row, void *ctx, char *msg, size_t msglen);

/* Bands chex_pre_rows_banded is worth for a w x h image on `threads`
 * threads: 1 below CHEX_PRE_BAND_MIN_PIXELS pixels (starting the team would
 * cost more than it saves) or for threads <= 1, else
 * CHEX_PRE_BANDS_PER_THREAD a thread (so that a thread the system delays
 * holds up a small band: each band boundary costs the filter's support in
 * recomputed rows, ~1 % of a DX's rows), at most one band per
 * CHEX_PRE_BAND_MIN_ROWS rows and CHEX_PRE_MAX_BANDS. */
#define CHEX_PRE_BAND_MIN_PIXELS (UINT64_C(1) << 20)
#define CHEX_PRE_BANDS_PER_THREAD 2
#define CHEX_PRE_BAND_MIN_ROWS 64
#define CHEX_PRE_MAX_BANDS 256
int chex_pre_band_count(int threads, int w, int h);
/* Heap bytes chex_pre_rows_banded allocates on top of chex_pre_rows_bytes
 * for nbands bands (0 for nbands <= 1), display band streams included. */
uint64_t chex_pre_rows_band_bytes(const chex_pre_spec *spec, int w, int h, int max_display_side,
                                  int nbands);

/* Upper bound of the heap bytes a stream-mode chex_pre_rows allocates for a
 * w x h image of `channels`, display copy excepted (*display_bytes gets it:
 * what a display-asking caller allocates on top). 0 with msg when the
 * geometry is refused (same error as chex_pre_geom_make in *err). */
uint64_t chex_pre_rows_bytes(const chex_pre_spec *spec, int w, int h, int channels,
                             int max_display_side, uint64_t *display_bytes);

#endif
