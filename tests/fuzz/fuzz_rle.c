/* tests/fuzz/fuzz_rle.c - libFuzzer target: chex_rle_decode and
 * chex_deflate_inflate (preprocessing/codecs.h). The first 4 bytes choose the
 * RLE frame's width, height, samples (1/3) and bytes per sample (1/2); the rest
 * is the frame. The same bytes are also inflated under a 1 MiB limit. */
#include "tests/fuzz/fuzz_codec_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[256];
    uint8_t *inf = NULL;
    size_t inf_len = 0;
    msg[0] = '\0';
    chex_pre_err e = chex_deflate_inflate(data, size, 1u << 20, &inf, &inf_len, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL || (e != CHEX_PRE_OK && inf) ||
        (e == CHEX_PRE_OK && inf_len > (1u << 20)))
        __builtin_trap();
    free(inf);
    if (size < 4)
        return 0;
    int w = 1 + data[0], h = 1 + data[1], spp = (data[2] & 1) ? 3 : 1, bytes = 1 + (data[3] & 1);
    const uint8_t *frame = data + 4;
    size_t len = size - 4;
    chex_codec_frame f;
    msg[0] = '\0';
    if (chex_rle_probe(frame, len, w, h, spp, bytes, &f, msg, sizeof msg) != CHEX_PRE_OK)
        return 0;
    size_t n = (size_t)w * (size_t)h * (size_t)spp;
    uint16_t *out = malloc(n * sizeof *out);
    if (!out)
        return 0;
    e = chex_rle_decode(out, n, frame, len, w, h, spp, bytes, &f, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e == CHEX_PRE_OK && bytes == 1)
        for (size_t i = 0; i < n; i++)
            if (out[i] > 255)
                __builtin_trap();
    free(out);
    return 0;
}
