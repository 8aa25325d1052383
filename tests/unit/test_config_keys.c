/* Every key of the contract reaches the struct from each source (JSON file,
 * CHEXD_* variable, both flag spellings), shows in the effective JSON, and is
 * documented by chex_config_usage. The key list here is written from the
 * contract (config/config.h), independently of the table in config.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "tests/unit/helpers/guard.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

typedef struct {
    const char *key;   /* JSON key */
    const char *flag;  /* spelled by hand, not derived */
    const char *env;
    int is_string;     /* string/enum (else a number) */
    const char *value; /* a valid value that differs from the default */
    const char *deflt; /* default as printed in JSON (numbers as text) */
} key_case;

static const key_case cases[] = {
    {"listen", "--listen", "CHEXD_LISTEN", 1, "::1", "127.0.0.1"},
    {"port", "--port", "CHEXD_PORT", 0, "18080", "8080"},
    {"threads", "--threads", "CHEXD_THREADS", 0, "2", "0"},
    {"http_threads", "--http-threads", "CHEXD_HTTP_THREADS", 0, "7", "4"},
    {"model", "--model", "CHEXD_MODEL", 1, "weights/other.safetensors", "demo.safetensors"},
    {"model_repository", "--model-repository", "CHEXD_MODEL_REPOSITORY", 1, "repo/models", ""},
    {"max_upload_bytes", "--max-upload-bytes", "CHEXD_MAX_UPLOAD_BYTES", 0, "1048576",
     "33554432"},
    {"max_image_pixels", "--max-image-pixels", "CHEXD_MAX_IMAGE_PIXELS", 0, "1000000",
     "50000000"},
    {"min_image_side", "--min-image-side", "CHEXD_MIN_IMAGE_SIDE", 0, "32", "64"},
    {"png16_scaling", "--png16-scaling", "CHEXD_PNG16_SCALING", 1, "sbit", "minmax"},
    {"max_overlay_side", "--max-overlay-side", "CHEXD_MAX_OVERLAY_SIDE", 0, "1024", "2048"},
    {"queue_depth", "--queue-depth", "CHEXD_QUEUE_DEPTH", 0, "4", "64"},
    {"max_batch", "--max-batch", "CHEXD_MAX_BATCH", 0, "16", "8"},
    {"batch_window_ms", "--batch-window-ms", "CHEXD_BATCH_WINDOW_MS", 0, "20", "0"},
    {"workers", "--workers", "CHEXD_WORKERS", 0, "1", "0"},
    {"memory_limit_mb", "--memory-limit-mb", "CHEXD_MEMORY_LIMIT_MB", 0, "300", "1024"},
    {"request_timeout_ms", "--request-timeout-ms", "CHEXD_REQUEST_TIMEOUT_MS", 0, "1500",
     "30000"},
    {"shutdown_timeout_ms", "--shutdown-timeout-ms", "CHEXD_SHUTDOWN_TIMEOUT_MS", 0, "2500",
     "10000"},
    {"connection_limit", "--connection-limit", "CHEXD_CONNECTION_LIMIT", 0, "100", "512"},
    {"per_ip_connection_limit", "--per-ip-connection-limit", "CHEXD_PER_IP_CONNECTION_LIMIT", 0,
     "20", "64"},
    {"connection_timeout_s", "--connection-timeout-s", "CHEXD_CONNECTION_TIMEOUT_S", 0, "3",
     "10"},
    {"header_timeout_s", "--header-timeout-s", "CHEXD_HEADER_TIMEOUT_S", 0, "2", "10"},
    {"min_upload_bytes_per_s", "--min-upload-bytes-per-s", "CHEXD_MIN_UPLOAD_BYTES_PER_S", 0,
     "0", "16384"},
    {"connection_memory_limit", "--connection-memory-limit", "CHEXD_CONNECTION_MEMORY_LIMIT", 0,
     "131072", "65536"},
    {"log_level", "--log-level", "CHEXD_LOG_LEVEL", 1, "warn", "info"},
    {"log_format", "--log-format", "CHEXD_LOG_FORMAT", 1, "json", "logfmt"},
    {"api_token_file", "--api-token-file", "CHEXD_API_TOKEN_FILE", 1, "secrets/token", ""},
    {"tls_cert_file", "--tls-cert-file", "CHEXD_TLS_CERT_FILE", 1, "tls/cert.pem", ""},
    {"tls_key_file", "--tls-key-file", "CHEXD_TLS_KEY_FILE", 1, "tls/key.pem", ""},
    {"web_root", "--web-root", "CHEXD_WEB_ROOT", 1, "web/", ""},
    {"precision", "--precision", "CHEXD_PRECISION", 1, "int8", "fp32"},
    {"uid_root", "--uid-root", "CHEXD_UID_ROOT", 1, "1.2.826.0.1.3680043.10.543", ""},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define DEMO "demo.safetensors"

/* The default as the effective config prints it: memory_limit_mb's depends
 * on this process's cgroup (1024, as --help says, when there is no limit). */
static const char *json_default(const key_case *c)
{
    static char mem[32];
    if (strcmp(c->key, "memory_limit_mb") != 0)
        return c->deflt;
    snprintf(mem, sizeof mem, "%d", chex_config_memory_default_mb());
    return mem;
}

/* The effective config as a parsed JSON object (caller decrefs). */
static json_t *effective(const chex_config *cfg)
{
    char *text = chex_config_to_json(cfg);
    assert_non_null(text);
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    free(text);
    assert_non_null(root);
    assert_true(json_is_object(root));
    return root;
}

/* Asserts that key k in the JSON holds text value v (numbers compared as text). */
static void assert_json_value(const json_t *root, const key_case *c, const char *v)
{
    json_t *j = json_object_get(root, c->key);
    assert_non_null(j);
    if (c->is_string) {
        assert_true(json_is_string(j));
        assert_string_equal(json_string_value(j), v);
    } else {
        assert_true(json_is_integer(j));
        char buf[32];
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        assert_string_equal(buf, v);
    }
}

/* Loads with the given argv (argv[0] added) and envp; expects OK. The key set
 * to a non-default value alone may break the TLS pair rule, so the partner is
 * added by the caller. */
static void load_ok(chex_config *cfg, int argc, char **argv, char **envp)
{
    char msg[512];
    chex_config_err e = chex_config_load(cfg, argc, argv, envp, DEMO, msg, sizeof msg);
    if (e != CHEX_CONFIG_OK)
        fail_msg("load failed: %s", msg);
}

static const key_case *partner(const key_case *c)
{
    const char *want = NULL;
    if (strcmp(c->key, "tls_cert_file") == 0)
        want = "tls_key_file";
    else if (strcmp(c->key, "tls_key_file") == 0)
        want = "tls_cert_file";
    for (size_t i = 0; want && i < NCASES; i++)
        if (strcmp(cases[i].key, want) == 0)
            return &cases[i];
    return NULL;
}

static void test_defaults_in_json(void **state)
{
    (void)state;
    chex_config cfg;
    char *argv[] = {"chexd", NULL};
    char *envp[] = {NULL};
    load_ok(&cfg, 1, argv, envp);
    json_t *root = effective(&cfg);
    /* exactly the contract's keys, nothing more */
    assert_int_equal(json_object_size(root), NCASES);
    for (size_t i = 0; i < NCASES; i++)
        assert_json_value(root, &cases[i], json_default(&cases[i]));
    json_decref(root);
}

static void test_every_key_from_file(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(chex_test_tmpl(path, sizeof path, "chex_cfg_keys_", NULL), 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    /* model and model_repository are alternatives (test_config_errors.c):
     * every key but the repository here, which the env and flag tests cover. */
    fputs("{", f);
    for (size_t i = 0; i < NCASES; i++) {
        if (strcmp(cases[i].key, "model_repository") == 0)
            continue;
        if (cases[i].is_string)
            fprintf(f, "%s\"%s\": \"%s\"", i ? ", " : "", cases[i].key, cases[i].value);
        else
            fprintf(f, "%s\"%s\": %s", i ? ", " : "", cases[i].key, cases[i].value);
    }
    fputs("}\n", f);
    fclose(f);

    chex_config cfg;
    char *argv[] = {"chexd", "--config", path, NULL};
    char *envp[] = {NULL};
    char msg[512];
    chex_config_err e = chex_config_load(&cfg, 3, argv, envp, DEMO, msg, sizeof msg);
    unlink(path);
    if (e != CHEX_CONFIG_OK)
        fail_msg("load failed: %s", msg);
    json_t *root = effective(&cfg);
    for (size_t i = 0; i < NCASES; i++)
        assert_json_value(root, &cases[i],
                          strcmp(cases[i].key, "model_repository") ? cases[i].value : "");
    json_decref(root);
}

static void test_every_key_from_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        const key_case *c = &cases[i], *p = partner(c);
        char var[256], pvar[256];
        snprintf(var, sizeof var, "%s=%s", c->env, c->value);
        char *envp[] = {"PATH=/bin", var, NULL, NULL};
        if (p) {
            snprintf(pvar, sizeof pvar, "%s=%s", p->env, p->value);
            envp[2] = pvar;
        }
        char *argv[] = {"chexd", NULL};
        chex_config cfg;
        load_ok(&cfg, 1, argv, envp);
        json_t *root = effective(&cfg);
        assert_json_value(root, c, c->value);
        /* the others keep their defaults */
        for (size_t j = 0; j < NCASES; j++)
            if (j != i && &cases[j] != p)
                assert_json_value(root, &cases[j], json_default(&cases[j]));
        json_decref(root);
    }
}

static void test_every_key_from_flag_both_spellings(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        const key_case *c = &cases[i], *p = partner(c);
        for (int joined = 0; joined < 2; joined++) {
            char eq[256], peq[256];
            char *argv[8] = {"chexd"};
            int argc = 1;
            if (joined) {
                snprintf(eq, sizeof eq, "%s=%s", c->flag, c->value);
                argv[argc++] = eq;
            } else {
                argv[argc++] = (char *)c->flag;
                argv[argc++] = (char *)c->value;
            }
            if (p) {
                snprintf(peq, sizeof peq, "%s=%s", p->flag, p->value);
                argv[argc++] = peq;
            }
            argv[argc] = NULL;
            char *envp[] = {NULL};
            chex_config cfg;
            load_ok(&cfg, argc, argv, envp);
            json_t *root = effective(&cfg);
            assert_json_value(root, c, c->value);
            for (size_t j = 0; j < NCASES; j++)
                if (j != i && &cases[j] != p)
                    assert_json_value(root, &cases[j], json_default(&cases[j]));
            json_decref(root);
        }
    }
}

/* chex_config_set takes the JSON name and the dashed spelling. */
static void test_every_key_through_set(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        chex_config cfg;
        char msg[256];
        assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
        assert_int_equal(chex_config_set(&cfg, cases[i].key, cases[i].value, "test", msg,
                                         sizeof msg),
                         CHEX_CONFIG_OK);
        json_t *root = effective(&cfg);
        assert_json_value(root, &cases[i], cases[i].value);
        json_decref(root);

        assert_int_equal(chex_config_defaults(&cfg, DEMO), CHEX_CONFIG_OK);
        assert_int_equal(chex_config_set(&cfg, cases[i].flag + 2, cases[i].value, "test", msg,
                                         sizeof msg),
                         CHEX_CONFIG_OK);
        root = effective(&cfg);
        assert_json_value(root, &cases[i], cases[i].value);
        json_decref(root);
    }
}

static void test_usage_mentions_every_key(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    chex_config_usage("chexd", out);
    fclose(out);
    assert_non_null(text);
    const char *specials[] = {"--help", "--version", "--check-config", "--config FILE",
                              "CHEXD_CONFIG", "CHEXD_ISA"};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        if (!strstr(text, specials[i]))
            fail_msg("usage lacks %s", specials[i]);
    const char *enums[] = {"minmax|sbit|full", "debug|info|warn|error", "json|logfmt",
                           "fp32|int8"};
    for (size_t i = 0; i < sizeof enums / sizeof enums[0]; i++)
        if (!strstr(text, enums[i]))
            fail_msg("usage lacks the values %s", enums[i]);
    for (size_t i = 0; i < NCASES; i++) {
        char flag[80], key[80];
        /* "--port " so --port does not match inside another flag */
        snprintf(flag, sizeof flag, "%s ", cases[i].flag);
        snprintf(key, sizeof key, "key %s,", cases[i].key);
        if (!strstr(text, flag) || !strstr(text, cases[i].env) || !strstr(text, key))
            fail_msg("usage does not document %s", cases[i].key);
        /* the line after the key names its default */
        const char *at = strstr(text, key);
        const char *eol = strchr(at, '\n');
        assert_non_null(eol);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)(eol - at), at);
        if (!strstr(line, "default "))
            fail_msg("usage line for %s has no default: %s", cases[i].key, line);
        if (strcmp(cases[i].key, "model") != 0 && cases[i].deflt[0] &&
            !strstr(line, cases[i].deflt))
            fail_msg("usage line for %s does not show default %s: %s", cases[i].key,
                     cases[i].deflt, line);
    }
    free(text);
}

/* docs/CONFIG.md (read from the repository root, where tests run) has one
 * table row per key with its flag, variable, and the type and default that
 * --help prints, so the documentation cannot drift from the table. */
static void test_docs_table_matches_usage(void **state)
{
    (void)state;
    FILE *f = fopen("docs/CONFIG.md", "r");
    if (!f)
        fail_msg("cannot open docs/CONFIG.md (run from the repository root)");
    char *doc = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            doc = realloc(doc, cap);
            assert_non_null(doc);
        }
        size_t n = fread(doc + len, 1, 4096, f);
        len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    doc[len] = '\0';

    char *usage = NULL;
    size_t ulen = 0;
    FILE *out = open_memstream(&usage, &ulen);
    assert_non_null(out);
    chex_config_usage("chexd", out);
    fclose(out);

    for (size_t i = 0; i < NCASES; i++) {
        const key_case *c = &cases[i];
        char head[128];
        snprintf(head, sizeof head, "| `%s` | `%s ", c->key, c->flag);
        const char *row = strstr(doc, head);
        if (!row)
            fail_msg("docs/CONFIG.md has no row for %s", c->key);
        const char *eol = strchr(row, '\n');
        assert_non_null(eol);
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)(eol - row), row);

        /* "key K, TYPE, default D" from the usage text */
        char ukey[96];
        snprintf(ukey, sizeof ukey, "key %s, ", c->key);
        const char *u = strstr(usage, ukey);
        assert_non_null(u);
        u += strlen(ukey);
        const char *d = strstr(u, ", default ");
        assert_non_null(d);
        char type[160], esc[320];
        snprintf(type, sizeof type, "%.*s", (int)(d - u), u);
        size_t k = 0;
        for (const char *t = type; *t && k + 2 < sizeof esc; t++) {
            if (*t == '|')
                esc[k++] = '\\';
            esc[k++] = *t;
        }
        esc[k] = '\0';
        char cell[340], env[96], def[96];
        snprintf(cell, sizeof cell, "| %s |", esc);
        snprintf(env, sizeof env, "| `%s` |", c->env);
        if (strcmp(c->key, "model") == 0)
            snprintf(def, sizeof def, "| the demo model |");
        else if (c->deflt[0])
            snprintf(def, sizeof def, "| `%s` |", c->deflt);
        else
            snprintf(def, sizeof def, "| (empty) |");
        if (!strstr(line, cell) || !strstr(line, env) || !strstr(line, def))
            fail_msg("docs/CONFIG.md row for %s disagrees with --help (%s, %s, %s): %s", c->key,
                     cell, env, def, line);
    }
    free(usage);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_in_json),
        cmocka_unit_test(test_every_key_from_file),
        cmocka_unit_test(test_every_key_from_env),
        cmocka_unit_test(test_every_key_from_flag_both_spellings),
        cmocka_unit_test(test_every_key_through_set),
        cmocka_unit_test(test_usage_mentions_every_key),
        cmocka_unit_test(test_docs_table_matches_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
