/* model/safetensors.h - safetensors container: parse (checked), look up, widen, write.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
 * then the raw little-endian data; offsets are relative to the data start.
 *
 * chex_st_parse reads only buf[0..len) (never past len) and checks: header length
 * against len, valid JSON object, known dtype, shape * dtype size == end - begin,
 * offsets inside the data and not overlapping, metadata values are strings.
 * The parsed table borrows nothing from buf except through chex_st_data().
 * A chex_st_file is immutable after parsing; reading it from several threads is safe.
 */
#ifndef CHEX_SAFETENSORS_H
#define CHEX_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

/* I8 holds the int8 weights `chex calibrate` adds (model/quant.c). */
typedef enum { CHEX_ST_F32 = 0, CHEX_ST_F16, CHEX_ST_BF16, CHEX_ST_I8 } chex_st_dtype;

#define CHEX_ST_MAX_DIMS 8
#define CHEX_ST_NAME_LEN 160

typedef struct {
    char name[CHEX_ST_NAME_LEN];
    chex_st_dtype dtype;
    int ndim;
    int64_t shape[CHEX_ST_MAX_DIMS];
    uint64_t begin, end;          /* byte offsets relative to the data section */
} chex_st_tensor;

typedef struct {
    char *key, *value;
} chex_st_meta;

typedef struct {
    chex_st_tensor *tensors;      /* owned */
    int ntensors;
    chex_st_meta *meta;           /* owned */
    int nmeta;
    const uint8_t *data;          /* borrowed: buf + 8 + header length */
    uint64_t data_len;
} chex_st_file;

/* Parses and checks the container. On error writes one line naming the tensor
 * or key and the problem; *out is then empty (safe to chex_st_free). */
chex_model_err chex_st_parse(const uint8_t *buf, size_t len, chex_st_file *out, char *msg,
                             size_t msglen);
void chex_st_free(chex_st_file *f);

const chex_st_tensor *chex_st_find(const chex_st_file *f, const char *name);
/* Metadata value for key, or NULL. */
const char *chex_st_meta_get(const chex_st_file *f, const char *key);
int64_t chex_st_numel(const chex_st_tensor *t);
/* Widens F32/F16/BF16/I8 data of t into dst (numel floats, caller-owned). */
void chex_st_to_f32(const chex_st_file *f, const chex_st_tensor *t, float *dst);

/* Writer (tools and tests): a tensor is F32 with data[i] of numel floats,
 * or, with dtype CHEX_ST_I8, int8 with i8[i] of numel bytes (F16/BF16 are
 * not written). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[CHEX_ST_MAX_DIMS];
    const float *data;
    chex_st_dtype dtype; /* CHEX_ST_F32 (0) or CHEX_ST_I8 */
    const int8_t *i8;
} chex_st_wtensor;
chex_model_err chex_st_write(const char *path, const chex_st_wtensor *t, int nt,
                             const char *const *meta_kv /* key, value, ..., NULL */, char *msg,
                             size_t msglen);

#endif
