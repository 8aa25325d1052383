/* tests/fuzz/fuzz_safetensors.c - libFuzzer target: chex_st_parse on arbitrary
 * bytes, then every accessor and chex_st_to_f32 on each tensor it accepted.
 * libFuzzer's input is an exact-size heap copy, so ASan catches any read past
 * len; a tensor accepted by the parser must widen entirely from inside it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    chex_st_file f;
    char msg[256];
    chex_model_err rc = chex_st_parse(data, size, &f, msg, sizeof(msg));
    if (memchr(msg, '\0', sizeof(msg)) == NULL)
        __builtin_trap(); /* the message is always terminated */
    if (rc != CHEX_MODEL_OK) {
        if (f.ntensors != 0 || f.tensors || f.nmeta != 0 || f.meta)
            __builtin_trap(); /* failure leaves *out empty */
        chex_st_free(&f);
        return 0;
    }
    for (int i = 0; i < f.ntensors; i++) {
        const chex_st_tensor *t = &f.tensors[i];
        if (chex_st_find(&f, t->name) != t || t->end > f.data_len || t->begin > t->end)
            __builtin_trap();
        int64_t n = chex_st_numel(t);
        float *dst = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        if (!dst)
            continue;
        chex_st_to_f32(&f, t, dst);
        free(dst);
    }
    for (int i = 0; i < f.nmeta; i++)
        if (chex_st_meta_get(&f, f.meta[i].key) != f.meta[i].value)
            __builtin_trap();
    chex_st_free(&f);
    return 0;
}
