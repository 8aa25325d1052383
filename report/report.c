/* report/report.c - the Structured Report and the Secondary Capture; see
 * report.h and docs/API.md for their content. */
#include "report/report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/dicom.h"
#include "report/dcmw.h"
#include "report/font.h"

#define T CHEX_DCMW_TAG

static const char *const err_msgs[CHEX_REPORT_ERR_COUNT] = {
    [CHEX_REPORT_OK] = "ok",
    [CHEX_REPORT_ERR_NOT_DICOM] = "the input is not DICOM: no study to attach a DICOM result to",
    [CHEX_REPORT_ERR_SOURCE] = "the DICOM source cannot be referenced or copied",
    [CHEX_REPORT_ERR_ARG] = "bad argument",
    [CHEX_REPORT_ERR_UID] = "cannot make a UID (uid_root invalid or no random source)",
    [CHEX_REPORT_ERR_NOMEM] = "out of memory",
};

const char *chex_report_strerror(chex_report_err e)
{
    if ((int)e < 0 || e >= CHEX_REPORT_ERR_COUNT)
        return "unknown error";
    return err_msgs[e];
}

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    if (!msg || !msglen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

/* A writer error while building: which element, never its value (patient data). */
static chex_report_err from_dcmw(chex_dcmw_err e, const char *what, char *msg, size_t msglen)
{
    if (e == CHEX_DCMW_ERR_NOMEM) {
        set_msg(msg, msglen, "out of memory");
        return CHEX_REPORT_ERR_NOMEM;
    }
    if (e == CHEX_DCMW_ERR_VALUE) {
        set_msg(msg, msglen, "the source's %s does not fit its DICOM value representation",
                what);
        return CHEX_REPORT_ERR_SOURCE;
    }
    set_msg(msg, msglen, "writing %s: %s", what, chex_dcmw_strerror(e));
    return CHEX_REPORT_ERR_ARG;
}

/* Building state: the first writer error wins; later puts are skipped. */
typedef struct {
    chex_dcmw_err err;
    const char *what; /* element of the first error */
} build;

static void str(build *b, chex_dcmw_ds *ds, uint32_t tag, const char *vr, const char *s,
                const char *what)
{
    if (b->err != CHEX_DCMW_OK)
        return;
    b->err = chex_dcmw_put_str(ds, tag, vr, s);
    b->what = what;
}

static void us(build *b, chex_dcmw_ds *ds, uint32_t tag, uint16_t v)
{
    if (b->err == CHEX_DCMW_OK) {
        b->err = chex_dcmw_put_us(ds, tag, v);
        b->what = "a pixel module attribute";
    }
}

/* A new item of sequence tag (NULL item: an empty sequence). Returns the item
 * or NULL after an error (then every later put is skipped). */
static chex_dcmw_ds *item(build *b, chex_dcmw_ds *ds, uint32_t tag, int empty)
{
    chex_dcmw_ds *it = NULL;
    if (b->err != CHEX_DCMW_OK)
        return NULL;
    b->err = chex_dcmw_put_item(ds, tag, empty ? NULL : &it);
    b->what = "a sequence";
    return it;
}

/* A code sequence item: (value, scheme, meaning). A value longer than 16
 * characters (SH) goes into Long Code Value (UC) instead. */
static void code(build *b, chex_dcmw_ds *ds, uint32_t seq, const char *value, const char *scheme,
                 const char *meaning)
{
    chex_dcmw_ds *c = item(b, ds, seq, 0);
    if (!c)
        return;
    if (strlen(value) <= 16)
        str(b, c, T(0x0008, 0x0100), "SH", value, "Code Value");
    else
        str(b, c, T(0x0008, 0x0119), "UC", value, "Long Code Value");
    str(b, c, T(0x0008, 0x0102), "SH", scheme, "Coding Scheme Designator");
    str(b, c, T(0x0008, 0x0104), "LO", meaning, "Code Meaning");
}

/* The code value of a label: the label itself, characters outside letters,
 * digits and '_' as '_' (a code value is SH/UC text without backslashes). */
static void label_code(char *dst, size_t cap, const char *label)
{
    size_t i = 0;
    for (; label[i] && i + 1 < cap; i++) {
        char c = label[i];
        dst[i] = ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
                     ? c
                     : '_';
    }
    dst[i] = '\0';
}

typedef struct {
    chex_dicom_info src;
    char series_uid[65], sop_uid[65];
    char date[9], time[7];
} common;

/* Parses the source and makes the new UIDs. */
static chex_report_err prepare(const chex_report_ctx *ctx, const uint8_t *buf, size_t len,
                               common *c, char *msg, size_t msglen)
{
    if (!ctx || !ctx->model || !ctx->uid_root || !ctx->software_version || (!buf && len)) {
        set_msg(msg, msglen, "chex_report: NULL argument");
        return CHEX_REPORT_ERR_ARG;
    }
    memset(c, 0, sizeof *c);
    char pmsg[256] = "";
    chex_pre_err pe = chex_dicom_parse(buf, len, &c->src, pmsg, sizeof pmsg);
    if (pe == CHEX_PRE_ERR_FORMAT || pe == CHEX_PRE_ERR_EMPTY) {
        set_msg(msg, msglen,
                "the input is not DICOM (PNG/JPEG have no study to attach a DICOM result to)");
        return CHEX_REPORT_ERR_NOT_DICOM;
    }
    if (pe == CHEX_PRE_OK && c->src.deflated) {
        /* Deflated Explicit VR LE: the identifiers are in the deflated data
         * set (the pixels were already decoded from it, so it inflates; same
         * bound as the decoder's with no max_pixels: 4 bytes a pixel of the
         * hard ceiling plus 64 MiB) */
        uint8_t *ds = NULL;
        size_t n = 0;
        chex_dicom_info meta = c->src;
        if (meta.dataset_offset > len) {
            pe = CHEX_PRE_ERR_MALFORMED;
            snprintf(pmsg, sizeof pmsg, "data set offset past the end");
        } else {
            pe = chex_deflate_inflate(buf + meta.dataset_offset, len - meta.dataset_offset,
                                      (size_t)((UINT64_C(4) << 30) + (UINT64_C(64) << 20)), &ds,
                                      &n, pmsg, sizeof pmsg);
        }
        if (pe == CHEX_PRE_OK)
            pe = chex_dicom_parse_inflated(&meta, ds, n, &c->src, pmsg, sizeof pmsg);
        free(ds);
        /* only identifiers and study attributes are used from here on */
        c->src.pixel_data = NULL;
        c->src.pixel_len = 0;
    }
    if (pe != CHEX_PRE_OK) {
        set_msg(msg, msglen, "DICOM source unreadable: %s", pmsg);
        return CHEX_REPORT_ERR_SOURCE;
    }
    const char *missing = !c->src.ids.study_instance_uid[0] ? "Study Instance UID (0020,000D)"
                          : !c->src.ids.sop_instance_uid[0] ? "SOP Instance UID (0008,0018)"
                          : !c->src.study.sop_class_uid[0]  ? "SOP Class UID (0008,0016)"
                          : !c->src.ids.series_instance_uid[0] ? "Series Instance UID (0020,000E)"
                                                               : NULL;
    if (missing) {
        set_msg(msg, msglen, "the DICOM source has no %s: a result cannot reference it",
                missing);
        return CHEX_REPORT_ERR_SOURCE;
    }
    if (chex_dcmw_uid_new(ctx->uid_root, c->series_uid) != CHEX_DCMW_OK ||
        chex_dcmw_uid_new(ctx->uid_root, c->sop_uid) != CHEX_DCMW_OK) {
        set_msg(msg, msglen, "cannot make a UID under uid_root \"%s\"", ctx->uid_root);
        return CHEX_REPORT_ERR_UID;
    }
    chex_dcmw_date_time(ctx->now, c->date, c->time);
    return CHEX_REPORT_OK;
}

/* SOP Common, Patient, General Study, the series and General Equipment: what
 * the SR and the SC share. */
static void put_common(build *b, chex_dcmw_ds *ds, const chex_report_ctx *ctx, const common *c,
                       const char *sop_class, const char *modality, const char *series_desc)
{
    const chex_dicom_study *s = &c->src.study;
    if (s->specific_charset[0])
        str(b, ds, T(0x0008, 0x0005), "CS", s->specific_charset, "Specific Character Set");
    str(b, ds, T(0x0008, 0x0012), "DA", c->date, "Instance Creation Date");
    str(b, ds, T(0x0008, 0x0013), "TM", c->time, "Instance Creation Time");
    str(b, ds, T(0x0008, 0x0016), "UI", sop_class, "SOP Class UID");
    str(b, ds, T(0x0008, 0x0018), "UI", c->sop_uid, "SOP Instance UID");
    str(b, ds, T(0x0008, 0x0020), "DA", s->study_date, "Study Date");
    str(b, ds, T(0x0008, 0x0021), "DA", c->date, "Series Date");
    str(b, ds, T(0x0008, 0x0023), "DA", c->date, "Content Date");
    str(b, ds, T(0x0008, 0x0030), "TM", s->study_time, "Study Time");
    str(b, ds, T(0x0008, 0x0031), "TM", c->time, "Series Time");
    str(b, ds, T(0x0008, 0x0033), "TM", c->time, "Content Time");
    str(b, ds, T(0x0008, 0x0050), "SH", s->accession_number, "Accession Number");
    str(b, ds, T(0x0008, 0x0060), "CS", modality, "Modality");
    str(b, ds, T(0x0008, 0x0070), "LO", "chexd", "Manufacturer");
    str(b, ds, T(0x0008, 0x0090), "PN", s->referring_physician, "Referring Physician's Name");
    str(b, ds, T(0x0008, 0x103E), "LO", series_desc, "Series Description");
    str(b, ds, T(0x0008, 0x1090), "LO", ctx->model->name, "Manufacturer's Model Name");
    str(b, ds, T(0x0010, 0x0010), "PN", s->patient_name, "Patient's Name");
    str(b, ds, T(0x0010, 0x0020), "LO", s->patient_id, "Patient ID");
    str(b, ds, T(0x0010, 0x0030), "DA", s->patient_birth_date, "Patient's Birth Date");
    str(b, ds, T(0x0010, 0x0040), "CS", s->patient_sex, "Patient's Sex");
    str(b, ds, T(0x0018, 0x1020), "LO", ctx->software_version, "Software Versions");
    str(b, ds, T(0x0020, 0x000D), "UI", c->src.ids.study_instance_uid, "Study Instance UID");
    str(b, ds, T(0x0020, 0x000E), "UI", c->series_uid, "Series Instance UID");
    str(b, ds, T(0x0020, 0x0010), "SH", s->study_id, "Study ID");
    /* a fixed series number per kind: SR 9001, SC 9002 (see docs/API.md) */
    str(b, ds, T(0x0020, 0x0011), "IS", modality[0] == 'S' ? "9001" : "9002", "Series Number");
    str(b, ds, T(0x0020, 0x0013), "IS", "1", "Instance Number");
}

/* Referenced SOP Sequence item pointing at the source. */
static void ref_source(build *b, chex_dcmw_ds *ds, uint32_t seq, const common *c)
{
    chex_dcmw_ds *r = item(b, ds, seq, 0);
    if (!r)
        return;
    str(b, r, T(0x0008, 0x1150), "UI", c->src.study.sop_class_uid, "Referenced SOP Class UID");
    str(b, r, T(0x0008, 0x1155), "UI", c->src.ids.sop_instance_uid,
        "Referenced SOP Instance UID");
}

/* One content item: relationship CONTAINS, value type, concept name. */
static chex_dcmw_ds *content(build *b, chex_dcmw_ds *parent, const char *type, const char *cv,
                             const char *scheme, const char *meaning)
{
    chex_dcmw_ds *it = item(b, parent, T(0x0040, 0xA730), 0);
    if (!it)
        return NULL;
    str(b, it, T(0x0040, 0xA010), "CS", "CONTAINS", "Relationship Type");
    str(b, it, T(0x0040, 0xA040), "CS", type, "Value Type");
    if (cv)
        code(b, it, T(0x0040, 0xA043), cv, scheme, meaning);
    return it;
}

static void text_item(build *b, chex_dcmw_ds *root, const char *cv, const char *scheme,
                      const char *meaning, const char *text)
{
    chex_dcmw_ds *it = content(b, root, "TEXT", cv, scheme, meaning);
    if (it)
        str(b, it, T(0x0040, 0xA160), "UT", text, "Text Value");
}

static chex_report_err finish(build *b, chex_dcmw_ds *ds, const chex_report_ctx *ctx,
                              uint8_t **out, size_t *outlen, char *msg, size_t msglen)
{
    chex_report_err err = CHEX_REPORT_OK;
    if (b->err != CHEX_DCMW_OK) {
        err = from_dcmw(b->err, b->what, msg, msglen);
    } else {
        char impl[17];
        snprintf(impl, sizeof impl, "CHEXD_%.10s", ctx->software_version);
        chex_dcmw_err e = chex_dcmw_part10(ds, impl, out, outlen);
        if (e != CHEX_DCMW_OK)
            err = from_dcmw(e, "the Part 10 file", msg, msglen);
    }
    chex_dcmw_ds_free(ds);
    return err;
}

chex_report_err chex_report_sr(const chex_report_ctx *ctx, const uint8_t *src, size_t srclen,
                               const float *probs, int has_threshold, double threshold,
                               uint8_t **out, size_t *outlen, char *msg, size_t msglen)
{
    if (!out || !outlen || !probs) {
        set_msg(msg, msglen, "chex_report_sr: NULL argument");
        return CHEX_REPORT_ERR_ARG;
    }
    *out = NULL;
    *outlen = 0;
    common c;
    chex_report_err err = prepare(ctx, src, srclen, &c, msg, msglen);
    if (err != CHEX_REPORT_OK)
        return err;
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    if (!ds) {
        set_msg(msg, msglen, "out of memory");
        return CHEX_REPORT_ERR_NOMEM;
    }
    const chex_model_info *mi = ctx->model;
    build b = {CHEX_DCMW_OK, ""};
    put_common(&b, ds, ctx, &c, CHEX_REPORT_SR_CLASS, "SR", "chexd AI result (SR)");

    /* SR Document Series: Referenced Performed Procedure Step Sequence, Type 2 */
    item(&b, ds, T(0x0008, 0x1111), 1);
    /* Contributing Equipment (IHE AI Results): the algorithm */
    chex_dcmw_ds *eq = item(&b, ds, T(0x0018, 0xA001), 0);
    if (eq) {
        str(&b, eq, T(0x0008, 0x0070), "LO", "chexd", "Manufacturer");
        str(&b, eq, T(0x0008, 0x1090), "LO", mi->name, "Manufacturer's Model Name");
        char versions[160];
        snprintf(versions, sizeof versions, "%s\\%s", ctx->software_version, mi->sha256);
        str(&b, eq, T(0x0018, 0x1020), "LO", versions, "Software Versions");
        char dt[15];
        snprintf(dt, sizeof dt, "%s%s", c.date, c.time);
        str(&b, eq, T(0x0018, 0xA002), "DT", dt, "Contribution Date Time");
        code(&b, eq, T(0x0040, 0xA170), "Newcode1", "99IHE", "Processing Algorithm");
    }
    /* SR Document Content, root: Value Type, Concept Name, Continuity */
    str(&b, ds, T(0x0040, 0xA040), "CS", "CONTAINER", "Value Type");
    code(&b, ds, T(0x0040, 0xA043), "18748-4", "LN", "Diagnostic imaging report");
    str(&b, ds, T(0x0040, 0xA050), "CS", "SEPARATE", "Continuity Of Content");
    /* SR Document General */
    str(&b, ds, T(0x0040, 0xA491), "CS", "COMPLETE", "Completion Flag");
    str(&b, ds, T(0x0040, 0xA493), "CS", "UNVERIFIED", "Verification Flag");
    item(&b, ds, T(0x0040, 0xA372), 1); /* Performed Procedure Code Sequence, Type 2 */
    chex_dcmw_ds *ev = item(&b, ds, T(0x0040, 0xA375), 0);
    if (ev) {
        chex_dcmw_ds *se = item(&b, ev, T(0x0008, 0x1115), 0);
        if (se) {
            ref_source(&b, se, T(0x0008, 0x1199), &c);
            str(&b, se, T(0x0020, 0x000E), "UI", c.src.ids.series_instance_uid,
                "Series Instance UID");
        }
        str(&b, ev, T(0x0020, 0x000D), "UI", c.src.ids.study_instance_uid, "Study Instance UID");
    }

    /* content, in the root's Content Sequence (0040,A730) */
    text_item(&b, ds, "111001", "DCM", "Algorithm Name", mi->name);
    char version[100];
    snprintf(version, sizeof version, "chexd %s, weights sha256 %s", ctx->software_version,
             mi->sha256);
    text_item(&b, ds, "111003", "DCM", "Algorithm Version", version);
    if (mi->demo)
        text_item(&b, ds, "121106", "DCM", "Comment",
                  ctx->demo_warning ? ctx->demo_warning : "demo weights: not a diagnosis");
    chex_dcmw_ds *img = content(&b, ds, "IMAGE", "121112", "DCM", "Source of Measurement");
    if (img)
        ref_source(&b, img, T(0x0008, 0x1199), &c);
    for (int i = 0; i < mi->num_labels; i++) {
        char cv[CHEX_MODEL_LABEL_LEN], val[32];
        label_code(cv, sizeof cv, mi->labels[i]);
        chex_dcmw_ds *num = content(&b, ds, "NUM", cv, CHEX_REPORT_SCHEME, mi->labels[i]);
        chex_dcmw_ds *mv = num ? item(&b, num, T(0x0040, 0xA300), 0) : NULL;
        if (mv) {
            code(&b, mv, T(0x0040, 0x08EA), "1", "UCUM", "no units");
            double p = probs[i];
            snprintf(val, sizeof val, "%.6f", p < 0 ? 0.0 : p > 1 ? 1.0 : p);
            str(&b, mv, T(0x0040, 0xA30A), "DS", val, "Numeric Value");
        }
    }
    for (int i = 0; has_threshold && i < mi->num_labels; i++) {
        if (!((double)probs[i] >= threshold))
            continue;
        char cv[CHEX_MODEL_LABEL_LEN];
        label_code(cv, sizeof cv, mi->labels[i]);
        chex_dcmw_ds *f = content(&b, ds, "CODE", "121071", "DCM", "Finding");
        if (f)
            code(&b, f, T(0x0040, 0xA168), cv, CHEX_REPORT_SCHEME, mi->labels[i]);
    }
    return finish(&b, ds, ctx, out, outlen, msg, msglen);
}

/* ---- Secondary Capture ---- */

void chex_report_draw_text(uint8_t *rgb, int width, int height, int x, int y, int scale,
                           const uint8_t c[3], const char *text)
{
    for (const char *p = text; *p; p++, x += (CHEX_RFONT_W + 1) * scale) {
        for (int gy = 0; gy < CHEX_RFONT_H; gy++)
            for (int gx = 0; gx < CHEX_RFONT_W; gx++) {
                if (!chex_report_font_pixel(*p, gx, gy))
                    continue;
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        int px = x + gx * scale + dx, py = y + gy * scale + dy;
                        if (px < 0 || py < 0 || px >= width || py >= height)
                            continue;
                        uint8_t *d = rgb + ((size_t)py * (size_t)width + (size_t)px) * 3;
                        d[0] = c[0];
                        d[1] = c[1];
                        d[2] = c[2];
                    }
            }
    }
}

/* The lines burned in, on a dark band across the top. */
static void burn_in(uint8_t *rgb, int w, int h, const char *label, float prob, int demo)
{
    char l1[128], l2[] = "chexd demo weights: not a diagnosis";
    snprintf(l1, sizeof l1, "%s  p=%.6f", label, (double)prob);
    int lines = demo ? 2 : 1;
    /* scale: the longer line fills at most ~90% of the width, glyphs >= 1x */
    int widest = chex_report_font_text_width(demo ? (strlen(l1) > strlen(l2) ? l1 : l2) : l1, 1);
    int scale = widest > 0 ? (int)(0.9 * w / widest) : 1;
    if (scale < 1)
        scale = 1;
    if (scale > 4 && h < 512)
        scale = 4;
    if (scale > 6)
        scale = 6;
    int line_h = (CHEX_RFONT_H + 3) * scale;
    int band = lines * line_h + 2 * scale;
    if (band > h)
        band = h;
    for (int y = 0; y < band; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *d = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            for (int k = 0; k < 3; k++)
                d[k] = (uint8_t)(d[k] / 4);
        }
    static const uint8_t white[3] = {255, 255, 255}, amber[3] = {255, 191, 0};
    chex_report_draw_text(rgb, w, h, 2 * scale, 2 * scale, scale, white, l1);
    if (demo)
        chex_report_draw_text(rgb, w, h, 2 * scale, 2 * scale + line_h, scale, amber, l2);
}

chex_report_err chex_report_sc(const chex_report_ctx *ctx, const uint8_t *src, size_t srclen,
                               const uint8_t *rgb, int width, int height, int label, float prob,
                               uint8_t **out, size_t *outlen, char *msg, size_t msglen)
{
    if (!out || !outlen || !rgb || width < 1 || height < 1 || width > 65535 || height > 65535 ||
        !ctx || !ctx->model || label < 0 || label >= ctx->model->num_labels) {
        set_msg(msg, msglen, "chex_report_sc: bad argument");
        return CHEX_REPORT_ERR_ARG;
    }
    *out = NULL;
    *outlen = 0;
    common c;
    chex_report_err err = prepare(ctx, src, srclen, &c, msg, msglen);
    if (err != CHEX_REPORT_OK)
        return err;
    size_t n = (size_t)width * (size_t)height * 3;
    uint8_t *pix = malloc(n);
    chex_dcmw_ds *ds = chex_dcmw_ds_new();
    if (!pix || !ds) {
        free(pix);
        chex_dcmw_ds_free(ds);
        set_msg(msg, msglen, "out of memory");
        return CHEX_REPORT_ERR_NOMEM;
    }
    memcpy(pix, rgb, n);
    const chex_model_info *mi = ctx->model;
    burn_in(pix, width, height, mi->labels[label], prob, mi->demo);

    build b = {CHEX_DCMW_OK, ""};
    put_common(&b, ds, ctx, &c, CHEX_REPORT_SC_CLASS, "OT", "chexd AI result (heat map)");
    str(&b, ds, T(0x0008, 0x0008), "CS", "DERIVED\\SECONDARY", "Image Type");
    str(&b, ds, T(0x0008, 0x0064), "CS", "WSD", "Conversion Type");
    char desc[512];
    snprintf(desc, sizeof desc,
             "class activation map of %s (p=%.6f) by %s over the source image%s",
             mi->labels[label], (double)prob, mi->name,
             mi->demo ? "; demo weights: not a diagnosis" : "");
    str(&b, ds, T(0x0008, 0x2111), "ST", desc, "Derivation Description");
    ref_source(&b, ds, T(0x0008, 0x2112), &c); /* Source Image Sequence */
    str(&b, ds, T(0x0018, 0x1016), "LO", "chexd", "Secondary Capture Device Manufacturer");
    str(&b, ds, T(0x0018, 0x1018), "LO", mi->name, "Secondary Capture Device Model Name");
    str(&b, ds, T(0x0018, 0x1019), "LO", ctx->software_version,
        "Secondary Capture Device Software Versions");
    str(&b, ds, T(0x0018, 0x1012), "DA", c.date, "Date of Secondary Capture");
    str(&b, ds, T(0x0018, 0x1014), "TM", c.time, "Time of Secondary Capture");
    str(&b, ds, T(0x0020, 0x0020), "CS", "", "Patient Orientation");
    /* General Series, Type 2C: the source's laterality is not read, so empty */
    str(&b, ds, T(0x0020, 0x0060), "CS", "", "Laterality");
    us(&b, ds, T(0x0028, 0x0002), 3);
    str(&b, ds, T(0x0028, 0x0004), "CS", "RGB", "Photometric Interpretation");
    us(&b, ds, T(0x0028, 0x0006), 0);
    us(&b, ds, T(0x0028, 0x0010), (uint16_t)height);
    us(&b, ds, T(0x0028, 0x0011), (uint16_t)width);
    us(&b, ds, T(0x0028, 0x0100), 8);
    us(&b, ds, T(0x0028, 0x0101), 8);
    us(&b, ds, T(0x0028, 0x0102), 7);
    us(&b, ds, T(0x0028, 0x0103), 0);
    str(&b, ds, T(0x0028, 0x0301), "CS", "YES", "Burned In Annotation");
    str(&b, ds, T(0x0028, 0x2110), "CS", "00", "Lossy Image Compression");
    if (b.err == CHEX_DCMW_OK) {
        b.err = chex_dcmw_put_bytes(ds, T(0x7FE0, 0x0010), "OB", pix, n);
        b.what = "Pixel Data";
    }
    free(pix);
    return finish(&b, ds, ctx, out, outlen, msg, msglen);
}
