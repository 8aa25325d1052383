/* tests/unit/test_qkernels.c - the int8 convolution kernels (each ISA this CPU
 * runs, 1 and 2 threads) against chex_q8_conv_naive, byte for byte: every
 * kind and output form, batch 1 and 3, sizes whose column panels straddle
 * images and end in ragged tails, exact rounding ties in the input and output
 * quantisation. Destinations start filled with a sentinel, so a write outside
 * the documented locations shows up in the comparison; sources and weights
 * end right before a PROT_NONE page (past the documented slack for the
 * padded 3x3), so reading too far faults. Also: weight quantisation and
 * packing, the choice of ISA. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/kernels.h"
#include "model/qkernels.h"
#include "tests/unit/helpers/guard.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) /* uniform in [-1, 1) */
{
    return (float)((urand() >> 8) / (double)(1u << 24)) * 2.0f - 1.0f;
}

static const char *const ISAS[] = {"generic", "avx2", "avx512"};

enum { OUT_F32_DENSE, OUT_F32_PADDED, OUT_U8_DENSE, OUT_U8_PADDED };

typedef struct {
    chex_q8_kind kind;
    int c, h, w, m;
    int out, relu;
    int row_extra, plane_extra; /* padded 3x3 source: src_row - (w+2), src_plane - (h+2)*row */
} qcase;

/* Copies bytes into a guarded mapping (ending at a PROT_NONE page). */
static void *guarded(chex_guard_buf *g, const void *src, size_t len)
{
    assert_int_equal(chex_guard_alloc(g, src, len), 0);
    return g->data;
}

/* Input values: even channels take identity BN and values on the half-steps
 * of 1/inv, so v * inv lands on exact ties; odd ones a random BN that also
 * saturates at 255. */
static const float INV = 64.0f;

static void make_bn(float *s, float *t, int c)
{
    for (int ch = 0; ch < c; ch++) {
        s[ch] = ch % 2 ? 1.5f * frand() : 1.0f;
        t[ch] = ch % 2 ? frand() : 0.0f;
    }
}

static float input_value(int ch)
{
    if (ch % 2)
        return 4.0f * frand();
    return ((float)((int)(urand() % 400) - 100) + 0.5f) / INV;
}

/* Per output channel requantisation: even channels a power of two and an
 * integer shift (exact ties in the u8 rounding), odd ones arbitrary. The
 * scale puts typical values around +-200 so both clamps occur. */
static void make_out(float *s, float *t, int m, int k)
{
    const float typical = 64.0f * 73.0f * sqrtf((float)k);
    const float p2 = exp2f(-roundf(log2f(typical / 200.0f)));
    for (int o = 0; o < m; o++) {
        s[o] = o % 2 ? (0.5f + 0.5f * (frand() + 1.0f)) * p2 * (frand() < 0 ? -1 : 1)
                     : (o % 4 ? -p2 : p2);
        t[o] = o % 2 ? 60.0f * frand() : (float)((int)(urand() % 41) - 20);
    }
}

static void run_case(const qcase *cs, int n)
{
    const int c = cs->c, h = cs->h, w = cs->w, m = cs->m;
    const int pool = cs->kind == CHEX_Q8_BNRELU_POOL, pad3 = cs->kind == CHEX_Q8_CONV3X3_PADDED;
    const int oh = pool ? h / 2 : h, ow = pool ? w / 2 : w, taps = pad3 ? 9 : 1;
    const int k = c * taps;
    const long hw = (long)h * w, ohw = (long)oh * ow;
    chex_q8_args a = {.kind = cs->kind, .n = n, .c = c, .h = h, .w = w, .oh = oh, .ow = ow,
                      .m = m, .out_relu = cs->relu, .in_inv_scale = INV};
    chex_guard_buf gsrc = {0}, gw = {0};

    float *pre_s = malloc(sizeof(float) * c), *pre_t = malloc(sizeof(float) * c);
    float *out_s = malloc(sizeof(float) * m), *out_t = malloc(sizeof(float) * m);
    assert_true(pre_s && pre_t && out_s && out_t);
    make_bn(pre_s, pre_t, c);
    make_out(out_s, out_t, m, k);
    a.pre_scale = pre_s, a.pre_shift = pre_t, a.out_scale = out_s, a.out_shift = out_t;

    if (pad3) {
        const long row = w + 2 + cs->row_extra, plane = (h + 2) * row + cs->plane_extra;
        const long img = (long)(c / 4) * plane + 5;
        /* The last image ends with its last plane plus the documented slack. */
        const size_t len = 4 * (size_t)((n - 1) * img + (c / 4) * plane) + 256;
        uint8_t *q = malloc(len);
        assert_non_null(q);
        for (size_t i = 0; i < len; i++)
            q[i] = (uint8_t)urand();
        for (int i = 0; i < n; i++)
            for (int g = 0; g < c / 4; g++) {
                uint8_t *p = q + 4 * (i * img + g * plane);
                memset(p, 0, 4 * (size_t)row);
                memset(p + 4 * (h + 1) * row, 0, 4 * (size_t)row);
                for (int y = 1; y <= h; y++) {
                    memset(p + 4 * (y * row), 0, 4);
                    memset(p + 4 * (y * row + w + 1), 0, 4);
                }
            }
        a.qsrc = guarded(&gsrc, q, len);
        a.qsrc_img_stride = img, a.src_plane = plane, a.src_row = row;
        free(q);
    } else {
        const int ctot = c + 4; /* a channel slice of a wider buffer */
        const size_t len = (size_t)(n - 1) * ctot * hw + (size_t)c * hw;
        float *x = malloc(sizeof(float) * len);
        assert_non_null(x);
        for (size_t i = 0; i < len; i++)
            x[i] = input_value((int)(i / hw % ctot));
        a.src = guarded(&gsrc, x, sizeof(float) * len);
        a.src_img_stride = (long)ctot * hw;
        free(x);
    }

    int8_t *qw = malloc((size_t)m * k), *pw = malloc((size_t)m * k);
    assert_true(qw && pw);
    for (int i = 0; i < m * k; i++)
        qw[i] = (int8_t)((int)(urand() % 255) - 127);
    chex_q8_pack_weights(pw, qw, m, c, taps);
    a.wt = guarded(&gw, pw, (size_t)m * k);

    /* Destination: channels at an offset inside a wider buffer. */
    size_t bytes;
    long base;
    if (cs->out == OUT_F32_DENSE) {
        a.dst_img_stride = (long)(m + 16) * ohw;
        base = 8 * ohw;
        bytes = sizeof(float) * (size_t)n * a.dst_img_stride;
    } else if (cs->out == OUT_F32_PADDED) {
        a.dst_row = ow + 2, a.dst_plane = (oh + 2) * a.dst_row, a.dst_off = a.dst_row + 1;
        a.dst_img_stride = (long)(m + 8) * a.dst_plane;
        base = 4 * a.dst_plane;
        bytes = sizeof(float) * (size_t)n * a.dst_img_stride;
    } else if (cs->out == OUT_U8_DENSE) {
        a.dst_img_stride = (long)(m / 4 + 2) * ohw;
        base = ohw;
        bytes = 4 * (size_t)n * a.dst_img_stride;
    } else {
        a.dst_row = ow + 2, a.dst_plane = (oh + 2) * a.dst_row + 1, a.dst_off = a.dst_row + 1;
        a.dst_img_stride = (long)(m / 4 + 3) * a.dst_plane;
        base = 2 * a.dst_plane;
        bytes = 4 * (size_t)n * a.dst_img_stride;
    }
    const int u8 = cs->out == OUT_U8_DENSE || cs->out == OUT_U8_PADDED;
    uint8_t *ref = malloc(bytes), *got = malloc(bytes);
    assert_true(ref && got);
    memset(ref, 0xa5, bytes);
    if (u8)
        a.qdst = ref + 4 * base;
    else
        a.dst = (float *)ref + base;
    chex_q8_conv_naive(&a);

    /* The case means something: u8 outputs take both clamps and values in
     * between. */
    if (u8) {
        long lo = 0, hi = 0, mid = 0;
        for (int i = 0; i < n; i++)
            for (int g = 0; g < m / 4; g++)
                for (int y = 0; y < oh; y++)
                    for (int xx = 0; xx < ow; xx++)
                        for (int l = 0; l < 4; l++) {
                            const long dp = a.dst_plane ? a.dst_plane : ohw;
                            const long dr = a.dst_row ? a.dst_row : ow;
                            const uint8_t v = a.qdst[4 * (i * a.dst_img_stride + g * dp +
                                                          a.dst_off + y * dr + xx) +
                                                     l];
                            lo += v == 0, hi += v == 255, mid += v > 0 && v < 255;
                        }
        if (!(lo > 0 && hi > 0 && mid >= (lo + hi) / 8))
            fail_msg("c%d m%d: %ld zeros, %ld 255s, %ld between", c, m, lo, hi, mid);
    }

    const size_t sb = chex_q8_scratch_bytes(k);
    uint8_t *scratch = aligned_alloc(64, 2 * sb);
    assert_non_null(scratch);
    int ran = 0;
    for (size_t isa = 0; isa < sizeof(ISAS) / sizeof(ISAS[0]); isa++) {
        const chex_q8_kernels *kr = chex_q8_kernels_by_name(ISAS[isa]);
        if (!kr)
            continue;
        ran++;
        for (int t = 1; t <= 2; t++) {
            memset(got, 0xa5, bytes);
            if (u8)
                a.qdst = got + 4 * base;
            else
                a.dst = (float *)got + base;
            kr->conv(&a, scratch, sb, t);
            if (memcmp(got, ref, bytes) != 0) {
                size_t i = 0;
                while (got[i] == ref[i])
                    i++;
                fail_msg("%s, %d threads, kind %d c%d %dx%d m%d n%d out %d: byte %zu of %zu: "
                         "%d != %d",
                         kr->name, t, (int)cs->kind, c, h, w, m, n, cs->out, i, bytes, got[i],
                         ref[i]);
            }
        }
    }
    assert_true(ran >= 1);
    free(scratch), free(ref), free(got), free(qw), free(pw);
    free(pre_s), free(pre_t), free(out_s), free(out_t);
    chex_guard_free(&gsrc);
    chex_guard_free(&gw);
}

static void run_cases(const qcase *cs, size_t count, int big)
{
    for (size_t i = 0; i < count; i++) {
        run_case(&cs[i], 1);
        if (!big || (long)cs[i].h * cs[i].w < 1000)
            run_case(&cs[i], 3);
    }
}

static void test_bnrelu_1x1_f32(void **state)
{
    (void)state;
    const qcase cs[] = {
        {CHEX_Q8_BNRELU_1X1, 4, 7, 7, 8, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 64, 14, 14, 32, OUT_F32_DENSE, 1, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 992, 7, 7, 128, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 256, 14, 14, 512, OUT_F32_DENSE, 1, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 36, 13, 13, 24, OUT_F32_PADDED, 1, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 64, 56, 56, 40, OUT_F32_DENSE, 0, 0, 0},
        /* images of NR - 1, NR + 1 and fewer than NR columns */
        {CHEX_Q8_BNRELU_1X1, 8, 1, 31, 8, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 8, 3, 11, 16, OUT_F32_DENSE, 1, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 12, 1, 7, 8, OUT_F32_PADDED, 0, 0, 0},
    };
    run_cases(cs, sizeof(cs) / sizeof(cs[0]), 1);
}

static void test_bnrelu_1x1_u8(void **state)
{
    (void)state;
    const qcase cs[] = {
        {CHEX_Q8_BNRELU_1X1, 4, 7, 7, 8, OUT_U8_PADDED, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 96, 14, 14, 128, OUT_U8_PADDED, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 520, 13, 13, 64, OUT_U8_PADDED, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 124, 7, 7, 16, OUT_U8_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 64, 56, 56, 128, OUT_U8_PADDED, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 48, 28, 28, 32, OUT_U8_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 24, 3, 11, 16, OUT_U8_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_1X1, 24, 1, 15, 8, OUT_U8_PADDED, 0, 0, 0},
    };
    run_cases(cs, sizeof(cs) / sizeof(cs[0]), 1);
}

static void test_bnrelu_pool(void **state)
{
    (void)state;
    const qcase cs[] = {
        {CHEX_Q8_BNRELU_POOL, 4, 7, 9, 8, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_POOL, 256, 13, 13, 128, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_POOL, 64, 56, 56, 32, OUT_F32_DENSE, 1, 0, 0},
        {CHEX_Q8_BNRELU_POOL, 32, 15, 14, 16, OUT_U8_DENSE, 0, 0, 0},
        {CHEX_Q8_BNRELU_POOL, 40, 14, 14, 24, OUT_U8_PADDED, 0, 0, 0},
        {CHEX_Q8_BNRELU_POOL, 8, 3, 2, 8, OUT_F32_DENSE, 0, 0, 0}, /* one pixel per image */
    };
    run_cases(cs, sizeof(cs) / sizeof(cs[0]), 1);
}

static void test_conv3x3_padded(void **state)
{
    (void)state;
    const qcase cs[] = {
        {CHEX_Q8_CONV3X3_PADDED, 4, 7, 7, 8, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_CONV3X3_PADDED, 16, 13, 13, 32, OUT_F32_DENSE, 1, 1, 3},
        {CHEX_Q8_CONV3X3_PADDED, 128, 14, 14, 32, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_CONV3X3_PADDED, 128, 7, 7, 32, OUT_F32_DENSE, 0, 2, 0},
        {CHEX_Q8_CONV3X3_PADDED, 32, 5, 6, 16, OUT_U8_PADDED, 0, 0, 1},
        {CHEX_Q8_CONV3X3_PADDED, 128, 56, 56, 32, OUT_F32_DENSE, 0, 0, 0},
        {CHEX_Q8_CONV3X3_PADDED, 8, 1, 1, 8, OUT_F32_PADDED, 1, 0, 0},
        {CHEX_Q8_CONV3X3_PADDED, 12, 2, 7, 8, OUT_U8_DENSE, 0, 1, 0},
        /* K = 9 * 912: longer than the in-place offset table, every panel packed */
        {CHEX_Q8_CONV3X3_PADDED, 912, 3, 4, 8, OUT_F32_DENSE, 0, 0, 0},
    };
    run_cases(cs, sizeof(cs) / sizeof(cs[0]), 1);
}

/* The reference itself on cases computed by hand: rounding ties to even,
 * both clamps, the pooled window, the 3x3 tap order. */
static void test_naive_by_hand(void **state)
{
    (void)state;
    /* q (8, 4): rows 0..3 pick one channel, row 4 alternates signs. */
    int8_t q[8 * 4] = {0}, w[8 * 4];
    for (int o = 0; o < 4; o++)
        q[o * 4 + o] = 1;
    q[16] = 1, q[17] = -1, q[18] = 1, q[19] = -1;
    chex_q8_pack_weights(w, q, 8, 4, 1);
    const float one[8] = {1, 1, 1, 1, 1, 1, 1, 1}, zero[8] = {0};
    float os[8], ot[8], out[8 * 2];
    for (int o = 0; o < 8; o++)
        os[o] = o == 4 ? 0.5f : 1.0f, ot[o] = 0.25f;
    /* x (1, 4, 1, 2) -> q: {2, 2}, {0, 255}, {0, 7}, {4, 254} */
    const float x[8] = {1.5f, 2.5f, -3.0f, 300.0f, 0.49f, 7.0f, 3.5f, 254.5f};
    chex_q8_args a = {.kind = CHEX_Q8_BNRELU_1X1, .n = 1, .c = 4, .h = 1, .w = 2, .oh = 1,
                      .ow = 2, .src = x, .src_img_stride = 8, .pre_scale = one,
                      .pre_shift = zero, .in_inv_scale = 1.0f, .wt = w, .m = 8,
                      .out_scale = os, .out_shift = ot, .dst = out, .dst_img_stride = 16};
    chex_q8_conv_naive(&a);
    const float want[10] = {2.25f, 2.25f, 0.25f, 255.25f, 0.25f,
                            7.25f, 4.25f, 254.25f, -0.75f, -249.75f}; /* (2-4)/2, (2-255+7-254)/2 */
    for (int i = 0; i < 10; i++)
        assert_true(out[i] == want[i]);
    assert_true(out[10] == 0.25f && out[15] == 0.25f);
    a.out_relu = 1;
    chex_q8_conv_naive(&a);
    assert_true(out[8] == 0.0f && out[9] == 0.0f && out[7] == 254.25f);

    /* u8 output, shift 0.5: ties to even and the 255 clamp. */
    uint8_t qo[2 * 2 * 4];
    for (int o = 0; o < 8; o++)
        os[o] = 1.0f, ot[o] = 0.5f;
    a.dst = NULL, a.qdst = qo, a.dst_img_stride = 4;
    chex_q8_conv_naive(&a);
    /* pixel 0: rows 0..3 {2.5, 0.5, 0.5, 4.5}; pixel 1 {2.5, 255.5, 7.5, 254.5} */
    const uint8_t qwant[8] = {2, 0, 0, 4, 2, 255, 8, 254};
    assert_memory_equal(qo, qwant, 8);
    assert_true(qo[8] == 0 && qo[12] == 0); /* rows 4, 5 of pixel 0, 1: -2+.5 -> 0 */

    /* Pooled: one 2x2 window of channel 0 {1, 2, 3, -4} -> relu -> 1.5 -> 2. */
    const float xp[16] = {1, 2, 3, -4, 5, 5, 5, 5.5f, 0, 0, 0, 2, 9, 9, 9, 9};
    a = (chex_q8_args){.kind = CHEX_Q8_BNRELU_POOL, .n = 1, .c = 4, .h = 2, .w = 2, .oh = 1,
                       .ow = 1, .src = xp, .src_img_stride = 16, .pre_scale = one,
                       .pre_shift = zero, .in_inv_scale = 1.0f, .wt = w, .m = 8,
                       .out_scale = os, .out_shift = zero, .dst = out, .dst_img_stride = 8};
    chex_q8_conv_naive(&a);
    /* 5.125 -> 5, 0.5 -> 0, 9 */
    assert_true(out[0] == 2.0f && out[1] == 5.0f && out[2] == 0.0f && out[3] == 9.0f);
    assert_true(out[4] == 2.0f - 5.0f + 0.0f - 9.0f);

    /* 3x3 over a 1x1 image: only the centre tap (4) sees the pixel. */
    int8_t q3[8 * 4 * 9] = {0}, w3[8 * 4 * 9];
    q3[0 * 36 + 0 * 9 + 4] = 1, q3[0 * 36 + 3 * 9 + 4] = 2; /* row 0: ch0 + 2 ch3 at the centre */
    q3[1 * 36 + 1 * 9 + 0] = 5;                             /* row 1: a corner tap (border) */
    chex_q8_pack_weights(w3, q3, 8, 4, 9);
    uint8_t src[9 * 4] = {0};
    src[16] = 10, src[17] = 20, src[18] = 30, src[19] = 40; /* pixel (0, 0) at (1, 1) */
    a = (chex_q8_args){.kind = CHEX_Q8_CONV3X3_PADDED, .n = 1, .c = 4, .h = 1, .w = 1,
                       .oh = 1, .ow = 1, .qsrc = src, .qsrc_img_stride = 9, .src_plane = 9,
                       .src_row = 3, .wt = w3, .m = 8, .out_scale = one, .out_shift = zero,
                       .dst = out, .dst_img_stride = 8};
    chex_q8_conv_naive(&a);
    assert_true(out[0] == 90.0f && out[1] == 0.0f && out[7] == 0.0f);
}

static void test_quantize_weights(void **state)
{
    (void)state;
    enum { M = 8, K = 37 };
    float w[M * K], sw[M];
    int8_t q[M * K];
    for (int i = 0; i < M * K; i++)
        w[i] = (float)(i % 5 + 1) * frand();
    for (int i = 0; i < K; i++)
        w[3 * K + i] = 0.0f; /* an all-zero row */
    w[5 * K + 7] = -9.0f;    /* a negative maximum */
    chex_q8_quantize_weights(q, sw, w, M, K);
    assert_true(sw[3] == 1.0f);
    assert_true(sw[5] == 9.0f / 127.0f);
    assert_int_equal(q[5 * K + 7], -127);
    for (int o = 0; o < M; o++) {
        int at_max = 0;
        for (int i = 0; i < K; i++) {
            const float v = w[o * K + i], r = (float)q[o * K + i] * sw[o];
            assert_true(q[o * K + i] >= -127 && q[o * K + i] <= 127);
            assert_true(fabsf(v - r) <= sw[o] * 0.5f * 1.0001f);
            at_max |= abs(q[o * K + i]) == 127;
        }
        if (o == 3)
            for (int i = 0; i < K; i++)
                assert_int_equal(q[o * K + i], 0);
        else
            assert_true(at_max);
    }
}

static void test_pack_weights(void **state)
{
    (void)state;
    /* m = 16, c = 8, taps = 2: q[o][ch][t] = o * 16 + ch * 2 + t, so
     * k-group g = (ch/4)*2 + t holds ch = 4(g/2) + i at tap g%2. */
    int8_t q[16 * 16], d[16 * 16];
    for (int i = 0; i < 256; i++)
        q[i] = (int8_t)(i - 128);
    chex_q8_pack_weights(d, q, 16, 8, 2);
    /* panel 0, group 0 (ch 0..3, tap 0), row 0: q[0][0..3][0] */
    assert_int_equal(d[0], -128 + 0);
    assert_int_equal(d[1], -128 + 2);
    assert_int_equal(d[2], -128 + 4);
    assert_int_equal(d[3], -128 + 6);
    /* row 1 */
    assert_int_equal(d[4], -128 + 16);
    assert_int_equal(d[7], -128 + 22);
    /* group 1 = ch 0..3 at tap 1 */
    assert_int_equal(d[32], -128 + 1);
    assert_int_equal(d[35], -128 + 7);
    /* group 2 = ch 4..7 at tap 0, row 7 */
    assert_int_equal(d[64 + 28], -128 + 7 * 16 + 8);
    assert_int_equal(d[64 + 31], -128 + 7 * 16 + 14);
    /* group 3, row 2 */
    assert_int_equal(d[96 + 8], -128 + 2 * 16 + 9);
    /* panel 1 (rows 8..15) starts after 8 rows * 16 bytes */
    assert_int_equal(d[128], -128 + 8 * 16);
    assert_int_equal(d[128 + 96 + 31], 127);
}

static void test_isa_choice(void **state)
{
    (void)state;
    assert_non_null(chex_q8_kernels_by_name("generic"));
    assert_null(chex_q8_kernels_by_name("sse9"));
    assert_null(chex_q8_kernels_by_name(NULL));
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && chex_kernels_by_name("avx512"))
        assert_string_equal(chex_q8_kernels_by_name("avx512")->name, "avx512");
    assert_true(chex_q8_kernels_get() != NULL);
    if (chex_kernels_select("avx2") == 0)
        assert_string_equal(chex_q8_kernels_get()->name, "avx2");
    if (chex_kernels_select("avx512") == 0)
        assert_string_equal(chex_q8_kernels_get()->name,
                            __builtin_cpu_supports("avx512vnni") ? "avx512" : "avx2");
    assert_int_equal(chex_kernels_select("generic"), 0);
    assert_string_equal(chex_q8_kernels_get()->name, "generic");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_naive_by_hand),    cmocka_unit_test(test_quantize_weights),
        cmocka_unit_test(test_pack_weights),
        cmocka_unit_test(test_bnrelu_1x1_f32),   cmocka_unit_test(test_bnrelu_1x1_u8),
        cmocka_unit_test(test_bnrelu_pool),      cmocka_unit_test(test_conv3x3_padded),
        cmocka_unit_test(test_isa_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
