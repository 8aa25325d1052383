/* tests/unit/test_model_load.c - chex_model_load on crafted files: a valid
 * whole-size densenet121 (defaults, info, forward, sha256), then each kind of
 * bad file (missing / mis-shaped / unexpected tensor, inconsistent or
 * malformed metadata, truncation, bad offsets): the error code and a message
 * naming the tensor or key, and no model handed out. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/model.h"
#include "model/safetensors.h"
#include "model/sha256.h"
#include "tests/unit/helpers/guard.h"

#define MAXT 700
static chex_st_wtensor T[MAXT];
static char NAMES[MAXT][128];
static int NT;
static float *ZEROS;    /* shared data of every tensor but the classifier bias */
static float BIAS[64];  /* classifier.bias values */
static char PATH[64];

static const char *LABELS14 =
    "[\"Atelectasis\",\"Cardiomegaly\",\"Effusion\",\"Infiltration\",\"Mass\",\"Nodule\","
    "\"Pneumonia\",\"Pneumothorax\",\"Consolidation\",\"Edema\",\"Emphysema\",\"Fibrosis\","
    "\"Pleural_Thickening\",\"Hernia\"]";

static void add(const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    chex_st_wtensor *t = &T[NT];
    snprintf(NAMES[NT], sizeof(NAMES[NT]), "%s", name);
    t->name = NAMES[NT];
    t->ndim = ndim;
    int64_t s[4] = {a, b, c, d};
    for (int i = 0; i < ndim; i++)
        t->shape[i] = s[i];
    t->data = ZEROS;
    NT++;
}

static void add_bn(const char *prefix, int c)
{
    static const char *const p[4] = {"weight", "bias", "running_mean", "running_var"};
    char n[128];
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof(n), "%s.%s", prefix, p[i]);
        add(n, 1, c, 0, 0, 0);
    }
}

/* The torchvision densenet121 state_dict (without num_batches_tracked). */
static void build(int cin, int ncls)
{
    static const int blocks[4] = {6, 12, 24, 16};
    char n[128];
    NT = 0;
    add("features.conv0.weight", 4, 64, cin, 7, 7);
    add_bn("features.norm0", 64);
    int c = 64;
    for (int b = 0; b < 4; b++) {
        for (int l = 0; l < blocks[b]; l++) {
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.norm1", b + 1, l + 1);
            add_bn(n, c);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.conv1.weight", b + 1, l + 1);
            add(n, 4, 128, c, 1, 1);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.norm2", b + 1, l + 1);
            add_bn(n, 128);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.conv2.weight", b + 1, l + 1);
            add(n, 4, 32, 128, 3, 3);
            c += 32;
        }
        if (b < 3) {
            snprintf(n, sizeof(n), "features.transition%d.norm", b + 1);
            add_bn(n, c);
            snprintf(n, sizeof(n), "features.transition%d.conv.weight", b + 1);
            add(n, 4, c / 2, c, 1, 1);
            c /= 2;
        }
    }
    add_bn("features.norm5", c);
    add("classifier.weight", 2, ncls, 1024, 0, 0);
    add("classifier.bias", 1, ncls, 0, 0, 0);
    T[NT - 1].data = BIAS;
}

static chex_st_wtensor *find(const char *name)
{
    for (int i = 0; i < NT; i++)
        if (!strcmp(T[i].name, name))
            return &T[i];
    fail_msg("no tensor %s", name);
    return NULL;
}

static void drop(const char *name)
{
    chex_st_wtensor *t = find(name);
    *t = T[--NT];
}

/* Writes T with meta (NULL-terminated key/value list) and loads it. */
static chex_model_err load_meta(const char *const *meta, char *msg, size_t msglen,
                                chex_model **out)
{
    char wmsg[256];
    assert_int_equal(chex_st_write(PATH, T, NT, meta, wmsg, sizeof(wmsg)), CHEX_MODEL_OK);
    chex_model *m = NULL;
    chex_model_err e = chex_model_load(PATH, &m, msg, msglen);
    if (e)
        assert_null(m);
    if (out)
        *out = m;
    else
        chex_model_free(m);
    return e;
}

static chex_model_err load_std(char *msg, size_t msglen)
{
    const char *meta[] = {"labels", LABELS14, NULL};
    return load_meta(meta, msg, msglen, NULL);
}

static void expect(chex_model_err got, chex_model_err want, const char *msg, const char *needle)
{
    if (got != want)
        fail_msg("code %d (%s), expected %d; message: %s", got, chex_model_strerror(got), want,
                 msg);
    if (!strstr(msg, needle))
        fail_msg("message '%s' does not name '%s'", msg, needle);
}

static int setup(void **state)
{
    (void)state;
    ZEROS = calloc(512 * 1024, sizeof(float));
    snprintf(PATH, sizeof(PATH), "/tmp/chex-model-load-%d.safetensors", (int)getpid());
    for (int i = 0; i < 64; i++)
        BIAS[i] = (float)(i - 7) * 0.25f;
    build(3, 14);
    return ZEROS ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(ZEROS);
    unlink(PATH);
    return 0;
}

static int reset(void **state)
{
    (void)state;
    build(3, 14);
    return 0;
}

static void test_valid_defaults_and_forward(void **state)
{
    (void)state;
    char msg[256];
    chex_model *m;
    const char *meta[] = {"labels", LABELS14, NULL};
    assert_int_equal(load_meta(meta, msg, sizeof(msg), &m), CHEX_MODEL_OK);
    const chex_model_info *in = chex_model_info_get(m);
    assert_int_equal(in->num_labels, 14);
    assert_string_equal(in->labels[13], "Hernia");
    assert_int_equal(in->input_channels, 3);
    assert_int_equal(in->input_size, 224);
    assert_string_equal(in->preprocess, "resize256-crop224");
    assert_string_equal(in->architecture, "densenet121");
    assert_int_equal(in->demo, 0);
    assert_true(!strncmp(in->name, "chex-model-load-", 16));
    assert_true(fabsf(in->mean[0] - 0.485f) < 1e-6f && fabsf(in->std[2] - 0.225f) < 1e-6f);
    /* sha256 of the file's bytes */
    size_t len;
    uint8_t *bytes = chex_test_read_file(PATH, &len);
    assert_non_null(bytes);
    char hex[65];
    chex_sha256_hex(bytes, len, hex);
    free(bytes);
    assert_string_equal(in->sha256, hex);

    /* All-zero weights: the features are relu(0) = 0, so logits = bias. */
    chex_model_ws *ws;
    assert_int_equal(chex_model_ws_create(m, 2, &ws), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_max_batch(ws), 2);
    assert_null(chex_model_ws_features(ws, NULL, NULL, NULL));
    chex_model_view v;
    assert_int_equal(chex_model_ws_stage(ws, CHEX_STAGE_STEM, &v), CHEX_MODEL_ERR_ARG);
    float *x = calloc(3 * 224 * 224 * 3, sizeof(float)), logits[3 * 14], probs[3 * 14];
    assert_non_null(x);
    assert_int_equal(chex_model_forward(m, ws, x, 3, logits, probs), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_model_forward(m, ws, x, 0, logits, probs), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_model_forward(m, ws, x, 2, logits, probs), CHEX_MODEL_OK);
    for (int i = 0; i < 2 * 14; i++) {
        assert_true(logits[i] == BIAS[i % 14]);
        assert_true(fabsf(probs[i] - 1.0f / (1.0f + expf(-BIAS[i % 14]))) < 1e-7f);
    }
    int c, h, w;
    assert_non_null(chex_model_ws_features(ws, &c, &h, &w));
    assert_true(c == 1024 && h == 7 && w == 7);
    assert_int_equal(chex_model_ws_stage(ws, CHEX_STAGE_TRANS2, &v), CHEX_MODEL_OK);
    assert_true(v.n == 2 && v.c == 256 && v.h == 14 && v.img_stride == 1024L * 14 * 14);
    free(x);
    chex_model_ws_free(ws);
    chex_model_free(m);
}

static void test_xrv_style(void **state)
{
    (void)state;
    build(1, 3);
    char msg[256];
    chex_model *m;
    const char *meta[] = {"labels", "[\"a\",\"b\",\"c\"]", "input_channels", "1",
                          "normalization", "{\"scale\":2048,\"offset\":-1024}", "preprocess",
                          "xrv", "name", "xrv-test", "demo", "true", "input_size", "256", NULL};
    assert_int_equal(load_meta(meta, msg, sizeof(msg), &m), CHEX_MODEL_OK);
    const chex_model_info *in = chex_model_info_get(m);
    assert_int_equal(in->input_channels, 1);
    assert_int_equal(in->input_size, 256);
    assert_int_equal(in->demo, 1);
    assert_string_equal(in->name, "xrv-test");
    assert_string_equal(in->preprocess, "xrv");
    assert_true(fabsf(in->mean[0] - 0.5f) < 1e-7f && fabsf(in->std[0] - 1.0f / 2048) < 1e-9f);
    chex_model_free(m);
}

/* torchxrayvision operating points: the optional tensor op_threshs (one per
 * label, (0, 1) or NaN) makes the probabilities op_norm(sigmoid) and marks
 * NaN labels untrained; anything else is refused naming the tensor. */
static void test_op_threshs(void **state)
{
    (void)state;
    build(1, 3);
    static float thr[4];
    const char *meta[] = {"labels", "[\"a\",\"b\",\"c\"]", "input_channels", "1",
                          "normalization", "{\"scale\":2048,\"offset\":-1024}", "preprocess",
                          "xrv", NULL};
    add("op_threshs", 1, 3, 0, 0, 0);
    find("op_threshs")->data = thr;
    thr[0] = 0.25f;
    thr[1] = NAN;
    thr[2] = 0.1f;
    char msg[256];
    chex_model *m;
    assert_int_equal(load_meta(meta, msg, sizeof(msg), &m), CHEX_MODEL_OK);
    const chex_model_info *in = chex_model_info_get(m);
    assert_int_equal(in->op_norm, 1);
    assert_int_equal(in->num_untrained, 1);
    assert_true(!in->untrained[0] && in->untrained[1] && !in->untrained[2]);
    chex_model_ws *ws;
    assert_int_equal(chex_model_ws_create(m, 1, &ws), CHEX_MODEL_OK);
    float *x = calloc(224 * 224, sizeof(float)), logits[3], probs[3];
    assert_non_null(x);
    assert_int_equal(chex_model_forward(m, ws, x, 1, logits, probs), CHEX_MODEL_OK);
    /* zero weights: logits = bias = -1.75, -1.5, -1.25 -> sigmoid 0.148, 0.182, 0.223:
     * below 0.25 -> p / 0.5; untrained -> 0.5; above 0.1 -> 1 - (1 - p) / 1.8 */
    float p0 = 1.0f / (1.0f + expf(1.75f)), p2 = 1.0f / (1.0f + expf(1.25f));
    assert_float_equal(probs[0], p0 / 0.5f, 1e-6);
    assert_true(probs[1] == 0.5f);
    assert_float_equal(probs[2], 1.0f - (1.0f - p2) / 1.8f, 1e-6);
    assert_true(logits[0] == BIAS[0]); /* logits are untouched */
    free(x);
    chex_model_ws_free(ws);
    chex_model_free(m);
    /* out of range, all NaN, wrong shape */
    thr[2] = 1.0f;
    chex_model_err e = load_meta(meta, msg, sizeof(msg), NULL);
    expect(e, CHEX_MODEL_ERR_METADATA, msg, "op_threshs: entry 2 (c) is 1");
    thr[2] = 0.0f;
    expect(load_meta(meta, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "entry 2");
    thr[0] = thr[2] = NAN;
    expect(load_meta(meta, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "op_threshs: every entry is NaN");
    thr[0] = thr[2] = 0.5f;
    find("op_threshs")->shape[0] = 4;
    expect(load_meta(meta, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_SHAPE, msg,
           "op_threshs: shape [4], expected [3]");
    /* the arithmetic itself, torchxrayvision's op_norm */
    assert_true(chex_model_op_norm(0.3f, 0.3f) == 0.5f);
    assert_true(chex_model_op_norm(0.15f, 0.3f) == 0.15f / (0.3f * 2.0f));
    assert_true(chex_model_op_norm(0.9f, NAN) == 0.5f);
}

static void test_missing_tensor(void **state)
{
    (void)state;
    char msg[256];
    drop("features.denseblock3.denselayer7.conv2.weight");
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_MISSING, msg,
           "features.denseblock3.denselayer7.conv2.weight");
    reset(state);
    drop("classifier.bias");
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_MISSING, msg, "classifier.bias");
}

static void test_wrong_shape(void **state)
{
    (void)state;
    char msg[256];
    find("features.denseblock1.denselayer2.conv1.weight")->shape[1] = 64;
    chex_model_err e = load_std(msg, sizeof(msg));
    expect(e, CHEX_MODEL_ERR_SHAPE, msg, "features.denseblock1.denselayer2.conv1.weight");
    expect(e, CHEX_MODEL_ERR_SHAPE, msg, "[128, 96, 1, 1]"); /* expected */
    expect(e, CHEX_MODEL_ERR_SHAPE, msg, "[128, 64, 1, 1]"); /* got */
    reset(state);
    chex_st_wtensor *t = find("features.norm5.running_var");
    t->ndim = 2;
    t->shape[1] = 1;
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_SHAPE, msg, "features.norm5.running_var");
    reset(state);
    find("classifier.bias")->shape[0] = 13;
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_SHAPE, msg, "classifier.bias");
    reset(state);
    find("features.conv0.weight")->shape[1] = 2; /* neither 1 nor 3 */
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_SHAPE, msg, "features.conv0.weight");
}

static void test_unexpected_tensor(void **state)
{
    (void)state;
    char msg[256];
    add("features.denseblock4.denselayer17.conv1.weight", 4, 128, 1024, 1, 1);
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_UNEXPECTED, msg,
           "features.denseblock4.denselayer17.conv1.weight");
}

static void test_labels(void **state)
{
    (void)state;
    char msg[256];
    const char *three[] = {"labels", "[\"a\",\"b\",\"c\"]", NULL};
    chex_model_err e = load_meta(three, msg, sizeof(msg), NULL);
    expect(e, CHEX_MODEL_ERR_METADATA, msg, "labels");
    expect(e, CHEX_MODEL_ERR_METADATA, msg, "classifier.weight has 14 rows");
    const char *none[] = {"name", "x", NULL};
    expect(load_meta(none, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "labels");
    const char *notjson[] = {"labels", "Atelectasis,Cardiomegaly", NULL};
    expect(load_meta(notjson, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "labels");
    const char *nonstr[] = {"labels", "[1,2]", NULL};
    expect(load_meta(nonstr, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "labels");
}

static void test_normalization(void **state)
{
    (void)state;
    char msg[256];
    const char *short_mean[] = {"labels", LABELS14, "normalization",
                                "{\"mean\":[0.5],\"std\":[0.2]}", NULL};
    expect(load_meta(short_mean, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "normalization");
    const char *zero_std[] = {"labels", LABELS14, "normalization",
                              "{\"mean\":[0.5,0.5,0.5],\"std\":[0.2,0,0.2]}", NULL};
    expect(load_meta(zero_std, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "normalization");
    const char *zero_scale[] = {"labels", LABELS14, "normalization",
                                "{\"scale\":0,\"offset\":1}", NULL};
    expect(load_meta(zero_scale, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "normalization");
    const char *garbage[] = {"labels", LABELS14, "normalization", "imagenet", NULL};
    expect(load_meta(garbage, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "normalization");
}

static void test_input_channels(void **state)
{
    (void)state;
    char msg[256];
    /* metadata says 1, conv0 takes 3 */
    const char *one[] = {"labels", LABELS14, "input_channels", "1", "normalization",
                         "{\"scale\":2048,\"offset\":-1024}", NULL};
    chex_model_err e = load_meta(one, msg, sizeof(msg), NULL);
    expect(e, CHEX_MODEL_ERR_METADATA, msg, "input_channels");
    expect(e, CHEX_MODEL_ERR_METADATA, msg, "features.conv0.weight");
    /* conv0 takes 1, metadata absent: default 3 disagrees */
    build(1, 14);
    expect(load_std(msg, sizeof(msg)), CHEX_MODEL_ERR_METADATA, msg, "input_channels");
    const char *two[] = {"labels", LABELS14, "input_channels", "2", NULL};
    expect(load_meta(two, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "input_channels");
    /* 1 channel needs an explicit normalization */
    const char *nonorm[] = {"labels", LABELS14, "input_channels", "1", NULL};
    expect(load_meta(nonorm, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "normalization");
}

static void test_other_keys(void **state)
{
    (void)state;
    char msg[256];
    const char *size[] = {"labels", LABELS14, "input_size", "224px", NULL};
    expect(load_meta(size, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "input_size");
    const char *tiny[] = {"labels", LABELS14, "input_size", "16", NULL};
    expect(load_meta(tiny, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "input_size");
    const char *demo[] = {"labels", LABELS14, "demo", "yes", NULL};
    expect(load_meta(demo, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "demo");
    const char *pre[] = {"labels", LABELS14, "preprocess", "resize300", NULL};
    expect(load_meta(pre, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg, "preprocess");
    const char *arch[] = {"labels", LABELS14, "architecture", "resnet50", NULL};
    expect(load_meta(arch, msg, sizeof(msg), NULL), CHEX_MODEL_ERR_METADATA, msg,
           "architecture");
}

static void test_truncated_and_io(void **state)
{
    (void)state;
    char msg[256];
    assert_int_equal(load_std(msg, sizeof(msg)), CHEX_MODEL_OK);
    size_t len;
    uint8_t *bytes = chex_test_read_file(PATH, &len);
    assert_non_null(bytes);
    const size_t cuts[] = {len - 1, len / 2, 100, 7, 0};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        FILE *f = fopen(PATH, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(bytes, 1, cuts[i], f), cuts[i]);
        fclose(f);
        chex_model *m = (chex_model *)1;
        chex_model_err e = chex_model_load(PATH, &m, msg, sizeof(msg));
        assert_null(m);
        if (e != CHEX_MODEL_ERR_FORMAT || !msg[0])
            fail_msg("cut at %zu: code %d, msg '%s'", cuts[i], e, msg);
        if (cuts[i] > 1000 && !strstr(msg, "tensor '"))
            fail_msg("cut at %zu: message '%s' names no tensor", cuts[i], msg);
    }
    free(bytes);
    chex_model *m = (chex_model *)1;
    expect(chex_model_load("/nonexistent/dir/w.safetensors", &m, msg, sizeof(msg)),
           CHEX_MODEL_ERR_IO, msg, "/nonexistent/dir/w.safetensors");
    assert_null(m);
}

static void test_bad_offsets(void **state)
{
    (void)state;
    char msg[256];
    /* A valid small header whose one tensor points past the data. */
    const char *hdr = "{\"classifier.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
                      "\"data_offsets\":[8,16]}}";
    size_t n = strlen(hdr);
    FILE *f = fopen(PATH, "wb");
    assert_non_null(f);
    for (int i = 0; i < 8; i++)
        fputc((int)((n >> (8 * i)) & 0xff), f);
    fputs(hdr, f);
    for (int i = 0; i < 8; i++)
        fputc(0, f);
    fclose(f);
    chex_model *m = (chex_model *)1;
    expect(chex_model_load(PATH, &m, msg, sizeof(msg)), CHEX_MODEL_ERR_FORMAT, msg,
           "classifier.bias");
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_valid_defaults_and_forward, reset),
        cmocka_unit_test_setup(test_xrv_style, reset),
        cmocka_unit_test_setup(test_op_threshs, reset),
        cmocka_unit_test_setup(test_missing_tensor, reset),
        cmocka_unit_test_setup(test_wrong_shape, reset),
        cmocka_unit_test_setup(test_unexpected_tensor, reset),
        cmocka_unit_test_setup(test_labels, reset),
        cmocka_unit_test_setup(test_normalization, reset),
        cmocka_unit_test_setup(test_input_channels, reset),
        cmocka_unit_test_setup(test_other_keys, reset),
        cmocka_unit_test_setup(test_truncated_and_io, reset),
        cmocka_unit_test_setup(test_bad_offsets, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
