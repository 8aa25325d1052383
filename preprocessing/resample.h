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
 *                            them: each row is summed, weighted, into the
 *                            output rows that read it (at most ay->live at
 *                            once, each as wide as the source region), and an
 *                            output row's width pass runs once its last input
 *                            row is in. No full-resolution plane.
 * Height pass first, then width: PyTorch runs width first; the sums are the
 * same up to float rounding (tests/reference holds the tensors within 1e-4
 * of PyTorch's), and height first is the cheap order for a downscale: the
 * height pass runs on contiguous rows (AVX-512 when the CPU has it, with
 * the scalar loop's roundings: no fused multiply-add, the same floats) and
 * the width pass, a gather of taps per output, runs on output rows only.
 */
#ifndef CHEX_PRE_RESAMPLE_H
#define CHEX_PRE_RESAMPLE_H

#include <stddef.h>

typedef struct {
    int in, out;  /* samples along the axis: source region -> result */
    int taps;     /* row stride of w: the most weights any output sample has */
    int *first;   /* (out) first input index, 0 <= first, first + count <= in */
    int *count;   /* (out) weights used, 0..taps; first and first + count - 1
                     never decrease with the output index (the streaming
                     engine relies on it) */
    int live;     /* most outputs a single input row is summed into before
                     the earliest of them is complete (the streaming
                     engine's accumulators) */
    float *w;     /* (out, taps), entries past count are 0 */
} chex_pre_axis;

/* torch.nn.functional.interpolate(mode='bilinear', antialias=True,
 * align_corners=False) along one axis, weights computed exactly as PyTorch's
 * _compute_indices_weights_aa for float tensors. 0, or -1 (out of memory,
 * nothing to free). in, out >= 1. */
int chex_pre_axis_torch_aa(chex_pre_axis *a, int in, int out);
/* taps and live of chex_pre_axis_torch_aa's axis for in -> out, computed
 * without building it. */
int chex_pre_axis_torch_aa_taps(int in, int out);
int chex_pre_axis_torch_aa_live(int in, int out);
/* Heap bytes of an axis of `out` samples with `taps` weights each. */
size_t chex_pre_axis_bytes(int out, int taps);
void chex_pre_axis_free(chex_pre_axis *a);

/* Reference: resamples the region (x0, y0, ax->in, ay->in) of each of nc
 * planes of src (row stride sw, plane stride splane) into dst (nc, ay->out,
 * ax->out). tmp holds ax->in floats. */
void chex_pre_resample_naive(float *dst, const float *src, int nc, size_t splane, int sw, int x0,
                             int y0, const chex_pre_axis *ax, const chex_pre_axis *ay, float *tmp);

/* The height pass's step on n floats: acc = row * w (first) or acc += row *
 * w, each operation rounded on its own. chex_pre_vrow is what the engines
 * use (AVX-512 when the CPU has it, unless CHEX_PRE_SCALAR is set);
 * chex_pre_vrow_scalar is the plain loop it must equal bit for bit. */
void chex_pre_vrow(float *acc, const float *row, float w, int n, int first);
void chex_pre_vrow_scalar(float *acc, const float *row, float w, int n, int first);

/* Streaming engine. The axes and out are borrowed and must outlive it. */
typedef struct {
    const chex_pre_axis *ax, *ay;
    int nc, x0, y0;
    float *out;       /* (nc, ay->out, ax->out) */
    float *acc;       /* (live, nc, ax->in) output rows being summed; output i
                         in slot i % live */
    int live;
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
/* The same from the source region's width and ay->live. */
size_t chex_pre_stream_bytes_for(int rw, int live, int nc);

#endif
