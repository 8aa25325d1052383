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
} chex_model_info;

typedef struct chex_model chex_model;
typedef struct chex_model_ws chex_model_ws;

/* Loads and checks a safetensors file. On error returns the code, writes one
 * line naming the tensor / key and the problem into msg (msglen bytes), and
 * *out stays NULL. The caller owns *out and frees it with chex_model_free. */
chex_model_err chex_model_load(const char *path, chex_model **out, char *msg, size_t msglen);
void chex_model_free(chex_model *m);

/* Borrowed pointer, valid while m lives. */
const chex_model_info *chex_model_info_get(const chex_model *m);

/* Scratch for batches of up to max_batch images. Caller owns it. */
chex_model_err chex_model_ws_create(const chex_model *m, int max_batch, chex_model_ws **out);
void chex_model_ws_free(chex_model_ws *ws);
int chex_model_ws_max_batch(const chex_model_ws *ws);

/* in:     (n, C, S, S) float32, already normalised (C, S from the info).
 * logits: (n, num_labels) or NULL.  probs: (n, num_labels) sigmoid, or NULL.
 * 1 <= n <= max_batch of ws. Never allocates. */
chex_model_err chex_model_forward(const chex_model *m, chex_model_ws *ws, const float *in, int n,
                                  float *logits, float *probs);

#endif
