/* Every configuration error: its code and one line naming the key and the
 * source (file, env, flag). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "tests/unit/helpers/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

#define DEMO "models/chexnet-demo.safetensors"

typedef struct {
    char path[80];  /* temp file or directory, removed in teardown */
    int is_dir;
    char arg[160];  /* "--config=PATH" */
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->path[0]) {
        if (fx->is_dir)
            rmdir(fx->path);
        else
            unlink(fx->path);
    }
    free(fx);
    return 0;
}

static const char *temp_file(fixture *fx, const char *text)
{
    if (fx->path[0])
        unlink(fx->path);
    assert_int_equal(chex_test_tmpl(fx->path, sizeof fx->path, "chex_cfg_err_", NULL), 0);
    int fd = mkstemp(fx->path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    snprintf(fx->arg, sizeof fx->arg, "--config=%s", fx->path);
    return fx->path;
}

/* Loads; asserts the code, that msg is one line starting "config: " and that
 * it contains each of the NULL-terminated needles. */
static void expect(chex_config_err want, char **argv, char **envp, ...)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    chex_config cfg;
    char msg[512];
    chex_config_err got = chex_config_load(&cfg, argc, argv, envp, DEMO, msg, sizeof msg);
    if (got != want)
        fail_msg("want %s, got %s: %s", chex_config_strerror(want), chex_config_strerror(got),
                 msg);
    if (strncmp(msg, "config: ", 8) != 0 || strchr(msg, '\n'))
        fail_msg("not one \"config: \" line: %s", msg);
    va_list ap;
    va_start(ap, envp);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(msg, s))
            fail_msg("message lacks \"%s\": %s", s, msg);
    va_end(ap);
}

/* File text -> expected code and needles ("FILE" in a needle is not replaced;
 * the source is checked separately as "(from file PATH)"). */
static void expect_file(fixture *fx, const char *text, chex_config_err want, const char *n1,
                        const char *n2)
{
    const char *path = temp_file(fx, text);
    char src[128];
    snprintf(src, sizeof src, "(from file %s)", path);
    char *argv[] = {"chexd", fx->arg, NULL};
    char *envp[] = {NULL};
    expect(want, argv, envp, src, n1, n2, NULL);
}

static char *NOENV[] = {NULL};

/* ---- the exact messages of the brief ---------------------------------- */

static void test_out_of_range_each_source(void **state)
{
    fixture *fx = *state;
    chex_config cfg;
    char msg[512], want[256];

    const char *path = temp_file(fx, "{\"queue_depth\": 0}");
    char *a1[] = {"chexd", "--config", (char *)path, NULL};
    assert_int_equal(chex_config_load(&cfg, 3, a1, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    snprintf(want, sizeof want,
             "config: queue_depth: value 0 out of range 1..100000 (from file %s)", path);
    assert_string_equal(msg, want);

    char *a0[] = {"chexd", NULL};
    char *env[] = {"CHEXD_QUEUE_DEPTH=0", NULL};
    assert_int_equal(chex_config_load(&cfg, 1, a0, env, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(
        msg, "config: queue_depth: value 0 out of range 1..100000 (from env CHEXD_QUEUE_DEPTH)");

    char *a2[] = {"chexd", "--queue-depth", "0", NULL};
    assert_int_equal(chex_config_load(&cfg, 3, a2, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(
        msg, "config: queue_depth: value 0 out of range 1..100000 (from flag --queue-depth)");
    char *a3[] = {"chexd", "--queue-depth=100001", NULL};
    assert_int_equal(chex_config_load(&cfg, 2, a3, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(
        msg,
        "config: queue_depth: value 100001 out of range 1..100000 (from flag --queue-depth)");
}

static void test_other_ranges(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--port", "0", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, NOENV, "port", "1..65535", "(from flag --port)", NULL);
    char *f2[] = {"chexd", "--port=65536", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f2, NOENV, "port", "65536", NULL);
    char *f3[] = {"chexd", "--max-batch", "65", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f3, NOENV, "max_batch", "1..64", NULL);
    char *f4[] = {"chexd", "--threads", "-1", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f4, NOENV, "threads", "value -1", "0..256", NULL);
    char *f5[] = {"chexd", "--batch-window-ms=1001", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f5, NOENV, "batch_window_ms", "0..1000", NULL);
    /* uint64: above the maximum, and a negative number is not wrapped */
    char *e1[] = {"CHEXD_MAX_UPLOAD_BYTES=1073741825", NULL};
    char *a0[] = {"chexd", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, e1, "max_upload_bytes",
           "(from env CHEXD_MAX_UPLOAD_BYTES)", NULL);
    char *e2[] = {"CHEXD_CONNECTION_MEMORY_LIMIT=-1", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, e2, "connection_memory_limit", "value -1", NULL);
    /* an int key given a number that fits 64 bits but not int */
    char *f6[] = {"chexd", "--request-timeout-ms", "4294967297", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f6, NOENV, "request_timeout_ms", "4294967297", NULL);
}

static void test_out_of_range_file_negative(void **state)
{
    expect_file(*state, "{\"max_image_pixels\": -5}", CHEX_CONFIG_ERR_RANGE, "max_image_pixels",
                "value -5");
    expect_file(*state, "{\"connection_timeout_s\": 0}", CHEX_CONFIG_ERR_RANGE,
                "connection_timeout_s", "1..3600");
    expect_file(*state, "{\"header_timeout_s\": 3601}", CHEX_CONFIG_ERR_RANGE,
                "header_timeout_s", "0..3600");
    expect_file(*state, "{\"min_upload_bytes_per_s\": -1}", CHEX_CONFIG_ERR_RANGE,
                "min_upload_bytes_per_s", "value -1");
}

static void test_deadline_keys_env_and_flag(void **state)
{
    (void)state;
    char *a0[] = {"chexd", NULL};
    char *e1[] = {"CHEXD_HEADER_TIMEOUT_S=ten", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, a0, e1, "header_timeout_s", "(from env CHEXD_HEADER_TIMEOUT_S)",
           NULL);
    char *f1[] = {"chexd", "--min-upload-bytes-per-s", "1073741825", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, NOENV, "min_upload_bytes_per_s",
           "(from flag --min-upload-bytes-per-s)", NULL);
}

/* ---- unknown keys, each source ---------------------------------------- */

static void test_unknown_key_file(void **state)
{
    expect_file(*state, "{\"port\": 8081, \"queue_dept\": 3}", CHEX_CONFIG_ERR_UNKNOWN,
                "queue_dept: unknown key", "did you mean queue_depth?");
    /* --config is a flag, not a key of the file */
    expect_file(*state, "{\"config\": \"x.json\"}", CHEX_CONFIG_ERR_UNKNOWN,
                "config: config: unknown key", NULL);
    expect_file(*state, "{\"zzzzzz\": 1}", CHEX_CONFIG_ERR_UNKNOWN, "zzzzzz: unknown key",
                NULL);
}

static void test_unknown_key_env(void **state)
{
    (void)state;
    char *a0[] = {"chexd", NULL};
    char *e1[] = {"PATH=/bin", "CHEXD_QUEUE_DEPHT=3", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, a0, e1, "CHEXD_QUEUE_DEPHT: unknown variable",
           "did you mean CHEXD_QUEUE_DEPTH?", "(from env CHEXD_QUEUE_DEPHT)", NULL);
    char *e2[] = {"CHEXD_=1", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, a0, e2, "(from env CHEXD_)", NULL);
    /* an unknown variable is an error even when empty */
    char *e3[] = {"CHEXD_VERBOSE=", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, a0, e3, "CHEXD_VERBOSE", NULL);
}

static void test_unknown_flag_and_positional(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--queue-depht", "3", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f1, NOENV, "queue-depht: unknown flag",
           "did you mean --queue-depth?", "(from flag --queue-depht)", NULL);
    /* underscores are the JSON spelling, not a flag */
    char *f2[] = {"chexd", "--queue_depth=3", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f2, NOENV, "queue_depth: unknown flag", NULL);
    char *f3[] = {"chexd", "-p", "80", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f3, NOENV, "-p: unexpected argument", NULL);
    char *f4[] = {"chexd", "image.png", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f4, NOENV, "image.png: unexpected argument",
           "(from argument 1)", NULL);
    char *f5[] = {"chexd", "--", "x", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f5, NOENV, "unexpected argument", NULL);
    /* the command line is checked before any file is read */
    char *f6[] = {"chexd", "--config", "/nonexistent/chexd.json", "extra", NULL};
    expect(CHEX_CONFIG_ERR_UNKNOWN, f6, NOENV, "extra", NULL);
}

static void test_missing_flag_value(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--port", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f1, NOENV, "port: missing value", "(from flag --port)", NULL);
    char *f2[] = {"chexd", "--model", "--port", "1", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f2, NOENV, "model: missing value", NULL);
    char *f3[] = {"chexd", "--config", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f3, NOENV, "config: config: missing value", NULL);
    char *f4[] = {"chexd", "--check-config=yes", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f4, NOENV, "check-config: takes no value", NULL);
}

/* ---- wrong JSON types ------------------------------------------------- */

static void test_wrong_json_type(void **state)
{
    fixture *fx = *state;
    expect_file(fx, "{\"queue_depth\": \"3\"}", CHEX_CONFIG_ERR_TYPE,
                "queue_depth: expected an integer, got a string", NULL);
    expect_file(fx, "{\"queue_depth\": 3.0}", CHEX_CONFIG_ERR_TYPE,
                "queue_depth: expected an integer, got a real number", NULL);
    expect_file(fx, "{\"max_upload_bytes\": true}", CHEX_CONFIG_ERR_TYPE,
                "max_upload_bytes: expected an integer, got a boolean", NULL);
    expect_file(fx, "{\"port\": null}", CHEX_CONFIG_ERR_TYPE, "port: expected an integer, got null",
                NULL);
    expect_file(fx, "{\"model\": 5}", CHEX_CONFIG_ERR_TYPE,
                "model: expected a string, got an integer", NULL);
    expect_file(fx, "{\"log_level\": [\"info\"]}", CHEX_CONFIG_ERR_TYPE,
                "log_level: expected a string, got an array", NULL);
    expect_file(fx, "{\"listen\": {}}", CHEX_CONFIG_ERR_TYPE,
                "listen: expected a string, got an object", NULL);
    /* a NUL inside a string is refused by the parser */
    temp_file(fx, "{\"web_root\": \"a\\u0000b\"}");
    char *argv[] = {"chexd", fx->arg, NULL};
    expect(CHEX_CONFIG_ERR_FILE, argv, NOENV, "invalid JSON", NULL);
}

/* ---- unparsable numbers (env and flags are text) ---------------------- */

static void test_bad_numbers(void **state)
{
    (void)state;
    const char *bad[] = {"12x", "", " 5", "5 ", "0x10", "1e3", "3.0", "--", "+", "-", "1_000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char var[64], flag[64];
        snprintf(var, sizeof var, "CHEXD_PORT=%s", bad[i]);
        char *a0[] = {"chexd", NULL};
        char *env[] = {var, NULL};
        expect(CHEX_CONFIG_ERR_TYPE, a0, env, "port: value", "is not a whole number",
               "(from env CHEXD_PORT)", NULL);
        snprintf(flag, sizeof flag, "--max-batch=%s", bad[i]);
        char *f[] = {"chexd", flag, NULL};
        expect(CHEX_CONFIG_ERR_TYPE, f, NOENV, "max_batch: value", "(from flag --max-batch)",
               NULL);
    }
    /* overflow of 64 bits is unparsable, not wrapped */
    char *f1[] = {"chexd", "--max-upload-bytes", "18446744073709551616", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f1, NOENV, "max_upload_bytes", "does not fit in 64 bits",
           NULL);
    char *f2[] = {"chexd", "--threads", "-99999999999999999999", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f2, NOENV, "threads", "does not fit in 64 bits", NULL);
    /* the largest uint64 parses, then is out of range */
    char *f3[] = {"chexd", "--max-image-pixels", "18446744073709551615", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f3, NOENV, "max_image_pixels", NULL);
    /* a JSON integer beyond 64 bits makes the file invalid */
    fixture *fx = *state;
    temp_file(fx, "{\"max_upload_bytes\": 99999999999999999999999}");
    char *f4[] = {"chexd", fx->arg, NULL};
    expect(CHEX_CONFIG_ERR_FILE, f4, NOENV, "invalid JSON", "too big integer",
           "(from flag --config)", NULL);
}

/* ---- values not among the allowed ones -------------------------------- */

static void test_bad_enum_values(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--log-level", "verbose", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, NOENV,
           "log_level: value \"verbose\" not one of debug|info|warn|error", NULL);
    char *f2[] = {"chexd", "--log-format=JSON", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f2, NOENV, "log_format", "json|logfmt", NULL);
    char *a0[] = {"chexd", NULL};
    char *e1[] = {"CHEXD_PNG16_SCALING=linear", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, e1, "png16_scaling", "minmax|sbit|full",
           "(from env CHEXD_PNG16_SCALING)", NULL);
    expect_file(*state, "{\"precision\": \"fp16\"}", CHEX_CONFIG_ERR_RANGE, "precision",
                "fp32|int8");
    char *e2[] = {"CHEXD_LOG_LEVEL=", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, e2, "log_level", NULL);
    char *u1[] = {"chexd", "--uid-root", "1.2.03", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, u1, NOENV, "uid_root \"1.2.03\"", "leading zero",
           "(from flag --uid-root)", NULL);
    char *u2[] = {"CHEXD_UID_ROOT=1.2.x", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, u2, "uid_root", "digits and dots",
           "(from env CHEXD_UID_ROOT)", NULL);
}

static void test_bad_strings(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--listen", "localhost", NULL};
    expect(CHEX_CONFIG_ERR_TYPE, f1, NOENV, "listen", "not an IPv4 or IPv6 address", NULL);
    char *f2[] = {"chexd", "--listen=", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f2, NOENV, "listen: value must not be empty", NULL);
    char *f3[] = {"chexd", "--model", "", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f3, NOENV, "model: value must not be empty", NULL);
    /* one byte more than the field holds */
    char *longpath = malloc(CHEX_PATH_MAX + 16);
    assert_non_null(longpath);
    memcpy(longpath, "--web-root=", 11);
    memset(longpath + 11, 'a', CHEX_PATH_MAX);
    longpath[11 + CHEX_PATH_MAX] = '\0';
    char *f4[] = {"chexd", longpath, NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f4, NOENV, "web_root: value is 1024 bytes long",
           "at most 1023", NULL);
    longpath[11 + CHEX_PATH_MAX - 1] = '\0'; /* 1023 bytes fit */
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 2, f4, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(strlen(cfg.web_root), CHEX_PATH_MAX - 1);
    free(longpath);
}

/* ---- the file itself -------------------------------------------------- */

static void test_unreadable_file(void **state)
{
    fixture *fx = *state;
    char *f1[] = {"chexd", "--config", "/nonexistent/chexd.json", NULL};
    expect(CHEX_CONFIG_ERR_FILE, f1, NOENV, "config: config: cannot open",
           "/nonexistent/chexd.json", "No such file", "(from flag --config)", NULL);
    char *a0[] = {"chexd", NULL};
    char *e1[] = {"CHEXD_CONFIG=/nonexistent/chexd.json", NULL};
    expect(CHEX_CONFIG_ERR_FILE, a0, e1, "cannot open", "(from env CHEXD_CONFIG)", NULL);
    char *f2[] = {"chexd", "--config=", NULL};
    expect(CHEX_CONFIG_ERR_FILE, f2, NOENV, "empty file name", NULL);
    /* a directory opens but cannot be read */
    assert_int_equal(chex_test_tmpl(fx->path, sizeof fx->path, "chex_cfg_dir_", NULL), 0);
    assert_non_null(mkdtemp(fx->path));
    fx->is_dir = 1;
    char *f3[] = {"chexd", "--config", fx->path, NULL};
    expect(CHEX_CONFIG_ERR_FILE, f3, NOENV, fx->path, "(from flag --config)", NULL);
}

static void test_invalid_json(void **state)
{
    fixture *fx = *state;
    const char *bad[] = {"", "{", "{\"port\": 1,}", "{port: 1}", "// c\n{}", "{} {}",
                         "{\"port\": 1} x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = temp_file(fx, bad[i]);
        char *argv[] = {"chexd", fx->arg, NULL};
        expect(CHEX_CONFIG_ERR_FILE, argv, NOENV, "config: config: invalid JSON", path,
               "line ", "(from flag --config)", NULL);
    }
    temp_file(fx, "{\"port\": 1, \"port\": 2}");
    char *argv[] = {"chexd", fx->arg, NULL};
    expect(CHEX_CONFIG_ERR_FILE, argv, NOENV, "duplicate", NULL);
    const char *notobj[] = {"[]", "42", "\"port\"", "null"};
    for (size_t i = 0; i < sizeof notobj / sizeof notobj[0]; i++) {
        temp_file(fx, notobj[i]);
        expect(CHEX_CONFIG_ERR_FILE, argv, NOENV, "must hold a JSON object", NULL);
    }
}

/* ---- between keys ----------------------------------------------------- */

static void test_tls_pair(void **state)
{
    fixture *fx = *state;
    char *f1[] = {"chexd", "--tls-cert-file", "c.pem", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, NOENV, "config: tls_key_file: must be set together",
           "(from flag --tls-cert-file)", NULL);
    char *a0[] = {"chexd", NULL};
    char *e1[] = {"CHEXD_TLS_KEY_FILE=k.pem", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, a0, e1, "config: tls_cert_file: must be set together",
           "(from env CHEXD_TLS_KEY_FILE)", NULL);
    expect_file(fx, "{\"tls_cert_file\": \"c.pem\"}", CHEX_CONFIG_ERR_RANGE,
                "config: tls_key_file:", NULL);
    /* the pair from two sources is fine; a flag can clear a file's value */
    temp_file(fx, "{\"tls_cert_file\": \"c.pem\"}");
    char *f2[] = {"chexd", fx->arg, NULL};
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 2, f2, e1, DEMO, msg, sizeof msg), CHEX_CONFIG_OK);
    char *f3[] = {"chexd", fx->arg, "--tls-cert-file=", NULL};
    assert_int_equal(chex_config_load(&cfg, 3, f3, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_string_equal(cfg.tls_cert_file, "");
}

static void test_model_or_repository(void **state)
{
    fixture *fx = *state;
    char *f1[] = {"chexd", "--model", "m.safetensors", NULL};
    char *e1[] = {"CHEXD_MODEL_REPOSITORY=repo", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, e1, "config: model_repository:",
           "(from env CHEXD_MODEL_REPOSITORY)", "model (from flag --model)", "alternatives", NULL);
    expect_file(fx, "{\"model\": \"m.safetensors\", \"model_repository\": \"repo\"}",
                CHEX_CONFIG_ERR_RANGE, "config: model_repository:", "alternatives");
    /* the repository alone: model keeps its default and is not served */
    char *f2[] = {"chexd", "--model-repository", "repo", NULL};
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 3, f2, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_string_equal(cfg.model_repository, "repo");
}

static void test_pixels_below_min_side(void **state)
{
    (void)state;
    char *f1[] = {"chexd", "--max-image-pixels", "4095", NULL};
    expect(CHEX_CONFIG_ERR_RANGE, f1, NOENV, "max_image_pixels", "min_image_side",
           "(from flag --max-image-pixels)", NULL);
    char *f2[] = {"chexd", "--max-image-pixels", "4096", NULL};
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 3, f2, NOENV, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
}

/* ---- the message buffer and the first error --------------------------- */

static void test_message_buffer(void **state)
{
    (void)state;
    chex_config cfg;
    char *a0[] = {"chexd", NULL};
    char *env[] = {"CHEXD_QUEUE_DEPTH=0", NULL};
    char small[12];
    memset(small, 'X', sizeof small);
    assert_int_equal(chex_config_load(&cfg, 1, a0, env, DEMO, small, 8), CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(small, "config:");
    assert_int_equal(small[8], 'X'); /* nothing written past msglen */
    assert_int_equal(chex_config_load(&cfg, 1, a0, env, DEMO, NULL, 0), CHEX_CONFIG_ERR_RANGE);
    /* several errors: the file is read first, so its error is the one named */
    char *e2[] = {"CHEXD_PORT=0", NULL};
    char *f1[] = {"chexd", "--config", "/nonexistent/x.json", NULL};
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 3, f1, e2, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_ERR_FILE);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int i = 0; i < CHEX_CONFIG_ERR_COUNT; i++) {
        const char *s = chex_config_strerror((chex_config_err)i);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(s, chex_config_strerror((chex_config_err)j));
    }
    assert_string_equal(chex_config_strerror(CHEX_CONFIG_ERR_COUNT), "unknown error");
    assert_string_equal(chex_config_strerror((chex_config_err)-1), "unknown error");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_out_of_range_each_source),
        T(test_other_ranges),
        T(test_out_of_range_file_negative),
        T(test_deadline_keys_env_and_flag),
        T(test_unknown_key_file),
        T(test_unknown_key_env),
        T(test_unknown_flag_and_positional),
        T(test_missing_flag_value),
        T(test_wrong_json_type),
        T(test_bad_numbers),
        T(test_bad_enum_values),
        T(test_bad_strings),
        T(test_unreadable_file),
        T(test_invalid_json),
        T(test_tls_pair),
        T(test_model_or_repository),
        T(test_pixels_below_min_side),
        T(test_message_buffer),
        T(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
