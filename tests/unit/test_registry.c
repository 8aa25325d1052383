/* tests/unit/test_registry.c - server/registry.c on the demo weights
 * ($MODELS/chexnet-demo.safetensors): repository scanning and its errors,
 * finding models and versions, reloads that keep acquired weights alive until
 * released, a failed reload keeping the old weights, and the memory budget's
 * account of the second copy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "server/budget.h"
#include "server/log.h"
#include "server/registry.h"
#include "tests/unit/helpers/guard.h"

static const char *env_or(const char *k, const char *def)
{
    const char *v = getenv(k);
    return v && *v ? v : def;
}

typedef struct {
    char dir[256];
    uint8_t *demo;
    size_t demo_len;
    chex_config cfg;
} fixture;

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* dir/rel made of the demo weights; bias_delta != 0 changes the classifier's
 * biases (other weights, another sha256); len 0 = the whole file. */
static void put_model(fixture *fx, const char *rel, float bias_delta, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fx->dir, rel);
    for (char *s = path + strlen(fx->dir) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdir(path, 0700);
        *s = '/';
    }
    uint8_t *b = malloc(fx->demo_len);
    assert_non_null(b);
    memcpy(b, fx->demo, fx->demo_len);
    if (bias_delta != 0.0f) {
        /* classifier.bias is the file's last tensor in no particular place: find its
         * offsets in the header text */
        uint64_t hl;
        memcpy(&hl, b, 8);
        const char *h = (const char *)b + 8;
        char *hdr = strndup(h, (size_t)hl);
        assert_non_null(hdr);
        char *t = strstr(hdr, "\"classifier.bias\"");
        assert_non_null(t);
        char *o = strstr(t, "\"data_offsets\"");
        assert_non_null(o);
        unsigned long long s0, e0;
        assert_int_equal(sscanf(strchr(o, '[') + 1, "%llu,%llu", &s0, &e0), 2);
        for (unsigned long long k = s0; k < e0; k += 4) {
            float v;
            memcpy(&v, b + 8 + hl + k, 4);
            v += bias_delta;
            memcpy(b + 8 + hl + k, &v, 4);
        }
        free(hdr);
    }
    write_file(path, b, len ? len : fx->demo_len);
    free(b);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    char p[1024];
    snprintf(p, sizeof p, "%s/chexnet-demo.safetensors", env_or("MODELS", "models"));
    fx->demo = chex_test_read_file(p, &fx->demo_len);
    if (!fx->demo) {
        fprintf(stderr, "cannot read %s (run make first)\n", p);
        free(fx);
        return -1;
    }
    if (chex_test_tmpl(fx->dir, sizeof fx->dir, "chex_registry_", NULL) != 0 ||
        !mkdtemp(fx->dir)) {
        free(fx->demo);
        free(fx);
        return -1;
    }
    chex_config_defaults(&fx->cfg, p);
    snprintf(fx->cfg.model_repository, sizeof fx->cfg.model_repository, "%s", fx->dir);
    chex_log_init("error", "logfmt");
    *state = fx;
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (nftw(fx->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", fx->dir);
    free(fx->demo);
    free(fx);
    return 0;
}

static void expect_open_fails(fixture *fx, const char *needle)
{
    chex_registry *reg = NULL;
    char msg[1024] = "";
    assert_int_equal(chex_registry_open(&reg, &fx->cfg, 1, 1, msg, sizeof msg), -1);
    assert_null(reg);
    if (!strstr(msg, needle))
        fail_msg("message lacks \"%s\": %s", needle, msg);
}

static void test_repository_errors(void **state)
{
    fixture *fx = *state;
    expect_open_fails(fx, "holds no NAME.safetensors or NAME/VERSION/model.safetensors");
    char p[512];
    snprintf(p, sizeof p, "%s/m/3", fx->dir);
    mkdir(p, 0700);
    *strrchr(p, '/') = '\0';
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/m/3", fx->dir);
    mkdir(p, 0700);
    expect_open_fails(fx, "/m/3 has no model.safetensors");
    put_model(fx, "m/3/model.safetensors", 0.0f, 0);
    put_model(fx, "m.safetensors", 0.0f, 0);
    put_model(fx, "m/1/model.safetensors", 0.0f, 0);
    expect_open_fails(fx, "model m is both m.safetensors and a folder m/");
    snprintf(p, sizeof p, "%s/m.safetensors", fx->dir);
    unlink(p);
    put_model(fx, "bad name.safetensors", 0.0f, 0);
    expect_open_fails(fx, "model name \"bad name\" must be letters");
    snprintf(p, sizeof p, "%s/bad name.safetensors", fx->dir);
    unlink(p);
    put_model(fx, "cut.safetensors", 0.0f, 1000);
    expect_open_fails(fx, "/cut.safetensors:");
    snprintf(p, sizeof p, "%s/nonexistent", fx->dir);
    snprintf(fx->cfg.model_repository, sizeof fx->cfg.model_repository, "%s", p);
    expect_open_fails(fx, "cannot open the folder");
}

static void test_find_and_versions(void **state)
{
    fixture *fx = *state;
    put_model(fx, "b/2/model.safetensors", 0.5f, 0);
    put_model(fx, "b/10/model.safetensors", 0.0f, 0);
    put_model(fx, "a.safetensors", 0.0f, 0);
    chex_registry *reg = NULL;
    char msg[1024] = "";
    if (chex_registry_open(&reg, &fx->cfg, 1, 1, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    assert_int_equal(chex_registry_count(reg), 3);
    /* sorted by name, versions as numbers (2 < 10) */
    assert_string_equal(chex_registry_name(reg, 0), "a");
    assert_string_equal(chex_registry_name(reg, 1), "b");
    assert_string_equal(chex_registry_version(reg, 1), "2");
    assert_string_equal(chex_registry_version(reg, 2), "10");
    assert_int_equal(chex_registry_find(reg, "b", 1, NULL, 0), 2);
    assert_int_equal(chex_registry_find(reg, "b", 1, "2", 1), 1);
    assert_int_equal(chex_registry_find(reg, "b", 1, "3", 1), -1);
    assert_int_equal(chex_registry_find(reg, "bb", 2, NULL, 0), -1);
    assert_int_equal(chex_registry_find(reg, NULL, 0, NULL, 0), 0);
    chex_served *v2 = chex_registry_acquire(reg, 1), *v10 = chex_registry_acquire(reg, 2);
    assert_string_not_equal(v2->p.info->sha256, v10->p.info->sha256);
    assert_string_equal(v2->oip.name, "b");
    assert_string_equal(v2->oip.version, "2");
    assert_string_equal(v2->oip.sha256, v2->p.info->sha256);
    assert_non_null(v2->ws[0]);
    chex_registry_release(reg, v2);
    chex_registry_release(reg, v10);
    json_t *list = chex_registry_list(reg);
    json_t *models = json_object_get(list, "models");
    assert_int_equal(json_array_size(models), 2);
    json_t *b = json_array_get(models, 1);
    assert_string_equal(json_string_value(json_object_get(b, "name")), "b");
    assert_int_equal(json_array_size(json_object_get(b, "versions")), 2);
    json_decref(list);
    chex_registry_free(reg);
}

static void test_reload_keeps_acquired_weights(void **state)
{
    fixture *fx = *state;
    put_model(fx, "m/1/model.safetensors", 0.0f, 0);
    chex_registry *reg = NULL;
    char msg[1024] = "", sha[65];
    if (chex_registry_open(&reg, &fx->cfg, 1, 1, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    chex_budget budget;
    assert_int_equal(chex_budget_init(&budget, 0), 0);
    chex_registry_set_budget(reg, &budget);

    chex_served *old = chex_registry_acquire(reg, 0);
    char old_sha[65];
    snprintf(old_sha, sizeof old_sha, "%s", old->p.info->sha256);
    put_model(fx, "m/1/model.safetensors", 0.25f, 0);
    if (chex_registry_reload(reg, 0, sha, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    chex_served *cur = chex_registry_acquire(reg, 0);
    assert_ptr_not_equal(cur, old);
    assert_string_equal(cur->p.info->sha256, sha);
    assert_string_not_equal(sha, old_sha);
    /* the request that acquired the old weights still runs on them */
    assert_string_equal(old->p.info->sha256, old_sha);
    static float in[3 * 224 * 224];
    float po[14], pn[14];
    assert_int_equal(chex_model_forward(old->model, old->ws[0], in, 1, NULL, po), CHEX_MODEL_OK);
    assert_int_equal(chex_model_forward(cur->model, cur->ws[0], in, 1, NULL, pn), CHEX_MODEL_OK);
    assert_true(pn[0] != po[0]);
    /* the second copy is held in the budget until the old weights go */
    assert_int_equal(chex_budget_reserved(&budget), cur->bytes);
    chex_registry_release(reg, old);
    assert_int_equal(chex_budget_reserved(&budget), 0);
    chex_registry_release(reg, cur);

    /* a corrupt file: -1, the weights in force stay, the error is listed */
    put_model(fx, "m/1/model.safetensors", 0.0f, 4096);
    assert_int_equal(chex_registry_reload(reg, 0, sha, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "model.safetensors"));
    cur = chex_registry_acquire(reg, 0);
    assert_string_equal(cur->p.info->sha256, sha);
    chex_registry_release(reg, cur);
    json_t *list = chex_registry_list(reg);
    json_t *v = json_array_get(
        json_object_get(json_array_get(json_object_get(list, "models"), 0), "versions"), 0);
    assert_string_equal(json_string_value(json_object_get(v, "sha256")), sha);
    assert_non_null(strstr(json_string_value(json_object_get(v, "error")), "model.safetensors"));
    assert_int_equal(json_integer_value(json_object_get(v, "reloads")), 1);
    json_decref(list);

    /* no room for the second copy: -2, nothing reserved, the weights stay */
    put_model(fx, "m/1/model.safetensors", 0.5f, 0);
    budget.limit = 1u << 20;
    assert_int_equal(chex_registry_reload(reg, 0, sha, msg, sizeof msg), -2);
    assert_non_null(strstr(msg, "memory_limit_mb"));
    assert_int_equal(chex_budget_reserved(&budget), 0);
    cur = chex_registry_acquire(reg, 0);
    assert_string_equal(cur->p.info->sha256, sha);
    chex_registry_release(reg, cur);
    budget.limit = 0;
    assert_int_equal(chex_registry_reload(reg, 0, NULL, msg, sizeof msg), 0);
    assert_int_equal(chex_budget_reserved(&budget), 0); /* nothing else held the old */

    chex_registry_set_budget(reg, NULL);
    chex_registry_free(reg);
    chex_budget_destroy(&budget);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_repository_errors),
        T(test_find_and_versions),
        T(test_reload_keeps_acquired_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
