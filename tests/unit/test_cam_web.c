/* tests/unit/test_cam_web.c - server/web.c: the embedded page equals the files
 * in server/web/ (server/web_assets.c is generated from them by
 * server/web/embed.py; run from the repository root, as tests/run_all.sh
 * does), the URL -> file table, and web_root serving from a folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include "tests/unit/helpers/guard.h"

#include "server/web.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

static void test_embedded_matches_files(void **state)
{
    (void)state;
    assert_int_equal(chex_web_nassets, 3);
    for (size_t i = 0; i < chex_web_nassets; i++) {
        char path[256];
        snprintf(path, sizeof path, "server/web/%s", chex_web_assets[i].name);
        size_t len = 0;
        char *disk = slurp(path, &len);
        if (!disk)
            fail_msg("cannot read %s (run from the repository root)", path);
        if (len != chex_web_assets[i].len || memcmp(disk, chex_web_assets[i].data, len) != 0)
            fail_msg("%s differs from server/web_assets.c: run python3 server/web/embed.py",
                     path);
        assert_int_equal(strlen(chex_web_assets[i].data), chex_web_assets[i].len);
        free(disk);
    }
}

static void test_find(void **state)
{
    (void)state;
    assert_string_equal(chex_web_find("/")->name, "index.html");
    assert_string_equal(chex_web_find("/index.html")->name, "index.html");
    assert_string_equal(chex_web_find("/app.js")->content_type, "text/javascript; charset=utf-8");
    assert_string_equal(chex_web_find("/style.css")->content_type, "text/css; charset=utf-8");
    assert_null(chex_web_find("/../etc/passwd"));
    assert_null(chex_web_find("/web/app.js"));
    assert_null(chex_web_find("app.js"));
    assert_null(chex_web_find(""));
    assert_null(chex_web_find(NULL));
    /* the page refers to no external resource */
    const chex_web_asset *idx = chex_web_find("/");
    assert_null(strstr(idx->data, "http://"));
    assert_null(strstr(idx->data, "https://"));
    assert_non_null(strstr(idx->data, "<label for=\"file\">"));
    assert_non_null(strstr(idx->data, "<label for=\"token\">"));
}

static void test_get_embedded_and_root(void **state)
{
    (void)state;
    chex_web_body b;
    char msg[256];
    assert_int_equal(chex_web_get(NULL, "/app.js", &b, msg, sizeof msg), 200);
    assert_ptr_equal(b.data, chex_web_find("/app.js")->data);
    assert_null(b.owned);
    chex_web_body_free(&b);
    assert_int_equal(chex_web_get("", "/nope", &b, msg, sizeof msg), 404);

    char dir[256];
    assert_int_equal(chex_test_tmpl(dir, sizeof dir, "chex_web_test_", NULL), 0);
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("<p>local copy</p>", f);
    fclose(f);
    assert_int_equal(chex_web_get(dir, "/", &b, msg, sizeof msg), 200);
    assert_int_equal(b.len, 17);
    assert_memory_equal(b.data, "<p>local copy</p>", 17);
    assert_string_equal(b.content_type, "text/html; charset=utf-8");
    chex_web_body_free(&b);
    /* web_root without app.js: a server error naming the file */
    assert_int_equal(chex_web_get(dir, "/app.js", &b, msg, sizeof msg), 500);
    assert_non_null(strstr(msg, "app.js"));
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_matches_files),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_get_embedded_and_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
