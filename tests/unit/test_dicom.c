/* tests/unit/test_dicom.c - DICOM input: the real files in tests/data, the
 * variants in tests/data/dicom/ (made by tests/data/make_dicom_variants.py from
 * those files, with the expected [0,1] image computed there by numpy), truncation
 * at every length, byte mutations, limits. Every input sits right before a
 * PROT_NONE page (guard.h). Run from the repository root. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/decoders.h"
#include "preprocessing/dicom.h"
#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"

#define VARIANTS "tests/data/dicom/"
#define TOL 1e-5

static const chex_pre_opts opts = {.max_pixels = 1u << 24, .min_side = 8};

static uint8_t *load(const char *path, size_t *len)
{
    uint8_t *b = chex_test_read_file(path, len);
    if (!b)
        fail_msg("cannot read %s (run from the repository root)", path);
    return b;
}

/* Decodes raw bytes placed before a guard page; on error img must be empty. */
static chex_pre_err decode_guarded(const uint8_t *raw, size_t len, const chex_pre_opts *o,
                                   chex_pre_image *img, char *msg, size_t msglen)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
    chex_pre_err e = chex_pre_decode(g.data, g.len, o, img, msg, msglen);
    chex_guard_free(&g);
    if (e != CHEX_PRE_OK)
        assert_null(img->pix);
    return e;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) /* NaN counts as a failure too */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static chex_pre_err expect_code(const char *word)
{
    if (strcmp(word, "ok") == 0)
        return CHEX_PRE_OK;
    if (strcmp(word, "unsupported") == 0)
        return CHEX_PRE_ERR_UNSUPPORTED;
    if (strcmp(word, "malformed") == 0)
        return CHEX_PRE_ERR_MALFORMED;
    if (strcmp(word, "unusable") == 0)
        return CHEX_PRE_ERR_UNUSABLE;
    fail_msg("unknown expectation %s in MANIFEST", word);
    return CHEX_PRE_ERR_ARG;
}

/* Every variant in the manifest: its error code and message, or the image
 * against the numpy reference. */
static void test_manifest(void **state)
{
    (void)state;
    FILE *f = fopen(VARIANTS "MANIFEST", "r");
    assert_non_null(f);
    char name[64], expect[16], rows[16], cols[16], extra[64];
    int n = 0, nok = 0;
    while (fscanf(f, "%63s %15s %15s %15s %63s", name, expect, rows, cols, extra) == 5) {
        char path[160];
        size_t len;
        snprintf(path, sizeof path, VARIANTS "%s.dcm", name);
        uint8_t *raw = load(path, &len);
        chex_pre_image img;
        char msg[256] = "";
        chex_pre_err e = decode_guarded(raw, len, &opts, &img, msg, sizeof msg);
        free(raw);
        if (e != expect_code(expect))
            fail_msg("%s: got %s (%s), want %s", name, chex_pre_strerror(e), msg, expect);
        if (e != CHEX_PRE_OK) {
            if (strcmp(extra, "-") != 0 && !strstr(msg, extra))
                fail_msg("%s: message \"%s\" does not name %s", name, msg, extra);
            n++;
            continue;
        }
        assert_int_equal(img.height, atoi(rows));
        assert_int_equal(img.width, atoi(cols));
        assert_int_equal(img.channels, 1);
        assert_string_equal(img.format, "dicom");
        assert_string_equal(img.scaling, extra);
        assert_int_equal(img.is_dicom, 1);
        size_t np = (size_t)img.width * (size_t)img.height, flen;
        snprintf(path, sizeof path, VARIANTS "%s.f32", name);
        uint8_t *ref = load(path, &flen);
        assert_int_equal(flen, np * sizeof(float));
        float *want = malloc(flen);
        assert_non_null(want);
        memcpy(want, ref, flen); /* the machine is little endian, as the file */
        double d = max_abs_diff(img.pix, want, np);
        if (d > TOL)
            fail_msg("%s: max abs diff %g against the numpy reference", name, d);
        free(want);
        free(ref);
        chex_pre_image_free(&img);
        n++;
        nok++;
    }
    fclose(f);
    print_message("%d variants, %d decoded within %g of the reference\n", n, nok, TOL);
    assert_true(n >= 40);
    assert_true(nok >= 20);
}

/* The features the issue names must be among the variants. */
static void test_manifest_covers(void **state)
{
    (void)state;
    static const char *const need[] = {
        "cr_explicit",       "cr_implicit",     "cr_signed",     "cr_rescale",
        "cr_minmax",         "cr_mono2",        "cr_sequences",  "cr_sequences_implicit",
        "cr_oddlen_un",      "cr_multiframe",   "jpeg_baseline", "jpeg_fragments",
        "jpeg_two_frames",   "ts_1_2_4_70",     "ts_1_2_4_90",   "ts_1_2_5",
        "ts_1_2_1_99",       "ts_1_2_2",        "rgb16",         "huge_element",
        "huge_pixel_length", "nested_too_deep", "no_pixels",     "short_pixels"};
    size_t len;
    uint8_t *m = load(VARIANTS "MANIFEST", &len);
    char *text = malloc(len + 2);
    assert_non_null(text);
    text[0] = '\n';
    memcpy(text + 1, m, len);
    text[len + 1] = '\0';
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        char key[80];
        snprintf(key, sizeof key, "\n%s ", need[i]);
        if (!strstr(text, key))
            fail_msg("MANIFEST lacks %s", need[i]);
    }
    free(text);
    free(m);
}

/* The real MONOCHROME1 10-bit CR, through the format dispatcher. Expected
 * values: numpy, window 550/1024 (PS3.3 C.11.2.1.2.1), then 1 - y. */
static void test_real_cr_mono1(void **state)
{
    (void)state;
    size_t len;
    uint8_t *raw = load("tests/data/cr-mono1-10-chest.dcm", &len);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
    chex_pre_image img;
    char msg[256] = "";
    chex_pre_err e = chex_pre_decode(g.data, g.len, &opts, &img, msg, sizeof msg);
    if (e != CHEX_PRE_OK)
        fail_msg("%s", msg);
    assert_int_equal(img.width, 440);
    assert_int_equal(img.height, 440);
    assert_int_equal(img.channels, 1);
    assert_int_equal(img.bit_depth, 10);
    assert_string_equal(img.scaling, "window");
    assert_int_equal(img.is_dicom, 1);
    assert_string_equal(img.dicom.photometric, "MONOCHROME1");
    assert_string_equal(img.dicom.transfer_syntax, "1.2.840.10008.1.2.1");
    assert_string_equal(img.dicom.modality, "CR");
    assert_string_equal(img.dicom.view_position, "PA");
    assert_string_equal(img.dicom.sop_instance_uid, "1.2.392.200036.9125.0.19950720112207");
    assert_string_equal(img.dicom.study_instance_uid, "1.2.392.200036.9125.0.199302241758.16");
    assert_string_equal(img.dicom.series_instance_uid, "1.2.392.200036.9125.0.199302241758.16");
    static const struct {
        int r, c;
        double v;
    } px[] = {{0, 0, 1.0},
              {100, 50, 0.6891495585441589},
              {220, 220, 0.7585532665252686},
              {300, 400, 0.5356793999671936},
              {439, 439, 1.0},
              {10, 300, 0.44379276037216187}};
    for (size_t i = 0; i < sizeof px / sizeof px[0]; i++)
        assert_true(fabs(img.pix[px[i].r * 440 + px[i].c] - px[i].v) <= TOL);
    double sum = 0;
    for (size_t i = 0; i < 440 * 440; i++)
        sum += img.pix[i];
    assert_true(fabs(sum / (440 * 440) - 0.5465704093953163) <= TOL);
    chex_pre_image_free(&img);
    chex_guard_free(&g);
    free(raw);
}

/* The real JPEG Baseline CR: libjpeg-turbo on the fragment, then min..max.
 * Expected values: PIL's decode of the same fragment, numpy min..max. */
static void test_real_siim_jpeg(void **state)
{
    (void)state;
    size_t len;
    uint8_t *raw = load("tests/data/siim-pneumothorax-sample.dcm", &len);
    chex_pre_image img;
    char msg[256] = "";
    chex_pre_err e = decode_guarded(raw, len, &opts, &img, msg, sizeof msg);
    if (e != CHEX_PRE_OK)
        fail_msg("%s", msg);
    assert_int_equal(img.width, 1024);
    assert_int_equal(img.height, 1024);
    assert_int_equal(img.channels, 1);
    assert_int_equal(img.bit_depth, 8);
    assert_string_equal(img.format, "dicom");
    assert_string_equal(img.scaling, "minmax");
    assert_string_equal(img.dicom.transfer_syntax, "1.2.840.10008.1.2.4.50");
    assert_string_equal(img.dicom.photometric, "MONOCHROME2");
    assert_string_equal(img.dicom.modality, "CR");
    assert_string_equal(img.dicom.view_position, "PA");
    assert_string_equal(img.dicom.sop_instance_uid,
                        "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819");
    static const struct {
        int r, c;
        double v;
    } px[] = {{0, 0, 0.0},
              {512, 512, 0.8188976645469666},
              {100, 900, 0.7677165269851685},
              {1023, 1023, 0.0},
              {700, 200, 0.3425196707248688}};
    for (size_t i = 0; i < sizeof px / sizeof px[0]; i++)
        assert_true(fabs(img.pix[px[i].r * 1024 + px[i].c] - px[i].v) <= TOL);
    double sum = 0;
    for (size_t i = 0; i < 1024 * 1024; i++)
        sum += img.pix[i];
    assert_true(fabs(sum / (1024 * 1024) - 0.6314883403273193) <= TOL);
    /* the patient name/ID (an anonymised UUID in this file) is in the bytes,
     * never in what we return */
    const char *pid = "16d7f894-55d7-4d95-8957-d18987f0e981";
    assert_non_null(memmem(raw, len, pid, strlen(pid)));
    assert_null(memmem(&img, sizeof img, pid, 8));
    assert_null(memmem(&img.dicom, sizeof img.dicom, pid, 8));
    chex_pre_image_free(&img);
    free(raw);
}

/* Every prefix of a file must be an error, never a crash or a read past len. */
static void truncate_all(const char *name)
{
    char path[160];
    snprintf(path, sizeof path, VARIANTS "%s.dcm", name);
    size_t len;
    uint8_t *raw = load(path, &len);
    chex_pre_image img;
    char msg[256];
    assert_int_equal(decode_guarded(raw, len, &opts, &img, msg, sizeof msg), CHEX_PRE_OK);
    chex_pre_image_free(&img);
    for (size_t n = 0; n < len; n++) {
        chex_pre_err e = decode_guarded(raw, n, &opts, &img, msg, sizeof msg);
        if (e == CHEX_PRE_OK)
            fail_msg("%s cut to %zu of %zu bytes decoded", name, n, len);
        if (n >= 132 && e != CHEX_PRE_ERR_MALFORMED && e != CHEX_PRE_ERR_UNUSABLE)
            fail_msg("%s cut to %zu bytes: %s (%s)", name, n, chex_pre_strerror(e), msg);
    }
    free(raw);
}

static void test_truncated_explicit(void **state)
{
    (void)state;
    truncate_all("cr_explicit");
}
static void test_truncated_implicit(void **state)
{
    (void)state;
    truncate_all("cr_implicit");
}
static void test_truncated_sequences(void **state)
{
    (void)state;
    truncate_all("cr_sequences");
    truncate_all("cr_sequences_implicit");
    truncate_all("cr_oddlen_un");
}
static void test_truncated_jpeg(void **state)
{
    (void)state;
    truncate_all("jpeg_fragments");
    truncate_all("jpeg_two_frames");
}

/* The real files cut at 97 lengths spread over the whole file. */
static void test_truncated_real(void **state)
{
    (void)state;
    static const char *const paths[] = {"tests/data/cr-mono1-10-chest.dcm",
                                        "tests/data/siim-pneumothorax-sample.dcm"};
    for (size_t k = 0; k < 2; k++) {
        size_t len;
        uint8_t *raw = load(paths[k], &len);
        for (size_t i = 0; i < 97; i++) {
            size_t n = len * i / 97 + i % 7;
            chex_pre_image img;
            char msg[256];
            chex_pre_err e = decode_guarded(raw, n, &opts, &img, msg, sizeof msg);
            if (e == CHEX_PRE_OK)
                fail_msg("%s cut to %zu of %zu bytes decoded", paths[k], n, len);
        }
        free(raw);
    }
}

/* Deterministic byte mutations: any outcome but a crash or overread. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *const names[] = {"cr_sequences", "cr_oddlen_un", "jpeg_two_frames",
                                        "cr_sequences_implicit"};
    uint32_t seed = 12345;
    int ok = 0, bad = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char path[160];
        snprintf(path, sizeof path, VARIANTS "%s.dcm", names[k]);
        size_t len;
        uint8_t *raw = load(path, &len);
        uint8_t *m = malloc(len);
        assert_non_null(m);
        for (int iter = 0; iter < 400; iter++) {
            memcpy(m, raw, len);
            for (int j = 0; j < 1 + iter % 4; j++) {
                seed = seed * 1103515245u + 12345u;
                /* mostly the header region, where the structure is */
                size_t at = (seed >> 8) % (len < 1200 ? len : 1200);
                seed = seed * 1103515245u + 12345u;
                m[at] = (uint8_t)(iter % 3 == 0 ? 0xFF : seed >> 16);
            }
            chex_pre_image img;
            char msg[256];
            if (decode_guarded(m, len, &opts, &img, msg, sizeof msg) == CHEX_PRE_OK) {
                ok++;
                for (int i = 0; i < img.width * img.height; i++)
                    assert_true(img.pix[i] >= 0.0f && img.pix[i] <= 1.0f);
                chex_pre_image_free(&img);
            } else {
                bad++;
            }
        }
        free(m);
        free(raw);
    }
    print_message("mutations: %d decoded, %d rejected\n", ok, bad);
    assert_true(bad > 0);
}

static void test_limits(void **state)
{
    (void)state;
    size_t len;
    uint8_t *raw = load(VARIANTS "cr_explicit.dcm", &len);
    chex_pre_image img;
    char msg[256];
    chex_pre_opts o = opts;
    o.max_pixels = 48 * 64 - 1;
    assert_int_equal(decode_guarded(raw, len, &o, &img, msg, sizeof msg), CHEX_PRE_ERR_TOO_LARGE);
    o.max_pixels = 48 * 64;
    assert_int_equal(decode_guarded(raw, len, &o, &img, msg, sizeof msg), CHEX_PRE_OK);
    chex_pre_image_free(&img);
    o.min_side = 49;
    assert_int_equal(decode_guarded(raw, len, &o, &img, msg, sizeof msg), CHEX_PRE_ERR_UNUSABLE);
    /* not Part 10 / empty */
    assert_int_equal(decode_guarded(raw + 1, len - 1, &opts, &img, msg, sizeof msg),
                     CHEX_PRE_ERR_FORMAT);
    assert_int_equal(decode_guarded(raw, 0, &opts, &img, msg, sizeof msg), CHEX_PRE_ERR_EMPTY);
    free(raw);
}

/* The lower-level parse API: attributes as read, pointer into the buffer. */
static void test_parse_api(void **state)
{
    (void)state;
    size_t len;
    uint8_t *raw = load(VARIANTS "cr_rescale.dcm", &len);
    chex_dicom_info d;
    char msg[256];
    assert_int_equal(chex_dicom_parse(raw, len, &d, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(d.rows, 48);
    assert_int_equal(d.columns, 64);
    assert_int_equal(d.bits_allocated, 16);
    assert_int_equal(d.bits_stored, 10);
    assert_int_equal(d.high_bit, 9);
    assert_int_equal(d.pixel_representation, 0);
    assert_int_equal(d.has_rescale, 1);
    assert_true(d.rescale_slope == 0.5);
    assert_true(d.rescale_intercept == -100.25);
    assert_int_equal(d.has_window, 1);
    assert_true(d.window_center == 174.75 && d.window_width == 512);
    assert_int_equal(d.implicit_vr, 0);
    assert_int_equal(d.encapsulated, 0);
    assert_int_equal(d.pixel_len, 48 * 64 * 2);
    assert_true(d.pixel_data > raw && d.pixel_data + d.pixel_len == raw + len);
    free(raw);

    raw = load(VARIANTS "cr_sequences_implicit.dcm", &len);
    assert_int_equal(chex_dicom_parse(raw, len, &d, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(d.implicit_vr, 1);
    assert_int_equal(d.rows, 48); /* not the icon's 4 */
    assert_int_equal(d.pixel_len, 48 * 64 * 2);
    free(raw);

    raw = load(VARIANTS "jpeg_two_frames.dcm", &len);
    assert_int_equal(chex_dicom_parse(raw, len, &d, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(d.encapsulated, 1);
    assert_int_equal(d.number_of_frames, 2);
    size_t n1 = 0;
    assert_int_equal(chex_dicom_first_frame(&d, NULL, 0, &n1, msg, sizeof msg), CHEX_PRE_OK);
    uint8_t *fr = malloc(n1);
    assert_non_null(fr);
    size_t n2 = 0;
    assert_int_equal(chex_dicom_first_frame(&d, fr, n1, &n2, msg, sizeof msg), CHEX_PRE_OK);
    assert_int_equal(n1, n2);
    assert_true(fr[0] == 0xFF && fr[1] == 0xD8);           /* SOI ... */
    assert_true(fr[n1 - 2] == 0xFF && fr[n1 - 1] == 0xD9); /* ... EOI of frame 1 only */
    free(fr);
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_covers),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_real_cr_mono1),
        cmocka_unit_test(test_real_siim_jpeg),
        cmocka_unit_test(test_truncated_explicit),
        cmocka_unit_test(test_truncated_implicit),
        cmocka_unit_test(test_truncated_sequences),
        cmocka_unit_test(test_truncated_jpeg),
        cmocka_unit_test(test_truncated_real),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_parse_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
