/* tests/unit/test_safetensors.c - chex_st_parse: valid files, every rejected
 * container problem (code + a message naming the tensor or key), truncation.
 * Every buffer sits right before a PROT_NONE page (guard.h). */
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

/* 8-byte little-endian length, the header text, then dlen data bytes (value i & 0xff). */
static uint8_t *build(const char *hdr, size_t dlen, size_t *len)
{
    size_t n = strlen(hdr);
    *len = 8 + n + dlen;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, hdr, n);
    for (size_t i = 0; i < dlen; i++)
        b[8 + n + i] = (uint8_t)i;
    return b;
}

/* Parses raw bytes from a guard buffer; on success widens every tensor (which
 * must stay inside the buffer), on failure checks that *out came back empty. */
static chex_model_err parse_raw(const uint8_t *raw, size_t len, char *msg, size_t msglen)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, raw, len), 0);
    chex_st_file f;
    chex_model_err rc = chex_st_parse(g.data, g.len, &f, msg, msglen);
    if (rc == CHEX_MODEL_OK) {
        for (int i = 0; i < f.ntensors; i++) {
            int64_t n = chex_st_numel(&f.tensors[i]);
            float *dst = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
            assert_non_null(dst);
            chex_st_to_f32(&f, &f.tensors[i], dst);
            free(dst);
        }
    } else {
        assert_int_equal(f.ntensors, 0);
        assert_null(f.tensors);
        assert_int_equal(f.nmeta, 0);
        assert_null(f.meta);
    }
    chex_st_free(&f);
    chex_guard_free(&g);
    return rc;
}

static chex_model_err parse_hdr(const char *hdr, size_t dlen, char *msg, size_t msglen)
{
    size_t len;
    uint8_t *b = build(hdr, dlen, &len);
    chex_model_err rc = parse_raw(b, len, msg, msglen);
    free(b);
    return rc;
}

#define OFFS(b, e) "\"data_offsets\":[" #b "," #e "]"

static void test_valid(void **state)
{
    (void)state;
    const char *hdr = "{\"__metadata__\":{\"name\":\"t\",\"demo\":\"true\"},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3]," OFFS(0, 24) "},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[3]," OFFS(24, 30) "},"
                      "\"s\":{\"dtype\":\"BF16\",\"shape\":[]," OFFS(30, 32) "},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,4]," OFFS(32, 32) "}}";
    size_t len;
    uint8_t *b = build(hdr, 32, &len);
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, b, len), 0);
    chex_st_file f;
    char msg[256];
    assert_int_equal(chex_st_parse(g.data, g.len, &f, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(f.ntensors, 4);
    assert_int_equal(f.nmeta, 2);
    assert_string_equal(chex_st_meta_get(&f, "name"), "t");
    assert_string_equal(chex_st_meta_get(&f, "demo"), "true");
    assert_null(chex_st_meta_get(&f, "nope"));
    assert_ptr_equal(f.data, g.data + 8 + strlen(hdr));
    assert_int_equal(f.data_len, 32);

    const chex_st_tensor *w = chex_st_find(&f, "w");
    assert_non_null(w);
    assert_int_equal(w->dtype, CHEX_ST_F32);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->shape[0], 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(chex_st_numel(w), 6);
    assert_int_equal(w->begin, 0);
    assert_int_equal(w->end, 24);
    const chex_st_tensor *h = chex_st_find(&f, "h");
    assert_non_null(h);
    assert_int_equal(h->dtype, CHEX_ST_F16);
    assert_int_equal(h->begin, 24);
    const chex_st_tensor *s = chex_st_find(&f, "s");
    assert_non_null(s);
    assert_int_equal(s->dtype, CHEX_ST_BF16);
    assert_int_equal(s->ndim, 0);
    assert_int_equal(chex_st_numel(s), 1);
    assert_int_equal(chex_st_numel(chex_st_find(&f, "e")), 0);
    assert_null(chex_st_find(&f, "x"));
    assert_null(chex_st_find(&f, "__metadata__"));
    chex_st_free(&f);
    chex_st_free(&f); /* freeing twice is harmless: free empties the struct */
    chex_guard_free(&g);
    free(b);
}

static void test_no_metadata_no_tensors(void **state)
{
    (void)state;
    char msg[256];
    assert_int_equal(parse_hdr("{}", 0, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(parse_hdr("{\"__metadata__\":{}}   ", 0, msg, sizeof(msg)), CHEX_MODEL_OK);
    /* a gap between tensors is not an overlap */
    assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "},"
                               "\"b\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(8, 12) "}}",
                               12, msg, sizeof(msg)),
                     CHEX_MODEL_OK);
    /* an empty tensor occupies no bytes, even at an offset inside another */
    assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 8) "},"
                               "\"z\":{\"dtype\":\"F16\",\"shape\":[3,0]," OFFS(4, 4) "}}",
                               8, msg, sizeof(msg)),
                     CHEX_MODEL_OK);
}

typedef struct {
    const char *hdr;
    size_t dlen;
    chex_model_err code;
    const char *want1, *want2; /* substrings the message must contain */
} bad_case;

#define T1(x) "{\"x\":" x "}"
static const bad_case bad[] = {
    /* header itself */
    {"{\"a\":", 0, CHEX_MODEL_ERR_FORMAT, "not valid JSON", NULL},
    {"[1,2]", 0, CHEX_MODEL_ERR_FORMAT, "not a JSON object", NULL},
    {"\"str\"", 0, CHEX_MODEL_ERR_FORMAT, "not valid JSON", NULL},
    {"{\"a\":1} trailing", 0, CHEX_MODEL_ERR_FORMAT, "not valid JSON", NULL},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(4, 8) "}}",
     8, CHEX_MODEL_ERR_FORMAT, "duplicate object key", "\"a\""},
    /* entry */
    {"{\"x\":5}", 0, CHEX_MODEL_ERR_FORMAT, "'x'", "not an object"},
    {"{\"x\":[]}", 0, CHEX_MODEL_ERR_FORMAT, "'x'", "not an object"},
    {T1("{\"shape\":[1]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'", "missing \"dtype\""},
    {T1("{\"dtype\":\"F32\"," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "missing \"shape\""},
    {T1("{\"dtype\":\"F32\",\"shape\":[1]}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "missing \"data_offsets\""},
    {T1("{\"dtype\":32,\"shape\":[1]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "\"dtype\" is not a string"},
    {T1("{\"dtype\":\"F32\",\"shape\":\"1\"," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "\"shape\" is not an array"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1.0]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "shape[0] is not an integer"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1,\"2\"]," OFFS(0, 8) "}"), 8, CHEX_MODEL_ERR_FORMAT,
     "'x'", "shape[1] is not an integer"},
    /* dtype */
    {T1("{\"dtype\":\"I64\",\"shape\":[1]," OFFS(0, 8) "}"), 8, CHEX_MODEL_ERR_DTYPE,
     "tensor 'x': dtype I64 not supported (F32, F16, BF16, I8)", NULL},
    {T1("{\"dtype\":\"f32\",\"shape\":[1]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_DTYPE, "'x'",
     "dtype f32"},
    {T1("{\"dtype\":\"F64\",\"shape\":[1]," OFFS(0, 8) "}"), 8, CHEX_MODEL_ERR_DTYPE, "'x'",
     "F64"},
    /* shape */
    {T1("{\"dtype\":\"F32\",\"shape\":[-1]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT, "'x'",
     "negative"},
    {T1("{\"dtype\":\"F32\",\"shape\":[4294967296]," OFFS(0, 4) "}"), 4, CHEX_MODEL_ERR_FORMAT,
     "'x'", "too large"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1]," OFFS(0, 4) "}"), 4,
     CHEX_MODEL_ERR_FORMAT, "'x'", "more than 8"},
    {T1("{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647]," OFFS(0, 4) "}"), 4,
     CHEX_MODEL_ERR_FORMAT, "'x'", "overflows"},
    /* offsets */
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}"), 4, CHEX_MODEL_ERR_FORMAT,
     "'x'", "not [begin, end]"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}"), 8, CHEX_MODEL_ERR_FORMAT,
     "'x'", "not [begin, end]"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"b\":0}}"), 4,
     CHEX_MODEL_ERR_FORMAT, "'x'", "not [begin, end]"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}"), 4,
     CHEX_MODEL_ERR_FORMAT, "'x'", "not [begin, end]"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}"), 4,
     CHEX_MODEL_ERR_FORMAT, "'x'", "not [begin, end]"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}"), 4, CHEX_MODEL_ERR_FORMAT,
     "'x'", "negative"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1]," OFFS(8, 4) "}"), 8, CHEX_MODEL_ERR_FORMAT, "'x'",
     "begin 8 is after end 4"},
    {T1("{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 8) "}"), 7, CHEX_MODEL_ERR_FORMAT, "'x'",
     "beyond the data section (7 bytes)"},
    {T1("{\"dtype\":\"F32\",\"shape\":[1]," OFFS(9223372036854775800, 9223372036854775804) "}"),
     4, CHEX_MODEL_ERR_FORMAT, "'x'", "beyond the data section"},
    {T1("{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 4) "}"), 8, CHEX_MODEL_ERR_FORMAT, "'x'",
     "span 4 bytes but shape and dtype need 8"},
    {T1("{\"dtype\":\"F16\",\"shape\":[2]," OFFS(0, 8) "}"), 8, CHEX_MODEL_ERR_FORMAT, "'x'",
     "need 4"},
    {T1("{\"dtype\":\"BF16\",\"shape\":[0]," OFFS(0, 2) "}"), 8, CHEX_MODEL_ERR_FORMAT, "'x'",
     "need 0"},
    /* overlap, in either order in the header, and a tensor inside another */
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 8) "},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(4, 12) "}}",
     12, CHEX_MODEL_ERR_FORMAT, "'a' [0, 8) and 'b' [4, 12) overlap", NULL},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(4, 12) "},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 8) "}}",
     12, CHEX_MODEL_ERR_FORMAT, "'a' [0, 8) and 'b' [4, 12) overlap", NULL},
    {"{\"big\":{\"dtype\":\"F32\",\"shape\":[4]," OFFS(0, 16) "},"
     "\"mid\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(4, 8) "},"
     "\"end\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(12, 16) "}}",
     16, CHEX_MODEL_ERR_FORMAT, "'big'", "'mid'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "},"
     "\"b\":{\"dtype\":\"BF16\",\"shape\":[2]," OFFS(0, 4) "}}",
     4, CHEX_MODEL_ERR_FORMAT, "'a'", "'b'"},
    /* metadata */
    {"{\"__metadata__\":[\"a\"]}", 0, CHEX_MODEL_ERR_METADATA, "__metadata__",
     "not an object"},
    {"{\"__metadata__\":\"name\"}", 0, CHEX_MODEL_ERR_METADATA, "__metadata__",
     "not an object"},
    {"{\"__metadata__\":{\"name\":\"x\",\"size\":224}}", 0, CHEX_MODEL_ERR_METADATA,
     "__metadata__ key 'size'", "not a string"},
    {"{\"__metadata__\":{\"labels\":[\"a\",\"b\"]}}", 0, CHEX_MODEL_ERR_METADATA,
     "key 'labels'", "not a string"},
    {"{\"__metadata__\":{\"demo\":null}}", 0, CHEX_MODEL_ERR_METADATA, "key 'demo'",
     "not a string"},
    {"{\"__metadata__\":{\"n\":\"a\\u0000b\"}}", 0, CHEX_MODEL_ERR_FORMAT, "not valid JSON",
     NULL},
    /* names */
    {"{\"\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "}}", 4, CHEX_MODEL_ERR_FORMAT,
     "empty name", NULL},
    {"{\"bad\\nname\":{\"dtype\":\"U8\",\"shape\":[1]," OFFS(0, 1) "}}", 1, CHEX_MODEL_ERR_DTYPE,
     "'bad?name'", "U8"},
};

static void test_bad_headers(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[512] = "";
        chex_model_err rc = parse_hdr(bad[i].hdr, bad[i].dlen, msg, sizeof(msg));
        if (rc != bad[i].code || !strstr(msg, bad[i].want1) ||
            (bad[i].want2 && !strstr(msg, bad[i].want2)) || strchr(msg, '\n')) {
            print_error("case %zu (%s): got %d '%s', want %d '%s' '%s'\n", i, bad[i].hdr, rc,
                        msg, bad[i].code, bad[i].want1, bad[i].want2 ? bad[i].want2 : "");
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void test_long_name(void **state)
{
    (void)state;
    char name[CHEX_ST_NAME_LEN + 1];
    char hdr[512];
    char msg[256];
    /* CHEX_ST_NAME_LEN - 1 characters fit */
    memset(name, 'n', CHEX_ST_NAME_LEN - 1);
    name[CHEX_ST_NAME_LEN - 1] = '\0';
    memcpy(name, "layer.", 6);
    snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "}}",
             name);
    assert_int_equal(parse_hdr(hdr, 4, msg, sizeof(msg)), CHEX_MODEL_OK);
    /* one more does not */
    memset(name, 'n', CHEX_ST_NAME_LEN);
    name[CHEX_ST_NAME_LEN] = '\0';
    memcpy(name, "layer.", 6);
    snprintf(hdr, sizeof(hdr), "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1]," OFFS(0, 4) "}}",
             name);
    assert_int_equal(parse_hdr(hdr, 4, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    assert_non_null(strstr(msg, "tensor 'layer.nnn"));
    assert_non_null(strstr(msg, "longer than 159"));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_header_length(void **state)
{
    (void)state;
    char msg[256];
    uint8_t b[64] = {0};
    /* shorter than the length prefix, including empty */
    for (size_t n = 0; n < 8; n++) {
        assert_int_equal(parse_raw(b, n, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
        assert_non_null(strstr(msg, "shorter than the 8-byte header length"));
    }
    put_le64(b, 0);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    assert_non_null(strstr(msg, "header length is 0"));
    put_le64(b, 9);
    memcpy(b + 8, "{}      ", 8);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    assert_non_null(strstr(msg, "header length 9 is beyond the end of the file (8 bytes"));
    put_le64(b, 100000001);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    assert_non_null(strstr(msg, "absurd"));
    put_le64(b, UINT64_MAX);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    assert_non_null(strstr(msg, "absurd"));
    put_le64(b, (uint64_t)1 << 63);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT);
    /* exactly len - 8 is fine */
    put_le64(b, 8);
    assert_int_equal(parse_raw(b, 16, msg, sizeof(msg)), CHEX_MODEL_OK);
    /* a NULL or zero-length msg buffer is allowed */
    assert_int_equal(parse_raw(b, 4, NULL, 0), CHEX_MODEL_ERR_FORMAT);
    msg[0] = 'Z';
    assert_int_equal(parse_raw(b, 4, msg, 0), CHEX_MODEL_ERR_FORMAT);
    assert_int_equal(msg[0], 'Z');
    /* a short msg buffer is truncated, still terminated */
    char tiny[6];
    assert_int_equal(parse_raw(b, 4, tiny, sizeof(tiny)), CHEX_MODEL_ERR_FORMAT);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

/* Every strict prefix of a valid file whose last tensor ends at the end of the
 * file is an error (never a crash or a read past len); the whole file parses. */
static void test_truncation(void **state)
{
    (void)state;
    const char *hdr = "{\"__metadata__\":{\"k\":\"v\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2]," OFFS(0, 8) "},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[3]," OFFS(8, 14) "},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,1]," OFFS(14, 16) "}}  ";
    size_t len;
    uint8_t *b = build(hdr, 16, &len);
    char msg[256];
    for (size_t n = 0; n < len; n++) {
        chex_model_err rc = parse_raw(b, n, msg, sizeof(msg));
        if (rc == CHEX_MODEL_OK)
            fail_msg("prefix of %zu of %zu bytes parsed", n, len);
    }
    assert_int_equal(parse_raw(b, len, msg, sizeof(msg)), CHEX_MODEL_OK);
    free(b);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e < CHEX_MODEL_ERR_COUNT; e++) {
        const char *s = chex_model_strerror((chex_model_err)e);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_null(strstr(s, "unknown"));
        for (int j = 0; j < e; j++)
            assert_string_not_equal(s, chex_model_strerror((chex_model_err)j));
    }
    assert_string_equal(chex_model_strerror(CHEX_MODEL_OK), "ok");
    assert_string_equal(chex_model_strerror(CHEX_MODEL_ERR_COUNT), "unknown model error");
    assert_string_equal(chex_model_strerror((chex_model_err)-1), "unknown model error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),         cmocka_unit_test(test_no_metadata_no_tensors),
        cmocka_unit_test(test_bad_headers),   cmocka_unit_test(test_long_name),
        cmocka_unit_test(test_header_length), cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
