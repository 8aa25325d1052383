/* preprocessing/dicom.h - DICOM Part 10 parser (no DICOM library).
 *
 * chex_dicom_parse reads the file meta group and the data set of a Part 10 file
 * held in memory, and fills a caller-given struct with the pixel-module attributes,
 * a few identifiers and a pointer into the caller's buffer for the pixel data.
 * It reads only buf[0..len), allocates nothing and keeps no state (reentrant).
 * The Patient and General Study attributes go into chex_dicom_info.study only
 * (for report/, which copies them into the SR/SC it writes); chex_pre_decode
 * never hands them out, and they are patient data: never log them.
 * chex_pre_decode_dicom (decoders.h) turns the result into a [0,1] image.
 */
#ifndef CHEX_DICOM_H
#define CHEX_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "preprocessing/codecs.h"
#include "preprocessing/preprocess.h"

/* Sequences/items with undefined length may nest this deep, then MALFORMED. */
#define CHEX_DICOM_MAX_DEPTH 32

typedef enum {
    CHEX_DICOM_VOI_LINEAR = 0, /* default, PS3.3 C.11.2.1.2.1 */
    CHEX_DICOM_VOI_LINEAR_EXACT,
    CHEX_DICOM_VOI_SIGMOID
} chex_dicom_voi;

/* Top-level attributes a result object (report/) copies from its source.
 * Raw bytes of the value without trailing padding (non-ASCII kept, it is in
 * specific_charset; control characters other than ESC become '?'); "" when
 * absent or empty. Each buffer holds one character more than the VR allows,
 * so an over-long value in the source stays over-long (the writer refuses it)
 * rather than being cut silently. PATIENT DATA: never log these. */
typedef struct {
    char specific_charset[66];      /* (0008,0005) CS, all values */
    char sop_class_uid[66];         /* (0008,0016) UI */
    char study_date[18];            /* (0008,0020) DA */
    char study_time[18];            /* (0008,0030) TM */
    char accession_number[18];      /* (0008,0050) SH */
    char referring_physician[196];  /* (0008,0090) PN */
    char patient_name[196];         /* (0010,0010) PN */
    char patient_id[66];            /* (0010,0020) LO */
    char patient_birth_date[18];    /* (0010,0030) DA */
    char patient_sex[18];           /* (0010,0040) CS */
    char study_id[18];              /* (0020,0010) SH */
} chex_dicom_study;

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
    int encapsulated; /* pixel data in items (a compressed transfer syntax) */
    /* Deflated Explicit VR LE: only the file meta group was parsed; the data
     * set (raw deflate) starts at dataset_offset. See chex_dicom_parse_inflated. */
    int deflated;
    size_t dataset_offset;
    /* Points into the caller's buffer. Native: the Pixel Data value.
     * Encapsulated: from the first item tag (basic offset table) up to, not
     * including, the sequence delimiter. NULL when there is no Pixel Data. */
    const uint8_t *pixel_data;
    size_t pixel_len;
    chex_dicom_ids ids; /* UIDs, modality, view, transfer syntax, photometric;
                           trailing padding stripped, non-ASCII replaced by '?' */
    chex_dicom_study study; /* patient/study attributes for report/ (see above) */
} chex_dicom_info;

/* Parses a Part 10 file: "DICM" at offset 128, file meta group (Explicit VR LE),
 * data set in Explicit VR LE, Implicit VR LE or encapsulated in one of the
 * compressed syntaxes of chex_dicom_codec_for; for Deflated Explicit VR LE only
 * the meta group (deflated = 1, pixel_data NULL). ids.frames = Number of Frames.
 * Returns CHEX_PRE_OK (pixel_data may still be NULL), FORMAT (no Part 10 header),
 * MALFORMED (truncated, length past the end, bad nesting) or UNSUPPORTED (any other
 * transfer syntax; msg names its UID). msg gets one line on error. */
chex_pre_err chex_dicom_parse(const uint8_t *buf, size_t len, chex_dicom_info *out, char *msg,
                              size_t msglen);

/* The data set of a deflated file, inflated by the caller into ds[0..len)
 * (chex_deflate_inflate of buf + meta->dataset_offset): parsed as Explicit VR
 * LE into *out, which keeps meta's identifiers (transfer syntax included).
 * out->pixel_data points into ds. Same errors as chex_dicom_parse. */
chex_pre_err chex_dicom_parse_inflated(const chex_dicom_info *meta, const uint8_t *ds, size_t len,
                                       chex_dicom_info *out, char *msg, size_t msglen);
/* The same on the head of that data set: ds[0..len) are its first len of
 * total bytes (chex_deflate_head). Parsing stops at Pixel Data as always, so
 * the head must reach past its element header; its value must fit in total.
 * out->pixel_len is then the value's size, but out->pixel_data may point at
 * bytes not in ds (do not read them). */
chex_pre_err chex_dicom_parse_inflated_head(const chex_dicom_info *meta, const uint8_t *ds,
                                            size_t len, size_t total, chex_dicom_info *out,
                                            char *msg, size_t msglen);

/* Compressed pixel data: which decoder a transfer syntax needs. */
typedef enum {
    CHEX_DICOM_CODEC_NONE = 0, /* native (or not a syntax we read) */
    CHEX_DICOM_CODEC_JPEG,     /* .4.50, .4.51 (8-bit only): chex_pre_decode_jpeg */
    CHEX_DICOM_CODEC_JPEG_LOSSLESS, /* .4.57, .4.70 */
    CHEX_DICOM_CODEC_JPEG_LS,       /* .4.80, .4.81 */
    CHEX_DICOM_CODEC_J2K,           /* .4.90, .4.91 */
    CHEX_DICOM_CODEC_RLE            /* .5 */
} chex_dicom_codec;
chex_dicom_codec chex_dicom_codec_for(const char *transfer_syntax);

/* The first frame of info's encapsulated pixel data decoded by the codecs.h
 * decoder its transfer syntax names (not CHEX_DICOM_CODEC_JPEG) into a
 * malloc'd buffer *out (caller frees) of f->width*f->height*f->spp samples;
 * the stream's size must equal Columns x Rows x Samples per Pixel and pass
 * opts' limits (checked from the stream header, before the buffer exists).
 * preprocessing/dicom_codec.c */
chex_pre_err chex_dicom_decode_frame(const chex_dicom_info *info, const chex_pre_opts *opts,
                                     uint16_t **out, chex_codec_frame *f, char *msg,
                                     size_t msglen);

/* The first frame of encapsulated pixel data: the fragments after the basic
 * offset table up to where the second frame starts (from the offset table, or,
 * without one, the next fragment that begins a JPEG stream FF D8 or a JPEG 2000
 * one FF 4F / JP2 signature; in RLE every fragment is a frame), all of them
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
 * In stream mode, a frame of chex_pre_band_count(rows->threads, w, h) > 1
 * bands (>= 1 megapixel), outside an active OpenMP parallel region, is done
 * on up to rows->threads threads: the min..max pass in parts, the table,
 * and the rows through chex_pre_rows_banded; bit-identical to one thread.
 * MALFORMED when the frame does not match Rows/Columns or its sample layout is
 * impossible; errors of chex_pre_rows_begin and chex_pre_rows_banded. */
chex_pre_err chex_dicom_frame_rows(const chex_dicom_info *info, const chex_dicom_frame *frame,
                                   struct chex_pre_rows_s *rows, chex_pre_image *meta, char *msg,
                                   size_t msglen);

#endif
