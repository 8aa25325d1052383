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

#endif
