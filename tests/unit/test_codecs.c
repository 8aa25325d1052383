/* tests/unit/test_codecs.c - the compressed-frame decoders of preprocessing/codecs.h
 * on frames placed right before a PROT_NONE page (guard.h): every decoder on a
 * real frame (the small frames of tests/fuzz/corpus, encoded by dcmtk, OpenJPEG
 * and libjpeg-tools from a crop of tests/data/cr-mono1-10-chest.dcm) gives the
 * same samples as the uncompressed crop; every truncation of each frame fails
 * cleanly (MALFORMED, never a read past the end); a buffer too small -> ARG;
 * PackBits by hand; inflate limits. Sample-exactness against dcmtk/OpenJPEG on
 * whole images is tests/reference/test_dicom_compressed.sh. Run from the
 * repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "preprocessing/codecs.h"
#include "preprocessing/dicom.h"
#include "tests/unit/helpers/guard.h"
#include "tests/unit/helpers/testimg.h"

#define CORPUS "tests/fuzz/corpus/"

typedef chex_pre_err (*probe_fn)(const uint8_t *, size_t, chex_codec_frame *, char *, size_t);
typedef chex_pre_err (*decode_fn)(uint16_t *, size_t, const uint8_t *, size_t,
                                  chex_codec_frame *, char *, size_t);

static uint8_t *load(const char *path, size_t *len)
{
    uint8_t *b = chex_test_read_file(path, len);
    if (!b)
        fail_msg("cannot read %s (run from the repository root)", path);
    return b;
}

/* Decodes path guarded; returns the samples (caller frees) and fills *f. */
static uint16_t *decode_file(const char *path, probe_fn probe, decode_fn decode,
                             chex_codec_frame *f)
{
    size_t len;
    uint8_t *raw = load(path, &len);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
    char msg[256];
    assert_int_equal(probe(g.data, g.len, f, msg, sizeof msg), CHEX_PRE_OK);
    size_t n = (size_t)f->width * (size_t)f->height * (size_t)f->spp;
    uint16_t *out = malloc(n * sizeof *out);
    assert_non_null(out);
    /* one sample short: ARG, nothing decoded */
    chex_codec_frame f2;
    assert_int_equal(decode(out, n - 1, g.data, g.len, &f2, msg, sizeof msg), CHEX_PRE_ERR_ARG);
    assert_int_equal(decode(out, n, g.data, g.len, &f2, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(f2.width, f->width);
    assert_int_equal(f2.height, f->height);
    /* every truncation (in steps, to stay fast) fails without reading past len
     * (into another buffer: a failed decode may have written some samples) */
    uint16_t *scratch = malloc(n * sizeof *scratch);
    assert_non_null(scratch);
    size_t step = len / 97 + 1;
    for (size_t cut = 0; cut < len - 2; cut += step) {
        chex_guard_buf t;
        assert_int_equal(chex_guard_alloc(&t, raw, cut), 0);
        msg[0] = '\0';
        chex_pre_err e = decode(scratch, n, t.data, t.len, &f2, msg, sizeof msg);
        if (e != CHEX_PRE_ERR_MALFORMED)
            fail_msg("%s cut at %zu of %zu: %d (%s)", path, cut, len, (int)e, msg);
        assert_true(strlen(msg) > 0);
        chex_guard_free(&t);
    }
    free(scratch);
    chex_guard_free(&g);
    free(raw);
    return out;
}

/* The 64x48 crop every corpus frame was made from, at its bit depth. */
static void crop(int bits, uint16_t *want)
{
    size_t len;
    uint8_t *raw = load(CORPUS "fuzz_rle/s16.rle", &len);
    /* s16 = crop*64 + 5, stored by dcmcrle: the 16-bit crop is itself lossless
     * (checked against the JPEG Lossless and JPEG-LS frames below) */
    chex_codec_frame f;
    char msg[256];
    uint16_t *c16 = malloc(64 * 48 * sizeof *c16);
    assert_non_null(c16);
    assert_int_equal(chex_rle_decode(c16, 64 * 48, raw + 4, len - 4, 64, 48, 1, 2, &f, msg,
                                     sizeof msg),
                     CHEX_PRE_OK);
    for (size_t i = 0; i < 64 * 48; i++) {
        unsigned v = (unsigned)(c16[i] - 5) / 64; /* the 10-bit crop */
        want[i] = (uint16_t)(bits == 16 ? c16[i] : bits == 10 ? v : v >> 2);
    }
    free(c16);
    free(raw);
}

static void check_equal(const char *path, probe_fn probe, decode_fn decode, int bits)
{
    chex_codec_frame f;
    uint16_t *got = decode_file(path, probe, decode, &f);
    assert_int_equal(f.width, 64);
    assert_int_equal(f.height, 48);
    assert_int_equal(f.spp, 1);
    uint16_t want[64 * 48];
    crop(bits, want);
    for (size_t i = 0; i < 64 * 48; i++)
        if (got[i] != want[i])
            fail_msg("%s: sample %zu is %u, want %u", path, i, got[i], want[i]);
    free(got);
}

static void test_jpeg_lossless(void **state)
{
    (void)state;
    static const char *const names[] = {"s8_sv1.jpg",  "s8_sv6.jpg",  "s8_sv7.jpg",
                                        "s8_restart.jpg", "s10_sv1.jpg", "s10_sv6.jpg",
                                        "s10_sv7.jpg", "s10_restart.jpg", "s16_sv1.jpg",
                                        "s16_sv6.jpg", "s16_sv7.jpg", "s16_restart.jpg"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, CORPUS "fuzz_jpegll/%s", names[i]);
        int bits = names[i][1] == '8' ? 8 : names[i][2] == '0' ? 10 : 16;
        check_equal(p, chex_jpegll_probe, chex_jpegll_decode, bits);
    }
}

static void test_jpegls(void **state)
{
    (void)state;
    check_equal(CORPUS "fuzz_jpegls/s8_lossless.jls", chex_jpegls_probe, chex_jpegls_decode, 8);
    check_equal(CORPUS "fuzz_jpegls/s10_lossless.jls", chex_jpegls_probe, chex_jpegls_decode, 10);
    check_equal(CORPUS "fuzz_jpegls/s16_lossless.jls", chex_jpegls_probe, chex_jpegls_decode, 16);
}

static void test_j2k(void **state)
{
    (void)state;
    check_equal(CORPUS "fuzz_j2k/s8_lossless.j2k", chex_j2k_probe, chex_j2k_decode, 8);
    check_equal(CORPUS "fuzz_j2k/s10_lossless.j2k", chex_j2k_probe, chex_j2k_decode, 10);
    check_equal(CORPUS "fuzz_j2k/s16_lossless.j2k", chex_j2k_probe, chex_j2k_decode, 16);
    check_equal(CORPUS "fuzz_j2k/s16_lossless.jp2", chex_j2k_probe, chex_j2k_decode, 16);
    /* HTJ2K (Part 15) codestreams of the same crop, made by OpenJPH's ojph_compress */
    check_equal(CORPUS "fuzz_j2k/s8_htj2k.j2c", chex_j2k_probe, chex_j2k_decode, 8);
    check_equal(CORPUS "fuzz_j2k/s16_htj2k.j2c", chex_j2k_probe, chex_j2k_decode, 16);
}

/* Crafted streams (crafted_* in the fuzz_jpegls and fuzz_j2k corpora, made
 * from the seeds next to them): each ends with the error it names (or
 * decodes, for a restart interval longer than the image), read guarded; none
 * loops, none allocates for what its header claims beyond the probe's frame. */
static const struct {
    const char *file;
    chex_pre_err probe, decode; /* decode: when the probe passes */
    const char *says;           /* in the message of the failing call */
} crafted[] = {
    {"fuzz_jpegls/crafted_no_eoi.jls", CHEX_PRE_ERR_MALFORMED, 0, "no EOI marker"},
    {"fuzz_jpegls/crafted_trunc_eoi.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED, "JPEG-LS stream data"},
    {"fuzz_jpegls/crafted_eoi_mid.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED, "JPEG-LS stream data"},
    {"fuzz_jpegls/crafted_big_header.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED, "JPEG-LS stream data"},
    {"fuzz_jpegls/crafted_too_short.jls", CHEX_PRE_ERR_MALFORMED, 0,
     "914 bytes cannot hold 30000 lines"},
    {"fuzz_jpegls/crafted_dri_huge.jls", CHEX_PRE_OK, CHEX_PRE_OK, NULL},
    {"fuzz_jpegls/crafted_dri_one.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED, "restart"},
    {"fuzz_jpegls/crafted_no_scan.jls", CHEX_PRE_ERR_MALFORMED, 0, "End Of Image"},
    {"fuzz_jpegls/crafted_ff_fill.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED, "JPEG-LS stream data"},
    {"fuzz_jpegls/crafted_ones_fill.jls", CHEX_PRE_OK, CHEX_PRE_ERR_MALFORMED,
     "JPEG-LS stream data"},
    {"fuzz_j2k/crafted_tiles65535.j2k", CHEX_PRE_ERR_UNSUPPORTED, 0, "65535 tiles"},
    {"fuzz_j2k/crafted_tiles65535.jp2", CHEX_PRE_ERR_UNSUPPORTED, 0, "65535 tiles"},
    {"fuzz_j2k/crafted_tiles1025.j2k", CHEX_PRE_ERR_UNSUPPORTED, 0, "1025 tiles"},
    {"fuzz_j2k/crafted_tiles1024.j2k", CHEX_PRE_OK, CHEX_PRE_OK, NULL},
};

static void test_crafted(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof crafted / sizeof crafted[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, CORPUS "%s", crafted[i].file);
        int j2k = strstr(p, "fuzz_j2k/") != NULL;
        probe_fn probe = j2k ? chex_j2k_probe : chex_jpegls_probe;
        decode_fn decode = j2k ? chex_j2k_decode : chex_jpegls_decode;
        size_t len;
        uint8_t *raw = load(p, &len);
        chex_guard_buf g;
        assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
        free(raw);
        char msg[256] = "";
        chex_codec_frame f;
        chex_pre_err e = probe(g.data, g.len, &f, msg, sizeof msg), want = crafted[i].probe;
        if (e == CHEX_PRE_OK && want == CHEX_PRE_OK) {
            size_t n = (size_t)f.width * (size_t)f.height * (size_t)f.spp;
            uint16_t *out = malloc(n * sizeof *out);
            assert_non_null(out);
            e = decode(out, n, g.data, g.len, &f, msg, sizeof msg);
            want = crafted[i].decode;
            free(out);
        }
        if (e != want)
            fail_msg("%s: %d, want %d (%s)", p, (int)e, (int)want, msg);
        if (crafted[i].says && !strstr(msg, crafted[i].says))
            fail_msg("%s: message \"%s\" does not say \"%s\"", p, msg, crafted[i].says);
        chex_guard_free(&g);
    }
    /* a restart interval longer than the image changes nothing */
    chex_codec_frame f1, f2;
    uint16_t *a = decode_file(CORPUS "fuzz_jpegls/shared_crmono1_jls_near2.bin",
                              chex_jpegls_probe, chex_jpegls_decode, &f1);
    uint16_t *b = decode_file(CORPUS "fuzz_jpegls/crafted_dri_huge.jls", chex_jpegls_probe,
                              chex_jpegls_decode, &f2);
    assert_memory_equal(a, b, (size_t)f1.width * (size_t)f1.height * sizeof *a);
    free(a);
    free(b);
    /* the tile count is read from SIZ, raw or in JP2's jp2c box */
    size_t len;
    uint8_t *raw = load(CORPUS "fuzz_j2k/s16_lossless.jp2", &len);
    assert_int_equal(chex_j2k_tiles(raw, len), 1);
    assert_int_equal(chex_j2k_tiles(raw, 40), 0);
    free(raw);
}

static void test_rle_packbits(void **state)
{
    (void)state;
    /* 3x2, 8-bit, 1 sample: literal run of 2, repeat of 3, no-op, literal 1 */
    uint8_t fr[64 + 8];
    memset(fr, 0, sizeof fr);
    fr[0] = 1;
    fr[4] = 64;
    const uint8_t seg[8] = {0x01, 10, 20, 0xFE, 30, 0x80, 0x00, 40};
    memcpy(fr + 64, seg, sizeof seg);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, fr, sizeof fr), 0);
    uint16_t out[6];
    chex_codec_frame f;
    char msg[256];
    assert_int_equal(chex_rle_decode(out, 6, g.data, g.len, 3, 2, 1, 1, &f, msg, sizeof msg),
                     CHEX_PRE_OK);
    const uint16_t want[6] = {10, 20, 30, 30, 30, 40};
    assert_memory_equal(out, want, sizeof want);
    /* one byte fewer: the last literal is missing */
    chex_guard_buf t;
    assert_int_equal(chex_guard_alloc(&t, fr, sizeof fr - 1), 0);
    assert_int_equal(chex_rle_decode(out, 6, t.data, t.len, 3, 2, 1, 1, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    assert_non_null(strstr(msg, "RLE"));
    /* segment count disagreeing with the samples; offset outside the frame */
    assert_int_equal(chex_rle_decode(out, 6, g.data, g.len, 3, 2, 1, 2, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    fr[4] = 200;
    chex_guard_buf o;
    assert_int_equal(chex_guard_alloc(&o, fr, sizeof fr), 0);
    assert_int_equal(chex_rle_decode(out, 6, o.data, o.len, 3, 2, 1, 1, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    chex_guard_free(&o);
    chex_guard_free(&t);
    chex_guard_free(&g);
}

static void test_rle_real(void **state)
{
    (void)state;
    static const char *const names[] = {"s8.rle", "s10.rle", "s16.rle"};
    for (int k = 0; k < 3; k++) {
        char p[256];
        snprintf(p, sizeof p, CORPUS "fuzz_rle/%s", names[k]);
        size_t len;
        uint8_t *raw = load(p, &len);
        int bytes = k == 0 ? 1 : 2;
        chex_guard_buf g;
        assert_int_equal(chex_guard_alloc(&g, raw + 4, len - 4), 0);
        uint16_t out[64 * 48], want[64 * 48];
        chex_codec_frame f;
        char msg[256];
        assert_int_equal(
            chex_rle_decode(out, 64 * 48, g.data, g.len, 64, 48, 1, bytes, &f, msg, sizeof msg),
            CHEX_PRE_OK);
        crop(k == 0 ? 8 : k == 1 ? 10 : 16, want);
        assert_memory_equal(out, want, sizeof want);
        for (size_t cut = 64; cut < g.len; cut += 37) {
            chex_guard_buf t;
            assert_int_equal(chex_guard_alloc(&t, raw + 4, cut), 0);
            assert_int_equal(chex_rle_decode(out, 64 * 48, t.data, t.len, 64, 48, 1, bytes, &f,
                                             msg, sizeof msg),
                             CHEX_PRE_ERR_MALFORMED);
            chex_guard_free(&t);
        }
        chex_guard_free(&g);
        free(raw);
    }
}

static void test_inflate(void **state)
{
    (void)state;
    /* 1 MiB of zeros: fits a 2 MiB limit, not a 100 kB one (a deflate bomb) */
    size_t n = 1u << 20;
    uint8_t *zeros = calloc(n, 1);
    uint8_t z[4096];
    z_stream s;
    memset(&s, 0, sizeof s);
    assert_int_equal(deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    s.next_in = zeros;
    s.avail_in = (uInt)n;
    s.next_out = z;
    s.avail_out = sizeof z;
    assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
    size_t zlen = sizeof z - s.avail_out;
    deflateEnd(&s);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, z, zlen), 0);
    uint8_t *out = NULL;
    size_t outlen = 0;
    char msg[256];
    assert_int_equal(chex_deflate_inflate(g.data, g.len, 2u << 20, &out, &outlen, msg, sizeof msg),
                     CHEX_PRE_OK);
    assert_int_equal(outlen, n);
    assert_memory_equal(out, zeros, n);
    free(out);
    assert_int_equal(chex_deflate_inflate(g.data, g.len, 100000, &out, &outlen, msg, sizeof msg),
                     CHEX_PRE_ERR_TOO_LARGE);
    assert_null(out);
    for (size_t cut = 0; cut < zlen; cut++) {
        chex_guard_buf t;
        assert_int_equal(chex_guard_alloc(&t, z, cut), 0);
        assert_int_equal(chex_deflate_inflate(t.data, t.len, 2u << 20, &out, &outlen, msg,
                                              sizeof msg),
                         CHEX_PRE_ERR_MALFORMED);
        assert_null(out);
        chex_guard_free(&t);
    }
    /* the size alone, and the head, through the same guarded input */
    size_t sz = 0, got = 0;
    assert_int_equal(chex_deflate_size(g.data, g.len, 2u << 20, &sz, msg, sizeof msg),
                     CHEX_PRE_OK);
    assert_int_equal(sz, n);
    assert_int_equal(chex_deflate_size(g.data, g.len, n - 1, &sz, msg, sizeof msg),
                     CHEX_PRE_ERR_TOO_LARGE);
    assert_non_null(strstr(msg, "inflates to more than"));
    uint8_t head[1000];
    memset(head, 0xAA, sizeof head);
    assert_int_equal(chex_deflate_head(g.data, g.len, head, sizeof head, &got, msg, sizeof msg),
                     CHEX_PRE_OK);
    assert_int_equal(got, sizeof head);
    assert_memory_equal(head, zeros, sizeof head);
    chex_guard_free(&g);
    free(zeros);
}

/* A deflate bomb made by the test helper really inflates to what it says
 * (so the tests refusing it refuse a real bomb). */
static void test_inflate_bomb(void **state)
{
    (void)state;
    chex_test_membuf m =
        chex_test_deflate_bomb("tests/data/dicom-compressed/crmono1_deflate.dcm", 5u << 20);
    chex_dicom_info d;
    char msg[256];
    assert_int_equal(chex_dicom_parse(m.buf, m.len, &d, msg, sizeof msg), CHEX_PRE_OK);
    uint8_t *out = NULL;
    size_t n = 0;
    assert_int_equal(chex_deflate_inflate(m.buf + d.dataset_offset, m.len - d.dataset_offset,
                                          64u << 20, &out, &n, msg, sizeof msg),
                     CHEX_PRE_OK);
    assert_true(n > (5u << 20));
    for (size_t i = n - (5u << 20); i < n; i++)
        if (out[i])
            fail_msg("bomb byte %zu is %d", i, out[i]);
    free(out);
    free(m.buf);
}

static void test_not_streams(void **state)
{
    (void)state;
    const uint8_t junk[16] = {0xFF, 0xD8, 0xFF, 0xC0, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, junk, sizeof junk), 0);
    chex_codec_frame f;
    char msg[256];
    /* a baseline (SOF0) stream is not process 14 */
    assert_int_equal(chex_jpegll_probe(g.data, g.len, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    assert_non_null(strstr(msg, "JPEG Lossless"));
    assert_int_equal(chex_jpegls_probe(g.data, g.len, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    assert_non_null(strstr(msg, "JPEG-LS"));
    assert_int_equal(chex_j2k_probe(g.data, g.len, &f, msg, sizeof msg), CHEX_PRE_ERR_MALFORMED);
    assert_non_null(strstr(msg, "JPEG 2000"));
    assert_int_equal(chex_j2k_probe(g.data, 0, &f, msg, sizeof msg), CHEX_PRE_ERR_MALFORMED);
    assert_int_equal(chex_jpegll_probe(g.data, 0, &f, msg, sizeof msg), CHEX_PRE_ERR_MALFORMED);
    chex_guard_free(&g);
    /* a process-14 SOF3 of width 0 (found by fuzz_jpegll): refused, never a
     * 0-pixel frame */
    const uint8_t sof3_w0[] = {0xFF, 0xD8, 0xFF, 0xC3, 0, 11, 8, 0, 16, 0, 0, 1, 1, 0x11, 0,
                               0xFF, 0xD9};
    assert_int_equal(chex_guard_alloc(&g, sof3_w0, sizeof sof3_w0), 0);
    assert_int_equal(chex_jpegll_probe(g.data, g.len, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    assert_non_null(strstr(msg, "width of 0"));
    chex_guard_free(&g);
    size_t clen;
    uint8_t *crash = load(CORPUS "fuzz_jpegll/regress_sof3_width0.bin", &clen);
    assert_int_equal(chex_guard_alloc(&g, crash, clen), 0);
    assert_int_equal(chex_jpegll_probe(g.data, g.len, &f, msg, sizeof msg),
                     CHEX_PRE_ERR_MALFORMED);
    chex_guard_free(&g);
    free(crash);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpeg_lossless), cmocka_unit_test(test_jpegls),
        cmocka_unit_test(test_j2k),           cmocka_unit_test(test_rle_packbits),
        cmocka_unit_test(test_rle_real),      cmocka_unit_test(test_inflate),
        cmocka_unit_test(test_inflate_bomb),
        cmocka_unit_test(test_crafted),
        cmocka_unit_test(test_not_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
