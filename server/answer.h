/* server/answer.h - the JSON answers of chexd and bin/chex (one builder for both,
 * so the daemon and the command line print the same schema).
 * All functions are reentrant; returned strings are malloc'd, caller frees. */
#ifndef CHEX_ANSWER_H
#define CHEX_ANSWER_H

#include <jansson.h>

#include "server/pipeline.h"

#define CHEXD_VERSION "0.1.0"

/* Query options of one request: ?top=K (0 = every label, model order) and
 * ?threshold=P (has_threshold: add "positive" per label). */
typedef struct {
    int top;
    int has_threshold;
    double threshold;
} chex_answer_opts;

/* Parses the values of ?top= and ?threshold= (either may be NULL). Returns 0,
 * or -1 with a one-line message. */
int chex_answer_opts_parse(chex_answer_opts *o, const char *top, const char *threshold,
                           int num_labels, char *msg, size_t msglen);

/* The 200 answer for one image: request_id, model, predictions, timing_ms,
 * input, dicom identifiers (DICOM only), demo flag + warning (demo weights).
 * Labels the model was not trained on (chex_model_info.untrained) are left
 * out of predictions and named under "untrained_labels" (present only when
 * there are some); ?top counts trained labels only.
 * probs is (num_labels). New reference, NULL on ENOMEM. */
json_t *chex_answer_image(const chex_pipeline *p, const char *request_id, const chex_prepared *pp,
                          const float *probs, const chex_answer_opts *o);

/* What the model's probabilities are, for /v1/model's "outputs":
 * {"probability": "op_norm"|"sigmoid", "meaning": text, "untrained_labels":
 * [...], "operating_points": {label: threshold} (op_norm only)}. New
 * reference, NULL on ENOMEM. */
json_t *chex_answer_outputs(const chex_model_info *in);

/* {"error": {"code", "message"}, "request_id"}. New reference. */
json_t *chex_answer_error(const char *code, const char *message, const char *request_id);

/* Serialises (compact, probabilities to 6 significant digits) and drops the
 * reference. NULL on ENOMEM. */
char *chex_answer_dump(json_t *j);

/* HTTP status and error code for a preprocessing error. */
int chex_answer_pre_status(chex_pre_err e);
const char *chex_answer_pre_code(chex_pre_err e);

/* Warning text attached to every answer of a demo model. */
extern const char chex_answer_demo_warning[];

#endif
