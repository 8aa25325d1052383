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

/* Writes the demo tensors with the demo metadata, int8_act_max replaced by
 * act (NULL: dropped), and loads it. */
static chex_model_err load_with(const char *act, chex_model **m, char *msg, size_t msglen)
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
    assert_int_equal(chex_st_write(tmp, wt, st.ntensors, kv, wmsg, sizeof wmsg), CHEX_MODEL_OK);
    *m = NULL;
    return chex_model_load(tmp, m, msg, msglen);
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
    assert_int_equal(chex_model_load(demo, &m, msg, sizeof msg), CHEX_MODEL_OK);
    const size_t per = 3 * 224 * 224;
    float *in = malloc(sizeof(float) * per * 2);
    assert_non_null(in);
    fill(in, per * 2, 99u);
    /* A workspace made before quantising cannot run int8. */
    chex_model_ws *early = NULL;
    assert_int_equal(chex_model_ws_create(m, 2, &early), CHEX_MODEL_OK);
    assert_int_equal(chex_model_ws_set_precision(early, CHEX_PRECISION_INT8), CHEX_MODEL_ERR_ARG);
    /* Calibration only raises the maxima, all of them above zero here. */
    float amax[119];
    for (int i = 0; i < 119; i++)
        amax[i] = 0.0f;
    assert_int_equal(chex_model_calibrate(m, early, in, 2, amax), CHEX_MODEL_OK);
    for (int i = 0; i < 119; i++)
        assert_true(amax[i] > 0.0f && isfinite(amax[i]));
    float again[119];
    memcpy(again, amax, sizeof amax);
    again[5] = 1e9f;
    assert_int_equal(chex_model_calibrate(m, early, in, 1, again), CHEX_MODEL_OK);
    assert_true(again[5] == 1e9f);
    for (int i = 0; i < 119; i++)
        assert_true(again[i] <= amax[i] || i == 5);
    assert_int_equal(chex_model_calibrate(m, early, in, 1, NULL), CHEX_MODEL_ERR_ARG);
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
        cmocka_unit_test(test_calibrate_and_int8_forward),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
