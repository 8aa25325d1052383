/* tests/unit/test_cam.c - model/cam.c geometry without a network: bilinear
 * upsampling against torch's known answer, placing maps back (identity,
 * mirror, cropped margins, overlapping boxes), normalisation, grid sizes,
 * argument errors. The torch comparison on real features is
 * tests/reference/test_cam.sh. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/cam.h"

static void test_upsample_known(void **state)
{
    (void)state;
    /* torch: F.interpolate(tensor([[[[1.,2.],[3.,4.]]]]), size=(4,4),
     * mode='bilinear', align_corners=False) */
    static const float want[16] = {1.00f, 1.25f, 1.75f, 2.00f, 1.50f, 1.75f, 2.25f, 2.50f,
                                   2.50f, 2.75f, 3.25f, 3.50f, 3.00f, 3.25f, 3.75f, 4.00f};
    const float in[4] = {1, 2, 3, 4};
    float out[16];
    chex_cam_upsample(out, 4, 4, in, 2, 2);
    for (int i = 0; i < 16; i++)
        assert_float_equal(out[i], want[i], 1e-6);
}

static void test_upsample_non_square(void **state)
{
    (void)state;
    /* 1x3 -> 2x6: torch gives each row [1, 1.25, 1.75, 2.25, 2.75, 3] for [1,2,3]. */
    const float in[3] = {1, 2, 3};
    static const float row[6] = {1.0f, 1.25f, 1.75f, 2.25f, 2.75f, 3.0f};
    float out[12];
    chex_cam_upsample(out, 2, 6, in, 1, 3);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 6; x++)
            assert_float_equal(out[y * 6 + x], row[x], 1e-6);
    /* same size: identity */
    const float m[6] = {0.5f, -1, 2, 7, 3, 1};
    float id[6];
    chex_cam_upsample(id, 2, 3, m, 2, 3);
    assert_memory_equal(id, m, sizeof m);
}

static void test_project_identity_and_mirror(void **state)
{
    (void)state;
    float map[16], out[16];
    for (int i = 0; i < 16; i++)
        map[i] = (float)(i * i % 7) - 2.0f;
    chex_cam_box full = {0, 0, 4, 4, 0};
    assert_int_equal(chex_cam_project(out, 4, 4, map, 4, &full, 1), CHEX_MODEL_OK);
    for (int i = 0; i < 16; i++)
        assert_float_equal(out[i], map[i], 1e-6);
    full.flipped = 1;
    assert_int_equal(chex_cam_project(out, 4, 4, map, 4, &full, 1), CHEX_MODEL_OK);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            assert_float_equal(out[y * 4 + x], map[y * 4 + 3 - x], 1e-6);
}

static void test_project_margins_extend_edge(void **state)
{
    (void)state;
    /* A 2x2 map covering columns [1, 3) and all rows of a 4x2 image (a centre
     * crop of a wide image): the cut margins take the nearest edge value. */
    const float map[4] = {10, 20, 30, 40};
    chex_cam_box b = {1, 0, 3, 2, 0};
    float out[8];
    assert_int_equal(chex_cam_project(out, 4, 2, map, 2, &b, 1), CHEX_MODEL_OK);
    static const float want[8] = {10, 10, 20, 20, 30, 30, 40, 40};
    for (int i = 0; i < 8; i++)
        assert_float_equal(out[i], want[i], 1e-5);
    /* scaled: the same map over a box twice as large reads between samples */
    chex_cam_box big = {0, 0, 4, 2, 0};
    assert_int_equal(chex_cam_project(out, 4, 2, map, 2, &big, 1), CHEX_MODEL_OK);
    /* pixel 1 centre 1.5 -> u = 1.5 * 0.5 - 0.5 = 0.25 */
    assert_float_equal(out[1], 10 + 0.25f * 10, 1e-5);
    assert_float_equal(out[2], 10 + 0.75f * 10, 1e-5);
}

static void test_project_overlap_mean(void **state)
{
    (void)state;
    /* Two 1x1-pixel maps (S = 2, constant) over boxes sharing column 1. */
    float maps[8] = {1, 1, 1, 1, 5, 5, 5, 5};
    chex_cam_box bx[2] = {{0, 0, 2, 1, 0}, {1, 0, 3, 1, 1}};
    float out[3];
    assert_int_equal(chex_cam_project(out, 3, 1, maps, 2, bx, 2), CHEX_MODEL_OK);
    assert_float_equal(out[0], 1, 1e-6);
    assert_float_equal(out[1], 3, 1e-6);
    assert_float_equal(out[2], 5, 1e-6);
}

static void test_project_errors(void **state)
{
    (void)state;
    float map[4] = {0}, out[4];
    chex_cam_box empty = {2, 0, 2, 2, 0};
    assert_int_equal(chex_cam_project(out, 2, 2, map, 2, &empty, 1), CHEX_MODEL_ERR_ARG);
    chex_cam_box nan_box = {NAN, 0, 2, 2, 0};
    assert_int_equal(chex_cam_project(out, 2, 2, map, 2, &nan_box, 1), CHEX_MODEL_ERR_ARG);
    chex_cam_box ok = {0, 0, 2, 2, 0};
    assert_int_equal(chex_cam_project(out, 0, 2, map, 2, &ok, 1), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_cam_project(out, 2, 2, map, 2, &ok, 0), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_cam_map(out, 2, 2, map, 1, 0, 2, 2, &ok), CHEX_MODEL_ERR_ARG);
}

static void test_normalise(void **state)
{
    (void)state;
    float a[3] = {2, 4, 6};
    chex_cam_normalise(a, 3);
    assert_float_equal(a[0], 0, 0);
    assert_float_equal(a[1], 0.5, 1e-7);
    assert_float_equal(a[2], 1, 0);
    float c[4] = {3, 3, 3, 3};
    chex_cam_normalise(c, 4);
    for (int i = 0; i < 4; i++)
        assert_float_equal(c[i], 0, 0);
    float inf[2] = {-INFINITY, 1};
    chex_cam_normalise(inf, 2);
    assert_float_equal(inf[0], 0, 0);
    assert_float_equal(inf[1], 0, 0);
    float neg[3] = {-5, -1, -3};
    chex_cam_normalise(neg, 3);
    assert_float_equal(neg[0], 0, 0);
    assert_float_equal(neg[1], 1, 0);
    assert_float_equal(neg[2], 0.5, 1e-7);
}

static void test_map_chain(void **state)
{
    (void)state;
    /* A 2x2 raw map -> S = 4 -> a 6x4 image whose centre crop box is
     * columns [1, 5): normalised, hottest corner 1, coldest 0. */
    const float raw[4] = {-1, 0, 0, 3};
    chex_cam_box b = {1, 0, 5, 4, 0};
    float out[24];
    assert_int_equal(chex_cam_map(out, 6, 4, raw, 1, 2, 2, 4, &b), CHEX_MODEL_OK);
    assert_float_equal(out[0], 0, 1e-6);          /* top-left margin = edge = coldest */
    assert_float_equal(out[23], 1, 1e-6);         /* bottom-right margin = hottest */
    for (int i = 0; i < 24; i++)
        assert_true(out[i] >= 0.0f && out[i] <= 1.0f);
    assert_float_equal(out[1], out[0], 1e-6);     /* margin column equals crop edge */
    assert_float_equal(out[22], out[23], 1e-6);
}

static void test_grid_side(void **state)
{
    (void)state;
    assert_int_equal(chex_cam_grid_side(224), 7);
    assert_int_equal(chex_cam_grid_side(256), 8);
    assert_int_equal(chex_cam_grid_side(299), 9);
    assert_int_equal(chex_cam_grid_side(320), 10);
    assert_int_equal(chex_cam_grid_side(0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upsample_known),
        cmocka_unit_test(test_upsample_non_square),
        cmocka_unit_test(test_project_identity_and_mirror),
        cmocka_unit_test(test_project_margins_extend_edge),
        cmocka_unit_test(test_project_overlap_mean),
        cmocka_unit_test(test_project_errors),
        cmocka_unit_test(test_normalise),
        cmocka_unit_test(test_map_chain),
        cmocka_unit_test(test_grid_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
