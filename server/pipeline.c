/* server/pipeline.c - bytes -> preprocessing -> model -> probabilities.
 * Shared by bin/chexd and bin/chex; see pipeline.h for the threading rules. */
#include "server/pipeline.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int chex_pipeline_init(chex_pipeline *p, chex_model *m, const chex_config *cfg, char *msg,
                       size_t msglen)
{
    memset(p, 0, sizeof *p);
    p->precision = CHEX_PRECISION_FP32;
    if (strcmp(cfg->precision, "int8") == 0) {
        /* The int8 weights are built once here, before the model is shared. */
        char mm[512] = "";
        chex_model_err e = chex_model_quantize(m, mm, sizeof mm);
        if (e != CHEX_MODEL_OK) {
            snprintf(msg, msglen, "config: precision: \"int8\" needs this model's int8 "
                     "calibration: %s", mm[0] ? mm : chex_model_strerror(e));
            return -1;
        }
        p->precision = CHEX_PRECISION_INT8;
    } else if (cfg->precision[0] && strcmp(cfg->precision, "fp32") != 0) {
        snprintf(msg, msglen, "config: precision: \"%s\" is not fp32 or int8", cfg->precision);
        return -1;
    }
    p->model = m;
    p->info = chex_model_info_get(m);
    const chex_model_info *in = p->info;
    if (in->input_channels != 1 && in->input_channels != 3) {
        snprintf(msg, msglen, "model metadata: input_channels %d is neither 1 nor 3",
                 in->input_channels);
        return -1;
    }
    if (in->input_size < 8 || in->input_size > 4096) {
        snprintf(msg, msglen, "model metadata: input_size %d is out of range", in->input_size);
        return -1;
    }
    if (in->num_labels < 1 || in->num_labels > CHEX_MODEL_MAX_LABELS) {
        snprintf(msg, msglen, "model metadata: num_labels %d is out of range", in->num_labels);
        return -1;
    }
    p->spec.channels = in->input_channels;
    p->spec.size = in->input_size;
    snprintf(p->spec.preset, sizeof p->spec.preset, "%s", in->preprocess);
    for (int c = 0; c < 3; c++) {
        p->spec.mean[c] = in->mean[c];
        p->spec.std[c] = in->std[c];
        if (c < in->input_channels && !(in->std[c] > 0.0f)) {
            snprintf(msg, msglen, "model metadata: std[%d] is not positive", c);
            return -1;
        }
    }
    p->ncrops = chex_pre_ncrops(&p->spec);
    if (p->ncrops < 1 || p->ncrops > 10) {
        snprintf(msg, msglen, "model metadata: unknown preprocess preset \"%s\"", in->preprocess);
        return -1;
    }
    p->opts.max_pixels = cfg->max_image_pixels;
    p->opts.min_side = cfg->min_image_side;
    p->opts.max_overlay_side = cfg->max_overlay_side;
    /* one large DICOM frame decoded alone may use every inference thread */
    p->opts.threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
    if (strcmp(cfg->png16_scaling, "sbit") == 0)
        p->opts.png16_scaling = CHEX_PNG16_SBIT;
    else if (strcmp(cfg->png16_scaling, "full") == 0)
        p->opts.png16_scaling = CHEX_PNG16_FULL;
    else if (cfg->png16_scaling[0] == '\0' || strcmp(cfg->png16_scaling, "minmax") == 0)
        p->opts.png16_scaling = CHEX_PNG16_MINMAX;
    else {
        snprintf(msg, msglen, "png16_scaling \"%s\" is not minmax, sbit or full",
                 cfg->png16_scaling);
        return -1;
    }
    return 0;
}

chex_model_err chex_pipeline_ws_create(const chex_pipeline *p, int max_tensors,
                                       chex_model_ws **out)
{
    chex_model_err e = chex_model_ws_create(p->model, max_tensors, out);
    if (e == CHEX_MODEL_OK && (e = chex_model_ws_set_precision(*out, p->precision))) {
        chex_model_ws_free(*out);
        *out = NULL;
    }
    return e;
}

size_t chex_pipeline_tensor_floats(const chex_pipeline *p)
{
    return (size_t)p->spec.channels * (size_t)p->spec.size * (size_t)p->spec.size;
}

chex_pre_err chex_pipeline_prepare_ex(const chex_pipeline *p, const uint8_t *buf, size_t len,
                                      int want_display, chex_prepared *out, char *msg,
                                      size_t msglen)
{
    memset(out, 0, sizeof *out);
    if (msglen)
        msg[0] = '\0';
    double t0 = now_ms();
    size_t per = chex_pipeline_tensor_floats(p);
    out->tensor = malloc((size_t)p->ncrops * per * sizeof(float));
    if (!out->tensor) {
        snprintf(msg, msglen, "out of memory for the input tensor");
        return CHEX_PRE_ERR_NOMEM;
    }
    out->ncrops = p->ncrops;
    /* A worker running on fewer cores than threads (omp_set_num_threads)
     * decodes with as many. */
    chex_pre_opts o = p->opts;
    if (o.threads > omp_get_max_threads())
        o.threads = omp_get_max_threads();
    chex_pre_err e = chex_pre_prepare(buf, len, &o, &p->spec, out->tensor, out->crops,
                                      &out->image, want_display ? &out->display : NULL, msg,
                                      msglen);
    /* one pass decodes and resamples: all of it counts as decoding */
    out->timing.decode_ms = now_ms() - t0;
    out->timing.preprocess_ms = 0.0;
    if (e != CHEX_PRE_OK) {
        if (msglen && msg[0] == '\0')
            snprintf(msg, msglen, "%s", chex_pre_strerror(e));
        chex_pipeline_prepared_free(out);
        return e;
    }
    if (!want_display)
        chex_pre_display_dims(&p->opts, out->image.width, out->image.height, &out->display.width,
                              &out->display.height);
    return CHEX_PRE_OK;
}

chex_pre_err chex_pipeline_prepare(const chex_pipeline *p, const uint8_t *buf, size_t len,
                                   chex_prepared *out, char *msg, size_t msglen)
{
    return chex_pipeline_prepare_ex(p, buf, len, 0, out, msg, msglen);
}

void chex_pipeline_prepared_free(chex_prepared *pp)
{
    if (!pp)
        return;
    free(pp->tensor);
    pp->tensor = NULL;
    pp->ncrops = 0;
    free(pp->display.pix);
    pp->display.pix = NULL;
}

/* Averages ncrops rows of crop probabilities into one row. */
static void average_crops(float *dst, const float *crop_probs, int ncrops, int nl)
{
    for (int l = 0; l < nl; l++) {
        double s = 0.0;
        for (int c = 0; c < ncrops; c++)
            s += crop_probs[(size_t)c * nl + l];
        dst[l] = (float)(s / ncrops);
    }
}

chex_model_err chex_pipeline_infer(const chex_pipeline *p, chex_model_ws *ws, chex_prepared *const *imgs,
                                   int n, float *probs)
{
    /* Without a staging buffer each image's crops (contiguous in its own
     * tensor) are one forward pass; crop probabilities live on the stack. */
    int nl = p->info->num_labels;
    float crop_probs[10 * CHEX_MODEL_MAX_LABELS];
    if (n < 0 || p->ncrops > chex_model_ws_max_batch(ws))
        return CHEX_MODEL_ERR_ARG;
    for (int i = 0; i < n; i++) {
        if (!imgs[i] || !imgs[i]->tensor || imgs[i]->ncrops != p->ncrops)
            return CHEX_MODEL_ERR_ARG;
        double t0 = now_ms();
        chex_model_err e =
            chex_model_forward(p->model, ws, imgs[i]->tensor, p->ncrops, NULL, crop_probs);
        if (e != CHEX_MODEL_OK)
            return e;
        average_crops(probs + (size_t)i * nl, crop_probs, p->ncrops, nl);
        imgs[i]->timing.inference_ms = now_ms() - t0;
    }
    return CHEX_MODEL_OK;
}

int chex_pipeline_batch_init(const chex_pipeline *p, chex_pipeline_batch *b, int max_images)
{
    memset(b, 0, sizeof *b);
    if (max_images < 1)
        return -1;
    size_t rows = (size_t)max_images * (size_t)p->ncrops;
    b->input = malloc(rows * chex_pipeline_tensor_floats(p) * sizeof(float));
    b->crop_probs = malloc(rows * (size_t)p->info->num_labels * sizeof(float));
    if (!b->input || !b->crop_probs) {
        chex_pipeline_batch_free(b);
        return -1;
    }
    b->max_images = max_images;
    return 0;
}

void chex_pipeline_batch_free(chex_pipeline_batch *b)
{
    free(b->input);
    free(b->crop_probs);
    memset(b, 0, sizeof *b);
}

chex_model_err chex_pipeline_infer_batch(const chex_pipeline *p, chex_model_ws *ws,
                                         chex_pipeline_batch *b, chex_prepared *const *imgs, int n,
                                         float *probs)
{
    if (n < 1 || n > b->max_images || n * p->ncrops > chex_model_ws_max_batch(ws))
        return CHEX_MODEL_ERR_ARG;
    size_t per = chex_pipeline_tensor_floats(p) * (size_t)p->ncrops;
    for (int i = 0; i < n; i++) {
        if (!imgs[i] || !imgs[i]->tensor || imgs[i]->ncrops != p->ncrops)
            return CHEX_MODEL_ERR_ARG;
        memcpy(b->input + (size_t)i * per, imgs[i]->tensor, per * sizeof(float));
    }
    double t0 = now_ms();
    chex_model_err e =
        chex_model_forward(p->model, ws, b->input, n * p->ncrops, NULL, b->crop_probs);
    if (e != CHEX_MODEL_OK)
        return e;
    double ms = now_ms() - t0;
    int nl = p->info->num_labels;
    for (int i = 0; i < n; i++) {
        average_crops(probs + (size_t)i * nl, b->crop_probs + (size_t)i * p->ncrops * nl,
                      p->ncrops, nl);
        imgs[i]->timing.inference_ms = ms;
    }
    return CHEX_MODEL_OK;
}
