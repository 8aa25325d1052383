/* server/oip.c: infer requests as JSON and through the binary data extension
 * (images and FP32 tensors), every malformed field named in the message, the
 * answers (JSON and binary tails), metadata and routes. Every request body is
 * placed right before a PROT_NONE page, truncated at every length too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/oip.h"
#include "tests/unit/helpers/guard.h"

static const char *const labels3[] = {"Atelectasis", "Cardiomegaly", "Effusion"};
static const chex_oip_model model = {"chexnet-demo", "1", "chexd_densenet121", 1, 2, 3, labels3,
                                     "0123abcd"};

enum { MAXIMG = 8 };
static chex_oip_bytes images[MAXIMG];
static uint8_t scratch[4096];
static const chex_oip_buffers bufs = {images, MAXIMG, scratch, sizeof scratch};

/* Parses body[0..len) placed before a guard page. */
static chex_oip_err parse_guarded(chex_oip_request *r, const void *body, size_t len, long long hl,
                                  char *msg, size_t msglen)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, body, len), 0);
    chex_oip_err e = chex_oip_parse_infer(r, g.data, g.len, hl, &model, &bufs, msg, msglen);
    chex_guard_free(&g);
    return e;
}

static chex_oip_err parse_str(chex_oip_request *r, const char *json, char *msg, size_t msglen)
{
    return parse_guarded(r, json, strlen(json), -1, msg, msglen);
}

static void test_json_images(void **state)
{
    (void)state;
    chex_oip_request r;
    char msg[256];
    /* "hello" and "PNG!x" in base64; the second one URL-safe and unpadded */
    const char *req = "{\"id\":\"req-7\",\"inputs\":[{\"name\":\"image\",\"shape\":[2],"
                      "\"datatype\":\"BYTES\",\"parameters\":{\"content_type\":\"base64\"},"
                      "\"data\":[\"aGVsbG8=\",\"UE5HIXg\"]}]}";
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, strlen(req), -1, &model,
                                          &bufs, msg, sizeof msg),
                     CHEX_OIP_OK);
    assert_int_equal(r.kind, CHEX_OIP_IN_IMAGES);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.id, "req-7");
    assert_true(r.has_id);
    assert_int_equal(r.images[0].len, 5);
    assert_memory_equal(r.images[0].data, "hello", 5);
    assert_int_equal(r.images[1].len, 5);
    assert_memory_equal(r.images[1].data, "PNG!x", 5);
    assert_int_equal(r.out_count, 2);
    assert_int_equal(r.out_order[0], CHEX_OIP_OUT_PROBABILITIES);
    assert_int_equal(r.out_order[1], CHEX_OIP_OUT_LABELS);
    assert_false(r.out_binary[0]);
    assert_false(r.out_binary[1]);
    assert_int_equal(parse_str(&r, req, msg, sizeof msg), CHEX_OIP_OK);
}

/* Base64 of in[0..n) into out (NUL-terminated); url: URL-safe alphabet, no
 * padding; slash_escape: each '/' written as JSON's "\/". */
static size_t b64_encode(char *out, const uint8_t *in, size_t n, int url, int slash_escape)
{
    const char *std = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *safe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *a = url ? safe : std;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        int chars = i + 2 < n ? 4 : i + 1 < n ? 3 : 2;
        for (int k = 0; k < 4; k++) {
            char c = k < chars ? a[(v >> (18 - 6 * k)) & 63] : '=';
            if (c == '=' && url)
                break;
            if (c == '/' && slash_escape)
                out[o++] = '\\';
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return o;
}

/* Images of a few KB (decoded from the body before jansson runs), next to a
 * short one and one with "\/" escapes (left to jansson): each decodes to its
 * bytes, under a guard page and truncated near every string's end. */
static void test_json_long_images(void **state)
{
    (void)state;
    enum { N1 = 3000, N2 = 3001, N3 = 2999 };
    static uint8_t src[N1 + N2 + N3 + 5];
    static char req[20000], e1[5000], e2[5000], e3[5000];
    static uint8_t big[16384];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    b64_encode(e1, src, N1, 0, 0);
    b64_encode(e2, src + N1, N2, 1, 0);
    b64_encode(e3, src + N1 + N2, N3, 0, 1);
    assert_non_null(strstr(e3, "\\/"));
    int n = snprintf(req, sizeof req,
                     "{\"inputs\":[{\"name\":\"image\",\"shape\":[4],\"datatype\":\"BYTES\","
                     "\"parameters\":{\"content_type\":\"base64\"},"
                     "\"data\":[\"%s\", [\"%s\"], \"aGVsbG8=\", \"%s\"]}],\"id\":\"x\"}",
                     e1, e2, e3);
    assert_true(n > 0 && (size_t)n < sizeof req);
    chex_oip_bytes im[MAXIMG];
    const chex_oip_buffers b = {im, MAXIMG, big, sizeof big};
    chex_oip_request r;
    char msg[256];
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, req, (size_t)n), 0);
    assert_int_equal(chex_oip_parse_infer(&r, g.data, g.len, -1, &model, &b, msg, sizeof msg),
                     CHEX_OIP_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.images[0].len, N1);
    assert_memory_equal(r.images[0].data, src, N1);
    assert_int_equal(r.images[1].len, N2);
    assert_memory_equal(r.images[1].data, src + N1, N2);
    assert_int_equal(r.images[2].len, 5);
    assert_memory_equal(r.images[2].data, "hello", 5);
    assert_int_equal(r.images[3].len, N3);
    assert_memory_equal(r.images[3].data, src + N1 + N2, N3);
    const chex_oip_buffers exact = {im, MAXIMG, big, chex_oip_scratch_bound((size_t)n, &model, 1)};
    assert_true(exact.scratch_len <= sizeof big);
    assert_int_equal(chex_oip_parse_infer(&r, g.data, g.len, -1, &model, &exact, msg, sizeof msg),
                     CHEX_OIP_OK);
    chex_guard_free(&g);
    /* Cut inside or right after each long string: an error, nothing read past the end. */
    const char *ends[] = {e1, e2, e3};
    for (int k = 0; k < 3; k++) {
        size_t at = (size_t)(strstr(req, ends[k]) - req) + strlen(ends[k]);
        for (size_t cut = at - 8; cut <= at + 3; cut++) {
            assert_int_equal(chex_guard_alloc(&g, req, cut), 0);
            assert_int_not_equal(
                chex_oip_parse_infer(&r, g.data, g.len, -1, &model, &b, msg, sizeof msg),
                CHEX_OIP_OK);
            chex_guard_free(&g);
        }
    }
    /* A long string with one bad character is still named invalid base64. */
    e1[1500] = '!';
    n = snprintf(req, sizeof req,
                 "{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                 "\"parameters\":{\"content_type\":\"base64\"},\"data\":[\"%s\"]}]}",
                 e1);
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, (size_t)n, -1, &model, &b,
                                          msg, sizeof msg),
                     CHEX_OIP_EREQUEST);
    assert_non_null(strstr(msg, "data[0] is not valid base64"));
    /* Decoded images past the scratch: 413's error, from either path. */
    e1[1500] = 'A';
    const chex_oip_buffers small = {im, MAXIMG, big, 2000};
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, (size_t)n, -1, &model,
                                          &small, msg, sizeof msg),
                     CHEX_OIP_ETOOBIG);
    /* A long id is refused, not read as an image's marker. */
    n = snprintf(req, sizeof req,
                 "{\"id\":\"%s\",\"inputs\":[{\"name\":\"image\",\"shape\":[1],"
                 "\"datatype\":\"BYTES\",\"parameters\":{\"content_type\":\"base64\"},"
                 "\"data\":[\"aGVsbG8=\"]}]}",
                 e1);
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, (size_t)n, -1, &model, &b,
                                          msg, sizeof msg),
                     CHEX_OIP_EREQUEST);
    assert_non_null(strstr(msg, "id is longer"));
}

/* JSON header + tail: image BYTES [2] as length-prefixed elements. */
static size_t binary_images(uint8_t *out, const char *extra_outputs, long long *hl)
{
    char head[512];
    size_t tail = 4 + 3 + 4 + 4;
    int n = snprintf(head, sizeof head,
                     "{\"inputs\":[{\"name\":\"image\",\"shape\":[2],\"datatype\":\"BYTES\","
                     "\"parameters\":{\"binary_data_size\":%zu}}]%s}",
                     tail, extra_outputs);
    memcpy(out, head, (size_t)n);
    uint8_t *p = out + n;
    memcpy(p, "\x03\0\0\0abc\x04\0\0\0wxyz", tail);
    *hl = n;
    return (size_t)n + tail;
}

static void test_binary_images(void **state)
{
    (void)state;
    uint8_t body[600];
    long long hl;
    size_t len = binary_images(body, ",\"parameters\":{\"binary_data_output\":true},"
                                     "\"outputs\":[{\"name\":\"labels\",\"parameters\":"
                                     "{\"binary_data\":false}},{\"name\":\"probabilities\"}]",
                               &hl);
    chex_oip_request r;
    char msg[256];
    assert_int_equal(chex_oip_parse_infer(&r, body, len, hl, &model, &bufs, msg, sizeof msg),
                     CHEX_OIP_OK);
    assert_int_equal(r.n, 2);
    assert_false(r.has_id);
    /* no copy: the elements point into the body */
    assert_ptr_equal(r.images[0].data, body + hl + 4);
    assert_int_equal(r.images[0].len, 3);
    assert_ptr_equal(r.images[1].data, body + hl + 11);
    assert_int_equal(r.images[1].len, 4);
    assert_int_equal(r.out_count, 2);
    assert_int_equal(r.out_order[0], CHEX_OIP_OUT_LABELS);
    assert_int_equal(r.out_order[1], CHEX_OIP_OUT_PROBABILITIES);
    assert_false(r.out_binary[CHEX_OIP_OUT_LABELS]);
    assert_true(r.out_binary[CHEX_OIP_OUT_PROBABILITIES]);
    assert_int_equal(parse_guarded(&r, body, len, hl, msg, sizeof msg), CHEX_OIP_OK);
}

/* Every prefix of a valid binary request, with the header length kept when it
 * still fits: an error each time, never a read past the end. */
static void test_truncated(void **state)
{
    (void)state;
    uint8_t body[600];
    long long hl;
    size_t len = binary_images(body, "", &hl);
    chex_oip_request r;
    char msg[256];
    for (size_t cut = 0; cut < len; cut++) {
        long long h = hl <= (long long)cut ? hl : (long long)cut;
        assert_int_not_equal(parse_guarded(&r, body, cut, h, msg, sizeof msg), CHEX_OIP_OK);
        assert_true(strlen(msg) > 0);
        assert_int_not_equal(parse_guarded(&r, body, cut, -1, msg, sizeof msg), CHEX_OIP_OK);
    }
    assert_int_equal(parse_guarded(&r, body, len, hl, msg, sizeof msg), CHEX_OIP_OK);
}

static void test_tensor_json_and_binary(void **state)
{
    (void)state;
    chex_oip_request r;
    char msg[256];
    /* model: C=1, S=2; two tensors, nested data */
    const char *req = "{\"inputs\":[{\"name\":\"input\",\"shape\":[2,1,2,2],\"datatype\":\"FP32\","
                      "\"data\":[[[[1,2],[3,4.5]]],[[[-1,0],[0.25,1e-3]]]]}]}";
    assert_int_equal(parse_str(&r, req, msg, sizeof msg), CHEX_OIP_OK);
    assert_int_equal(r.kind, CHEX_OIP_IN_TENSOR);
    assert_int_equal(r.n, 2);
    const float want[8] = {1, 2, 3, 4.5f, -1, 0, 0.25f, 1e-3f};
    for (int i = 0; i < 8; i++)
        assert_true(r.tensor[i] == want[i]);

    char head[256];
    int n = snprintf(head, sizeof head,
                     "{\"inputs\":[{\"name\":\"input\",\"shape\":[2,1,2,2],\"datatype\":\"FP32\","
                     "\"parameters\":{\"binary_data_size\":32}}]}");
    uint8_t body[300];
    memcpy(body, head, (size_t)n);
    for (int i = 0; i < 8; i++) { /* little-endian whatever the host */
        uint32_t u;
        memcpy(&u, &want[i], 4);
        for (int s = 0; s < 4; s++)
            body[n + 4 * i + s] = (uint8_t)(u >> (8 * s));
    }
    assert_int_equal(parse_guarded(&r, body, (size_t)n + 32, n, msg, sizeof msg), CHEX_OIP_OK);
    for (int i = 0; i < 8; i++)
        assert_true(r.tensor[i] == want[i]);
    /* a NaN in the tail */
    memcpy(body + n + 8, "\0\0\xc0\x7f", 4);
    assert_int_equal(parse_guarded(&r, body, (size_t)n + 32, n, msg, sizeof msg),
                     CHEX_OIP_EREQUEST);
    assert_non_null(strstr(msg, "not a finite FP32"));
}

static void expect_error(const char *req, chex_oip_err e, const char *needle)
{
    chex_oip_request r;
    char msg[256];
    chex_oip_err got = parse_str(&r, req, msg, sizeof msg);
    if (got != e || !strstr(msg, needle))
        fail_msg("request %s\n  gave %d '%s', expected %d '...%s...'", req, got, msg, e, needle);
    assert_null(r.images);
    assert_null(r.tensor);
}

#define IMG_IN(shape, dt, extra) \
    "{\"inputs\":[{\"name\":\"image\",\"shape\":" shape ",\"datatype\":\"" dt "\"" extra "}]}"
#define B64 ",\"parameters\":{\"content_type\":\"base64\"}"

static void test_errors_name_the_field(void **state)
{
    (void)state;
    expect_error("not json", CHEX_OIP_EREQUEST, "not valid JSON");
    expect_error("[1]", CHEX_OIP_EREQUEST, "not a JSON object");
    expect_error("{}", CHEX_OIP_EREQUEST, "inputs");
    expect_error("{\"inputs\":[]}", CHEX_OIP_EREQUEST, "inputs");
    expect_error("{\"id\":5,\"inputs\":[]}", CHEX_OIP_EREQUEST, "id is not a string");
    expect_error(IMG_IN("[1]", "FP32", B64 ",\"data\":[\"aGk=\"]"), CHEX_OIP_EREQUEST,
                 "input 'image': datatype FP32, expected BYTES");
    expect_error(IMG_IN("[1,2]", "BYTES", B64 ",\"data\":[\"aGk=\"]"), CHEX_OIP_EREQUEST,
                 "input 'image': shape must be [N]");
    expect_error(IMG_IN("[2]", "BYTES", B64 ",\"data\":[\"aGk=\"]"), CHEX_OIP_EREQUEST,
                 "input 'image': data holds 1 elements, shape [2] needs 2");
    expect_error(IMG_IN("[1]", "BYTES", ",\"data\":[\"aGk=\"]"), CHEX_OIP_EREQUEST,
                 "content_type \"base64\"");
    expect_error(IMG_IN("[1]", "BYTES", B64 ",\"data\":[\"a*k=\"]"), CHEX_OIP_EREQUEST,
                 "input 'image': data[0] is not valid base64");
    expect_error(IMG_IN("[1]", "BYTES", B64 ",\"data\":[7]"), CHEX_OIP_EREQUEST,
                 "input 'image': data[0] is not a base64 string");
    expect_error(IMG_IN("[1]", "BYTES", B64 ",\"data\":[\"\"]"), CHEX_OIP_EREQUEST,
                 "element 0 is empty");
    expect_error(IMG_IN("[9]", "BYTES", B64 ",\"data\":[]"), CHEX_OIP_ETOOBIG,
                 "9 images, at most 8");
    expect_error(IMG_IN("[1]", "BYTES", ""), CHEX_OIP_EREQUEST,
                 "neither data nor parameters.binary_data_size");
    expect_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":4}"),
                 CHEX_OIP_EREQUEST, "needs the Inference-Header-Content-Length header");
    expect_error("{\"inputs\":[{\"name\":\"pixels\",\"shape\":[1],\"datatype\":\"BYTES\","
                 "\"data\":[\"aGk=\"]}]}",
                 CHEX_OIP_EREQUEST, "unknown input 'pixels'");
    expect_error("{\"inputs\":[{\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[]}]}",
                 CHEX_OIP_EREQUEST, "inputs[0].name");
    expect_error("{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[]}]}",
                 CHEX_OIP_EREQUEST, "input 'image': shape");
    expect_error("{\"inputs\":[{\"name\":\"image\",\"shape\":[-1],\"datatype\":\"BYTES\","
                 "\"data\":[]}]}",
                 CHEX_OIP_EREQUEST, "input 'image': shape[0]");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,4]}]}",
                 CHEX_OIP_EREQUEST, "input 'input': shape must be [N, 1, 2, 2]");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP16\","
                 "\"data\":[1,2,3,4]}]}",
                 CHEX_OIP_EREQUEST, "input 'input': datatype FP16, expected FP32");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3]}]}",
                 CHEX_OIP_EREQUEST, "input 'input': data holds 3 values, shape [1, 1, 2, 2] needs 4");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,\"x\"]}]}",
                 CHEX_OIP_EREQUEST, "input 'input': data[3] is not a finite FP32");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,1e300]}]}",
                 CHEX_OIP_EREQUEST, "data[3] is not a finite FP32");
    expect_error("{\"inputs\":[" "{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,4]},{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                 "\"data\":[\"aGk=\"]}]}",
                 CHEX_OIP_EREQUEST, "send one input");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,4]}],\"outputs\":[{\"name\":\"logits\"}]}",
                 CHEX_OIP_EREQUEST, "outputs[0]: unknown output 'logits'");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,4]}],\"outputs\":[{\"name\":\"labels\"},{\"name\":\"labels\"}]}",
                 CHEX_OIP_EREQUEST, "outputs[1]: output 'labels' repeated");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                 "\"data\":[1,2,3,4]}],\"parameters\":{\"binary_data_output\":1}}",
                 CHEX_OIP_EREQUEST, "parameters.binary_data_output is not a boolean");
}

static void expect_binary_error(const char *head, const void *tail, size_t tail_len,
                                const char *needle)
{
    uint8_t body[512];
    size_t hl = strlen(head);
    memcpy(body, head, hl);
    memcpy(body + hl, tail, tail_len);
    chex_oip_request r;
    char msg[256];
    chex_oip_err e = parse_guarded(&r, body, hl + tail_len, (long long)hl, msg, sizeof msg);
    if (e != CHEX_OIP_EREQUEST || !strstr(msg, needle))
        fail_msg("binary request %s\n  gave %d '%s', expected '...%s...'", head, e, msg, needle);
}

static void test_binary_errors(void **state)
{
    (void)state;
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":100}"),
                        "\x03\0\0\0abc", 7, "input 'image': binary_data_size 100 overruns the body");
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":7}"),
                        "\x09\0\0\0abc", 7, "element 0's length 9 overruns binary_data_size");
    expect_binary_error(IMG_IN("[2]", "BYTES", ",\"parameters\":{\"binary_data_size\":7}"),
                        "\x03\0\0\0abc", 7, "binary data holds 1 elements, shape [2] needs 2");
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":8}"),
                        "\x03\0\0\0abcd", 8, "1 bytes of binary data after 1 elements");
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":7}"),
                        "\x03\0\0\0abcZZ", 9, "2 bytes after the JSON header are not claimed");
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":-1}"), "", 0,
                        "binary_data_size is not a non-negative integer");
    expect_binary_error(IMG_IN("[1]", "BYTES", ",\"parameters\":{\"binary_data_size\":4},"
                                               "\"data\":[\"aGk=\"]"),
                        "abcd", 4, "has both data and parameters.binary_data_size");
    expect_binary_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                        "\"parameters\":{\"binary_data_size\":12}}]}",
                        "0123456789ab", 12,
                        "input 'input': binary_data_size 12, shape [1, 1, 2, 2] needs 16 bytes");

    chex_oip_request r;
    char msg[256];
    const char *j = "{\"inputs\":[]}";
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)j, strlen(j), 100, &model, &bufs,
                                          msg, sizeof msg),
                     CHEX_OIP_EREQUEST);
    assert_non_null(strstr(msg, "Inference-Header-Content-Length 100 exceeds"));
    assert_int_equal(chex_oip_header_length("12", 20, msg, sizeof msg), 12);
    assert_int_equal(chex_oip_header_length("21", 20, msg, sizeof msg), -1);
    assert_int_equal(chex_oip_header_length("1x", 20, msg, sizeof msg), -1);
    assert_int_equal(chex_oip_header_length("", 20, msg, sizeof msg), -1);
    assert_int_equal(chex_oip_header_length("99999999999999999999999", 20, msg, sizeof msg), -1);
}

static void test_scratch_too_small(void **state)
{
    (void)state;
    uint8_t small[3];
    const chex_oip_buffers b = {images, MAXIMG, small, sizeof small};
    chex_oip_request r;
    char msg[256];
    const char *req = IMG_IN("[1]", "BYTES", B64 ",\"data\":[\"aGVsbG8=\"]");
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, strlen(req), -1, &model, &b,
                                          msg, sizeof msg),
                     CHEX_OIP_ETOOBIG);
    /* The bound suffices, even for the densest tensor JSON and a scratch
     * that needs padding to align its floats. */
    char tj[512];
    int n = snprintf(tj, sizeof tj, "%s", "{\"inputs\":[{\"name\":\"input\",\"shape\":[8,1,2,2],"
                                          "\"datatype\":\"FP32\",\"data\":[0");
    for (int i = 1; i < 32; i++)
        n += snprintf(tj + n, sizeof tj - (size_t)n, ",0");
    n += snprintf(tj + n, sizeof tj - (size_t)n, "]}]}");
    static uint8_t room[4096];
    size_t bound = chex_oip_scratch_bound((size_t)n, &model, MAXIMG);
    const chex_oip_buffers tb = {images, MAXIMG, room + 1, bound};
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)tj, (size_t)n, -1, &model, &tb,
                                          msg, sizeof msg),
                     CHEX_OIP_OK);
    assert_int_equal(r.n, 8);
    const chex_oip_buffers ib = {images, MAXIMG, room, chex_oip_scratch_bound(strlen(req), &model,
                                                                             MAXIMG)};
    assert_int_equal(chex_oip_parse_infer(&r, (const uint8_t *)req, strlen(req), -1, &model, &ib,
                                          msg, sizeof msg),
                     CHEX_OIP_OK);
}

static void test_answer_json(void **state)
{
    (void)state;
    chex_oip_request r;
    memset(&r, 0, sizeof r);
    strcpy(r.id, "abc");
    r.has_id = 1;
    r.n = 2;
    r.out_count = 2;
    r.out_order[0] = CHEX_OIP_OUT_PROBABILITIES;
    r.out_order[1] = CHEX_OIP_OUT_LABELS;
    const float probs[6] = {0.1f, 0.25f, 0.333333343f, 0.9f, 1e-7f, 0.5f};
    chex_oip_answer a;
    assert_int_equal(chex_oip_build_infer(&a, &model, &r, probs), CHEX_OIP_OK);
    assert_int_equal(a.header_len, -1);
    json_error_t err;
    json_t *j = json_loadb(a.body, a.len, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "model_name")), "chexnet-demo");
    assert_string_equal(json_string_value(json_object_get(j, "model_version")), "1");
    assert_string_equal(json_string_value(json_object_get(j, "id")), "abc");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "parameters"), "sha256")), "0123abcd");
    json_t *outs = json_object_get(j, "outputs");
    assert_int_equal(json_array_size(outs), 2);
    json_t *p = json_array_get(outs, 0);
    assert_string_equal(json_string_value(json_object_get(p, "name")), "probabilities");
    assert_string_equal(json_string_value(json_object_get(p, "datatype")), "FP32");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(p, "shape"), 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(p, "shape"), 1)), 3);
    for (int i = 0; i < 6; i++) /* round-trips to the same float */
        assert_true((float)json_number_value(json_array_get(json_object_get(p, "data"), (size_t)i)) ==
                    probs[i]);
    json_t *l = json_array_get(outs, 1);
    assert_string_equal(json_string_value(json_object_get(l, "datatype")), "BYTES");
    assert_string_equal(json_string_value(json_array_get(json_object_get(l, "data"), 2)),
                        "Effusion");
    json_decref(j);
    free(a.body);
}

static void test_answer_binary(void **state)
{
    (void)state;
    chex_oip_request r;
    memset(&r, 0, sizeof r);
    r.n = 1;
    r.out_count = 2;
    r.out_order[0] = CHEX_OIP_OUT_LABELS;
    r.out_order[1] = CHEX_OIP_OUT_PROBABILITIES;
    r.out_binary[CHEX_OIP_OUT_LABELS] = 1;
    r.out_binary[CHEX_OIP_OUT_PROBABILITIES] = 1;
    const float probs[3] = {0.5f, 0.25f, 1.0f};
    chex_oip_answer a;
    assert_int_equal(chex_oip_build_infer(&a, &model, &r, probs), CHEX_OIP_OK);
    assert_true(a.header_len > 0);
    json_error_t err;
    json_t *j = json_loadb(a.body, (size_t)a.header_len, 0, &err);
    assert_non_null(j);
    assert_null(json_object_get(j, "id"));
    json_t *outs = json_object_get(j, "outputs");
    size_t lsz = (size_t)json_integer_value(
        json_object_get(json_object_get(json_array_get(outs, 0), "parameters"), "binary_data_size"));
    size_t psz = (size_t)json_integer_value(
        json_object_get(json_object_get(json_array_get(outs, 1), "parameters"), "binary_data_size"));
    assert_null(json_object_get(json_array_get(outs, 1), "data"));
    assert_int_equal(lsz, 3 * 4 + strlen("AtelectasisCardiomegalyEffusion"));
    assert_int_equal(psz, 12);
    assert_int_equal(a.len, (size_t)a.header_len + lsz + psz);
    const uint8_t *t = (const uint8_t *)a.body + a.header_len;
    assert_memory_equal(t, "\x0b\0\0\0" "Atelectasis", 15);
    assert_memory_equal(t + lsz, "\0\0\0\x3f\0\0\x80\x3e\0\0\x80\x3f", 12);
    json_decref(j);
    free(a.body);
}

static void test_metadata(void **state)
{
    (void)state;
    char *s = chex_oip_server_metadata("chexd", "0.1.0");
    assert_string_equal(s, "{\"name\":\"chexd\",\"version\":\"0.1.0\",\"extensions\":"
                           "[\"binary_tensor_data\"]}");
    free(s);
    s = chex_oip_model_metadata(&model);
    assert_string_equal(
        s, "{\"name\":\"chexnet-demo\",\"versions\":[\"1\"],\"platform\":\"chexd_densenet121\","
           "\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"shape\":[-1]},"
           "{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[-1,1,2,2]}],"
           "\"outputs\":[{\"name\":\"probabilities\",\"datatype\":\"FP32\",\"shape\":[-1,3]},"
           "{\"name\":\"labels\",\"datatype\":\"BYTES\",\"shape\":[3]}]}");
    free(s);
    s = chex_oip_error_json("input 'x': \"bad\"");
    assert_string_equal(s, "{\"error\":\"input 'x': \\\"bad\\\"\"}");
    free(s);
    assert_string_equal(chex_oip_strerror(CHEX_OIP_ETOOBIG), "inference request too large");
    assert_string_equal(chex_oip_strerror((chex_oip_err)99), "unknown error");
}

static void expect_path(const char *path, chex_oip_route route, const char *m, const char *v)
{
    chex_oip_path p;
    chex_oip_path_parse(&p, path);
    if (p.route != route)
        fail_msg("%s: route %d, expected %d", path, p.route, route);
    if (route == CHEX_OIP_ROUTE_NONE || route == CHEX_OIP_ROUTE_SERVER)
        return;
    assert_int_equal(p.model_len, strlen(m));
    assert_memory_equal(p.model, m, p.model_len);
    if (!v) {
        assert_null(p.version);
    } else {
        assert_int_equal(p.version_len, strlen(v));
        assert_memory_equal(p.version, v, p.version_len);
    }
}

static void test_paths(void **state)
{
    (void)state;
    expect_path("/v2", CHEX_OIP_ROUTE_SERVER, NULL, NULL);
    expect_path("/v2/", CHEX_OIP_ROUTE_SERVER, NULL, NULL);
    expect_path("/v2/health/ready", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m", CHEX_OIP_ROUTE_MODEL, "m", NULL);
    expect_path("/v2/models/m/ready", CHEX_OIP_ROUTE_READY, "m", NULL);
    expect_path("/v2/models/m/infer", CHEX_OIP_ROUTE_INFER, "m", NULL);
    expect_path("/v2/models/m/versions/1", CHEX_OIP_ROUTE_MODEL, "m", "1");
    expect_path("/v2/models/m/versions/1/ready", CHEX_OIP_ROUTE_READY, "m", "1");
    expect_path("/v2/models/m/versions/ab12/infer", CHEX_OIP_ROUTE_INFER, "m", "ab12");
    expect_path("/v2/models/ready", CHEX_OIP_ROUTE_MODEL, "ready", NULL);
    expect_path("/v2/models/", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/other", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/versions", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/versions/1/x", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/x/1/infer", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v2/models/m/versions/1/infer/x", CHEX_OIP_ROUTE_NONE, NULL, NULL);
    expect_path("/v1/predict", CHEX_OIP_ROUTE_NONE, NULL, NULL);

    chex_oip_path p;
    chex_oip_path_parse(&p, "/v2/models/chexnet-demo/versions/1/infer");
    assert_true(chex_oip_path_matches(&p, &model));
    chex_oip_path_parse(&p, "/v2/models/chexnet-demo/infer");
    assert_true(chex_oip_path_matches(&p, &model));
    chex_oip_path_parse(&p, "/v2/models/chexnet-demo/versions/2/infer");
    assert_false(chex_oip_path_matches(&p, &model));
    chex_oip_path_parse(&p, "/v2/models/chexnet-dem/infer");
    assert_false(chex_oip_path_matches(&p, &model));
    chex_oip_path_parse(&p, "/v2/models/chexnet-demoX/infer");
    assert_false(chex_oip_path_matches(&p, &model));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_images),
        cmocka_unit_test(test_json_long_images),
        cmocka_unit_test(test_binary_images),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_tensor_json_and_binary),
        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_binary_errors),
        cmocka_unit_test(test_scratch_too_small),
        cmocka_unit_test(test_answer_json),
        cmocka_unit_test(test_answer_binary),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
