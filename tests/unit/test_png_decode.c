/* PNG decoding: every colour type and depth gives the documented floats.
 * Files are written here with libpng's writer and decoded from guard-page
 * buffers (a read past len faults). */
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/decoders.h"
#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"

typedef struct {
    uint8_t *data;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep d, size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->data = realloc(m->data, m->cap);
        assert_non_null(m->data);
    }
    memcpy(m->data + m->len, d, n);
    m->len += n;
}

static void mem_flush(png_structp png)
{
    (void)png;
}

typedef struct {
    int w, h, depth, ctype, interlace;
    const unsigned *samples; /* h * w * channels, as stored (palette indices for type 3) */
    const png_color *pal;
    int npal;
    const uint8_t *trns;
    int ntrns;
    int sbit; /* 0: no sBIT chunk */
} png_desc;

/* Writes the described PNG into memory (caller frees). */
static uint8_t *make_png(const png_desc *d, size_t *len)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng write failed");
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, d->w, d->h, d->depth, d->ctype,
                 d->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (d->pal)
        png_set_PLTE(png, info, d->pal, d->npal);
    if (d->trns)
        png_set_tRNS(png, info, d->trns, d->ntrns, NULL);
    if (d->sbit) {
        png_color_8 sb = {0};
        sb.gray = (png_byte)d->sbit;
        png_set_sBIT(png, info, &sb);
    }
    png_write_info(png, info);
    if (d->depth < 8)
        png_set_packing(png);
    int ch = d->ctype == PNG_COLOR_TYPE_GRAY || d->ctype == PNG_COLOR_TYPE_PALETTE ? 1
             : d->ctype == PNG_COLOR_TYPE_GRAY_ALPHA                               ? 2
             : d->ctype == PNG_COLOR_TYPE_RGB                                      ? 3
                                                                                   : 4;
    size_t bps = d->depth == 16 ? 2 : 1;
    size_t rowlen = (size_t)d->w * (size_t)ch * bps;
    uint8_t *rows = calloc((size_t)d->h, rowlen);
    assert_non_null(rows);
    for (int y = 0; y < d->h; y++)
        for (int i = 0; i < d->w * ch; i++) {
            unsigned v = d->samples[(size_t)y * (size_t)(d->w * ch) + (size_t)i];
            uint8_t *p = rows + (size_t)y * rowlen + (size_t)i * bps;
            if (bps == 2) {
                p[0] = (uint8_t)(v >> 8);
                p[1] = (uint8_t)v;
            } else {
                p[0] = (uint8_t)v;
            }
        }
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < d->h; y++)
            png_write_row(png, rows + (size_t)y * rowlen);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *len = m.len;
    return m.data;
}

static const chex_pre_opts opts_default = {.max_pixels = 1000000, .min_side = 1,
                                           .png16_scaling = CHEX_PNG16_MINMAX};

/* Decodes d from a guard buffer with opts; expects OK. */
static void decode_ok(const png_desc *d, const chex_pre_opts *opts, chex_pre_image *img)
{
    size_t len;
    uint8_t *png = make_png(d, &len);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, png, len), 0);
    char msg[200] = "x";
    chex_pre_err e = chex_pre_decode(g.data, g.len, opts, img, msg, sizeof msg);
    if (e != CHEX_PRE_OK)
        fail_msg("decode: %s (%s)", chex_pre_strerror(e), msg);
    assert_string_equal(img->format, "png");
    assert_int_equal(img->width, d->w);
    assert_int_equal(img->height, d->h);
    assert_int_equal(img->bit_depth, d->depth);
    chex_guard_free(&g);
    free(png);
}

static void expect_pix(const chex_pre_image *img, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (img->pix[i] != want[i])
            fail_msg("pixel %zu: %.9g, expected %.9g", i, (double)img->pix[i], (double)want[i]);
}

static void test_gray_low_depths(void **state)
{
    (void)state;
    for (int depth = 1; depth <= 8; depth *= 2) {
        unsigned maxv = (1u << depth) - 1, s[5 * 3];
        float want[5 * 3];
        for (int i = 0; i < 15; i++) {
            s[i] = (unsigned)(i * 7) % (maxv + 1);
            want[i] = (float)s[i] / (float)maxv;
        }
        for (int il = 0; il < 2; il++) {
            png_desc d = {5, 3, depth, PNG_COLOR_TYPE_GRAY, il, s, NULL, 0, NULL, 0, 0};
            chex_pre_image img;
            decode_ok(&d, &opts_default, &img);
            assert_int_equal(img.channels, 1);
            char sc[16];
            snprintf(sc, sizeof sc, "%dbit", depth);
            assert_string_equal(img.scaling, sc);
            expect_pix(&img, want, 15);
            chex_pre_image_free(&img);
        }
    }
}

static const unsigned g16[6] = {1014, 4000, 2000, 3000, 1014, 2507};

static void test_gray16_minmax(void **state)
{
    (void)state;
    png_desc d = {3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g16, NULL, 0, NULL, 0, 0};
    chex_pre_image img;
    decode_ok(&d, &opts_default, &img);
    assert_string_equal(img.scaling, "minmax");
    float want[6];
    for (int i = 0; i < 6; i++)
        want[i] = (float)(g16[i] - 1014) / 2986.0f;
    expect_pix(&img, want, 6);
    assert_true(img.pix[0] == 0.0f && img.pix[1] == 1.0f);
    chex_pre_image_free(&img);
}

static void test_gray16_sbit(void **state)
{
    (void)state;
    chex_pre_opts o = opts_default;
    o.png16_scaling = CHEX_PNG16_SBIT;
    png_desc d = {3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, g16, NULL, 0, NULL, 0, 12};
    chex_pre_image img;
    decode_ok(&d, &o, &img);
    assert_string_equal(img.scaling, "sbit");
    float want[6];
    for (int i = 0; i < 6; i++)
        want[i] = (float)g16[i] / 4095.0f;
    expect_pix(&img, want, 6);
    chex_pre_image_free(&img);

    /* 10 significant bits but values above 1023: clamped to 1 */
    d.sbit = 10;
    decode_ok(&d, &o, &img);
    assert_true(img.pix[0] == 1014.0f / 1023.0f);
    assert_true(img.pix[1] == 1.0f);
    chex_pre_image_free(&img);

    /* no sBIT chunk: falls back to minmax and says so */
    d.sbit = 0;
    decode_ok(&d, &o, &img);
    assert_string_equal(img.scaling, "minmax");
    assert_true(img.pix[1] == 1.0f && img.pix[0] == 0.0f);
    chex_pre_image_free(&img);
}

static void test_gray16_full_and_constant(void **state)
{
    (void)state;
    chex_pre_opts o = opts_default;
    o.png16_scaling = CHEX_PNG16_FULL;
    png_desc d = {3, 2, 16, PNG_COLOR_TYPE_GRAY, 1, g16, NULL, 0, NULL, 0, 0};
    chex_pre_image img;
    decode_ok(&d, &o, &img);
    assert_string_equal(img.scaling, "full");
    float want[6];
    for (int i = 0; i < 6; i++)
        want[i] = (float)g16[i] / 65535.0f;
    expect_pix(&img, want, 6);
    chex_pre_image_free(&img);

    const unsigned flat[6] = {3000, 3000, 3000, 3000, 3000, 3000};
    png_desc c = {3, 2, 16, PNG_COLOR_TYPE_GRAY, 0, flat, NULL, 0, NULL, 0, 0};
    decode_ok(&c, &opts_default, &img);
    assert_string_equal(img.scaling, "minmax");
    for (int i = 0; i < 6; i++)
        assert_true(img.pix[i] == 0.0f);
    chex_pre_image_free(&img);
}

static void test_gray_alpha_drops_alpha(void **state)
{
    (void)state;
    const unsigned s8[4] = {10, 255, 200, 0}; /* (gray, alpha) x 2 */
    png_desc d = {2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, s8, NULL, 0, NULL, 0, 0};
    chex_pre_image img;
    decode_ok(&d, &opts_default, &img);
    assert_int_equal(img.channels, 1);
    const float want[2] = {10.0f / 255.0f, 200.0f / 255.0f};
    expect_pix(&img, want, 2);
    chex_pre_image_free(&img);

    const unsigned s16[4] = {1000, 65535, 3000, 0};
    png_desc d16 = {2, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0, s16, NULL, 0, NULL, 0, 0};
    decode_ok(&d16, &opts_default, &img);
    assert_int_equal(img.channels, 1);
    const float w16[2] = {0.0f, 1.0f};
    expect_pix(&img, w16, 2);
    chex_pre_image_free(&img);
}

static void test_rgb_rgba(void **state)
{
    (void)state;
    /* 2x2 pixels: planar output must be R plane, G plane, B plane */
    const unsigned rgb[12] = {1, 2, 3, 40, 50, 60, 70, 80, 90, 255, 0, 128};
    const unsigned rgba[16] = {1, 2, 3, 0, 40, 50, 60, 9, 70, 80, 90, 99, 255, 0, 128, 255};
    float want[12];
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 4; p++)
            want[c * 4 + p] = (float)rgb[p * 3 + c] / 255.0f;
    for (int il = 0; il < 2; il++) {
        png_desc d = {2, 2, 8, PNG_COLOR_TYPE_RGB, il, rgb, NULL, 0, NULL, 0, 0};
        chex_pre_image img;
        decode_ok(&d, &opts_default, &img);
        assert_int_equal(img.channels, 3);
        assert_string_equal(img.scaling, "8bit");
        expect_pix(&img, want, 12);
        chex_pre_image_free(&img);
        png_desc da = {2, 2, 8, PNG_COLOR_TYPE_RGB_ALPHA, il, rgba, NULL, 0, NULL, 0, 0};
        decode_ok(&da, &opts_default, &img);
        assert_int_equal(img.channels, 3);
        expect_pix(&img, want, 12);
        chex_pre_image_free(&img);
    }
    unsigned rgb16[12], rgba16[16];
    float w16[12];
    for (int i = 0; i < 12; i++)
        rgb16[i] = rgb[i] * 256u + (unsigned)i;
    for (int p = 0; p < 4; p++) {
        for (int c = 0; c < 3; c++) {
            rgba16[p * 4 + c] = rgb16[p * 3 + c];
            w16[c * 4 + p] = (float)rgb16[p * 3 + c] / 65535.0f;
        }
        rgba16[p * 4 + 3] = 1234;
    }
    png_desc d16 = {2, 2, 16, PNG_COLOR_TYPE_RGB, 1, rgb16, NULL, 0, NULL, 0, 0};
    chex_pre_image img;
    decode_ok(&d16, &opts_default, &img);
    assert_string_equal(img.scaling, "full");
    expect_pix(&img, w16, 12);
    chex_pre_image_free(&img);
    png_desc da16 = {2, 2, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, rgba16, NULL, 0, NULL, 0, 0};
    decode_ok(&da16, &opts_default, &img);
    expect_pix(&img, w16, 12);
    chex_pre_image_free(&img);
}

static void test_palette(void **state)
{
    (void)state;
    const png_color pal[4] = {{0, 0, 0}, {255, 0, 10}, {20, 30, 40}, {200, 100, 50}};
    const unsigned idx[6] = {0, 1, 2, 3, 2, 1};
    const uint8_t trns[2] = {0, 128};
    float want[18];
    for (int p = 0; p < 6; p++) {
        want[p] = pal[idx[p]].red / 255.0f;
        want[6 + p] = pal[idx[p]].green / 255.0f;
        want[12 + p] = pal[idx[p]].blue / 255.0f;
    }
    for (int depth = 2; depth <= 8; depth *= 2)
        for (int t = 0; t < 2; t++)
            for (int il = 0; il < 2; il++) {
                png_desc d = {3, 2, depth, PNG_COLOR_TYPE_PALETTE, il, idx, pal, 4,
                              t ? trns : NULL, t ? 2 : 0, 0};
                chex_pre_image img;
                decode_ok(&d, &opts_default, &img);
                assert_int_equal(img.channels, 3);
                assert_string_equal(img.scaling, "8bit");
                expect_pix(&img, want, 18);
                chex_pre_image_free(&img);
            }
}

static void test_size_limits(void **state)
{
    (void)state;
    unsigned *s = calloc(64 * 64, sizeof *s);
    assert_non_null(s);
    chex_pre_opts o = {.max_pixels = 64 * 63, .min_side = 64};
    png_desc d = {64, 63, 8, PNG_COLOR_TYPE_GRAY, 0, s, NULL, 0, NULL, 0, 0};
    size_t len;
    uint8_t *png = make_png(&d, &len);
    chex_pre_image img;
    char msg[200];
    /* 63 < min_side */
    assert_int_equal(chex_pre_decode(png, len, &o, &img, msg, sizeof msg), CHEX_PRE_ERR_UNUSABLE);
    assert_true(strlen(msg) > 0);
    assert_null(img.pix);
    /* exactly max_pixels is fine */
    o.min_side = 63;
    assert_int_equal(chex_pre_decode(png, len, &o, &img, msg, sizeof msg), CHEX_PRE_OK);
    chex_pre_image_free(&img);
    o.max_pixels = 64 * 63 - 1;
    assert_int_equal(chex_pre_decode(png, len, &o, &img, msg, sizeof msg), CHEX_PRE_ERR_TOO_LARGE);
    assert_true(strlen(msg) > 0);
    assert_null(img.pix);
    free(png);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray_low_depths),
        cmocka_unit_test(test_gray16_minmax),
        cmocka_unit_test(test_gray16_sbit),
        cmocka_unit_test(test_gray16_full_and_constant),
        cmocka_unit_test(test_gray_alpha_drops_alpha),
        cmocka_unit_test(test_rgb_rgba),
        cmocka_unit_test(test_palette),
        cmocka_unit_test(test_size_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
