/* tests/unit/test_dcmw.c - the DICOM writer (report/dcmw.h): byte layout of
 * elements (lengths, padding per VR, tag order), sequences with defined
 * lengths, the Part 10 meta group, UIDs, and a property test: random data sets
 * written and read back by chexd's own parser (preprocessing/dicom.h), placed
 * before a PROT_NONE page. The same check through pydicom, on every element,
 * is tests/reference/test_dcmw_pydicom.sh. */
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
#include "tests/unit/helpers/guard.h"

#define T CHEX_DCMW_TAG

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint8_t *encode(chex_dcmw_ds *ds, size_t *len)
{
    uint8_t *out = NULL;
    assert_int_equal(chex_dcmw_encode(ds, &out, len), CHEX_DCMW_OK);
    return out;
}

static void test_padding(void **state)
{
    (void)state;
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    assert_non_null(ds);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0010, 0x0020), "LO", "ABC"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x000D), "UI", "1.2.3"), CHEX_DCMW_OK);
    const uint8_t ob[3] = {1, 2, 3};
    assert_int_equal(chex_dcmw_put_bytes(ds, T(0x0009, 0x1010), "OB", ob, 3), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0010, 0x0010), "PN", ""), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_us(ds, T(0x0028, 0x0010), 513), CHEX_DCMW_OK);
    size_t len;
    uint8_t *b = encode(ds, &len);
    /* (0009,1010) OB 4: 12-byte header; (0010,0010) PN 0; (0010,0020) LO 4;
       (0020,000D) UI 6; (0028,0010) US 2 */
    assert_int_equal(len, (12 + 4) + 8 + (8 + 4) + (8 + 6) + (8 + 2));
    const uint8_t *p = b;
    assert_int_equal(rd16(p), 0x0009);
    assert_memory_equal(p + 4, "OB\0\0", 4);
    assert_int_equal(rd32(p + 8), 4);
    assert_memory_equal(p + 12, "\1\2\3\0", 4);
    p += 16;
    assert_int_equal(rd16(p + 2), 0x0010);
    assert_memory_equal(p + 4, "PN", 2);
    assert_int_equal(rd16(p + 6), 0);
    p += 8;
    assert_memory_equal(p + 4, "LO", 2);
    assert_int_equal(rd16(p + 6), 4);
    assert_memory_equal(p + 8, "ABC ", 4);
    p += 12;
    assert_memory_equal(p + 4, "UI", 2);
    assert_int_equal(rd16(p + 6), 6);
    assert_memory_equal(p + 8, "1.2.3\0", 6);
    p += 14;
    assert_memory_equal(p + 4, "US", 2);
    assert_int_equal(rd16(p + 8), 513);
    free(b);
    chex_dcmw_ds_free(ds);
}

static void test_lengths(void **state)
{
    (void)state;
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x0010), "SH", "0123456789abcdef"),
                     CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x0011), "SH", "0123456789abcdefg"),
                     CHEX_DCMW_ERR_VALUE);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0060), "CS", "sr"), CHEX_DCMW_ERR_VALUE);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0061), "CS", "CR\\DX"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0018), "UI", "1.2.x"),
                     CHEX_DCMW_ERR_VALUE);
    char ui65[66];
    memset(ui65, '1', 65);
    ui65[65] = '\0';
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0016), "UI", ui65), CHEX_DCMW_ERR_VALUE);
    ui65[64] = '\0';
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0016), "UI", ui65), CHEX_DCMW_OK);
    /* multi-valued DS: the limit is per value */
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0028, 0x0030), "DS", "0.1234567890123\\0.5"),
                     CHEX_DCMW_OK);
    /* PN: 64 characters per component group */
    char pn[140];
    memset(pn, 'A', 64);
    pn[64] = '=';
    memset(pn + 65, 'B', 64);
    pn[129] = '\0';
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0010, 0x0010), "PN", pn), CHEX_DCMW_OK);
    pn[64] = 'A';
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0090), "PN", pn), CHEX_DCMW_ERR_VALUE);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x0010), "SH", "X"),
                     CHEX_DCMW_ERR_DUPLICATE);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0002, 0x0010), "UI", "1.2"), CHEX_DCMW_ERR_ARG);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0000), "UL", "1"), CHEX_DCMW_ERR_ARG);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0020), "XX", "1"), CHEX_DCMW_ERR_ARG);
    const uint8_t ow[3] = {0};
    assert_int_equal(chex_dcmw_put_bytes(ds, T(0x7FE0, 0x0010), "OW", ow, 3),
                     CHEX_DCMW_ERR_VALUE);
    assert_string_equal(chex_dcmw_strerror(CHEX_DCMW_ERR_DUPLICATE),
                        "tag already present in the data set");
    assert_string_equal(chex_dcmw_strerror((chex_dcmw_err)99), "unknown error");
    /* an odd-length multi-valued CS gets one trailing space */
    size_t len;
    uint8_t *b = encode(ds, &len);
    const uint8_t *p = b;
    while (rd16(p) != 0x0008 || rd16(p + 2) != 0x0061)
        p += 8 + rd16(p + 6);
    assert_int_equal(rd16(p + 6), 6);
    assert_memory_equal(p + 8, "CR\\DX ", 6);
    free(b);
    chex_dcmw_ds_free(ds);
}

static void test_order(void **state)
{
    (void)state;
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    const uint16_t els[] = {0x0060, 0x0016, 0x0050, 0x0018, 0x0020, 0x0005};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, els[i]), "SH", "X"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0002 + 0x0008, 0x0001), "SH", "Y"),
                     CHEX_DCMW_OK);
    size_t len;
    uint8_t *b = encode(ds, &len);
    uint32_t prev = 0;
    for (size_t pos = 0; pos < len; pos += 8 + rd16(b + pos + 6)) {
        uint32_t tag = ((uint32_t)rd16(b + pos) << 16) | rd16(b + pos + 2);
        assert_true(tag > prev);
        prev = tag;
    }
    assert_int_equal(chex_dcmw_count(ds), 7);
    free(b);
    chex_dcmw_ds_free(ds);
}

static void test_sequences(void **state)
{
    (void)state;
    chex_dcmw_ds *ds = chex_dcmw_ds_new(), *a, *b, *c;
    assert_int_equal(chex_dcmw_put_item(ds, T(0x0040, 0xA730), &a), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(a, T(0x0040, 0xA010), "CS", "CONTAINS"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_item(a, T(0x0040, 0xA043), &c), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(c, T(0x0008, 0x0100), "SH", "ABC"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_item(ds, T(0x0040, 0xA730), &b), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_item(ds, T(0x0008, 0x1115), NULL), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_item(ds, T(0x0008, 0x1115), NULL), CHEX_DCMW_ERR_DUPLICATE);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0040, 0xA730), "SH", "X"),
                     CHEX_DCMW_ERR_DUPLICATE);
    size_t len;
    uint8_t *buf = encode(ds, &len);
    /* (0008,1115) SQ, length 0 */
    assert_int_equal(rd16(buf), 0x0008);
    assert_memory_equal(buf + 4, "SQ\0\0", 4);
    assert_int_equal(rd32(buf + 8), 0);
    const uint8_t *p = buf + 12;
    /* (0040,A730) SQ: item1 = CS(8+8) + SQ(12 + item(8 + SH 8+4)) = 16 + 32 = 48;
       item2 empty; sequence = (8 + 48) + (8 + 0) = 64 */
    assert_int_equal(rd16(p), 0x0040);
    assert_int_equal(rd16(p + 2), 0xA730);
    assert_int_equal(rd32(p + 8), 64);
    assert_int_equal(rd16(p + 12), 0xFFFE);
    assert_int_equal(rd16(p + 14), 0xE000);
    assert_int_equal(rd32(p + 16), 48);
    const uint8_t *q = p + 20 + 16; /* nested (0040,A043) */
    assert_int_equal(rd16(q + 2), 0xA043);
    assert_int_equal(rd32(q + 8), 20);
    assert_int_equal(rd32(q + 16), 12);
    assert_memory_equal(q + 20 + 8, "ABC ", 4);
    const uint8_t *i2 = p + 12 + 8 + 48;
    assert_int_equal(rd16(i2 + 2), 0xE000);
    assert_int_equal(rd32(i2 + 4), 0);
    assert_int_equal(len, 12 + 12 + 64);
    free(buf);
    chex_dcmw_ds_free(ds);
}

static void test_part10(void **state)
{
    (void)state;
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    uint8_t *out = NULL;
    size_t len;
    assert_int_equal(chex_dcmw_part10(ds, "CHEXD", &out, &len), CHEX_DCMW_ERR_MISSING);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.7"),
                     CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0018), "UI", "1.2.3.4"), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_part10(ds, "CHEXD_0.1.0", &out, &len), CHEX_DCMW_OK);
    for (int i = 0; i < 128; i++)
        assert_int_equal(out[i], 0);
    assert_memory_equal(out + 128, "DICM", 4);
    assert_int_equal(rd16(out + 132), 0x0002);
    assert_int_equal(rd16(out + 134), 0x0000);
    assert_memory_equal(out + 136, "UL", 2);
    uint32_t glen = rd32(out + 140);
    size_t end = 144 + glen;
    /* every element from 144 to end is group 0002, then the data set */
    size_t pos = 144;
    int saw_ts = 0;
    while (pos < end) {
        assert_int_equal(rd16(out + pos), 0x0002);
        int lng = out[pos + 4] == 'O';
        uint32_t vl = lng ? rd32(out + pos + 8) : rd16(out + pos + 6);
        size_t v = pos + (lng ? 12 : 8);
        assert_int_equal(vl % 2, 0);
        if (rd16(out + pos + 2) == 0x0010) {
            assert_memory_equal(out + v, "1.2.840.10008.1.2.1\0", 20);
            saw_ts = 1;
        }
        if (rd16(out + pos + 2) == 0x0003)
            assert_memory_equal(out + v, "1.2.3.4\0", 8);
        pos = v + vl;
    }
    assert_true(saw_ts);
    assert_int_equal(pos, end);
    assert_int_equal(rd16(out + end), 0x0008);
    assert_int_equal(rd16(out + end + 2), 0x0016);
    free(out);
    chex_dcmw_ds_free(ds);
}

/* The decimal after "2.25." as a 128-bit number (hi, lo). */
static void dec128(const char *s, uint64_t *hi, uint64_t *lo)
{
    unsigned __int128 v = 0;
    for (; *s; s++) {
        assert_true(*s >= '0' && *s <= '9');
        unsigned __int128 nv = v * 10 + (unsigned)(*s - '0');
        assert_true(nv / 10 == v); /* no overflow */
        v = nv;
    }
    *hi = (uint64_t)(v >> 64);
    *lo = (uint64_t)v;
}

static void test_uids(void **state)
{
    (void)state;
    char msg[256];
    assert_int_equal(chex_dcmw_uid_root_check("", msg, sizeof msg), CHEX_DCMW_OK);
    assert_int_equal(chex_dcmw_uid_root_check("1.2.826.0.1.3680043.10.543", msg, sizeof msg),
                     CHEX_DCMW_OK);
    const char *bad[] = {"1..2", ".1.2", "1.2.", "1.02", "1.2a", "1 2",
                         "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg[0] = '\0';
        assert_int_equal(chex_dcmw_uid_root_check(bad[i], msg, sizeof msg),
                         CHEX_DCMW_ERR_UID_ROOT);
        assert_non_null(strstr(msg, "uid_root"));
    }
    char u[65], prev[65] = "";
    assert_int_equal(chex_dcmw_uid_new("1.02", u), CHEX_DCMW_ERR_UID_ROOT);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(chex_dcmw_uid_new("", u), CHEX_DCMW_OK);
        assert_true(strncmp(u, "2.25.", 5) == 0);
        assert_true(strlen(u) <= 64);
        assert_true(u[5] != '0');
        uint64_t hi, lo;
        dec128(u + 5, &hi, &lo);
        assert_int_equal((hi >> 12) & 0xF, 4);  /* version 4 */
        assert_int_equal((lo >> 62) & 0x3, 2);  /* RFC 4122 variant */
        assert_string_not_equal(u, prev);
        strcpy(prev, u);
    }
    /* the longest allowed root still gives a UID of at most 64 characters */
    const char *root43 = "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.1718";
    assert_int_equal(strlen(root43), 43);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(chex_dcmw_uid_new(root43, u), CHEX_DCMW_OK);
        assert_true(strlen(u) <= 64);
        assert_true(strncmp(u, root43, 43) == 0 && u[43] == '.');
        assert_true(u[44] != '0' || u[45] == '\0');
    }
    char da[9], tm[7];
    chex_dcmw_date_time(0, da, tm);
    assert_int_equal(strlen(da), 8);
    assert_int_equal(strlen(tm), 6);
}

/* ---- property test: random data sets read back by chexd's parser ---- */

static uint32_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void rand_text(char *s, size_t maxlen, const char *alphabet)
{
    size_t n = rnd() % (maxlen + 1), k = strlen(alphabet);
    for (size_t i = 0; i < n; i++)
        s[i] = alphabet[rnd() % k];
    s[n] = '\0';
}

/* Random filler: private elements of several VRs and nested sequences. */
static void add_noise(chex_dcmw_ds *ds, int depth)
{
    int n = (int)(rnd() % 6);
    for (int i = 0; i < n; i++) {
        uint32_t tag = T(0x0009 + 2 * (rnd() % 4), 0x1000 + rnd() % 64);
        char s[80];
        uint8_t bytes[37];
        chex_dcmw_ds *it;
        switch (rnd() % 5) {
        case 0:
            rand_text(s, 64, "ABC xyz0123^");
            chex_dcmw_put_str(ds, tag, "LO", s);
            break;
        case 1:
            for (size_t k = 0; k < sizeof bytes; k++)
                bytes[k] = (uint8_t)rnd();
            chex_dcmw_put_bytes(ds, tag, "OB", bytes, rnd() % sizeof bytes);
            break;
        case 2:
            rand_text(s, 60, "0123456789.");
            chex_dcmw_put_str(ds, tag, "UT", s);
            break;
        default:
            if (depth < 4) {
                int items = (int)(rnd() % 3);
                if (items == 0)
                    chex_dcmw_put_item(ds, tag, NULL);
                for (int k = 0; k < items; k++)
                    if (chex_dcmw_put_item(ds, tag, &it) == CHEX_DCMW_OK) {
                        /* an icon's Rows inside an item must not be read as the image's */
                        chex_dcmw_put_us(it, T(0x0028, 0x0010), 7);
                        add_noise(it, depth + 1);
                    }
            }
            break;
        }
    }
}

static void test_roundtrip_own_parser(void **state)
{
    (void)state;
    for (int iter = 0; iter < 300; iter++) {
        rng_state = 1000u + (uint32_t)iter;
        chex_dcmw_ds *ds = chex_dcmw_ds_new();
        char sop[65], study[65], series[65], modality[17], view[17], photo[17];
        assert_int_equal(chex_dcmw_uid_new(iter % 2 ? "" : "1.2.3", sop), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_uid_new("", study), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_uid_new("9.8", series), CHEX_DCMW_OK);
        rand_text(modality, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        rand_text(view, 16, "APL_ 0123");
        rand_text(photo, 16, "MONOCHROME12RGB");
        /* trailing spaces are padding to the reader: keep the last one not a space */
        if (view[0] && view[strlen(view) - 1] == ' ')
            view[strlen(view) - 1] = 'P';
        int rows = (int)(rnd() % 40) + 1, cols = (int)(rnd() % 40) + 1;
        int bits = rnd() % 2 ? 16 : 8;
        size_t npix = (size_t)rows * (size_t)cols * (size_t)(bits / 8);
        uint8_t *pix = malloc(npix);
        for (size_t i = 0; i < npix; i++)
            pix[i] = (uint8_t)rnd();
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.7"),
                         CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0018), "UI", sop), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0008, 0x0060), "CS", modality), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0018, 0x5101), "CS", view), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x000D), "UI", study), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0020, 0x000E), "UI", series), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_us(ds, T(0x0028, 0x0002), 1), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0028, 0x0004), "CS", photo), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_us(ds, T(0x0028, 0x0010), (uint16_t)rows), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_us(ds, T(0x0028, 0x0011), (uint16_t)cols), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_us(ds, T(0x0028, 0x0100), (uint16_t)bits), CHEX_DCMW_OK);
        char wc[17], ww[17];
        snprintf(wc, sizeof wc, "%d", (int)(rnd() % 4000) - 1000);
        snprintf(ww, sizeof ww, "%d.5", (int)(rnd() % 4000) + 1);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0028, 0x1050), "DS", wc), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_str(ds, T(0x0028, 0x1051), "DS", ww), CHEX_DCMW_OK);
        assert_int_equal(chex_dcmw_put_bytes(ds, T(0x7FE0, 0x0010), bits == 8 ? "OB" : "OW",
                                             pix, npix),
                         CHEX_DCMW_OK);
        add_noise(ds, 0);
        uint8_t *file = NULL;
        size_t len = 0;
        assert_int_equal(chex_dcmw_part10(ds, "CHEXD_TEST", &file, &len), CHEX_DCMW_OK);
        chex_guard_buf g;
        assert_int_equal(chex_guard_alloc(&g, file, len), 0);
        chex_dicom_info info;
        char msg[256] = "";
        chex_pre_err e = chex_dicom_parse(g.data, g.len, &info, msg, sizeof msg);
        if (e != CHEX_PRE_OK)
            fail_msg("iteration %d: %s", iter, msg);
        assert_string_equal(info.ids.sop_instance_uid, sop);
        assert_string_equal(info.ids.study_instance_uid, study);
        assert_string_equal(info.ids.series_instance_uid, series);
        assert_string_equal(info.ids.modality, modality);
        assert_string_equal(info.ids.view_position, view);
        assert_string_equal(info.ids.photometric, photo);
        assert_string_equal(info.ids.transfer_syntax, CHEX_DCMW_TS_EXPLICIT_LE);
        assert_int_equal(info.rows, rows);
        assert_int_equal(info.columns, cols);
        assert_int_equal(info.bits_allocated, bits);
        assert_int_equal(info.samples_per_pixel, 1);
        assert_true(info.has_window);
        assert_true(info.window_center == atof(wc));
        assert_true(info.window_width == atof(ww));
        assert_false(info.implicit_vr);
        assert_int_equal(info.pixel_len, npix + (npix & 1));
        assert_memory_equal(info.pixel_data, pix, npix);
        chex_guard_free(&g);
        free(file);
        free(pix);
        chex_dcmw_ds_free(ds);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_padding),   cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_order),     cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_part10),    cmocka_unit_test(test_uids),
        cmocka_unit_test(test_roundtrip_own_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
