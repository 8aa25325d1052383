/* tests/unit/test_safetensors_demo.c - the demo weights $MODELS/chexnet-demo.safetensors
 * (built by `make`): torchvision densenet121 names and shapes, metadata,
 * weight statistics, its int8 calibration, and that
 * $BUILD/tools/make_demo_weights writes the same tensors and metadata again
 * (make adds the calibration with `chex calibrate`). Run from the repository
 * root (tests/run_all.sh does). */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/safetensors.h"
#include "tests/unit/helpers/guard.h"

static const char *env_or(const char *k, const char *def)
{
    const char *v = getenv(k);
    return v && *v ? v : def;
}

static uint8_t *file_buf;
static size_t file_len;
static chex_st_file st;

static int setup(void **state)
{
    (void)state;
    char p[1024];
    snprintf(p, sizeof(p), "%s/chexnet-demo.safetensors", env_or("MODELS", "models"));
    file_buf = chex_test_read_file(p, &file_len);
    if (!file_buf) {
        fprintf(stderr, "cannot read %s (run make first)\n", p);
        return -1;
    }
    char msg[256];
    if (chex_st_parse(file_buf, file_len, &st, msg, sizeof(msg)) != CHEX_MODEL_OK) {
        fprintf(stderr, "%s: %s\n", p, msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    chex_st_free(&st);
    free(file_buf);
    return 0;
}

static int nseen;

/* Checks one tensor's presence, dtype and shape. */
static void expect(const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    const chex_st_tensor *t = chex_st_find(&st, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    const int64_t d[4] = {d0, d1, d2, d3};
    int ok = t->dtype == CHEX_ST_F32 && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == d[i];
    if (!ok)
        fail_msg("tensor %s: wrong dtype or shape", name);
    nseen++;
}

static void expect_bn(const char *prefix, int64_t c)
{
    static const char *const part[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        char n[CHEX_ST_NAME_LEN];
        snprintf(n, sizeof(n), "%s.%s", prefix, part[i]);
        expect(n, 1, c, 0, 0, 0);
    }
}

/* torchvision.models.densenet121(num_classes=14).state_dict() minus num_batches_tracked. */
static void test_names_and_shapes(void **state)
{
    (void)state;
    nseen = 0;
    expect("features.conv0.weight", 4, 64, 3, 7, 7);
    expect_bn("features.norm0", 64);
    const int layers[4] = {6, 12, 24, 16};
    const int64_t block_in[4] = {64, 128, 256, 512};
    char n[CHEX_ST_NAME_LEN];
    for (int b = 0; b < 4; b++) {
        for (int l = 0; l < layers[b]; l++) {
            int64_t cin = block_in[b] + 32 * l;
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.norm1", b + 1, l + 1);
            expect_bn(n, cin);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.conv1.weight", b + 1, l + 1);
            expect(n, 4, 128, cin, 1, 1);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.norm2", b + 1, l + 1);
            expect_bn(n, 128);
            snprintf(n, sizeof(n), "features.denseblock%d.denselayer%d.conv2.weight", b + 1, l + 1);
            expect(n, 4, 32, 128, 3, 3);
        }
        int64_t out = block_in[b] + 32 * layers[b];
        if (b < 3) {
            assert_int_equal(out / 2, block_in[b + 1]);
            snprintf(n, sizeof(n), "features.transition%d.norm", b + 1);
            expect_bn(n, out);
            snprintf(n, sizeof(n), "features.transition%d.conv.weight", b + 1);
            expect(n, 4, out / 2, out, 1, 1);
        } else {
            assert_int_equal(out, 1024);
        }
    }
    expect_bn("features.norm5", 1024);
    expect("classifier.weight", 2, 14, 1024, 0, 0);
    expect("classifier.bias", 1, 14, 0, 0, 0);
    assert_int_equal(nseen, 606);
    /* nothing else in the file but calibration's int8 weights, 3 per quantised conv */
    assert_int_equal(st.ntensors, 606 + 3 * 119);
    int64_t total = 0;
    for (int i = 0; i < st.ntensors; i++)
        if (!strstr(st.tensors[i].name, ".int8_"))
            total += chex_st_numel(&st.tensors[i]);
    assert_int_equal(total, 7051854); /* as counted by PyTorch on the state_dict */
}

static void test_metadata(void **state)
{
    (void)state;
    static const char *const want_labels[14] = {
        "Atelectasis",   "Cardiomegaly", "Effusion", "Infiltration",       "Mass",
        "Nodule",        "Pneumonia",    "Pneumothorax", "Consolidation",  "Edema",
        "Emphysema",     "Fibrosis",     "Pleural_Thickening", "Hernia"};
    assert_string_equal(chex_st_meta_get(&st, "name"), "chexnet-demo");
    assert_string_equal(chex_st_meta_get(&st, "demo"), "true");
    assert_string_equal(chex_st_meta_get(&st, "architecture"), "densenet121");
    assert_string_equal(chex_st_meta_get(&st, "input_channels"), "3");
    assert_string_equal(chex_st_meta_get(&st, "input_size"), "224");
    assert_string_equal(chex_st_meta_get(&st, "preprocess"), "resize256-crop224");
    const char *d = chex_st_meta_get(&st, "description");
    assert_non_null(d);
    assert_non_null(strstr(d, "no clinical meaning"));

    json_error_t e;
    json_t *labels = json_loads(chex_st_meta_get(&st, "labels"), 0, &e);
    assert_non_null(labels);
    assert_int_equal(json_array_size(labels), 14);
    for (int i = 0; i < 14; i++)
        assert_string_equal(json_string_value(json_array_get(labels, (size_t)i)), want_labels[i]);
    json_decref(labels);

    json_t *norm = json_loads(chex_st_meta_get(&st, "normalization"), 0, &e);
    assert_non_null(norm);
    const double mean[3] = {0.485, 0.456, 0.406}, sd[3] = {0.229, 0.224, 0.225};
    for (int c = 0; c < 3; c++) {
        assert_true(json_real_value(json_array_get(json_object_get(norm, "mean"), (size_t)c)) ==
                    mean[c]);
        assert_true(json_real_value(json_array_get(json_object_get(norm, "std"), (size_t)c)) ==
                    sd[c]);
    }
    json_decref(norm);
}

static void stats(const char *name, double *mean, double *sd, double *lo, double *hi)
{
    const chex_st_tensor *t = chex_st_find(&st, name);
    assert_non_null(t);
    int64_t n = chex_st_numel(t);
    float *v = malloc((size_t)n * sizeof(float));
    assert_non_null(v);
    chex_st_to_f32(&st, t, v);
    double s = 0, s2 = 0;
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        s2 += (double)v[i] * v[i];
        *lo = fmin(*lo, v[i]);
        *hi = fmax(*hi, v[i]);
    }
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
    free(v);
}

/* Kaiming-normal convs, BN randomised in its documented ranges (so it is not
 * the identity), a small classifier. */
static void test_statistics(void **state)
{
    (void)state;
    double m, sd, lo, hi;
    stats("features.conv0.weight", &m, &sd, &lo, &hi);
    assert_true(fabs(sd - sqrt(2.0 / 147)) < 0.05 * sqrt(2.0 / 147));
    assert_true(fabs(m) < 0.01);
    stats("features.denseblock3.denselayer7.conv2.weight", &m, &sd, &lo, &hi);
    assert_true(fabs(sd - sqrt(2.0 / 1152)) < 0.05 * sqrt(2.0 / 1152));
    stats("features.denseblock4.denselayer16.norm1.weight", &m, &sd, &lo, &hi);
    assert_true(lo >= 0.7 && hi <= 1.3 && sd > 0.1);
    stats("features.denseblock4.denselayer16.norm1.running_var", &m, &sd, &lo, &hi);
    assert_true(lo >= 0.6 && hi <= 1.4 && sd > 0.1);
    stats("features.norm5.running_mean", &m, &sd, &lo, &hi);
    assert_true(fabs(sd - 0.1) < 0.02);
    stats("features.norm5.bias", &m, &sd, &lo, &hi);
    assert_true(fabs(sd - 0.1) < 0.02);
    stats("classifier.weight", &m, &sd, &lo, &hi);
    assert_true(fabs(sd - 0.5 / 32) < 0.05 * 0.5 / 32);
}

/* The generator is deterministic: a second run writes the same bytes. */
static void test_reproducible(void **state)
{
    (void)state;
    char tool[1024], out[1024];
    snprintf(tool, sizeof(tool), "%s/tools/make_demo_weights", env_or("BUILD", "build"));
    assert_int_equal(chex_test_tmpl(out, sizeof(out), "chex_demo_", NULL), 0);
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(tool, tool, out, (char *)NULL);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s %s failed (status 0x%x)", tool, out, status);
    size_t len;
    uint8_t *b = chex_test_read_file(out, &len);
    unlink(out);
    assert_non_null(b);
    chex_st_file g;
    char msg[256];
    assert_int_equal(chex_st_parse(b, len, &g, msg, sizeof msg), CHEX_MODEL_OK);
    /* Same tensors, same bytes (the calibrated copy is rewritten as F32),
     * plus calibration's int8 weights in the built file. */
    assert_int_equal(g.ntensors + 3 * 119, st.ntensors);
    for (int i = 0; i < g.ntensors; i++) {
        const chex_st_tensor *t = chex_st_find(&st, g.tensors[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, g.tensors[i].dtype);
        assert_int_equal(t->end - t->begin, g.tensors[i].end - g.tensors[i].begin);
        assert_memory_equal(st.data + t->begin, g.data + g.tensors[i].begin, t->end - t->begin);
    }
    /* Same metadata, plus the two int8 keys in the built file. */
    assert_int_equal(g.nmeta + 2, st.nmeta);
    for (int i = 0; i < g.nmeta; i++) {
        const char *v = chex_st_meta_get(&st, g.meta[i].key);
        assert_non_null(v);
        assert_string_equal(v, g.meta[i].value);
    }
    chex_st_free(&g);
    free(b);
}

/* make calibrated the demo file for int8 on the radiographs of tests/data. */
static void test_int8_calibration(void **state)
{
    (void)state;
    const char *v = chex_st_meta_get(&st, "int8_calibration");
    assert_non_null(v);
    assert_non_null(strstr(v, "\"images\":6"));
    assert_non_null(strstr(v, "gptq"));
    v = chex_st_meta_get(&st, "int8_act_max");
    assert_non_null(v);
    json_t *o = json_loads(v, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 119);
    const char *k;
    json_t *x;
    json_object_foreach(o, k, x) {
        assert_true(json_is_number(x));
        assert_true(json_number_value(x) > 0.01 && json_number_value(x) < 1e4);
    }
    assert_non_null(json_object_get(o, "features.transition3.conv.weight"));
    json_decref(o);
    /* GPTQ's int8 weights: I8, the weight's shape, on the symmetric grid */
    const chex_st_tensor *t = chex_st_find(&st, "features.denseblock3.denselayer5.conv2.int8_weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, CHEX_ST_I8);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 128);
    assert_int_equal(t->shape[2], 3);
    int top = 0;
    for (uint64_t i = t->begin; i < t->end; i++) {
        assert_true((int8_t)st.data[i] >= -127);
        top |= (int8_t)st.data[i] == 127 || (int8_t)st.data[i] == -127;
    }
    assert_true(top);
    t = chex_st_find(&st, "features.transition2.conv.int8_act_scale");
    assert_non_null(t);
    assert_int_equal(t->dtype, CHEX_ST_F32);
    assert_int_equal(t->shape[0], 512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_shapes),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_int8_calibration),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
