/* tests/unit/helpers/testimg.h - test images made in memory. */
#ifndef CHEX_TEST_TESTIMG_H
#define CHEX_TEST_TESTIMG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *buf; /* malloc'd */
    size_t len, cap;
} chex_test_membuf;

/* PNG of gray g (w x h floats in [0,1]) as libpng colour type ctype and
 * depth 8 or 16, Adam7 when interlace: colour channels g, 0.8 g, 0.6 g, alpha
 * 0.5; 8-bit samples round(255 v), 16-bit ones 1000 + round(3000 v) (12-bit
 * detector values). Aborts on failure (tests only). */
chex_test_membuf chex_test_make_png(const float *g, int w, int h, int ctype, int depth,
                                    int interlace);

/* The image file at path (relative to the repo root) decoded by chex_pre_decode
 * as gray and nearest-resampled to w x h floats (malloc'd, caller frees): real
 * radiograph content at any size. Aborts on failure (tests only). */
float *chex_test_gray_of(const char *path, int w, int h);

/* A deflate bomb: the Deflated Explicit VR LE file at path with `extra` zero
 * bytes appended to its data set (after Pixel Data), re-deflated; the zeros
 * cost about 1 KiB per MiB, made by repeating one full-flushed block, so a
 * GiB-sized bomb is built in milliseconds. Aborts on failure (tests only). */
chex_test_membuf chex_test_deflate_bomb(const char *path, size_t extra);

/* A native single-frame DICOM (Explicit VR Little Endian, part 10) of w x h
 * stored values: samples are bits_allocated 8, 16 or 32 wide, little-endian,
 * stored value v placed at high_bit (v << (high_bit + 1 - bits_stored),
 * masked to bits_stored; signed values in two's complement). photometric
 * "MONOCHROME1"/"MONOCHROME2"; slope 0: no Rescale elements; window_width 0:
 * no window; voi_function NULL: none. Aborts on failure (tests only). */
typedef struct {
    int w, h, bits_allocated, bits_stored, high_bit, is_signed;
    const char *photometric;
    double slope, intercept, window_center, window_width;
    const char *voi_function;
} chex_test_dicom;
chex_test_membuf chex_test_make_dicom(const chex_test_dicom *d, const int32_t *values);

#endif
