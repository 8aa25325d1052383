/* chex_pre_probe's decode_bytes (and display_bytes) bound what
 * chex_pre_prepare really allocates: every heap allocation of the process is
 * counted (malloc and friends are wrapped here, or under ASan its allocator
 * hooks), and the peak during one prepare (tensor included) must stay within
 * the probe's figure, for PNG 8/16-bit gray/RGB/RGBA, Adam7 interlaced PNG,
 * baseline and progressive JPEG, native, JPEG Baseline and compressed DICOM
 * (JPEG Lossless, JPEG-LS, JPEG 2000, RLE, Deflated), with and
 * without the display copy, on real radiographs scaled to detector size;
 * a native DICOM of that size also resampled in bands on 2 and 4 threads. */
#include <malloc.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include <cmocka.h>

#include "preprocessing/preprocess.h"
#include "tests/unit/helpers/guard.h"
#include "tests/unit/helpers/testimg.h"

/* ---- counting ---- */

static long long cur_bytes, peak_bytes;
static int counting;

static void count_add(long long n)
{
    cur_bytes += n;
    if (cur_bytes > peak_bytes)
        peak_bytes = cur_bytes;
}

#if defined(__SANITIZE_ADDRESS__)
/* from <sanitizer/allocator_interface.h>, which Debian's gcc does not ship */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);
static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    if (counting)
        count_add((long long)n);
}
static void on_free(const volatile void *p)
{
    if (counting && p)
        count_add(-(long long)__sanitizer_get_allocated_size(p));
}
static void install_hooks(void)
{
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static void *counted(void *p)
{
    if (p && counting)
        count_add((long long)malloc_usable_size(p));
    return p;
}
void *malloc(size_t n)
{
    return counted(__libc_malloc(n));
}
void *calloc(size_t a, size_t b)
{
    return counted(__libc_calloc(a, b));
}
void *realloc(void *p, size_t n)
{
    if (p && counting)
        count_add(-(long long)malloc_usable_size(p));
    return counted(__libc_realloc(p, n));
}
void *memalign(size_t al, size_t n)
{
    return counted(__libc_memalign(al, n));
}
void *aligned_alloc(size_t al, size_t n)
{
    return counted(__libc_memalign(al, n));
}
int posix_memalign(void **out, size_t al, size_t n)
{
    void *p = counted(__libc_memalign(al, n));
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}
void free(void *p)
{
    if (p && counting)
        count_add(-(long long)malloc_usable_size(p));
    __libc_free(p);
}
static void install_hooks(void)
{
}
#endif

/* ---- test images ---- */

static chex_test_membuf make_jpeg(const float *g, int w, int h, int colour, int flags)
{
    uint8_t *px = malloc((size_t)w * (size_t)h * 3);
    assert_non_null(px);
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++)
        for (int c = 0; c < 3; c++)
            px[i * 3 + c] = (uint8_t)(g[i] * 255.0f * (1.0f - 0.2f * c) + 0.5f);
    tjhandle tc = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long len = 0;
    assert_int_equal(tjCompress2(tc, px, w, 0, h, TJPF_RGB, &jpeg, &len,
                                 colour ? TJSAMP_420 : TJSAMP_GRAY, 90, flags),
                     0);
    chex_test_membuf m = {malloc(len), len, len};
    memcpy(m.buf, jpeg, len);
    tjFree(jpeg);
    tjDestroy(tc);
    free(px);
    return m;
}

/* ---- the check ---- */

static const chex_pre_spec SPECS[3] = {
    {.channels = 3, .size = 224, .preset = "resize256-crop224", .mean = {0.485f, 0.456f, 0.406f},
     .std = {0.229f, 0.224f, 0.225f}},
    {.channels = 3, .size = 224, .preset = "tencrop", .mean = {0.5f, 0.5f, 0.5f},
     .std = {0.25f, 0.25f, 0.25f}},
    {.channels = 1, .size = 224, .preset = "xrv", .mean = {0.5f}, .std = {1.0f / 2048.0f}},
};

/* threads: opts.threads (large DICOM frames in bands on as many threads) */
static void check_threads(const char *name, const uint8_t *data, size_t len, int threads)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, data, len), 0);
    chex_pre_opts opts = {.max_pixels = 50000000, .min_side = 8,
                          .png16_scaling = CHEX_PNG16_MINMAX, .max_overlay_side = 2048,
                          .threads = threads};
    for (int s = 0; s < 3; s++) {
        const chex_pre_spec *spec = &SPECS[s];
        chex_pre_probe_info info;
        char msg[256];
        chex_pre_err e = chex_pre_probe(g.data, g.len, &opts, spec, &info, msg, sizeof msg);
        if (e != CHEX_PRE_OK)
            fail_msg("%s: probe: %s", name, msg);
        for (int want_display = 0; want_display < 2; want_display++) {
            size_t n = (size_t)chex_pre_ncrops(spec) * (size_t)spec->channels * 224 * 224;
            chex_pre_image meta;
            chex_pre_display disp;
            cur_bytes = peak_bytes = 0;
            counting = 1;
            float *out = malloc(n * sizeof(float));
            e = chex_pre_prepare(g.data, g.len, &opts, spec, out, NULL, &meta,
                                 want_display ? &disp : NULL, msg, sizeof msg);
            counting = 0;
            if (e != CHEX_PRE_OK)
                fail_msg("%s: prepare: %s", name, msg);
            uint64_t bound = info.decode_bytes + (want_display ? info.display_bytes : 0);
            print_message("%-24s %-18s display %d: peak %8.2f MB <= bound %8.2f MB (%.0f%%)\n",
                          name, spec->preset, want_display, peak_bytes / 1048576.0,
                          bound / 1048576.0, 100.0 * peak_bytes / (double)bound);
            if ((uint64_t)peak_bytes > bound)
                fail_msg("%s %s: peak %lld bytes over the probe's %llu", name, spec->preset,
                         peak_bytes, (unsigned long long)bound);
            assert_int_equal(meta.width, info.width);
            assert_int_equal(meta.height, info.height);
            if (want_display) {
                int dw, dh;
                chex_pre_display_dims(&opts, meta.width, meta.height, &dw, &dh);
                assert_int_equal(disp.width, dw);
                assert_int_equal(disp.height, dh);
                assert_true((uint64_t)dw * (uint64_t)dh * sizeof(float) <= info.display_bytes);
                free(disp.pix);
            }
            free(out);
        }
    }
    chex_guard_free(&g);
}

static void check(const char *name, const uint8_t *data, size_t len)
{
    check_threads(name, data, len, 0);
}

static void check_file(const char *path)
{
    size_t len;
    uint8_t *b = chex_test_read_file(path, &len);
    if (!b)
        fail_msg("cannot read %s (run from the repository root)", path);
    check(strrchr(path, '/') + 1, b, len);
    free(b);
}

static void test_png(void **state)
{
    (void)state;
    check_file("tests/data/00000002_000.png"); /* 8-bit gray */
    check_file("tests/data/h0001.png");        /* 8-bit RGB */
    const int W = 2200, H = 1000; /* display copy scaled to 2048 x 931 */
    float *g = chex_test_gray_of("tests/data/00000002_000.png", W, H);
    static const struct {
        const char *name;
        int ctype, depth, interlace;
    } v[] = {
        {"gray16 2200x1000", PNG_COLOR_TYPE_GRAY, 16, 0},
        {"rgb8 2200x1000", PNG_COLOR_TYPE_RGB, 8, 0},
        {"rgba16 2200x1000", PNG_COLOR_TYPE_RGBA, 16, 0},
        {"gray16 adam7 2200x1000", PNG_COLOR_TYPE_GRAY, 16, 1},
        {"rgba8 adam7 2200x1000", PNG_COLOR_TYPE_RGBA, 8, 1},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        chex_test_membuf m = chex_test_make_png(g, W, H, v[i].ctype, v[i].depth, v[i].interlace);
        check(v[i].name, m.buf, m.len);
        free(m.buf);
    }
    free(g);
}

static void test_jpeg(void **state)
{
    (void)state;
    check_file("tests/data/16747_3_1.jpg"); /* baseline RGB */
    const int W = 2200, H = 1000; /* display copy scaled to 2048 x 931 */
    float *g = chex_test_gray_of("tests/data/00000002_000.png", W, H);
    chex_test_membuf m = make_jpeg(g, W, H, 0, 0);
    check("gray jpeg 2200x1000", m.buf, m.len);
    free(m.buf);
    m = make_jpeg(g, W, H, 1, TJFLAG_PROGRESSIVE);
    check("progressive 420 2200x1000", m.buf, m.len);
    free(m.buf);
    free(g);
}

static void test_dicom(void **state)
{
    (void)state;
    check_file("tests/data/cr-mono1-10-chest.dcm");      /* native 10-bit, window */
    check_file("tests/data/dicom/cr_minmax.dcm");         /* native, no window */
    check_file("tests/data/siim-pneumothorax-sample.dcm"); /* JPEG Baseline */
    check_file("tests/data/dicom/jpeg_fragments.dcm");
    /* a detector-size 12-bit frame resampled in bands (display scaled to
     * 2048 too) */
    const int W = 2200, H = 1700;
    float *g = chex_test_gray_of("tests/data/00000002_000.png", W, H);
    int32_t *v = malloc((size_t)W * H * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < (size_t)W * H; i++)
        v[i] = (int32_t)(g[i] * 4095.0f + 0.5f);
    chex_test_dicom d = {.w = W, .h = H, .bits_allocated = 16, .bits_stored = 12,
                         .high_bit = 11, .photometric = "MONOCHROME2"};
    chex_test_membuf m = chex_test_make_dicom(&d, v);
    for (int t = 1; t <= 4; t *= 2) {
        char name[64];
        snprintf(name, sizeof name, "dx12 2200x1700 %d thr", t);
        check_threads(name, m.buf, m.len, t);
    }
    free(m.buf);
    free(v);
    free(g);
}

static void test_dicom_compressed(void **state)
{
    (void)state;
    check_file("tests/data/dicom-compressed/RG2_JPLL.dcm");         /* JPEG Lossless */
    check_file("tests/data/dicom-compressed/crmono1_jpll_sv6.dcm");
    check_file("tests/data/dicom-compressed/RG2_JLSL.dcm");         /* JPEG-LS */
    check_file("tests/data/dicom-compressed/crmono1_jls_near2.dcm");
    check_file("tests/data/dicom-compressed/RG3_J2KR.dcm");         /* JPEG 2000 */
    check_file("tests/data/dicom-compressed/crmono1_rle.dcm");      /* RLE */
    check_file("tests/data/dicom-compressed/crmono1_deflate.dcm");  /* Deflated */
}

/* Deflated Explicit VR LE: the probe (run before the memory budget's
 * reservation) takes zlib's state and the data set's head, never the
 * inflated data set; a deflate bomb is refused by the probe and by prepare
 * without taking memory for what it inflates to. */
static void test_deflate_probe(void **state)
{
    (void)state;
    chex_pre_opts opts = {.max_pixels = 1u << 22, .min_side = 1, .max_overlay_side = 2048};
    char msg[256];
    chex_pre_probe_info info;
    const char *path = "tests/data/dicom-compressed/crmono1_deflate.dcm";
    size_t len;
    uint8_t *b = chex_test_read_file(path, &len);
    assert_non_null(b);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, b, len), 0);
    free(b);
    cur_bytes = peak_bytes = 0;
    counting = 1;
    chex_pre_err e = chex_pre_probe(g.data, g.len, &opts, &SPECS[0], &info, msg, sizeof msg);
    counting = 0;
    assert_int_equal(e, CHEX_PRE_OK);
    print_message("%-24s probe peak %lld bytes (data set inflates to about 388 kB)\n",
                  "crmono1_deflate.dcm", peak_bytes);
    assert_true(peak_bytes < 192 * 1024);
    chex_guard_free(&g);

    /* 1 GiB of zeros after Pixel Data, about 1 MB deflated; the cap is
     * 4 * max_pixels + 64 MiB = 80 MiB */
    chex_test_membuf m = chex_test_deflate_bomb(path, (size_t)1 << 30);
    assert_int_equal(chex_guard_alloc(&g, m.buf, m.len), 0);
    free(m.buf);
    print_message("deflate bomb: %zu bytes\n", g.len);
    assert_true(g.len < (2u << 20));
    cur_bytes = peak_bytes = 0;
    counting = 1;
    e = chex_pre_probe(g.data, g.len, &opts, &SPECS[0], &info, msg, sizeof msg);
    counting = 0;
    assert_int_equal(e, CHEX_PRE_ERR_TOO_LARGE);
    assert_non_null(strstr(msg, "Deflated Explicit VR Little Endian data set inflates to more than"));
    assert_true(peak_bytes < 128 * 1024);
    size_t n = (size_t)SPECS[0].channels * SPECS[0].size * SPECS[0].size;
    float *out = malloc(n * sizeof *out);
    assert_non_null(out);
    chex_pre_image meta;
    cur_bytes = peak_bytes = 0;
    counting = 1;
    e = chex_pre_prepare(g.data, g.len, &opts, &SPECS[0], out, NULL, &meta, NULL, msg,
                         sizeof msg);
    counting = 0;
    assert_int_equal(e, CHEX_PRE_ERR_TOO_LARGE);
    assert_true(peak_bytes < 128 * 1024);
    free(out);
    chex_guard_free(&g);
}

int main(void)
{
    install_hooks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png),
        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_dicom),
        cmocka_unit_test(test_dicom_compressed),
        cmocka_unit_test(test_deflate_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
