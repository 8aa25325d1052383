/* preprocessing/resample.h - separable resampling driven by per-axis weight
 * tables (internal).
 *
 * A resize is two weight tables, one per axis: for each output index, the
 * first input index, the number of inputs and their weights. Any separable
 * resize fits (torch's antialiased bilinear here, skimage's in its own file):
 * a new one only has to fill a chex_pre_axis.
 *
 * Two engines apply the tables with the same float operations in the same
 * order, so they give bit-identical results:
 *   chex_pre_resample_naive  whole planes in memory (the reference);
 *   chex_pre_stream_*        rows pushed one at a time as a decoder produces
 *                            them: the width pass runs on each row as it
 *                            arrives, the height pass as soon as the last row
 *                            an output row needs is in a ring of ay->taps
 *                            width-resampled rows. No full-resolution plane.
 * Width pass first, then height, as PyTorch.
 */
#ifndef CHEX_PRE_RESAMPLE_H
#define CHEX_PRE_RESAMPLE_H

#include <stddef.h>

typedef struct {
    int in, out;  /* samples along the axis: source region -> result */
    int taps;     /* row stride of w: the most weights any output sample has */
    int *first;   /* (out) first input index, 0 <= first, first + count <= in */
    int *count;   /* (out) weights used, 0..taps; first + count - 1 never
                     decreases with the output index (the streaming engine
                     relies on it) */
    float *w;     /* (out, taps), entries past count are 0 */
} chex_pre_axis;

/* torch.nn.functional.interpolate(mode='bilinear', antialias=True,
 * align_corners=False) along one axis, weights computed exactly as PyTorch's
 * _compute_indices_weights_aa for float tensors. 0, or -1 (out of memory,
 * nothing to free). in, out >= 1. */
int chex_pre_axis_torch_aa(chex_pre_axis *a, int in, int out);
/* taps chex_pre_axis_torch_aa uses for in -> out. */
int chex_pre_axis_torch_aa_taps(int in, int out);
/* Heap bytes of an axis of `out` samples with `taps` weights each. */
size_t chex_pre_axis_bytes(int out, int taps);
void chex_pre_axis_free(chex_pre_axis *a);

/* Reference: resamples the region (x0, y0, ax->in, ay->in) of each of nc
 * planes of src (row stride sw, plane stride splane) into dst (nc, ay->out,
 * ax->out). tmp holds ay->in * ax->out floats, rows ay->taps pointers. */
void chex_pre_resample_naive(float *dst, const float *src, int nc, size_t splane, int sw, int x0,
                             int y0, const chex_pre_axis *ax, const chex_pre_axis *ay, float *tmp,
                             const float **rows);

/* Streaming engine. The axes and out are borrowed and must outlive it. */
typedef struct {
    const chex_pre_axis *ax, *ay;
    int nc, x0, y0;
    float *out;       /* (nc, ay->out, ax->out) */
    float *ring;      /* (ring_rows, nc, ax->out) width-resampled rows */
    const float **rows; /* (ring_rows) scratch for the height pass */
    int ring_rows;
    int next_out;     /* next output row to produce */
    int end_out;      /* output rows [.., end_out) are this stream's */
    int first_row;    /* first region row (from y0) any of them reads */
} chex_pre_stream;

/* 0, or -1 when out of memory. Output rows whose count is 0 are zeros. */
int chex_pre_stream_init(chex_pre_stream *s, const chex_pre_axis *ax, const chex_pre_axis *ay,
                         int nc, int x0, int y0, float *out);
/* A band: the same engine producing only output rows [o0, o1) of out (the
 * whole plane's layout), from the source rows they read (pushed in order;
 * others are ignored). Each output row is computed exactly as the whole
 * stream computes it, so bands of one plane run on separate threads and
 * together write the same floats. 0 <= o0 <= o1 <= ay->out. */
int chex_pre_stream_init_band(chex_pre_stream *s, const chex_pre_axis *ax,
                              const chex_pre_axis *ay, int nc, int x0, int y0, float *out,
                              int o0, int o1);
/* Source row y (rows must come in order 0, 1, 2, ...; those outside
 * [y0, y0 + ay->in) are ignored): planes[c] points at its first sample
 * (x = 0) of channel c. */
void chex_pre_stream_push(chex_pre_stream *s, int y, const float *const *planes);
/* 1 when chex_pre_stream_push(s, y, ..) would use row y. */
int chex_pre_stream_wants(const chex_pre_stream *s, int y);
/* 1 once every output row has been written. */
int chex_pre_stream_done(const chex_pre_stream *s);
void chex_pre_stream_free(chex_pre_stream *s);
/* Heap bytes chex_pre_stream_init allocates. */
size_t chex_pre_stream_bytes(const chex_pre_axis *ax, const chex_pre_axis *ay, int nc);
size_t chex_pre_stream_bytes_for(int ow, int ytaps, int nc);

#endif
