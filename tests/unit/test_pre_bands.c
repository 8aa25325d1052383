/* Large DICOM frames resampled in bands of rows on several threads
 * (chex_pre_rows_banded, opts.threads) give bit for bit what one thread
 * gives: the tensors, crop boxes and display copy of chex_pre_prepare with 2,
 * 3 and 4 threads against 1, for every preset, on real radiographs made
 * into DICOM of odd detector-like sizes (12-bit MONOCHROME2 min..max,
 * MONOCHROME1 windowed at high bits, signed 16-bit rescaled with and without
 * a sigmoid window, 8-bit, and the JPEG-LS and
 * JPEG 2000 radiographs of tests/data/dicom-compressed), with no display,
 * a scaled display and a full-size one. Then chex_pre_rows_banded itself on
 * small odd images cut into 1..8 bands on 1..3 threads (bands thinner than
 * the filter),
 * against the row-by-row path; the band count rules; the probe's bytes. */
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
#include "preprocessing/stream.h"
#include "tests/unit/helpers/guard.h"
#include "tests/unit/helpers/testimg.h"

static const char *const PRESETS[4] = {"resize256-crop224", "tencrop", "resize224", "xrv"};

static chex_pre_spec spec_for(int p, int C)
{
    chex_pre_spec spec = {.channels = C, .size = 224, .mean = {0.4f, 0.45f, 0.5f},
                          .std = {0.25f, 0.2f, 0.3f}};
    if (p == 3) { /* torchxrayvision's [-1024, 1024] */
        for (int c = 0; c < 3; c++) {
            spec.mean[c] = 0.5f;
            spec.std[c] = 1.0f / 2048.0f;
        }
    }
    snprintf(spec.preset, sizeof spec.preset, "%s", PRESETS[p]);
    return spec;
}

/* A real radiograph (gray, [0,1]), nearest-resampled to w x h. */
static float *radiograph(const char *path, int w, int h)
{
    size_t len;
    uint8_t *b = chex_test_read_file(path, &len);
    if (!b)
        fail_msg("cannot read %s (run from the repository root)", path);
    chex_pre_opts o = {.max_pixels = 1u << 26, .min_side = 1};
    chex_pre_image img;
    char msg[128];
    assert_int_equal(chex_pre_decode(b, len, &o, &img, msg, sizeof msg), CHEX_PRE_OK);
    float *g = malloc((size_t)w * (size_t)h * sizeof(float));
    assert_non_null(g);
    size_t plane = (size_t)img.width * (size_t)img.height;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)(y * img.height / h) * img.width + (size_t)(x * img.width / w);
            float v = img.pix[i];
            if (img.channels == 3)
                v = v * 0.299f + img.pix[plane + i] * 0.587f + img.pix[2 * plane + i] * 0.114f;
            g[(size_t)y * w + x] = v;
        }
    chex_pre_image_free(&img);
    free(b);
    return g;
}

/* ---- chex_pre_prepare: threads 2, 3, 4 against 1 ---- */

typedef struct {
    float *out;
    chex_pre_crop crops[10];
    chex_pre_image meta;
    chex_pre_display disp;
} result;

static void prepare(const chex_guard_buf *g, const chex_pre_spec *spec, int threads,
                    int max_side, int want_display, result *r)
{
    chex_pre_opts opts = {.max_pixels = 50000000, .min_side = 8,
                          .png16_scaling = CHEX_PNG16_MINMAX, .max_overlay_side = max_side,
                          .threads = threads};
    size_t n = (size_t)chex_pre_ncrops(spec) * (size_t)spec->channels * 224 * 224;
    r->out = malloc(n * sizeof(float));
    assert_non_null(r->out);
    char msg[256];
    if (chex_pre_prepare(g->data, g->len, &opts, spec, r->out, r->crops, &r->meta,
                         want_display ? &r->disp : NULL, msg, sizeof msg) != CHEX_PRE_OK)
        fail_msg("%s, %d threads: %s", spec->preset, threads, msg);
}

/* light: the slow compressed decoders, only resize256-crop224 with a scaled
 * display and xrv with a full-size one, 2 and 4 threads. */
static void compare_threads(const char *name, const uint8_t *data, size_t len, int light)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, data, len), 0);
    for (int p = 0; p < 4; p++)
        for (int dm = 0; dm < 3; dm++) {
            /* no display; scaled to 512; the image's own size (xrv only) */
            if ((dm == 2 && p != 3) || (light && !((p == 0 && dm == 1) || (p == 3 && dm == 2))))
                continue;
            int want_display = dm > 0, max_side = dm == 1 ? 512 : 0;
            chex_pre_spec spec = spec_for(p, p == 1 ? 3 : 1);
            size_t n = (size_t)chex_pre_ncrops(&spec) * (size_t)spec.channels * 224 * 224;
            result one;
            prepare(&g, &spec, 1, max_side, want_display, &one);
            if (p == 0 && dm == 0)
                assert_true(chex_pre_band_count(4, one.meta.width, one.meta.height) > 4);
            for (int t = 2; t <= 4; t += light ? 2 : 1) {
                result many;
                prepare(&g, &spec, t, max_side, want_display, &many);
                if (memcmp(one.out, many.out, n * sizeof(float)) != 0)
                    fail_msg("%s %s display %d: %d threads differ from 1", name, spec.preset,
                             dm, t);
                assert_memory_equal(one.crops, many.crops,
                                    (size_t)chex_pre_ncrops(&spec) * sizeof one.crops[0]);
                assert_string_equal(one.meta.scaling, many.meta.scaling);
                assert_int_equal(one.meta.width, many.meta.width);
                if (want_display) {
                    assert_int_equal(one.disp.width, many.disp.width);
                    assert_int_equal(one.disp.height, many.disp.height);
                    assert_memory_equal(one.disp.pix, many.disp.pix,
                                        (size_t)one.disp.width * (size_t)one.disp.height *
                                            sizeof(float));
                    free(many.disp.pix);
                }
                free(many.out);
            }
            if (want_display)
                free(one.disp.pix);
            free(one.out);
        }
    chex_guard_free(&g);
}

/* Stored values from gray g: lo + g * span, rounded. */
static int32_t *stored(const float *g, size_t n, double lo, double span)
{
    int32_t *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (int32_t)lround(lo + (double)g[i] * span);
    return v;
}

static void test_native(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        chex_test_dicom d;
        double lo, span;
    } v[] = {
        {"12-bit mono2 minmax", {.bits_allocated = 16, .bits_stored = 12, .high_bit = 11,
                                 .photometric = "MONOCHROME2"}, 300, 3300},
        {"12-bit mono1 window, high bits", {.bits_allocated = 16, .bits_stored = 12,
                                            .high_bit = 15, .photometric = "MONOCHROME1",
                                            .window_center = 2000, .window_width = 3000},
         0, 4095},
        {"signed 16 rescale minmax", {.bits_allocated = 16, .bits_stored = 16, .high_bit = 15,
                                      .is_signed = 1, .photometric = "MONOCHROME2",
                                      .slope = 0.5, .intercept = -1024},
         -20000, 40000},
        {"signed 16 rescale sigmoid", {.bits_allocated = 16, .bits_stored = 16, .high_bit = 15,
                                       .is_signed = 1, .photometric = "MONOCHROME1",
                                       .slope = 0.5, .intercept = -1024,
                                       .window_center = -3000, .window_width = 8000,
                                       .voi_function = "SIGMOID"},
         -20000, 40000},
        {"8-bit window exact", {.bits_allocated = 8, .bits_stored = 8, .high_bit = 7,
                                .photometric = "MONOCHROME2", .window_center = 120,
                                .window_width = 180, .voi_function = "LINEAR_EXACT"},
         0, 255},
    };
    /* landscape and portrait odd sizes over a megapixel: xrv's square is
     * off both the left and the top */
    static const int sizes[2][2] = {{1237, 1051}, {1031, 1263}};
    for (int s = 0; s < 2; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        float *g = radiograph(s ? "tests/data/00000001_000.png" : "tests/data/h0001.png", w, h);
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            if (s == 1 && i % 2 == 1)
                continue; /* half the variants at the second size */
            chex_test_dicom d = v[i].d;
            d.w = w;
            d.h = h;
            int32_t *vals = stored(g, (size_t)w * (size_t)h, v[i].lo, v[i].span);
            chex_test_membuf m = chex_test_make_dicom(&d, vals);
            char name[96];
            snprintf(name, sizeof name, "%s %dx%d", v[i].name, w, h);
            compare_threads(name, m.buf, m.len, 0);
            free(m.buf);
            free(vals);
        }
        free(g);
    }
}

static void test_compressed(void **state)
{
    (void)state;
    static const char *const files[] = {
        "tests/data/dicom-compressed/RG2_JLSL.dcm", /* JPEG-LS 2140x1760, window */
        "tests/data/dicom-compressed/RG3_J2KR.dcm", /* JPEG 2000 1760x1760 MONOCHROME1 */
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        uint8_t *b = chex_test_read_file(files[i], &len);
        if (!b)
            fail_msg("cannot read %s (run from the repository root)", files[i]);
        compare_threads(files[i], b, len, 1);
        free(b);
    }
}

/* ---- chex_pre_rows_banded itself: any band count, small images ---- */

typedef struct {
    const float *img;
    int w;
} img_rows;

static void img_row(void *ctx, int y, float *dst)
{
    const img_rows *ir = ctx;
    memcpy(dst, ir->img + (size_t)y * (size_t)ir->w, (size_t)ir->w * sizeof(float));
}

/* nb 0: row by row (next/commit); else chex_pre_rows_banded in nb bands on
 * nt threads. */
static void run_rows(const float *img, int w, int h, const chex_pre_spec *spec, int want_display,
                     int max_side, int nb, int nt, float *out, chex_pre_crop *crops,
                     chex_pre_display *disp)
{
    chex_pre_rows r;
    memset(&r, 0, sizeof r);
    r.spec = spec;
    r.display = want_display ? disp : NULL;
    r.max_display_side = max_side;
    r.out = out;
    r.crops = crops;
    char msg[256];
    if (chex_pre_rows_begin(&r, w, h, 1, msg, sizeof msg) != CHEX_PRE_OK)
        fail_msg("%dx%d %s: %s", w, h, spec->preset, msg);
    if (nb == 0) {
        for (int y = 0; y < h; y++) {
            memcpy(chex_pre_rows_next(&r)[0], img + (size_t)y * w, (size_t)w * sizeof(float));
            chex_pre_rows_commit(&r);
        }
    } else {
        img_rows ir = {img, w};
        if (chex_pre_rows_banded(&r, nb, nt, img_row, &ir, msg, sizeof msg) != CHEX_PRE_OK)
            fail_msg("%dx%d %s %d bands: %s", w, h, spec->preset, nb, msg);
    }
    chex_pre_rows_finish(&r, 0, 0.0f, 0.0f);
    chex_pre_rows_free(&r);
}

static void test_rows_banded(void **state)
{
    (void)state;
    static const int sizes[][2] = {{97, 61}, {61, 97}, {300, 37}, {37, 300},
                                   {230, 229}, {50, 40}, {640, 480}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        float *img = radiograph("tests/data/00000047_005.png", w, h);
        for (int p = 0; p < 4; p++)
            for (int C = 1; C <= (p == 3 ? 3 : 1); C += 2) /* C matters to xrv only */
                for (int dm = 0; dm < 3; dm++) {
                    chex_pre_spec spec = spec_for(p, C);
                    int max_side = dm == 1 ? 45 : 0;
                    size_t n = (size_t)chex_pre_ncrops(&spec) * (size_t)C * 224 * 224;
                    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
                    assert_true(a && b);
                    chex_pre_crop ca[10], cb[10];
                    chex_pre_display da = {0}, db = {0};
                    run_rows(img, w, h, &spec, dm > 0, max_side, 0, 1, a, ca, &da);
                    for (int nb = 1; nb <= 9; nb += 1 + nb / 4) {
                        run_rows(img, w, h, &spec, dm > 0, max_side, nb, 1 + nb % 3, b, cb, &db);
                        if (memcmp(a, b, n * sizeof(float)) != 0)
                            fail_msg("%dx%d %s C %d display %d: %d bands differ", w, h,
                                     spec.preset, C, dm, nb);
                        assert_memory_equal(ca, cb, (size_t)chex_pre_ncrops(&spec) * sizeof ca[0]);
                        if (dm > 0) {
                            assert_int_equal(da.width, db.width);
                            assert_int_equal(da.height, db.height);
                            assert_memory_equal(da.pix, db.pix, (size_t)da.width *
                                                                    (size_t)da.height *
                                                                    sizeof(float));
                            free(db.pix);
                        }
                    }
                    free(da.pix);
                    free(a);
                    free(b);
                }
        free(img);
    }
}

static void test_rows_banded_refuses(void **state)
{
    (void)state;
    chex_pre_spec spec = spec_for(2, 1);
    chex_pre_rows r;
    memset(&r, 0, sizeof r);
    r.spec = &spec;
    float out[224 * 224];
    r.out = out;
    char msg[128];
    assert_int_equal(chex_pre_rows_begin(&r, 64, 64, 3, msg, sizeof msg), CHEX_PRE_OK);
    float img[64 * 64] = {0};
    img_rows ir = {img, 64};
    assert_int_equal(chex_pre_rows_banded(&r, 2, 2, img_row, &ir, msg, sizeof msg),
                     CHEX_PRE_ERR_ARG); /* three channels */
    chex_pre_rows_free(&r);
    memset(&r, 0, sizeof r);
    r.spec = &spec;
    r.out = out;
    assert_int_equal(chex_pre_rows_begin(&r, 64, 64, 1, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(chex_pre_rows_banded(&r, 0, 2, img_row, &ir, msg, sizeof msg),
                     CHEX_PRE_ERR_ARG);
    assert_int_equal(chex_pre_rows_banded(&r, 2, 0, img_row, &ir, msg, sizeof msg),
                     CHEX_PRE_ERR_ARG);
    assert_int_equal(chex_pre_rows_banded(&r, CHEX_PRE_MAX_BANDS + 1, 2, img_row, &ir, msg,
                                          sizeof msg),
                     CHEX_PRE_ERR_ARG);
    chex_pre_rows_free(&r);
}

/* ---- how many bands, and what they cost ---- */

static void test_band_count(void **state)
{
    (void)state;
    const int k = CHEX_PRE_BANDS_PER_THREAD;
    assert_int_equal(chex_pre_band_count(0, 3000, 2500), 1);
    assert_int_equal(chex_pre_band_count(1, 3000, 2500), 1);
    assert_int_equal(chex_pre_band_count(2, 3000, 2500), 2 * k);
    assert_int_equal(chex_pre_band_count(8, 3000, 2500), 8 * k);
    assert_int_equal(chex_pre_band_count(64, 3000, 2500), 2500 / CHEX_PRE_BAND_MIN_ROWS);
    assert_int_equal(chex_pre_band_count(1000, 30000, 30000), CHEX_PRE_MAX_BANDS);
    assert_int_equal(chex_pre_band_count(4, 1023, 1024), 1); /* under a megapixel */
    assert_int_equal(chex_pre_band_count(2, 1024, 1024), 2 * k);
    assert_int_equal(chex_pre_band_count(64, 8192, 130), 2); /* 64 rows a band at least */
    assert_int_equal(chex_pre_band_count(4, 16384, 64), 1);
}

static void test_probe_bytes(void **state)
{
    (void)state;
    int w = 1237, h = 1051;
    int32_t *vals = calloc((size_t)w * (size_t)h, sizeof *vals);
    assert_non_null(vals);
    chex_test_dicom d = {.w = w, .h = h, .bits_allocated = 16, .bits_stored = 12,
                         .high_bit = 11, .photometric = "MONOCHROME2"};
    chex_test_membuf m = chex_test_make_dicom(&d, vals);
    for (int p = 0; p < 4; p++) {
        chex_pre_spec spec = spec_for(p, 1);
        chex_pre_opts o1 = {.max_pixels = 50000000, .min_side = 8, .max_overlay_side = 512,
                            .threads = 1},
                      o4 = o1;
        o4.threads = 4;
        chex_pre_probe_info i1, i4;
        char msg[128];
        assert_int_equal(chex_pre_probe(m.buf, m.len, &o1, &spec, &i1, msg, sizeof msg),
                         CHEX_PRE_OK);
        assert_int_equal(chex_pre_probe(m.buf, m.len, &o4, &spec, &i4, msg, sizeof msg),
                         CHEX_PRE_OK);
        assert_int_equal(i4.decode_bytes - i1.decode_bytes,
                         chex_pre_rows_band_bytes(&spec, w, h, 512, chex_pre_band_count(4, w, h)));
        assert_true(i4.decode_bytes > i1.decode_bytes);
        assert_int_equal(i4.display_bytes, i1.display_bytes);
    }
    free(m.buf);
    free(vals);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_band_count),
        cmocka_unit_test(test_rows_banded_refuses),
        cmocka_unit_test(test_rows_banded),
        cmocka_unit_test(test_native),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_probe_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
