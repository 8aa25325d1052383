/* chex_pre_probe: the header alone gives the same verdict as decoding for
 * every header-time error and the same geometry for every image that
 * decodes, on every file of tests/data (PNG, JPEG, DICOM and the DICOM
 * variants), each placed right before a PROT_NONE page; and the crafted
 * headers name what is wrong. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"

static const chex_pre_spec SPEC = {.channels = 3, .size = 224, .preset = "resize256-crop224",
                                   .mean = {0.485f, 0.456f, 0.406f},
                                   .std = {0.229f, 0.224f, 0.225f}};
static const chex_pre_opts OPTS = {.max_pixels = 50000000, .min_side = 8,
                                   .png16_scaling = CHEX_PNG16_MINMAX, .max_overlay_side = 2048};

static int header_time(chex_pre_err e)
{
    return e == CHEX_PRE_ERR_EMPTY || e == CHEX_PRE_ERR_FORMAT || e == CHEX_PRE_ERR_TOO_LARGE ||
           e == CHEX_PRE_ERR_UNUSABLE || e == CHEX_PRE_ERR_UNSUPPORTED;
}

static int check_file(const char *path)
{
    size_t len = 0;
    uint8_t *raw = chex_test_read_file(path, &len);
    if (!raw)
        fail_msg("cannot read %s (run from the repository root)", path);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
    chex_pre_probe_info info;
    char pmsg[256], dmsg[256];
    chex_pre_err pe = chex_pre_probe(g.data, g.len, &OPTS, &SPEC, &info, pmsg, sizeof pmsg);
    float *out = malloc(3 * 224 * 224 * sizeof(float));
    assert_non_null(out);
    chex_pre_image meta;
    chex_pre_err de =
        chex_pre_prepare(g.data, g.len, &OPTS, &SPEC, out, NULL, &meta, NULL, dmsg, sizeof dmsg);
    if (de == CHEX_PRE_OK) {
        if (pe != CHEX_PRE_OK)
            fail_msg("%s decodes but the probe says %s (%s)", path, chex_pre_strerror(pe), pmsg);
        assert_string_equal(info.format, meta.format);
        assert_int_equal(info.width, meta.width);
        assert_int_equal(info.height, meta.height);
        assert_int_equal(info.channels, meta.channels);
        assert_int_equal(info.bit_depth, meta.bit_depth);
        assert_true(info.frames >= 1);
        assert_true(info.decode_bytes >= 3 * 224 * 224 * sizeof(float));
        int dw, dh;
        chex_pre_display_dims(&OPTS, meta.width, meta.height, &dw, &dh);
        assert_true(info.display_bytes >= (uint64_t)dw * (uint64_t)dh * sizeof(float));
    } else if (header_time(de)) {
        if (pe != de)
            fail_msg("%s: decode says %s (%s), the probe %s (%s)", path, chex_pre_strerror(de),
                     dmsg, chex_pre_strerror(pe), pmsg);
        assert_true(pmsg[0] != '\0');
    } else if (pe != CHEX_PRE_OK && pe != de) {
        fail_msg("%s: decode says %s, the probe %s", path, chex_pre_strerror(de),
                 chex_pre_strerror(pe));
    }
    free(out);
    chex_guard_free(&g);
    free(raw);
    return de == CHEX_PRE_OK;
}

static void check_dir(const char *dir, int *files, int *ok)
{
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || (strcmp(dot, ".png") && strcmp(dot, ".jpg") && strcmp(dot, ".dcm")))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        *ok += check_file(path);
        (*files)++;
    }
    closedir(d);
}

static void test_probe_agrees_with_decode(void **state)
{
    (void)state;
    int files = 0, ok = 0;
    check_dir("tests/data", &files, &ok);
    check_dir("tests/data/dicom", &files, &ok);
    assert_true(files >= 50);
    printf("%d files, %d decode\n", files, ok);
    assert_true(ok >= 25 && ok < files); /* both kinds are exercised */
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A PNG signature and IHDR (valid CRC), nothing else. */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h, int depth, int ctype, int interlace)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    memcpy(b, sig, 8);
    put32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32(b + 16, w);
    put32(b + 20, h);
    b[24] = (uint8_t)depth;
    b[25] = (uint8_t)ctype;
    b[26] = b[27] = 0;
    b[28] = (uint8_t)interlace;
    put32(b + 29, (uint32_t)crc32(crc32(0, NULL, 0), b + 12, 17));
    return 33;
}

static chex_pre_err probe(const uint8_t *b, size_t n, chex_pre_probe_info *info, char *msg)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, b, n), 0);
    chex_pre_err e = chex_pre_probe(n ? g.data : NULL, n, &OPTS, &SPEC, info, msg, 256);
    chex_guard_free(&g);
    return e;
}

static void test_crafted_headers(void **state)
{
    (void)state;
    uint8_t b[64] = {0};
    chex_pre_probe_info info;
    char msg[256];
    assert_int_equal(probe(b, 0, &info, msg), CHEX_PRE_ERR_EMPTY);
    memcpy(b, "GIF89a", 6);
    assert_int_equal(probe(b, 6, &info, msg), CHEX_PRE_ERR_FORMAT);

    size_t n = png_header(b, 8000, 7000, 16, 6, 1);
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_ERR_TOO_LARGE);
    assert_non_null(strstr(msg, "8000x7000"));
    n = png_header(b, 4000, 3000, 16, 6, 1);
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_OK);
    assert_string_equal(info.format, "png");
    assert_int_equal(info.interlaced, 1);
    assert_int_equal(info.channels, 3);
    assert_int_equal(info.bit_depth, 16);
    /* Adam7 keeps the whole 16-bit RGBA image: 8 bytes a pixel */
    assert_true(info.decode_bytes >= 4000ull * 3000ull * 8ull);
    assert_true(info.decode_bytes < 4000ull * 3000ull * 8ull + (8u << 20));
    /* the display copy is scaled to 2048 x 1536 */
    assert_true(info.display_bytes >= 2048ull * 1536ull * 4ull &&
                info.display_bytes <= 2048ull * 1536ull * 4ull + 4096);
    n = png_header(b, 4000, 3000, 16, 6, 0);
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_OK);
    assert_int_equal(info.interlaced, 0);
    assert_true(info.decode_bytes < (8u << 20)); /* rows, not the image */
    n = png_header(b, 0, 3000, 8, 0, 0);
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_ERR_UNUSABLE);
    n = png_header(b, 3000, 10, 8, 0, 0);
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_ERR_UNUSABLE);
    n = png_header(b, 3000, 3000, 8, 0, 0);
    b[30] ^= 1; /* CRC */
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_ERR_MALFORMED);
    assert_int_equal(probe(b, 20, &info, msg), CHEX_PRE_ERR_MALFORMED);
    n = png_header(b, 3000, 3000, 16, 3, 0); /* palette cannot be 16-bit */
    assert_int_equal(probe(b, n, &info, msg), CHEX_PRE_ERR_MALFORMED);

    /* JPEG: SOI, SOF2 (progressive) 12-bit, then a 8-bit one */
    uint8_t j[] = {0xFF, 0xD8, 0xFF, 0xC2, 0, 11, 12, 0x0B, 0xB8, 0x0F, 0xA0, 1, 1, 0x11, 0};
    assert_int_equal(probe(j, sizeof j, &info, msg), CHEX_PRE_ERR_UNSUPPORTED);
    j[6] = 8;
    assert_int_equal(probe(j, sizeof j, &info, msg), CHEX_PRE_OK);
    assert_int_equal(info.width, 4000);
    assert_int_equal(info.height, 3000);
    assert_int_equal(info.channels, 1);
    /* progressive: the whole image's coefficients, 2 bytes a pixel */
    assert_true(info.decode_bytes >= 4000ull * 3000ull * 2ull);
    j[3] = 0xC3; /* lossless */
    assert_int_equal(probe(j, sizeof j, &info, msg), CHEX_PRE_ERR_UNSUPPORTED);
    assert_int_equal(probe(j, 4, &info, msg), CHEX_PRE_ERR_MALFORMED);

    chex_pre_spec bad = SPEC;
    snprintf(bad.preset, sizeof bad.preset, "nope");
    assert_int_equal(chex_pre_probe(j, sizeof j, &OPTS, &bad, &info, msg, sizeof msg),
                     CHEX_PRE_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_agrees_with_decode),
        cmocka_unit_test(test_crafted_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
