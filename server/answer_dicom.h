/* server/answer_dicom.h - chexd's answers as DICOM (Accept: application/dicom):
 * the Structured Report of each image of POST /v1/predict and the Secondary
 * Capture of POST /v1/explain, built by report/report.h from the request's
 * own DICOM bytes. One object answers application/dicom; a multipart predict
 * request answers multipart/related; type="application/dicom" (the STOW-RS
 * body shape), one part per object in part order. Explain (one image) always
 * answers the single SC as application/dicom. Reentrant; nothing here touches the
 * connection (daemon.c sends what this returns). */
#ifndef CHEX_ANSWER_DICOM_H
#define CHEX_ANSWER_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "server/answer.h"
#include "server/pipeline.h"

/* 1 when an Accept header value names application/dicom with q > 0 (any
 * other type listed beside it is ignored: the client asked for DICOM). */
int chex_answer_dicom_accepts(const char *accept);

/* Message of the 406 a non-DICOM input gets when DICOM is asked for. */
extern const char chex_answer_dicom_not_dicom[];

typedef struct {
    const chex_pipeline *p;
    const char *uid_root;          /* config uid_root */
    int explain;                   /* 1: the SC of cam_label[0] over image 0; 0: an SR each */
    int multipart;                 /* predict: multipart/related even for one object */
    int n;                         /* images */
    const uint8_t *const *src;     /* (n) the inputs' bytes, DICOM */
    const size_t *src_len;         /* (n) */
    const chex_prepared *imgs;     /* (n) explain needs imgs[0].image.pix */
    const float *probs;            /* (n, num_labels) */
    const chex_answer_opts *opts;  /* ?threshold= gives the SR its findings */
    const float *cam_raw;          /* explain: image 0's raw maps (chex_heatmap_take) */
    const int *cam_label;          /* explain: the resolved label */
} chex_answer_dicom_in;

typedef struct {
    uint8_t *body;      /* malloc'd, the caller frees (or hands to MHD) */
    size_t len;
    char ctype[96];     /* Content-Type of body */
    int status;         /* on error: HTTP status ... */
    const char *code;   /* ... error code ... */
    char msg[320];      /* ... and one line (never patient data) */
} chex_answer_dicom_out;

/* Returns 0 with out->body, or -1 with out->status/code/msg. */
int chex_answer_dicom(const chex_answer_dicom_in *in, chex_answer_dicom_out *out);

#endif
