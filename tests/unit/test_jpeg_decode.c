/* JPEG decoding: baseline and progressive, gray and colour, every chroma
 * subsampling; pixels equal libjpeg-turbo's own decode / 255 and stay close
 * to the encoded source. Inputs sit right before a PROT_NONE page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include <cmocka.h>

#include "preprocessing/decoders.h"
#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"

static const chex_pre_opts opts = {.max_pixels = 1000000, .min_side = 8,
                                   .png16_scaling = CHEX_PNG16_MINMAX};

/* Smooth test picture (JPEG keeps smooth content within a few levels). */
static uint8_t *picture(int w, int h, int ps)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * (size_t)ps);
    assert_non_null(px);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ps; c++)
                px[((size_t)y * w + x) * ps + c] = (uint8_t)(40 + x + y / 2 + 50 * c);
    return px;
}

static void check_one(int w, int h, int pf, int subsamp, int flags)
{
    int ps = tjPixelSize[pf], oc = pf == TJPF_GRAY ? 1 : 3;
    uint8_t *src = picture(w, h, ps);
    tjhandle tc = tjInitCompress(), td = tjInitDecompress();
    assert_non_null(tc);
    assert_non_null(td);
    uint8_t *jpeg = NULL;
    unsigned long len = 0;
    assert_int_equal(tjCompress2(tc, src, w, 0, h, pf, &jpeg, &len, subsamp, 95, flags), 0);
    uint8_t *ref = malloc((size_t)w * (size_t)h * (size_t)oc);
    assert_non_null(ref);
    assert_int_equal(tjDecompress2(td, jpeg, len, ref, w, 0, h, oc == 1 ? TJPF_GRAY : TJPF_RGB, 0),
                     0);

    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, jpeg, len), 0);
    chex_pre_image img;
    char msg[200];
    chex_pre_err e = chex_pre_decode(g.data, g.len, &opts, &img, msg, sizeof msg);
    if (e != CHEX_PRE_OK)
        fail_msg("decode %dx%d pf %d: %s (%s)", w, h, pf, chex_pre_strerror(e), msg);
    assert_int_equal(img.width, w);
    assert_int_equal(img.height, h);
    assert_int_equal(img.channels, oc);
    assert_int_equal(img.bit_depth, 8);
    assert_string_equal(img.format, "jpeg");
    assert_string_equal(img.scaling, "8bit");
    size_t plane = (size_t)w * (size_t)h;
    float worst = 0.0f;
    for (int c = 0; c < oc; c++)
        for (size_t i = 0; i < plane; i++) {
            float v = img.pix[c * plane + i];
            if (v != (float)ref[i * oc + c] / 255.0f)
                fail_msg("pixel %zu channel %d differs from libjpeg-turbo's decode", i, c);
            float d = v - (float)src[i * ps + c] / 255.0f;
            d = d < 0 ? -d : d;
            worst = d > worst ? d : worst;
        }
    assert_true(worst < 12.0f / 255.0f);
    chex_pre_image_free(&img);
    chex_guard_free(&g);
    tjFree(jpeg);
    free(ref);
    free(src);
    tjDestroy(tc);
    tjDestroy(td);
}

static void test_baseline_colour(void **state)
{
    (void)state;
    check_one(64, 48, TJPF_RGB, TJSAMP_444, 0);
    check_one(67, 45, TJPF_RGB, TJSAMP_420, 0); /* sizes not a multiple of the MCU */
    check_one(40, 33, TJPF_RGB, TJSAMP_422, 0);
}

static void test_progressive(void **state)
{
    (void)state;
    check_one(70, 50, TJPF_RGB, TJSAMP_420, TJFLAG_PROGRESSIVE);
    check_one(70, 50, TJPF_GRAY, TJSAMP_GRAY, TJFLAG_PROGRESSIVE);
}

static void test_gray(void **state)
{
    (void)state;
    check_one(50, 61, TJPF_GRAY, TJSAMP_GRAY, 0);
}

/* The entry point dicom.c uses leaves the DICOM fields alone. */
static void test_direct_entry_keeps_dicom_fields(void **state)
{
    (void)state;
    uint8_t *src = picture(16, 16, 1);
    tjhandle tc = tjInitCompress();
    uint8_t *jpeg = NULL;
    unsigned long len = 0;
    assert_int_equal(tjCompress2(tc, src, 16, 0, 16, TJPF_GRAY, &jpeg, &len, TJSAMP_GRAY, 90, 0),
                     0);
    chex_pre_image img = {0};
    img.is_dicom = 1;
    snprintf(img.dicom.modality, sizeof img.dicom.modality, "CR");
    char msg[100];
    chex_pre_rows rows;
    memset(&rows, 0, sizeof rows);
    rows.img = &img; /* full mode: the whole image, as chex_pre_decode */
    assert_int_equal(chex_pre_decode_jpeg(jpeg, len, &opts, &rows, &img, msg, sizeof msg),
                     CHEX_PRE_OK);
    chex_pre_rows_free(&rows);
    assert_int_equal(img.is_dicom, 1);
    assert_string_equal(img.dicom.modality, "CR");
    assert_int_equal(img.channels, 1);
    chex_pre_image_free(&img);
    assert_null(img.pix);
    tjFree(jpeg);
    tjDestroy(tc);
    free(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_baseline_colour),
        cmocka_unit_test(test_progressive),
        cmocka_unit_test(test_gray),
        cmocka_unit_test(test_direct_entry_keeps_dicom_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
