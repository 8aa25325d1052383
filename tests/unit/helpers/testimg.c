/* tests/unit/helpers/testimg.c - test images made in memory (see testimg.h). */
#include "tests/unit/helpers/testimg.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
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

static void put(chex_test_membuf *m, const void *p, size_t n)
{
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        if (!m->buf)
            abort();
    }
    memcpy(m->buf + m->len, p, n);
    m->len += n;
}

/* One Explicit VR LE element; OB/OW/UN with the long header. Values of odd
 * length are padded (space for text VRs, 0 for UI and binary). */
static void elem(chex_test_membuf *m, uint16_t group, uint16_t el, const char *vr,
                 const void *v, size_t n)
{
    int lng = strcmp(vr, "OB") == 0 || strcmp(vr, "OW") == 0;
    size_t padded = n + (n & 1);
    uint8_t h[12] = {(uint8_t)group, (uint8_t)(group >> 8), (uint8_t)el, (uint8_t)(el >> 8),
                     (uint8_t)vr[0], (uint8_t)vr[1]};
    if (lng) {
        h[8] = (uint8_t)padded;
        h[9] = (uint8_t)(padded >> 8);
        h[10] = (uint8_t)(padded >> 16);
        h[11] = (uint8_t)(padded >> 24);
        put(m, h, 12);
    } else {
        h[6] = (uint8_t)padded;
        h[7] = (uint8_t)(padded >> 8);
        put(m, h, 8);
    }
    put(m, v, n);
    if (n & 1) {
        uint8_t pad = strcmp(vr, "UI") == 0 || strcmp(vr, "OB") == 0 ? 0 : ' ';
        put(m, &pad, 1);
    }
}

static void elem_str(chex_test_membuf *m, uint16_t group, uint16_t el, const char *vr,
                     const char *s)
{
    elem(m, group, el, vr, s, strlen(s));
}

static void elem_us(chex_test_membuf *m, uint16_t el, int v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    elem(m, 0x0028, el, "US", b, 2);
}

static void elem_ds(chex_test_membuf *m, uint16_t el, double v)
{
    char s[32];
    snprintf(s, sizeof s, "%.10g", v);
    elem_str(m, 0x0028, el, "DS", s);
}

chex_test_membuf chex_test_make_dicom(const chex_test_dicom *d, const int32_t *values)
{
    static const char SOP_CLASS[] = "1.2.840.10008.5.1.4.1.1.1.1"; /* DX For Presentation */
    static const char SOP_INST[] = "1.2.826.0.1.3680043.8.498.1";
    static const char TS[] = "1.2.840.10008.1.2.1";
    chex_test_membuf meta = {0}, m = {0};
    uint8_t version[2] = {0, 1};
    elem(&meta, 0x0002, 0x0001, "OB", version, 2);
    elem_str(&meta, 0x0002, 0x0002, "UI", SOP_CLASS);
    elem_str(&meta, 0x0002, 0x0003, "UI", SOP_INST);
    elem_str(&meta, 0x0002, 0x0010, "UI", TS);
    uint8_t pre[132] = {0};
    memcpy(pre + 128, "DICM", 4);
    put(&m, pre, sizeof pre);
    uint8_t gl[4] = {(uint8_t)meta.len, (uint8_t)(meta.len >> 8), (uint8_t)(meta.len >> 16),
                     (uint8_t)(meta.len >> 24)};
    elem(&m, 0x0002, 0x0000, "UL", gl, 4);
    put(&m, meta.buf, meta.len);
    free(meta.buf);
    elem_str(&m, 0x0008, 0x0016, "UI", SOP_CLASS);
    elem_str(&m, 0x0008, 0x0018, "UI", SOP_INST);
    elem_str(&m, 0x0008, 0x0060, "CS", "DX");
    elem_us(&m, 0x0002, 1);
    elem_str(&m, 0x0028, 0x0004, "CS", d->photometric);
    elem_us(&m, 0x0010, d->h);
    elem_us(&m, 0x0011, d->w);
    elem_us(&m, 0x0100, d->bits_allocated);
    elem_us(&m, 0x0101, d->bits_stored);
    elem_us(&m, 0x0102, d->high_bit);
    elem_us(&m, 0x0103, d->is_signed);
    if (d->window_width != 0) {
        elem_ds(&m, 0x1050, d->window_center);
        elem_ds(&m, 0x1051, d->window_width);
    }
    if (d->slope != 0) {
        elem_ds(&m, 0x1052, d->intercept);
        elem_ds(&m, 0x1053, d->slope);
    }
    if (d->voi_function)
        elem_str(&m, 0x0028, 0x1056, "CS", d->voi_function);
    const size_t n = (size_t)d->w * (size_t)d->h, bytes = (size_t)d->bits_allocated / 8;
    uint8_t *px = malloc(n * bytes + 1);
    if (!px)
        abort();
    const uint32_t mask = d->bits_stored >= 32 ? 0xFFFFFFFFu : (1u << d->bits_stored) - 1u;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = ((uint32_t)values[i] & mask) << (d->high_bit + 1 - d->bits_stored);
        for (size_t k = 0; k < bytes; k++)
            px[i * bytes + k] = (uint8_t)(u >> (8 * k));
    }
    elem(&m, 0x7FE0, 0x0010, bytes == 1 ? "OB" : "OW", px, n * bytes);
    free(px);
    return m;
}
