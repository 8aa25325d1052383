/* preprocessing/dicom_codec.c - the compressed transfer syntaxes' first frame
 * as integer samples: transfer syntax -> decoder of codecs.h -> uint16 frame.
 * The frame's size is read from the stream header (or, for RLE, from the
 * data set) and checked against Rows/Columns/Samples per Pixel and the pixel
 * limits before the sample buffer exists.
 */
#include <stdlib.h>
#include <string.h>

#include "preprocessing/codecs.h"
#include "preprocessing/dicom.h"
#include "preprocessing/pre_internal.h"

/* HTJ2K (.4.201-.4.203, JPEG 2000 Part 15 codestreams) goes through OpenJPEG
 * 2.5.0's HTJ2K decoder; tests/reference/test_dicom_compressed.py checks it
 * against OpenJPH's ojph_expand (Debian's openjph-tools). */
static const struct {
    const char *uid;
    chex_dicom_codec codec;
} codec_ts[] = {
    {"1.2.840.10008.1.2.4.50", CHEX_DICOM_CODEC_JPEG},
    {"1.2.840.10008.1.2.4.51", CHEX_DICOM_CODEC_JPEG},
    {"1.2.840.10008.1.2.4.57", CHEX_DICOM_CODEC_JPEG_LOSSLESS},
    {"1.2.840.10008.1.2.4.70", CHEX_DICOM_CODEC_JPEG_LOSSLESS},
    {"1.2.840.10008.1.2.4.80", CHEX_DICOM_CODEC_JPEG_LS},
    {"1.2.840.10008.1.2.4.81", CHEX_DICOM_CODEC_JPEG_LS},
    {"1.2.840.10008.1.2.4.90", CHEX_DICOM_CODEC_J2K},
    {"1.2.840.10008.1.2.4.91", CHEX_DICOM_CODEC_J2K},
    {"1.2.840.10008.1.2.4.201", CHEX_DICOM_CODEC_J2K},
    {"1.2.840.10008.1.2.4.202", CHEX_DICOM_CODEC_J2K},
    {"1.2.840.10008.1.2.4.203", CHEX_DICOM_CODEC_J2K},
    {"1.2.840.10008.1.2.5", CHEX_DICOM_CODEC_RLE},
};

chex_dicom_codec chex_dicom_codec_for(const char *ts)
{
    for (size_t i = 0; i < sizeof codec_ts / sizeof codec_ts[0]; i++)
        if (strcmp(ts, codec_ts[i].uid) == 0)
            return codec_ts[i].codec;
    return CHEX_DICOM_CODEC_NONE;
}

chex_pre_err chex_dicom_decode_frame(const chex_dicom_info *info, const chex_pre_opts *opts,
                                     uint16_t **out, chex_codec_frame *f, char *msg,
                                     size_t msglen)
{
    *out = NULL;
    chex_dicom_codec codec = chex_dicom_codec_for(info->ids.transfer_syntax);
    if (codec == CHEX_DICOM_CODEC_NONE || codec == CHEX_DICOM_CODEC_JPEG) {
        chex_pre_msg(msg, msglen, "chex_dicom_decode_frame: not a codecs.h transfer syntax");
        return CHEX_PRE_ERR_ARG;
    }
    size_t n = 0;
    chex_pre_err err = chex_dicom_first_frame(info, NULL, 0, &n, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    uint8_t *frame = malloc(n); /* n <= pixel_len, which lies inside the request */
    if (!frame) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    err = chex_dicom_first_frame(info, frame, n, &n, msg, msglen);
    int bytes = info->bits_allocated / 8;
    if (err == CHEX_PRE_OK) {
        switch (codec) {
        case CHEX_DICOM_CODEC_JPEG_LOSSLESS:
            err = chex_jpegll_probe(frame, n, f, msg, msglen);
            break;
        case CHEX_DICOM_CODEC_JPEG_LS:
            err = chex_jpegls_probe(frame, n, f, msg, msglen);
            break;
        case CHEX_DICOM_CODEC_J2K:
            err = chex_j2k_probe(frame, n, f, msg, msglen);
            break;
        default:
            err = chex_rle_probe(frame, n, info->columns, info->rows, info->samples_per_pixel,
                                 bytes, f, msg, msglen);
            break;
        }
    }
    if (err == CHEX_PRE_OK && (f->width != info->columns || f->height != info->rows ||
                               f->spp != info->samples_per_pixel)) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: %s frame is %dx%d with %d components, Rows/Columns/Samples "
                     "per Pixel say %dx%d with %d",
                     info->ids.transfer_syntax, f->width, f->height, f->spp, info->columns,
                     info->rows, info->samples_per_pixel);
        err = CHEX_PRE_ERR_MALFORMED;
    }
    /* JPEG 2000's precision wins over Bits Stored (see dicom.c); the others'
     * samples are read through Bits Stored / High Bit, so wider ones than
     * Bits Allocated would lose their high bits */
    if (err == CHEX_PRE_OK && codec != CHEX_DICOM_CODEC_J2K &&
        f->precision > info->bits_allocated) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: %s frame has %d-bit samples, Bits Allocated is %d",
                     info->ids.transfer_syntax, f->precision, info->bits_allocated);
        err = CHEX_PRE_ERR_MALFORMED;
    }
    if (err == CHEX_PRE_OK)
        err = chex_pre_check_dims((uint64_t)f->width, (uint64_t)f->height, opts, "DICOM frame",
                                  msg, msglen);
    size_t cap = (size_t)f->width * (size_t)f->height * (size_t)f->spp;
    uint16_t *px = err == CHEX_PRE_OK ? malloc(cap * sizeof *px) : NULL;
    if (err == CHEX_PRE_OK && !px) {
        chex_pre_msg(msg, msglen, "out of memory");
        err = CHEX_PRE_ERR_NOMEM;
    }
    if (err == CHEX_PRE_OK) {
        switch (codec) {
        case CHEX_DICOM_CODEC_JPEG_LOSSLESS:
            err = chex_jpegll_decode(px, cap, frame, n, f, msg, msglen);
            break;
        case CHEX_DICOM_CODEC_JPEG_LS:
            err = chex_jpegls_decode(px, cap, frame, n, f, msg, msglen);
            break;
        case CHEX_DICOM_CODEC_J2K:
            err = chex_j2k_decode(px, cap, frame, n, f, msg, msglen);
            break;
        default:
            err = chex_rle_decode(px, cap, frame, n, info->columns, info->rows,
                                  info->samples_per_pixel, bytes, f, msg, msglen);
            break;
        }
    }
    free(frame);
    if (err != CHEX_PRE_OK) {
        free(px);
        return err;
    }
    *out = px;
    return CHEX_PRE_OK;
}

void chex_pre_get_decoder_versions(chex_pre_decoder_versions *out)
{
    out->openjpeg = chex_j2k_library_version();
    out->charls = chex_jpegls_library_version();
}
