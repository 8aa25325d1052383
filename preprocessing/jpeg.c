/* preprocessing/jpeg.c - JPEG from memory with libjpeg-turbo's scanline API
 * (jpeg_read_scanlines): rows go to the caller one at a time, no full image.
 *
 * Baseline and progressive; grayscale -> 1 channel, YCbCr/RGB -> 3 channels,
 * samples / 255 ("8bit"). CMYK/YCCK, 12-bit and lossless JPEG -> UNSUPPORTED.
 * Decoding uses libjpeg's defaults (accurate integer IDCT, fancy upsampling),
 * the same as TurboJPEG's tjDecompress2 and PIL's decode. Warnings are errors
 * (as TurboJPEG's TJFLAG_STOPONWARNING): a truncated or corrupt stream would
 * otherwise decode to a half-grey image and silently give wrong
 * probabilities. Progressive scans are capped at 500 (TJFLAG_LIMITSCANS's
 * limit) against scan-count denial of service.
 *
 * Memory: libjpeg keeps a few rows per component, except for progressive or
 * multi-scan sequential files, which need the whole image's DCT coefficients
 * (128 bytes per 8x8 block per component); chex_pre_jpeg_bytes bounds both
 * from the header (SOF sampling factors, the first SOS's component count).
 *
 * Also used by dicom.c for JPEG Baseline pixel data (chex_pre_jpeg_scan).
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "preprocessing/decoders.h"
#include "preprocessing/pre_internal.h"
#include "preprocessing/stream.h"

#define MAX_SCANS 500

/* Walks the markers up to the first SOS. Malformed segment structure after
 * the SOF is left for libjpeg to report. */
static void walk_header(const uint8_t *buf, size_t len, chex_pre_jpeg_hdr *h)
{
    size_t i = 2;
    while (i + 4 <= len) {
        if (buf[i] != 0xFF)
            return;
        int m = buf[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
            i += 2;
            continue;
        }
        if (m == 0xD9)
            return;
        size_t seg = (size_t)buf[i + 2] << 8 | buf[i + 3];
        if (seg < 2 || seg > len - i - 2)
            return;
        const uint8_t *p = buf + i + 4;
        if (m == 0xDA) {
            if (h->sof && seg >= 3)
                h->scan_comps = p[0];
            return;
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && !h->sof) {
            if (seg < 8)
                return;
            h->sof = m;
            h->precision = p[0];
            h->height = p[1] << 8 | p[2];
            h->width = p[3] << 8 | p[4];
            h->ncomp = p[5];
            h->progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
            h->hmax = h->vmax = 1;
            for (int c = 0; c < h->ncomp && c < 4 && seg >= 8 + 3 * (size_t)(c + 1); c++) {
                int hs = p[7 + 3 * c] >> 4, vs = p[7 + 3 * c] & 15;
                h->h[c] = hs < 1 ? 1 : hs;
                h->v[c] = vs < 1 ? 1 : vs;
                h->hmax = h->h[c] > h->hmax ? h->h[c] : h->hmax;
                h->vmax = h->v[c] > h->vmax ? h->v[c] : h->vmax;
            }
        }
        i += 2 + seg;
    }
}

chex_pre_err chex_pre_jpeg_header(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_jpeg_hdr *h, char *msg, size_t msglen)
{
    memset(h, 0, sizeof *h);
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (len < 2 || buf[0] != 0xFF || buf[1] != 0xD8) {
        chex_pre_msg(msg, msglen, "no JPEG SOI marker");
        return CHEX_PRE_ERR_FORMAT;
    }
    walk_header(buf, len, h);
    /* name the variants libjpeg-turbo's 8-bit build cannot decode */
    int sof = h->sof;
    if (sof == 0xC3 || sof == 0xC7 || sof == 0xCB || sof == 0xCF) {
        chex_pre_msg(msg, msglen, "lossless JPEG (SOF%d) is not supported", sof - 0xC0);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    if (sof && h->precision != 8) {
        chex_pre_msg(msg, msglen, "JPEG with %d-bit samples is not supported (8-bit only)",
                     h->precision);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    if (!sof) {
        chex_pre_msg(msg, msglen, "JPEG has no frame header (truncated before SOF)");
        return CHEX_PRE_ERR_MALFORMED;
    }
    chex_pre_err e = chex_pre_check_dims((uint64_t)h->width, (uint64_t)h->height, opts, "JPEG",
                                         msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    if (h->ncomp == 4) {
        chex_pre_msg(msg, msglen, "JPEG: CMYK/YCCK colour space is not supported");
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    if (h->ncomp != 1 && h->ncomp != 3) {
        chex_pre_msg(msg, msglen, "JPEG with %d components is not supported (1 or 3)", h->ncomp);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    return CHEX_PRE_OK;
}

/* Blocks of component c along a side of n samples, rounded up to its
 * sampling factor as libjpeg's coefficient buffer does. */
static uint64_t comp_blocks(uint64_t n, int f, int fmax)
{
    uint64_t b = (n * (uint64_t)f + 8u * (uint64_t)fmax - 1) / (8u * (uint64_t)fmax);
    return (b + (uint64_t)f - 1) / (uint64_t)f * (uint64_t)f;
}

uint64_t chex_pre_jpeg_bytes(const chex_pre_jpeg_hdr *h)
{
    /* decompressor, memory manager pools, Huffman/IDCT/colour tables */
    uint64_t total = 256u * 1024u;
    uint64_t W = (uint64_t)h->width, H = (uint64_t)h->height;
    int whole = h->progressive || h->scan_comps == 0 || h->scan_comps < h->ncomp;
    for (int c = 0; c < h->ncomp && c < 4; c++) {
        uint64_t bw = comp_blocks(W, h->h[c], h->hmax), bh = comp_blocks(H, h->v[c], h->vmax);
        /* main buffer with context rows: <= 4 row groups of v*8 rows, plus
         * the upsampler's row group at full width */
        total += (bw + 2) * 8u * (uint64_t)h->v[c] * 8u * 4u;
        total += (W + 64) * (uint64_t)h->vmax * 2u;
        if (whole)
            total += bw * bh * 128u;
    }
    /* the scanline handed to the caller */
    return total + W * 3u + 64u;
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char *msg;
    size_t msglen;
} jerr;

static void on_error(j_common_ptr cinfo)
{
    jerr *e = (jerr *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    chex_pre_msg(e->msg, e->msglen, "JPEG data: %s", text);
    longjmp(e->jb, 1);
}

/* Warnings (corrupt data libjpeg would paper over) are errors. */
static void on_message(j_common_ptr cinfo, int level)
{
    if (level < 0)
        on_error(cinfo);
}

static void on_progress(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->progressive_mode && d->input_scan_number > MAX_SCANS) {
        jerr *e = (jerr *)cinfo->err;
        chex_pre_msg(e->msg, e->msglen, "JPEG data: progressive JPEG with more than %d scans",
                     MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

chex_pre_err chex_pre_jpeg_scan(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                chex_pre_jpeg_begin_fn begin, chex_pre_jpeg_row_fn row,
                                void *ctx, char *msg, size_t msglen)
{
    chex_pre_jpeg_hdr h;
    chex_pre_err e = chex_pre_jpeg_header(buf, len, opts, &h, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    struct jpeg_decompress_struct d;
    jerr je;
    memset(&d, 0, sizeof d);
    d.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = on_error;
    je.pub.emit_message = on_message;
    je.msg = msg;
    je.msglen = msglen;
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    uint8_t *volatile line = NULL;
    volatile int created = 0;
    if (setjmp(je.jb)) {
        free(line);
        if (created)
            jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_MALFORMED;
    }
    jpeg_create_decompress(&d);
    created = 1;
    d.progress = &progress;
    jpeg_mem_src(&d, buf, (unsigned long)len);
    if (jpeg_read_header(&d, TRUE) != JPEG_HEADER_OK || d.image_width == 0 ||
        d.image_height == 0) {
        chex_pre_msg(msg, msglen, "JPEG has no frame header (truncated before SOF)");
        jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_MALFORMED;
    }
    if ((int)d.image_width != h.width || (int)d.image_height != h.height) {
        chex_pre_msg(msg, msglen, "JPEG malformed: frame header unreadable");
        jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_MALFORMED;
    }
    if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK) {
        chex_pre_msg(msg, msglen, "JPEG: CMYK/YCCK colour space is not supported");
        jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    int oc = d.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3;
    d.out_color_space = oc == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&d);
    if ((int)d.output_width != h.width || (int)d.output_height != h.height ||
        d.output_components != oc) {
        chex_pre_msg(msg, msglen, "JPEG: unexpected output layout");
        jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_MALFORMED;
    }
    line = malloc((size_t)h.width * (size_t)oc);
    if (!line) {
        chex_pre_msg(msg, msglen, "JPEG: out of memory");
        jpeg_destroy_decompress(&d);
        return CHEX_PRE_ERR_NOMEM;
    }
    e = begin(ctx, h.width, h.height, oc, msg, msglen);
    if (e != CHEX_PRE_OK) {
        free(line);
        jpeg_destroy_decompress(&d);
        return e;
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW rp = line;
        if (jpeg_read_scanlines(&d, &rp, 1) != 1) {
            chex_pre_msg(msg, msglen, "JPEG data: truncated");
            free(line);
            jpeg_destroy_decompress(&d);
            return CHEX_PRE_ERR_MALFORMED;
        }
        row(ctx, line);
    }
    jpeg_finish_decompress(&d);
    free(line);
    jpeg_destroy_decompress(&d);
    return CHEX_PRE_OK;
}

/* ---- plain JPEG files: scanlines -> [0,1] float rows ---- */

typedef struct {
    chex_pre_rows *rows;
    chex_pre_image *meta;
    int oc, width;
    float lut[256];
} jpeg_ctx;

static chex_pre_err file_begin(void *ctx, int w, int h, int oc, char *msg, size_t msglen)
{
    jpeg_ctx *j = ctx;
    j->oc = oc;
    j->width = w;
    j->meta->width = w;
    j->meta->height = h;
    j->meta->channels = oc;
    j->meta->bit_depth = 8;
    snprintf(j->meta->format, sizeof j->meta->format, "jpeg");
    snprintf(j->meta->scaling, sizeof j->meta->scaling, "8bit");
    return chex_pre_rows_begin(j->rows, w, h, oc, msg, msglen);
}

static void file_row(void *ctx, const uint8_t *line)
{
    jpeg_ctx *j = ctx;
    float *const *planes = chex_pre_rows_next(j->rows);
    for (int c = 0; c < j->oc; c++) {
        float *dst = planes[c];
        const uint8_t *src = line + c;
        for (int x = 0; x < j->width; x++, src += j->oc)
            dst[x] = j->lut[*src];
    }
    chex_pre_rows_commit(j->rows);
}

chex_pre_err chex_pre_decode_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                  size_t msglen)
{
    jpeg_ctx j = {.rows = rows, .meta = meta};
    for (int i = 0; i < 256; i++)
        j.lut[i] = (float)i / 255.0f;
    chex_pre_err e = chex_pre_jpeg_scan(buf, len, opts, file_begin, file_row, &j, msg, msglen);
    if (e == CHEX_PRE_OK)
        chex_pre_rows_finish(rows, 0, 0.0f, 0.0f);
    return e;
}

chex_pre_err chex_pre_probe_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_probe_info *info, char *msg, size_t msglen)
{
    chex_pre_jpeg_hdr h;
    chex_pre_err e = chex_pre_jpeg_header(buf, len, opts, &h, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    snprintf(info->format, sizeof info->format, "jpeg");
    info->width = h.width;
    info->height = h.height;
    info->channels = h.ncomp == 1 ? 1 : 3;
    info->bit_depth = 8;
    info->decode_bytes = chex_pre_jpeg_bytes(&h);
    return CHEX_PRE_OK;
}
