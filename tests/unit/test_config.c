/* Precedence: defaults < JSON file < CHEXD_* environment < flags, how the
 * file is named (--config, CHEXD_CONFIG), and the special flags. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "tests/unit/helpers/tmpfiles.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

#define DEMO "models/chexnet-demo.safetensors"

static chex_config_err load(chex_config *cfg, char **argv, char **envp, char *msg, size_t n)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return chex_config_load(cfg, argc, argv, envp, DEMO, msg, n);
}

static void test_defaults(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256] = "untouched";
    char *argv[] = {"chexd", NULL};
    char *envp[] = {"HOME=/nonexistent", "chexd_port=1", NULL}; /* not CHEXD_: ignored */
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_string_equal(msg, "");
    assert_string_equal(cfg.listen, "127.0.0.1");
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.threads, 0);
    assert_int_equal(cfg.http_threads, 4);
    assert_string_equal(cfg.model, DEMO);
    assert_int_equal(cfg.max_upload_bytes, 32u << 20);
    assert_int_equal(cfg.max_image_pixels, 50000000);
    assert_int_equal(cfg.min_image_side, 64);
    assert_string_equal(cfg.png16_scaling, "minmax");
    assert_int_equal(cfg.queue_depth, 64);
    assert_int_equal(cfg.max_batch, 8);
    assert_int_equal(cfg.batch_window_ms, 0);
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.memory_limit_mb, chex_config_memory_default_mb());
    assert_int_equal(cfg.request_timeout_ms, 30000);
    assert_int_equal(cfg.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg.connection_limit, 512);
    assert_int_equal(cfg.per_ip_connection_limit, 64);
    assert_int_equal(cfg.connection_timeout_s, 10);
    assert_int_equal(cfg.header_timeout_s, 10);
    assert_int_equal(cfg.min_upload_bytes_per_s, 16384);
    assert_int_equal(cfg.connection_memory_limit, 64 * 1024);
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.log_format, "logfmt");
    assert_string_equal(cfg.api_token_file, "");
    assert_string_equal(cfg.tls_cert_file, "");
    assert_string_equal(cfg.tls_key_file, "");
    assert_string_equal(cfg.web_root, "");
    assert_string_equal(cfg.precision, "fp32");

    /* chex_config_defaults gives the same struct, byte for byte */
    chex_config d;
    memset(&d, 0xA5, sizeof d);
    assert_int_equal(chex_config_defaults(&d, DEMO), CHEX_CONFIG_OK);
    assert_memory_equal(&d, &cfg, sizeof d);
}

static void test_file_overrides_default(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0,
                                 "{\"queue_depth\": 7, \"listen\": \"::1\", "
                                 "\"max_upload_bytes\": 1048576, \"log_level\": \"debug\"}");
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd", "--config", (char *)path, NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.queue_depth, 7);
    assert_string_equal(cfg.listen, "::1");
    assert_int_equal(cfg.max_upload_bytes, 1048576);
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.port, 8080); /* not in the file: default */
}

static void test_env_overrides_file(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0, "{\"queue_depth\": 7, \"port\": 9001}");
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd", "--config", (char *)path, NULL};
    char *envp[] = {"CHEXD_QUEUE_DEPTH=9", NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.queue_depth, 9);
    assert_int_equal(cfg.port, 9001); /* file value kept where env is silent */
}

static void test_flag_overrides_env(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0, "{\"queue_depth\": 7, \"max_batch\": 2}");
    char msg[256];
    char *envp[] = {"CHEXD_QUEUE_DEPTH=9", "CHEXD_MAX_BATCH=3", NULL};
    chex_config cfg;
    /* flag given before --config still wins: precedence is by source, not order */
    char *argv1[] = {"chexd", "--queue-depth", "11", "--config", (char *)path, NULL};
    assert_int_equal(load(&cfg, argv1, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.queue_depth, 11);
    assert_int_equal(cfg.max_batch, 3);
    char joined[128];
    snprintf(joined, sizeof joined, "--config=%s", path);
    char *argv2[] = {"chexd", joined, "--queue-depth=12", NULL};
    assert_int_equal(load(&cfg, argv2, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.queue_depth, 12);
    assert_int_equal(cfg.max_batch, 3);
}

static void test_last_flag_wins(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd", "--port", "1000", "--port=2000", "--log-format", "json", NULL};
    char *envp[] = {NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 2000);
    assert_string_equal(cfg.log_format, "json");
}

static void test_chexd_config_env_names_file(void **state)
{
    chex_test_tmpfiles *fx = *state;
    const char *path = chex_test_tmpfile(fx, 0, "{\"port\": 1111, \"threads\": 3}");
    char var[128];
    snprintf(var, sizeof var, "CHEXD_CONFIG=%s", path);
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd", NULL};
    char *envp[] = {var, NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 1111);
    assert_int_equal(cfg.threads, 3);

    /* --config beats CHEXD_CONFIG: only the flag's file is read */
    const char *other = chex_test_tmpfile(fx, 1, "{\"port\": 2222}");
    char *argv2[] = {"chexd", "--config", (char *)other, NULL};
    assert_int_equal(load(&cfg, argv2, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 2222);
    assert_int_equal(cfg.threads, 0);

    /* an empty CHEXD_CONFIG means no file */
    char *envp2[] = {"CHEXD_CONFIG=", NULL};
    assert_int_equal(load(&cfg, argv, envp2, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 8080);
}

static void test_allowed_extra_variables(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd", NULL};
    char *envp[] = {"CHEXD_ISA=generic", "CHEXD_CONFIG=", "CHEXD_PORT=8181", NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 8181);
    /* a NULL environment is no environment */
    assert_int_equal(chex_config_load(&cfg, 1, argv, NULL, DEMO, msg, sizeof msg),
                     CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 8080);
}

static void test_special_flags(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    char *envp[] = {NULL};
    char *bad_env[] = {"CHEXD_PORT=nope", NULL};
    /* --help and --version answer even when the rest is wrong */
    char *a1[] = {"chexd", "--no-such-flag", "--help", NULL};
    assert_int_equal(load(&cfg, a1, bad_env, msg, sizeof msg), CHEX_CONFIG_HELP);
    char *a2[] = {"chexd", "-h", NULL};
    assert_int_equal(load(&cfg, a2, envp, msg, sizeof msg), CHEX_CONFIG_HELP);
    char *a3[] = {"chexd", "--port", "1", "--version", NULL};
    assert_int_equal(load(&cfg, a3, bad_env, msg, sizeof msg), CHEX_CONFIG_VERSION);
    /* --check-config: a full load, then CHECK */
    char *a4[] = {"chexd", "--check-config", "--port", "4242", NULL};
    assert_int_equal(load(&cfg, a4, envp, msg, sizeof msg), CHEX_CONFIG_CHECK);
    assert_int_equal(cfg.port, 4242);
    /* ... which still reports errors */
    assert_int_equal(load(&cfg, a4, bad_env, msg, sizeof msg), CHEX_CONFIG_ERR_TYPE);
    /* a value is never taken from a word starting with "--" */
    char *a5[] = {"chexd", "--model", "--help", NULL};
    assert_int_equal(load(&cfg, a5, envp, msg, sizeof msg), CHEX_CONFIG_HELP);
    /* but "--key=--x" is a value, and a leading single dash is fine too */
    char *a6[] = {"chexd", "--web-root=--odd", "--model", "-weights", NULL};
    assert_int_equal(load(&cfg, a6, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_string_equal(cfg.web_root, "--odd");
    assert_string_equal(cfg.model, "-weights");
}

static void test_values_accepted(void **state)
{
    (void)state;
    chex_config cfg;
    char msg[256];
    char *argv[] = {"chexd",         "--port",           "+65535",          "--threads",
                    "0",             "--max-batch=64",   "--listen=0.0.0.0", "--tls-cert-file",
                    "c.pem",         "--tls-key-file",   "k.pem",           "--web-root=",
                    "--max-upload-bytes", "1073741824", NULL};
    char *envp[] = {"CHEXD_BATCH_WINDOW_MS=0007", NULL};
    assert_int_equal(load(&cfg, argv, envp, msg, sizeof msg), CHEX_CONFIG_OK);
    assert_int_equal(cfg.port, 65535);
    assert_int_equal(cfg.max_batch, 64);
    assert_int_equal(cfg.batch_window_ms, 7);
    assert_string_equal(cfg.listen, "0.0.0.0");
    assert_string_equal(cfg.tls_cert_file, "c.pem");
    assert_string_equal(cfg.tls_key_file, "k.pem");
    assert_string_equal(cfg.web_root, "");
    assert_int_equal(cfg.max_upload_bytes, UINT64_C(1) << 30);
}

#define WITH_FILES(f) \
    cmocka_unit_test_setup_teardown(f, chex_test_tmpfiles_setup, chex_test_tmpfiles_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        WITH_FILES(test_file_overrides_default),
        WITH_FILES(test_env_overrides_file),
        WITH_FILES(test_flag_overrides_env),
        cmocka_unit_test(test_last_flag_wins),
        WITH_FILES(test_chexd_config_env_names_file),
        cmocka_unit_test(test_allowed_extra_variables),
        cmocka_unit_test(test_special_flags),
        cmocka_unit_test(test_values_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
