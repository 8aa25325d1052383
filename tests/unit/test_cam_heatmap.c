/* tests/unit/test_cam_heatmap.c - server/heatmap.c: the gray PNG and the
 * overlay PNG decoded back with preprocessing's own PNG decoder and checked
 * pixel by pixel, base64 (RFC 4648 vectors), label parsing and its error
 * message, top-label choice, the map of a prepared image (crop geometry), the
 * "cam" JSON object, and the files of chex classify --cam. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include "tests/unit/helpers/guard.h"

#include "model/cam.h"
#include "server/heatmap.h"

static const chex_pre_opts OPTS = {1u << 26, 1, CHEX_PNG16_MINMAX, 0, 0};

static chex_pre_image decode(const uint8_t *png, size_t len)
{
    chex_pre_image img;
    memset(&img, 0, sizeof img);
    char msg[128];
    assert_int_equal(chex_pre_decode(png, len, &OPTS, &img, msg, sizeof msg), CHEX_PRE_OK);
    assert_string_equal(img.format, "png");
    return img;
}

static void test_gray_png_round_trip(void **state)
{
    (void)state;
    enum { W = 7, H = 3 };
    float map[W * H];
    for (int i = 0; i < W * H; i++)
        map[i] = (float)i / (W * H - 1);
    map[4] = -0.5f; /* clamped */
    map[5] = 2.0f;
    map[6] = NAN;   /* written as 0 */
    uint8_t *png = NULL;
    size_t len = 0;
    char msg[128];
    assert_int_equal(chex_heatmap_png_gray(map, W, H, &png, &len, msg, sizeof msg), 0);
    assert_true(len > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    chex_pre_image img = decode(png, len);
    assert_int_equal(img.width, W);
    assert_int_equal(img.height, H);
    assert_int_equal(img.channels, 1);
    assert_int_equal(img.bit_depth, 8);
    for (int i = 0; i < W * H; i++) {
        float v = i == 4 || i == 6 ? 0.0f : i == 5 ? 1.0f : map[i];
        long want = lroundf(v * 255.0f);
        assert_int_equal(lroundf(img.pix[i] * 255.0f), want);
    }
    chex_pre_image_free(&img);
    free(png);
    assert_int_equal(chex_heatmap_png_gray(map, 0, 3, &png, &len, msg, sizeof msg), -1);
    assert_null(png);
}

/* The documented blend, computed here independently. */
static void expect_blend(const uint8_t *px, float gray, float v)
{
    int idx = (int)lroundf(v * 255.0f);
    float a = 0.2f + 0.45f * v;
    for (int k = 0; k < 3; k++) {
        float want = gray * 255.0f * (1.0f - a) + a * chex_heatmap_inferno[idx][k];
        assert_true(fabsf((float)px[k] - want) <= 0.51f);
    }
}

static void test_overlay_png(void **state)
{
    (void)state;
    /* gray 3x2 radiograph */
    float pix[6] = {0.0f, 0.5f, 1.0f, 0.25f, 0.75f, 0.1f};
    float map[6] = {0.0f, 1.0f, 0.5f, 0.2f, 0.9f, 0.0f};
    chex_pre_display src = {.width = 3, .height = 2, .pix = pix};
    uint8_t *png = NULL;
    size_t len = 0;
    char msg[128];
    assert_int_equal(chex_heatmap_png_overlay(&src, map, &png, &len, msg, sizeof msg), 0);
    chex_pre_image out = decode(png, len);
    assert_int_equal(out.channels, 3);
    assert_int_equal(out.width, 3);
    assert_int_equal(out.height, 2);
    for (int i = 0; i < 6; i++) {
        uint8_t px[3];
        for (int k = 0; k < 3; k++)
            px[k] = (uint8_t)lroundf(out.pix[(size_t)k * 6 + i] * 255.0f);
        expect_blend(px, pix[i], map[i]);
    }

    /* colour radiograph: the display copy (what overlays are drawn over) is
     * its luminance; the overlay PNG just made is a colour image */
    chex_pre_spec spec = {.channels = 3, .size = 8, .preset = "resize224",
                          .mean = {0, 0, 0}, .std = {1, 1, 1}};
    float tensor[3 * 8 * 8];
    chex_pre_image meta;
    chex_pre_display disp;
    assert_int_equal(chex_pre_prepare(png, len, &OPTS, &spec, tensor, NULL, &meta, &disp, msg,
                                      sizeof msg),
                     CHEX_PRE_OK);
    assert_int_equal(disp.width, 3);
    assert_int_equal(disp.height, 2);
    assert_null(meta.pix);
    for (int i = 0; i < 6; i++) {
        float lum = out.pix[i] * 0.299f + out.pix[6 + i] * 0.587f + out.pix[12 + i] * 0.114f;
        assert_true(disp.pix[i] == lum);
    }
    free(disp.pix);
    free(png);
    chex_pre_image_free(&out);

    src.pix = NULL;
    assert_int_equal(chex_heatmap_png_overlay(&src, map, &png, &len, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "no decoded image"));
}

static void test_inferno_table(void **state)
{
    (void)state;
    /* inferno runs from near black to pale yellow, lightness rising. */
    assert_true(chex_heatmap_inferno[0][0] < 5 && chex_heatmap_inferno[0][2] < 10);
    assert_true(chex_heatmap_inferno[255][0] > 245 && chex_heatmap_inferno[255][1] > 245);
    double prev = -1;
    for (int i = 0; i < 256; i += 16) {
        const uint8_t *c = chex_heatmap_inferno[i];
        double lum = 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
        assert_true(lum > prev);
        prev = lum;
    }
}

static void test_base64(void **state)
{
    (void)state;
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                      "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *s = chex_heatmap_base64((const uint8_t *)in[i], strlen(in[i]));
        assert_non_null(s);
        assert_string_equal(s, out[i]);
        free(s);
    }
    const uint8_t hi[3] = {0xff, 0xfe, 0x00};
    char *s = chex_heatmap_base64(hi, 3);
    assert_string_equal(s, "//4A");
    free(s);
}

static chex_model_info fake_info(void)
{
    chex_model_info in;
    memset(&in, 0, sizeof in);
    in.num_labels = 3;
    strcpy(in.labels[0], "Atelectasis");
    strcpy(in.labels[1], "Pleural_Thickening");
    strcpy(in.labels[2], "No Finding");
    return in;
}

static void test_parse_label(void **state)
{
    (void)state;
    chex_model_info in = fake_info();
    char msg[256];
    int l = -9;
    assert_int_equal(chex_heatmap_parse_label(&in, "Pleural_Thickening", 1, &l, msg, sizeof msg), 0);
    assert_int_equal(l, 1);
    assert_int_equal(chex_heatmap_parse_label(&in, "pleural thickening", 0, &l, msg, sizeof msg), 0);
    assert_int_equal(l, 1);
    assert_int_equal(chex_heatmap_parse_label(&in, "no_finding", 0, &l, msg, sizeof msg), 0);
    assert_int_equal(l, 2);
    assert_int_equal(chex_heatmap_parse_label(&in, "TOP", 1, &l, msg, sizeof msg), 0);
    assert_int_equal(l, CHEX_CAM_TOP);
    assert_int_equal(chex_heatmap_parse_label(&in, "top", 0, &l, msg, sizeof msg), -1);
    assert_string_equal(msg,
                        "unknown label \"top\"; valid labels: Atelectasis, Pleural_Thickening, "
                        "No Finding");
    assert_int_equal(chex_heatmap_parse_label(&in, "Atelectasi", 1, &l, msg, sizeof msg), -1);
    assert_string_equal(msg, "unknown label \"Atelectasi\"; valid labels: top, Atelectasis, "
                             "Pleural_Thickening, No Finding");
    assert_int_equal(chex_heatmap_parse_label(&in, "a\"b\nc", 0, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "\"a?b?c\""));
    assert_int_equal(chex_heatmap_parse_label(&in, NULL, 0, &l, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "no label given"));
    /* a short buffer is truncated, never overrun */
    char small[20];
    assert_int_equal(chex_heatmap_parse_label(&in, "x", 0, &l, small, sizeof small), -1);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_resolve(void **state)
{
    (void)state;
    chex_model_info in = fake_info();
    const float p[3] = {0.1f, 0.7f, 0.7f};
    assert_int_equal(chex_heatmap_resolve(&in, CHEX_CAM_TOP, p), 1);
    assert_int_equal(chex_heatmap_resolve(&in, 2, p), 2);
}

/* Labels the model was not trained on (op_threshs NaN) are no CAM choice:
 * "top" skips them even at a higher value, naming one is refused. */
static void test_untrained_labels(void **state)
{
    (void)state;
    chex_model_info in = fake_info();
    in.op_norm = 1;
    in.untrained[1] = 1;
    in.num_untrained = 1;
    const float p[3] = {0.1f, 0.5f, 0.3f};
    assert_int_equal(chex_heatmap_resolve(&in, CHEX_CAM_TOP, p), 2);
    char msg[256];
    int l = -5;
    assert_int_equal(chex_heatmap_parse_label(&in, "pleural thickening", 1, &l, msg, sizeof msg),
                     -1);
    assert_int_equal(l, -5);
    assert_string_equal(msg, "label \"Pleural_Thickening\" is not trained in this model (its "
                             "operating point is NaN): no prediction and no heat map for it");
    assert_int_equal(chex_heatmap_parse_label(&in, "x", 1, &l, msg, sizeof msg), -1);
    assert_string_equal(msg, "unknown label \"x\"; valid labels: top, Atelectasis, No Finding");
}

/* A prepared 300x200 image with a centre crop: the map has the image's size,
 * is in [0,1] and reaches both ends; the hot raw cell lands where the crop
 * box puts it. */
static void test_map_of_prepared(void **state)
{
    (void)state;
    chex_pipeline p;
    memset(&p, 0, sizeof p);
    p.spec.size = 224;
    p.ncrops = 1;
    assert_int_equal(chex_heatmap_raw_floats(&p), 49);
    chex_prepared pp;
    memset(&pp, 0, sizeof pp);
    pp.ncrops = 1;
    pp.image.width = 300;
    pp.image.height = 200;
    pp.display.width = 300;
    pp.display.height = 200;
    pp.crops[0] = (chex_pre_crop){50, 0, 250, 200, 0};
    float raw[49] = {0};
    raw[6] = 5.0f; /* top-right cell of the 7x7 map */
    char msg[128];
    float *map = chex_heatmap_map(&p, &pp, raw, msg, sizeof msg);
    assert_non_null(map);
    float lo = 1, hi = 0;
    int hx = -1, hy = -1;
    for (int y = 0; y < 200; y++)
        for (int x = 0; x < 300; x++) {
            float v = map[y * 300 + x];
            lo = v < lo ? v : lo;
            if (v > hi) {
                hi = v;
                hx = x;
                hy = y;
            }
        }
    assert_float_equal(lo, 0, 1e-6);
    assert_float_equal(hi, 1, 1e-6);
    /* hot cell centre: crop x in [200/7*6, 200) + 50 -> around 235, y around 14 */
    assert_true(hx >= 220 && hx < 250 && hy < 30);
    /* right margin (x >= 250) continues the crop's right edge */
    assert_float_equal(map[10 * 300 + 299], map[10 * 300 + 249], 1e-6);
    /* the same map drawn at half size (an image above max_overlay_side):
     * the hot cell lands at half the coordinates */
    pp.display.width = 150;
    pp.display.height = 100;
    float *half = chex_heatmap_map(&p, &pp, raw, msg, sizeof msg);
    assert_non_null(half);
    int bx = -1, by = -1;
    float best = -1;
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 150; x++)
            if (half[y * 150 + x] > best) {
                best = half[y * 150 + x];
                bx = x;
                by = y;
            }
    assert_true(abs(2 * bx - hx) <= 3 && abs(2 * by - hy) <= 3);
    free(half);
    free(map);
    pp.image.width = 0;
    assert_null(chex_heatmap_map(&p, &pp, raw, msg, sizeof msg));
}

static void test_json(void **state)
{
    (void)state;
    const uint8_t png[4] = {1, 2, 3, 4};
    json_t *j = chex_heatmap_json("Cardiomegaly", 4000, 3000, 2048, 1536, png, 4);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(s, "{\"label\":\"Cardiomegaly\",\"width\":4000,\"height\":3000,"
                           "\"overlay_width\":2048,\"overlay_height\":1536,"
                           "\"png_base64\":\"AQIDBA==\"}");
    free(s);
    json_decref(j);
}

static void test_write_files(void **state)
{
    (void)state;
    char dir[256];
    assert_int_equal(chex_test_tmpl(dir, sizeof dir, "chex_cam_test_", NULL), 0);
    assert_non_null(mkdtemp(dir));
    float pix[4] = {0.1f, 0.2f, 0.3f, 0.4f}, map[4] = {0, 0.25f, 0.5f, 1};
    chex_pre_display img = {.width = 2, .height = 2, .pix = pix};
    char msg[256];
    char written[2][4096];
    assert_int_equal(chex_heatmap_write_files(dir, "some/where/x ray.01.png", "No Finding", &img,
                                              map, written, msg, sizeof msg),
                     0);
    char gray[512], over[512];
    snprintf(gray, sizeof gray, "%s/x_ray.01.cam-No_Finding.png", dir);
    snprintf(over, sizeof over, "%s/x_ray.01.overlay-No_Finding.png", dir);
    assert_string_equal(written[0], gray);
    assert_string_equal(written[1], over);
    const char *paths[2] = {gray, over};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(paths[i], "rb");
        assert_non_null(f);
        uint8_t buf[4096];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        chex_pre_image back = decode(buf, n);
        assert_int_equal(back.width, 2);
        assert_int_equal(back.channels, i == 0 ? 1 : 3);
        chex_pre_image_free(&back);
        unlink(paths[i]);
    }
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir", dir);
    assert_int_equal(
        chex_heatmap_write_files(missing, "a.png", "L", &img, map, NULL, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "cannot write"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray_png_round_trip), cmocka_unit_test(test_overlay_png),
        cmocka_unit_test(test_inferno_table),       cmocka_unit_test(test_base64),
        cmocka_unit_test(test_parse_label),         cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_untrained_labels),
        cmocka_unit_test(test_map_of_prepared),     cmocka_unit_test(test_json),
        cmocka_unit_test(test_write_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
