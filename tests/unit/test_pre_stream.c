/* The streaming path (chex_pre_prepare: rows -> resampler, no full image)
 * against the reference path (chex_pre_decode's whole float image ->
 * chex_pre_tensor's naive resampler), on the real radiographs of tests/data
 * and derived 16-bit / interlaced / scaled-up ones, every preset, 1 and 3
 * channels, input right before a PROT_NONE page: bit-identical, except 16-bit
 * gray PNGs under minmax (raw values resampled, then mapped: within 1e-6 of a
 * [0,1] pixel, also for a narrow range far from 0). The display copy equals
 * the image's luminance, or its naive resample above max_overlay_side. */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/preprocess.h"
#include "preprocessing/resample.h"
#include "tests/unit/helpers/guard.h"
#include "tests/unit/helpers/testimg.h"

static const char *const PRESETS[4] = {"resize256-crop224", "tencrop", "resize224", "xrv"};

/* Compares both paths for every preset and channel count; returns the worst
 * difference in [0,1] units. */
static double compare(const char *name, const uint8_t *data, size_t len, int max_side)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, data, len), 0);
    chex_pre_opts opts = {.max_pixels = 50000000, .min_side = 8,
                          .png16_scaling = CHEX_PNG16_MINMAX, .max_overlay_side = max_side};
    chex_pre_image img;
    char msg[256];
    if (chex_pre_decode(g.data, g.len, &opts, &img, msg, sizeof msg) != CHEX_PRE_OK)
        fail_msg("%s: %s", name, msg);
    double worst = 0;
    for (int p = 0; p < 4; p++)
        for (int C = 1; C <= 3; C += 2) {
            chex_pre_spec spec = {.channels = C, .size = 224, .mean = {0.4f, 0.45f, 0.5f},
                                  .std = {0.25f, 0.2f, 0.3f}};
            snprintf(spec.preset, sizeof spec.preset, "%s", PRESETS[p]);
            size_t n = (size_t)chex_pre_ncrops(&spec) * (size_t)C * 224 * 224;
            float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
            assert_true(a && b);
            chex_pre_crop ca[10], cb[10];
            assert_int_equal(chex_pre_tensor(&img, &spec, a, ca, msg, sizeof msg), CHEX_PRE_OK);
            chex_pre_image meta;
            chex_pre_display disp;
            if (chex_pre_prepare(g.data, g.len, &opts, &spec, b, cb, &meta, &disp, msg,
                                 sizeof msg) != CHEX_PRE_OK)
                fail_msg("%s %s: %s", name, spec.preset, msg);
            assert_null(meta.pix);
            assert_int_equal(meta.width, img.width);
            assert_int_equal(meta.height, img.height);
            assert_int_equal(meta.channels, img.channels);
            assert_string_equal(meta.scaling, img.scaling);
            assert_memory_equal(ca, cb, (size_t)chex_pre_ncrops(&spec) * sizeof ca[0]);
            for (size_t k = 0; k < n; k++) {
                double d = fabs((double)a[k] - b[k]) * spec.std[(k / (224 * 224)) % C];
                worst = d > worst ? d : worst;
            }
            /* the display copy: gray (luminance) at the display size */
            size_t plane = (size_t)img.width * (size_t)img.height;
            float *gray = img.pix;
            if (img.channels == 3) {
                gray = malloc(plane * sizeof(float));
                assert_non_null(gray);
                for (size_t i = 0; i < plane; i++)
                    gray[i] = img.pix[i] * 0.299f + img.pix[plane + i] * 0.587f +
                              img.pix[2 * plane + i] * 0.114f;
            }
            int dw, dh;
            chex_pre_display_dims(&opts, img.width, img.height, &dw, &dh);
            assert_int_equal(disp.width, dw);
            assert_int_equal(disp.height, dh);
            assert_true(max_side <= 0 || (dw <= max_side && dh <= max_side));
            float *want = gray;
            if (dw != img.width || dh != img.height) {
                chex_pre_axis ax, ay;
                assert_int_equal(chex_pre_axis_torch_aa(&ax, img.width, dw), 0);
                assert_int_equal(chex_pre_axis_torch_aa(&ay, img.height, dh), 0);
                want = malloc((size_t)dw * dh * sizeof(float));
                float *tmp = malloc((size_t)img.width * sizeof(float));
                assert_true(want && tmp);
                chex_pre_resample_naive(want, gray, 1, plane, img.width, 0, 0, &ax, &ay, tmp);
                free(tmp);
                chex_pre_axis_free(&ax);
                chex_pre_axis_free(&ay);
            }
            for (size_t i = 0; i < (size_t)dw * dh; i++) {
                double d = fabs((double)want[i] - disp.pix[i]);
                worst = d > worst ? d : worst;
            }
            if (want != gray)
                free(want);
            if (gray != img.pix)
                free(gray);
            free(disp.pix);
            free(a);
            free(b);
        }
    chex_pre_image_free(&img);
    chex_guard_free(&g);
    return worst;
}

static double compare_file(const char *path)
{
    size_t len;
    uint8_t *b = chex_test_read_file(path, &len);
    if (!b)
        fail_msg("cannot read %s (run from the repository root)", path);
    double w = compare(path, b, len, 2048);
    free(b);
    return w;
}

static void test_real_radiographs_identical(void **state)
{
    (void)state;
    static const char *const files[] = {
        "tests/data/00000001_000.png", "tests/data/00000002_000.png",
        "tests/data/00000047_005.png", "tests/data/00013911_000.png",
        "tests/data/h0001.png",        "tests/data/16747_3_1.jpg",
        "tests/data/cr-mono1-10-chest.dcm", "tests/data/siim-pneumothorax-sample.dcm",
        "tests/data/dicom/cr_signed_minmax.dcm", "tests/data/dicom/cr_sigmoid.dcm",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        double w = compare_file(files[i]);
        if (w != 0.0)
            fail_msg("%s: streaming differs from the reference by %g", files[i], w);
    }
}

static void test_derived_images(void **state)
{
    (void)state;
    /* 2200 x 1000: the display copy is resampled to 2048 x 931 (both axes
     * downsampled, as for a full-size radiograph, at half its pixels) */
    float *g = chex_test_gray_of("tests/data/00000047_005.png", 2200, 1000);
    static const struct {
        int ctype, depth, interlace;
        int exact;
    } v[] = {
        {PNG_COLOR_TYPE_GRAY, 8, 0, 1},  {PNG_COLOR_TYPE_RGB, 16, 0, 1},
        {PNG_COLOR_TYPE_RGBA, 8, 1, 1},  {PNG_COLOR_TYPE_GRAY, 16, 1, 0},
        {PNG_COLOR_TYPE_GRAY, 16, 0, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        chex_test_membuf m = chex_test_make_png(g, 2200, 1000, v[i].ctype, v[i].depth,
                                                v[i].interlace);
        double w = compare("derived", m.buf, m.len, 2048);
        free(m.buf);
        if (v[i].exact ? w != 0.0 : w > 1e-6)
            fail_msg("ctype %d depth %d interlace %d: differs by %g", v[i].ctype, v[i].depth,
                     v[i].interlace, w);
    }
    free(g);
}

/* minmax on raw values is the worst case for "resample, then map": a narrow
 * range far from 0 (60000 .. 60100) */
static void test_minmax_narrow_range(void **state)
{
    (void)state;
    const int W = 700, H = 500;
    float *g = chex_test_gray_of("tests/data/00000002_000.png", W, H);
    uint8_t *raw = malloc((size_t)W * H * 2);
    assert_non_null(raw);
    for (size_t i = 0; i < (size_t)W * H; i++) {
        unsigned s = 60000u + (unsigned)lroundf(g[i] * 100.0f);
        raw[2 * i] = (uint8_t)(s >> 8);
        raw[2 * i + 1] = (uint8_t)s;
    }
    /* wrap the samples in a PNG through libpng's simplified API */
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = W;
    pi.height = H;
    pi.format = PNG_FORMAT_LINEAR_Y;
    uint16_t *lin = malloc((size_t)W * H * 2);
    assert_non_null(lin);
    for (size_t i = 0; i < (size_t)W * H; i++)
        lin[i] = (uint16_t)(raw[2 * i] << 8 | raw[2 * i + 1]);
    png_alloc_size_t n = 0;
    assert_true(png_image_write_get_memory_size(pi, n, 0, lin, 0, NULL));
    uint8_t *png = malloc(n);
    assert_non_null(png);
    assert_true(png_image_write_to_memory(&pi, png, &n, 0, lin, 0, NULL));
    double w = compare("narrow 16-bit", png, n, 0);
    print_message("16-bit minmax 60000..60100: streaming vs reference %.3g\n", w);
    assert_true(w <= 1e-4);
    free(png);
    free(lin);
    free(raw);
    free(g);
}

/* The engines themselves: any axis pair, streamed rows == whole planes. */
static void test_engines_agree(void **state)
{
    (void)state;
    static const int sizes[][4] = {{640, 480, 224, 224}, {100, 37, 300, 5}, {1, 9, 3, 2},
                                   {513, 2, 7, 7},       {31, 700, 31, 224}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int W = sizes[t][0], H = sizes[t][1], ow = sizes[t][2], oh = sizes[t][3];
        float *src = malloc((size_t)2 * W * H * sizeof(float));
        assert_non_null(src);
        for (size_t i = 0; i < (size_t)2 * W * H; i++)
            src[i] = (float)((i * 2654435761u) % 1000u) / 999.0f;
        chex_pre_axis ax, ay;
        assert_int_equal(chex_pre_axis_torch_aa(&ax, W, ow), 0);
        assert_int_equal(chex_pre_axis_torch_aa(&ay, H, oh), 0);
        float *a = malloc((size_t)2 * ow * oh * sizeof(float)),
              *b = malloc((size_t)2 * ow * oh * sizeof(float));
        float *tmp = malloc((size_t)W * sizeof(float));
        assert_true(a && b && tmp);
        chex_pre_resample_naive(a, src, 2, (size_t)W * H, W, 0, 0, &ax, &ay, tmp);
        chex_pre_stream st;
        assert_int_equal(chex_pre_stream_init(&st, &ax, &ay, 2, 0, 0, b), 0);
        for (int y = 0; y < H; y++) {
            const float *pl[2] = {src + (size_t)y * W, src + (size_t)W * H + (size_t)y * W};
            assert_false(chex_pre_stream_done(&st));
            chex_pre_stream_push(&st, y, pl);
        }
        assert_true(chex_pre_stream_done(&st));
        assert_memory_equal(a, b, (size_t)2 * ow * oh * sizeof(float));
        chex_pre_stream_free(&st);
        chex_pre_axis_free(&ax);
        chex_pre_axis_free(&ay);
        free(a);
        free(b);
        free(tmp);
        free(src);
    }
}


/* live: the most outputs one input row is summed into at once, checked
 * against a brute force over the table (every pair i < k of outputs that are
 * open together: k starts before i ends) for downscales, upscales, odd
 * ratios and 1-sample axes. */
static void test_axis_live(void **state)
{
    (void)state;
    static const int io[][2] = {{3000, 256}, {2500, 307}, {7071, 256}, {100, 256}, {1, 224},
                                {224, 1},    {37, 300},   {513, 7},    {256, 256}, {9, 2},
                                {4096, 2048}, {31, 224}};
    for (size_t t = 0; t < sizeof io / sizeof io[0]; t++) {
        chex_pre_axis a;
        assert_int_equal(chex_pre_axis_torch_aa(&a, io[t][0], io[t][1]), 0);
        int want = 1;
        for (int i = 0; i < a.out; i++) {
            if (a.count[i] == 0)
                continue;
            int last = a.first[i] + a.count[i] - 1;
            for (int k = i + 1; k < a.out; k++) {
                assert_true(a.first[k] >= a.first[k - 1]);
                if (a.count[k] > 0 && a.first[k] <= last && k - i + 1 > want)
                    want = k - i + 1;
            }
        }
        assert_int_equal(a.live, want);
        assert_int_equal(chex_pre_axis_torch_aa_live(io[t][0], io[t][1]), want);
        chex_pre_axis_free(&a);
    }
}

/* The height pass's AVX-512 step equals the plain loop bit for bit, for
 * every tail length (the dispatch falls back to it without AVX-512). */
static void test_vrow_matches_scalar(void **state)
{
    (void)state;
    enum { N = 83 };
    float row[N], a[N], b[N];
    for (int n = 0; n <= N; n++) {
        for (int x = 0; x < N; x++) {
            row[x] = (float)(((x + 7) * 2654435761u) % 4096u) / 4095.0f;
            a[x] = b[x] = -1.0f;
        }
        const float w[3] = {0.0371f, 0.3312f, 0.0419f};
        for (int j = 0; j < 3; j++) {
            chex_pre_vrow(a, row, w[j], n, j == 0);
            chex_pre_vrow_scalar(b, row, w[j], n, j == 0);
            for (int x = 0; x < N; x++)
                row[x] = row[x] * 0.75f + 0.125f;
        }
        assert_memory_equal(a, b, sizeof a); /* including untouched a[n..] */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_axis_live),
        cmocka_unit_test(test_vrow_matches_scalar),
        cmocka_unit_test(test_engines_agree),
        cmocka_unit_test(test_real_radiographs_identical),
        cmocka_unit_test(test_derived_images),
        cmocka_unit_test(test_minmax_narrow_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
