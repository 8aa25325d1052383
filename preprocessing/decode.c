/* preprocessing/decode.c - signature dispatch, error messages, image lifetime. */
#include "preprocessing/decoders.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/pre_internal.h"
#include "preprocessing/stream.h"

static const char *const messages[CHEX_PRE_ERR_COUNT] = {
    [CHEX_PRE_OK] = "ok",
    [CHEX_PRE_ERR_EMPTY] = "empty image body",
    [CHEX_PRE_ERR_MALFORMED] = "malformed image (truncated, bad checksum or corrupt data)",
    [CHEX_PRE_ERR_FORMAT] = "not a PNG, JPEG or DICOM file",
    [CHEX_PRE_ERR_UNSUPPORTED] = "unsupported variant of a known image format",
    [CHEX_PRE_ERR_TOO_LARGE] = "image has more pixels than allowed",
    [CHEX_PRE_ERR_UNUSABLE] = "image cannot be used (zero size, too small or no pixel data)",
    [CHEX_PRE_ERR_NOMEM] = "out of memory while preprocessing the image",
    [CHEX_PRE_ERR_ARG] = "invalid preprocessing argument",
};

const char *chex_pre_strerror(chex_pre_err e)
{
    if ((int)e < 0 || e >= CHEX_PRE_ERR_COUNT || !messages[e])
        return "unknown preprocessing error";
    return messages[e];
}

void chex_pre_image_free(chex_pre_image *img)
{
    if (!img)
        return;
    free(img->pix);
    img->pix = NULL;
}

void chex_pre_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    if (!msg || msglen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

chex_pre_err chex_pre_check_dims(uint64_t width, uint64_t height, const chex_pre_opts *opts,
                                 const char *what, char *msg, size_t msglen)
{
    if (width == 0 || height == 0) {
        chex_pre_msg(msg, msglen, "%s has zero width or height (%llux%llu)", what,
                     (unsigned long long)width, (unsigned long long)height);
        return CHEX_PRE_ERR_UNUSABLE;
    }
    /* Both factors are below 2^32, so the product cannot overflow. */
    uint64_t max = opts->max_pixels ? opts->max_pixels : CHEX_PRE_HARD_MAX_PIXELS;
    if (max > CHEX_PRE_HARD_MAX_PIXELS)
        max = CHEX_PRE_HARD_MAX_PIXELS;
    if (width > CHEX_PRE_MAX_SIDE || height > CHEX_PRE_MAX_SIDE || width * height > max) {
        chex_pre_msg(msg, msglen, "%s is %llux%llu = %llu pixels, more than the limit of %llu",
                     what, (unsigned long long)width, (unsigned long long)height,
                     (unsigned long long)(width * height), (unsigned long long)max);
        return CHEX_PRE_ERR_TOO_LARGE;
    }
    uint64_t shorter = width < height ? width : height;
    if (opts->min_side > 0 && shorter < (uint64_t)opts->min_side) {
        chex_pre_msg(msg, msglen, "%s is %llux%llu, shorter side below the minimum of %d px", what,
                     (unsigned long long)width, (unsigned long long)height, opts->min_side);
        return CHEX_PRE_ERR_UNUSABLE;
    }
    return CHEX_PRE_OK;
}

int chex_pre_is_png(const uint8_t *buf, size_t len)
{
    static const uint8_t sig[8] = {0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A};
    return buf && len >= 8 && memcmp(buf, sig, 8) == 0;
}

int chex_pre_is_jpeg(const uint8_t *buf, size_t len)
{
    return buf && len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
}

int chex_pre_is_dicom(const uint8_t *buf, size_t len)
{
    return buf && len >= 132 && memcmp(buf + 128, "DICM", 4) == 0;
}

typedef chex_pre_err (*decoder_fn)(const uint8_t *, size_t, const chex_pre_opts *,
                                   chex_pre_rows *, chex_pre_image *, char *, size_t);

/* Common checks, then the decoder for buf's signature (NULL with the error). */
static decoder_fn pick(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                       chex_pre_err *err, char *msg, size_t msglen)
{
    *err = CHEX_PRE_OK;
    if (opts->png16_scaling != CHEX_PNG16_MINMAX && opts->png16_scaling != CHEX_PNG16_SBIT &&
        opts->png16_scaling != CHEX_PNG16_FULL) {
        chex_pre_msg(msg, msglen, "unknown png16_scaling %d", (int)opts->png16_scaling);
        *err = CHEX_PRE_ERR_ARG;
        return NULL;
    }
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        *err = CHEX_PRE_ERR_EMPTY;
        return NULL;
    }
    if (chex_pre_is_png(buf, len))
        return chex_pre_decode_png;
    if (chex_pre_is_jpeg(buf, len))
        return chex_pre_decode_jpeg;
    if (chex_pre_is_dicom(buf, len))
        return chex_pre_decode_dicom;
    chex_pre_msg(msg, msglen, "not a PNG, JPEG or DICOM file (first bytes %02x %02x %02x %02x)",
                 buf[0], len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
    *err = CHEX_PRE_ERR_FORMAT;
    return NULL;
}

chex_pre_err chex_pre_decode(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                             chex_pre_image *img, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!img || !opts) {
        chex_pre_msg(msg, msglen, "chex_pre_decode: NULL image or options");
        return CHEX_PRE_ERR_ARG;
    }
    memset(img, 0, sizeof *img);
    chex_pre_err e;
    decoder_fn dec = pick(buf, len, opts, &e, msg, msglen);
    if (!dec)
        return e;
    chex_pre_rows rows;
    memset(&rows, 0, sizeof rows);
    rows.img = img;
    e = dec(buf, len, opts, &rows, img, msg, msglen);
    chex_pre_rows_free(&rows);
    if (e != CHEX_PRE_OK) {
        free(img->pix);
        img->pix = NULL;
        if (msg && msglen && msg[0] == '\0')
            chex_pre_msg(msg, msglen, "%s", chex_pre_strerror(e));
    }
    return e;
}

void chex_pre_display_dims(const chex_pre_opts *opts, int width, int height, int *dw, int *dh)
{
    chex_pre_display_size(width, height, opts ? opts->max_overlay_side : 0, dw, dh);
}

chex_pre_err chex_pre_prepare(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                              const chex_pre_spec *spec, float *out, chex_pre_crop *crops,
                              chex_pre_image *meta, chex_pre_display *display, char *msg,
                              size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (display)
        memset(display, 0, sizeof *display);
    if (!meta || !opts || !spec || !out) {
        chex_pre_msg(msg, msglen, "chex_pre_prepare: NULL options, spec, output or metadata");
        return CHEX_PRE_ERR_ARG;
    }
    memset(meta, 0, sizeof *meta);
    chex_pre_err e = chex_pre_spec_check(spec, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    decoder_fn dec = pick(buf, len, opts, &e, msg, msglen);
    if (!dec)
        return e;
    chex_pre_rows rows;
    memset(&rows, 0, sizeof rows);
    rows.spec = spec;
    rows.display = display;
    rows.max_display_side = opts->max_overlay_side;
    rows.threads = opts->threads;
    rows.out = out;
    rows.crops = crops;
    e = dec(buf, len, opts, &rows, meta, msg, msglen);
    chex_pre_rows_free(&rows);
    if (e != CHEX_PRE_OK) {
        if (display) {
            free(display->pix);
            memset(display, 0, sizeof *display);
        }
        if (msg && msglen && msg[0] == '\0')
            chex_pre_msg(msg, msglen, "%s", chex_pre_strerror(e));
    }
    return e;
}
