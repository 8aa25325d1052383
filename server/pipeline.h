/* server/pipeline.h - bytes -> preprocessing -> model -> probabilities, and the
 * JSON answer. Shared by the daemon (bin/chexd) and the command line (bin/chex
 * classify / evaluate / bench) so that both answer exactly the same thing.
 *
 * Threads: a chex_pipeline is read-only after chex_pipeline_init and may be
 * shared. chex_pipeline_prepare(_ex) is reentrant (any thread may call it). Functions
 * taking a chex_model_ws use it exclusively: one workspace per calling thread.
 */
#ifndef CHEX_PIPELINE_H
#define CHEX_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "model/model.h"
#include "preprocessing/preprocess.h"

typedef struct {
    const chex_model *model;      /* borrowed */
    const chex_model_info *info;  /* borrowed from model */
    chex_pre_spec spec;           /* from the model's metadata */
    chex_pre_opts opts;           /* from the config */
    int ncrops;                   /* tensors per image (10 for tencrop) */
    chex_model_precision precision; /* from the config key precision */
} chex_pipeline;

typedef struct {
    double decode_ms, preprocess_ms, queue_ms, inference_ms;
} chex_timing;

/* A decoded, preprocessed image waiting for the network. Owns its buffers;
 * release with chex_pipeline_prepared_free. No full-resolution image is kept:
 * decoding streams rows into the resampler (chex_pre_prepare). */
typedef struct {
    float *tensor;                /* (ncrops, C, S, S) */
    int ncrops;
    chex_pre_image image;         /* metadata of the original image (pix NULL) */
    chex_pre_display display;     /* heat maps are drawn at display.width x
                                     display.height (always set: the original
                                     size, or scaled to max_overlay_side);
                                     display.pix, the gray copy overlays are drawn
                                     over, only when asked for (else NULL) */
    chex_pre_crop crops[10];
    chex_timing timing;
} chex_prepared;

/* Fills p from the model's info and the config. Returns 0, or -1 with msg when
 * the model's preprocess preset or input spec is unusable, or precision is
 * int8 and the model has no int8 calibration. With precision int8 it
 * quantises m (chex_model_quantize): call it before m is shared. */
int chex_pipeline_init(chex_pipeline *p, chex_model *m, const chex_config *cfg, char *msg,
                       size_t msglen);

/* A workspace for up to max_tensors tensors running at p's precision. */
chex_model_err chex_pipeline_ws_create(const chex_pipeline *p, int max_tensors,
                                       chex_model_ws **out);

/* Decode + preprocess, no display pixels. On error returns the code and
 * writes msg. */
chex_pre_err chex_pipeline_prepare(const chex_pipeline *p, const uint8_t *buf, size_t len,
                                   chex_prepared *out, char *msg, size_t msglen);
/* The same; want_display also keeps the gray display copy (out->display.pix)
 * that chex_heatmap_png_overlay draws over. */
chex_pre_err chex_pipeline_prepare_ex(const chex_pipeline *p, const uint8_t *buf, size_t len,
                                      int want_display, chex_prepared *out, char *msg,
                                      size_t msglen);
void chex_pipeline_prepared_free(chex_prepared *pp);

/* Runs the network on n prepared images (n * ncrops <= ws max batch, callers
 * split larger sets), averaging crop probabilities. probs is (n, num_labels). */
chex_model_err chex_pipeline_infer(const chex_pipeline *p, chex_model_ws *ws, chex_prepared *const *imgs,
                                   int n, float *probs);

/* Floats in one (C, S, S) tensor. */
size_t chex_pipeline_tensor_floats(const chex_pipeline *p);

/* Staging buffers for batches across images: the prepared tensors are copied
 * side by side so one forward pass serves several requests. Allocated once
 * (chex_pipeline_batch_init), then chex_pipeline_infer_batch never allocates.
 * One per calling thread. */
typedef struct {
    float *input;       /* (max_images * ncrops, C, S, S) */
    float *crop_probs;  /* (max_images * ncrops, num_labels) */
    int max_images;
} chex_pipeline_batch;

int chex_pipeline_batch_init(const chex_pipeline *p, chex_pipeline_batch *b, int max_images);
void chex_pipeline_batch_free(chex_pipeline_batch *b);

/* Like chex_pipeline_infer but as ONE forward pass of n * ncrops tensors
 * (n <= b->max_images, n * ncrops <= ws max batch). Each image's
 * timing.inference_ms is set to the time of the whole pass. */
chex_model_err chex_pipeline_infer_batch(const chex_pipeline *p, chex_model_ws *ws,
                                         chex_pipeline_batch *b, chex_prepared *const *imgs, int n,
                                         float *probs);

#endif
