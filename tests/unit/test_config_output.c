/* The printed effective config (chex_config_to_json) and the pieces bin/chex
 * reuses: chex_config_defaults, chex_config_set, chex_config_check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "tests/unit/helpers/tmpfiles.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define DEMO "models/chexnet-demo.safetensors"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    if (!root)
        fail_msg("effective config is not JSON (%s): %s", err.text, text);
    assert_true(json_is_object(root));
    return root;
}

static void assert_int_key(const json_t *root, const char *key, long long v)
{
    json_t *j = json_object_get(root, key);
    if (!json_is_integer(j))
        fail_msg("%s is not an integer", key);
    assert_int_equal(json_integer_value(j), v);
}

static void assert_str_key(const json_t *root, const char *key, const char *v)
{
    json_t *j = json_object_get(root, key);
    if (!json_is_string(j))
        fail_msg("%s is not a string", key);
    assert_string_equal(json_string_value(j), v);
}

/* Values from the three sources show in the printed config, with JSON types. */
static void test_effective_json_from_all_sources(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0,
                                 "{\"port\": 9000, \"max_image_pixels\": 123456, "
                                 "\"log_format\": \"json\", \"queue_depth\": 5}");
    char *argv[] = {"chexd", "--config", (char *)path, "--queue-depth", "6", "--check-config",
                    NULL};
    char *envp[] = {"CHEXD_MAX_BATCH=3", "CHEXD_QUEUE_DEPTH=4", "CHEXD_WEB_ROOT=site/", NULL};
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 6, argv, envp, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_CHECK);
    char *text = chex_config_to_json(&cfg);
    assert_non_null(text);
    json_t *root = parse(text);
    free(text);
    assert_int_key(root, "port", 9000);
    assert_int_key(root, "max_image_pixels", 123456);
    assert_str_key(root, "log_format", "json");
    assert_int_key(root, "max_batch", 3);
    assert_str_key(root, "web_root", "site/");
    assert_int_key(root, "queue_depth", 6);
    assert_int_key(root, "max_upload_bytes", 32 << 20);
    assert_str_key(root, "model", DEMO);
    assert_str_key(root, "listen", "127.0.0.1");
    json_decref(root);
}

/* The printed config, used as a config file, gives the same config back. */
static void test_json_round_trip(void **state)
{
    chex_test_tmpfiles *fx = *state;
    char *argv[] = {"chexd", "--listen", "::", "--max-upload-bytes", "1073741824",
                    "--tls-cert-file", "c \"quoted\" \\ path.pem", "--tls-key-file",
                    "k.pem", "--precision", "int8", "--per-ip-connection-limit", "9", NULL};
    char *envp[] = {NULL};
    chex_config a, b;
    char msg[256];
    assert_int_equal(chex_config_load(&a, 13, argv, envp, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    char *text = chex_config_to_json(&a);
    assert_non_null(text);
    const char *path = chex_test_tmpfile(fx, 0, text);
    free(text);
    char *argv2[] = {"chexd", "--config", (char *)path, NULL};
    if (chex_config_load(&b, 3, argv2, envp, "other-default.safetensors", msg, sizeof msg) !=
        CHEX_CONFIG_OK)
        fail_msg("printed config does not load back: %s", msg);
    assert_memory_equal(&a, &b, sizeof a);
}

/* The token file's path is printed, never its contents. */
static void test_token_contents_not_printed(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0, "s3cr3t-token-value\n");
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
    assert_int_equal(chex_config_set(&cfg, "api_token_file", path, "test", msg, sizeof msg),
                     CHEX_CONFIG_OK);
    char *text = chex_config_to_json(&cfg);
    assert_non_null(text);
    assert_non_null(strstr(text, path));
    assert_null(strstr(text, "s3cr3t"));
    free(text);
}

/* A path that is not UTF-8 still prints as valid JSON. */
static void test_non_utf8_path(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
    assert_int_equal(chex_config_set(&cfg, "web_root", "dir\xff\xfe/x", NULL, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    char *text = chex_config_to_json(&cfg);
    assert_non_null(text);
    json_t *root = parse(text);
    free(text);
    assert_str_key(root, "web_root", "dir?" "?/x"); /* split: "??/" is a trigraph */
    json_decref(root);
}

static void test_set_errors_leave_config_unchanged(void **state)
{
    (void)state;
    chex_config cfg, before;
    char msg[256];
    assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
    memcpy(&before, &cfg, sizeof cfg);
    assert_int_equal(chex_config_set(&cfg, "threads", "300", "flag --threads", msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(msg, "config: threads: value 300 out of range 0..256 (from flag --threads)");
    assert_int_equal(chex_config_set(&cfg, "threads", "2x", "flag --threads", msg, sizeof msg),
                     CHEX_CONFIG_ERR_TYPE);
    assert_int_equal(chex_config_set(&cfg, "precision", "bf16", NULL, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_non_null(strstr(msg, "(from set)"));
    assert_int_equal(chex_config_set(&cfg, "model", "", "flag --model", msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_memory_equal(&cfg, &before, sizeof cfg);
    assert_int_equal(chex_config_set(&cfg, "batch", "4", "flag --batch", msg, sizeof msg),
                     CHEX_CONFIG_ERR_UNKNOWN);
    assert_non_null(strstr(msg, "config: batch: unknown key"));
    assert_non_null(strstr(msg, "(from flag --batch)"));
    assert_int_equal(chex_config_set(&cfg, "threads", NULL, "x", msg, sizeof msg),
                     CHEX_CONFIG_ERR_TYPE);
    assert_memory_equal(&cfg, &before, sizeof cfg);
    assert_int_equal(chex_config_set(&cfg, "max-batch", "2", "x", msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(cfg.max_batch, 2);
}

static void test_check_between_keys(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
    assert_int_equal(chex_config_check(&cfg, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(chex_config_set(&cfg, "tls_key_file", "k.pem", "x", msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(chex_config_check(&cfg, msg, sizeof msg), CHEX_CONFIG_ERR_RANGE);
    assert_non_null(strstr(msg, "config: tls_cert_file: must be set together with tls_key_file"));
    assert_int_equal(chex_config_set(&cfg, "tls_cert_file", "c.pem", "x", msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(chex_config_check(&cfg, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(chex_config_set(&cfg, "max_image_pixels", "100", "x", msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(chex_config_check(&cfg, msg, sizeof msg), CHEX_CONFIG_ERR_RANGE);
    assert_non_null(strstr(msg, "max_image_pixels"));
}

static void test_defaults_model_argument(void **state)
{
    (void)state;
    chex_config cfg;
    assert_int_equal(chex_config_defaults(&cfg, NULL), CHEX_CONFIG_OK);
    assert_string_equal(cfg.model, "");
    assert_int_equal(cfg.port, 8080);
    char *longp = malloc(CHEX_PATH_MAX + 1);
    assert_non_null(longp);
    memset(longp, 'm', CHEX_PATH_MAX);
    longp[CHEX_PATH_MAX] = '\0';
    assert_int_equal(chex_config_defaults(&cfg, longp), CHEX_CONFIG_ERR_RANGE);
    assert_string_equal(cfg.model, "");
    char *argv[] = {"chexd", NULL};
    char *envp[] = {NULL};
    char msg[256];
    assert_int_equal(chex_config_load(&cfg, 1, argv, envp, longp, msg, sizeof msg),
                     CHEX_CONFIG_ERR_RANGE);
    assert_non_null(strstr(msg, "config: model:"));
    free(longp);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, chex_test_tmpfiles_setup, chex_test_tmpfiles_teardown)
    const struct CMUnitTest tests[] = {
        T(test_effective_json_from_all_sources),
        T(test_json_round_trip),
        T(test_token_contents_not_printed),
        T(test_non_utf8_path),
        T(test_set_errors_leave_config_unchanged),
        T(test_check_between_keys),
        T(test_defaults_model_argument),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
