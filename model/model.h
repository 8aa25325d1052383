/* model/model.h - the DenseNet-121 (CheXNet) network: load, inspect, run.
 *
 * Ownership and threads:
 *  - chex_model is loaded once (weights mmapped or read into one allocation,
 *    checked before use) and is IMMUTABLE afterwards: any number of threads may
 *    call the const functions on it at the same time.
 *  - chex_model_ws (workspace) holds every activation buffer for batches up to
 *    the max_batch it was created with. One workspace per worker thread; a
 *    workspace is not thread-safe. chex_model_forward() never allocates.
 *  - chex_model_forward() runs OpenMP parallel regions; the caller picks the team
 *    size (omp_set_num_threads) before calling.
 *
 * This module knows nothing of HTTP, files formats other than safetensors, or
 * images: its input is an already normalised (N, C, S, S) float tensor.
 */
#ifndef CHEX_MODEL_H
#define CHEX_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHEX_MODEL_OK = 0,
    CHEX_MODEL_ERR_IO,         /* cannot open, stat, read or map the file */
    CHEX_MODEL_ERR_FORMAT,     /* header length, JSON, offsets, overlap */
    CHEX_MODEL_ERR_DTYPE,      /* unknown or unsupported dtype */
    CHEX_MODEL_ERR_MISSING,    /* an expected tensor is absent */
    CHEX_MODEL_ERR_SHAPE,      /* a tensor has the wrong shape */
    CHEX_MODEL_ERR_UNEXPECTED, /* a tensor the graph does not use */
    CHEX_MODEL_ERR_METADATA,   /* __metadata__ missing, malformed or inconsistent */
    CHEX_MODEL_ERR_NOMEM,
    CHEX_MODEL_ERR_ARG,        /* bad argument, e.g. batch larger than the workspace */
    CHEX_MODEL_ERR_COUNT
} chex_model_err;

/* Static message for an error code (never NULL). */
const char *chex_model_strerror(chex_model_err e);

#define CHEX_MODEL_MAX_LABELS 64
#define CHEX_MODEL_LABEL_LEN 64

/* What the server needs to serve the model, read from __metadata__. */
typedef struct {
    char name[128];
    int demo;                 /* 1: demo weights, probabilities mean nothing clinically */
    int num_labels;
    char labels[CHEX_MODEL_MAX_LABELS][CHEX_MODEL_LABEL_LEN];
    int input_channels;       /* 1 or 3 */
    int input_size;           /* S of the (C, S, S) input, 224 for CheXNet */
    char preprocess[32];      /* preset name: resize256-crop224, tencrop, resize224, xrv */
    /* Normalisation applied to pixels x in [0,1]: (x - mean[c]) / std[c].
     * A scale/offset form y = x*scale + offset is stored as mean = -offset/scale,
     * std = 1/scale. */
    float mean[3];
    float std[3];
    char sha256[65];          /* hex SHA-256 of the weights file */
    char architecture[32];    /* "densenet121" */
    /* torchxrayvision operating points: the optional tensor CHEX_MODEL_OP_THRESHS
     * (F32/F16/BF16, shape (num_labels), each in (0, 1) or NaN). When present
     * (op_norm = 1) every probability chex_model_forward returns is
     * torchxrayvision's DenseNet.forward output: p = sigmoid(logit), then
     * op_norm: p < t -> p / (t * 2), else 1 - (1 - p) / ((1 - t) * 2), in
     * float32, so 0.5 is the label's operating point. A NaN threshold marks a
     * label the model was not trained on (untrained[k] = 1): its output is 0.5
     * and it means nothing; consumers leave it out. Without the tensor
     * op_norm = 0, num_untrained = 0 and probabilities are plain sigmoids. */
    int op_norm;
    int num_untrained;
    float op_threshs[CHEX_MODEL_MAX_LABELS];
    unsigned char untrained[CHEX_MODEL_MAX_LABELS];
} chex_model_info;

#define CHEX_MODEL_OP_THRESHS "op_threshs"

/* torchxrayvision's op_norm of one sigmoid probability p for threshold t
 * (NaN t -> 0.5), float32 in its order of operations. */
float chex_model_op_norm(float p, float t);

typedef struct chex_model chex_model;
typedef struct chex_model_ws chex_model_ws;

/* Loads and checks a safetensors file. On error returns the code, writes one
 * line naming the tensor / key and the problem into msg (msglen bytes), and
 * *out stays NULL. The caller owns *out and frees it with chex_model_free. */
chex_model_err chex_model_load(const char *path, chex_model **out, char *msg, size_t msglen);
void chex_model_free(chex_model *m);

/* Borrowed pointer, valid while m lives. */
const chex_model_info *chex_model_info_get(const chex_model *m);

/* Bytes the loaded weights hold: the fp32 arena (packed, folded and
 * Winograd-transformed weights) and the int8 weights once quantised. */
size_t chex_model_bytes(const chex_model *m);

/* Scratch for batches of up to max_batch images. Caller owns it. */
chex_model_err chex_model_ws_create(const chex_model *m, int max_batch, chex_model_ws **out);
void chex_model_ws_free(chex_model_ws *ws);
int chex_model_ws_max_batch(const chex_model_ws *ws);
/* Bytes of a workspace's buffers. */
size_t chex_model_ws_bytes(const chex_model_ws *ws);

/* in:     (n, C, S, S) float32, already normalised (C, S from the info).
 * logits: (n, num_labels) or NULL.  probs: (n, num_labels) sigmoid (then
 * op_norm when the model has op_threshs, see chex_model_info), or NULL.
 * 1 <= n <= max_batch of ws. Never allocates. */
chex_model_err chex_model_forward(const chex_model *m, chex_model_ws *ws, const float *in, int n,
                                  float *logits, float *probs);

/* ---- Inspection, reference path and instrumentation (additions) ---- */

/* Stages of the network, in execution order. Each stage's output stays in the
 * workspace after chex_model_forward() until the next call on that workspace. */
typedef enum {
    CHEX_STAGE_STEM = 0, /* conv0-norm0-relu0-pool0: (n, 64, S/4, S/4) */
    CHEX_STAGE_BLOCK1,   /* denseblock1 output: (n, 256, S/4, S/4) */
    CHEX_STAGE_TRANS1,   /* transition1: (n, 128, S/8, S/8) */
    CHEX_STAGE_BLOCK2,   /* (n, 512, S/8, S/8) */
    CHEX_STAGE_TRANS2,   /* (n, 256, S/16, S/16) */
    CHEX_STAGE_BLOCK3,   /* (n, 1024, S/16, S/16) */
    CHEX_STAGE_TRANS3,   /* (n, 512, S/32, S/32) */
    CHEX_STAGE_BLOCK4,   /* (n, 1024, S/32, S/32), before norm5 */
    CHEX_STAGE_HEAD,     /* relu(norm5(.)): (n, 1024, S/32, S/32), then pool, linear, sigmoid */
    CHEX_MODEL_NSTAGES
} chex_model_stage;

/* "stem", "block1", ..., "head". */
const char *chex_model_stage_name(chex_model_stage s);

/* A borrowed view of a stage output: element (i, c, y, x) is
 * data[i*img_stride + (c*h + y)*w + x]. Valid until the next forward on ws. */
typedef struct {
    const float *data;
    int n, c, h, w;
    long img_stride;
} chex_model_view;

/* View of stage s of the last forward (n = its batch). CHEX_MODEL_ERR_ARG if
 * no forward has run on ws yet or s is out of range. */
chex_model_err chex_model_ws_stage(const chex_model_ws *ws, chex_model_stage s,
                                   chex_model_view *out);

/* The final feature map of the last forward, contiguous (n, 1024, h, w) with
 * h = w = S/32 (7 for 224): relu(norm5(block4)), the tensor the classifier's
 * global average pool reads, so a class activation map for label k is
 * sum_c classifier.weight[k][c] * F[i][c]. NULL before the first forward.
 * *c, *h, *w receive the shape (any may be NULL). */
const float *chex_model_ws_features(const chex_model_ws *ws, int *c, int *h, int *w);

/* Wall time in milliseconds of each stage of the last forward on ws (for
 * `chex bench` and tools/bench_model.sh). When a batch ran image-parallel
 * (at least one image per thread: each thread takes whole images through the
 * network), each figure is the slowest thread's time for that stage. */
void chex_model_ws_stage_ms(const chex_model_ws *ws, double ms[CHEX_MODEL_NSTAGES]);

/* Multiply-adds x 2 of one image through the network (5.67e9 at 224). */
double chex_model_flops_per_image(const chex_model *m);

/* Instruction set of the convolution kernels: "avx512", "avx2" or "generic".
 * Chosen at first use: CHEXD_ISA from the environment if set and supported,
 * else the best the CPU has. chex_model_set_isa forces one for the whole
 * process (CHEX_MODEL_ERR_ARG if unknown or unsupported by this CPU); call it
 * before serving, not while forwards run. */
const char *chex_model_isa(void);
chex_model_err chex_model_set_isa(const char *name);

/* The naive reference path: the same network computed op by op with the
 * plain kernels (model/kernels.h *_naive) straight from the stored BN
 * statistics, in PyTorch's order. Slow (seconds per image) and it ALLOCATES
 * its temporaries; for tests only. Stage views of ws afterwards show its
 * results. */
chex_model_err chex_model_forward_reference(const chex_model *m, chex_model_ws *ws,
                                            const float *in, int n, float *logits, float *probs);

/* ---- int8 (precision=int8, optional, never the default) ----
 * Scheme (model/qkernels.h): the inputs of the dense layers' and
 * transitions' convolutions (all after a ReLU) as u8, weights as s8 per
 * output channel, int32 sums, fp32 requantisation; the stem conv and the
 * classifier stay fp32. Calibration on real radiographs (chex_model_calib_*,
 * driven by `chex calibrate` / tools/calibrate_int8.sh) writes into the
 * weights file:
 *  - metadata CHEX_MODEL_INT8_KEY: a JSON object mapping each quantised
 *    conv's weight tensor name (chex_model_qconv_name) to the largest value
 *    its input reached, as a number;
 *  - per quantised conv "<conv>" (its weight's name without ".weight"):
 *    <conv>.int8_weight (I8, the weight's shape, -127..127, rounded by
 *    GPTQ), <conv>.int8_scale (F32, per output channel) and
 *    <conv>.int8_act_scale (F32, per input channel): weight[o][c][..] ~
 *    int8_scale[o] * int8_weight[o][c][..] / int8_act_scale[c], and the u8
 *    input is x[c] / int8_act_scale[c]. All of them or none.
 * A file with only the metadata (an older calibration) still runs int8: its
 * fp32 weights are then rounded to nearest at start-up, with one activation
 * scale per tensor. The loader keeps the int8 tensors in the file mapping
 * (not resident) until chex_model_quantize packs them. */
#define CHEX_MODEL_INT8_KEY "int8_act_max"

typedef enum { CHEX_PRECISION_FP32 = 0, CHEX_PRECISION_INT8 } chex_model_precision;

/* Number of quantised convolutions (119 for DenseNet-121), and the weight
 * tensor name of the i-th, e.g. "features.denseblock1.denselayer1.conv1.weight",
 * written into buf (len bytes; 64 is enough) and returned; NULL if i is out of
 * range. Order: per dense layer conv1 then conv2, each transition after its
 * block. */
int chex_model_qconv_count(const chex_model *m);
const char *chex_model_qconv_name(const chex_model *m, int i, char *buf, size_t len);

/* The int8 tensors calibration stores for quantised conv i: kind 0
 * "<conv>.int8_weight", 1 ".int8_scale", 2 ".int8_act_scale", written into
 * buf (96 bytes are enough) and returned; NULL if i or kind is out of range.
 * chex_model_is_int8_tensor: 1 if name ends like one of them. */
const char *chex_model_int8_tensor_name(const chex_model *m, int i, int kind, char *buf,
                                        size_t len);
int chex_model_is_int8_tensor(const char *name);

/* 1 if the file carried int8 calibration (CHEX_MODEL_INT8_KEY). */
int chex_model_has_int8_calibration(const chex_model *m);

/* Builds the int8 weights (the file's int8 tensors, else the fp32 ones rounded) and
 * their requantisation from the calibration. Call once,
 * after load and before the model is shared or workspaces are created (it
 * modifies m; not thread-safe). It also releases the fp32 Winograd weights
 * (int8 does not use them; an fp32 forward on m afterwards runs its 3x3
 * convs direct, equal within rounding). CHEX_MODEL_ERR_METADATA with a
 * message naming the key when the file has no calibration; NOMEM.
 * Idempotent. */
chex_model_err chex_model_quantize(chex_model *m, char *msg, size_t msglen);

/* Precision of the forwards on ws (fp32 by default). INT8 needs a model
 * quantised before ws was created (CHEX_MODEL_ERR_ARG otherwise). */
chex_model_err chex_model_ws_set_precision(chex_model_ws *ws, chex_model_precision p);

/* ---- int8 calibration (`chex calibrate`, tools/calibrate_int8.sh) ----
 * A chex_model_calib gathers, over fp32 forwards of real radiographs, what
 * precision int8 needs: the largest value of every input channel of each
 * quantised conv (its activation scales: u8 = x / (max / 255)) and the
 * activations of the first `keep` crops, from which chex_model_calib_finish
 * rounds every quantised conv's weights to int8 by GPTQ (model/gptq.h: the
 * rounding errors are steered by the calibration inputs' second moments).
 * Memory: about 6 MB per kept crop at 224. Not thread-safe; m must outlive
 * it; it runs OpenMP teams. */
typedef struct chex_model_calib chex_model_calib;
chex_model_err chex_model_calib_create(const chex_model *m, int keep, chex_model_calib **out);
void chex_model_calib_free(chex_model_calib *c);
/* One fp32 forward of in (n crops, as chex_model_forward) on ws. */
chex_model_err chex_model_calib_add(chex_model_calib *c, chex_model_ws *ws, const float *in,
                                    int n);
/* Rounds the weights (after at least one add; seconds to a minute). ARG
 * with a message if nothing was added, NOMEM. */
chex_model_err chex_model_calib_finish(chex_model_calib *c, char *msg, size_t msglen);
/* Quantised conv i's results (chex_model_qconv_name order), borrowed from
 * c: weight = w_scale[o] * w[o][ch][tap] / act_scale[ch] and its u8 input =
 * x / act_scale[ch]. ARG before chex_model_calib_finish or for a bad i. */
typedef struct {
    float act_max;           /* largest input value of any channel */
    int m, c, taps;          /* output channels, input channels, 1 or 9 */
    const float *act_scale;  /* (c) */
    const int8_t *w;         /* (m, c, taps), PyTorch order */
    const float *w_scale;    /* (m) */
} chex_model_qconv_calib;
chex_model_err chex_model_calib_get(const chex_model_calib *c, int i, chex_model_qconv_calib *out);
/* The fp32 arithmetic the forwards of the calibration ran on, e.g.
 * "avx512, winograd F(4x4,3x3)" or "avx2, direct": calibrations of the same
 * file from the same images on the same path are byte for byte equal
 * whatever the thread count (model/gptq.c, the fp32 kernels: each sum in one
 * order); another path rounds some activations differently, so a few int8
 * weights may differ. Static string. */
const char *chex_model_calib_path(const chex_model_calib *c);

#endif
