/* Bad input to chex_pre_decode: every case gets its own error code and a
 * non-empty message, never a crash; inputs sit right before a PROT_NONE page.
 * PNGs are assembled here chunk by chunk (zlib) so each defect is exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <cmocka.h>

#include "preprocessing/decoders.h"
#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"

static const chex_pre_opts opts = {.max_pixels = 50000000, .min_side = 16,
                                   .png16_scaling = CHEX_PNG16_MINMAX};

typedef struct {
    uint8_t data[1 << 16];
    size_t len;
    size_t idat_at; /* offset of the first IDAT chunk's data */
    size_t text_at; /* offset of the tEXt chunk's data, 0 if none */
} pngbuf;

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t chunk(pngbuf *b, const char *type, const uint8_t *data, uint32_t n)
{
    assert_true(b->len + n + 12 <= sizeof b->data);
    uint8_t *p = b->data + b->len;
    put32(p, n);
    memcpy(p + 4, type, 4);
    if (n)
        memcpy(p + 8, data, n);
    put32(p + 8 + n, (uint32_t)crc32(0, p + 4, n + 4));
    b->len += n + 12;
    return (size_t)(p + 8 - b->data);
}

/* An 8-bit gray PNG w x h with a gradient; with_text adds a tEXt chunk. */
static void make_png(pngbuf *b, uint32_t w, uint32_t h, uint32_t rows_written, int with_text)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    memset(b, 0, sizeof *b);
    memcpy(b->data, sig, 8);
    b->len = 8;
    uint8_t ihdr[13] = {0};
    put32(ihdr, w);
    put32(ihdr + 4, h);
    ihdr[8] = 8; /* depth */
    chunk(b, "IHDR", ihdr, 13);
    if (with_text) {
        static const char text[] = "Comment\0synthetic test image";
        b->text_at = chunk(b, "tEXt", (const uint8_t *)text, sizeof text - 1);
    }
    static uint8_t raw[20000], z[20000];
    size_t rl = 0;
    for (uint32_t y = 0; y < rows_written && rl + w + 1 <= sizeof raw; y++) {
        raw[rl++] = 0;
        for (uint32_t x = 0; x < w; x++)
            raw[rl++] = (uint8_t)(x * 3 + y);
    }
    uLongf zl = sizeof z;
    assert_int_equal(compress(z, &zl, raw, rl), Z_OK);
    b->idat_at = chunk(b, "IDAT", z, (uint32_t)zl);
    chunk(b, "IEND", NULL, 0);
}

/* Decodes buf[0..len) from a guard buffer; asserts the code and a message. */
static void expect(const uint8_t *buf, size_t len, const chex_pre_opts *o, chex_pre_err want,
                   const char *what)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, buf, len), 0);
    chex_pre_image img;
    memset(&img, 0xAB, sizeof img);
    char msg[256];
    memset(msg, 'x', sizeof msg);
    chex_pre_err e = chex_pre_decode(len ? g.data : NULL, len, o, &img, msg, sizeof msg);
    if (e != want)
        fail_msg("%s: got %s (%s), expected %s", what, chex_pre_strerror(e),
                 memchr(msg, 0, sizeof msg) ? msg : "?", chex_pre_strerror(want));
    assert_non_null(memchr(msg, 0, sizeof msg));
    if (want == CHEX_PRE_OK) {
        assert_non_null(img.pix);
        chex_pre_image_free(&img);
    } else {
        assert_true(strlen(msg) > 0);
        assert_null(img.pix);
    }
    chex_guard_free(&g);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int i = 0; i < CHEX_PRE_ERR_COUNT; i++) {
        const char *m = chex_pre_strerror((chex_pre_err)i);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(m, chex_pre_strerror((chex_pre_err)j));
    }
    assert_true(strlen(chex_pre_strerror(CHEX_PRE_ERR_COUNT)) > 0);
    assert_true(strlen(chex_pre_strerror((chex_pre_err)-1)) > 0);
}

static void test_empty_and_unknown(void **state)
{
    (void)state;
    expect((const uint8_t *)"", 0, &opts, CHEX_PRE_ERR_EMPTY, "empty");
    expect((const uint8_t *)"hello, world", 12, &opts, CHEX_PRE_ERR_FORMAT, "text");
    expect((const uint8_t *)"GIF89a\x01\x00\x01\x00", 10, &opts, CHEX_PRE_ERR_FORMAT, "gif");
    expect((const uint8_t *)"\x89PNG\r\n\x1a", 7, &opts, CHEX_PRE_ERR_FORMAT, "7-byte sig");
    expect((const uint8_t *)"\xff\xd8", 2, &opts, CHEX_PRE_ERR_FORMAT, "2-byte soi");
    chex_pre_image img;
    char msg[64];
    assert_int_equal(chex_pre_decode((const uint8_t *)"x", 1, NULL, &img, msg, sizeof msg),
                     CHEX_PRE_ERR_ARG);
    chex_pre_opts bad = opts;
    bad.png16_scaling = (chex_png16_scaling)7;
    expect((const uint8_t *)"hello", 5, &bad, CHEX_PRE_ERR_ARG, "bad png16_scaling");
}

static void test_png_valid_baseline(void **state)
{
    (void)state;
    pngbuf b;
    make_png(&b, 40, 30, 30, 1);
    expect(b.data, b.len, &opts, CHEX_PRE_OK, "valid png");
}

static void test_png_truncated(void **state)
{
    (void)state;
    pngbuf b;
    make_png(&b, 40, 30, 30, 1);
    size_t cuts[] = {8, 12, 20, 24, 32, 33, 40, b.idat_at, b.idat_at + 10, b.len / 2,
                     b.len - 13, b.len - 12, b.len - 4, b.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "png cut at %zu of %zu", cuts[i], b.len);
        expect(b.data, cuts[i], &opts, CHEX_PRE_ERR_MALFORMED, what);
    }
}

static void test_png_crc_and_stream(void **state)
{
    (void)state;
    pngbuf b;
    make_png(&b, 40, 30, 30, 1);
    uint8_t *c = malloc(b.len);
    assert_non_null(c);
    /* bad CRC on IHDR (critical), tEXt (ancillary), IDAT (data) */
    size_t spots[] = {8 + 8 + 2, b.text_at + 3, b.idat_at + 5};
    for (size_t i = 0; i < 3; i++) {
        memcpy(c, b.data, b.len);
        c[spots[i]] ^= 0x01;
        expect(c, b.len, &opts, CHEX_PRE_ERR_MALFORMED, "crc error");
    }
    /* correct CRC but fewer image rows than IHDR promises */
    pngbuf s;
    make_png(&s, 40, 30, 10, 0);
    expect(s.data, s.len, &opts, CHEX_PRE_ERR_MALFORMED, "short zlib stream");
    free(c);
}

static void test_png_zero_and_huge(void **state)
{
    (void)state;
    pngbuf b;
    make_png(&b, 0, 30, 30, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_ERR_UNUSABLE, "zero width");
    make_png(&b, 40, 0, 0, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_ERR_UNUSABLE, "zero height");
    /* decompression bomb: the header alone must be rejected (a 10^10-pixel
     * buffer cannot be allocated here, and the IDAT holds only a few rows) */
    make_png(&b, 100000, 100000, 1, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_ERR_TOO_LARGE, "100000x100000");
    make_png(&b, 0x7fffffff, 0x7fffffff, 0, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_ERR_TOO_LARGE, "2^31-1 square");
    /* unlimited max_pixels still has a hard ceiling */
    chex_pre_opts o = opts;
    o.max_pixels = 0;
    make_png(&b, 100000, 100000, 1, 0);
    expect(b.data, b.len, &o, CHEX_PRE_ERR_TOO_LARGE, "100000x100000 max_pixels 0");
    make_png(&b, 15, 300, 300, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_ERR_UNUSABLE, "15 px wide, min_side 16");
    make_png(&b, 16, 16, 16, 0);
    expect(b.data, b.len, &opts, CHEX_PRE_OK, "16x16");
}

/* A gradient JPEG (caller tjFree()s). */
static uint8_t *make_jpeg(int w, int h, int pf, int subsamp, int flags, unsigned long *len)
{
    int ps = tjPixelSize[pf];
    uint8_t *px = malloc((size_t)w * (size_t)h * (size_t)ps);
    assert_non_null(px);
    for (int i = 0; i < w * h * ps; i++)
        px[i] = (uint8_t)((i / ps % w) * 2 + (i / ps / w) + (i % ps) * 40);
    tjhandle tj = tjInitCompress();
    assert_non_null(tj);
    uint8_t *jpeg = NULL;
    *len = 0;
    assert_int_equal(tjCompress2(tj, px, w, 0, h, pf, &jpeg, len, subsamp, 90, flags), 0);
    tjDestroy(tj);
    free(px);
    return jpeg;
}

static void test_jpeg_bad(void **state)
{
    (void)state;
    unsigned long len;
    uint8_t *j = make_jpeg(64, 48, TJPF_RGB, TJSAMP_420, 0, &len);
    expect(j, len, &opts, CHEX_PRE_OK, "valid jpeg");
    expect(j, 3, &opts, CHEX_PRE_ERR_MALFORMED, "jpeg SOI only");
    size_t cuts[] = {4, 20, 100, len / 2, len - 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "jpeg cut at %zu of %lu", cuts[i], len);
        expect(j, cuts[i], &opts, CHEX_PRE_ERR_MALFORMED, what);
    }
    /* garbage in the entropy-coded data */
    uint8_t *c = malloc(len);
    assert_non_null(c);
    memcpy(c, j, len);
    for (size_t i = len * 2 / 3; i < len * 2 / 3 + 40; i++)
        c[i] = (uint8_t)(i * 37);
    c[len * 2 / 3] = 0xFF;
    c[len * 2 / 3 + 1] = 0xD0 + 5; /* a restart marker where none belongs */
    expect(c, len, &opts, CHEX_PRE_ERR_MALFORMED, "corrupt entropy data");
    /* header bomb: SOF0 claims 65000 x 65000 */
    memcpy(c, j, len);
    size_t sof = 0;
    for (size_t i = 2; i + 8 < len; i++)
        if (c[i] == 0xFF && c[i + 1] == 0xC0) {
            sof = i;
            break;
        }
    assert_true(sof > 0);
    c[sof + 5] = 0xFD;
    c[sof + 6] = 0xE8; /* height 65000 */
    c[sof + 7] = 0xFD;
    c[sof + 8] = 0xE8; /* width 65000 */
    expect(c, len, &opts, CHEX_PRE_ERR_TOO_LARGE, "jpeg 65000x65000 header");
    /* 12-bit samples (extended sequential) and lossless frames: read, not decodable */
    memcpy(c, j, len);
    c[sof + 1] = 0xC1;
    c[sof + 4] = 12;
    expect(c, len, &opts, CHEX_PRE_ERR_UNSUPPORTED, "12-bit jpeg");
    memcpy(c, j, len);
    c[sof + 1] = 0xC3;
    expect(c, len, &opts, CHEX_PRE_ERR_UNSUPPORTED, "lossless jpeg");
    free(c);
    tjFree(j);
    /* too small */
    j = make_jpeg(15, 40, TJPF_GRAY, TJSAMP_GRAY, 0, &len);
    expect(j, len, &opts, CHEX_PRE_ERR_UNUSABLE, "15 px wide jpeg");
    tjFree(j);
    /* CMYK is a JPEG we do not read */
    j = make_jpeg(32, 32, TJPF_CMYK, TJSAMP_444, 0, &len);
    expect(j, len, &opts, CHEX_PRE_ERR_UNSUPPORTED, "cmyk jpeg");
    tjFree(j);
}

static void test_tensor_bad_args(void **state)
{
    (void)state;
    float pix[32 * 32] = {0}, out[3 * 16 * 16];
    chex_pre_image img = {.width = 32, .height = 32, .channels = 1, .pix = pix};
    chex_pre_spec spec = {.channels = 3, .size = 16, .preset = "resize256-crop224",
                          .mean = {0.5f, 0.5f, 0.5f}, .std = {0.2f, 0.2f, 0.2f}};
    char msg[128];
    assert_int_equal(chex_pre_tensor(&img, &spec, out, NULL, msg, sizeof msg), CHEX_PRE_OK);
    chex_pre_spec s = spec;
    snprintf(s.preset, sizeof s.preset, "resize300");
    assert_int_equal(chex_pre_ncrops(&s), 0);
    assert_int_equal(chex_pre_tensor(&img, &s, out, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    assert_true(strlen(msg) > 0);
    s = spec;
    s.std[1] = 0.0f;
    assert_int_equal(chex_pre_tensor(&img, &s, out, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    s = spec;
    s.channels = 2;
    assert_int_equal(chex_pre_tensor(&img, &s, out, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    s = spec;
    s.size = 0;
    assert_int_equal(chex_pre_tensor(&img, &s, out, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    chex_pre_image none = {0};
    assert_int_equal(chex_pre_tensor(&none, &spec, out, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    assert_int_equal(chex_pre_tensor(&img, &spec, NULL, NULL, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    /* a 20000 x 1 line: 18 px high (size 16) would make it 18 x 360000 */
    chex_pre_image strip = {.width = 32, .height = 1, .channels = 1, .pix = pix};
    assert_int_equal(chex_pre_tensor(&strip, &spec, out, NULL, msg, sizeof msg), CHEX_PRE_OK);
    static float row[100000];
    chex_pre_image line = {.width = 20000, .height = 1, .channels = 1, .pix = row};
    assert_int_equal(chex_pre_tensor(&line, &spec, out, NULL, msg, sizeof msg),
                     CHEX_PRE_ERR_UNUSABLE);
    assert_true(strlen(msg) > 0);
    /* 1 x 100000 to 224 x 224: the width pass alone would hold 100000 x 224 */
    static float big[3 * 224 * 224];
    chex_pre_image tall = {.width = 1, .height = 100000, .channels = 1, .pix = row};
    s = spec;
    s.size = 224;
    snprintf(s.preset, sizeof s.preset, "resize224");
    assert_int_equal(chex_pre_tensor(&tall, &s, big, NULL, msg, sizeof msg),
                     CHEX_PRE_ERR_UNUSABLE);
    tall.height = 5000;
    assert_int_equal(chex_pre_tensor(&tall, &s, big, NULL, msg, sizeof msg), CHEX_PRE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_empty_and_unknown),
        cmocka_unit_test(test_png_valid_baseline),
        cmocka_unit_test(test_png_truncated),
        cmocka_unit_test(test_png_crc_and_stream),
        cmocka_unit_test(test_png_zero_and_huge),
        cmocka_unit_test(test_jpeg_bad),
        cmocka_unit_test(test_tensor_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
