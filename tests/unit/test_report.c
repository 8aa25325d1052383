/* tests/unit/test_report.c - the SR and SC of report/report.h read back by
 * chexd's own DICOM parser (placed before a PROT_NONE page): study and patient
 * attributes copied from the source, new series and instance UIDs under
 * uid_root, the SC's pixels; errors for non-DICOM and unusable sources, and no
 * patient data in error messages. Run from the repository root. (dciodvfy,
 * dsrdump and pydicom check the same objects in
 * tests/integration/test_dicom_results.sh.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "preprocessing/dicom.h"
#include "report/dcmw.h"
#include "report/report.h"
#include "tests/unit/helpers/guard.h"

#define SRC "tests/data/cr-mono1-10-chest.dcm"

static chex_model_info model_info(void)
{
    chex_model_info mi;
    memset(&mi, 0, sizeof mi);
    snprintf(mi.name, sizeof mi.name, "test-model");
    mi.demo = 1;
    mi.num_labels = 3;
    snprintf(mi.labels[0], sizeof mi.labels[0], "Atelectasis");
    snprintf(mi.labels[1], sizeof mi.labels[1], "Pleural_Thickening");
    snprintf(mi.labels[2], sizeof mi.labels[2], "Mass");
    memset(mi.sha256, 'a', 64);
    return mi;
}

static void parse_guarded(const uint8_t *buf, size_t len, chex_dicom_info *info)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, buf, len), 0);
    char msg[256] = "";
    chex_pre_err e = chex_dicom_parse(g.data, g.len, info, msg, sizeof msg);
    if (e != CHEX_PRE_OK)
        fail_msg("chexd's parser: %s", msg);
    /* pointers into the guarded copy are not used after this */
    info->pixel_data = info->pixel_data ? buf + (info->pixel_data - g.data) : NULL;
    chex_guard_free(&g);
}

static int contains(const uint8_t *buf, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, s, n) == 0)
            return 1;
    return 0;
}

static void same_study(const chex_dicom_info *a, const chex_dicom_info *b)
{
    assert_string_equal(a->ids.study_instance_uid, b->ids.study_instance_uid);
    assert_string_equal(a->study.patient_name, b->study.patient_name);
    assert_string_equal(a->study.patient_id, b->study.patient_id);
    assert_string_equal(a->study.patient_birth_date, b->study.patient_birth_date);
    assert_string_equal(a->study.patient_sex, b->study.patient_sex);
    assert_string_equal(a->study.study_date, b->study.study_date);
    assert_string_equal(a->study.study_time, b->study.study_time);
    assert_string_equal(a->study.study_id, b->study.study_id);
    assert_string_equal(a->study.accession_number, b->study.accession_number);
    assert_string_equal(a->study.referring_physician, b->study.referring_physician);
}

static void test_sr_read_back(void **state)
{
    (void)state;
    size_t len;
    uint8_t *src = chex_test_read_file(SRC, &len);
    assert_non_null(src);
    chex_dicom_info s, r;
    parse_guarded(src, len, &s);
    assert_string_equal(s.study.patient_name, "Anonymized");
    chex_model_info mi = model_info();
    chex_report_ctx ctx = {"1.2.3", "9.9.9", &mi, "demo weights: not a diagnosis", 0};
    const float probs[3] = {0.1f, 0.7f, 0.5f};
    uint8_t *sr = NULL;
    size_t srlen = 0;
    char msg[512];
    assert_int_equal(chex_report_sr(&ctx, src, len, probs, 1, 0.5, &sr, &srlen, msg, sizeof msg),
                     CHEX_REPORT_OK);
    parse_guarded(sr, srlen, &r);
    same_study(&s, &r);
    assert_string_equal(r.study.sop_class_uid, CHEX_REPORT_SR_CLASS);
    assert_string_equal(r.ids.modality, "SR");
    assert_string_not_equal(r.ids.series_instance_uid, s.ids.series_instance_uid);
    assert_true(strncmp(r.ids.series_instance_uid, "1.2.3.", 6) == 0);
    assert_true(strncmp(r.ids.sop_instance_uid, "1.2.3.", 6) == 0);
    assert_null(r.pixel_data);
    /* values and codes, as the encoding holds them */
    assert_true(contains(sr, srlen, "0.100000"));
    assert_true(contains(sr, srlen, "0.700000"));
    assert_true(contains(sr, srlen, "0.500000"));
    assert_true(contains(sr, srlen, "99CHEXD"));
    assert_true(contains(sr, srlen, "Pleural_Thickening"));
    assert_true(contains(sr, srlen, "Newcode1"));
    assert_true(contains(sr, srlen, "demo weights: not a diagnosis"));
    assert_true(contains(sr, srlen, s.ids.sop_instance_uid));
    free(sr);
    /* two reports of one source are two series */
    uint8_t *sr2 = NULL;
    size_t sr2len = 0;
    chex_dicom_info r2;
    ctx.uid_root = "";
    assert_int_equal(chex_report_sr(&ctx, src, len, probs, 0, 0, &sr2, &sr2len, msg, sizeof msg),
                     CHEX_REPORT_OK);
    parse_guarded(sr2, sr2len, &r2);
    assert_string_not_equal(r2.ids.series_instance_uid, r.ids.series_instance_uid);
    assert_true(strncmp(r2.ids.sop_instance_uid, "2.25.", 5) == 0);
    assert_false(contains(sr2, sr2len, "Finding")); /* no threshold, no findings */
    free(sr2);
    free(src);
}

/* A Deflated Explicit VR LE source: its identifiers are in the deflated data
 * set, the SR references them. */
static void test_sr_deflated_source(void **state)
{
    (void)state;
    size_t len;
    uint8_t *src = chex_test_read_file("tests/data/dicom-compressed/crmono1_deflate.dcm", &len);
    assert_non_null(src);
    chex_dicom_info m, s, r;
    char msg[512];
    assert_int_equal(chex_dicom_parse(src, len, &m, msg, sizeof msg), CHEX_PRE_OK);
    assert_true(m.deflated);
    uint8_t *ds = NULL;
    size_t n = 0;
    assert_int_equal(chex_deflate_inflate(src + m.dataset_offset, len - m.dataset_offset,
                                          (size_t)1 << 28, &ds, &n, msg, sizeof msg),
                     CHEX_PRE_OK);
    assert_int_equal(chex_dicom_parse_inflated(&m, ds, n, &s, msg, sizeof msg), CHEX_PRE_OK);
    assert_true(s.ids.study_instance_uid[0] && s.ids.sop_instance_uid[0]);
    chex_model_info mi = model_info();
    chex_report_ctx ctx = {"1.2.3", "9.9.9", &mi, "demo weights: not a diagnosis", 0};
    const float probs[3] = {0.1f, 0.7f, 0.5f};
    uint8_t *sr = NULL;
    size_t srlen = 0;
    assert_int_equal(chex_report_sr(&ctx, src, len, probs, 1, 0.5, &sr, &srlen, msg, sizeof msg),
                     CHEX_REPORT_OK);
    parse_guarded(sr, srlen, &r);
    same_study(&s, &r);
    assert_true(contains(sr, srlen, s.ids.sop_instance_uid));
    free(sr);
    free(ds);
    free(src);
}

static void test_sc_read_back(void **state)
{
    (void)state;
    size_t len;
    uint8_t *src = chex_test_read_file(SRC, &len);
    assert_non_null(src);
    chex_dicom_info s, r;
    parse_guarded(src, len, &s);
    chex_model_info mi = model_info();
    chex_report_ctx ctx = {"", "9.9.9", &mi, "demo", 0};
    const int w = s.columns, h = s.rows;
    size_t n = (size_t)w * (size_t)h * 3;
    uint8_t *rgb = malloc(n), *copy = malloc(n);
    for (size_t i = 0; i < n; i++)
        rgb[i] = (uint8_t)(i * 7 + i / 3);
    memcpy(copy, rgb, n);
    uint8_t *sc = NULL;
    size_t sclen = 0;
    char msg[512];
    assert_int_equal(chex_report_sc(&ctx, src, len, rgb, w, h, 1, 0.25f, &sc, &sclen, msg,
                                    sizeof msg),
                     CHEX_REPORT_OK);
    assert_memory_equal(rgb, copy, n); /* the caller's pixels are untouched */
    parse_guarded(sc, sclen, &r);
    same_study(&s, &r);
    assert_string_equal(r.study.sop_class_uid, CHEX_REPORT_SC_CLASS);
    assert_string_equal(r.ids.modality, "OT");
    assert_string_equal(r.ids.photometric, "RGB");
    assert_int_equal(r.samples_per_pixel, 3);
    assert_int_equal(r.rows, h);
    assert_int_equal(r.columns, w);
    assert_int_equal(r.bits_allocated, 8);
    assert_int_equal(r.pixel_len, n);
    /* the text band is at the top; below it the overlay is as given */
    size_t row = (size_t)w * 3;
    assert_memory_equal(r.pixel_data + row * (size_t)(h / 2), rgb + row * (size_t)(h / 2),
                        row * (size_t)(h - h / 2));
    assert_memory_not_equal(r.pixel_data, rgb, row * 8);
    free(sc);
    /* a label index out of range */
    assert_int_equal(chex_report_sc(&ctx, src, len, rgb, w, h, 3, 0.25f, &sc, &sclen, msg,
                                    sizeof msg),
                     CHEX_REPORT_ERR_ARG);
    free(rgb);
    free(copy);
    free(src);
}

static void test_errors(void **state)
{
    (void)state;
    chex_model_info mi = model_info();
    chex_report_ctx ctx = {"", "9.9.9", &mi, "demo", 0};
    const float probs[3] = {0.1f, 0.7f, 0.5f};
    uint8_t *out = NULL;
    size_t outlen = 0;
    char msg[512];
    size_t len;
    uint8_t *png = chex_test_read_file("tests/data/00000001_000.png", &len);
    assert_non_null(png);
    assert_int_equal(chex_report_sr(&ctx, png, len, probs, 0, 0, &out, &outlen, msg, sizeof msg),
                     CHEX_REPORT_ERR_NOT_DICOM);
    assert_non_null(strstr(msg, "not DICOM"));
    assert_null(out);
    free(png);

    /* a source without Study Instance UID, and one whose Patient ID is too
     * long for LO: clear errors that never quote the patient's data */
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    assert_int_equal(chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.1"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0008, 0x0018), "UI", "1.2.3.4"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0010, 0x0020), "UT",
                                       "SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRET"),
                     CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0020, 0x000E), "UI", "1.2.3.5"), CHEX_DCMW_OK);
    uint8_t *f = NULL;
    size_t flen = 0;
    assert_int_equal(chex_dcmw_part10(ds, NULL, &f, &flen), CHEX_DCMW_OK);
    assert_int_equal(chex_report_sr(&ctx, f, flen, probs, 0, 0, &out, &outlen, msg, sizeof msg),
                     CHEX_REPORT_ERR_SOURCE);
    assert_non_null(strstr(msg, "Study Instance UID"));
    free(f);
    assert_int_equal(chex_dcmw_put_str(ds, CHEX_DCMW_TAG(0x0020, 0x000D), "UI", "1.2.3.6"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_part10(ds, NULL, &f, &flen), CHEX_DCMW_OK);
    assert_int_equal(chex_report_sr(&ctx, f, flen, probs, 0, 0, &out, &outlen, msg, sizeof msg),
                     CHEX_REPORT_ERR_SOURCE);
    assert_non_null(strstr(msg, "Patient ID"));
    assert_null(strstr(msg, "SECRET"));
    assert_null(out);
    /* a bad uid_root */
    ctx.uid_root = "1.02";
    chex_dcmw_ds_free(ds);
    free(f);
    uint8_t *src = chex_test_read_file(SRC, &len);
    assert_int_equal(chex_report_sr(&ctx, src, len, probs, 0, 0, &out, &outlen, msg, sizeof msg),
                     CHEX_REPORT_ERR_UID);
    free(src);
    assert_string_equal(chex_report_strerror(CHEX_REPORT_ERR_NOT_DICOM),
                        "the input is not DICOM: no study to attach a DICOM result to");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sr_read_back),
        cmocka_unit_test(test_sc_read_back),
        cmocka_unit_test(test_sr_deflated_source),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
