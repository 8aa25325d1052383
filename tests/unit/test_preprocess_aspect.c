/* chex_pre_tensor refuses extreme aspect ratios even when the resized long
 * side passes INT_MAX: with a 1-pixel short side (min_image_side 1) and a
 * 1024 input, 3670915 x 1 resizes to 1170 x 4294970550, which a 32-bit long
 * side wraps to 3254 x 1170, a size that would pass every check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/preprocess.h"

static void refused(int w, int h, int size, const char *preset)
{
    chex_pre_spec s = {.channels = 1, .size = size, .mean = {0.5f}, .std = {0.25f}};
    snprintf(s.preset, sizeof s.preset, "%s", preset);
    chex_pre_image img = {.width = w, .height = h, .channels = 1};
    img.pix = calloc((size_t)w * (size_t)h, sizeof(float));
    float *out = malloc((size_t)size * (size_t)size * sizeof(float));
    assert_non_null(img.pix);
    assert_non_null(out);
    char msg[256];
    chex_pre_err e = chex_pre_tensor(&img, &s, out, NULL, msg, sizeof msg);
    assert_int_equal(e, CHEX_PRE_ERR_UNUSABLE);
    assert_non_null(strstr(msg, "aspect ratio"));
    free(out);
    free(img.pix);
}

static void test_long_side_past_int_max(void **state)
{
    (void)state;
    refused(3670915, 1, 1024, "resize256-crop224"); /* wide */
    refused(1, 3670915, 1024, "resize256-crop224"); /* tall */
}

static void test_long_side_too_long(void **state)
{
    (void)state;
    refused(20000, 1, 224, "resize256-crop224"); /* 256 x 5120000: no wrap, too large */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_side_past_int_max),
        cmocka_unit_test(test_long_side_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
