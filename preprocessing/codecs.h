/* preprocessing/codecs.h - decoders for the compressed pixel data of DICOM
 * transfer syntaxes (internal to preprocessing/).
 *
 * Each decoder turns ONE frame's bytes (the concatenated fragments of that
 * frame, chex_dicom_first_frame) into integer samples in a buffer the caller
 * gives, and knows nothing of DICOM attributes. Contract shared by all of them:
 *  - they read only frame[0..len) and write only out[0..out_cap) (out_cap is a
 *    count of uint16_t samples);
 *  - samples are pixel-interleaved, row by row: out[(y*w + x)*spp + c], each the
 *    value in its low `precision` bits (signed codestreams in two's complement
 *    within those bits, see chex_codec_frame.is_signed);
 *  - the *_probe functions read only the stream header and fill *f, so the
 *    caller can check w*h against its limits and size out before decoding;
 *    the *_decode functions fill *f the same way and fail with ARG when out_cap
 *    is smaller than w*h*spp (nothing written);
 *  - errors: MALFORMED for a corrupt or truncated stream, UNSUPPORTED for a
 *    valid stream using what we do not read (e.g. > 16 bits, subsampled
 *    components), NOMEM, ARG; msg gets one line naming the syntax;
 *  - reentrant, no global state; a failure frees everything it allocated (out
 *    may then hold some samples: treat it as garbage).
 */
#ifndef CHEX_CODECS_H
#define CHEX_CODECS_H

#include <stddef.h>
#include <stdint.h>

#include "preprocessing/preprocess.h"

typedef struct {
    int width, height;
    int spp;       /* components (samples per pixel) */
    int precision; /* bits per sample, 1..16 */
    int is_signed; /* codestream says signed (JPEG 2000 only; else 0) */
} chex_codec_frame;

/* JPEG Lossless, process 14 (ITU T.81 Annex H: SOF3, Huffman, predictors 1-7,
 * point transform, restart intervals), 2..16 bits, any number of components
 * with sampling factors 1x1, one or several scans. preprocessing/jpeg_lossless.c */
chex_pre_err chex_jpegll_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                               size_t msglen);
chex_pre_err chex_jpegll_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                                chex_codec_frame *f, char *msg, size_t msglen);

/* JPEG-LS lossless and near-lossless (ITU T.87) through CharLS's C API.
 * preprocessing/jpegls.c */
chex_pre_err chex_jpegls_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                               size_t msglen);
chex_pre_err chex_jpegls_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                                chex_codec_frame *f, char *msg, size_t msglen);
const char *chex_jpegls_library_version(void); /* "CharLS 2.4.1" */

/* JPEG 2000 through OpenJPEG, from
 * memory: a raw codestream (FF 4F FF 51) or a JP2 file (the 12-byte signature
 * box), chosen by the first bytes. Components must all have the first one's
 * size (no subsampling) and precision <= 16; a signed component's values are
 * written in two's complement within `precision` bits. preprocessing/j2k.c */
chex_pre_err chex_j2k_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                            size_t msglen);
chex_pre_err chex_j2k_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                             chex_codec_frame *f, char *msg, size_t msglen);
const char *chex_j2k_library_version(void); /* "OpenJPEG 2.5.0" */
/* Tiles the SIZ marker segment declares (ceil((Xsiz - XTOsiz) / XTsiz) x the
 * same for Y), read from the raw codestream or JP2's jp2c box without
 * OpenJPEG; 0 when no SIZ is found. Streams with more than CHEX_J2K_MAX_TILES
 * are UNSUPPORTED (OpenJPEG's header reader takes about 10 KB per tile;
 * DICOM encoders write one tile). */
#define CHEX_J2K_MAX_TILES 1024u
#define CHEX_J2K_TILE_BYTES 16384u /* heap per tile, with margin */
uint64_t chex_j2k_tiles(const uint8_t *frame, size_t len);

/* DICOM RLE Lossless (PS3.5 Annex G): a 64-byte header (segment count and 15
 * little-endian offsets), one PackBits segment per byte plane, most significant
 * byte first, sample planes in order. The stream has no dimensions: the caller
 * gives width, height, spp (1 or 3) and bytes per sample (1 or 2), and f gets
 * them back (precision 8 * bytes). A segment that ends before w*h bytes is
 * MALFORMED; bytes a segment decodes past w*h are ignored (even padding).
 * chex_rle_probe only checks the header against those dimensions.
 * preprocessing/rle.c */
chex_pre_err chex_rle_probe(const uint8_t *frame, size_t len, int width, int height, int spp,
                            int bytes, chex_codec_frame *f, char *msg, size_t msglen);
chex_pre_err chex_rle_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                             int width, int height, int spp, int bytes, chex_codec_frame *f,
                             char *msg, size_t msglen);

/* Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99): raw deflate
 * (RFC 1951, no zlib header) of the data set. preprocessing/deflate.c
 * Errors of all three: more than max_out bytes -> TOO_LARGE, corrupt or
 * truncated stream -> MALFORMED, NOMEM, ARG; msg gets one line. */

/* The inflated size of src[0..len) into *out_len, counted through a 16 KiB
 * scratch on the stack: no heap beyond zlib's state (about 45 KiB), and a
 * stream inflating past max_out (a deflate bomb) stops there. */
chex_pre_err chex_deflate_size(const uint8_t *src, size_t len, size_t max_out, size_t *out_len,
                               char *msg, size_t msglen);
/* The first min(cap, inflated size) bytes into dst[0..cap), *got their count;
 * the rest of the stream is not read (nor checked). */
chex_pre_err chex_deflate_head(const uint8_t *src, size_t len, uint8_t *dst, size_t cap,
                               size_t *got, char *msg, size_t msglen);
/* The whole inflated data set in a malloc'd buffer (*out, *out_len; caller
 * frees) of exactly its size (chex_deflate_size first: peak heap *out_len plus
 * zlib's state); nothing returned on error. */
chex_pre_err chex_deflate_inflate(const uint8_t *src, size_t len, size_t max_out, uint8_t **out,
                                  size_t *out_len, char *msg, size_t msglen);

#endif
