/* preprocessing/jpeg_lossless.c - JPEG Lossless, process 14 (ITU T.81 Annex H).
 *
 * Debian 12's libjpeg-turbo (2.1.5) has no lossless mode, and DICOM's default
 * lossless syntaxes (1.2.840.10008.1.2.4.57 and .70) are this process: Huffman
 * coded differences from one of seven predictors. What is read: SOF3 with
 * 2..16 bits and 1x1 sampling, DHT, DRI, one or several scans (SOS with the
 * predictor in Ss and the point transform in Al), restart markers; APPn, COM,
 * DQT and other segments are skipped. DNL (height 0 in SOF) is refused.
 *
 * Reconstruction (H.1.2): the first sample of the scan and of each restart
 * interval is predicted by 2^(P-Pt-1), the rest of that first line by Ra, the
 * first sample of every other line by Rb, all others by the scan's predictor;
 * sample = (prediction + difference) mod 2^16, output (sample << Pt) mod 2^P. A
 * difference category 16 means 32768 with no extra bits.
 * Entropy-coded bytes: FF 00 is a stuffed FF; reaching any marker supplies zero
 * bits, and using those bits is reported as a truncated stream.
 */
#include <stdlib.h>
#include <string.h>

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "JPEG Lossless"
#define MAX_COMPS 4

typedef struct {
    int present;
    /* canonical decoding (F.2.2.3): per code length */
    int32_t maxcode[18]; /* -1 when no code of that length */
    int32_t valptr[17];
    uint16_t mincode[17];
    uint8_t vals[256];
    /* 8-bit lookahead: length (0 = longer than 8) and value */
    uint8_t look_len[256], look_val[256];
} huff_table;

typedef struct {
    int id, tq;
} comp_info;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    int precision, width, height, ncomp;
    comp_info comp[MAX_COMPS];
    int have_sof;
    unsigned restart; /* MCUs per restart interval, 0 = none */
    huff_table dc[4];
    char *msg;
    size_t msglen;
} jls_ctx;

static unsigned be16(const uint8_t *p)
{
    return (unsigned)(p[0] << 8 | p[1]);
}

static chex_pre_err bad(jls_ctx *c, const char *what)
{
    chex_pre_msg(c->msg, c->msglen, "DICOM malformed: %s stream %s", NAME, what);
    return CHEX_PRE_ERR_MALFORMED;
}

/* DHT: one or more tables. */
static chex_pre_err read_dht(jls_ctx *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (n < 17)
            return bad(c, "has a short DHT segment");
        int tc = p[0] >> 4, th = p[0] & 15;
        size_t total = 0;
        for (int i = 1; i <= 16; i++)
            total += p[i];
        if (tc > 1 || th > 3 || total > 256 || n < 17 + total)
            return bad(c, "has a bad DHT segment");
        if (tc == 0) {
            huff_table *h = &c->dc[th];
            memset(h, 0, sizeof *h);
            memcpy(h->vals, p + 17, total);
            uint32_t code = 0;
            int k = 0;
            for (int l = 1; l <= 16; l++) {
                int cnt = p[l];
                if (cnt) {
                    h->valptr[l] = k;
                    h->mincode[l] = (uint16_t)code;
                    code += (uint32_t)cnt;
                    k += cnt;
                    h->maxcode[l] = (int32_t)code - 1;
                    if (code > (1u << l))
                        return bad(c, "has a Huffman table with too many codes");
                    if (l <= 8) {
                        for (uint32_t cd = h->mincode[l]; cd < code; cd++) {
                            uint32_t first = cd << (8 - l), span = 1u << (8 - l);
                            for (uint32_t j = 0; j < span; j++) {
                                h->look_len[first + j] = (uint8_t)l;
                                h->look_val[first + j] = h->vals[h->valptr[l] + (int)(cd - h->mincode[l])];
                            }
                        }
                    }
                } else {
                    h->maxcode[l] = -1;
                }
                code <<= 1;
            }
            h->maxcode[17] = 0x7FFFFFFF;
            h->present = 1;
        }
        p += 17 + total;
        n -= 17 + total;
    }
    return CHEX_PRE_OK;
}

static chex_pre_err read_sof(jls_ctx *c, const uint8_t *p, size_t n)
{
    if (n < 6)
        return bad(c, "has a short SOF3 segment");
    c->precision = p[0];
    c->height = (int)be16(p + 1);
    c->width = (int)be16(p + 3);
    c->ncomp = p[5];
    if (c->precision < 2 || c->precision > 16)
        return bad(c, "has a precision outside 2..16 bits");
    if (c->ncomp < 1 || c->ncomp > MAX_COMPS || n < 6 + 3 * (size_t)c->ncomp)
        return bad(c, "has a bad component count in SOF3");
    if (c->height == 0) {
        chex_pre_msg(c->msg, c->msglen,
                     "%s stream with the height in a DNL marker is not supported", NAME);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    for (int i = 0; i < c->ncomp; i++) {
        c->comp[i].id = p[6 + 3 * i];
        if (p[7 + 3 * i] != 0x11) {
            chex_pre_msg(c->msg, c->msglen,
                         "%s stream with subsampled components is not supported", NAME);
            return CHEX_PRE_ERR_UNSUPPORTED;
        }
        c->comp[i].tq = p[8 + 3 * i];
    }
    c->have_sof = 1;
    return CHEX_PRE_OK;
}

/* Walks marker segments from c->pos until SOS (returns with *sos pointing at
 * its payload) or EOI (*sos NULL). */
static chex_pre_err next_segments(jls_ctx *c, const uint8_t **sos, size_t *soslen)
{
    *sos = NULL;
    for (;;) {
        /* fill bytes FF before a marker are allowed */
        while (c->pos < c->len && c->buf[c->pos] != 0xFF)
            return bad(c, "has data where a marker belongs");
        while (c->pos + 1 < c->len && c->buf[c->pos + 1] == 0xFF)
            c->pos++;
        if (c->len - c->pos < 2)
            return bad(c, "is truncated (no EOI)");
        unsigned m = c->buf[c->pos + 1];
        c->pos += 2;
        if (m == 0xD9)
            return CHEX_PRE_OK;
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0x00)
            return bad(c, "has a misplaced marker");
        if (c->len - c->pos < 2)
            return bad(c, "is truncated in a marker segment");
        size_t sl = be16(c->buf + c->pos);
        if (sl < 2 || c->len - c->pos < sl)
            return bad(c, "is truncated in a marker segment");
        const uint8_t *p = c->buf + c->pos + 2;
        size_t n = sl - 2;
        c->pos += sl;
        chex_pre_err e = CHEX_PRE_OK;
        switch (m) {
        case 0xC3:
            if (c->have_sof)
                return bad(c, "has two frame headers");
            e = read_sof(c, p, n);
            break;
        case 0xC4:
            e = read_dht(c, p, n);
            break;
        case 0xDD:
            if (n < 2)
                return bad(c, "has a short DRI segment");
            c->restart = be16(p);
            break;
        case 0xDA:
            if (!c->have_sof)
                return bad(c, "has a scan before the frame header");
            *sos = p;
            *soslen = n;
            return CHEX_PRE_OK;
        case 0xDC:
            return bad(c, "has a DNL marker");
        default:
            if ((m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)) {
                chex_pre_msg(c->msg, c->msglen,
                             "DICOM malformed: %s frame is not a process 14 (SOF3) stream "
                             "(marker FF %02X)",
                             NAME, m);
                return CHEX_PRE_ERR_MALFORMED;
            }
            break; /* APPn, COM, DQT, DAC, ...: skipped */
        }
        if (e != CHEX_PRE_OK)
            return e;
    }
}

static chex_pre_err start(jls_ctx *c, const uint8_t *buf, size_t len, char *msg, size_t msglen)
{
    memset(c, 0, sizeof *c);
    c->buf = buf;
    c->len = len;
    c->msg = msg;
    c->msglen = msglen;
    if (len < 2 || buf[0] != 0xFF || buf[1] != 0xD8)
        return bad(c, "does not start with SOI (FF D8)");
    c->pos = 2;
    return CHEX_PRE_OK;
}

/* Reads up to the first SOS: frame header known after it. */
static chex_pre_err header(jls_ctx *c, const uint8_t **sos, size_t *soslen)
{
    chex_pre_err e = next_segments(c, sos, soslen);
    if (e != CHEX_PRE_OK)
        return e;
    if (!*sos || !c->have_sof)
        return bad(c, "has no frame header and scan");
    return CHEX_PRE_OK;
}

static void fill_frame(const jls_ctx *c, chex_codec_frame *f)
{
    f->width = c->width;
    f->height = c->height;
    f->spp = c->ncomp;
    f->precision = c->precision;
    f->is_signed = 0;
}

chex_pre_err chex_jpegll_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                               size_t msglen)
{
    jls_ctx c;
    if (!f || (!frame && len)) {
        chex_pre_msg(msg, msglen, "chex_jpegll_probe: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    chex_pre_err e = start(&c, frame, len, msg, msglen);
    const uint8_t *sos;
    size_t soslen;
    if (e == CHEX_PRE_OK)
        e = header(&c, &sos, &soslen);
    if (e == CHEX_PRE_OK)
        fill_frame(&c, f);
    return e;
}

/* ---- entropy-coded segment ---- */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    uint64_t acc;
    int nbits;     /* valid bits in acc (top-aligned at bit 63) */
    int zeros;     /* zero bits appended after a marker or the end */
    int at_marker; /* a marker (or the end) stopped the reader */
} bitreader;

static void br_fill(bitreader *b)
{
    while (b->nbits <= 56) {
        unsigned byte = 0;
        if (!b->at_marker && b->pos < b->len) {
            byte = b->buf[b->pos];
            if (byte == 0xFF) {
                if (b->pos + 1 < b->len && b->buf[b->pos + 1] == 0x00) {
                    b->pos += 2;
                } else {
                    b->at_marker = 1; /* leave pos on the marker */
                    byte = 0;
                    b->zeros += 8;
                }
            } else {
                b->pos++;
            }
        } else {
            b->at_marker = 1;
            b->zeros += 8;
        }
        b->acc |= (uint64_t)byte << (56 - b->nbits);
        b->nbits += 8;
    }
}

static unsigned br_bits(bitreader *b, int n)
{
    if (b->nbits < n)
        br_fill(b);
    unsigned v = (unsigned)(b->acc >> (64 - n));
    b->acc <<= n;
    b->nbits -= n;
    return v;
}

/* The Huffman-coded category, or -1 for a code not in the table. */
static int br_huff(bitreader *b, const huff_table *h)
{
    if (b->nbits < 16)
        br_fill(b);
    unsigned look = (unsigned)(b->acc >> 56);
    int l = h->look_len[look];
    if (l) {
        b->acc <<= l;
        b->nbits -= l;
        return h->look_val[look];
    }
    uint32_t code = (uint32_t)(b->acc >> 55); /* 9 bits */
    for (l = 9; l <= 16; l++) {
        if (h->maxcode[l] >= 0 && (int32_t)code <= h->maxcode[l]) {
            b->acc <<= l;
            b->nbits -= l;
            return h->vals[h->valptr[l] + (int)(code - h->mincode[l])];
        }
        code = (uint32_t)(b->acc >> (63 - l));
    }
    return -1;
}

/* Bits used beyond the real data (from the appended zeros). */
static int br_overrun(const bitreader *b)
{
    return b->zeros > b->nbits;
}

/* Byte-aligns past the current interval and expects RSTn (after fill FFs). */
static int br_restart(bitreader *b, unsigned n)
{
    if (br_overrun(b))
        return -1;
    /* pos is at the first byte not loaded into acc; whole unused bytes in acc
     * were real data only if no marker was met, so resync from the marker */
    size_t p = b->pos;
    if (!b->at_marker) {
        /* scan forward for the marker: skipping the leftover padding bits */
        while (p < b->len) {
            if (b->buf[p] == 0xFF && p + 1 < b->len && b->buf[p + 1] != 0x00)
                break;
            p += b->buf[p] == 0xFF ? 2 : 1;
        }
    }
    while (p + 1 < b->len && b->buf[p + 1] == 0xFF)
        p++;
    if (p + 1 >= b->len || b->buf[p] != 0xFF || b->buf[p + 1] != 0xD0 + (n & 7))
        return -1;
    b->pos = p + 2;
    b->acc = 0;
    b->nbits = 0;
    b->zeros = 0;
    b->at_marker = 0;
    return 0;
}

static int predict(int sel, int ra, int rb, int rc)
{
    switch (sel) {
    case 1:
        return ra;
    case 2:
        return rb;
    case 3:
        return rc;
    case 4:
        return ra + rb - rc;
    case 5:
        return ra + ((rb - rc) >> 1);
    case 6:
        return rb + ((ra - rc) >> 1);
    default:
        return (ra + rb) >> 1;
    }
}

/* One scan: payload p/n of SOS, entropy-coded data from c->pos. */
static chex_pre_err decode_scan(jls_ctx *c, const uint8_t *p, size_t n, uint16_t *out)
{
    if (n < 1)
        return bad(c, "has a short SOS segment");
    int ns = p[0];
    if (ns < 1 || ns > c->ncomp || n < 1 + 2 * (size_t)ns + 3)
        return bad(c, "has a bad SOS segment");
    int ci[MAX_COMPS];
    const huff_table *ht[MAX_COMPS];
    for (int i = 0; i < ns; i++) {
        int id = p[1 + 2 * i], td = p[2 + 2 * i] >> 4, k;
        for (k = 0; k < c->ncomp && c->comp[k].id != id; k++)
            ;
        if (k == c->ncomp || td > 3 || !c->dc[td].present)
            return bad(c, "has a scan naming an unknown component or Huffman table");
        ci[i] = k;
        ht[i] = &c->dc[td];
    }
    int sel = p[1 + 2 * ns], pt = p[3 + 2 * ns] & 15;
    if (sel < 1 || sel > 7)
        return bad(c, "has a predictor outside 1..7");
    if (pt >= c->precision)
        return bad(c, "has a point transform not below the precision");
    const int w = c->width, h = c->height, nc = c->ncomp;
    const int init = 1 << (c->precision - pt - 1);
    /* a corrupt stream can reconstruct values past P bits (mod 2^16): kept to P */
    const unsigned pmask = (1u << c->precision) - 1u;
    bitreader b = {.buf = c->buf, .len = c->len, .pos = c->pos};
    unsigned left = c->restart, rst = 0;
    int fresh = 1; /* at the start of the scan or of a restart interval */
    int first_line_x = 0;
    /* reconstructed values before the point transform, one row per component */
    int *rows = malloc(sizeof(int) * (size_t)w * (size_t)ns * 2);
    if (!rows) {
        chex_pre_msg(c->msg, c->msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    int *prev = rows, *cur = rows + (size_t)w * (size_t)ns;
    int in_first_line = 1;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            if (c->restart) {
                if (left == 0) {
                    if (br_restart(&b, rst++) != 0) {
                        free(rows);
                        return bad(c, "is corrupt or truncated (restart marker expected)");
                    }
                    left = c->restart;
                    fresh = 1;
                }
                left--;
            }
            if (fresh) {
                in_first_line = 1;
                first_line_x = x;
            }
            for (int i = 0; i < ns; i++) {
                int s = br_huff(&b, ht[i]);
                if (s < 0 || s > 16) {
                    free(rows);
                    return bad(c, "is corrupt (bad Huffman code)");
                }
                int diff;
                if (s == 0)
                    diff = 0;
                else if (s == 16)
                    diff = 32768;
                else {
                    int v = (int)br_bits(&b, s);
                    diff = v < (1 << (s - 1)) ? v - (1 << s) + 1 : v;
                }
                int pred;
                if (fresh)
                    pred = init;
                else if (in_first_line && x > first_line_x)
                    pred = cur[(x - 1) * ns + i];
                else if (x == 0)
                    pred = prev[i];
                else
                    pred = predict(sel, cur[(x - 1) * ns + i], prev[x * ns + i],
                                   prev[(x - 1) * ns + i]);
                int v = (pred + diff) & 0xFFFF;
                cur[x * ns + i] = v;
                out[((size_t)y * (size_t)w + (size_t)x) * (size_t)nc + (size_t)ci[i]] =
                    (uint16_t)((unsigned)(v << pt) & pmask);
            }
            fresh = 0;
        }
        int *t = prev;
        prev = cur;
        cur = t;
        in_first_line = 0;
        first_line_x = 0;
    }
    free(rows);
    if (br_overrun(&b))
        return bad(c, "is truncated");
    /* continue after the entropy-coded data: find the next marker */
    size_t q = b.pos;
    while (q < c->len && !(c->buf[q] == 0xFF && q + 1 < c->len && c->buf[q + 1] != 0x00 &&
                           (c->buf[q + 1] < 0xD0 || c->buf[q + 1] > 0xD7)))
        q += (c->buf[q] == 0xFF) ? 2 : 1;
    c->pos = q < c->len ? q : c->len;
    return CHEX_PRE_OK;
}

chex_pre_err chex_jpegll_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                                chex_codec_frame *f, char *msg, size_t msglen)
{
    jls_ctx c;
    if (!f || !out || (!frame && len)) {
        chex_pre_msg(msg, msglen, "chex_jpegll_decode: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    chex_pre_err e = start(&c, frame, len, msg, msglen);
    const uint8_t *sos;
    size_t soslen;
    if (e == CHEX_PRE_OK)
        e = header(&c, &sos, &soslen);
    if (e != CHEX_PRE_OK)
        return e;
    fill_frame(&c, f);
    size_t need = (size_t)c.width * (size_t)c.height * (size_t)c.ncomp;
    if (out_cap < need) {
        chex_pre_msg(msg, msglen, "chex_jpegll_decode: buffer of %zu samples, %zu needed", out_cap,
                     need);
        return CHEX_PRE_ERR_ARG;
    }
    if (c.ncomp > 1) /* samples no scan covers stay 0 */
        memset(out, 0, need * sizeof *out);
    while (sos) {
        e = decode_scan(&c, sos, soslen, out);
        if (e != CHEX_PRE_OK)
            return e;
        e = next_segments(&c, &sos, &soslen);
        if (e != CHEX_PRE_OK)
            return e;
    }
    return CHEX_PRE_OK;
}
