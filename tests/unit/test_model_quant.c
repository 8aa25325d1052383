/* tests/unit/test_model_quant.c - the int8 side of model/: quantised conv
 * names, the int8_act_max metadata checks (each malformation named), quantise
 * without calibration, precision on a workspace, calibration raising maxima,
 * and an int8 forward of the demo weights close to (not equal to) fp32.
 * Uses $MODELS/chexnet-demo.safetensors (make calibrates it). */
#include <jansson.h>
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
#include "tests/unit/helpers/guard.h"

static char demo[1024], tmp[1024];
static uint8_t *file_buf;
static chex_st_file st;
static chex_st_wtensor *wt;
static float **wdata;

static int setup(void **state)
{
    (void)state;
    const char *mdir = getenv("MODELS");
    snprintf(demo, sizeof demo, "%s/chexnet-demo.safetensors", mdir && *mdir ? mdir : "models");
    size_t len;
    char msg[256];
    file_buf = chex_test_read_file(demo, &len);
    if (!file_buf || chex_st_parse(file_buf, len, &st, msg, sizeof msg) != CHEX_MODEL_OK) {
        fprintf(stderr, "cannot read %s (run make first)\n", demo);
        return -1;
    }
    wt = calloc((size_t)st.ntensors, sizeof *wt);
    wdata = calloc((size_t)st.ntensors, sizeof *wdata);
    if (!wt || !wdata)
        return -1;
    for (int i = 0; i < st.ntensors; i++) {
        wdata[i] = malloc(sizeof(float) * (size_t)chex_st_numel(&st.tensors[i]));
        if (!wdata[i])
            return -1;
        chex_st_to_f32(&st, &st.tensors[i], wdata[i]);
        wt[i].name = st.tensors[i].name;
        wt[i].ndim = st.tensors[i].ndim;
        memcpy(wt[i].shape, st.tensors[i].shape, sizeof wt[i].shape);
        wt[i].data = wdata[i];
        if (st.tensors[i].dtype == CHEX_ST_I8) { /* calibration's int8 weights stay I8 */
            wt[i].dtype = CHEX_ST_I8;
            wt[i].i8 = (const int8_t *)(st.data + st.tensors[i].begin);
        }
    }
    if (chex_test_tmpl(tmp, sizeof tmp, "chex_quant_", ".safetensors") != 0)
        return -1;
    int fd = mkstemps(tmp, (int)strlen(".safetensors"));
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < st.ntensors; i++)
        free(wdata[i]);
    free(wdata);
    free(wt);
    chex_st_free(&st);
    free(file_buf);
    unlink(tmp);
    return 0;
}

/* Writes tensors v (n) with the demo metadata, int8_act_max replaced by act
 * (NULL: dropped), and loads it. */
static chex_model_err load_tensors(const chex_st_wtensor *v, int nv, const char *act,
                                   chex_model **m, char *msg, size_t msglen)
{
    const char *kv[64];
    int n = 0;
    for (int i = 0; i < st.nmeta && n < 60; i++) {
        if (!strcmp(st.meta[i].key, "int8_act_max"))
            continue;
        kv[n++] = st.meta[i].key;
        kv[n++] = st.meta[i].value;
    }
    if (act) {
        kv[n++] = "int8_act_max";
        kv[n++] = act;
    }
    kv[n] = NULL;
    char wmsg[256];
    assert_int_equal(chex_st_write(tmp, v, nv, kv, wmsg, sizeof wmsg), CHEX_MODEL_OK);
    *m = NULL;
    return chex_model_load(tmp, m, msg, msglen);
}

/* A copy of the demo's tensors without (keep_q 0) or with its int8 ones. */
static chex_st_wtensor *demo_tensors(int keep_q, int *n)
{
    chex_st_wtensor *v = calloc((size_t)st.ntensors + 1, sizeof *v); /* room for one more */
    assert_non_null(v);
    *n = 0;
    for (int i = 0; i < st.ntensors; i++)
        if (keep_q || !strstr(wt[i].name, ".int8_"))
            v[(*n)++] = wt[i];
    return v;
}

static int find_wt(const chex_st_wtensor *v, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return i;
    fail_msg("no tensor %s", name);
    return -1;
}

/* The demo tensors and metadata, int8_act_max replaced by act; without
 * calibration (act NULL) the int8 weights go too. */
static chex_model_err load_with(const char *act, chex_model **m, char *msg, size_t msglen)
{
    int n;
    chex_st_wtensor *v = demo_tensors(act != NULL, &n);
    chex_model_err e = load_tensors(v, n, act, m, msg, msglen);
    free(v);
    return e;
}

/* The demo's calibration as a JSON object, to edit. */
static json_t *demo_act(void)
{
    json_t *o = json_loads(chex_st_meta_get(&st, "int8_act_max"), 0, NULL);
    assert_non_null(o);
    return o;
}

static void expect_meta_error(json_t *o, const char *needle)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(o);
    assert_non_null(s);
    chex_model *m;
    char msg[512] = "";
    chex_model_err e = load_with(s, &m, msg, sizeof msg);
    free(s);
    assert_int_equal(e, CHEX_MODEL_ERR_METADATA);
    assert_null(m);
    if (!strstr(msg, "int8_act_max") || !strstr(msg, needle))
        fail_msg("message '%s' lacks int8_act_max / '%s'", msg, needle);
}

static void test_names(void **state)
{
    (void)state;
    chex_model *m = NULL;
    char msg[256], name[96];
    assert_int_equal(chex_model_load(demo, &m, msg, sizeof msg), CHEX_MODEL_OK);
    assert_int_equal(chex_model_qconv_count(m), 119);
    assert_string_equal(chex_model_qconv_name(m, 0, name, sizeof name),
                        "features.denseblock1.denselayer1.conv1.weight");
    assert_string_equal(chex_model_qconv_name(m, 11, name, sizeof name),
                        "features.denseblock1.denselayer6.conv2.weight");
    assert_string_equal(chex_model_qconv_name(m, 12, name, sizeof name),
                        "features.transition1.conv.weight");
    assert_string_equal(chex_model_qconv_name(m, 13, name, sizeof name),
                        "features.denseblock2.denselayer1.conv1.weight");
    assert_string_equal(chex_model_qconv_name(m, 118, name, sizeof name),
                        "features.denseblock4.denselayer16.conv2.weight");
    assert_null(chex_model_qconv_name(m, 119, name, sizeof name));
    assert_null(chex_model_qconv_name(m, -1, name, sizeof name));
    /* every name is a tensor of the file, each once */
    for (int i = 0; i < 119; i++) {
        assert_non_null(chex_st_find(&st, chex_model_qconv_name(m, i, name, sizeof name)));
        char other[96];
        for (int j = 0; j < i; j++)
            assert_string_not_equal(chex_model_qconv_name(m, j, other, sizeof other), name);
    }
    assert_true(chex_model_has_int8_calibration(m));
    /* calibration's int8 tensors, by conv and kind */
    assert_string_equal(chex_model_int8_tensor_name(m, 12, 2, name, sizeof name),
                        "features.transition1.conv.int8_act_scale");
    assert_string_equal(chex_model_int8_tensor_name(m, 0, 0, name, sizeof name),
                        "features.denseblock1.denselayer1.conv1.int8_weight");
    assert_string_equal(chex_model_int8_tensor_name(m, 118, 1, name, sizeof name),
                        "features.denseblock4.denselayer16.conv2.int8_scale");
    assert_null(chex_model_int8_tensor_name(m, 119, 0, name, sizeof name));
    assert_null(chex_model_int8_tensor_name(m, 0, 3, name, sizeof name));
    assert_true(chex_model_is_int8_tensor("features.transition1.conv.int8_act_scale"));
    assert_true(chex_model_is_int8_tensor("x.int8_weight"));
    assert_false(chex_model_is_int8_tensor("features.transition1.conv.weight"));
    assert_false(chex_model_is_int8_tensor(".int8_scale")); /* a suffix needs a conv */
    assert_false(chex_model_is_int8_tensor("x.int8_scales"));
    assert_false(chex_model_is_int8_tensor(NULL));
    chex_model_free(m);
}

static void test_metadata_errors(void **state)
{
    (void)state;
    expect_meta_error(json_string("nope"), "not a JSON object");
    json_t *o = demo_act();
    json_object_del(o, "features.transition2.conv.weight");
    expect_meta_error(o, "features.transition2.conv.weight is missing");
    o = demo_act();
    json_object_set_new(o, "features.denseblock2.denselayer3.conv2.weight", json_real(-1.0));
    expect_meta_error(o, "denselayer3.conv2.weight is not a positive");
    o = demo_act();
    json_object_set_new(o, "features.denseblock1.denselayer1.conv1.weight", json_string("3"));
    expect_meta_error(o, "denselayer1.conv1.weight is not a positive");
    o = demo_act();
    json_object_set_new(o, "features.denseblock1.denselayer1.conv1.weight", json_real(0.0));
    expect_meta_error(o, "is not a positive");
    o = demo_act();
    json_object_set_new(o, "features.conv0.weight", json_real(2.0));
    expect_meta_error(o, "'features.conv0.weight' is not a quantised conv");
    /* Unparsable JSON text */
    chex_model *m;
    char msg[512];
    assert_int_equal(load_with("{\"a\":", &m, msg, sizeof msg), CHEX_MODEL_ERR_METADATA);
    assert_non_null(strstr(msg, "int8_act_max"));
}

static void test_uncalibrated(void **state)
{
    (void)state;
    chex_model *m = NULL;
    char msg[512];
    assert_int_equal(load_with(NULL, &m, msg, sizeof msg), CHEX_MODEL_OK);
    assert_false(chex_model_has_int8_calibration(m));
    assert_int_equal(chex_model_quantize(m, msg, sizeof msg), CHEX_MODEL_ERR_METADATA);
    assert_non_null(strstr(msg, "int8_act_max: missing"));
    chex_model_ws *ws = NULL;
    assert_int_equal(chex_model_ws_create(m, 1, &ws), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_set_precision(ws, CHEX_PRECISION_INT8), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_model_ws_set_precision(ws, CHEX_PRECISION_FP32), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_set_precision(ws, (chex_model_precision)7),
                     CHEX_MODEL_ERR_ARG);
    chex_model_ws_free(ws);
    chex_model_free(m);
}

static void expect_q_error(chex_st_wtensor *v, int n, chex_model_err want, const char *needle)
{
    chex_model *m = NULL;
    char msg[512] = "";
    chex_model_err e = load_tensors(v, n, chex_st_meta_get(&st, "int8_act_max"), &m, msg,
                                    sizeof msg);
    free(v);
    assert_null(m);
    assert_int_equal(e, want);
    if (!strstr(msg, needle))
        fail_msg("message '%s' lacks '%s'", msg, needle);
}

/* The int8 weights calibration stores: all or none, named errors. */
static void test_int8_tensor_errors(void **state)
{
    (void)state;
    int n;
    chex_st_wtensor *v = demo_tensors(1, &n);
    const char *scale = "features.denseblock2.denselayer4.conv2.int8_scale";
    v[find_wt(v, n, scale)] = v[n - 1];
    expect_q_error(v, n - 1, CHEX_MODEL_ERR_MISSING, scale);

    v = demo_tensors(1, &n);
    int i = find_wt(v, n, "features.transition1.conv.int8_weight");
    v[i].dtype = CHEX_ST_F32;
    expect_q_error(v, n, CHEX_MODEL_ERR_DTYPE, "transition1.conv.int8_weight: dtype must be I8");

    v = demo_tensors(1, &n);
    i = find_wt(v, n, "features.denseblock1.denselayer2.conv1.int8_act_scale");
    v[i].shape[0] = 32; /* its conv reads 96 channels */
    expect_q_error(v, n, CHEX_MODEL_ERR_SHAPE, "denselayer2.conv1.int8_act_scale: shape must be [96]");

    v = demo_tensors(1, &n);
    i = find_wt(v, n, "features.denseblock3.denselayer1.conv1.int8_scale");
    float zero[128];
    memcpy(zero, v[i].data, sizeof zero);
    zero[77] = 0.0f;
    v[i].data = zero;
    expect_q_error(v, n, CHEX_MODEL_ERR_METADATA, "element 77 is not a positive finite scale");

    v = demo_tensors(1, &n);
    i = find_wt(v, n, "features.denseblock1.denselayer1.conv2.int8_weight");
    int8_t *w = malloc(32 * 128 * 9);
    assert_non_null(w);
    memcpy(w, v[i].i8, 32 * 128 * 9);
    w[100] = -128;
    v[i].i8 = w;
    expect_q_error(v, n, CHEX_MODEL_ERR_METADATA, "element 100 is -128");
    free(w);

    v = demo_tensors(1, &n);
    v[n] = v[find_wt(v, n, "features.denseblock1.denselayer6.conv1.int8_scale")];
    v[n].name = "features.denseblock1.denselayer7.conv1.int8_scale"; /* block 1 has 6 */
    expect_q_error(v, n + 1, CHEX_MODEL_ERR_UNEXPECTED, "denselayer7.conv1.int8_scale: unexpected");

    /* int8 weights without the activation maxima */
    v = demo_tensors(1, &n);
    chex_model *m = NULL;
    char msg[512];
    assert_int_equal(load_tensors(v, n, NULL, &m, msg, sizeof msg), CHEX_MODEL_ERR_METADATA);
    assert_non_null(strstr(msg, "without the calibration metadata int8_act_max"));
    free(v);
}

static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((float)(seed >> 8) / 16777216.0f) * 4.0f - 2.0f;
    }
}

static void test_calibrate_and_int8_forward(void **state)
{
    (void)state;
    chex_model *m = NULL;
    char msg[256];
    /* The int8 forward here is the one of a file with activation maxima only
     * (weights rounded to nearest at start-up): random inputs are far from
     * the radiographs the per-channel scales of GPTQ's files were fitted
     * to. tests/reference/int8_check.py holds those to real radiographs. */
    int nv;
    chex_st_wtensor *v = demo_tensors(0, &nv);
    assert_int_equal(load_tensors(v, nv, chex_st_meta_get(&st, "int8_act_max"), &m, msg,
                                  sizeof msg),
                     CHEX_MODEL_OK);
    free(v);
    const size_t per = 3 * 224 * 224;
    float *in = malloc(sizeof(float) * per * 2);
    assert_non_null(in);
    fill(in, per * 2, 99u);
    /* A workspace made before quantising cannot run int8. */
    chex_model_ws *early = NULL;
    assert_int_equal(chex_model_ws_create(m, 2, &early), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_set_precision(early, CHEX_PRECISION_INT8), CHEX_MODEL_ERR_ARG);
    /* Calibration: per-channel maxima and GPTQ weights on the int8 grid. */
    chex_model_calib *cal = NULL;
    chex_model_qconv_calib q;
    assert_int_equal(chex_model_calib_create(m, 1, &cal), CHEX_MODEL_OK);
    assert_int_equal(chex_model_calib_finish(cal, msg, sizeof msg), CHEX_MODEL_ERR_ARG);
    assert_non_null(strstr(msg, "no images"));
    assert_int_equal(chex_model_calib_get(cal, 0, &q), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_model_calib_add(cal, early, in, 2), CHEX_MODEL_OK);
    assert_int_equal(chex_model_calib_finish(cal, msg, sizeof msg), CHEX_MODEL_OK);
    assert_int_equal(chex_model_calib_add(cal, early, in, 1), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_model_calib_get(cal, 119, &q), CHEX_MODEL_ERR_ARG);
    for (int i = 0; i < 119; i++) {
        assert_int_equal(chex_model_calib_get(cal, i, &q), CHEX_MODEL_OK);
        assert_true(q.act_max > 0.0f && isfinite(q.act_max));
        char name[96];
        assert_int_equal(q.taps, strstr(chex_model_qconv_name(m, i, name, sizeof name), "conv2")
                                     ? 9 : 1);
        float amax = 0.0f;
        for (int c = 0; c < q.c; c++) {
            assert_true(q.act_scale[c] > 0.0f && isfinite(q.act_scale[c]));
            amax = fmaxf(amax, q.act_scale[c] * 255.0f);
        }
        assert_true(fabsf(amax - q.act_max) <= 1e-5f * q.act_max);
        int top = 0;
        for (long j = 0; j < (long)q.m * q.c * q.taps; j++) {
            assert_true(q.w[j] >= -127 && q.w[j] <= 127);
            top |= q.w[j] == 127 || q.w[j] == -127;
        }
        assert_true(top); /* each row's scale is its largest weight / 127 */
        for (int o = 0; o < q.m; o++)
            assert_true(q.w_scale[o] > 0.0f && isfinite(q.w_scale[o]));
    }
    chex_model_calib_free(cal);
    chex_model_ws_free(early);

    assert_int_equal(chex_model_quantize(m, msg, sizeof msg), CHEX_MODEL_OK);
    assert_int_equal(chex_model_quantize(m, msg, sizeof msg), CHEX_MODEL_OK); /* idempotent */
    chex_model_ws *w32 = NULL, *w8 = NULL;
    assert_int_equal(chex_model_ws_create(m, 2, &w32), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_create(m, 2, &w8), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_set_precision(w8, CHEX_PRECISION_INT8), CHEX_MODEL_OK);
    float p32[2 * 14], p8[2 * 14], p8b[14];
    assert_int_equal(chex_model_forward(m, w32, in, 2, NULL, p32), CHEX_MODEL_OK);
    assert_int_equal(chex_model_forward(m, w8, in, 2, NULL, p8), CHEX_MODEL_OK);
    double worst = 0.0;
    for (int i = 0; i < 28; i++)
        worst = fmax(worst, fabs((double)p8[i] - p32[i]));
    if (!(worst > 0.0 && worst < 0.02))
        fail_msg("int8 vs fp32 worst %g: not in (0, 0.02)", worst);
    /* batch of 2 (image-parallel) equals two batches of 1 (op-parallel) */
    assert_int_equal(chex_model_forward(m, w8, in + per, 1, NULL, p8b), CHEX_MODEL_OK);
    for (int i = 0; i < 14; i++)
        assert_true(fabsf(p8b[i] - p8[14 + i]) < 1e-6f);
    chex_model_ws_free(w32);
    chex_model_ws_free(w8);
    free(in);
    chex_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_metadata_errors),
        cmocka_unit_test(test_uncalibrated),
        cmocka_unit_test(test_int8_tensor_errors),
        cmocka_unit_test(test_calibrate_and_int8_forward),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
