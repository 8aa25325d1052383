/* chex_pre_tensor geometry: crop positions (torchvision's rounding), TenCrop
 * order and mirroring, crop boxes in original coordinates, channel conversion
 * and normalisation. Sizes are chosen so resizing is the identity where the
 * exact source pixel of every output can be named. (Interpolation itself is
 * checked against torch in tests/reference/test_preprocess.sh.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/preprocess.h"

#define S 224

static chex_pre_spec spec_of(const char *preset, int channels)
{
    chex_pre_spec s = {.channels = channels, .size = S, .mean = {0.485f, 0.456f, 0.406f},
                       .std = {0.229f, 0.224f, 0.225f}};
    snprintf(s.preset, sizeof s.preset, "%s", preset);
    return s;
}

/* Distinct value per (channel, y, x). */
static chex_pre_image make_image(int w, int h, int c)
{
    chex_pre_image img = {.width = w, .height = h, .channels = c};
    img.pix = malloc((size_t)c * (size_t)w * (size_t)h * sizeof(float));
    assert_non_null(img.pix);
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                img.pix[((size_t)k * h + y) * w + x] = (float)((x * 7 + y * 13 + k * 101) % 256) / 255.0f;
    return img;
}

static float px(const chex_pre_image *img, int c, int y, int x)
{
    return img->pix[((size_t)c * img->height + y) * img->width + x];
}

static void test_ncrops(void **state)
{
    (void)state;
    chex_pre_spec s = spec_of("tencrop", 3);
    assert_int_equal(chex_pre_ncrops(&s), 10);
    s = spec_of("resize256-crop224", 3);
    assert_int_equal(chex_pre_ncrops(&s), 1);
    s = spec_of("resize224", 3);
    assert_int_equal(chex_pre_ncrops(&s), 1);
    s = spec_of("xrv", 1);
    assert_int_equal(chex_pre_ncrops(&s), 1);
    s = spec_of("Resize256-crop224", 3);
    assert_int_equal(chex_pre_ncrops(&s), 0);
    assert_int_equal(chex_pre_ncrops(NULL), 0);
}

/* 256 x 345 (W x H): Resize(256) leaves it unchanged (256, int(256*345/256)),
 * the centre crop's top is round(60.5) = 60 (half to even), left 16. */
static void test_centre_crop_rounding(void **state)
{
    (void)state;
    chex_pre_image img = make_image(256, 345, 3);
    chex_pre_spec s = spec_of("resize256-crop224", 3);
    float *out = malloc(3 * S * S * sizeof(float));
    chex_pre_crop box;
    char msg[128];
    assert_int_equal(chex_pre_tensor(&img, &s, out, &box, msg, sizeof msg), CHEX_PRE_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y += 7)
            for (int x = 0; x < S; x += 5) {
                float want = (px(&img, c, 60 + y, 16 + x) - s.mean[c]) / s.std[c];
                assert_float_equal(out[(c * S + y) * S + x], want, 1e-5);
            }
    assert_float_equal(box.x0, 16, 1e-4);
    assert_float_equal(box.y0, 60, 1e-4);
    assert_float_equal(box.x1, 240, 1e-4);
    assert_float_equal(box.y1, 284, 1e-4);
    assert_int_equal(box.flipped, 0);
    free(out);
    chex_pre_image_free(&img);
}

static void test_tencrop_order(void **state)
{
    (void)state;
    chex_pre_image img = make_image(256, 300, 1);
    chex_pre_spec s = spec_of("tencrop", 1);
    s.mean[0] = 0.0f;
    s.std[0] = 1.0f;
    float *out = malloc(10 * S * S * sizeof(float));
    chex_pre_crop box[10];
    char msg[128];
    assert_int_equal(chex_pre_tensor(&img, &s, out, box, msg, sizeof msg), CHEX_PRE_OK);
    /* TL, TR, BL, BR, centre (top round(38) = 38, left 16), then mirrored */
    const int top[5] = {0, 0, 76, 76, 38}, left[5] = {0, 32, 0, 32, 16};
    for (int k = 0; k < 10; k++) {
        const float *t = out + (size_t)k * S * S;
        int m = k >= 5, t0 = top[k % 5], l0 = left[k % 5];
        for (int y = 0; y < S; y += 3)
            for (int x = 0; x < S; x += 3) {
                /* crop (t0, l0) of the mirrored image = original column 255 - (l0 + x) */
                int sx = m ? 255 - (l0 + x) : l0 + x;
                if (t[y * S + x] != px(&img, 0, t0 + y, sx))
                    fail_msg("crop %d (%d,%d)", k, y, x);
            }
        int bx0 = m ? 256 - l0 - S : l0;
        assert_float_equal(box[k].x0, bx0, 1e-4);
        assert_float_equal(box[k].x1, bx0 + S, 1e-4);
        assert_float_equal(box[k].y0, t0, 1e-4);
        assert_float_equal(box[k].y1, t0 + S, 1e-4);
        assert_int_equal(box[k].flipped, m);
    }
    free(out);
    chex_pre_image_free(&img);
}

/* Constant images stay constant through every resize (xrv: away from the
 * edges, where skimage's zero padding blends in 0); channels convert (xrv: a
 * colour image's channel mean after normalisation, torchxrayvision's README). */
static void test_constant_and_channels(void **state)
{
    (void)state;
    const char *presets[] = {"resize256-crop224", "tencrop", "resize224", "xrv"};
    chex_pre_image rgb = make_image(333, 290, 3);
    size_t plane = (size_t)rgb.width * (size_t)rgb.height;
    for (size_t i = 0; i < plane; i++) {
        rgb.pix[i] = 0.8f;
        rgb.pix[plane + i] = 0.4f;
        rgb.pix[2 * plane + i] = 0.2f;
    }
    chex_pre_image gray = make_image(333, 290, 1);
    for (size_t i = 0; i < plane; i++)
        gray.pix[i] = 0.3f;
    float *out = malloc(10 * 3 * S * S * sizeof(float));
    char msg[128];
    for (int p = 0; p < 4; p++)
        for (int C = 1; C <= 3; C += 2) {
            chex_pre_spec s = spec_of(presets[p], C);
            int n = chex_pre_ncrops(&s);
            /* colour image */
            assert_int_equal(chex_pre_tensor(&rgb, &s, out, NULL, msg, sizeof msg), CHEX_PRE_OK);
            for (int k = 0; k < n; k++)
                for (int c = 0; c < C; c++) {
                    float v = C == 1 ? 0.8f * 0.299f + 0.4f * 0.587f + 0.2f * 0.114f
                                     : (c == 0 ? 0.8f : c == 1 ? 0.4f : 0.2f);
                    float want = (v - s.mean[c]) / s.std[c];
                    if (p == 3 && C == 1)
                        want = ((0.8f - s.mean[0]) / s.std[0] + (0.4f - s.mean[0]) / s.std[0] +
                                (0.2f - s.mean[0]) / s.std[0]) / 3.0f;
                    const float *t = out + ((size_t)k * C + c) * S * S;
                    for (int i = 0; i < S * S; i += 97)
                        if (p != 3 || (i / S > 1 && i / S < S - 2 && i % S > 1 && i % S < S - 2))
                            assert_float_equal(t[i], want, 1e-5);
                }
            /* gray image, replicated when C = 3 */
            assert_int_equal(chex_pre_tensor(&gray, &s, out, NULL, msg, sizeof msg), CHEX_PRE_OK);
            for (int k = 0; k < n; k++)
                for (int c = 0; c < C; c++) {
                    float want = (0.3f - s.mean[c]) / s.std[c];
                    const float *t = out + ((size_t)k * C + c) * S * S;
                    for (int i = 0; i < S * S; i += 97)
                        if (p != 3 || (i / S > 1 && i / S < S - 2 && i % S > 1 && i % S < S - 2))
                            assert_float_equal(t[i], want, 1e-5);
                }
        }
    free(out);
    chex_pre_image_free(&rgb);
    chex_pre_image_free(&gray);
}

/* xrv: centre square of the shorter side at side//2 - short//2, resized to S. */
static void test_xrv_square(void **state)
{
    (void)state;
    chex_pre_image img = make_image(S + 61, S, 1); /* 285 x 224: start x = 142 - 112 = 30 */
    chex_pre_spec s = {.channels = 1, .size = S, .preset = "xrv", .mean = {0.5f},
                       .std = {1.0f / 2048.0f}};
    float *out = malloc(S * S * sizeof(float));
    chex_pre_crop box;
    char msg[128];
    assert_int_equal(chex_pre_tensor(&img, &s, out, &box, msg, sizeof msg), CHEX_PRE_OK);
    for (int y = 0; y < S; y += 11)
        for (int x = 0; x < S; x += 13)
            assert_float_equal(out[y * S + x], (px(&img, 0, y, 30 + x) - 0.5f) * 2048.0f, 1e-3);
    assert_float_equal(box.x0, 30, 1e-4);
    assert_float_equal(box.x1, 30 + S, 1e-4);
    assert_float_equal(box.y0, 0, 1e-4);
    assert_float_equal(box.y1, S, 1e-4);
    /* range: [0,1] maps to [-1024, 1024] */
    for (int i = 0; i < S * S; i++)
        assert_true(out[i] >= -1024.0f && out[i] <= 1024.0f);
    free(out);
    chex_pre_image_free(&img);
}

/* resize224 ignores the aspect ratio; its box is the whole image. */
static void test_resize224_box(void **state)
{
    (void)state;
    chex_pre_image img = make_image(1036, 885, 3);
    chex_pre_spec s = spec_of("resize224", 3);
    float *out = malloc(3 * S * S * sizeof(float));
    chex_pre_crop box;
    char msg[128];
    assert_int_equal(chex_pre_tensor(&img, &s, out, &box, msg, sizeof msg), CHEX_PRE_OK);
    assert_float_equal(box.x0, 0, 1e-4);
    assert_float_equal(box.y0, 0, 1e-4);
    assert_float_equal(box.x1, 1036, 1e-3);
    assert_float_equal(box.y1, 885, 1e-3);
    /* the resize256-crop224 box of the same image: 1036x885 -> 299x256 */
    s = spec_of("resize256-crop224", 3);
    assert_int_equal(chex_pre_tensor(&img, &s, out, &box, msg, sizeof msg), CHEX_PRE_OK);
    double sx = 1036.0 / 299.0, sy = 885.0 / 256.0;
    assert_float_equal(box.x0, 38 * sx, 1e-3); /* round(37.5) = 38 */
    assert_float_equal(box.x1, (38 + S) * sx, 1e-3);
    assert_float_equal(box.y0, 16 * sy, 1e-3);
    assert_float_equal(box.y1, (16 + S) * sy, 1e-3);
    free(out);
    chex_pre_image_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ncrops),
        cmocka_unit_test(test_centre_crop_rounding),
        cmocka_unit_test(test_tencrop_order),
        cmocka_unit_test(test_constant_and_channels),
        cmocka_unit_test(test_xrv_square),
        cmocka_unit_test(test_resize224_box),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
