/* model/densenet_int.h - the network's private structures, shared by
 * model/densenet.c (graph, loader, workspace, forward) and model/quant.c
 * (int8 calibration and quantisation). Not a public header: model.h is the
 * contract.
 */
#ifndef CHEX_DENSENET_INT_H
#define CHEX_DENSENET_INT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "model/kernels.h"
#include "model/model.h"
#include "model/safetensors.h"

/* ---- hyper-parameters (torchvision densenet121) ---- */
#define GROWTH 32
#define BN_SIZE 4
#define INIT_FEATURES 64
#define NBLOCKS 4
#define FINAL_FEATURES 1024
#define BN_EPS 1e-5f
#define MAX_LAYERS 58
#define BOTTLENECK (BN_SIZE * GROWTH)
/* int8 convs: conv1 and conv2 of every dense layer, the transitions' conv */
#define MAX_QCONV (2 * MAX_LAYERS + NBLOCKS - 1)

/* One int8 convolution (model/quant.c): packed s8 weights and the fp32
 * requantisation of its int32 sums (see model/qkernels.h). */
typedef struct {
    int8_t *w;               /* packed by chex_q8_pack_weights */
    float *oscale, *oshift;  /* (m) */
    float in_inv;            /* 1 / scale of its u8 input */
    /* The BN before it with the input's per-channel scale folded in (conv1
     * and transitions; u8 = relu(x*pre_scale + pre_shift) * in_inv). */
    const float *pre_scale, *pre_shift;
} qconv_t;

/* The int8 weights a calibrated file may carry for quantised conv i
 * (model/quant.c, written by `chex calibrate`): borrowed from the file
 * mapping the model keeps (m->fmap), little-endian, any alignment. */
typedef struct {
    const int8_t *w;         /* (m, c, taps) s8, PyTorch order */
    const uint8_t *wscale;   /* (m) F32: weight = wscale[o] * w / act_scale[c] */
    const uint8_t *act_scale; /* (c) F32: u8 input = x / act_scale[c] */
} qfile_t;

typedef struct {
    int c;
    float *gamma, *beta, *mean, *var; /* stored tensors */
    float *scale, *shift;             /* derived: y = x*scale + shift */
} bn_t;

typedef struct {
    int cin;
    bn_t norm1, norm2;
    float *conv1; /* (128, cin, 1, 1), packed by chex_pack_weights */
    float *conv2; /* (32, 128, 3, 3), packed */
    float *wino;  /* Winograd weights of conv2 ((36 or 16), 32, 128), or NULL */
    int wino_f;   /* 4: wino is F(4x4,3x3)'s, 2: F(2x2,3x3)'s */
    qconv_t q1, q2; /* int8 versions of conv1, conv2 (chex_model_quantize) */
} dlayer_t;

typedef struct {
    int cin, cout;
    bn_t norm;
    float *conv; /* (cout, cin, 1, 1), packed */
    qconv_t q;
} trans_t;

struct chex_model {
    chex_model_info info;
    float *arena;
    size_t arena_floats;
    int cin, size, ncls;
    /* geometry */
    int stem_hw;           /* conv0 output side */
    int hw[NBLOCKS];       /* side of each block */
    int c0[NBLOCKS];       /* channels entering each block */
    int ct[NBLOCKS];       /* channels leaving each block */
    int kmax;              /* longest GEMM reduction */
    int ph;                /* side of each 2x2 polyphase plane of the padded input */
    int stem_koff[3 * 49]; /* stem GEMM row offsets into the polyphase input */
    float *conv0; /* (64, cin, 7, 7), packed */
    bn_t norm0;
    dlayer_t layers[MAX_LAYERS];
    int first_layer[NBLOCKS];
    trans_t trans[NBLOCKS - 1];
    bn_t norm5;
    float *cls_w, *cls_b;
    /* int8 (model/quant.c): calibrated maxima of each quantised conv's input,
     * in chex_model_qconv_name() order, from the metadata key int8_act_max;
     * qarena holds the int8 weights once chex_model_quantize has run. */
    int has_act_max;
    float act_max[MAX_QCONV];
    void *qarena;
    size_t qarena_bytes;
    /* Rounded int8 weights from the file (chex calibrate's GPTQ), used by
     * chex_model_quantize instead of rounding the fp32 ones; the mapping
     * stays (its pages released) until then. */
    int has_qfile;
    qfile_t qfile[MAX_QCONV];
    void *fmap;
    size_t flen;
    /* The Winograd weights' range inside arena (released by
     * chex_model_quantize: int8 never reads them). */
    float *wino_base;
    size_t wino_len;
};

struct chex_model_ws {
    const chex_model *m;
    int max_batch, last_n, nthreads;
    int nstem;           /* stem / phase areas: one per image-parallel thread */
    float *mem;
    float *blk[NBLOCKS]; /* (n, ct[b], hw[b], hw[b]) */
    float *tmp;          /* per thread: stem conv output of one image (64, stem_hw^2) */
    float *bott;         /* bottleneck (n, 128, hw+2, hw+2) with a zero border */
    float *phase;        /* per thread: polyphase padded input of one image */
    size_t phase_floats;
    float *feat;         /* (n, 1024, hw[3], hw[3]) */
    float *pooled;       /* (n, 1024) */
    float *logits;       /* (n, ncls) */
    float *scratch;      /* nthreads x scratch_floats */
    size_t scratch_floats;
    /* int8 (only when the model was quantised before the workspace was made) */
    int precision;       /* chex_model_precision */
    uint8_t *qmem;       /* one allocation for the two below */
    uint8_t *qbott;      /* grouped u8 bottleneck (n, 32 groups, hw+2, hw+2, 4) */
    uint8_t *qscratch;   /* nthreads x qscratch_bytes */
    size_t qscratch_bytes;
    size_t bytes;        /* of mem and qmem */
    double stage_ms[CHEX_MODEL_NSTAGES];
};

/* model/quant.c */
/* Reads the int8_act_max metadata key, if present, into m->act_max (graph
 * built). Error (METADATA, naming the key and conv) if malformed. */
chex_model_err chex_dn_parse_act_max(chex_model *m, const chex_st_file *f, char *msg,
                                     size_t msglen);
/* Checks the optional int8 tensors (<conv>.int8_weight I8, .int8_scale and
 * .int8_act_scale F32, all or none, with the calibration metadata) and
 * points m->qfile into f's data. Error naming the tensor otherwise. */
chex_model_err chex_dn_parse_qfile(chex_model *m, const chex_st_file *f, char *msg,
                                   size_t msglen);
/* Where quantised conv i (chex_model_qconv_name order) sits: conv `conv`
 * (1 or 2) of dense layer `layer`, or transition `trans` (the other is -1),
 * in block `block`; m output channels, c input channels, taps 1 or 9. */
typedef struct {
    int layer, conv, trans, block;
    int m, c, taps;
} qconv_at_t;
qconv_at_t chex_dn_qconv_at(const chex_model *m, int i);
/* Index (chex_model_qconv_name order) of dense layer li's conv1 (conv2 is
 * the next one) and of transition b's conv. */
int chex_dn_qidx_layer(const chex_model *m, int li);
int chex_dn_qidx_trans(const chex_model *m, int b);
/* avgpool 2x2 of relu(x*s+t) over the window whose top-left is p (rows w
 * floats apart), summed in the int8 kernels' order (model/qkernels.h). */
static inline float chex_dn_pool_bnrelu(const float *p, long w, float s, float t)
{
    float v[4] = {p[0], p[1], p[w], p[w + 1]};
    for (int k = 0; k < 4; k++) {
        v[k] = fmaf(v[k], s, t);
        v[k] = v[k] > 0.0f ? v[k] : 0.0f;
    }
    return (((v[0] + v[1]) + v[2]) + v[3]) * 0.25f;
}

/* Calibration statistics: raise chmax[ch] (channel ch of [0, c)) to the
 * max over n images (image stride in floats) of: the plain values of its
 * plane (plane floats); relu(x*s+t) over hw pixels; the same after a 2x2
 * average pool of h x w planes. */
void chex_dn_chmax(float *chmax, const float *x, long img_stride, int n, int c, long plane);
void chex_dn_chmax_bnrelu(float *chmax, const float *x, long img_stride, int n, int c, long hw,
                          const float *s, const float *t);
void chex_dn_chmax_bnrelu_pool(float *chmax, const float *x, long img_stride, int n, int c, int h,
                               int w, const float *s, const float *t);

/* model/densenet.c: the fp32 conv1 of dense layer li (norm1+ReLU packed in,
 * norm2+ReLU after) over n images of src (image stride in floats) into the
 * padded bottleneck bott ((hw+2)^2 planes, image stride bimg floats). */
chex_conv_args chex_dn_conv1_args(const chex_model *m, int li, const float *src, long stride,
                                  int n, float *bott, long bimg);

/* model/densenet.c: one fp32 forward of in (n images, as chex_model_forward)
 * that also raises chmax[i][c] (chex_dn_chmax*) for input channel c of every
 * quantised conv i. */
chex_model_err chex_dn_calibrate(const chex_model *m, chex_model_ws *ws, const float *in, int n,
                                 float *const *chmax);

#endif
