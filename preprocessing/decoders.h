/* preprocessing/decoders.h - per-format decoders behind chex_pre_decode (internal).
 * Same contract as chex_pre_decode: read only buf[0..len), fill img (pix owned by
 * img), one-line msg on error. chex_pre_decode (decode.c) picks one by signature.
 * Unlike chex_pre_decode, the PNG and JPEG decoders do not reset *img: they set
 * width, height, channels, pix, format, bit_depth and scaling and leave
 * is_dicom/dicom alone (dicom.c calls chex_pre_decode_jpeg for JPEG Baseline
 * pixel data). */
#ifndef CHEX_DECODERS_H
#define CHEX_DECODERS_H

#include "preprocessing/preprocess.h"

chex_pre_err chex_pre_decode_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_image *img, char *msg, size_t msglen);
chex_pre_err chex_pre_decode_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_image *img, char *msg, size_t msglen);
chex_pre_err chex_pre_decode_dicom(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                   chex_pre_image *img, char *msg, size_t msglen);

/* Signatures: PNG 89 50 4E 47 0D 0A 1A 0A; JPEG FF D8 FF; DICOM Part 10 "DICM"
 * at offset 128. */
int chex_pre_is_png(const uint8_t *buf, size_t len);
int chex_pre_is_jpeg(const uint8_t *buf, size_t len);
int chex_pre_is_dicom(const uint8_t *buf, size_t len);

#endif
