/* preprocessing/jpegls.c - JPEG-LS (1.2.840.10008.1.2.4.80 lossless, .81
 * near-lossless) through CharLS's C API (Debian 12: CharLS 2.4.1).
 *
 * CharLS reads only the buffer it is given (set_source_buffer with len) and
 * reports corrupt data as an error code; a stream not ending in EOI is refused
 * before CharLS sees it (see open_stream), and so is one shorter than one bit
 * per line (the least T.87 can code a line in); CharLS's work is then bounded
 * by the frame's pixels, which the caller checked against its limits. Every
 * path destroys the decoder. It writes samples of <= 8 bits as bytes and
 * wider ones as uint16;
 * 8-bit frames are decoded into the start of the caller's buffer and widened
 * in place from the end. Interleave mode none comes out planar and is
 * reordered to pixel-interleaved through a temporary copy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <charls/charls.h>

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "JPEG-LS"

const char *chex_jpegls_library_version(void)
{
    return charls_get_version_string();
}

static chex_pre_err fail(charls_jpegls_errc ec, const char *when, char *msg, size_t msglen)
{
    chex_pre_msg(msg, msglen, "DICOM malformed: %s stream %s: %s", NAME, when,
                 charls_get_error_message(ec));
    return CHEX_PRE_ERR_MALFORMED;
}

/* Creates a decoder on frame and reads its header into *f. */
static chex_pre_err open_stream(const uint8_t *frame, size_t len, charls_jpegls_decoder **out,
                                chex_codec_frame *f, char *msg, size_t msglen)
{
    *out = NULL;
    if (!f || !frame || len == 0) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s frame is empty", NAME);
        return frame || !len ? CHEX_PRE_ERR_MALFORMED : CHEX_PRE_ERR_ARG;
    }
    /* CharLS 2.4.1 (Debian 12) can loop for minutes on scan data that runs to
     * the end of its buffer without a marker (a truncated stream; upstream
     * fixed such loops later, charls PR #334): a stream must end with EOI,
     * before the even-length padding a DICOM fragment may add (00 or FF, as in
     * NEMA's RG2_JLSL). */
    while (len > 2 && !(frame[len - 2] == 0xFF && frame[len - 1] == 0xD9) &&
           (frame[len - 1] == 0x00 || frame[len - 1] == 0xFF))
        len--;
    if (len < 4 || frame[len - 2] != 0xFF || frame[len - 1] != 0xD9) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s stream is truncated (no EOI marker)",
                     NAME);
        return CHEX_PRE_ERR_MALFORMED;
    }
    charls_jpegls_decoder *d = charls_jpegls_decoder_create();
    if (!d) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    charls_jpegls_errc ec = charls_jpegls_decoder_set_source_buffer(d, frame, len);
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS)
        ec = charls_jpegls_decoder_read_header(d);
    charls_frame_info fi;
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS)
        ec = charls_jpegls_decoder_get_frame_info(d, &fi);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        charls_jpegls_decoder_destroy(d);
        return fail(ec, "header", msg, msglen);
    }
    if (fi.width < 1 || fi.height < 1 || fi.width > CHEX_PRE_MAX_SIDE ||
        fi.height > CHEX_PRE_MAX_SIDE || fi.bits_per_sample < 2 || fi.bits_per_sample > 16 ||
        fi.component_count < 1 || fi.component_count > 4) {
        charls_jpegls_decoder_destroy(d);
        chex_pre_msg(msg, msglen,
                     "%s frame %lux%lu with %d components of %d bits is not supported", NAME,
                     (unsigned long)fi.width, (unsigned long)fi.height, (int)fi.component_count,
                     (int)fi.bits_per_sample);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    /* T.87 codes every line in at least one bit (a run reaching the end of
     * the line still writes one); a stream too short for its height is
     * refused before CharLS decodes (up to the pixel limit) from it */
    if ((uint64_t)len * 8 < (uint64_t)fi.height) {
        charls_jpegls_decoder_destroy(d);
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: %s stream of %zu bytes cannot hold %lu lines (every line "
                     "takes at least one bit)",
                     NAME, len, (unsigned long)fi.height);
        return CHEX_PRE_ERR_MALFORMED;
    }
    f->width = (int)fi.width;
    f->height = (int)fi.height;
    f->spp = (int)fi.component_count;
    f->precision = (int)fi.bits_per_sample;
    f->is_signed = 0;
    *out = d;
    return CHEX_PRE_OK;
}

chex_pre_err chex_jpegls_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                               size_t msglen)
{
    charls_jpegls_decoder *d;
    chex_pre_err e = open_stream(frame, len, &d, f, msg, msglen);
    if (e == CHEX_PRE_OK)
        charls_jpegls_decoder_destroy(d);
    return e;
}

chex_pre_err chex_jpegls_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                                chex_codec_frame *f, char *msg, size_t msglen)
{
    if (!out) {
        chex_pre_msg(msg, msglen, "chex_jpegls_decode: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    charls_jpegls_decoder *d;
    chex_pre_err e = open_stream(frame, len, &d, f, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    size_t np = (size_t)f->width * (size_t)f->height, need = np * (size_t)f->spp;
    int wide = f->precision > 8;
    size_t bytes = 0;
    charls_jpegls_errc ec = charls_jpegls_decoder_get_destination_size(d, 0, &bytes);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS) {
        charls_jpegls_decoder_destroy(d);
        return fail(ec, "header", msg, msglen);
    }
    if (out_cap < need || bytes != need * (wide ? 2u : 1u)) {
        charls_jpegls_decoder_destroy(d);
        chex_pre_msg(msg, msglen, "chex_jpegls_decode: buffer of %zu samples, %zu needed",
                     out_cap, need);
        return CHEX_PRE_ERR_ARG;
    }
    charls_interleave_mode ilv = CHARLS_INTERLEAVE_MODE_NONE;
    ec = charls_jpegls_decoder_get_interleave_mode(d, &ilv);
    if (ec == CHARLS_JPEGLS_ERRC_SUCCESS)
        ec = charls_jpegls_decoder_decode_to_buffer(d, out, bytes, 0);
    charls_jpegls_decoder_destroy(d);
    if (ec != CHARLS_JPEGLS_ERRC_SUCCESS)
        return fail(ec, "data", msg, msglen);
    if (!wide) {
        const uint8_t *b = (const uint8_t *)out;
        for (size_t i = need; i-- > 0;)
            out[i] = b[i];
    }
    if (f->spp > 1 && ilv == CHARLS_INTERLEAVE_MODE_NONE) {
        uint16_t *t = malloc(need * sizeof *t);
        if (!t) {
            chex_pre_msg(msg, msglen, "out of memory");
            return CHEX_PRE_ERR_NOMEM;
        }
        memcpy(t, out, need * sizeof *t);
        for (size_t c = 0; c < (size_t)f->spp; c++)
            for (size_t i = 0; i < np; i++)
                out[i * (size_t)f->spp + c] = t[c * np + i];
        free(t);
    }
    return CHEX_PRE_OK;
}
