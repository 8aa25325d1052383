/* preprocessing/dicom.h - DICOM Part 10 parser (no DICOM library).
 *
 * chex_dicom_parse reads the file meta group and the data set of a Part 10 file
 * held in memory, and fills a caller-given struct with the pixel-module attributes,
 * a few identifiers and a pointer into the caller's buffer for the pixel data.
 * It reads only buf[0..len), allocates nothing, keeps no state (reentrant), and
 * never copies patient attributes (group 0010) anywhere.
 * chex_pre_decode_dicom (decoders.h) turns the result into a [0,1] image.
 */
#ifndef CHEX_DICOM_H
#define CHEX_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "preprocessing/preprocess.h"

/* Sequences/items with undefined length may nest this deep, then MALFORMED. */
#define CHEX_DICOM_MAX_DEPTH 32

typedef enum {
    CHEX_DICOM_VOI_LINEAR = 0, /* default, PS3.3 C.11.2.1.2.1 */
    CHEX_DICOM_VOI_LINEAR_EXACT,
    CHEX_DICOM_VOI_SIGMOID
} chex_dicom_voi;

typedef struct {
    /* Pixel module, top-level data set only (an icon's nested attributes are
     * skipped). -1 when absent, except where a default is named. */
    int rows, columns;
    int samples_per_pixel; /* absent: 1 */
    int bits_allocated, bits_stored, high_bit;
    int pixel_representation; /* absent: 0 */
    long number_of_frames;    /* absent: 1 */
    int has_rescale;          /* slope or intercept present */
    double rescale_slope;     /* absent: 1 */
    double rescale_intercept; /* absent: 0 */
    int has_window;           /* first Window Center and Width both present */
    double window_center, window_width;
    chex_dicom_voi voi_function;
    int implicit_vr;  /* data set in Implicit VR Little Endian */
    int encapsulated; /* pixel data in items (JPEG Baseline) */
    /* Points into the caller's buffer. Native: the Pixel Data value.
     * Encapsulated: from the first item tag (basic offset table) up to, not
     * including, the sequence delimiter. NULL when there is no Pixel Data. */
    const uint8_t *pixel_data;
    size_t pixel_len;
    chex_dicom_ids ids; /* UIDs, modality, view, transfer syntax, photometric;
                           trailing padding stripped, non-ASCII replaced by '?' */
} chex_dicom_info;

/* Parses a Part 10 file: "DICM" at offset 128, file meta group (Explicit VR LE),
 * data set in Explicit VR LE, Implicit VR LE or JPEG Baseline (encapsulated).
 * Returns CHEX_PRE_OK (pixel_data may still be NULL), FORMAT (no Part 10 header),
 * MALFORMED (truncated, length past the end, bad nesting) or UNSUPPORTED (any other
 * transfer syntax; msg names its UID). msg gets one line on error. */
chex_pre_err chex_dicom_parse(const uint8_t *buf, size_t len, chex_dicom_info *out, char *msg,
                              size_t msglen);

/* The first frame of encapsulated pixel data: the fragments after the basic
 * offset table up to where the second frame starts (from the offset table, or,
 * without one, the next fragment that begins a JPEG stream, FF D8), all of them
 * for a single frame. Sets *nbytes to their total size; when dst is not NULL
 * also copies them there, one after another (dstcap must be >= that size).
 * Returns OK or MALFORMED (no fragment, bad item). */
chex_pre_err chex_dicom_first_frame(const chex_dicom_info *info, uint8_t *dst, size_t dstcap,
                                    size_t *nbytes, char *msg, size_t msglen);

/* A frame of integer samples, from native Pixel Data or from a decoder of a
 * compressed transfer syntax. */
typedef struct {
    const uint8_t *data;   /* height rows of width pixels, row-major, no padding;
                              samples interleaved when samples_per_pixel is 3 */
    int width, height;     /* must equal Columns and Rows */
    int samples_per_pixel; /* 1, or 3 (reduced to round(0.299 R + 0.587 G +
                              0.114 B) of the stored values) */
    int bytes;             /* bytes per sample: 1, 2 or 4, little-endian */
    int bits_stored, high_bit; /* stored value: bits_stored bits ending at high_bit */
    int is_signed;         /* two's complement stored values (Pixel Representation 1) */
} chex_dicom_frame;

struct chex_pre_rows_s;
/* The end of every DICOM pixel path: a decoded integer frame -> rows into
 * the resampler (stream.h's chex_pre_rows). Applies the pixel pipeline of
 * info (Rescale Slope/Intercept, then the first window with its VOI LUT
 * Function, or the frame's own min..max found in a first pass over the
 * samples; MONOCHROME1 inverted) per row, fills meta (size, "dicom",
 * bit_depth = bits_stored, scaling, ids) and finishes rows. frame->data is
 * only read (native Pixel Data is passed straight from the request body).
 * MALFORMED when the frame does not match Rows/Columns or its sample layout is
 * impossible; errors of chex_pre_rows_begin. */
chex_pre_err chex_dicom_frame_rows(const chex_dicom_info *info, const chex_dicom_frame *frame,
                                   struct chex_pre_rows_s *rows, chex_pre_image *meta, char *msg,
                                   size_t msglen);

#endif
