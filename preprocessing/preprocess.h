/* preprocessing/preprocess.h - encoded bytes -> decoded image -> model input tensor.
 *
 * Decoding reads only from the caller's memory (never past len, never a temp
 * file). All functions are reentrant: no global state, safe from any thread.
 * This module knows nothing of the network beyond chex_pre_spec.
 */
#ifndef CHEX_PREPROCESS_H
#define CHEX_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHEX_PRE_OK = 0,
    CHEX_PRE_ERR_EMPTY,         /* no bytes                                   -> 400 */
    CHEX_PRE_ERR_MALFORMED,     /* truncated, bad CRC, corrupt stream/header  -> 400 */
    CHEX_PRE_ERR_FORMAT,        /* not a PNG, JPEG or DICOM signature         -> 415 */
    CHEX_PRE_ERR_UNSUPPORTED,   /* known format, variant we do not read
                                   (e.g. a compressed DICOM transfer syntax)  -> 415 */
    CHEX_PRE_ERR_TOO_LARGE,     /* width*height over max_pixels (from header) -> 413 */
    CHEX_PRE_ERR_UNUSABLE,      /* read fine but cannot be used: zero size,
                                   smaller than min_side, no pixel data, ...  -> 422 */
    CHEX_PRE_ERR_NOMEM,         /*                                            -> 500 */
    CHEX_PRE_ERR_ARG,           /* programmer error / bad option              -> 500 */
    CHEX_PRE_ERR_COUNT
} chex_pre_err;

/* Static message for an error code (never NULL). */
const char *chex_pre_strerror(chex_pre_err e);

/* How 16-bit grayscale PNG samples are mapped to [0,1]. */
typedef enum {
    CHEX_PNG16_MINMAX = 0, /* the image's own min..max (default) */
    CHEX_PNG16_SBIT,       /* divide by 2^sBIT - 1, minmax without sBIT */
    CHEX_PNG16_FULL        /* divide by 65535 */
} chex_png16_scaling;

/* Limits are checked from the header (PNG IHDR, JPEG SOF), before any pixel
 * buffer exists: zero width or height -> CHEX_PRE_ERR_UNUSABLE (a PNG whose
 * IHDR says 0 is reported as unusable, not malformed); width*height over
 * max_pixels -> CHEX_PRE_ERR_TOO_LARGE; shorter side < min_side -> UNUSABLE.
 * max_pixels 0 means no configured limit, but a hard ceiling of 2^30 pixels
 * always applies; min_side <= 0 disables that check. */
typedef struct {
    uint64_t max_pixels;   /* reject width*height above this before allocating */
    int min_side;          /* reject images whose shorter side is below this */
    chex_png16_scaling png16_scaling;
    int max_overlay_side;  /* display copy's longer side (config max_overlay_side);
                              <= 0 means the image's own size */
    int threads;           /* chex_pre_prepare: most OpenMP threads one large
                              DICOM frame (>= 1 megapixel, any transfer syntax
                              once decoded) is resampled on, in bands of rows,
                              bit-identical to one thread; <= 1 (default 0):
                              the calling thread only. Called from inside an
                              active parallel region, one thread is used. PNG
                              and JPEG always decode on the calling thread. */
} chex_pre_opts;

/* Identifiers of a DICOM source, copied out of the file (never patient data). */
typedef struct {
    char study_instance_uid[65];
    char series_instance_uid[65];
    char sop_instance_uid[65];
    char modality[17];
    char view_position[17];
    char transfer_syntax[65];
    char photometric[17];
    long frames; /* Number of Frames (1 when absent); the first is the one read */
} chex_dicom_ids;

/* A decoded image: planar float samples in [0,1], channels 1 (gray) or 3 (RGB).
 * Alpha is dropped (PNG alpha channels and tRNS are ignored, colours are kept
 * as stored, no compositing: what PIL's convert('RGB'/'L') does). Palette PNGs
 * become RGB. Samples are never rounded through 8 bits. Owned by the caller;
 * free pix with chex_pre_image_free. scaling for PNG/JPEG: "<depth>bit" for
 * depth <= 8 (s / (2^depth - 1); palette and JPEG: "8bit"), "full" for 16-bit
 * colour (s / 65535), and for 16-bit gray the png16_scaling actually used:
 * "minmax" (constant image -> all 0), "sbit" (s / (2^sBIT - 1), clamped to 1)
 * or "full". */
typedef struct {
    int width, height, channels;
    float *pix;               /* (channels, height, width) */
    char format[8];           /* "png", "jpeg", "dicom" */
    int bit_depth;            /* of the source samples */
    char scaling[16];         /* how samples became [0,1]: "8bit", "minmax", "sbit",
                                 "full", "window", ... (reported in answers) */
    int is_dicom;
    chex_dicom_ids dicom;     /* filled when is_dicom */
} chex_pre_image;

void chex_pre_image_free(chex_pre_image *img);

/* The reference path: the whole image as floats (tests, tools; the server
 * uses chex_pre_prepare). Detects the format from its signature and decodes. On error writes a one-line
 * message into msg and leaves img->pix NULL. Resets *img first. Errors: no
 * bytes -> EMPTY; no PNG/JPEG/DICOM signature -> FORMAT; truncated, bad CRC
 * (critical or ancillary chunk), corrupt zlib/JPEG data, JPEG decoder warnings
 * -> MALFORMED; CMYK/YCCK JPEG -> UNSUPPORTED; limits as for chex_pre_opts. */
chex_pre_err chex_pre_decode(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                             chex_pre_image *img, char *msg, size_t msglen);

/* What the model wants, filled by the caller from the model's metadata. */
typedef struct {
    int channels;             /* 1 or 3 */
    int size;                 /* output S (224) */
    char preset[32];          /* resize256-crop224 | tencrop | resize224 | xrv */
    float mean[3], std[3];    /* (x - mean) / std, x in [0,1] */
} chex_pre_spec;

/* Where a crop came from in the original image, for mapping results back. */
typedef struct {
    float x0, y0, x1, y1;     /* crop box in original-image pixel coordinates */
    int flipped;              /* horizontally mirrored */
} chex_pre_crop;

/* Number of (C,S,S) tensors the preset produces (10 for tencrop, else 1),
 * 0 for an unknown preset. */
int chex_pre_ncrops(const chex_pre_spec *spec);

/* Writes ncrops tensors of (C, S, S) into out (caller-sized:
 * ncrops*C*S*S floats) and, if crops is not NULL, ncrops crop boxes.
 * Presets and their exact arithmetic (torchvision on float32; xrv:
 * torchxrayvision's normalise / channel mean / centre crop / skimage resize)
 * are described in preprocessing/tensor.c and resize_xrv.h. Errors: bad spec/image -> ARG; an aspect ratio so
 * extreme the resize would need more than 4 M pixels -> UNUSABLE. */
chex_pre_err chex_pre_tensor(const chex_pre_image *img, const chex_pre_spec *spec, float *out,
                             chex_pre_crop *crops, char *msg, size_t msglen);

/* Gray copy of the image for drawing heat-map overlays: (height, width)
 * floats in [0,1] (colour images as luminance 0.299/0.587/0.114), the image
 * itself when its longer side is <= opts->max_overlay_side, else resampled
 * (torch's antialiased bilinear) to that longer side. Free pix with free(). */
typedef struct {
    int width, height;
    float *pix;
} chex_pre_display;

/* Display size for a width x height image with opts->max_overlay_side. */
void chex_pre_display_dims(const chex_pre_opts *opts, int width, int height, int *dw, int *dh);

/* Decode and preprocess in one streaming pass: rows go from the decoder to
 * the preset's separable resampler as they are decoded; no full-resolution
 * float image exists (see preprocessing/stream.h). Writes ncrops tensors of
 * (C, S, S) into out (caller-sized, ncrops*C*S*S floats), crop boxes into
 * crops (may be NULL), the image's metadata into *meta (meta->pix stays NULL)
 * and, when display is not NULL, the display copy (display->pix owned by the
 * caller, NULL on error). Same result as chex_pre_decode + chex_pre_tensor to
 * float rounding (bit-identical except 16-bit gray PNGs under minmax, within
 * 1e-6). Errors as chex_pre_decode and chex_pre_tensor. Peak heap use is at
 * most chex_pre_probe's decode_bytes (+ display_bytes with a display). */
chex_pre_err chex_pre_prepare(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                              const chex_pre_spec *spec, float *out, chex_pre_crop *crops,
                              chex_pre_image *meta, chex_pre_display *display, char *msg,
                              size_t msglen);

/* What an image's header says, read without decoding pixels (never past len). */
typedef struct {
    char format[8];        /* "png", "jpeg", "dicom" */
    int width, height, channels, bit_depth;
    int interlaced;        /* PNG Adam7 */
    int frames;            /* DICOM NumberOfFrames (1 when absent), else 1 */
    uint64_t decode_bytes; /* worst case of the heap bytes chex_pre_prepare (decoder
                              scratch, libpng/libjpeg state, row buffers, resampler
                              rings, resized planes) plus the output tensor(s) for
                              spec can allocate, NOT counting buf itself nor the
                              display copy */
    uint64_t display_bytes;/* bytes of the gray display copy kept for heat-map overlays
                              (longer side <= opts->max_overlay_side), allocated on
                              top of decode_bytes when asked for */
} chex_pre_probe_info;

/* Reads the header only (PNG IHDR, JPEG SOF and first SOS, DICOM data set up
 * to Pixel Data) and fills *info. Errors as chex_pre_decode's header-time
 * ones: EMPTY, FORMAT, MALFORMED (header), TOO_LARGE (message names width x
 * height), UNUSABLE (also an aspect ratio the preset refuses), UNSUPPORTED
 * (e.g. a DICOM transfer syntax, CMYK or 12-bit JPEG); ARG for a bad spec.
 * A file that passes may still fail to decode later (corrupt data). */
chex_pre_err chex_pre_probe(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                            const chex_pre_spec *spec, chex_pre_probe_info *info,
                            char *msg, size_t msglen);

/* Versions of the decoder libraries chexd links for compressed DICOM (static
 * strings, e.g. "2.5.0"): OpenJPEG (JPEG 2000) and CharLS (JPEG-LS). JPEG
 * Lossless, RLE and deflate framing are chexd's own (zlib inflates). */
typedef struct {
    const char *openjpeg, *charls;
} chex_pre_decoder_versions;
void chex_pre_get_decoder_versions(chex_pre_decoder_versions *out);

#endif
