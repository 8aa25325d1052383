/* tests/unit/helpers/testimg.c - test images made in memory (see testimg.h). */
#include "tests/unit/helpers/testimg.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "preprocessing/codecs.h"
#include "preprocessing/dicom.h"
#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"


static void mem_write(png_structp png, png_bytep data, size_t n)
{
    chex_test_membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        if (!m->buf)
            png_error(png, "out of memory");
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}
static void mem_flush(png_structp png)
{
    (void)png;
}


chex_test_membuf chex_test_make_png(const float *g, int w, int h, int ctype, int depth, int interlace)
{
    chex_test_membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png)))
        abort();
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 1);
    png_write_info(png, info);
    int ch = ctype == PNG_COLOR_TYPE_GRAY ? 1 : ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
    int bps = depth / 8;
    size_t rowbytes = (size_t)w * (size_t)ch * (size_t)bps;
    uint8_t *img = malloc(rowbytes * (size_t)h);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    if (!img || !rows)
        abort();
    const float f[4] = {1.0f, 0.8f, 0.6f, 0.0f};
    double maxv = depth == 16 ? 3000.0 : 255.0; /* 16-bit: 12-bit-ish detector values */
    for (int y = 0; y < h; y++) {
        rows[y] = img + (size_t)y * rowbytes;
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                double v = c == 3 ? 0.5 : g[(size_t)y * w + x] * f[c];
                unsigned s = (unsigned)(v * maxv + 0.5) + (depth == 16 ? 1000u : 0u);
                uint8_t *p = rows[y] + ((size_t)x * ch + c) * bps;
                if (bps == 2) {
                    p[0] = (uint8_t)(s >> 8);
                    p[1] = (uint8_t)s;
                } else {
                    p[0] = (uint8_t)(s > 255 ? 255 : s);
                }
            }
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(img);
    free(rows);
    return m;
}


float *chex_test_gray_of(const char *path, int w, int h)
{
    size_t len;
    uint8_t *b = chex_test_read_file(path, &len);
    if (!b)
        abort();
    chex_pre_opts o = {.max_pixels = 1u << 26, .min_side = 1};
    chex_pre_image img;
    char msg[128];
    if (chex_pre_decode(b, len, &o, &img, msg, sizeof msg) != CHEX_PRE_OK)
        abort();
    float *g = malloc((size_t)w * (size_t)h * sizeof(float));
    if (!g)
        abort();
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            g[(size_t)y * w + x] =
                img.pix[(size_t)(y * img.height / h) * img.width + (size_t)(x * img.width / w)];
    chex_pre_image_free(&img);
    free(b);
    return g;
}

/* Appends the deflate output of in[0..n) with flush to m. */
static void bomb_put(chex_test_membuf *m, z_stream *z, const uint8_t *in, size_t n, int flush)
{
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    do {
        if (m->cap - m->len < 65536) {
            m->cap = 2 * m->cap + 65536;
            m->buf = realloc(m->buf, m->cap);
            if (!m->buf)
                abort();
        }
        z->next_out = m->buf + m->len;
        z->avail_out = (uInt)(m->cap - m->len);
        int r = deflate(z, flush);
        if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
            abort();
        m->len = (size_t)(z->next_out - m->buf);
    } while (z->avail_in > 0 || z->avail_out == 0);
}

chex_test_membuf chex_test_deflate_bomb(const char *path, size_t extra)
{
    size_t len, n;
    uint8_t *src = chex_test_read_file(path, &len), *ds;
    chex_dicom_info d;
    if (!src || chex_dicom_parse(src, len, &d, NULL, 0) != CHEX_PRE_OK || !d.deflated ||
        chex_deflate_inflate(src + d.dataset_offset, len - d.dataset_offset, (size_t)1 << 30, &ds,
                             &n, NULL, 0) != CHEX_PRE_OK)
        abort();
    chex_test_membuf m = {malloc(d.dataset_offset + 65536), d.dataset_offset,
                          d.dataset_offset + 65536};
    if (!m.buf)
        abort();
    memcpy(m.buf, src, d.dataset_offset);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    bomb_put(&m, &z, ds, n, Z_FULL_FLUSH);
    /* after a full flush the compressor starts afresh: every MiB of zeros
     * deflates to the same bytes, so the block is copied, not recomputed */
    const size_t mib = (size_t)1 << 20;
    uint8_t *zeros = calloc(mib, 1);
    if (!zeros)
        abort();
    size_t at = m.len;
    if (extra >= mib) {
        bomb_put(&m, &z, zeros, mib, Z_FULL_FLUSH);
        size_t blen = m.len - at;
        for (size_t k = 1; k < extra / mib; k++) {
            if (m.cap - m.len < blen + 65536) {
                m.cap = 2 * m.cap + blen + 65536;
                m.buf = realloc(m.buf, m.cap);
                if (!m.buf)
                    abort();
            }
            memcpy(m.buf + m.len, m.buf + at, blen);
            m.len += blen;
        }
    }
    bomb_put(&m, &z, zeros, extra % mib, Z_FINISH);
    deflateEnd(&z);
    free(zeros);
    free(ds);
    free(src);
    return m;
}
