/* tests/fuzz/fuzz_dicom.c - libFuzzer target: chex_dicom_parse and
 * chex_pre_decode_dicom on arbitrary bytes. libFuzzer's input is an exact-size
 * heap copy, so ASan catches any read past len. Checks: the message is always
 * terminated, a failure leaves no image, pixel data found by the parser lies
 * inside the input, a decoded image is finite and in [0,1]. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/decoders.h"
#include "preprocessing/dicom.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[256];
    chex_dicom_info d;
    msg[0] = '\0';
    if (chex_dicom_parse(data, size, &d, msg, sizeof msg) == CHEX_PRE_OK) {
        if (d.pixel_data &&
            (d.pixel_data < data || d.pixel_len > size - (size_t)(d.pixel_data - data)))
            __builtin_trap();
        if (d.pixel_data && d.encapsulated) {
            size_t n = 0;
            if (chex_dicom_first_frame(&d, NULL, 0, &n, msg, sizeof msg) == CHEX_PRE_OK) {
                if (n == 0 || n > d.pixel_len)
                    __builtin_trap();
                uint8_t *f = malloc(n);
                size_t n2 = 0;
                if (f && (chex_dicom_first_frame(&d, f, n, &n2, msg, sizeof msg) != CHEX_PRE_OK ||
                          n2 != n))
                    __builtin_trap();
                free(f);
            }
        }
    }
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();

    /* a small pixel limit keeps each run fast; larger images only test the limit */
    const chex_pre_opts opts = {.max_pixels = 1u << 20, .min_side = 1};
    chex_pre_image img;
    msg[0] = '\0';
    chex_pre_err e = chex_pre_decode(data, size, &opts, &img, msg, sizeof msg);
    if (memchr(msg, '\0', sizeof msg) == NULL)
        __builtin_trap();
    if (e != CHEX_PRE_OK) {
        if (img.pix)
            __builtin_trap();
        return 0;
    }
    if (img.channels != 1 || img.width < 1 || img.height < 1 || !img.is_dicom ||
        (uint64_t)img.width * (uint64_t)img.height > opts.max_pixels)
        __builtin_trap();
    size_t np = (size_t)img.width * (size_t)img.height;
    for (size_t i = 0; i < np; i++)
        if (!(img.pix[i] >= 0.0f && img.pix[i] <= 1.0f))
            __builtin_trap();
    chex_pre_image_free(&img);
    return 0;
}
