/* model/qkernels.h - int8 convolution kernels (precision=int8).
 *
 * The quantised scheme (every input of a DenseNet convolution follows a ReLU):
 *  - activations are u8 with one scale per tensor: x ~ q * sa, q in [0, 255],
 *    zero point 0, so no zero-point compensation is ever needed;
 *  - weights are s8 with one scale per output channel: w[o][k] ~ qw * sw[o],
 *    qw in [-127, 127] (symmetric);
 *  - products accumulate in int32 (AVX512-VNNI vpdpbusd: u8 x s8, 4 k per
 *    32-bit lane), then one fp32 requantisation per output:
 *      v = fmaf((float)acc, out_scale[o], out_shift[o])
 *    where the caller has folded sa * sw[o] and any following BN into
 *    out_scale / out_shift.
 *
 * K is grouped by 4 ("k-groups", kg = K / 4; K is always a multiple of 4).
 * For a conv with taps positions per channel (1 for 1x1, 9 for 3x3) k-group
 * g = cg * taps + t holds channels 4cg .. 4cg+3 at tap t.
 *
 * Layouts (bytes):
 *  - packed weights (chex_q8_pack_weights): 8-row panels; in panel P, k-group
 *    g, row r, lane i: dst[(P * kg + g) * 32 + r * 4 + i]. m rows, m a multiple
 *    of 8; m * K bytes in all.
 *  - "grouped" u8 activations: channel c of pixel p is byte 4 * (p + (c/4) *
 *    plane) + c % 4 of its image, i.e. planes of 4-channel groups, each pixel
 *    4 consecutive bytes, so one k-group of a pixel is one 32-bit load.
 *
 * Determinism contract (the fast paths are tested for EXACT equality with
 * chex_q8_conv_naive, so each step is specified):
 *  - input quantisation of an fp32 value x of channel c:
 *      v = fmaf(x, pre_scale[c], pre_shift[c]); v = v > 0 ? v : 0;
 *      q = (int)nearbyintf(fminf(v * in_inv_scale, 255.0f))   (ties to even)
 *    and for the pooled kind, v0..v3 as above for the 2x2 window (row-major),
 *      p = (((v0 + v1) + v2) + v3) * 0.25f; q = nearbyintf(fminf(p * inv, 255))
 *  - fp32 output: v = fmaf((float)acc, out_scale[o], out_shift[o]), then
 *    max(v, 0) if out_relu;
 *  - u8 output: q = nearbyintf(fminf(fmaxf(v, 0), 255)) with v as above (ReLU
 *    implied).
 *
 * Thread safety: the kernels hold no state; conv may run concurrently on
 * different scratch areas. conv with nthreads == 1 forms no OpenMP team, so a
 * thread of the caller's own parallel region may call it.
 */
#ifndef CHEX_QKERNELS_H
#define CHEX_QKERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    /* 1x1 conv of quant(relu(src * pre_scale + pre_shift)); src is fp32
     * (n, >= c, h, w) with image stride src_img_stride floats; oh = h, ow = w. */
    CHEX_Q8_BNRELU_1X1 = 0,
    /* 1x1 conv of quant(avgpool2x2(relu(src * pre_scale + pre_shift))); oh =
     * h / 2, ow = w / 2 (floor). */
    CHEX_Q8_BNRELU_POOL,
    /* 3x3, stride 1, pad 1 over grouped u8 qsrc stored with a zero border:
     * per image (c/4) planes of (h+2) x src_row pixels (src_row >= w+2,
     * plane stride src_plane pixels, image stride qsrc_img_stride pixels),
     * pixel (y, x) at (y+1) * src_row + x+1. K = 9c, k-group g = cg*9 + ky*3 +
     * kx. The GEMM may run over oh x src_row virtual columns and read up to
     * 64 pixels (256 bytes) past the end of the last plane: the caller leaves
     * that slack readable. */
    CHEX_Q8_CONV3X3_PADDED
} chex_q8_kind;

typedef struct {
    chex_q8_kind kind;
    int n;                     /* images */
    int c, h, w;               /* input channels (multiple of 4) and spatial size */
    int oh, ow;                /* output spatial size */
    /* fp32 source (BNRELU kinds) */
    const float *src;
    long src_img_stride;       /* floats */
    const float *pre_scale, *pre_shift; /* (c) */
    float in_inv_scale;        /* 1 / sa of the quantised input */
    /* grouped u8 source (CONV3X3_PADDED); strides in pixels (4 bytes each) */
    const uint8_t *qsrc;
    long qsrc_img_stride, src_plane, src_row;
    /* weights: packed by chex_q8_pack_weights, m rows (multiple of 8) */
    const int8_t *wt;
    int m;
    const float *out_scale, *out_shift; /* (m), both required */
    int out_relu;              /* fp32 output only (u8 output is always >= 0) */
    /* Output, exactly one of dst / qdst non-NULL.
     * fp32: pixel (y, x) of channel o of image i at dst[i*dst_img_stride +
     *   o*dst_plane + dst_off + y*dst_row + x] (floats).
     * grouped u8: at byte 4 * (i*dst_img_stride + (o/4)*dst_plane + dst_off +
     *   y*dst_row + x) + o%4 of qdst (strides in pixels).
     * dst_plane / dst_row 0 mean dense: oh*ow and ow. */
    float *dst;
    uint8_t *qdst;
    long dst_img_stride, dst_plane, dst_row, dst_off;
} chex_q8_args;

typedef struct {
    const char *name;          /* "avx512" (VNNI), "avx2", "generic" */
    /* scratch: nthreads areas of scratch_bytes each, 64-byte aligned, each at
     * least chex_q8_scratch_bytes(K) long. Never allocates. */
    void (*conv)(const chex_q8_args *a, uint8_t *scratch, size_t scratch_bytes, int nthreads);
} chex_q8_kernels;

/* Bytes of per-thread scratch a conv with reduction length K needs (any ISA). */
size_t chex_q8_scratch_bytes(int k);

/* Per output channel symmetric quantisation of w (m, k) row-major fp32:
 * sw[o] = max_k |w[o][k]| / 127 (1 if the row is all zero), q[o][k] =
 * nearbyintf(w / sw) clamped to [-127, 127]. q is (m, k) row-major. */
void chex_q8_quantize_weights(int8_t *q, float *sw, const float *w, int m, int k);
/* q (m, c, taps) row-major s8 (PyTorch order) to the packed layout above;
 * m a multiple of 8, c a multiple of 4. dst holds m * c * taps bytes. */
void chex_q8_pack_weights(int8_t *dst, const int8_t *q, int m, int c, int taps);

/* The plain-loop reference of a->conv (same contract, single thread, no
 * scratch). */
void chex_q8_conv_naive(const chex_q8_args *a);

/* Kernels for the instruction set in force for the fp32 kernels
 * (chex_kernels_get()->name): "avx512" gives the VNNI kernels when the CPU
 * has AVX512-VNNI, else the AVX2 ones; "avx2" the AVX2 ones; "generic" the
 * portable C ones. Thread-safe. */
const chex_q8_kernels *chex_q8_kernels_get(void);
/* Kernels by name ("avx512" = VNNI), or NULL if unknown or unsupported. */
const chex_q8_kernels *chex_q8_kernels_by_name(const char *name);

extern const chex_q8_kernels chex_q8_kernels_generic;
extern const chex_q8_kernels chex_q8_kernels_avx2;
extern const chex_q8_kernels chex_q8_kernels_avx512;

#endif
