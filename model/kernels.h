/* model/kernels.h - the network's operators.
 *
 * Two families:
 *  - *_naive: plain loops, one per op, written for obviousness. They are the
 *    reference every fast path is tested against (tests/unit/test_kernels*.c)
 *    and the engine of chex_model_forward_reference().
 *  - chex_conv_fast via chex_kernels_get(): convolution as a GEMM
 *    out[M, cols] = W[M, K] * B[K, cols], where the B operand is never
 *    materialised whole: each thread packs one panel of NR columns at a time
 *    straight from the activation tensor (applying the pre-activation BN+ReLU,
 *    the 3x3/7x7 im2col gather, or the 2x2 average pool on the way), then runs
 *    an ISA-specific MR x NR micro-kernel whose epilogue applies the following
 *    per-channel scale/shift (a folded BN) and ReLU. Instruction set chosen at
 *    run time (AVX-512, AVX2+FMA, portable C); CHEXD_ISA=avx512|avx2|generic
 *    forces one.
 * Tensors are NCHW float32; "image stride" is the distance in floats between
 * consecutive images, so a conv can read the first C channels of a wider dense
 * block buffer and write its output channels at an offset inside another.
 */
#ifndef CHEX_KERNELS_H
#define CHEX_KERNELS_H

#include <stddef.h>

/* ---- naive reference operators ---- */

/* out (n,m,oh,ow) = conv(in (n,c,h,w), w (m,c,kh,kw)) + bias (m) or no bias if NULL;
 * oh = (h + 2*pad - kh)/stride + 1, likewise ow. */
void conv2d_forward_naive(float *out, const float *in, const float *w, const float *bias, int n,
                          int c, int h, int wd, int m, int kh, int kw, int stride, int pad);
/* out (n,c,hw) = (in - mean)/sqrt(var + eps)*gamma + beta; out may equal in. */
void batchnorm_forward_naive(float *out, const float *in, const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps, int n, int c,
                             long hw);
/* x (count) = max(x, 0) in place. */
void relu_forward_naive(float *x, long count);
/* out (n,c,oh,ow) = max over k x k windows of in (n,c,h,w), padding never wins. */
void maxpool2d_forward_naive(float *out, const float *in, int n, int c, int h, int wd, int k,
                             int stride, int pad);
/* out (n,c,h/k,wd/k) = mean over k x k windows (stride k, no padding, floor). */
void avgpool2d_forward_naive(float *out, const float *in, int n, int c, int h, int wd, int k);
/* out (n,c) = mean of in (n,c,hw) over hw. */
void global_avgpool_forward_naive(float *out, const float *in, int n, int c, long hw);
/* out (n,o) = in (n,i) * w (o,i)^T + b (o). */
void linear_forward_naive(float *out, const float *in, const float *w, const float *b, int n,
                          int in_f, int out_f);
/* out (count) = 1/(1+exp(-in)). */
void sigmoid_forward_naive(float *out, const float *in, long count);

/* ---- fast convolution ---- */

typedef enum {
    CHEX_PACK_CONV = 0,  /* kh x kw conv, stride, pad: implicit im2col gather */
    CHEX_PACK_BNRELU_1X1, /* 1x1 conv of relu(x*pre_scale[c] + pre_shift[c]) */
    CHEX_PACK_BNRELU_POOL, /* 1x1 conv of avgpool2x2(relu(x*pre_scale + pre_shift)) */
    /* 3x3, stride 1, pad 1 over a source stored with its zero border: src
     * planes are (h+2) x src_row (src_row >= w+2) with pixel (y, x) at
     * (y+1)*src_row + x+1 and zeros around, and every plane readable up to 2
     * floats past its end (the buffer needs that slack after its last plane).
     * Packing is then a straight copy per (channel, tap): the GEMM runs over
     * h x src_row "virtual" columns and the src_row - w extra ones per row
     * are computed and dropped. */
    CHEX_PACK_CONV3X3_PADDED,
    /* Generalisation of the above: B row q (of k = c*kh*kw) for GEMM column j
     * of an image is src[img*src_img_stride + koff[q] + j], columns running
     * over oh x src_row virtual positions (those with x >= ow dropped). The
     * caller arranges the source so that holds (e.g. the stem's 7x7/2 conv
     * over a 2x2 polyphase split of the padded input) and leaves KT_NR + 64
     * floats of readable slack after the last image. */
    CHEX_PACK_SHIFTED
} chex_pack_kind;

typedef struct {
    chex_pack_kind kind;
    int n;                    /* images */
    const float *src;         /* (n, >=c, h, w) with image stride src_img_stride */
    long src_img_stride;
    long src_plane, src_row;  /* CHEX_PACK_CONV3X3_PADDED only: plane and row strides;
                               * CHEX_PACK_SHIFTED: src_row is the virtual row width */
    const int *koff;          /* CHEX_PACK_SHIFTED only: (k) row offsets */
    int c, h, w;              /* channels read, input spatial size */
    int kh, kw, stride, pad;  /* CHEX_PACK_CONV only (1x1 kinds: 1,1,1,0) */
    int oh, ow;               /* output spatial size */
    const float *pre_scale, *pre_shift; /* (c) for the BNRELU kinds */
    const float *wt;          /* (m, k), k = c*kh*kw in PyTorch order, packed by
                               * chex_pack_weights */
    int m;                    /* output channels, multiple of 8 */
    const float *post_scale;  /* (m) or NULL for 1 */
    const float *post_shift;  /* (m) or NULL for 0 */
    int post_relu;
    float *dst;               /* (n, >=m, oh, ow) with image stride dst_img_stride */
    long dst_img_stride;
    /* Output geometry: pixel (y, x) of channel o of image i is at
     * dst[i*dst_img_stride + o*dst_plane + dst_off + y*dst_row + x].
     * All 0 means dense: dst_plane = oh*ow, dst_row = ow, dst_off = 0. */
    long dst_plane, dst_row, dst_off;
} chex_conv_args;

typedef struct {
    const char *name;         /* "avx512", "avx2", "generic" */
    int nr;                   /* columns per packed panel */
    /* scratch: nthreads areas of scratch_floats floats each, 64-byte aligned,
     * each at least chex_conv_scratch_floats(k) long. Never allocates. With
     * nthreads == 1 no OpenMP team is formed, so a thread of the caller's own
     * parallel region may call it with its private scratch area. */
    void (*conv)(const chex_conv_args *a, float *scratch, size_t scratch_floats, int nthreads);
    /* Winograd F(2x2,3x3) for a CHEX_PACK_CONV3X3_PADDED conv with even oh
     * and ow and no post-op: u from chex_winograd_weights; scratch areas of at
     * least chex_winograd_scratch_floats(c, m). Same result as conv up to
     * rounding. NULL where it does not pay (only the AVX-512 path has
     * vectorised transforms). */
    void (*wino)(const chex_conv_args *a, const float *u, float *scratch, size_t scratch_floats,
                 int nthreads);
    /* Winograd F(4x4,3x3), the same contract for any oh and ow (tiles over
     * the edge are cropped), u from chex_winograd4_weights and scratch areas
     * of at least chex_winograd4_scratch_floats(c, m). NULL where absent. */
    void (*wino4)(const chex_conv_args *a, const float *u, float *scratch,
                  size_t scratch_floats, int nthreads);
} chex_kernels;

/* u (16, m, c): U_e = (G g G^T)_e of each 3x3 filter g of w (m, c, 3, 3), each
 * e-slice packed by chex_pack_weights (m a multiple of 8). */
void chex_winograd_weights(float *u, const float *w, int m, int c);
size_t chex_winograd_scratch_floats(int c, int m);
/* u (36, m, c): U_e = (G g G^T)_e for F(4x4,3x3) (points 0, +-1, +-2),
 * computed in double and rounded once, each e-slice packed likewise. */
void chex_winograd4_weights(float *u, const float *w, int m, int c);
size_t chex_winograd4_scratch_floats(int c, int m);

/* Weights (m, k) row-major (PyTorch layout, m a multiple of 8) to the
 * layout the micro-kernels read: 8-row panels, k-major inside a panel, so
 * element (o, q) sits at dst[(o/8)*8*k + q*8 + o%8]. unpack is the inverse. */
void chex_pack_weights(float *dst, const float *src, int m, int k);
void chex_unpack_weights(float *dst, const float *src, int m, int k);

/* Floats of per-thread scratch a conv with reduction length k needs (any ISA). */
size_t chex_conv_scratch_floats(int k);

/* Kernels for the ISA in force: CHEXD_ISA if set and supported (at first
 * call), else the best the CPU supports. Thread-safe. */
const chex_kernels *chex_kernels_get(void);
/* Kernels for a named ISA, or NULL if unknown or unsupported by this CPU. */
const chex_kernels *chex_kernels_by_name(const char *name);
/* Forces the ISA used from now on; returns 0, or -1 (unchanged) if unusable. */
int chex_kernels_select(const char *name);

extern const chex_kernels chex_kernels_generic;
extern const chex_kernels chex_kernels_avx2;
extern const chex_kernels chex_kernels_avx512;

#endif
