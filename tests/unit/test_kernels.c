/* tests/unit/test_kernels.c - every fast convolution path (each ISA this CPU
 * runs) against the naive operators: plain kxk convs with stride and padding,
 * 1x1 convs of a pre-activated (BN+ReLU) strided channel slice, and the
 * pooled transition form; odd sizes so column panels straddle images and end
 * in tails; outputs written at a channel offset inside a wider buffer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/kernels.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float *rnd(size_t n)
{
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static const char *const ISAS[] = {"generic", "avx2", "avx512"};

/* Runs a through every usable ISA; each result must match ref (dense
 * (n, m, oh, ow)) to 1e-4 relative, and channels outside the written slice
 * of the destination must stay untouched. */
static void check_all_isas(chex_conv_args a, const float *ref, int dst_c, int dst_off)
{
    const int kw = a.kind == CHEX_PACK_CONV || a.kind == CHEX_PACK_SHIFTED ? a.c * a.kh * a.kw
                   : a.kind == CHEX_PACK_CONV3X3_PADDED                    ? a.c * 9
                                                                           : a.c;
    float *packed = malloc(sizeof(float) * a.m * kw);
    assert_non_null(packed);
    chex_pack_weights(packed, a.wt, a.m, kw);
    a.wt = packed;
    const long ohw = (long)a.oh * a.ow;
    const size_t dst_len = (size_t)a.n * dst_c * ohw;
    float *dst = malloc(dst_len * sizeof(float));
    const int nthreads = 3;
    size_t sf = chex_conv_scratch_floats(kw);
    float *scratch = aligned_alloc(64, sf * nthreads * sizeof(float));
    assert_non_null(dst);
    assert_non_null(scratch);
    int ran = 0;
    for (size_t i = 0; i < sizeof(ISAS) / sizeof(ISAS[0]); i++) {
        const chex_kernels *kr = chex_kernels_by_name(ISAS[i]);
        if (!kr)
            continue;
        ran++;
        for (size_t j = 0; j < dst_len; j++)
            dst[j] = 12345.0f;
        a.dst = dst + (long)dst_off * ohw;
        a.dst_img_stride = (long)dst_c * ohw;
        for (int t = 1; t <= nthreads; t++) {
            kr->conv(&a, scratch, sf, t);
            double worst = 0.0;
            for (int img = 0; img < a.n; img++)
                for (int c = 0; c < dst_c; c++)
                    for (long p = 0; p < ohw; p++) {
                        float got = dst[((long)img * dst_c + c) * ohw + p];
                        if (c < dst_off || c >= dst_off + a.m) {
                            assert_true(got == 12345.0f);
                            continue;
                        }
                        float want = ref[((long)img * a.m + c - dst_off) * ohw + p];
                        double d = fabs((double)got - want) / (1.0 + fabs(want));
                        if (d > worst)
                            worst = d;
                    }
            if (worst > 1e-4)
                fail_msg("%s, %d threads: relative diff %g", kr->name, t, worst);
        }
    }
    assert_true(ran >= 1);
    free(packed);
    free(dst);
    free(scratch);
}

/* Plain conv (stem-like and 3x3): out = relu?(conv(x)*s + t). */
static void conv_case(int n, int c, int h, int w, int m, int kk, int stride, int pad, int post)
{
    const int oh = (h + 2 * pad - kk) / stride + 1, ow = (w + 2 * pad - kk) / stride + 1;
    float *x = rnd((size_t)n * c * h * w), *wt = rnd((size_t)m * c * kk * kk);
    float *s = rnd(m), *t = rnd(m);
    float *ref = malloc(sizeof(float) * n * m * oh * ow);
    assert_non_null(ref);
    conv2d_forward_naive(ref, x, wt, NULL, n, c, h, w, m, kk, kk, stride, pad);
    if (post) {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < m; o++)
                for (long p = 0; p < (long)oh * ow; p++) {
                    float *v = &ref[((long)i * m + o) * oh * ow + p];
                    *v = *v * s[o] + t[o];
                }
        relu_forward_naive(ref, (long)n * m * oh * ow);
    }
    chex_conv_args a = {.kind = CHEX_PACK_CONV, .n = n, .src = x,
                        .src_img_stride = (long)c * h * w, .c = c, .h = h, .w = w, .kh = kk,
                        .kw = kk, .stride = stride, .pad = pad, .oh = oh, .ow = ow, .wt = wt,
                        .m = m, .post_scale = post ? s : NULL, .post_shift = post ? t : NULL,
                        .post_relu = post};
    check_all_isas(a, ref, m + 16, 8);
    free(x), free(wt), free(s), free(t), free(ref);
}

static void test_conv3x3(void **state)
{
    (void)state;
    conv_case(1, 16, 7, 7, 32, 3, 1, 1, 0);   /* 49 columns: panel tails */
    conv_case(3, 8, 5, 9, 16, 3, 1, 1, 0);    /* panels straddle images */
    conv_case(2, 128, 14, 14, 32, 3, 1, 1, 0);/* the block-3 shape */
}

static void test_conv_stem(void **state)
{
    (void)state;
    conv_case(1, 3, 33, 31, 64, 7, 2, 3, 1);
    conv_case(2, 1, 20, 20, 8, 7, 2, 3, 1);
}

/* in: (n, ctot, h, w); uses the first c channels, pre-activated. */
static void preact_ref(float *out, const float *in, int n, int ctot, int c, long hw,
                       const float *g, const float *b, const float *mu, const float *var)
{
    for (int i = 0; i < n; i++)
        memcpy(out + (long)i * c * hw, in + (long)i * ctot * hw, sizeof(float) * c * hw);
    batchnorm_forward_naive(out, out, g, b, mu, var, 1e-5f, n, c, hw);
    relu_forward_naive(out, (long)n * c * hw);
}

static void bn_params(int c, float **g, float **b, float **mu, float **var, float **s, float **t)
{
    *g = rnd(c), *b = rnd(c), *mu = rnd(c), *var = rnd(c), *s = malloc(sizeof(float) * c),
    *t = malloc(sizeof(float) * c);
    assert_non_null(*s);
    assert_non_null(*t);
    for (int i = 0; i < c; i++) {
        (*var)[i] = (*var)[i] + 1.5f;
        (*s)[i] = (*g)[i] / sqrtf((*var)[i] + 1e-5f);
        (*t)[i] = (*b)[i] - (*mu)[i] * (*s)[i];
    }
}

static void bnrelu_case(int n, int ctot, int c, int h, int w, int m, int pool)
{
    const long hw = (long)h * w;
    const int oh = pool ? h / 2 : h, ow = pool ? w / 2 : w;
    float *x = rnd((size_t)n * ctot * hw), *wt = rnd((size_t)m * c);
    float *g, *b, *mu, *var, *s, *t;
    bn_params(c, &g, &b, &mu, &var, &s, &t);
    float *act = malloc(sizeof(float) * n * c * hw), *conv = malloc(sizeof(float) * n * m * hw);
    float *ref = malloc(sizeof(float) * n * m * hw);
    assert_non_null(act);
    assert_non_null(conv);
    assert_non_null(ref);
    preact_ref(act, x, n, ctot, c, hw, g, b, mu, var);
    conv2d_forward_naive(conv, act, wt, NULL, n, c, h, w, m, 1, 1, 1, 0);
    if (pool)
        avgpool2d_forward_naive(ref, conv, n, m, h, w, 2);
    else
        memcpy(ref, conv, sizeof(float) * n * m * hw);
    chex_conv_args a = {.kind = pool ? CHEX_PACK_BNRELU_POOL : CHEX_PACK_BNRELU_1X1, .n = n,
                        .src = x, .src_img_stride = (long)ctot * hw, .c = c, .h = h, .w = w,
                        .kh = 1, .kw = 1, .stride = 1, .pad = 0, .oh = oh, .ow = ow,
                        .pre_scale = s, .pre_shift = t, .wt = wt, .m = m};
    check_all_isas(a, ref, m, 0);
    free(x), free(wt), free(g), free(b), free(mu), free(var), free(s), free(t);
    free(act), free(conv), free(ref);
}

static void test_bnrelu_1x1(void **state)
{
    (void)state;
    bnrelu_case(1, 96, 72, 7, 7, 128, 0);
    bnrelu_case(3, 40, 24, 9, 11, 16, 0);
    bnrelu_case(2, 256, 224, 56, 56, 128, 0); /* whole-panel fast path */
}

static void test_bnrelu_pool(void **state)
{
    (void)state;
    bnrelu_case(1, 64, 64, 14, 14, 32, 1);
    bnrelu_case(2, 48, 48, 9, 7, 8, 1); /* odd sides: floor */
}

/* 3x3 over a zero-bordered source (the bottleneck layout). */
static void padded3x3_case(int n, int c, int h, int w, int m)
{
    const long row = w + 2, plane = (long)(h + 2) * row;
    float *x = rnd((size_t)n * c * h * w), *wt = rnd((size_t)m * c * 9);
    float *pad = calloc((size_t)n * c * plane + 64, sizeof(float));
    float *ref = malloc(sizeof(float) * n * m * h * w);
    assert_non_null(pad);
    assert_non_null(ref);
    for (long pl = 0; pl < (long)n * c; pl++)
        for (int y = 0; y < h; y++)
            memcpy(pad + pl * plane + (y + 1) * row + 1, x + (pl * h + y) * w, sizeof(float) * w);
    for (int i = 0; i < 64; i++) /* the slack may be read, never used */
        pad[(long)n * c * plane + i] = NAN;
    conv2d_forward_naive(ref, x, wt, NULL, n, c, h, w, m, 3, 3, 1, 1);
    chex_conv_args a = {.kind = CHEX_PACK_CONV3X3_PADDED, .n = n, .src = pad,
                        .src_img_stride = c * plane, .src_plane = plane, .src_row = row, .c = c,
                        .h = h, .w = w, .kh = 3, .kw = 3, .stride = 1, .pad = 1, .oh = h, .ow = w,
                        .wt = wt, .m = m};
    check_all_isas(a, ref, m + 8, 8);
    free(x), free(wt), free(pad), free(ref);
}

/* Winograd F(2x2,3x3) (f = 2) or F(4x4,3x3) (f = 4), on the ISAs that have
 * it, against the naive 3x3 conv. */
static void wino_case(int f, int n, int c, int h, int w, int m)
{
    const long row = w + 2, plane = (long)(h + 2) * row;
    float *x = rnd((size_t)n * c * h * w), *wt = rnd((size_t)m * c * 9);
    float *pad = calloc((size_t)n * c * plane + 64, sizeof(float));
    float *ref = malloc(sizeof(float) * n * m * h * w), *u = malloc(sizeof(float) * 36 * m * c);
    float *dst = malloc(sizeof(float) * n * (m + 8) * h * w);
    size_t sf = f == 4 ? chex_winograd4_scratch_floats(c, m) : chex_winograd_scratch_floats(c, m);
    float *scratch = aligned_alloc(64, sf * 3 * sizeof(float));
    assert_true(pad && ref && u && dst && scratch);
    for (long pl = 0; pl < (long)n * c; pl++)
        for (int y = 0; y < h; y++)
            memcpy(pad + pl * plane + (y + 1) * row + 1, x + (pl * h + y) * w, sizeof(float) * w);
    conv2d_forward_naive(ref, x, wt, NULL, n, c, h, w, m, 3, 3, 1, 1);
    if (f == 4)
        chex_winograd4_weights(u, wt, m, c);
    else
        chex_winograd_weights(u, wt, m, c);
    const long ohw = (long)h * w;
    int ran = 0;
    /* F(4x4)'s rounding error follows the size of the inputs (its
     * transforms scale by up to 5 and 8 and then cancel), not each output's:
     * measured up to ~9e-6 of the largest output with c = 128; F(2x2) keeps
     * the per-output bound. */
    float refmax = 1.0f;
    for (long j = 0; j < (long)n * m * ohw; j++)
        refmax = fabsf(ref[j]) > refmax ? fabsf(ref[j]) : refmax;
    for (size_t i = 0; i < sizeof(ISAS) / sizeof(ISAS[0]); i++) {
        const chex_kernels *kr = chex_kernels_by_name(ISAS[i]);
        if (!kr || !(f == 4 ? kr->wino4 : kr->wino))
            continue;
        ran++;
        for (int t = 1; t <= 3; t++) {
            for (long j = 0; j < (long)n * (m + 8) * ohw; j++)
                dst[j] = 12345.0f;
            chex_conv_args a = {.kind = CHEX_PACK_CONV3X3_PADDED, .n = n, .src = pad,
                                .src_img_stride = c * plane, .src_plane = plane, .src_row = row,
                                .c = c, .h = h, .w = w, .kh = 3, .kw = 3, .stride = 1, .pad = 1,
                                .oh = h, .ow = w, .m = m, .dst = dst + 4 * ohw,
                                .dst_img_stride = (m + 8) * ohw};
            (f == 4 ? kr->wino4 : kr->wino)(&a, u, scratch, sf, t);
            for (int img = 0; img < n; img++)
                for (int o = 0; o < m + 8; o++)
                    for (long p = 0; p < ohw; p++) {
                        float got = dst[((long)img * (m + 8) + o) * ohw + p];
                        if (o < 4 || o >= m + 4) {
                            assert_true(got == 12345.0f);
                            continue;
                        }
                        float want = ref[((long)img * m + o - 4) * ohw + p];
                        if (fabsf(got - want) > (f == 4 ? 5e-5f * refmax
                                                         : 1e-4f * (1.0f + fabsf(want))))
                            fail_msg("F(%d) %s t%d: img %d ch %d px %ld: %g != %g", f,
                                     kr->name, t, img, o - 4, p, got, want);
                    }
        }
    }
    if (chex_kernels_by_name("avx512")) /* the ISA that has it */
        assert_true(ran >= 1);
    free(x), free(wt), free(pad), free(ref), free(u), free(dst), free(scratch);
}

static void test_winograd(void **state)
{
    (void)state;
    wino_case(2, 1, 128, 56, 56, 32); /* block 1: tile rows of 28, panels straddle rows */
    wino_case(2, 3, 16, 6, 10, 8);    /* panels straddle images, short rows */
    wino_case(2, 2, 8, 28, 28, 16);
    wino_case(2, 1, 4, 2, 2, 8);      /* one tile */
}

static void test_winograd4(void **state)
{
    (void)state;
    wino_case(4, 1, 128, 56, 56, 32); /* block 1: two pieces of 7 tiles a row */
    wino_case(4, 1, 128, 28, 28, 32); /* block 2: one piece a row, 7 pieces, last alone */
    wino_case(4, 3, 16, 8, 36, 8);    /* 9 tiles a row: pieces of 4 and 5, across images */
    wino_case(4, 2, 8, 4, 64, 16);    /* full 8-tile pieces */
    wino_case(4, 1, 4, 4, 4, 8);      /* one tile */
    wino_case(4, 1, 128, 14, 14, 32); /* block 3: four pieces of 4 tiles, ragged edge tiles */
    wino_case(4, 3, 16, 14, 14, 16);  /* ragged, across images */
    wino_case(4, 2, 8, 7, 7, 8);      /* 3 of a tile's 4 rows and columns kept */
    wino_case(4, 1, 8, 10, 22, 8);    /* 6 tiles a row (two pieces), last 2 columns kept */
    wino_case(4, 2, 8, 5, 3, 16);     /* one column of tiles */
}

static void test_conv3x3_padded(void **state)
{
    (void)state;
    padded3x3_case(1, 16, 7, 7, 32);
    padded3x3_case(3, 8, 5, 6, 16);
    padded3x3_case(2, 128, 14, 14, 32);
    padded3x3_case(1, 32, 56, 56, 32);
}

/* The stem's 7x7 stride-2 pad-3 conv as CHEX_PACK_SHIFTED over the 2x2
 * polyphase split of the padded input (as model/densenet.c arranges it). */
static void shifted_stem_case(int c, int S, int m)
{
    const int oh = (S + 6 - 7) / 2 + 1, ph = (S + 6 + 1) / 2;
    const long pp = (long)ph * ph;
    float *x = rnd((size_t)c * S * S), *wt = rnd((size_t)m * c * 49);
    float *phase = calloc((size_t)c * 4 * pp + 128, sizeof(float));
    float *ref = malloc(sizeof(float) * m * oh * oh);
    int *koff = malloc(sizeof(int) * c * 49);
    assert_non_null(phase);
    assert_non_null(ref);
    assert_non_null(koff);
    for (int ci = 0; ci < c; ci++)
        for (int py = 0; py < 2; py++)
            for (int px = 0; px < 2; px++)
                for (int yy = 0; yy < ph; yy++)
                    for (int u = 0; u < ph; u++) {
                        int y = 2 * yy + py - 3, xx = 2 * u + px - 3;
                        phase[((long)ci * 4 + py * 2 + px) * pp + (long)yy * ph + u] =
                            y >= 0 && y < S && xx >= 0 && xx < S ? x[((long)ci * S + y) * S + xx]
                                                                 : 0.0f;
                    }
    for (int q = 0; q < c * 49; q++) {
        int ci = q / 49, ky = q % 49 / 7, kx = q % 7;
        koff[q] = (int)(ci * 4 * pp + ((ky & 1) * 2 + (kx & 1)) * pp + (ky >> 1) * ph + (kx >> 1));
    }
    conv2d_forward_naive(ref, x, wt, NULL, 1, c, S, S, m, 7, 7, 2, 3);
    chex_conv_args a = {.kind = CHEX_PACK_SHIFTED, .n = 1, .src = phase,
                        .src_img_stride = c * 4 * pp, .src_row = ph, .koff = koff, .c = c,
                        .h = S, .w = S, .kh = 7, .kw = 7, .stride = 2, .pad = 3, .oh = oh,
                        .ow = oh, .wt = wt, .m = m};
    check_all_isas(a, ref, m, 0);
    free(x), free(wt), free(phase), free(ref), free(koff);
}

static void test_stem_shifted(void **state)
{
    (void)state;
    shifted_stem_case(3, 32, 16);
    shifted_stem_case(1, 37, 8); /* odd side */
    shifted_stem_case(3, 224, 64);
}

/* A 1x1 conv writing into the interior of zero-bordered planes leaves the
 * border alone and puts every pixel where the padded 3x3 expects it. */
static void test_padded_destination(void **state)
{
    (void)state;
    const int n = 2, c = 24, h = 9, w = 7, m = 16;
    const long hw = (long)h * w, row = w + 2, plane = (long)(h + 2) * row;
    float *x = rnd((size_t)n * c * hw), *wt = rnd((size_t)m * c), *s = rnd(c), *t = rnd(c);
    float *packed = malloc(sizeof(float) * m * c), *ref = malloc(sizeof(float) * n * m * hw);
    float *dst = calloc((size_t)n * m * plane, sizeof(float));
    float *scratch = aligned_alloc(64, chex_conv_scratch_floats(c) * 2 * sizeof(float));
    assert_non_null(packed);
    assert_non_null(ref);
    assert_non_null(dst);
    assert_non_null(scratch);
    for (int i = 0; i < c; i++)
        s[i] = 1.0f, t[i] = 0.0f; /* identity BN: the reference is a plain conv of relu(x) */
    float *rx = malloc(sizeof(float) * n * c * hw);
    assert_non_null(rx);
    memcpy(rx, x, sizeof(float) * n * c * hw);
    relu_forward_naive(rx, (long)n * c * hw);
    conv2d_forward_naive(ref, rx, wt, NULL, n, c, h, w, m, 1, 1, 1, 0);
    chex_pack_weights(packed, wt, m, c);
    for (size_t i = 0; i < sizeof(ISAS) / sizeof(ISAS[0]); i++) {
        const chex_kernels *kr = chex_kernels_by_name(ISAS[i]);
        if (!kr)
            continue;
        memset(dst, 0, sizeof(float) * n * m * plane);
        chex_conv_args a = {.kind = CHEX_PACK_BNRELU_1X1, .n = n, .src = x,
                            .src_img_stride = c * hw, .c = c, .h = h, .w = w, .kh = 1, .kw = 1,
                            .stride = 1, .oh = h, .ow = w, .pre_scale = s, .pre_shift = t,
                            .wt = packed, .m = m, .dst = dst, .dst_img_stride = m * plane,
                            .dst_plane = plane, .dst_row = row, .dst_off = row + 1};
        kr->conv(&a, scratch, chex_conv_scratch_floats(c), 2);
        for (long pl = 0; pl < (long)n * m; pl++)
            for (long y = 0; y < h + 2; y++)
                for (long xx = 0; xx < row; xx++) {
                    float got = dst[pl * plane + y * row + xx];
                    if (y == 0 || y == h + 1 || xx == 0 || xx == w + 1) {
                        assert_true(got == 0.0f);
                        continue;
                    }
                    float want = ref[pl * hw + (y - 1) * w + xx - 1];
                    if (fabsf(got - want) > 1e-4f * (1.0f + fabsf(want)))
                        fail_msg("%s: (%ld,%ld,%ld) %g != %g", kr->name, pl, y, xx, got, want);
                }
    }
    free(x), free(wt), free(s), free(t), free(packed), free(ref), free(dst), free(scratch);
    free(rx);
}

static void test_naive_ops(void **state)
{
    (void)state;
    /* Hand-computed cases for the reference itself. */
    const float in[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    float out[16];
    maxpool2d_forward_naive(out, in, 1, 1, 4, 4, 3, 2, 1);
    assert_true(out[0] == 6 && out[1] == 8 && out[2] == 14 && out[3] == 16);
    avgpool2d_forward_naive(out, in, 1, 1, 4, 4, 2);
    assert_true(out[0] == 3.5f && out[1] == 5.5f && out[2] == 11.5f && out[3] == 13.5f);
    const float w[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0}, bias = 0.5f;
    conv2d_forward_naive(out, in, w, &bias, 1, 1, 4, 4, 1, 3, 3, 1, 1);
    for (int i = 0; i < 16; i++)
        assert_true(out[i] == in[i] + 0.5f);
    global_avgpool_forward_naive(out, in, 2, 2, 4);
    assert_true(out[0] == 2.5f && out[3] == 14.5f);
    const float lw[2] = {1, -1}, lb = 1;
    linear_forward_naive(out, in, lw, &lb, 2, 2, 1);
    assert_true(out[0] == 0.0f && out[1] == 0.0f);
    sigmoid_forward_naive(out, out, 1);
    assert_true(out[0] == 0.5f);
    const float g = 2, b = 1, mu = 3, var = 4 - 1e-5f;
    batchnorm_forward_naive(out, in, &g, &b, &mu, &var, 1e-5f, 1, 1, 4);
    assert_true(fabsf(out[0] + 1.0f) < 1e-6f && fabsf(out[3] - 2.0f) < 1e-6f); /* (x-3)/2*2+1 */
}

static void test_isa_choice(void **state)
{
    (void)state;
    assert_non_null(chex_kernels_by_name("generic"));
    assert_null(chex_kernels_by_name("sse9"));
    assert_null(chex_kernels_by_name(NULL));
    assert_int_equal(chex_kernels_select("sse9"), -1);
    assert_int_equal(chex_kernels_select("generic"), 0);
    assert_string_equal(chex_kernels_get()->name, "generic");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_naive_ops),   cmocka_unit_test(test_conv3x3),
        cmocka_unit_test(test_conv_stem),   cmocka_unit_test(test_bnrelu_1x1),
        cmocka_unit_test(test_bnrelu_pool), cmocka_unit_test(test_conv3x3_padded),
        cmocka_unit_test(test_padded_destination), cmocka_unit_test(test_stem_shifted),
        cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_winograd4),
        cmocka_unit_test(test_isa_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
