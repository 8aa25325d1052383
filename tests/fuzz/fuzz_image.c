/* tests/fuzz/fuzz_image.c - libFuzzer target: chex_pre_decode (PNG, JPEG, and
 * DICOM by signature) then chex_pre_tensor on arbitrary bytes, and the
 * streaming chex_pre_prepare (with a display copy scaled to 64 px) and
 * chex_pre_probe on the same bytes, differentially: the probe never refuses
 * what decodes (and agrees on its size), prepare fails exactly when the
 * reference path fails, and their tensors agree within 1e-5 of a pixel. libFuzzer's
 * input is an exact-size heap copy, so ASan catches any read past len.
 * Checks: the message is always terminated, a failure leaves no image, a
 * decoded image respects the pixel limit and lies in [0,1], the tensor is
 * finite. The input's length picks the png16 mapping and, for one input in
 * eight each, the xrv (1 channel) or tencrop preset; otherwise a 3-channel
 * resize256-crop224, the default model's spec.
 * Seeds (tests/fuzz/corpus/fuzz_image/): tiny PNGs of every colour type and
 * depth (palette, tRNS, sBIT, Adam7), baseline/progressive/gray JPEGs, and
 * broken ones (truncated, bad CRC, zero width, bomb headers). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/preprocess.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static float out[10 * 3 * 224 * 224];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a small pixel limit keeps each run fast; larger headers test the limit */
    chex_pre_opts opts = {.max_pixels = 1u << 20, .min_side = 1,
                          .png16_scaling = (chex_png16_scaling)(size % 3)};
    chex_pre_image img;
    char msg[256];
    memset(msg, 'x', sizeof msg);
    chex_pre_err e = chex_pre_decode(data, size, &opts, &img, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e != CHEX_PRE_OK) {
        if (img.pix || e >= CHEX_PRE_ERR_COUNT || msg[0] == '\0')
            __builtin_trap();
        /* the streaming path fails too (maybe earlier: the preset's aspect
         * check comes right after the header) */
        chex_pre_spec sp = {.channels = 3, .size = 224, .preset = "resize224",
                            .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}};
        chex_pre_image meta;
        chex_pre_display disp;
        chex_pre_err se =
            chex_pre_prepare(data, size, &opts, &sp, out, NULL, &meta, &disp, msg, sizeof msg);
        if (se == CHEX_PRE_OK || disp.pix || (se != e && se != CHEX_PRE_ERR_UNUSABLE))
            __builtin_trap();
        return 0;
    }
    if ((img.channels != 1 && img.channels != 3) || img.width < 1 || img.height < 1 ||
        (uint64_t)img.width * (uint64_t)img.height > opts.max_pixels)
        __builtin_trap();
    size_t n = (size_t)img.channels * (size_t)img.width * (size_t)img.height;
    for (size_t i = 0; i < n; i++)
        if (!(img.pix[i] >= 0.0f && img.pix[i] <= 1.0f))
            __builtin_trap();

    chex_pre_spec spec = {.channels = 3, .size = 224, .preset = "resize256-crop224",
                          .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
    if (size % 8 == 3) {
        spec = (chex_pre_spec){.channels = 1, .size = 224, .preset = "xrv", .mean = {0.5f},
                               .std = {1.0f / 2048.0f}};
    } else if (size % 8 == 5) {
        memcpy(spec.preset, "tencrop", 8);
    }
    chex_pre_crop crops[10];
    memset(msg, 'x', sizeof msg);
    e = chex_pre_tensor(&img, &spec, out, crops, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e == CHEX_PRE_OK) {
        size_t t = (size_t)chex_pre_ncrops(&spec) * (size_t)spec.channels * 224 * 224;
        for (size_t i = 0; i < t; i++)
            if (!isfinite(out[i]))
                __builtin_trap();
    } else if (e != CHEX_PRE_ERR_UNUSABLE) {
        /* only extreme aspect ratios may be refused; anything else is a bug */
        __builtin_trap();
    }
    chex_pre_image meta;
    chex_pre_display disp;
    chex_pre_opts sopts = opts;
    sopts.max_overlay_side = 64;
    static float sout[10 * 3 * 224 * 224];
    chex_pre_crop scrops[10];
    chex_pre_err se =
        chex_pre_prepare(data, size, &sopts, &spec, sout, scrops, &meta, &disp, msg, sizeof msg);
    if (se != e || memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    chex_pre_probe_info info;
    if (chex_pre_probe(data, size, &sopts, &spec, &info, msg, sizeof msg) != e ||
        (e == CHEX_PRE_OK && (info.width != img.width || info.height != img.height ||
                              info.channels != img.channels)))
        __builtin_trap();
    if (e == CHEX_PRE_OK) {
        size_t t = (size_t)chex_pre_ncrops(&spec) * (size_t)spec.channels * 224 * 224;
        for (size_t i = 0; i < t; i++)
            if (!(fabsf(out[i] - sout[i]) * spec.std[(i / (224 * 224)) % spec.channels] <= 1e-5f))
                __builtin_trap();
        if (memcmp(crops, scrops, (size_t)chex_pre_ncrops(&spec) * sizeof crops[0]) != 0 ||
            !disp.pix || disp.width > 64 || disp.height > 64)
            __builtin_trap();
        for (size_t i = 0; i < (size_t)disp.width * (size_t)disp.height; i++)
            if (!(disp.pix[i] >= -1e-5f && disp.pix[i] <= 1.0f + 1e-5f))
                __builtin_trap();
        free(disp.pix);
    }
    chex_pre_image_free(&img);
    return 0;
}
