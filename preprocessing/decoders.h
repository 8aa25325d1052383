/* preprocessing/decoders.h - per-format decoders behind chex_pre_decode and
 * chex_pre_prepare (internal).
 *
 * Each decoder reads only buf[0..len), checks the header (limits as for
 * chex_pre_opts), fills meta's width, height, channels, format, bit_depth,
 * scaling (and for DICOM is_dicom/dicom; never meta->pix), calls
 * chex_pre_rows_begin on rows, hands it every row and calls
 * chex_pre_rows_finish (preprocessing/stream.h). On error it returns the code
 * with one line in msg; the caller frees rows either way.
 *
 * The probes read the same header and fill info's geometry and the bytes the
 * decoder itself allocates (library state, row buffers, frame buffers) in
 * info->decode_bytes; probe.c adds the resampler's share.
 */
#ifndef CHEX_DECODERS_H
#define CHEX_DECODERS_H

#include "preprocessing/preprocess.h"
#include "preprocessing/stream.h"

chex_pre_err chex_pre_decode_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                 size_t msglen);
chex_pre_err chex_pre_decode_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                  size_t msglen);
chex_pre_err chex_pre_decode_dicom(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                   chex_pre_rows *rows, chex_pre_image *meta, char *msg,
                                   size_t msglen);

chex_pre_err chex_pre_probe_png(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                chex_pre_probe_info *info, char *msg, size_t msglen);
chex_pre_err chex_pre_probe_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                 chex_pre_probe_info *info, char *msg, size_t msglen);
chex_pre_err chex_pre_probe_dicom(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_probe_info *info, char *msg, size_t msglen);

/* ---- JPEG, shared with dicom.c (JPEG Baseline pixel data) ---- */

/* What the markers before the first scan say. */
typedef struct {
    int sof;                 /* SOFn marker (0xC0..0xCF), 0 when none */
    int precision, width, height, ncomp;
    int h[4], v[4], hmax, vmax; /* sampling factors */
    int progressive;
    int scan_comps;          /* components of the first scan, 0 when not reached */
} chex_pre_jpeg_hdr;

/* Header-time checks: EMPTY, FORMAT (no SOI), UNSUPPORTED (lossless, not
 * 8-bit, CMYK/YCCK, not 1 or 3 components), MALFORMED (no SOF), limits. */
chex_pre_err chex_pre_jpeg_header(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_jpeg_hdr *h, char *msg, size_t msglen);
/* Upper bound of what chex_pre_jpeg_scan allocates (libjpeg and its scanline). */
uint64_t chex_pre_jpeg_bytes(const chex_pre_jpeg_hdr *h);

/* Called once the output size is known (oc 1: gray, 3: RGB), then once per
 * scanline of width * oc interleaved 8-bit samples. */
typedef chex_pre_err (*chex_pre_jpeg_begin_fn)(void *ctx, int w, int h, int oc, char *msg,
                                               size_t msglen);
typedef void (*chex_pre_jpeg_row_fn)(void *ctx, const uint8_t *line);
chex_pre_err chex_pre_jpeg_scan(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                chex_pre_jpeg_begin_fn begin, chex_pre_jpeg_row_fn row,
                                void *ctx, char *msg, size_t msglen);

/* Signatures: PNG 89 50 4E 47 0D 0A 1A 0A; JPEG FF D8 FF; DICOM Part 10 "DICM"
 * at offset 128. */
int chex_pre_is_png(const uint8_t *buf, size_t len);
int chex_pre_is_jpeg(const uint8_t *buf, size_t len);
int chex_pre_is_dicom(const uint8_t *buf, size_t len);

#endif
