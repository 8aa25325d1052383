/* server/token.c: the bearer check (scheme, exact match, trailing newline
 * dropped), no token configured, and rotation: a reload replaces the token,
 * a reload from an unusable file keeps the old one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/token.h"
#include "tests/unit/helpers/tmpfiles.h"

static void rewrite(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void test_check(void **state)
{
    const char *path = chex_test_tmpfile(*state, 0, "s3cret\n");
    chex_token *t;
    char msg[256];
    assert_int_equal(chex_token_open(&t, path, msg, sizeof msg), 0);
    assert_true(chex_token_required(t));
    assert_true(chex_token_check(t, "Bearer s3cret"));
    assert_true(chex_token_check(t, "bearer   s3cret"));
    assert_false(chex_token_check(t, NULL));
    assert_false(chex_token_check(t, "Bearer s3cre"));
    assert_false(chex_token_check(t, "Bearer s3cretx"));
    assert_false(chex_token_check(t, "Basic s3cret"));
    assert_false(chex_token_check(t, "s3cret"));
    chex_token_free(t);
}

static void test_none(void **state)
{
    (void)state;
    chex_token *t;
    char msg[256];
    assert_int_equal(chex_token_open(&t, "", msg, sizeof msg), 0);
    assert_false(chex_token_required(t));
    assert_true(chex_token_check(t, NULL));
    assert_int_equal(chex_token_reload(t, msg, sizeof msg), 0);
    chex_token_free(t);
}

static void test_reload(void **state)
{
    const char *path = chex_test_tmpfile(*state, 0, "first\n");
    chex_token *t;
    char msg[256];
    assert_int_equal(chex_token_open(&t, path, msg, sizeof msg), 0);
    rewrite(path, "second\r\n");
    assert_int_equal(chex_token_reload(t, msg, sizeof msg), 0);
    assert_false(chex_token_check(t, "Bearer first"));
    assert_true(chex_token_check(t, "Bearer second"));
    /* unusable files: the old token stays, msg names the key */
    rewrite(path, " \n");
    assert_int_equal(chex_token_reload(t, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "api_token_file"));
    assert_true(chex_token_check(t, "Bearer second"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(chex_token_reload(t, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "cannot open"));
    assert_true(chex_token_check(t, "Bearer second"));
    rewrite(path, "third");
    chex_token_free(t);
}

static void test_open_errors(void **state)
{
    const char *path = chex_test_tmpfile(*state, 0, "\n\n");
    chex_token *t = (chex_token *)1;
    char msg[256];
    assert_int_equal(chex_token_open(&t, path, msg, sizeof msg), -1);
    assert_null(t);
    assert_non_null(strstr(msg, "holds no token"));
    char big[700];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    path = chex_test_tmpfile(*state, 1, big);
    assert_int_equal(chex_token_open(&t, path, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "api_token_file"));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, chex_test_tmpfiles_setup, chex_test_tmpfiles_teardown)
    const struct CMUnitTest tests[] = {T(test_check), T(test_none), T(test_reload),
                                       T(test_open_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
