/* tests/fuzz/fuzz_oip.c - libFuzzer target: chex_oip_parse_infer on arbitrary
 * bodies, both as plain JSON and with the first byte choosing an
 * Inference-Header-Content-Length. libFuzzer's input is an exact-size heap
 * copy, so ASan catches any read past len; the scratch is a heap block of
 * exactly chex_oip_scratch_bound bytes, so a bound too small is caught too.
 * Checks: the message is always
 * terminated, every image lies inside the body or the scratch buffer, a
 * parsed tensor is finite, and an accepted request builds an answer. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/oip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const labels[] = {"A", "Bb", "Ccc"};
static const chex_oip_model model = {"m", "1", "p", 1, 2, 3, labels, NULL};

static int inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
    return p >= base && n <= len && (size_t)(p - base) <= len - n;
}

enum { MAXIMG = 4 };

static void check(const uint8_t *body, size_t len, long long hl, uint8_t *scratch, size_t slen)
{
    chex_oip_bytes images[MAXIMG];
    const chex_oip_buffers b = {images, MAXIMG, scratch, slen};
    chex_oip_request r;
    char msg[256];
    memset(msg, 'x', sizeof msg);
    chex_oip_err e = chex_oip_parse_infer(&r, body, len, hl, &model, &b, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e != CHEX_OIP_OK)
        return;
    if (r.n < 1 || r.n > MAXIMG)
        __builtin_trap();
    if (r.kind == CHEX_OIP_IN_IMAGES) {
        for (int i = 0; i < r.n; i++)
            if (!inside(r.images[i].data, r.images[i].len, body, len) &&
                !inside(r.images[i].data, r.images[i].len, scratch, slen))
                __builtin_trap();
    } else {
        for (int i = 0; i < r.n * 4; i++)
            if (!isfinite(r.tensor[i]))
                __builtin_trap();
    }
    float probs[MAXIMG * 3];
    for (int i = 0; i < MAXIMG * 3; i++)
        probs[i] = (float)i / 16.0f;
    chex_oip_answer a;
    if (chex_oip_build_infer(&a, &model, &r, probs) == CHEX_OIP_OK) {
        if (a.header_len > (long long)a.len)
            __builtin_trap();
        free(a.body);
    }
}

static void one(const uint8_t *body, size_t len, long long hl)
{
    size_t slen = chex_oip_scratch_bound(len, &model, MAXIMG);
    uint8_t *scratch = malloc(slen);
    if (!scratch)
        return;
    check(body, len, hl, scratch, slen);
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, -1);
    if (size > 1) {
        /* first byte: header length as a fraction of the rest */
        size_t rest = size - 1;
        long long hl = (long long)(rest * data[0] / 255);
        uint8_t *copy = malloc(rest);
        if (!copy)
            return 0;
        memcpy(copy, data + 1, rest);
        one(copy, rest, hl);
        free(copy);
    }
    return 0;
}
