/* preprocessing/png.c - PNG from memory with libpng: every colour type and depth.
 *
 * Samples become planar float in [0,1]:
 *   depth 1/2/4/8 (gray, gray+alpha, RGB, RGBA, palette): s / (2^depth - 1),
 *     never stretched (palette entries are 8-bit: /255); scaling "<depth>bit".
 *   16-bit RGB/RGBA: s / 65535, scaling "full".
 *   16-bit gray/gray+alpha: opts->png16_scaling (see preprocess.h): "minmax",
 *     "sbit" (values above 2^sBIT-1 are clamped to 1) or "full".
 * Alpha and tRNS are dropped: the colour samples are kept as stored, with no
 * compositing over a background (PIL's convert('RGB')/convert('L') does the same).
 * 16-bit samples are read big-endian straight from libpng's rows, never through 8 bits.
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
} png_src;

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

/* One decoded row (ch interleaved samples of bd bits, after png_set_packing) ->
 * planar floats. 16-bit gray is stored as the raw value and scaled afterwards. */
static void convert_row(const uint8_t *row, size_t w, int ch, int bd, int oc, float maxval,
                        float *pix, size_t plane, size_t y)
{
    for (int c = 0; c < oc; c++) {
        float *dst = pix + c * plane + y * w;
        if (bd == 8) {
            const uint8_t *p = row + c;
            for (size_t x = 0; x < w; x++, p += ch)
                dst[x] = (float)*p / maxval;
        } else if (maxval == 1.0f) { /* 16-bit gray: raw values, scaled later */
            const uint8_t *p = row + 2 * c;
            for (size_t x = 0; x < w; x++, p += 2 * ch)
                dst[x] = (float)(p[0] << 8 | p[1]);
        } else {
            const uint8_t *p = row + 2 * c;
            for (size_t x = 0; x < w; x++, p += 2 * ch)
                dst[x] = (float)(p[0] << 8 | p[1]) / maxval;
        }
    }
}

/* 16-bit gray: pix holds raw values 0..65535; map them per opts. */
static void scale_gray16(float *pix, size_t n, chex_png16_scaling mode, int sbit, char *scaling,
                         size_t scaling_len)
{
    if (mode == CHEX_PNG16_FULL) {
        for (size_t i = 0; i < n; i++)
            pix[i] = pix[i] / 65535.0f;
        snprintf(scaling, scaling_len, "full");
        return;
    }
    if (mode == CHEX_PNG16_SBIT && sbit >= 1 && sbit <= 16) {
        float maxval = (float)((1u << sbit) - 1);
        for (size_t i = 0; i < n; i++) {
            float v = pix[i] / maxval;
            pix[i] = v > 1.0f ? 1.0f : v;
        }
        snprintf(scaling, scaling_len, "sbit");
        return;
    }
    float lo = pix[0], hi = pix[0];
    for (size_t i = 1; i < n; i++) {
        lo = pix[i] < lo ? pix[i] : lo;
        hi = pix[i] > hi ? pix[i] : hi;
    }
    if (hi > lo) {
        float range = hi - lo;
        for (size_t i = 0; i < n; i++)
            pix[i] = (pix[i] - lo) / range;
    } else {
        memset(pix, 0, n * sizeof *pix); /* constant image: all 0 */
    }
    snprintf(scaling, scaling_len, "minmax");
}

chex_pre_err chex_pre_decode_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_image *img, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!img || !opts) {
        chex_pre_msg(msg, msglen, "PNG: NULL image or options");
        return CHEX_PRE_ERR_ARG;
    }
    img->pix = NULL;
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (!chex_pre_is_png(buf, len)) {
        chex_pre_msg(msg, msglen, "no PNG signature");
        return CHEX_PRE_ERR_FORMAT;
    }
    /* libpng only says "Invalid IHDR data" for a zero side; name it ourselves. */
    if (len >= 24 && memcmp(buf + 12, "IHDR", 4) == 0 &&
        (be32(buf + 16) == 0 || be32(buf + 20) == 0))
        return chex_pre_check_dims(be32(buf + 16), be32(buf + 20), opts, "PNG", msg, msglen);

    png_src src = {buf, len, 0, msg, msglen, CHEX_PRE_OK};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
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
    png_bytep *volatile rows = NULL;
    float *volatile pix = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(raw);
        free(rows);
        free(pix);
        png_destroy_read_struct(&png, &info, NULL);
        img->pix = NULL;
        return src.err != CHEX_PRE_OK ? src.err : CHEX_PRE_ERR_MALFORMED;
    }
    png_set_read_fn(png, &src, read_fn);
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    /* Our own max_pixels check governs, not libpng's default 1e6 per side. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    /* Text and ICC profiles are never used: skip them (their CRC is still
     * checked) rather than inflate attacker-sized compressed payloads. */
    static const png_byte skip[] = "iCCP\0iTXt\0tEXt\0zTXt";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip, 4);
    png_read_info(png, info);

    png_uint_32 w32, h32;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w32, &h32, &depth, &ctype, &interlace, NULL, NULL);
    chex_pre_err e = chex_pre_check_dims(w32, h32, opts, "PNG", msg, msglen);
    if (e != CHEX_PRE_OK) {
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
    int oc = ch >= 3 ? 3 : 1;
    int gray16 = bd == 16 && oc == 1;
    float maxval;
    if (bd == 16)
        maxval = gray16 ? 1.0f : 65535.0f;
    else if (ctype == PNG_COLOR_TYPE_PALETTE)
        maxval = 255.0f;
    else
        maxval = (float)((1u << depth) - 1);

    size_t plane = w * h;
    pix = malloc((size_t)oc * plane * sizeof(float));
    if (!pix) {
        src.err = CHEX_PRE_ERR_NOMEM;
        chex_pre_msg(msg, msglen, "PNG: out of memory for %zux%zu pixels", w, h);
        png_error(png, "nomem");
    }
    if (passes > 1) {
        raw = malloc(rowbytes * h);
        rows = malloc(h * sizeof(png_bytep));
        if (!raw || !rows) {
            src.err = CHEX_PRE_ERR_NOMEM;
            chex_pre_msg(msg, msglen, "PNG: out of memory for an interlaced %zux%zu image", w, h);
            png_error(png, "nomem");
        }
        for (size_t y = 0; y < h; y++)
            rows[y] = raw + y * rowbytes;
        png_read_image(png, rows);
        for (size_t y = 0; y < h; y++)
            convert_row(rows[y], w, ch, bd, oc, maxval, pix, plane, y);
    } else {
        raw = malloc(rowbytes);
        if (!raw) {
            src.err = CHEX_PRE_ERR_NOMEM;
            chex_pre_msg(msg, msglen, "PNG: out of memory");
            png_error(png, "nomem");
        }
        for (size_t y = 0; y < h; y++) {
            png_read_row(png, raw, NULL);
            convert_row(raw, w, ch, bd, oc, maxval, pix, plane, y);
        }
    }
    png_read_end(png, NULL);

    img->width = (int)w;
    img->height = (int)h;
    img->channels = oc;
    img->bit_depth = depth;
    snprintf(img->format, sizeof img->format, "png");
    if (gray16)
        scale_gray16(pix, plane, opts->png16_scaling, sbit, img->scaling, sizeof img->scaling);
    else if (bd == 16)
        snprintf(img->scaling, sizeof img->scaling, "full");
    else
        snprintf(img->scaling, sizeof img->scaling, "%dbit",
                 ctype == PNG_COLOR_TYPE_PALETTE ? 8 : depth);
    img->pix = pix;
    free(raw);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return CHEX_PRE_OK;
}
