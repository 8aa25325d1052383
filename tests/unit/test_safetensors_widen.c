/* tests/unit/test_safetensors_widen.c - chex_st_to_f32: F16 (every one of the
 * 65536 values against an independent formula), BF16 and F32 from unaligned
 * little-endian data in a guard-page buffer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/safetensors.h"
#include "tests/unit/helpers/guard.h"

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* A file holding one tensor 'x' of n elements of dtype dt (elsize bytes each)
 * at data offset 1, at an odd address; parses it from a guard buffer and widens. */
static void widen(const char *dt, size_t elsize, const uint8_t *le, size_t n, float *out)
{
    char hdr[256];
    int hl = snprintf(hdr, sizeof(hdr),
                      "{\"pad\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                      "\"x\":{\"dtype\":\"%s\",\"shape\":[%zu],\"data_offsets\":[1,%zu]}}",
                      dt, n, 1 + n * elsize);
    /* one spare byte after the tensor: the buffer ends at a page boundary, so
     * the tensor itself starts at an odd address */
    size_t len = 8 + (size_t)hl + 1 + n * elsize + 1;
    uint8_t *b = calloc(1, len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, (size_t)hl);
    memcpy(b + 8 + hl + 1, le, n * elsize);

    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, b, len), 0);
    chex_st_file f;
    char msg[256];
    assert_int_equal(chex_st_parse(g.data, g.len, &f, msg, sizeof(msg)), CHEX_MODEL_OK);
    const chex_st_tensor *t = chex_st_find(&f, "x");
    assert_non_null(t);
    assert_int_equal(((uintptr_t)(f.data + t->begin)) % 2, 1);
    chex_st_to_f32(&f, t, out);
    chex_st_free(&f);
    chex_guard_free(&g);
    free(b);
}

/* Independent binary16 decoding by arithmetic, in double. */
static double f16_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
    enum { N = 65536 };
    uint8_t *le = malloc(2 * N);
    float *out = malloc(N * sizeof(float));
    assert_non_null(le);
    assert_non_null(out);
    for (uint32_t i = 0; i < N; i++) {
        le[2 * i] = (uint8_t)i;
        le[2 * i + 1] = (uint8_t)(i >> 8);
    }
    widen("F16", 2, le, N, out);
    int bad = 0;
    for (uint32_t i = 0; i < N; i++) {
        double r = f16_ref((uint16_t)i);
        uint32_t u = f2u(out[i]);
        int ok;
        if (isnan(r)) /* NaN keeps sign and payload, quiet bit included */
            ok = isnan(out[i]) && (u >> 31) == (i >> 15) && ((u >> 13) & 0x3ff) == (i & 0x3ff) &&
                 (u & 0x1fff) == 0;
        else
            ok = (double)out[i] == r && (u >> 31) == (i >> 15); /* -0 stays -0 */
        if (!ok && bad++ < 10)
            print_error("f16 0x%04x -> %.9g (0x%08x), want %.9g\n", i, out[i], u, r);
    }
    assert_int_equal(bad, 0);
    free(le);
    free(out);
}

static void test_f16_known(void **state)
{
    (void)state;
    const uint16_t in[] = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x03ff, 0x0400,
                           0x7c00, 0xfc00, 0x8000, 0x7e00, 0x3bff};
    const float want[] = {1.0f, -2.0f, 0.333251953125f, 65504.0f, 5.9604644775390625e-08f,
                          6.0975551605224609e-05f, 6.103515625e-05f, INFINITY, -INFINITY,
                          -0.0f, NAN, 0.99951171875f};
    enum { N = sizeof(in) / sizeof(in[0]) };
    uint8_t le[2 * N];
    for (int i = 0; i < N; i++) {
        le[2 * i] = (uint8_t)in[i];
        le[2 * i + 1] = (uint8_t)(in[i] >> 8);
    }
    float out[N];
    widen("F16", 2, le, N, out);
    for (int i = 0; i < N; i++) {
        if (isnan(want[i]))
            assert_int_equal(f2u(out[i]), 0x7fc00000u);
        else
            assert_int_equal(f2u(out[i]), f2u(want[i]));
    }
}

static void test_bf16_known(void **state)
{
    (void)state;
    const uint16_t in[] = {0x3f80, 0xc040, 0x4049, 0x7f80, 0xff80, 0x7fc0,
                           0x0001, 0x8000, 0x7f7f, 0x3e20, 0xffff};
    const uint32_t want[] = {0x3f800000u, 0xc0400000u, 0x40490000u, 0x7f800000u,
                             0xff800000u, 0x7fc00000u, 0x00010000u, 0x80000000u,
                             0x7f7f0000u, 0x3e200000u, 0xffff0000u};
    enum { N = sizeof(in) / sizeof(in[0]) };
    uint8_t le[2 * N];
    for (int i = 0; i < N; i++) {
        le[2 * i] = (uint8_t)in[i];
        le[2 * i + 1] = (uint8_t)(in[i] >> 8);
    }
    float out[N];
    widen("BF16", 2, le, N, out);
    for (int i = 0; i < N; i++)
        assert_int_equal(f2u(out[i]), want[i]);
    assert_true(out[0] == 1.0f);
    assert_true(out[1] == -3.0f);
    assert_true(out[2] == 3.140625f);
    assert_true(isinf(out[3]) && out[3] > 0);
    assert_true(isnan(out[5]));
    assert_true(out[6] == ldexpf(1.0f, -133)); /* subnormal float */
    assert_true(out[8] == 3.38953139e38f);
}

static void test_f32_unaligned(void **state)
{
    (void)state;
    const uint32_t bits[] = {0x3f800000u, 0xbf000000u, 0x00000001u, 0x7f7fffffu,
                             0x80000000u, 0x7f800000u, 0x7fc00001u, 0x40490fdbu};
    enum { N = sizeof(bits) / sizeof(bits[0]) };
    uint8_t le[4 * N];
    for (int i = 0; i < N; i++)
        for (int b = 0; b < 4; b++)
            le[4 * i + b] = (uint8_t)(bits[i] >> (8 * b));
    float out[N];
    widen("F32", 4, le, N, out);
    for (int i = 0; i < N; i++)
        assert_int_equal(f2u(out[i]), bits[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_bf16_known),
        cmocka_unit_test(test_f32_unaligned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
