/* preprocessing/dicom.c - DICOM Part 10 input: parser and pixel pipeline.
 *
 * Parsing is one flat pass over the elements with an explicit stack for
 * undefined-length sequences and items (bounded depth, no recursion); every
 * defined length is checked against what is left of the buffer before use.
 * Only top-level attributes are read, so an icon image sequence's own Rows or
 * Pixel Data never replaces the image's. Patient attributes are skipped like any
 * attribute we do not read.
 *
 * Pixel pipeline (PS3.3 C.7.6.3, C.11.1, C.11.2): stored value (masked to
 * Bits Stored at High Bit, sign-extended when Pixel Representation is 1) ->
 * Rescale Slope/Intercept -> the first Window Center/Width with the VOI LUT
 * Function (LINEAR by default) to [0,1], or without a window the image's own
 * min..max -> inverted for MONOCHROME1.
 */
#include "preprocessing/dicom.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/decoders.h"
#include "preprocessing/pre_internal.h"
#include "preprocessing/stream.h"

#define UNDEF_LEN 0xFFFFFFFFu
#define CHEX_DICOM_LUT_BITS 16 /* table of stored values up to this many bits */
#define TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

#define TAG_TRANSFER_SYNTAX TAG(0x0002, 0x0010)
#define TAG_SOP_INSTANCE_UID TAG(0x0008, 0x0018)
#define TAG_MODALITY TAG(0x0008, 0x0060)
#define TAG_VIEW_POSITION TAG(0x0018, 0x5101)
#define TAG_STUDY_UID TAG(0x0020, 0x000D)
#define TAG_SERIES_UID TAG(0x0020, 0x000E)
#define TAG_SAMPLES_PER_PIXEL TAG(0x0028, 0x0002)
#define TAG_PHOTOMETRIC TAG(0x0028, 0x0004)
#define TAG_NUMBER_OF_FRAMES TAG(0x0028, 0x0008)
#define TAG_ROWS TAG(0x0028, 0x0010)
#define TAG_COLUMNS TAG(0x0028, 0x0011)
#define TAG_BITS_ALLOCATED TAG(0x0028, 0x0100)
#define TAG_BITS_STORED TAG(0x0028, 0x0101)
#define TAG_HIGH_BIT TAG(0x0028, 0x0102)
#define TAG_PIXEL_REPRESENTATION TAG(0x0028, 0x0103)
#define TAG_WINDOW_CENTER TAG(0x0028, 0x1050)
#define TAG_WINDOW_WIDTH TAG(0x0028, 0x1051)
#define TAG_RESCALE_INTERCEPT TAG(0x0028, 0x1052)
#define TAG_RESCALE_SLOPE TAG(0x0028, 0x1053)
#define TAG_VOI_LUT_FUNCTION TAG(0x0028, 0x1056)
#define TAG_PIXEL_DATA TAG(0x7FE0, 0x0010)
#define TAG_ITEM TAG(0xFFFE, 0xE000)
#define TAG_ITEM_DELIM TAG(0xFFFE, 0xE00D)
#define TAG_SEQ_DELIM TAG(0xFFFE, 0xE0DD)

#define TS_IMPLICIT_LE "1.2.840.10008.1.2"
#define TS_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define TS_DEFLATED_LE "1.2.840.10008.1.2.1.99"
#define TS_JPEG_BASELINE "1.2.840.10008.1.2.4.50"
#define TS_JPEG_EXTENDED "1.2.840.10008.1.2.4.51"

static chex_pre_err parse_dataset(const uint8_t *buf, size_t len, size_t pos, chex_dicom_info *o,
                                  int encapsulated_ts, size_t total, char *msg, size_t msglen);

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- transfer syntaxes ---- */

static const struct {
    const char *uid, *name;
} ts_names[] = {
    {"1.2.840.10008.1.2", "Implicit VR Little Endian"},
    {"1.2.840.10008.1.2.1", "Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.2", "Explicit VR Big Endian"},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline"},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended"},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless"},
    {"1.2.840.10008.1.2.4.70", "JPEG Lossless SV1"},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless"},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless"},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000"},
    {"1.2.840.10008.1.2.4.201", "HTJ2K Lossless"},
    {"1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL"},
    {"1.2.840.10008.1.2.4.203", "HTJ2K"},
    {"1.2.840.10008.1.2.5", "RLE Lossless"},
};

static const char *ts_name(const char *uid)
{
    for (size_t i = 0; i < sizeof ts_names / sizeof ts_names[0]; i++)
        if (strcmp(uid, ts_names[i].uid) == 0)
            return ts_names[i].name;
    return "unknown";
}

/* ---- value helpers ---- */

/* Length of value v[0..n) without trailing spaces/NULs, at most cap - 1. */
static size_t trimmed_len(const uint8_t *v, size_t n, size_t cap)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\0'))
        n--;
    return n > cap - 1 ? cap - 1 : n;
}

/* Copies a string value without trailing spaces/NULs, bytes outside printable
 * ASCII replaced by '?' (answers are JSON, which must be valid UTF-8). */
static void copy_str(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    n = trimmed_len(v, n, cap);
    for (size_t i = 0; i < n; i++)
        dst[i] = (v[i] >= 0x20 && v[i] < 0x7F) ? (char)v[i] : '?';
    dst[n] = '\0';
}

/* A patient/study value as stored (report/ copies it into the SR): trailing
 * spaces/NULs dropped, control characters other than ESC (ISO 2022) -> '?'. */
static void copy_raw(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    n = trimmed_len(v, n, cap);
    for (size_t i = 0; i < n; i++)
        dst[i] = (v[i] >= 0x20 || v[i] == 0x1B) ? (char)v[i] : '?';
    dst[n] = '\0';
}

/* First value of a multi-valued text (DS/IS) into dst, spaces trimmed. */
static void first_value(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    size_t i = 0, e;
    while (i < n && v[i] == ' ')
        i++;
    e = i;
    while (e < n && v[e] != '\\' && v[e] != '\0')
        e++;
    while (e > i && v[e - 1] == ' ')
        e--;
    size_t k = e - i;
    if (k > cap - 1)
        k = cap - 1;
    memcpy(dst, v + i, k);
    dst[k] = '\0';
}

/* Decimal String, locale-independent: [+-]digits[.digits][(e|E)[+-]digits].
 * Returns 1 and *out, 0 for empty, -1 for not a number. */
static int parse_ds(const uint8_t *v, size_t n, double *out)
{
    char s[72];
    first_value(s, sizeof s, v, n);
    const char *p = s;
    if (*p == '\0')
        return 0;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    uint64_t mant = 0;
    int exp10 = 0, digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (mant < 100000000000000000ull)
            mant = mant * 10 + (uint64_t)(*p - '0');
        else
            exp10++;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
            if (mant < 100000000000000000ull) {
                mant = mant * 10 + (uint64_t)(*p - '0');
                exp10--;
            }
        }
    }
    if (digits == 0)
        return -1;
    if (*p == 'e' || *p == 'E') {
        p++;
        int eneg = 0, e = 0, ed = 0;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; *p >= '0' && *p <= '9'; p++, ed++)
            if (e < 1000)
                e = e * 10 + (*p - '0');
        if (ed == 0)
            return -1;
        exp10 += eneg ? -e : e;
    }
    if (*p != '\0')
        return -1;
    double d = (double)mant;
    /* divide for negative exponents: 10^-k is inexact, 10^k is exact up to 22 */
    d = exp10 < 0 ? d / pow(10.0, -exp10) : d * pow(10.0, exp10);
    if (!isfinite(d))
        return -1;
    *out = neg ? -d : d;
    return 1;
}

/* Integer String, first value. 1 ok, 0 empty, -1 bad. */
static int parse_is(const uint8_t *v, size_t n, long *out)
{
    char s[32];
    first_value(s, sizeof s, v, n);
    const char *p = s;
    if (*p == '\0')
        return 0;
    int neg = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    long x = 0;
    int d = 0;
    for (; *p >= '0' && *p <= '9'; p++, d++) {
        if (x > 100000000L)
            return -1;
        x = x * 10 + (*p - '0');
    }
    if (d == 0 || *p != '\0')
        return -1;
    *out = neg ? -x : x;
    return 1;
}

static int is_long_vr(const uint8_t *vr)
{
    static const char long_vrs[][3] = {"OB", "OW", "OF", "SQ", "UT", "UN", "UC",
                                       "UR", "OD", "OL", "OV", "SV", "UV"};
    for (size_t i = 0; i < sizeof long_vrs / sizeof long_vrs[0]; i++)
        if (vr[0] == (uint8_t)long_vrs[i][0] && vr[1] == (uint8_t)long_vrs[i][1])
            return 1;
    return 0;
}

/* ---- element headers ---- */

typedef struct {
    uint32_t tag;
    uint8_t vr[2]; /* explicit VR, or "  " for implicit/items */
    uint32_t vlen;
    size_t value; /* offset of the value */
} elem;

/* Reads the element header at pos. Returns 0, or -1 with msg set. */
static int read_elem(const uint8_t *buf, size_t len, size_t pos, int implicit, elem *e, char *msg,
                     size_t msglen)
{
    if (pos > len || len - pos < 8) {
        chex_pre_msg(msg, msglen, "DICOM truncated: element header at offset %zu runs past the end",
                     pos);
        return -1;
    }
    const uint8_t *p = buf + pos;
    e->tag = TAG(le16(p), le16(p + 2));
    e->vr[0] = e->vr[1] = ' ';
    if ((e->tag >> 16) == 0xFFFE || implicit) {
        e->vlen = le32(p + 4);
        e->value = pos + 8;
        return 0;
    }
    if (p[4] < 'A' || p[4] > 'Z' || p[5] < 'A' || p[5] > 'Z') {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: element (%04X,%04X) at offset %zu has no valid VR",
                     (unsigned)(e->tag >> 16), (unsigned)(e->tag & 0xFFFF), pos);
        return -1;
    }
    e->vr[0] = p[4];
    e->vr[1] = p[5];
    if (is_long_vr(p + 4)) {
        if (len - pos < 12) {
            chex_pre_msg(msg, msglen,
                         "DICOM truncated: element header at offset %zu runs past the end", pos);
            return -1;
        }
        e->vlen = le32(p + 8);
        e->value = pos + 12;
    } else {
        e->vlen = le16(p + 6);
        e->value = pos + 8;
    }
    return 0;
}

static int value_fits(size_t len, const elem *e, char *msg, size_t msglen)
{
    if (e->value > len || len - e->value < e->vlen) {
        chex_pre_msg(msg, msglen,
                     "DICOM truncated: element (%04X,%04X) length %lu runs past the end (%zu bytes "
                     "left)",
                     (unsigned)(e->tag >> 16), (unsigned)(e->tag & 0xFFFF), (unsigned long)e->vlen,
                     e->value > len ? (size_t)0 : len - e->value);
        return 0;
    }
    return 1;
}

/* ---- top-level attributes ---- */

static chex_pre_err read_us(const elem *e, const uint8_t *v, int *out, const char *name, char *msg,
                            size_t msglen)
{
    if (e->vlen == 0)
        return CHEX_PRE_OK; /* empty: treated as absent */
    if (e->vlen < 2) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s has length %lu", name,
                     (unsigned long)e->vlen);
        return CHEX_PRE_ERR_MALFORMED;
    }
    *out = le16(v);
    return CHEX_PRE_OK;
}

static chex_pre_err read_ds(const elem *e, const uint8_t *v, double *out, int *present,
                            const char *name, char *msg, size_t msglen)
{
    int r = parse_ds(v, e->vlen, out);
    if (r < 0) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s is not a decimal number", name);
        return CHEX_PRE_ERR_MALFORMED;
    }
    if (r > 0 && present)
        *present = 1;
    return CHEX_PRE_OK;
}

typedef struct {
    double wc, ww;
    int has_wc, has_ww, has_slope, has_intercept;
} parse_extra;

static chex_pre_err top_level(chex_dicom_info *o, parse_extra *x, const elem *e, const uint8_t *v,
                              char *msg, size_t msglen)
{
    char s[32];
    chex_dicom_study *st = &o->study;
    switch (e->tag) {
#define STUDY_ATTR(g, el, field)                                                                  \
    case TAG(g, el):                                                                              \
        copy_raw(st->field, sizeof st->field, v, e->vlen);                                        \
        break;
        STUDY_ATTR(0x0008, 0x0005, specific_charset)
        STUDY_ATTR(0x0008, 0x0016, sop_class_uid)
        STUDY_ATTR(0x0008, 0x0020, study_date)
        STUDY_ATTR(0x0008, 0x0030, study_time)
        STUDY_ATTR(0x0008, 0x0050, accession_number)
        STUDY_ATTR(0x0008, 0x0090, referring_physician)
        STUDY_ATTR(0x0010, 0x0010, patient_name)
        STUDY_ATTR(0x0010, 0x0020, patient_id)
        STUDY_ATTR(0x0010, 0x0030, patient_birth_date)
        STUDY_ATTR(0x0010, 0x0040, patient_sex)
        STUDY_ATTR(0x0020, 0x0010, study_id)
#undef STUDY_ATTR
    case TAG_SOP_INSTANCE_UID:
        copy_str(o->ids.sop_instance_uid, sizeof o->ids.sop_instance_uid, v, e->vlen);
        break;
    case TAG_STUDY_UID:
        copy_str(o->ids.study_instance_uid, sizeof o->ids.study_instance_uid, v, e->vlen);
        break;
    case TAG_SERIES_UID:
        copy_str(o->ids.series_instance_uid, sizeof o->ids.series_instance_uid, v, e->vlen);
        break;
    case TAG_MODALITY:
        copy_str(o->ids.modality, sizeof o->ids.modality, v, e->vlen);
        break;
    case TAG_VIEW_POSITION:
        copy_str(o->ids.view_position, sizeof o->ids.view_position, v, e->vlen);
        break;
    case TAG_PHOTOMETRIC:
        copy_str(o->ids.photometric, sizeof o->ids.photometric, v, e->vlen);
        break;
    case TAG_SAMPLES_PER_PIXEL:
        return read_us(e, v, &o->samples_per_pixel, "Samples per Pixel", msg, msglen);
    case TAG_ROWS:
        return read_us(e, v, &o->rows, "Rows", msg, msglen);
    case TAG_COLUMNS:
        return read_us(e, v, &o->columns, "Columns", msg, msglen);
    case TAG_BITS_ALLOCATED:
        return read_us(e, v, &o->bits_allocated, "Bits Allocated", msg, msglen);
    case TAG_BITS_STORED:
        return read_us(e, v, &o->bits_stored, "Bits Stored", msg, msglen);
    case TAG_HIGH_BIT:
        return read_us(e, v, &o->high_bit, "High Bit", msg, msglen);
    case TAG_PIXEL_REPRESENTATION:
        return read_us(e, v, &o->pixel_representation, "Pixel Representation", msg, msglen);
    case TAG_NUMBER_OF_FRAMES:
        if (parse_is(v, e->vlen, &o->number_of_frames) < 0) {
            chex_pre_msg(msg, msglen, "DICOM malformed: Number of Frames is not an integer");
            return CHEX_PRE_ERR_MALFORMED;
        }
        break;
    case TAG_WINDOW_CENTER:
        return read_ds(e, v, &x->wc, &x->has_wc, "Window Center", msg, msglen);
    case TAG_WINDOW_WIDTH:
        return read_ds(e, v, &x->ww, &x->has_ww, "Window Width", msg, msglen);
    case TAG_RESCALE_SLOPE:
        return read_ds(e, v, &o->rescale_slope, &x->has_slope, "Rescale Slope", msg, msglen);
    case TAG_RESCALE_INTERCEPT:
        return read_ds(e, v, &o->rescale_intercept, &x->has_intercept, "Rescale Intercept", msg,
                       msglen);
    case TAG_VOI_LUT_FUNCTION:
        first_value(s, sizeof s, v, e->vlen);
        if (strcmp(s, "LINEAR_EXACT") == 0)
            o->voi_function = CHEX_DICOM_VOI_LINEAR_EXACT;
        else if (strcmp(s, "SIGMOID") == 0)
            o->voi_function = CHEX_DICOM_VOI_SIGMOID;
        else
            o->voi_function = CHEX_DICOM_VOI_LINEAR;
        break;
    default:
        break;
    }
    return CHEX_PRE_OK;
}

/* Encapsulated Pixel Data at value offset pos: items of defined length up to the
 * sequence delimiter. */
static chex_pre_err walk_encapsulated(const uint8_t *buf, size_t len, size_t pos,
                                      chex_dicom_info *o, char *msg, size_t msglen)
{
    size_t start = pos;
    for (;;) {
        elem e;
        if (read_elem(buf, len, pos, 1, &e, msg, msglen) != 0)
            return CHEX_PRE_ERR_MALFORMED;
        if (e.tag == TAG_SEQ_DELIM)
            break;
        if (e.tag != TAG_ITEM || e.vlen == UNDEF_LEN) {
            chex_pre_msg(msg, msglen,
                         "DICOM malformed: encapsulated pixel data has (%04X,%04X) at offset %zu "
                         "where a fragment item belongs",
                         (unsigned)(e.tag >> 16), (unsigned)(e.tag & 0xFFFF), pos);
            return CHEX_PRE_ERR_MALFORMED;
        }
        if (!value_fits(len, &e, msg, msglen))
            return CHEX_PRE_ERR_MALFORMED;
        pos = e.value + e.vlen;
    }
    o->pixel_data = buf + start;
    o->pixel_len = pos - start;
    return CHEX_PRE_OK;
}

/* File meta group: Explicit VR LE elements of group 0002 from offset 132.
 * Returns the offset of the data set in *dataset. */
static chex_pre_err read_meta(const uint8_t *buf, size_t len, chex_dicom_info *o, size_t *dataset,
                              char *msg, size_t msglen)
{
    size_t pos = 132;
    while (len - pos >= 2 && le16(buf + pos) == 0x0002) {
        elem e;
        if (read_elem(buf, len, pos, 0, &e, msg, msglen) != 0)
            return CHEX_PRE_ERR_MALFORMED;
        if (e.vlen == UNDEF_LEN) {
            chex_pre_msg(msg, msglen, "DICOM malformed: undefined length in the file meta group");
            return CHEX_PRE_ERR_MALFORMED;
        }
        if (!value_fits(len, &e, msg, msglen))
            return CHEX_PRE_ERR_MALFORMED;
        if (e.tag == TAG_TRANSFER_SYNTAX)
            copy_str(o->ids.transfer_syntax, sizeof o->ids.transfer_syntax, buf + e.value, e.vlen);
        pos = e.value + e.vlen;
    }
    if (o->ids.transfer_syntax[0] == '\0') {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: no Transfer Syntax UID (0002,0010) in the file "
                     "meta group");
        return CHEX_PRE_ERR_MALFORMED;
    }
    *dataset = pos;
    return CHEX_PRE_OK;
}

chex_pre_err chex_dicom_parse(const uint8_t *buf, size_t len, chex_dicom_info *o, char *msg,
                              size_t msglen)
{
    if (!o || (!buf && len)) {
        chex_pre_msg(msg, msglen, "chex_dicom_parse: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    memset(o, 0, sizeof *o);
    o->rows = o->columns = -1;
    o->bits_allocated = o->bits_stored = o->high_bit = -1;
    o->samples_per_pixel = 1;
    o->number_of_frames = 1;
    o->rescale_slope = 1.0;
    if (len == 0) {
        chex_pre_msg(msg, msglen, "empty body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (len < 132 || memcmp(buf + 128, "DICM", 4) != 0) {
        chex_pre_msg(msg, msglen, "not a DICOM Part 10 file (no \"DICM\" at offset 128)");
        return CHEX_PRE_ERR_FORMAT;
    }
    size_t pos;
    chex_pre_err err = read_meta(buf, len, o, &pos, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;

    const char *ts = o->ids.transfer_syntax;
    int encapsulated_ts = 0;
    if (strcmp(ts, TS_IMPLICIT_LE) == 0)
        o->implicit_vr = 1;
    else if (chex_dicom_codec_for(ts) != CHEX_DICOM_CODEC_NONE)
        encapsulated_ts = 1;
    else if (strcmp(ts, TS_DEFLATED_LE) == 0) {
        o->deflated = 1;
        o->dataset_offset = pos;
        return CHEX_PRE_OK;
    } else if (strcmp(ts, TS_EXPLICIT_LE) != 0) {
        chex_pre_msg(msg, msglen,
                     "DICOM transfer syntax %s (%s) is not supported; send Explicit or Implicit "
                     "VR Little Endian (%s), JPEG Baseline, Lossless, JPEG-LS, JPEG 2000, RLE "
                     "or Deflated",
                     ts, ts_name(ts), TS_EXPLICIT_LE);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    return parse_dataset(buf, len, pos, o, encapsulated_ts, len, msg, msglen);
}

chex_pre_err chex_dicom_parse_inflated(const chex_dicom_info *meta, const uint8_t *ds, size_t len,
                                       chex_dicom_info *o, char *msg, size_t msglen)
{
    return chex_dicom_parse_inflated_head(meta, ds, len, len, o, msg, msglen);
}

chex_pre_err chex_dicom_parse_inflated_head(const chex_dicom_info *meta, const uint8_t *ds,
                                            size_t len, size_t total, chex_dicom_info *o,
                                            char *msg, size_t msglen)
{
    if (!meta || !o || (!ds && len) || total < len) {
        chex_pre_msg(msg, msglen, "chex_dicom_parse_inflated: NULL argument or total < len");
        return CHEX_PRE_ERR_ARG;
    }
    chex_dicom_info m = *meta;
    memset(o, 0, sizeof *o);
    o->rows = o->columns = -1;
    o->bits_allocated = o->bits_stored = o->high_bit = -1;
    o->samples_per_pixel = 1;
    o->number_of_frames = 1;
    o->rescale_slope = 1.0;
    o->ids = m.ids;
    return parse_dataset(ds, len, 0, o, 0, total, msg, msglen);
}

/* The data set from pos: explicit or implicit VR LE (o->implicit_vr), pixel
 * data native or, when encapsulated_ts, in fragment items. buf[0..len) may be
 * the head of a data set of total bytes: native Pixel Data must fit in total. */
static chex_pre_err parse_dataset(const uint8_t *buf, size_t len, size_t pos, chex_dicom_info *o,
                                  int encapsulated_ts, size_t total, char *msg, size_t msglen)
{
    const char *ts = o->ids.transfer_syntax;
    chex_pre_err err;

    /* A data set labelled explicit but written implicit (seen from some
     * modalities): the first element has no VR letters where the VR belongs. */
    if (!o->implicit_vr && len - pos >= 8 && le16(buf + pos) != 0xFFFE &&
        (buf[pos + 4] < 'A' || buf[pos + 4] > 'Z' || buf[pos + 5] < 'A' || buf[pos + 5] > 'Z'))
        o->implicit_vr = 1;

    /* Open undefined-length sequences and items; each level knows its encoding
     * (an undefined-length UN sequence holds Implicit VR LE, PS3.5 6.2.2). */
    struct {
        uint8_t is_item, implicit;
    } stack[CHEX_DICOM_MAX_DEPTH];
    int depth = 0;
    parse_extra x = {0};
    while (pos < len) {
        int implicit = depth ? stack[depth - 1].implicit : o->implicit_vr;
        elem e;
        if (read_elem(buf, len, pos, implicit, &e, msg, msglen) != 0)
            return CHEX_PRE_ERR_MALFORMED;
        if ((e.tag >> 16) == 0xFFFE) {
            if (e.tag == TAG_ITEM && depth > 0 && !stack[depth - 1].is_item) {
                if (e.vlen != UNDEF_LEN) {
                    if (!value_fits(len, &e, msg, msglen))
                        return CHEX_PRE_ERR_MALFORMED;
                    pos = e.value + e.vlen;
                    continue;
                }
                if (depth == CHEX_DICOM_MAX_DEPTH)
                    goto too_deep;
                stack[depth].is_item = 1;
                stack[depth].implicit = (uint8_t)implicit;
                depth++;
            } else if (e.tag == TAG_ITEM_DELIM && depth > 0 && stack[depth - 1].is_item) {
                depth--;
            } else if (e.tag == TAG_SEQ_DELIM && depth > 0 && !stack[depth - 1].is_item) {
                depth--;
            } else {
                chex_pre_msg(msg, msglen, "DICOM malformed: misplaced (%04X,%04X) at offset %zu",
                             (unsigned)(e.tag >> 16), (unsigned)(e.tag & 0xFFFF), pos);
                return CHEX_PRE_ERR_MALFORMED;
            }
            pos = e.value;
            continue;
        }
        if (depth == 0 && e.tag == TAG_PIXEL_DATA) {
            if (e.vlen == UNDEF_LEN) {
                if (!encapsulated_ts) {
                    chex_pre_msg(msg, msglen,
                                 "DICOM malformed: encapsulated Pixel Data in "
                                 "transfer syntax %s",
                                 ts);
                    return CHEX_PRE_ERR_MALFORMED;
                }
                o->encapsulated = 1;
                err = walk_encapsulated(buf, len, e.value, o, msg, msglen);
            } else if (encapsulated_ts) {
                chex_pre_msg(msg, msglen,
                             "DICOM malformed: native Pixel Data in transfer "
                             "syntax %s",
                             ts);
                err = CHEX_PRE_ERR_MALFORMED;
            } else if (value_fits(total, &e, msg, msglen)) {
                o->pixel_data = buf + e.value;
                o->pixel_len = e.vlen;
            } else {
                err = CHEX_PRE_ERR_MALFORMED;
            }
            if (err != CHEX_PRE_OK)
                return err;
            break; /* what follows the pixel data is not needed */
        }
        if (e.vlen == UNDEF_LEN) {
            if (depth == CHEX_DICOM_MAX_DEPTH)
                goto too_deep;
            stack[depth].is_item = 0;
            stack[depth].implicit = (uint8_t)(implicit || (e.vr[0] == 'U' && e.vr[1] == 'N'));
            depth++;
            pos = e.value;
            continue;
        }
        if (!value_fits(len, &e, msg, msglen))
            return CHEX_PRE_ERR_MALFORMED;
        if (depth == 0) {
            err = top_level(o, &x, &e, buf + e.value, msg, msglen);
            if (err != CHEX_PRE_OK)
                return err;
        }
        pos = e.value + e.vlen;
    }
    if (depth > 0) {
        chex_pre_msg(msg, msglen,
                     "DICOM truncated: a sequence is still open at the end of the data");
        return CHEX_PRE_ERR_MALFORMED;
    }
    o->has_rescale = x.has_slope || x.has_intercept;
    o->ids.frames = o->number_of_frames;
    if (x.has_wc && x.has_ww) {
        o->has_window = 1;
        o->window_center = x.wc;
        o->window_width = x.ww;
    }
    return CHEX_PRE_OK;

too_deep:
    chex_pre_msg(msg, msglen, "DICOM malformed: sequences nested deeper than %d levels",
                 CHEX_DICOM_MAX_DEPTH);
    return CHEX_PRE_ERR_MALFORMED;
}

/* Without an offset table: does this fragment begin a new frame? RLE frames
 * are one fragment each (PS3.5 A.4.2); JPEG family streams start with SOI,
 * JPEG 2000 with SOC or the JP2 signature box. */
static int starts_frame(const chex_dicom_info *info, const uint8_t *v, size_t n)
{
    if (chex_dicom_codec_for(info->ids.transfer_syntax) == CHEX_DICOM_CODEC_RLE)
        return 1;
    if (n >= 2 && v[0] == 0xFF && (v[1] == 0xD8 || v[1] == 0x4F))
        return 1;
    return n >= 8 && memcmp(v, "\0\0\0\x0CjP  ", 8) == 0;
}

chex_pre_err chex_dicom_first_frame(const chex_dicom_info *info, uint8_t *dst, size_t dstcap,
                                    size_t *nbytes, char *msg, size_t msglen)
{
    const uint8_t *p = info->pixel_data;
    size_t len = info->pixel_len, pos = 0;
    elem e;
    /* basic offset table: the first item, maybe empty */
    if (!p || read_elem(p, len, 0, 1, &e, msg, msglen) != 0 || e.tag != TAG_ITEM ||
        !value_fits(len, &e, msg, msglen)) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: encapsulated pixel data without a basic offset "
                     "table item");
        return CHEX_PRE_ERR_MALFORMED;
    }
    size_t first = e.value + e.vlen;
    size_t end_rel = SIZE_MAX; /* offset of frame 2's first item, relative to first */
    if (info->number_of_frames > 1 && e.vlen >= 8)
        end_rel = le32(p + e.value + 4);
    size_t total = 0, nfrag = 0;
    for (pos = first; pos < len; pos = e.value + e.vlen) {
        if (read_elem(p, len, pos, 1, &e, msg, msglen) != 0)
            return CHEX_PRE_ERR_MALFORMED;
        if (e.tag != TAG_ITEM || !value_fits(len, &e, msg, msglen)) {
            chex_pre_msg(msg, msglen, "DICOM malformed: bad fragment item at pixel data offset %zu",
                         pos);
            return CHEX_PRE_ERR_MALFORMED;
        }
        if (pos - first >= end_rel)
            break;
        if (info->number_of_frames > 1 && end_rel == SIZE_MAX && nfrag > 0 &&
            starts_frame(info, p + e.value, e.vlen))
            break;
        if (dst) {
            if (dstcap - total < e.vlen) {
                chex_pre_msg(msg, msglen, "chex_dicom_first_frame: destination too small");
                return CHEX_PRE_ERR_ARG;
            }
            memcpy(dst + total, p + e.value, e.vlen);
        }
        total += e.vlen;
        nfrag++;
    }
    if (nfrag == 0 || total == 0) {
        chex_pre_msg(msg, msglen, "DICOM malformed: encapsulated pixel data has no fragment");
        return CHEX_PRE_ERR_MALFORMED;
    }
    *nbytes = total;
    return CHEX_PRE_OK;
}

/* ---- pixel pipeline ---- */

typedef struct {
    const chex_dicom_frame *f;
    int shift;           /* high_bit + 1 - bits_stored */
    uint32_t mask;       /* (1 << bits_stored) - 1 */
    uint32_t sign;       /* sign bit within the stored value, 0 when unsigned */
    double slope, intercept;
} sampler;

static uint32_t raw_sample(const chex_dicom_frame *f, size_t i)
{
    const uint8_t *p = f->data + i * (size_t)f->bytes;
    return f->bytes == 1 ? p[0] : f->bytes == 2 ? le16(p) : le32(p);
}

static double stored_value(const sampler *s, uint32_t raw)
{
    uint32_t u = (raw >> s->shift) & s->mask;
    if (s->sign && (u & s->sign))
        return (double)u - 2.0 * (double)s->sign;
    return (double)u;
}

/* Smallest and largest stored value (as stored_value gives them) of the
 * samples [i0, i1): one plain loop per sample width, which the compiler
 * vectorises (a DX frame is 7.5 million samples). */
static void stored_extremes(const sampler *s, size_t i0, size_t i1, double *vmin, double *vmax)
{
    const chex_dicom_frame *f = s->f;
    const int shift = s->shift;
    const uint32_t mask = s->mask, sign = s->sign;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    if (f->bytes == 2) {
        const uint8_t *p = f->data;
        for (size_t i = i0; i < i1; i++) {
            uint32_t u = ((uint32_t)le16(p + 2 * i) >> shift) & mask;
            int32_t v = (int32_t)(u ^ sign) - (int32_t)sign; /* sign == 0: v == u */
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    } else {
        for (size_t i = i0; i < i1; i++) {
            uint32_t u = (raw_sample(f, i) >> shift) & mask;
            int32_t v = (int32_t)(u ^ sign) - (int32_t)sign;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    *vmin = lo;
    *vmax = hi;
}

/* Modality value of pixel i (PS3.3 C.7.6.3.1.4 stored value, then rescale);
 * three samples per pixel are reduced to their luma first. */
static double modality_value(const sampler *s, size_t i)
{
    const chex_dicom_frame *f = s->f;
    double v;
    if (f->samples_per_pixel == 3) {
        double r = stored_value(s, raw_sample(f, 3 * i)),
               g = stored_value(s, raw_sample(f, 3 * i + 1)),
               b = stored_value(s, raw_sample(f, 3 * i + 2));
        v = floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5);
    } else {
        v = stored_value(s, raw_sample(f, i));
    }
    return v * s->slope + s->intercept;
}

/* VOI LUT functions of PS3.3 C.11.2.1.2 with output range [0,1]. */
static double voi(double x, double c, double w, chex_dicom_voi f)
{
    switch (f) {
    case CHEX_DICOM_VOI_SIGMOID:
        return 1.0 / (1.0 + exp(-4.0 * (x - c) / w));
    case CHEX_DICOM_VOI_LINEAR_EXACT:
        if (x <= c - w / 2)
            return 0.0;
        if (x > c + w / 2)
            return 1.0;
        return (x - c) / w + 0.5;
    case CHEX_DICOM_VOI_LINEAR:
    default:
        if (x <= c - 0.5 - (w - 1) / 2)
            return 0.0;
        if (x > c - 0.5 + (w - 1) / 2)
            return 1.0;
        return (x - (c - 0.5)) / (w - 1) + 0.5;
    }
}

static const char *voi_scaling(chex_dicom_voi f)
{
    return f == CHEX_DICOM_VOI_SIGMOID        ? "window-sigmoid"
           : f == CHEX_DICOM_VOI_LINEAR_EXACT ? "window-exact"
                                              : "window";
}

/* Modality value -> [0,1]: the window's VOI function, or min..max. */
static float output_value(double v, int window, double lo, double range, int mono1,
                          const chex_dicom_info *d)
{
    double o;
    if (window)
        o = voi(v, d->window_center, d->window_width, d->voi_function);
    else
        o = range > 0 ? (v - lo) / range : 0.0;
    o = o < 0.0 ? 0.0 : o > 1.0 ? 1.0 : o; /* rounding at the window's edges */
    return (float)(mono1 ? 1.0 - o : o);
}

/* min..max of the frame's modality values: lo and hi - lo. In nb parts on
 * nt threads, combined in order with the same comparisons as one pass (the
 * first of equal extremes wins, as there), so the same doubles. */
static void frame_extremes(const sampler *s, int use_lut, size_t npix, int nb, int nt,
                           double *lo_out, double *range_out)
{
    double plo[CHEX_PRE_MAX_BANDS], phi[CHEX_PRE_MAX_BANDS];
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nb > 1)
    for (int t = 0; t < nb; t++) {
        size_t i0 = npix * (size_t)t / (size_t)nb, i1 = npix * (size_t)(t + 1) / (size_t)nb;
        if (use_lut) {
            stored_extremes(s, i0, i1, &plo[t], &phi[t]);
        } else {
            double lo = INFINITY, hi = -INFINITY;
            for (size_t i = i0; i < i1; i++) {
                double v = modality_value(s, i);
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            plo[t] = lo;
            phi[t] = hi;
        }
    }
    double lo, hi;
    if (use_lut) {
        /* stored extremes (integers, exact), then the monotonic rescale */
        double smin_v = plo[0], smax_v = phi[0];
        for (int t = 1; t < nb; t++) {
            smin_v = plo[t] < smin_v ? plo[t] : smin_v;
            smax_v = phi[t] > smax_v ? phi[t] : smax_v;
        }
        double a = smin_v * s->slope + s->intercept, b = smax_v * s->slope + s->intercept;
        lo = a < b ? a : b;
        hi = a < b ? b : a;
    } else {
        lo = INFINITY;
        hi = -INFINITY;
        for (int t = 0; t < nb; t++) {
            lo = plo[t] < lo ? plo[t] : lo;
            hi = phi[t] > hi ? phi[t] : hi;
        }
    }
    *lo_out = lo;
    *range_out = hi - lo;
}

/* What a frame's row y is made of: a table of the stored values or, past
 * 16 bits or for 3 samples per pixel, each pixel's modality value mapped. */
typedef struct {
    const chex_dicom_info *d;
    const sampler *s;
    const float *lut;
    int window, mono1;
    double lo, range;
} frame_rows;

static void frame_row(void *ctx, int y, float *dst)
{
    const frame_rows *fr = ctx;
    const sampler *s = fr->s;
    const chex_dicom_frame *f = s->f;
    const size_t W = (size_t)f->width;
    if (fr->lut && f->bytes == 2) {
        const float *lut = fr->lut;
        const uint8_t *p = f->data + (size_t)y * W * 2;
        for (size_t x = 0; x < W; x++)
            dst[x] = lut[((uint32_t)le16(p + 2 * x) >> s->shift) & s->mask];
    } else if (fr->lut) {
        for (size_t x = 0; x < W; x++)
            dst[x] = fr->lut[(raw_sample(f, (size_t)y * W + x) >> s->shift) & s->mask];
    } else {
        for (size_t x = 0; x < W; x++)
            dst[x] = output_value(modality_value(s, (size_t)y * W + x), fr->window, fr->lo,
                                  fr->range, fr->mono1, fr->d);
    }
}

chex_pre_err chex_dicom_frame_rows(const chex_dicom_info *d, const chex_dicom_frame *f,
                                   chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                   size_t msglen)
{
    int bs = f->bits_stored, hb = f->high_bit;
    if (!f->data || f->width != d->columns || f->height != d->rows || f->width < 1 ||
        f->height < 1 || (f->samples_per_pixel != 1 && f->samples_per_pixel != 3) ||
        (f->bytes != 1 && f->bytes != 2 && f->bytes != 4) || bs < 1 || bs > 8 * f->bytes ||
        hb >= 8 * f->bytes || hb + 1 < bs) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: decoded frame is %dx%d, %d samples of %d bytes (%d bits "
                     "at high bit %d); Rows/Columns say %dx%d",
                     f->width, f->height, f->samples_per_pixel, f->bytes, bs, hb, d->columns,
                     d->rows);
        return CHEX_PRE_ERR_MALFORMED;
    }
    sampler s = {.f = f, .shift = hb + 1 - bs};
    s.mask = bs >= 32 ? 0xFFFFFFFFu : (1u << bs) - 1u;
    s.sign = f->is_signed ? 1u << (bs - 1) : 0u;
    s.slope = d->rescale_slope;
    s.intercept = d->rescale_intercept;

    /* the rescaled range of every possible stored value must stay finite */
    double smin = s.sign ? -(double)s.sign : 0.0;
    double smax = s.sign ? (double)s.sign - 1.0 : (double)s.mask;
    if (!isfinite(smin * s.slope + s.intercept) || !isfinite(smax * s.slope + s.intercept)) {
        chex_pre_msg(msg, msglen, "DICOM malformed: Rescale Slope/Intercept overflow");
        return CHEX_PRE_ERR_MALFORMED;
    }
    int mono1 = strcmp(d->ids.photometric, "MONOCHROME1") == 0;
    const size_t npix = (size_t)f->width * (size_t)f->height;
    /* A window of width < 1 (LINEAR) or <= 0 means no usable window. */
    int window =
        d->has_window && isfinite(d->window_center) && isfinite(d->window_width) &&
        (d->voi_function == CHEX_DICOM_VOI_LINEAR ? d->window_width >= 1.0
                                                  : d->window_width > 0.0);
    /* Up to 16 bits stored, one sample per pixel: every output value comes
     * from a table of the 2^bits_stored stored values, computed by the same
     * function as the per-pixel path (so the same floats), and min..max
     * from the stored values' own extremes (the rescale is monotonic). */
    int use_lut = f->samples_per_pixel == 1 && bs <= CHEX_DICOM_LUT_BITS;
    /* a large frame in stream mode: its rows in nb bands on nt threads */
    int nb = rows->img || omp_in_parallel() ? 1 : chex_pre_band_count(rows->threads, f->width,
                                                                      f->height);
    int nt = nb > 1 ? (rows->threads < nb ? rows->threads : nb) : 1;
    double lo = 0.0, range = 0.0;
    if (!window) /* min..max: a first pass over the samples, no buffer */
        frame_extremes(&s, use_lut, npix, nb, nt, &lo, &range);
    meta->width = f->width;
    meta->height = f->height;
    meta->channels = 1;
    snprintf(meta->format, sizeof meta->format, "dicom");
    meta->bit_depth = bs;
    snprintf(meta->scaling, sizeof meta->scaling, "%s",
             window ? voi_scaling(d->voi_function) : "minmax");
    meta->is_dicom = 1;
    meta->dicom = d->ids;
    float *lut = NULL;
    if (use_lut) {
        lut = malloc(((size_t)1 << bs) * sizeof *lut);
        if (!lut) {
            chex_pre_msg(msg, msglen, "out of memory");
            return CHEX_PRE_ERR_NOMEM;
        }
    }
    chex_pre_err e = chex_pre_rows_begin(rows, f->width, f->height, 1, msg, msglen);
    if (e != CHEX_PRE_OK) {
        free(lut);
        return e;
    }
    if (lut) {
#pragma omp parallel for schedule(dynamic, 1024) num_threads(nt) if (nb > 1)
        for (uint32_t u = 0; u < (1u << bs); u++) {
            double v = stored_value(&s, u << s.shift) * s.slope + s.intercept;
            lut[u] = output_value(v, window, lo, range, mono1, d);
        }
    }
    frame_rows fr = {.d = d, .s = &s, .lut = lut, .window = window, .mono1 = mono1, .lo = lo,
                     .range = range};
    if (nb > 1) {
        e = chex_pre_rows_banded(rows, nb, nt, frame_row, &fr, msg, msglen);
    } else {
        for (int y = 0; y < f->height; y++) {
            frame_row(&fr, y, chex_pre_rows_next(rows)[0]);
            chex_pre_rows_commit(rows);
        }
    }
    free(lut);
    if (e != CHEX_PRE_OK)
        return e;
    chex_pre_rows_finish(rows, 0, 0.0f, 0.0f);
    return CHEX_PRE_OK;
}

/* The first fragment after the basic offset table (the JPEG header is in it). */
static int first_fragment(const chex_dicom_info *info, const uint8_t **p, size_t *n)
{
    const uint8_t *b = info->pixel_data;
    size_t len = info->pixel_len;
    elem e;
    if (!b || read_elem(b, len, 0, 1, &e, NULL, 0) != 0 || e.tag != TAG_ITEM ||
        !value_fits(len, &e, NULL, 0))
        return -1;
    size_t pos = e.value + e.vlen;
    if (read_elem(b, len, pos, 1, &e, NULL, 0) != 0 || e.tag != TAG_ITEM ||
        !value_fits(len, &e, NULL, 0))
        return -1;
    *p = b + e.value;
    *n = e.vlen;
    return 0;
}

/* JPEG Baseline: scanlines -> the 8-bit gray frame (one sample per pixel: a
 * 3-channel answer is gray replicated, its luma keeps it). */
typedef struct {
    uint8_t *frame;
    int w, h, oc, y;
    float lut[256];
} jframe;

static chex_pre_err jframe_begin(void *ctx, int w, int h, int oc, char *msg, size_t msglen)
{
    jframe *j = ctx;
    j->oc = oc;
    if (w != j->w || h != j->h) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: JPEG frame is %dx%d with %d channels, Rows/Columns say "
                     "%dx%d",
                     w, h, oc, j->w, j->h);
        return CHEX_PRE_ERR_MALFORMED;
    }
    j->frame = malloc((size_t)w * (size_t)h);
    if (!j->frame) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    return CHEX_PRE_OK;
}

static void jframe_row(void *ctx, const uint8_t *line)
{
    jframe *j = ctx;
    uint8_t *dst = j->frame + (size_t)j->y++ * (size_t)j->w;
    if (j->oc == 1) {
        memcpy(dst, line, (size_t)j->w);
        return;
    }
    for (int x = 0; x < j->w; x++) {
        const uint8_t *p = line + 3 * x;
        double g = 0.299 * j->lut[p[0]] + 0.587 * j->lut[p[1]] + 0.114 * j->lut[p[2]];
        double v = floor(g * 255.0 + 0.5);
        dst[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

/* Decodes the first JPEG Baseline (or 8-bit JPEG Extended) frame into *frame
 * (malloc'd, w*h bytes). */
static chex_pre_err decode_jpeg_frame(const chex_dicom_info *info, const chex_pre_opts *opts,
                                      uint8_t **frame, char *msg, size_t msglen)
{
    size_t n = 0;
    chex_pre_err err = chex_dicom_first_frame(info, NULL, 0, &n, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    uint8_t *bytes = malloc(n); /* n <= pixel_len, which lies inside the request */
    if (!bytes) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    err = chex_dicom_first_frame(info, bytes, n, &n, msg, msglen);
    jframe j = {.w = info->columns, .h = info->rows};
    for (int i = 0; i < 256; i++)
        j.lut[i] = (float)i / 255.0f;
    if (err == CHEX_PRE_OK)
        err = chex_pre_jpeg_scan(bytes, n, opts, jframe_begin, jframe_row, &j, msg, msglen);
    free(bytes);
    if (err != CHEX_PRE_OK) {
        free(j.frame);
        if (err == CHEX_PRE_ERR_FORMAT || err == CHEX_PRE_ERR_EMPTY) {
            chex_pre_msg(msg, msglen, "DICOM malformed: %s frame is not a JPEG stream",
                         ts_name(info->ids.transfer_syntax));
            err = CHEX_PRE_ERR_MALFORMED;
        } else if (err == CHEX_PRE_ERR_UNSUPPORTED &&
                   strcmp(info->ids.transfer_syntax, TS_JPEG_EXTENDED) == 0) {
            /* 8-bit JPEG Extended decodes above; 12-bit has no maintained C decoder in
             * Debian 12 (docs/API.md) */
            chex_pre_msg(msg, msglen,
                         "DICOM transfer syntax %s (JPEG Extended) with 12-bit samples is not "
                         "supported: Debian 12's libjpeg-turbo 2.1.5 decodes 8-bit JPEG only; "
                         "send JPEG Lossless, JPEG-LS, JPEG 2000 or uncompressed",
                         TS_JPEG_EXTENDED);
        }
        return err;
    }
    *frame = j.frame;
    return CHEX_PRE_OK;
}

/* Deflated Explicit VR LE: the most the data set may inflate to (4 bytes per
 * allowed pixel plus 64 MiB of other attributes). */
static size_t inflate_limit(const chex_pre_opts *opts)
{
    uint64_t maxpix = opts->max_pixels && opts->max_pixels < CHEX_PRE_HARD_MAX_PIXELS
                          ? opts->max_pixels
                          : CHEX_PRE_HARD_MAX_PIXELS;
    uint64_t max_out = 4 * maxpix + (UINT64_C(64) << 20);
    return max_out > SIZE_MAX ? SIZE_MAX : (size_t)max_out;
}

/* Deflated Explicit VR LE: the most of the inflated data set the probe reads
 * (heap taken before the memory budget's reservation): the attributes before
 * Pixel Data must lie in its first DEFLATE_HEAD_MAX bytes. */
#define DEFLATE_HEAD_MAX ((size_t)4 << 20)
/* zlib's inflate state and window, with margin */
#define INFLATE_STATE_BYTES 65536u

/* Deflated Explicit VR LE: parses the data set into *d, which then points into
 * *inflated (caller frees, also on error); *n gets the inflated size. The
 * size is counted first (a deflate bomb stops at inflate_limit with nothing
 * allocated). head_only (the probe): only the data set's head up to Pixel
 * Data is inflated, at most DEFLATE_HEAD_MAX bytes, growing from 64 KiB;
 * d->pixel_data then must not be read. Else the whole data set. */
static chex_pre_err inflate_dataset(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                    int head_only, chex_dicom_info *d, uint8_t **inflated,
                                    size_t *n, char *msg, size_t msglen)
{
    *n = 0;
    if (d->dataset_offset > len) {
        chex_pre_msg(msg, msglen, "DICOM malformed: data set offset past the end");
        return CHEX_PRE_ERR_MALFORMED;
    }
    const uint8_t *src = buf + d->dataset_offset;
    size_t clen = len - d->dataset_offset;
    chex_dicom_info meta = *d;
    if (!head_only) {
        chex_pre_err err = chex_deflate_inflate(src, clen, inflate_limit(opts), inflated, n, msg,
                                                msglen);
        if (err == CHEX_PRE_OK)
            err = chex_dicom_parse_inflated(&meta, *inflated, *n, d, msg, msglen);
        return err;
    }
    chex_pre_err err = chex_deflate_size(src, clen, inflate_limit(opts), n, msg, msglen);
    size_t have = *n < 65536 ? *n : 65536;
    while (err == CHEX_PRE_OK) {
        free(*inflated);
        *inflated = malloc(have ? have : 1);
        if (!*inflated) {
            chex_pre_msg(msg, msglen, "out of memory");
            return CHEX_PRE_ERR_NOMEM;
        }
        size_t got = 0;
        err = chex_deflate_head(src, clen, *inflated, have, &got, msg, msglen);
        if (err != CHEX_PRE_OK)
            break;
        err = chex_dicom_parse_inflated_head(&meta, *inflated, got, *n, d, msg, msglen);
        if (have == *n || (err == CHEX_PRE_OK && d->pixel_data))
            break;
        if (have == DEFLATE_HEAD_MAX) {
            chex_pre_msg(msg, msglen,
                         "DICOM Deflated Explicit VR Little Endian data set has more than %zu "
                         "bytes of attributes before Pixel Data (the most chexd inflates before "
                         "reserving memory)",
                         DEFLATE_HEAD_MAX);
            return CHEX_PRE_ERR_TOO_LARGE;
        }
        have = have > *n / 2 ? *n : 2 * have;
        if (have > DEFLATE_HEAD_MAX)
            have = DEFLATE_HEAD_MAX;
        err = CHEX_PRE_OK;
    }
    return err;
}

/* Parses and checks everything the header says; *bs and *hb get Bits
 * Stored and High Bit with their defaults. A deflated data set is inflated
 * (only its head when head_only, see inflate_dataset) into *inflated (caller
 * frees, also on error; NULL otherwise), *inflated_len its whole size, and
 * *d points into it. */
static chex_pre_err check_header(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_dicom_info *d, int *bs_out, int *hb_out,
                                 uint8_t **inflated, size_t *inflated_len, int head_only,
                                 char *msg, size_t msglen)
{
    *inflated = NULL;
    *inflated_len = 0;
    chex_pre_err err = chex_dicom_parse(buf, len, d, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    if (d->deflated) {
        err = inflate_dataset(buf, len, opts, head_only, d, inflated, inflated_len, msg, msglen);
        if (err != CHEX_PRE_OK)
            return err;
    }
    if (!d->pixel_data) {
        chex_pre_msg(msg, msglen, "DICOM has no Pixel Data (7FE0,0010): not an image");
        return CHEX_PRE_ERR_UNUSABLE;
    }
    if (d->samples_per_pixel != 1) {
        chex_pre_msg(msg, msglen,
                     "DICOM with Samples per Pixel %d is not supported (only 1: "
                     "grayscale)",
                     d->samples_per_pixel);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    int mono1 = strcmp(d->ids.photometric, "MONOCHROME1") == 0;
    if (!mono1 && strcmp(d->ids.photometric, "MONOCHROME2") != 0) {
        if (d->ids.photometric[0] == '\0') {
            chex_pre_msg(msg, msglen, "DICOM malformed: no Photometric Interpretation (0028,0004)");
            return CHEX_PRE_ERR_MALFORMED;
        }
        chex_pre_msg(msg, msglen,
                     "DICOM Photometric Interpretation %s is not supported "
                     "(MONOCHROME1 or MONOCHROME2)",
                     d->ids.photometric);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    if (d->rows < 0 || d->columns < 0 || d->bits_allocated < 0) {
        chex_pre_msg(msg, msglen, "DICOM malformed: no %s",
                     d->rows < 0      ? "Rows (0028,0010)"
                     : d->columns < 0 ? "Columns (0028,0011)"
                                      : "Bits Allocated (0028,0100)");
        return CHEX_PRE_ERR_MALFORMED;
    }
    if (d->bits_allocated != 8 && d->bits_allocated != 16) {
        chex_pre_msg(msg, msglen, "DICOM with Bits Allocated %d is not supported (8 or 16)",
                     d->bits_allocated);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    int bs = d->bits_stored < 0 ? d->bits_allocated : d->bits_stored;
    int hb = d->high_bit < 0 ? bs - 1 : d->high_bit;
    if (bs < 1 || bs > d->bits_allocated || hb >= d->bits_allocated || hb + 1 < bs ||
        d->pixel_representation > 1 || d->number_of_frames < 1) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: Bits Allocated %d, Bits Stored %d, High Bit %d, Pixel "
                     "Representation %d, Number of Frames %ld do not fit together",
                     d->bits_allocated, bs, hb, d->pixel_representation, d->number_of_frames);
        return CHEX_PRE_ERR_MALFORMED;
    }
    err = chex_pre_check_dims((uint64_t)d->columns, (uint64_t)d->rows, opts, "DICOM image", msg,
                              msglen);
    if (err != CHEX_PRE_OK)
        return err;
    if (d->has_rescale && (d->rescale_slope == 0.0 || !isfinite(d->rescale_slope))) {
        chex_pre_msg(msg, msglen, "DICOM malformed: Rescale Slope is 0");
        return CHEX_PRE_ERR_MALFORMED;
    }
    *bs_out = bs;
    *hb_out = hb;
    return CHEX_PRE_OK;
}

/* Heap the codecs.h path can take beyond the copied frame (n bytes) and the
 * uint16 frame (2 bytes a sample) for a w x h one-sample frame: the decoder's
 * own buffers. OpenJPEG holds an int32 per sample in the image and as much
 * again in its tile, plus code-block buffers, its stream buffer (1 MiB) and
 * the codestream read into memory; CharLS its line buffers and state; JPEG
 * Lossless two int rows per component; RLE nothing. */
static uint64_t codec_bytes(chex_dicom_codec codec, uint64_t w, uint64_t h, uint64_t n)
{
    uint64_t s = w * h;
    switch (codec) {
    case CHEX_DICOM_CODEC_J2K:
        return 12 * s + 2 * n + (UINT64_C(4) << 20);
    case CHEX_DICOM_CODEC_JPEG_LS:
        return 64 * w + (UINT64_C(1) << 20);
    case CHEX_DICOM_CODEC_JPEG_LOSSLESS:
        return 32 * w + (UINT64_C(256) << 10);
    default:
        return 0;
    }
}

/* Precision and signedness a JPEG 2000 frame's codestream declares, read from
 * its first fragment (the main header is there); 0 when unreadable. *tiles
 * gets the tiles its SIZ declares (0 when not found). */
static int j2k_header(const chex_dicom_info *d, chex_codec_frame *f, uint64_t *tiles)
{
    const uint8_t *p;
    size_t fl;
    *tiles = 0;
    if (first_fragment(d, &p, &fl) != 0)
        return 0;
    *tiles = chex_j2k_tiles(p, fl);
    return chex_j2k_probe(p, fl, f, NULL, 0) == CHEX_PRE_OK;
}

static chex_pre_err probe_parsed(const chex_dicom_info *dp, int bs, const chex_pre_opts *opts,
                                 chex_pre_probe_info *info, char *msg, size_t msglen);

chex_pre_err chex_pre_probe_dicom(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_probe_info *info, char *msg, size_t msglen)
{
    chex_dicom_info d;
    int bs = 0, hb = 0;
    uint8_t *inflated = NULL; /* the data set's head only */
    size_t inflated_len = 0;
    chex_pre_err err = check_header(buf, len, opts, &d, &bs, &hb, &inflated, &inflated_len, 1,
                                    msg, msglen);
    if (err == CHEX_PRE_OK)
        err = probe_parsed(&d, bs, opts, info, msg, msglen);
    int deflated = inflated != NULL;
    free(inflated);
    if (err != CHEX_PRE_OK || !deflated)
        return err;
    /* the decode inflates the whole data set into one buffer of its size,
     * which stays while the frame decodes */
    info->decode_bytes += (uint64_t)inflated_len + INFLATE_STATE_BYTES;
    return CHEX_PRE_OK;
}

static chex_pre_err probe_parsed(const chex_dicom_info *dp, int bs, const chex_pre_opts *opts,
                                 chex_pre_probe_info *info, char *msg, size_t msglen)
{
    chex_dicom_info d = *dp;
    chex_pre_err err;
    snprintf(info->format, sizeof info->format, "dicom");
    info->width = d.columns;
    info->height = d.rows;
    info->channels = 1;
    info->bit_depth = d.encapsulated ? 8 : bs;
    info->frames = d.number_of_frames > INT32_MAX ? INT32_MAX : (int)d.number_of_frames;
    /* native: rows come straight from the request body, through a table of
     * the stored values */
    info->decode_bytes = bs <= CHEX_DICOM_LUT_BITS ? ((uint64_t)1 << bs) * sizeof(float) + 4096u : 0;
    chex_dicom_codec codec = chex_dicom_codec_for(d.ids.transfer_syntax);
    if (d.encapsulated && codec != CHEX_DICOM_CODEC_JPEG) {
        size_t n = 0;
        err = chex_dicom_first_frame(&d, NULL, 0, &n, msg, msglen);
        if (err != CHEX_PRE_OK)
            return err;
        chex_codec_frame f;
        info->bit_depth = bs;
        uint64_t tiles = 0;
        if (codec == CHEX_DICOM_CODEC_J2K && j2k_header(&d, &f, &tiles))
            info->bit_depth = f.precision;
        if (tiles > CHEX_J2K_MAX_TILES) {
            chex_pre_msg(msg, msglen,
                         "DICOM %s: JPEG 2000 stream with %llu tiles is not supported (at most %u)",
                         d.ids.transfer_syntax, (unsigned long long)tiles,
                         (unsigned)CHEX_J2K_MAX_TILES);
            return CHEX_PRE_ERR_UNSUPPORTED;
        }
        uint64_t w = (uint64_t)d.columns, h = (uint64_t)d.rows;
        /* frame copy, uint16 frame, decoder (and its per-tile state), table of
         * 2^16 stored values */
        info->decode_bytes = n + 2 * w * h + codec_bytes(codec, w, h, n) +
                             tiles * CHEX_J2K_TILE_BYTES +
                             ((uint64_t)1 << 16) * sizeof(float) + 4096u;
    } else if (d.encapsulated) {
        size_t n = 0;
        err = chex_dicom_first_frame(&d, NULL, 0, &n, msg, msglen);
        if (err != CHEX_PRE_OK)
            return err;
        /* the frame's JPEG header, or the worst a JPEG of that size can need */
        chex_pre_jpeg_hdr h;
        const uint8_t *p;
        size_t fl;
        chex_pre_opts any = *opts;
        any.min_side = 0;
        if (first_fragment(&d, &p, &fl) != 0 ||
            chex_pre_jpeg_header(p, fl, &any, &h, NULL, 0) != CHEX_PRE_OK ||
            h.width != d.columns || h.height != d.rows) {
            memset(&h, 0, sizeof h);
            h.width = d.columns;
            h.height = d.rows;
            h.ncomp = 3;
            h.progressive = 1;
            h.hmax = h.vmax = 1;
            for (int c = 0; c < 3; c++)
                h.h[c] = h.v[c] = 1;
        }
        info->decode_bytes = n + (uint64_t)d.columns * (uint64_t)d.rows + chex_pre_jpeg_bytes(&h) +
                             256u * sizeof(float) + 4096u;
    }
    return CHEX_PRE_OK;
}

static chex_pre_err decode_parsed(const chex_dicom_info *dp, int bs, int hb,
                                  const chex_pre_opts *opts, chex_pre_rows *rows,
                                  chex_pre_image *meta, char *msg, size_t msglen);

chex_pre_err chex_pre_decode_dicom(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                   chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                   size_t msglen)
{
    if (!meta || !opts || (!buf && len)) {
        chex_pre_msg(msg, msglen, "chex_pre_decode_dicom: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    chex_dicom_info d;
    int bs = 0, hb = 0;
    uint8_t *inflated = NULL; /* Deflated syntax: the data set d points into */
    size_t inflated_len = 0;
    chex_pre_err err = check_header(buf, len, opts, &d, &bs, &hb, &inflated, &inflated_len, 0,
                                    msg, msglen);
    if (err == CHEX_PRE_OK)
        err = decode_parsed(&d, bs, hb, opts, rows, meta, msg, msglen);
    free(inflated);
    return err;
}

static chex_pre_err decode_parsed(const chex_dicom_info *dp, int bs, int hb,
                                  const chex_pre_opts *opts, chex_pre_rows *rows,
                                  chex_pre_image *meta, char *msg, size_t msglen)
{
    chex_dicom_info d = *dp;
    chex_pre_err err;
    chex_dicom_frame f = {.width = d.columns, .height = d.rows, .samples_per_pixel = 1,
                          .is_signed = d.pixel_representation};
    uint8_t *jpeg_frame = NULL;
    uint16_t *frame16 = NULL; /* decoded by a codecs.h decoder */
    chex_dicom_codec codec = chex_dicom_codec_for(d.ids.transfer_syntax);
    if (d.encapsulated && codec != CHEX_DICOM_CODEC_JPEG) {
        /* Samples as the native Pixel Data of the same image (what dcmtk's
         * decompressors write): Bits Stored, High Bit and Pixel Representation
         * of the data set interpret them, except for JPEG 2000, where the
         * codestream's precision and signedness win when they disagree (as
         * pydicom's J2K corrections and GDCM do: the codestream is what the
         * encoder was given). The frame is read as 2-byte little-endian samples. */
        chex_codec_frame cf;
        err = chex_dicom_decode_frame(&d, opts, &frame16, &cf, msg, msglen);
        if (err != CHEX_PRE_OK)
            return err;
        if (codec == CHEX_DICOM_CODEC_J2K) {
            bs = cf.precision;
            hb = bs - 1;
            f.is_signed = cf.is_signed;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (size_t i = 0, np = (size_t)d.columns * (size_t)d.rows; i < np; i++) {
            uint16_t v = frame16[i];
            uint8_t *b = (uint8_t *)(frame16 + i);
            b[0] = (uint8_t)(v & 0xFF);
            b[1] = (uint8_t)(v >> 8);
        }
#endif
        f.data = (const uint8_t *)frame16;
        f.bytes = 2;
        f.bits_stored = bs;
        f.high_bit = hb;
    } else if (d.encapsulated) {
        err = decode_jpeg_frame(&d, opts, &jpeg_frame, msg, msglen);
        if (err != CHEX_PRE_OK)
            return err;
        f.data = jpeg_frame;
        f.bytes = 1;
        f.bits_stored = 8; /* JPEG Baseline samples are 8-bit whatever the header claims */
        f.high_bit = 7;
    } else {
        size_t need = (size_t)d.rows * (size_t)d.columns * (size_t)(d.bits_allocated / 8);
        if (d.pixel_len < need) {
            chex_pre_msg(msg, msglen,
                         "DICOM malformed: Pixel Data holds %zu bytes, one %d x %d frame of %d-bit "
                         "samples needs %zu",
                         d.pixel_len, d.columns, d.rows, d.bits_allocated, need);
            return CHEX_PRE_ERR_MALFORMED;
        }
        f.data = d.pixel_data; /* straight from the request body */
        f.bytes = d.bits_allocated / 8;
        f.bits_stored = bs;
        f.high_bit = hb;
    }
    err = chex_dicom_frame_rows(&d, &f, rows, meta, msg, msglen);
    free(jpeg_frame);
    free(frame16);
    return err;
}
