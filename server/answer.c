/* server/answer.c - JSON answers shared by chexd and bin/chex. */
#include "server/answer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char chex_answer_demo_warning[] =
    "demo weights: these probabilities are not a diagnosis and mean nothing clinically";

int chex_answer_opts_parse(chex_answer_opts *o, const char *top, const char *threshold,
                           int num_labels, char *msg, size_t msglen)
{
    memset(o, 0, sizeof *o);
    if (top) {
        char *end = NULL;
        errno = 0;
        long k = strtol(top, &end, 10);
        if (errno || end == top || *end != '\0' || k < 1 || k > num_labels) {
            snprintf(msg, msglen, "query parameter top must be an integer from 1 to %d",
                     num_labels);
            return -1;
        }
        o->top = (int)k;
    }
    if (threshold) {
        char *end = NULL;
        errno = 0;
        double t = strtod(threshold, &end);
        if (errno || end == threshold || *end != '\0' || !(t >= 0.0 && t <= 1.0)) {
            snprintf(msg, msglen, "query parameter threshold must be a number from 0 to 1");
            return -1;
        }
        o->has_threshold = 1;
        o->threshold = t;
    }
    return 0;
}

static json_t *model_object(const chex_model_info *in)
{
    return json_pack("{s:s, s:s, s:b}", "name", in->name, "sha256", in->sha256, "demo",
                     in->demo ? 1 : 0);
}

json_t *chex_answer_outputs(const chex_model_info *in)
{
    json_t *o = json_object(), *un = json_array(), *ops = json_object();
    if (!o || !un || !ops) {
        json_decref(o);
        json_decref(un);
        json_decref(ops);
        return NULL;
    }
    for (int i = 0; in->op_norm && i < in->num_labels; i++) {
        if (in->untrained[i])
            json_array_append_new(un, json_string(in->labels[i]));
        else
            json_object_set_new(ops, in->labels[i], json_real(in->op_threshs[i]));
    }
    int bad = json_object_set_new(o, "probability", json_string(in->op_norm ? "op_norm"
                                                                              : "sigmoid"));
    bad |= json_object_set_new(
        o, "meaning",
        json_string(in->op_norm
                        ? "operating-point normalised as torchxrayvision's op_norm: 0.5 is the "
                          "label's operating point (the sigmoid output equal to its threshold), "
                          "below it p/(2t), above it 1-(1-p)/(2(1-t))"
                        : "sigmoid of the classifier's output"));
    bad |= json_object_set_new(o, "untrained_labels", un);
    if (in->op_norm)
        bad |= json_object_set_new(o, "operating_points", ops);
    else
        json_decref(ops);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *chex_answer_image(const chex_pipeline *p, const char *request_id, const chex_prepared *pp,
                          const float *probs, const chex_answer_opts *o)
{
    const chex_model_info *in = p->info;
    int nl = 0;
    int order[CHEX_MODEL_MAX_LABELS];
    /* labels the model was not trained on (op_threshs NaN) are not predictions */
    for (int i = 0; i < in->num_labels; i++)
        if (!in->untrained[i])
            order[nl++] = i;
    int count = nl;
    if (o && o->top > 0) {
        /* Stable insertion sort by descending probability: ties keep label order. */
        for (int i = 1; i < nl; i++) {
            int v = order[i], j = i - 1;
            while (j >= 0 && probs[order[j]] < probs[v]) {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = v;
        }
        count = o->top < nl ? o->top : nl;
    }
    json_t *preds = json_array();
    if (!preds)
        return NULL;
    for (int i = 0; i < count; i++) {
        int l = order[i];
        double pr = probs[l];
        if (!isfinite(pr))
            pr = 0.0;
        json_t *e = json_pack("{s:s, s:f}", "label", in->labels[l], "probability", pr);
        if (e && o && o->has_threshold)
            json_object_set_new(e, "positive", json_boolean(pr >= o->threshold));
        if (!e || json_array_append_new(preds, e) != 0) {
            json_decref(preds);
            return NULL;
        }
    }
    const chex_timing *t = &pp->timing;
    json_t *root = json_pack(
        "{s:s, s:o, s:o, s:{s:f, s:f, s:f, s:f}, s:{s:s, s:i, s:i, s:s}}", "request_id",
        request_id ? request_id : "", "model", model_object(in), "predictions", preds,
        "timing_ms", "decode", t->decode_ms, "preprocess", t->preprocess_ms, "queue", t->queue_ms,
        "inference", t->inference_ms, "input", "format", pp->image.format, "width",
        pp->image.width, "height", pp->image.height, "scaling", pp->image.scaling);
    if (!root)
        return NULL;
    if (in->num_untrained > 0) {
        json_t *un = json_array();
        for (int i = 0; un && i < in->num_labels; i++)
            if (in->untrained[i])
                json_array_append_new(un, json_string(in->labels[i]));
        if (!un || json_object_set_new(root, "untrained_labels", un) != 0) {
            json_decref(root);
            return NULL;
        }
    }
    if (pp->image.is_dicom) {
        const chex_dicom_ids *d = &pp->image.dicom;
        json_t *dj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "study_instance_uid",
                               d->study_instance_uid, "series_instance_uid",
                               d->series_instance_uid, "sop_instance_uid", d->sop_instance_uid,
                               "modality", d->modality, "view_position", d->view_position,
                               "transfer_syntax", d->transfer_syntax, "photometric",
                               d->photometric);
        /* multi-frame objects: the first frame is the one classified */
        if (dj && (json_object_set_new(dj, "frames", json_integer(d->frames > 0 ? d->frames : 1)) != 0 ||
                   json_object_set_new(dj, "frame", json_integer(1)) != 0)) {
            json_decref(dj);
            dj = NULL;
        }
        if (!dj || json_object_set_new(root, "dicom", dj) != 0) {
            json_decref(root);
            return NULL;
        }
    }
    if (in->demo) {
        json_object_set_new(root, "demo", json_true());
        json_object_set_new(root, "warning", json_string(chex_answer_demo_warning));
    }
    return root;
}

json_t *chex_answer_error(const char *code, const char *message, const char *request_id)
{
    return json_pack("{s:{s:s, s:s}, s:s}", "error", "code", code, "message",
                     message ? message : "", "request_id", request_id ? request_id : "");
}

char *chex_answer_dump(json_t *j)
{
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(j);
    return s;
}

int chex_answer_pre_status(chex_pre_err e)
{
    switch (e) {
    case CHEX_PRE_OK: return 200;
    case CHEX_PRE_ERR_EMPTY:
    case CHEX_PRE_ERR_MALFORMED: return 400;
    case CHEX_PRE_ERR_FORMAT:
    case CHEX_PRE_ERR_UNSUPPORTED: return 415;
    case CHEX_PRE_ERR_TOO_LARGE: return 413;
    case CHEX_PRE_ERR_UNUSABLE: return 422;
    default: return 500;
    }
}

const char *chex_answer_pre_code(chex_pre_err e)
{
    switch (e) {
    case CHEX_PRE_OK: return "ok";
    case CHEX_PRE_ERR_EMPTY: return "empty_body";
    case CHEX_PRE_ERR_MALFORMED: return "malformed_image";
    case CHEX_PRE_ERR_FORMAT: return "unsupported_format";
    case CHEX_PRE_ERR_UNSUPPORTED: return "unsupported_variant";
    case CHEX_PRE_ERR_TOO_LARGE: return "image_too_large";
    case CHEX_PRE_ERR_UNUSABLE: return "unusable_image";
    default: return "internal_error";
    }
}
