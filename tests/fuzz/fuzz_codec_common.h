/* tests/fuzz/fuzz_codec_common.h - shared body of the per-decoder fuzz targets
 * (fuzz_jpegll.c, fuzz_jpegls.c, fuzz_j2k.c, fuzz_rle.c): probe, then, when the
 * frame fits a small pixel budget, decode into an exact-size heap buffer (ASan
 * catches a write past out_cap) and check the contract: terminated message,
 * the decode's frame equals the probe's, samples within `precision` bits. */
#ifndef CHEX_FUZZ_CODEC_COMMON_H
#define CHEX_FUZZ_CODEC_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "preprocessing/codecs.h"

#define FUZZ_MAX_SAMPLES (1u << 20)

typedef chex_pre_err (*fuzz_probe_fn)(const uint8_t *, size_t, chex_codec_frame *, char *,
                                      size_t);
typedef chex_pre_err (*fuzz_decode_fn)(uint16_t *, size_t, const uint8_t *, size_t,
                                       chex_codec_frame *, char *, size_t);

static inline void fuzz_codec(const uint8_t *data, size_t size, fuzz_probe_fn probe,
                              fuzz_decode_fn decode)
{
    char msg[256];
    msg[0] = '\0';
    chex_codec_frame f;
    chex_pre_err e = probe(data, size, &f, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e != CHEX_PRE_OK)
        return;
    if (f.width < 1 || f.height < 1 || f.spp < 1 || f.precision < 1 || f.precision > 16)
        __builtin_trap();
    size_t n = (size_t)f.width * (size_t)f.height * (size_t)f.spp;
    if (n > FUZZ_MAX_SAMPLES)
        return;
    uint16_t *out = malloc(n * sizeof *out);
    if (!out)
        return;
    chex_codec_frame g;
    msg[0] = '\0';
    e = decode(out, n, data, size, &g, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e == CHEX_PRE_OK) {
        if (g.width != f.width || g.height != f.height || g.spp != f.spp ||
            g.precision != f.precision)
            __builtin_trap();
        if (f.precision < 16)
            for (size_t i = 0; i < n; i++)
                if (out[i] >> f.precision)
                    __builtin_trap();
    }
    free(out);
}

#endif
