/* server/oip.h - the Open Inference Protocol (KServe v2 REST, also Triton's
 * HTTP protocol) as plain functions over bytes: no HTTP library here, the
 * daemon maps the results to statuses.
 *
 * Protocol text: kserve/open-inference-protocol
 * specification/protocol/inference_rest.md, and Triton's binary data extension
 * (docs/protocol/extension_binary_data.md): the body is a JSON header of
 * Inference-Header-Content-Length bytes followed by the binary data of the
 * inputs that carry parameters.binary_data_size, in input order; a BYTES
 * element is a 4-byte little-endian length followed by that many bytes.
 *
 * chexd's model takes one of two inputs:
 *   image  BYTES [N]          each element an encoded PNG/JPEG/DICOM: base64
 *                             strings (parameters.content_type "base64") in
 *                             JSON, or raw bytes through the binary extension;
 *   input  FP32  [N, C, S, S] already preprocessed, JSON numbers or binary;
 * and answers with
 *   probabilities FP32 [N, L] and labels BYTES [L].
 *
 * All functions are reentrant and thread-safe; nothing keeps state. */
#ifndef CHEX_OIP_H
#define CHEX_OIP_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHEX_OIP_OK = 0,
    CHEX_OIP_EREQUEST, /* malformed request: 400, the message names the field */
    CHEX_OIP_ETOOBIG,  /* more images or bytes than the caller's buffers: 413 */
    CHEX_OIP_ENOMEM,
    CHEX_OIP_ERR_COUNT
} chex_oip_err;

/* Static text for an error code (never NULL). */
const char *chex_oip_strerror(chex_oip_err e);

/* The served model as the protocol shows it. Borrowed pointers. */
typedef struct {
    const char *name;     /* model name in the routes */
    const char *version;  /* the one version served */
    const char *platform; /* metadata "platform" */
    int channels, size;   /* C, S of the input tensor */
    int num_labels;       /* L */
    const char *const *labels;
    const char *sha256;   /* of the weights answering; the infer answer's
                             parameters.sha256 (NULL: omitted) */
} chex_oip_model;

/* ---------- routes ---------- */

typedef enum {
    CHEX_OIP_ROUTE_NONE = 0, /* not an OIP path handled here */
    CHEX_OIP_ROUTE_SERVER,   /* /v2 */
    CHEX_OIP_ROUTE_MODEL,    /* /v2/models/{m}[/versions/{v}] */
    CHEX_OIP_ROUTE_READY,    /* .../ready */
    CHEX_OIP_ROUTE_INFER     /* .../infer */
} chex_oip_route;

/* A parsed /v2 path: model and version point into the path (not terminated);
 * version is NULL when the path names none. */
typedef struct {
    chex_oip_route route;
    const char *model;
    size_t model_len;
    const char *version;
    size_t version_len;
} chex_oip_path;

/* Splits a URL path (no query string). /v2/health/... is ROUTE_NONE (the
 * daemon's own health routes). Never fails; empty names give ROUTE_NONE. */
void chex_oip_path_parse(chex_oip_path *out, const char *path);

/* 1 when the path's model (and version, if given) is the served one. */
int chex_oip_path_matches(const chex_oip_path *p, const chex_oip_model *m);

/* ---------- infer request ---------- */

typedef struct {
    const uint8_t *data;
    size_t len;
} chex_oip_bytes;

typedef enum { CHEX_OIP_IN_IMAGES = 1, CHEX_OIP_IN_TENSOR } chex_oip_input_kind;

enum { CHEX_OIP_OUT_PROBABILITIES = 0, CHEX_OIP_OUT_LABELS, CHEX_OIP_OUT_COUNT };

#define CHEX_OIP_ID_MAX 256

/* Buffers the caller gives the parser (sized e.g. by chex_oip_scratch_bound). */
typedef struct {
    chex_oip_bytes *images; /* room for max_images entries */
    int max_images;         /* also the largest N accepted for either input */
    uint8_t *scratch;       /* base64-decoded images and the FP32 tensor */
    size_t scratch_len;
} chex_oip_buffers;

typedef struct {
    char id[CHEX_OIP_ID_MAX]; /* the request "id", "" when absent */
    int has_id;
    chex_oip_input_kind kind;
    int n; /* N: images, or tensors of (C, S, S) */
    /* IN_IMAGES: images[0..n) point into the body or into scratch. */
    const chex_oip_bytes *images;
    /* IN_TENSOR: (n, C, S, S) floats inside scratch (aligned for float). */
    const float *tensor;
    /* Outputs in answer order: out_order[0..out_count) are CHEX_OIP_OUT_*;
     * out_binary[k] is 1 when output k goes in the binary tail. */
    int out_count;
    int out_order[CHEX_OIP_OUT_COUNT];
    int out_binary[CHEX_OIP_OUT_COUNT];
} chex_oip_request;

/* Bytes of scratch that always suffice for a body of body_len bytes and up to
 * max_images items of the model's (C, S, S) tensor. */
size_t chex_oip_scratch_bound(size_t body_len, const chex_oip_model *m, int max_images);

/* Parses the infer request body[0..body_len). header_len is the value of
 * Inference-Header-Content-Length, or -1 when the header is absent (the whole
 * body is JSON). Never reads outside the body; pointers in *out point into
 * body or buf->scratch, so both must outlive *out. On error writes one line
 * naming the field into msg. */
chex_oip_err chex_oip_parse_infer(chex_oip_request *out, const uint8_t *body, size_t body_len,
                                  long long header_len, const chex_oip_model *m,
                                  const chex_oip_buffers *buf, char *msg, size_t msglen);

/* Parses the value of an Inference-Header-Content-Length header: a decimal
 * number <= body_len. Returns the length, or -1 with a message. */
long long chex_oip_header_length(const char *value, size_t body_len, char *msg, size_t msglen);

/* ---------- answers (malloc'd, caller frees) ---------- */

typedef struct {
    char *body;
    size_t len;
    /* JSON bytes at the start of body when a binary tail follows (the value
     * of Inference-Header-Content-Length); -1 when the body is all JSON. */
    long long header_len;
} chex_oip_answer;

/* The infer answer: model_name, model_version, id (when given),
 * parameters.sha256 (when m->sha256 is set), outputs as the request chose. probs is (r->n, m->num_labels). */
chex_oip_err chex_oip_build_infer(chex_oip_answer *out, const chex_oip_model *m,
                                  const chex_oip_request *r, const float *probs);

/* GET /v2: {"name", "version", "extensions"}. NUL-terminated, NULL on ENOMEM. */
char *chex_oip_server_metadata(const char *name, const char *version);

/* GET /v2/models/{m}: {"name", "versions", "platform", "inputs", "outputs"}. */
char *chex_oip_model_metadata(const chex_oip_model *m);

/* {"error": "message"}. */
char *chex_oip_error_json(const char *message);

#endif
