/* preprocessing/resize_xrv.c: skimage resize's per-axis weight tables
 * (torchxrayvision's XRayResizer). Exact values where they can be named;
 * the whole resize is compared with skimage itself in
 * tests/reference/test_xrv_reference.sh. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "preprocessing/resize_xrv.h"

/* Same size: the identity (sigma 0, sample points on the pixels). */
static void test_identity(void **state)
{
    (void)state;
    chex_pre_axis_weights a;
    assert_int_equal(chex_pre_xrv_axis_weights(&a, 7, 7), CHEX_PRE_OK);
    for (int o = 0; o < 7; o++) {
        assert_int_equal(a.first[o], o);
        assert_int_equal(a.count[o], 1);
        assert_true(a.w[(size_t)o * a.taps] == 1.0);
    }
    chex_pre_axis_weights_free(&a);
}

/* 2 -> 4 (no anti-aliasing): c = (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75,
 * 1.25; outside the line the samples are 0 (grid-constant). */
static void test_upsample_edges(void **state)
{
    (void)state;
    chex_pre_axis_weights a;
    assert_int_equal(chex_pre_xrv_axis_weights(&a, 2, 4), CHEX_PRE_OK);
    const int first[4] = {0, 0, 0, 1}, count[4] = {1, 2, 2, 1};
    const double w[4][2] = {{0.75, 0}, {0.75, 0.25}, {0.25, 0.75}, {0.75, 0}};
    for (int o = 0; o < 4; o++) {
        assert_int_equal(a.first[o], first[o]);
        assert_int_equal(a.count[o], count[o]);
        for (int j = 0; j < count[o]; j++)
            assert_float_equal(a.w[(size_t)o * a.taps + j], w[o][j], 1e-15);
    }
    chex_pre_axis_weights_free(&a);
}

/* 2048 -> 224: sigma (2048/224 - 1)/2 = 4.07, radius int(4 sigma + 0.5) =
 * 16; interior outputs sum to 1, centred on their sample point; the first
 * and last lose the weight of the zero padding. */
static void test_downsample(void **state)
{
    (void)state;
    chex_pre_axis_weights a;
    assert_int_equal(chex_pre_xrv_axis_weights(&a, 2048, 224), CHEX_PRE_OK);
    assert_int_equal(a.taps, 2 * 16 + 2);
    for (int o = 0; o < 224; o++) {
        double sum = 0.0, mean = 0.0;
        for (int j = 0; j < a.count[o]; j++) {
            double v = a.w[(size_t)o * a.taps + j];
            assert_true(v > 0.0);
            sum += v;
            mean += v * (a.first[o] + j);
        }
        assert_true(a.first[o] >= 0 && a.first[o] + a.count[o] <= 2048);
        double c = (o + 0.5) * 2048.0 / 224.0 - 0.5;
        if (o > 2 && o < 221) {
            assert_float_equal(sum, 1.0, 1e-12);
            assert_float_equal(mean / sum, c, 1e-9);
        }
        if (o == 0 || o == 223)
            assert_true(sum < 0.99);
    }
    chex_pre_axis_weights_free(&a);
    assert_int_equal(chex_pre_xrv_axis_weights(&a, 0, 224), CHEX_PRE_ERR_ARG);
    assert_int_equal(chex_pre_xrv_axis_weights(&a, 5, 0), CHEX_PRE_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_upsample_edges),
        cmocka_unit_test(test_downsample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
