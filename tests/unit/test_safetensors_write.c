/* tests/unit/test_safetensors_write.c - chex_st_write: round trip through
 * parse/to_f32, header layout (8-byte aligned, space padded), atomic
 * replacement, and an error (never a partial file) on bad arguments and on
 * every I/O failure we can provoke: missing directory, rename onto a
 * directory, a write cut short by RLIMIT_FSIZE. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/safetensors.h"
#include "tests/unit/helpers/guard.h"

static char dir[512];

static int setup(void **state)
{
    (void)state;
    if (chex_test_tmpl(dir, sizeof(dir), "chex_st_", NULL) != 0)
        return -1;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                if (unlink(p) != 0)
                    rmdir(p);
            }
        closedir(d);
    }
    return rmdir(dir);
}

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_round_trip(void **state)
{
    (void)state;
    float a[6] = {1.0f, -0.0f, 1e-45f, 3.4028235e38f, INFINITY, -2.5f};
    float s[1] = {NAN};
    float big[1000];
    for (int i = 0; i < 1000; i++)
        big[i] = (float)i * 0.25f - 100.0f;
    const int8_t q[5] = {-127, -1, 0, 1, 127};
    const chex_st_wtensor t[] = {
        {"layer.a", 2, {2, 3}, a, CHEX_ST_F32, NULL},
        {"s", 0, {0}, s, CHEX_ST_F32, NULL},
        {"empty", 2, {0, 7}, NULL, CHEX_ST_F32, NULL},
        {"big", 3, {10, 10, 10}, big, CHEX_ST_F32, NULL},
        {.name = "q", .ndim = 1, .shape = {5}, .dtype = CHEX_ST_I8, .i8 = q},
    };
    const char *const kv[] = {"name", "unit \"test\"", "labels", "[\"A\",\"B\"]", NULL};
    char p[1024], msg[256];
    path_in(p, sizeof(p), "rt.safetensors");
    assert_int_equal(chex_st_write(p, t, 5, kv, msg, sizeof(msg)), CHEX_MODEL_OK);
    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    assert_false(exists(tmp));

    size_t len;
    uint8_t *b = chex_test_read_file(p, &len);
    assert_non_null(b);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | b[i];
    assert_int_equal((8 + n) % 8, 0);
    assert_int_equal(len, 8 + n + 4 * (6 + 1 + 1000) + 5);
    assert_int_equal(b[8], '{');
    size_t end = 8 + n; /* the JSON ends in '}' followed only by spaces */
    while (end > 8 && b[end - 1] == ' ')
        end--;
    assert_int_equal(b[end - 1], '}');
    assert_true(8 + n - end < 8);

    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, b, len), 0);
    chex_st_file f;
    assert_int_equal(chex_st_parse(g.data, g.len, &f, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(f.ntensors, 5);
    assert_string_equal(chex_st_meta_get(&f, "name"), "unit \"test\"");
    assert_string_equal(chex_st_meta_get(&f, "labels"), "[\"A\",\"B\"]");

    const chex_st_tensor *ta = chex_st_find(&f, "layer.a");
    assert_non_null(ta);
    assert_int_equal(ta->dtype, CHEX_ST_F32);
    assert_int_equal(ta->ndim, 2);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 3);
    assert_int_equal(ta->begin, 0); /* data in the order given */
    float out[1000];
    chex_st_to_f32(&f, ta, out);
    for (int i = 0; i < 6; i++)
        assert_int_equal(f2u(out[i]), f2u(a[i]));
    const chex_st_tensor *ts = chex_st_find(&f, "s");
    assert_int_equal(ts->ndim, 0);
    assert_int_equal(ts->begin, 24);
    chex_st_to_f32(&f, ts, out);
    assert_int_equal(f2u(out[0]), f2u(s[0]));
    const chex_st_tensor *te = chex_st_find(&f, "empty");
    assert_int_equal(chex_st_numel(te), 0);
    assert_int_equal(te->shape[1], 7);
    const chex_st_tensor *tb = chex_st_find(&f, "big");
    assert_int_equal(tb->begin, 28);
    assert_int_equal(tb->end, 4028);
    chex_st_to_f32(&f, tb, out);
    assert_memory_equal(out, big, sizeof(big));
    const chex_st_tensor *tq = chex_st_find(&f, "q"); /* I8: bytes as given, widened exactly */
    assert_int_equal(tq->dtype, CHEX_ST_I8);
    assert_int_equal(tq->end - tq->begin, 5);
    assert_memory_equal(f.data + tq->begin, q, 5);
    chex_st_to_f32(&f, tq, out);
    for (int i = 0; i < 5; i++)
        assert_true(out[i] == (float)q[i]);
    chex_st_free(&f);
    chex_guard_free(&g);
    free(b);

    /* overwriting an existing file works, and no metadata gives no __metadata__ */
    assert_int_equal(chex_st_write(p, t, 1, NULL, msg, sizeof(msg)), CHEX_MODEL_OK);
    b = chex_test_read_file(p, &len);
    assert_non_null(b);
    assert_int_equal(chex_st_parse(b, len, &f, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(f.ntensors, 1);
    assert_int_equal(f.nmeta, 0);
    assert_null(strstr((const char *)b + 8, "__metadata__"));
    chex_st_free(&f);
    free(b);
    /* no tensors at all is still a valid file */
    assert_int_equal(chex_st_write(p, NULL, 0, kv, msg, sizeof(msg)), CHEX_MODEL_OK);
    b = chex_test_read_file(p, &len);
    assert_non_null(b);
    assert_int_equal(chex_st_parse(b, len, &f, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(f.ntensors, 0);
    assert_int_equal(f.nmeta, 2);
    chex_st_free(&f);
    free(b);
}

static void test_deterministic(void **state)
{
    (void)state;
    float a[3] = {1, 2, 3};
    const chex_st_wtensor t[] = {{"z", 1, {3}, a, CHEX_ST_F32, NULL}, {"a", 1, {2}, a, CHEX_ST_F32, NULL}};
    const char *const kv[] = {"k", "v", "b", "c", NULL};
    char p1[1024], p2[1024], msg[256];
    path_in(p1, sizeof(p1), "d1.safetensors");
    path_in(p2, sizeof(p2), "d2.safetensors");
    assert_int_equal(chex_st_write(p1, t, 2, kv, msg, sizeof(msg)), CHEX_MODEL_OK);
    assert_int_equal(chex_st_write(p2, t, 2, kv, msg, sizeof(msg)), CHEX_MODEL_OK);
    size_t l1, l2;
    uint8_t *b1 = chex_test_read_file(p1, &l1), *b2 = chex_test_read_file(p2, &l2);
    assert_non_null(b1);
    assert_non_null(b2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);
}

static void write_old(const char *p)
{
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fputs("old", f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void assert_old(const char *p)
{
    size_t len;
    uint8_t *b = chex_test_read_file(p, &len);
    assert_non_null(b);
    assert_int_equal(len, 3);
    assert_memory_equal(b, "old", 3);
    free(b);
}

static void test_bad_args(void **state)
{
    (void)state;
    float a[4] = {0};
    char longname[CHEX_ST_NAME_LEN + 1];
    memset(longname, 'q', CHEX_ST_NAME_LEN);
    longname[CHEX_ST_NAME_LEN] = '\0';
    struct {
        chex_st_wtensor t[2];
        int nt;
        const char *const *kv;
        const char *want;
    } cases[] = {
        {{{"w", 1, {4}, a, CHEX_ST_F32, NULL}, {"w", 1, {4}, a, CHEX_ST_F32, NULL}}, 2, NULL, "'w': given twice"},
        {{{"__metadata__", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, NULL, "reserved"},
        {{{"", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, NULL, "empty"},
        {{{NULL, 1, {4}, a, CHEX_ST_F32, NULL}}, 1, NULL, "(null)"},
        {{{longname, 1, {4}, a, CHEX_ST_F32, NULL}}, 1, NULL, "too long"},
        {{{"neg", 2, {4, -1}, a, CHEX_ST_F32, NULL}}, 1, NULL, "'neg': shape[1] = -1"},
        {{{"deep", 9, {1}, a, CHEX_ST_F32, NULL}}, 1, NULL, "'deep': ndim 9"},
        {{{"nodata", 1, {4}, NULL, CHEX_ST_F32, NULL}}, 1, NULL, "'nodata': no data"},
        {{{"bad\xff", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, NULL, "UTF-8"},
        {{{"w", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, (const char *const[]){"k", NULL}, "'k': no value"},
        {{{"w", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, (const char *const[]){"k", "1", "k", "2", NULL}, "'k': given twice"},
        {{{"w", 1, {4}, a, CHEX_ST_F32, NULL}}, 1, (const char *const[]){"k", "\xc3", NULL}, "'k': not valid UTF-8"},
    };
    char p[1024], tmp[1100], msg[256];
    path_in(p, sizeof(p), "args.safetensors");
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    write_old(p);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msg[0] = '\0';
        chex_model_err rc = chex_st_write(p, cases[i].t, cases[i].nt, cases[i].kv, msg,
                                          sizeof(msg));
        if (rc != CHEX_MODEL_ERR_ARG || !strstr(msg, cases[i].want))
            fail_msg("case %zu: got %d '%s', want ARG '%s'", i, rc, msg, cases[i].want);
        assert_old(p);
        assert_false(exists(tmp));
    }
    assert_int_equal(chex_st_write(NULL, cases[0].t, 1, NULL, msg, sizeof(msg)),
                     CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_st_write(p, NULL, 1, NULL, msg, sizeof(msg)), CHEX_MODEL_ERR_ARG);
    assert_int_equal(chex_st_write(p, cases[0].t, -1, NULL, msg, sizeof(msg)),
                     CHEX_MODEL_ERR_ARG);
    assert_old(p);
}

static void test_io_errors(void **state)
{
    (void)state;
    float a[4] = {1, 2, 3, 4};
    const chex_st_wtensor t[] = {{"w", 1, {4}, a, CHEX_ST_F32, NULL}};
    char p[1024], tmp[1100], msg[512];

    path_in(p, sizeof(p), "no/such/dir/x.safetensors");
    assert_int_equal(chex_st_write(p, t, 1, NULL, msg, sizeof(msg)), CHEX_MODEL_ERR_IO);
    assert_non_null(strstr(msg, "no/such/dir/x.safetensors.tmp"));
    assert_non_null(strstr(msg, "cannot create"));

    /* rename onto a non-empty directory fails after the data is written:
     * error, the directory untouched, the temporary removed */
    path_in(p, sizeof(p), "isdir");
    assert_int_equal(mkdir(p, 0755), 0);
    char inner[1100];
    snprintf(inner, sizeof(inner), "%s/keep", p);
    write_old(inner);
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    assert_int_equal(chex_st_write(p, t, 1, NULL, msg, sizeof(msg)), CHEX_MODEL_ERR_IO);
    assert_non_null(strstr(msg, "isdir"));
    assert_non_null(strstr(msg, "rename"));
    assert_false(exists(tmp));
    assert_old(inner);
    assert_int_equal(unlink(inner), 0);
    assert_int_equal(rmdir(p), 0);
}

/* A write cut short (EFBIG past RLIMIT_FSIZE) is an error; the old file stays
 * and no temporary is left. Runs in a child so the limit does not leak. */
static void test_short_write(void **state)
{
    (void)state;
    char p[1024], tmp[1100];
    path_in(p, sizeof(p), "limited.safetensors");
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    write_old(p);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(10);
        enum { N = 100000 };
        float *big = calloc(N, sizeof(float));
        if (!big)
            _exit(11);
        const chex_st_wtensor t[] = {{"big", 1, {N}, big, CHEX_ST_F32, NULL}};
        char msg[512];
        chex_model_err rc = chex_st_write(p, t, 1, NULL, msg, sizeof(msg));
        free(big);
        if (rc != CHEX_MODEL_ERR_IO)
            _exit(12);
        if (!strstr(msg, "limited.safetensors.tmp") || !strstr(msg, "cannot write"))
            _exit(13);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_old(p);
    assert_false(exists(tmp));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_bad_args),   cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_short_write),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
