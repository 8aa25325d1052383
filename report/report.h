/* report/report.h - chexd's results as DICOM objects in the source's study:
 * a Comprehensive SR with the probabilities, a Secondary Capture with the
 * class activation map overlay. Both are written with report/dcmw.h as Part 10
 * files in Explicit VR Little Endian, each as a new series (new Series and SOP
 * Instance UIDs under uid_root) in the source's study. What they hold, code by
 * code, is in docs/API.md ("Results as DICOM").
 *
 * The source is the DICOM input's bytes, parsed again here
 * (chex_dicom_parse): Patient and General Study attributes are copied from it
 * (empty where it lacks them: Type 2), never logged, never put in messages.
 * Reentrant: no global state; out is malloc'd, the caller frees it.
 */
#ifndef CHEX_REPORT_H
#define CHEX_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef enum {
    CHEX_REPORT_OK = 0,
    CHEX_REPORT_ERR_NOT_DICOM, /* the input is PNG/JPEG/other: no study to attach to */
    CHEX_REPORT_ERR_SOURCE,    /* DICOM without Study/SOP Instance/SOP Class UID, a copied
                                  value that does not fit its VR, or unreadable */
    CHEX_REPORT_ERR_ARG,       /* programmer error: NULL, bad label index, bad image */
    CHEX_REPORT_ERR_UID,       /* uid_root invalid or no random source */
    CHEX_REPORT_ERR_NOMEM,
    CHEX_REPORT_ERR_COUNT
} chex_report_err;

const char *chex_report_strerror(chex_report_err e);

#define CHEX_REPORT_SR_CLASS "1.2.840.10008.5.1.4.1.1.88.33" /* Comprehensive SR */
#define CHEX_REPORT_SC_CLASS "1.2.840.10008.5.1.4.1.1.7"     /* Secondary Capture */
#define CHEX_REPORT_SCHEME "99CHEXD" /* private coding scheme of the label codes */

/* What every object names about its maker. */
typedef struct {
    const char *uid_root;          /* config uid_root ("" = 2.25.<UUID>) */
    const char *software_version;  /* chexd's version, e.g. "0.1.0" */
    const chex_model_info *model;  /* name, labels, demo flag, sha256 */
    const char *demo_warning;      /* text for demo weights (model->demo) */
    long long now;                 /* time(NULL) of the result: Content Date/Time */
} chex_report_ctx;

/* The Structured Report for probs (model->num_labels values). With
 * has_threshold, a CODE "Finding" item per label with probability >=
 * threshold. */
chex_report_err chex_report_sr(const chex_report_ctx *ctx, const uint8_t *src, size_t srclen,
                               const float *probs, int has_threshold, double threshold,
                               uint8_t **out, size_t *outlen, char *msg, size_t msglen);

/* The Secondary Capture of an RGB overlay (rgb: height rows of width * 3
 * bytes, interleaved, e.g. chex_heatmap_rgb_overlay) with burned in, on a dark
 * band at the top: the label's name and probability and, for demo weights,
 * "not a diagnosis". rgb is not modified (the text is drawn on a copy). */
chex_report_err chex_report_sc(const chex_report_ctx *ctx, const uint8_t *src, size_t srclen,
                               const uint8_t *rgb, int width, int height, int label, float prob,
                               uint8_t **out, size_t *outlen, char *msg, size_t msglen);

/* Draws text at (x, y) into an interleaved RGB image, glyphs scaled by scale,
 * in colour c; clipped to the image. */
void chex_report_draw_text(uint8_t *rgb, int width, int height, int x, int y, int scale,
                           const uint8_t c[3], const char *text);

#endif
