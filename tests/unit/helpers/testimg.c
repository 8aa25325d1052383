/* tests/unit/helpers/testimg.c - test images made in memory (see testimg.h). */
#include "tests/unit/helpers/testimg.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>


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

