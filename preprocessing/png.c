/* preprocessing/png.c - PNG from memory with libpng, row by row: every colour
 * type and depth.
 *
 * Samples become planar float in [0,1]:
 *   depth 1/2/4/8 (gray, gray+alpha, RGB, RGBA, palette): s / (2^depth - 1),
 *     never stretched (palette entries are 8-bit: /255); scaling "<depth>bit".
 *   16-bit RGB/RGBA: s / 65535, scaling "full".
 *   16-bit gray/gray+alpha: opts->png16_scaling (see preprocess.h): "minmax",
 *     "sbit" (values above 2^sBIT-1 are clamped to 1) or "full". minmax needs
 *     the whole image's range: rows carry s - s0 (s0 the first sample, so
 *     every value fits the range and float keeps it exact) and the map to
 *     [0,1] is passed to chex_pre_rows_finish.
 * Alpha and tRNS are dropped: the colour samples are kept as stored, with no
 * compositing over a background (PIL's convert('RGB')/convert('L') does the same).
 * 16-bit samples are read big-endian straight from libpng's rows, never through 8 bits.
 *
 * Rows are read one at a time (png_read_row) and handed on; only Adam7
 * interlaced files keep the whole image, as 8/16-bit integers.
 *
 * Memory: libpng allocates through a counter capped at png_lib_bytes (its
 * structs, zlib's 32 KiB window, two rows), ancillary chunks we never use are
 * skipped unread (their CRC is still checked), so chex_pre_probe_png's bound
 * holds for any file: going past it is an out-of-memory error, not growth.
 *
 * Errors: libpng reports through on_error, which longjmps back to the setjmp in
 * chex_pre_decode_png; every buffer is reachable from a volatile pointer there
 * and freed. CRC errors in critical and ancillary chunks are errors, and the
 * file must run to IEND (png_read_end), so truncation anywhere is MALFORMED.
 */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "preprocessing/decoders.h"
#include "preprocessing/pre_internal.h"

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char *msg;
    size_t msglen;
    /* set before longjmp and read after it, hence volatile (C11 7.13.2.1);
     * OK means "an error raised by libpng itself" */
    volatile chex_pre_err err;
    size_t mem_used, mem_cap; /* libpng's allocations */
} png_src;

/* What libpng may allocate for a w-pixel-wide image: png_struct and info,
 * zlib's inflate state and 32 KiB window, the IDAT read buffer (8 KiB) and
 * two rows (current and previous) of at most 8 bytes per pixel. */
static uint64_t png_lib_bytes(uint64_t w)
{
    return 96u * 1024u + 2u * (w * 8u + 128u);
}

#define ALLOC_HDR 16 /* keeps the size; malloc's alignment */

static png_voidp on_malloc(png_structp png, png_alloc_size_t n)
{
    png_src *s = png_get_mem_ptr(png);
    if (n > s->mem_cap - s->mem_used || n > SIZE_MAX - ALLOC_HDR)
        return NULL;
    uint8_t *p = malloc(n + ALLOC_HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    s->mem_used += n;
    return p + ALLOC_HDR;
}

static void on_free(png_structp png, png_voidp ptr)
{
    if (!ptr)
        return;
    png_src *s = png_get_mem_ptr(png);
    uint8_t *p = (uint8_t *)ptr - ALLOC_HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    s->mem_used -= n;
    free(p);
}

static void on_error(png_structp png, png_const_charp text)
{
    png_src *s = png_get_error_ptr(png);
    if (s->err == CHEX_PRE_OK) {
        s->err = strstr(text, "ut of memory") ? CHEX_PRE_ERR_NOMEM : CHEX_PRE_ERR_MALFORMED;
        chex_pre_msg(s->msg, s->msglen, "PNG: %s", text);
    }
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp text)
{
    (void)png;
    (void)text;
}

static void read_fn(png_structp png, png_bytep out, size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        s->err = CHEX_PRE_ERR_MALFORMED;
        chex_pre_msg(s->msg, s->msglen, "PNG truncated: %zu bytes, needed %zu more at offset %zu",
                     s->len, n, s->pos);
        png_error(png, "truncated");
    }
    memcpy(out, s->buf + s->pos, n);
    s->pos += n;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* How one decoded row becomes float planes. */
typedef struct {
    int w, ch, bd, oc;
    float maxval;     /* divisor for 8-bit and 16-bit colour / full / sbit */
    int gray16;       /* 16-bit gray: mode below */
    chex_png16_scaling mode;
    int v0, lo, hi;   /* minmax: first sample, range so far */
} row_conv;

static void convert_row(row_conv *rc, const uint8_t *row, float *const *planes)
{
    const int w = rc->w, ch = rc->ch;
    for (int c = 0; c < rc->oc; c++) {
        float *dst = planes[c];
        if (rc->bd == 8) {
            const uint8_t *p = row + c;
            for (int x = 0; x < w; x++, p += ch)
                dst[x] = (float)*p / rc->maxval;
        } else if (rc->gray16 && rc->mode == CHEX_PNG16_MINMAX) {
            const uint8_t *p = row;
            int lo = rc->lo, hi = rc->hi, v0 = rc->v0;
            for (int x = 0; x < w; x++, p += 2 * ch) {
                int v = p[0] << 8 | p[1];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                dst[x] = (float)(v - v0);
            }
            rc->lo = lo;
            rc->hi = hi;
        } else if (rc->gray16 && rc->mode == CHEX_PNG16_SBIT) {
            const uint8_t *p = row;
            for (int x = 0; x < w; x++, p += 2 * ch) {
                float v = (float)(p[0] << 8 | p[1]) / rc->maxval;
                dst[x] = v > 1.0f ? 1.0f : v;
            }
        } else {
            const uint8_t *p = row + 2 * c;
            for (int x = 0; x < w; x++, p += 2 * ch)
                dst[x] = (float)(p[0] << 8 | p[1]) / rc->maxval;
        }
    }
}

static const png_byte skipped_chunks[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0"
                                         "pHYs\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0zTXt";
#define N_SKIPPED 16

/* IHDR straight from the bytes (the probe; libpng re-reads it when decoding). */
typedef struct {
    uint32_t w, h;
    int depth, ctype, interlace;
} ihdr;

static chex_pre_err read_ihdr(const uint8_t *buf, size_t len, ihdr *o, char *msg, size_t msglen)
{
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (!chex_pre_is_png(buf, len)) {
        chex_pre_msg(msg, msglen, "no PNG signature");
        return CHEX_PRE_ERR_FORMAT;
    }
    if (len < 33 || be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4) != 0) {
        chex_pre_msg(msg, msglen, "PNG: %s", len < 33 ? "truncated in IHDR" : "IHDR not first");
        return CHEX_PRE_ERR_MALFORMED;
    }
    o->w = be32(buf + 16);
    o->h = be32(buf + 20);
    o->depth = buf[24];
    o->ctype = buf[25];
    o->interlace = buf[28];
    if (o->w == 0 || o->h == 0)
        return CHEX_PRE_ERR_UNUSABLE; /* named by the caller's check_dims */
    if (crc32(crc32(0, NULL, 0), buf + 12, 17) != be32(buf + 29)) {
        chex_pre_msg(msg, msglen, "PNG: IHDR: CRC error");
        return CHEX_PRE_ERR_MALFORMED;
    }
    int d = o->depth, ok;
    switch (o->ctype) {
    case 0:
        ok = d == 1 || d == 2 || d == 4 || d == 8 || d == 16;
        break;
    case 3:
        ok = d == 1 || d == 2 || d == 4 || d == 8;
        break;
    case 2:
    case 4:
    case 6:
        ok = d == 8 || d == 16;
        break;
    default:
        ok = 0;
    }
    if (!ok || o->interlace > 1 || buf[26] != 0 || buf[27] != 0) {
        chex_pre_msg(msg, msglen, "PNG: IHDR: invalid colour type %d / bit depth %d / methods",
                     o->ctype, d);
        return CHEX_PRE_ERR_MALFORMED;
    }
    return CHEX_PRE_OK;
}

/* Bytes this decoder allocates itself and through libpng for the image. */
static uint64_t decoder_bytes(const ihdr *h)
{
    uint64_t w = h->w;
    /* transformed row: palette -> RGB(A) (tRNS is not known yet: 4 bytes),
     * depth < 8 unpacked to a byte per sample */
    int ch = h->ctype == 3 ? 4 : h->ctype == 2 ? 3 : h->ctype == 4 ? 2 : h->ctype == 6 ? 4 : 1;
    uint64_t rowbytes = w * (uint64_t)ch * (h->depth == 16 ? 2u : 1u);
    uint64_t own = h->interlace ? rowbytes * h->h + (uint64_t)h->h * sizeof(void *) : rowbytes;
    return png_lib_bytes(w) + own + 3u * 4096u; /* page rounding */
}

chex_pre_err chex_pre_probe_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                chex_pre_probe_info *info, char *msg, size_t msglen)
{
    ihdr h;
    chex_pre_err e = read_ihdr(buf, len, &h, msg, msglen);
    if (e == CHEX_PRE_ERR_UNUSABLE || e == CHEX_PRE_OK) {
        chex_pre_err d = chex_pre_check_dims(h.w, h.h, opts, "PNG", msg, msglen);
        if (d != CHEX_PRE_OK)
            return d;
    }
    if (e != CHEX_PRE_OK)
        return e;
    snprintf(info->format, sizeof info->format, "png");
    info->width = (int)h.w;
    info->height = (int)h.h;
    info->channels = (h.ctype & PNG_COLOR_MASK_COLOR) ? 3 : 1;
    info->bit_depth = h.depth;
    info->interlaced = h.interlace == 1;
    info->decode_bytes = decoder_bytes(&h);
    return CHEX_PRE_OK;
}

chex_pre_err chex_pre_decode_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                 size_t msglen)
{
    ihdr hd;
    chex_pre_err e = read_ihdr(buf, len, &hd, msg, msglen);
    /* libpng only says "Invalid IHDR data" for a zero side; name it ourselves. */
    if (e == CHEX_PRE_ERR_UNUSABLE)
        return chex_pre_check_dims(hd.w, hd.h, opts, "PNG", msg, msglen);
    if (e == CHEX_PRE_ERR_EMPTY || e == CHEX_PRE_ERR_FORMAT)
        return e;
    /* other IHDR faults are left for libpng to report, as they always were */
    if (e != CHEX_PRE_OK)
        hd.w = hd.h = 1;
    if (msg && msglen)
        msg[0] = '\0';
    png_src src = {buf, len, 0, msg, msglen, CHEX_PRE_OK, 0, 0};
    src.mem_cap = png_lib_bytes(hd.w);
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning,
                                               &src, on_malloc, on_free);
    if (!png) {
        chex_pre_msg(msg, msglen, "PNG: out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        chex_pre_msg(msg, msglen, "PNG: out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    uint8_t *volatile raw = NULL;
    png_bytep *volatile rowp = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(raw);
        free(rowp);
        png_destroy_read_struct(&png, &info, NULL);
        return src.err != CHEX_PRE_OK ? src.err : CHEX_PRE_ERR_MALFORMED;
    }
    png_set_read_fn(png, &src, read_fn);
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    /* Our own max_pixels check governs, not libpng's default 1e6 per side. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    /* Chunks we never use are skipped (their CRC is still checked) rather
     * than parsed or inflated: text, ICC profiles, palettes suggestions... */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skipped_chunks, N_SKIPPED);
    png_read_info(png, info);

    png_uint_32 w32, h32;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w32, &h32, &depth, &ctype, &interlace, NULL, NULL);
    e = chex_pre_check_dims(w32, h32, opts, "PNG", msg, msglen);
    if (e != CHEX_PRE_OK || w32 != hd.w) {
        if (e == CHEX_PRE_OK) {
            e = CHEX_PRE_ERR_MALFORMED;
            chex_pre_msg(msg, msglen, "PNG: IHDR unreadable");
        }
        png_destroy_read_struct(&png, &info, NULL);
        return e;
    }
    int sbit = 0;
    png_color_8p sig;
    if ((ctype & PNG_COLOR_MASK_COLOR) == 0 && png_get_sBIT(png, info, &sig) & PNG_INFO_sBIT)
        sbit = sig->gray;

    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (depth < 8)
        png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t w = w32, h = h32;
    int ch = png_get_channels(png, info);
    int bd = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((bd != 8 && bd != 16) || ch < 1 || ch > 4 || rowbytes != w * (size_t)ch * (size_t)(bd / 8)) {
        src.err = CHEX_PRE_ERR_UNSUPPORTED;
        chex_pre_msg(msg, msglen, "PNG: unexpected row layout (%d channels, %d bits)", ch, bd);
        png_error(png, "layout");
    }
    row_conv rc = {.w = (int)w, .ch = ch, .bd = bd, .oc = ch >= 3 ? 3 : 1};
    rc.gray16 = bd == 16 && rc.oc == 1;
    rc.mode = opts->png16_scaling;
    if (rc.gray16 && rc.mode == CHEX_PNG16_SBIT && !(sbit >= 1 && sbit <= 16))
        rc.mode = CHEX_PNG16_MINMAX; /* no sBIT: falls back, and says so */
    if (bd == 16)
        rc.maxval = rc.gray16 && rc.mode == CHEX_PNG16_SBIT ? (float)((1u << sbit) - 1) : 65535.0f;
    else if (ctype == PNG_COLOR_TYPE_PALETTE)
        rc.maxval = 255.0f;
    else
        rc.maxval = (float)((1u << depth) - 1);

    meta->width = (int)w;
    meta->height = (int)h;
    meta->channels = rc.oc;
    meta->bit_depth = depth;
    snprintf(meta->format, sizeof meta->format, "png");
    if (rc.gray16)
        snprintf(meta->scaling, sizeof meta->scaling, "%s",
                 rc.mode == CHEX_PNG16_FULL   ? "full"
                 : rc.mode == CHEX_PNG16_SBIT ? "sbit"
                                              : "minmax");
    else if (bd == 16)
        snprintf(meta->scaling, sizeof meta->scaling, "full");
    else
        snprintf(meta->scaling, sizeof meta->scaling, "%dbit",
                 ctype == PNG_COLOR_TYPE_PALETTE ? 8 : depth);

    rows->raw_values = rc.gray16 && rc.mode == CHEX_PNG16_MINMAX;
    e = chex_pre_rows_begin(rows, (int)w, (int)h, rc.oc, msg, msglen);
    if (e != CHEX_PRE_OK) {
        src.err = e;
        png_error(png, "rows");
    }
    if (passes > 1) {
        raw = malloc(rowbytes * h);
        rowp = malloc(h * sizeof(png_bytep));
        if (!raw || !rowp) {
            src.err = CHEX_PRE_ERR_NOMEM;
            chex_pre_msg(msg, msglen, "PNG: out of memory for an interlaced %zux%zu image", w, h);
            png_error(png, "nomem");
        }
        for (size_t y = 0; y < h; y++)
            rowp[y] = raw + y * rowbytes;
        png_read_image(png, rowp);
    } else {
        raw = malloc(rowbytes);
        if (!raw) {
            src.err = CHEX_PRE_ERR_NOMEM;
            chex_pre_msg(msg, msglen, "PNG: out of memory");
            png_error(png, "nomem");
        }
    }
    for (size_t y = 0; y < h; y++) {
        const uint8_t *row = raw;
        if (passes > 1)
            row = rowp[y];
        else
            png_read_row(png, raw, NULL);
        if (y == 0 && rc.gray16)
            rc.v0 = rc.lo = rc.hi = row[0] << 8 | row[1];
        convert_row(&rc, row, chex_pre_rows_next(rows));
        chex_pre_rows_commit(rows);
    }
    png_read_end(png, NULL);
    free(raw);
    free(rowp);
    png_destroy_read_struct(&png, &info, NULL);
    if (rc.gray16 && rc.mode == CHEX_PNG16_MINMAX)
        chex_pre_rows_finish(rows, 1, (float)(rc.lo - rc.v0), (float)(rc.hi - rc.lo));
    else
        chex_pre_rows_finish(rows, 0, 0.0f, 0.0f);
    return CHEX_PRE_OK;
}
