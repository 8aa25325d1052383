/* CSV reader (quoting, line ends, errors, never past len) and the labels /
 * predictions layouts chex evaluate reads, plain and gzip. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "tests/unit/helpers/guard.h"
#include "tools/eval/csv.h"
#include "tools/eval/labels.h"

/* Parses text placed right before a PROT_NONE page. */
static chex_eval_err parse_guarded(const char *text, chex_csv *t, char *msg, size_t msglen)
{
    chex_guard_buf g;
    assert_int_equal(chex_guard_alloc(&g, text, strlen(text)), 0);
    chex_eval_err e = chex_csv_parse(g.data, g.len, t, msg, msglen);
    chex_guard_free(&g);
    return e;
}

static void test_csv_quoting(void **state)
{
    (void)state;
    char msg[256];
    chex_csv t;
    const char *text = "\xEF\xBB\xBF"
                       "name,\"a,b\",c\r\n"
                       "x.png,\"he said \"\"hi\"\"\",3\r\n"
                       "\r\n"
                       "\"multi\nline\",,\n"
                       "short\n"
                       "last,1,2"; /* no final newline */
    assert_int_equal(parse_guarded(text, &t, msg, sizeof msg), CHEX_EVAL_OK);
    assert_int_equal(t.ncols, 3);
    assert_int_equal(t.nrows, 4);
    assert_string_equal(t.header[0], "name");
    assert_string_equal(t.header[1], "a,b");
    assert_string_equal(t.rows[0][1], "he said \"hi\"");
    assert_string_equal(t.rows[1][0], "multi\nline");
    assert_string_equal(t.rows[1][1], "");
    assert_string_equal(t.rows[1][2], "");
    assert_string_equal(t.rows[2][0], "short"); /* padded */
    assert_string_equal(t.rows[2][2], "");
    assert_string_equal(t.rows[3][2], "2");
    assert_int_equal(t.line[0], 2);
    assert_int_equal(t.line[1], 4);
    assert_int_equal(t.line[3], 7);
    const char *const want[] = {"missing", "A B", NULL};
    assert_int_equal(chex_csv_find_col(&t, want), -1);
    const char *const want2[] = {"missing", "C", "name", NULL};
    assert_int_equal(chex_csv_find_col(&t, want2), 2); /* order of preference */
    chex_csv_free(&t);
}

static void test_csv_errors(void **state)
{
    (void)state;
    char msg[256];
    chex_csv t;
    assert_int_equal(parse_guarded("a,b\n1,2,3\n", &t, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_string_equal(msg, "line 2: 3 fields, the header has 2");
    assert_int_equal(parse_guarded("a,b\n\"1,2\n", &t, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_string_equal(msg, "line 2: unterminated quoted field");
    assert_int_equal(parse_guarded("\n\r\n", &t, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_string_equal(msg, "empty file (no header row)");
    assert_int_equal(chex_csv_parse((const uint8_t *)"a\n1\0x\n", 6, &t, msg, sizeof msg),
                     CHEX_EVAL_ERR_FORMAT);
    assert_string_equal(msg, "line 2: NUL byte in a field");
    /* header only: zero rows is fine */
    assert_int_equal(parse_guarded("a,b", &t, msg, sizeof msg), CHEX_EVAL_OK);
    assert_int_equal(t.nrows, 0);
    chex_csv_free(&t);
    /* every prefix of a valid file parses or fails cleanly, never past len */
    const char *text = "Image Index,\"Finding Labels\"\r\na.png,\"Mass|Nodule\"\r\nb.png,No Finding\n";
    for (size_t k = 0; k <= strlen(text); k++) {
        chex_guard_buf g;
        assert_int_equal(chex_guard_alloc(&g, text, k), 0);
        chex_eval_err e = chex_csv_parse(g.data, g.len, &t, msg, sizeof msg);
        assert_true(e == CHEX_EVAL_OK || e == CHEX_EVAL_ERR_FORMAT);
        chex_csv_free(&t);
        chex_guard_free(&g);
    }
}

/* random bytes drawn mostly from the CSV alphabet: parse or fail cleanly,
 * never past len (guard page), and every row has ncols fields */
static void test_csv_random(void **state)
{
    (void)state;
    static const char alphabet[] = ",,,\"\"\n\r\nab1|0 ";
    uint64_t x = 88172645463325252ULL;
    char buf[300];
    for (int it = 0; it < 3000; it++) {
        size_t len = (size_t)(it % 300);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (x % 16 == 0) ? (char)(x >> 8) : alphabet[(x >> 4) % (sizeof alphabet - 1)];
        }
        chex_guard_buf g;
        assert_int_equal(chex_guard_alloc(&g, buf, len), 0);
        chex_csv t;
        char msg[128];
        chex_eval_err e = chex_csv_parse(g.data, g.len, &t, msg, sizeof msg);
        assert_true(e == CHEX_EVAL_OK || e == CHEX_EVAL_ERR_FORMAT);
        if (e == CHEX_EVAL_OK) {
            assert_true(t.ncols >= 1);
            for (size_t r = 0; r < t.nrows; r++)
                for (size_t c = 0; c < t.ncols; c++)
                    assert_non_null(t.rows[r][c]);
        }
        chex_csv_free(&t);
        chex_guard_free(&g);
    }
}

static void test_name_eq(void **state)
{
    (void)state;
    assert_true(chex_eval_name_eq("Pleural_Thickening", "pleural thickening"));
    assert_true(chex_eval_name_eq(" Mass ", "mass"));
    assert_false(chex_eval_name_eq("Mass", "Masses"));
    assert_false(chex_eval_name_eq("", "a"));
}

/* Writes text to a fresh temp file (gzip-compressed when gz); returns its path. */
static char *temp_file(const char *text, int gz)
{
    char *path = malloc(1024);
    assert_non_null(path);
    assert_int_equal(chex_test_tmpl(path, 1024, "chex_eval_", gz ? ".csv.gz" : ".csv"), 0);
    int fd = mkstemps(path, gz ? 7 : 4);
    assert_true(fd >= 0);
    if (gz) {
        gzFile f = gzdopen(fd, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, text, (unsigned)strlen(text)), (int)strlen(text));
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
    }
    return path;
}

static void test_findings_layout(void **state)
{
    (void)state;
    /* the shared xrays layout, gzip-compressed */
    const char *text = "file,finding_labels,view_position\n"
                       "a.png,No Finding,PA\n"
                       "b.png,Effusion|Mass|Pleural_Thickening,PA\n"
                       "c.png,Mass,AP\n"
                       "d.png,,PA\n";
    for (int gz = 0; gz < 2; gz++) {
        char *path = temp_file(text, gz);
        char msg[256];
        chex_eval_table t;
        assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_OK);
        assert_int_equal(chex_eval_table_rows(&t), 4);
        assert_int_equal(t.image_col, 0);
        assert_int_equal(t.findings_col, 1);
        uint8_t y[4];
        assert_int_equal(chex_eval_labels_truth(&t, "Mass", y), 1);
        assert_int_equal(y[0], 0);
        assert_int_equal(y[1], 1);
        assert_int_equal(y[2], 1);
        assert_int_equal(y[3], CHEX_EVAL_UNKNOWN);
        assert_int_equal(chex_eval_labels_truth(&t, "Pleural Thickening", y), 1);
        assert_int_equal(y[1], 1);
        assert_int_equal(y[2], 0);
        /* a label nobody has: carried (all negative), so "no positive case" later */
        assert_int_equal(chex_eval_labels_truth(&t, "Hernia", y), 1);
        assert_int_equal(y[0] + y[1] + y[2], 0);
        assert_int_equal(chex_eval_table_find(&t, "c.png"), 2);
        assert_int_equal(chex_eval_table_find(&t, "e.png"), -1);
        chex_eval_table_free(&t);
        unlink(path);
        free(path);
    }
}

static void test_columns_layout(void **state)
{
    (void)state;
    const char *text = "Path,Atelectasis,Mass,Age\n"
                       "x/1.png,1,0,40\n"
                       "x/2.png,0.0,1.0,50\n"
                       "x/3.png,-1,,60\n"
                       "x/4.png,yes,0,70\n";
    char *path = temp_file(text, 0);
    char msg[256];
    chex_eval_table t;
    assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_OK);
    assert_int_equal(t.findings_col, -1);
    assert_int_equal(t.image_col, 0);
    assert_string_equal(chex_eval_table_image(&t, 1), "x/2.png");
    uint8_t y[4];
    assert_int_equal(chex_eval_labels_truth(&t, "Atelectasis", y), 1);
    assert_int_equal(y[0], 1);
    assert_int_equal(y[1], 0);
    assert_int_equal(y[2], CHEX_EVAL_UNKNOWN); /* -1 uncertain */
    assert_int_equal(y[3], CHEX_EVAL_UNKNOWN); /* text */
    assert_int_equal(chex_eval_labels_truth(&t, "mass", y), 1);
    assert_int_equal(y[1], 1);
    assert_int_equal(y[2], CHEX_EVAL_UNKNOWN); /* empty */
    memset(y, 7, sizeof y);
    assert_int_equal(chex_eval_labels_truth(&t, "Effusion", y), 0); /* not in the file */
    assert_int_equal(y[0], 7);
    assert_int_equal(chex_eval_labels_truth(&t, "Path", y), 0);   /* the image column */
    chex_eval_table_free(&t);
    unlink(path);
    free(path);
}

static void test_table_errors(void **state)
{
    (void)state;
    char msg[512];
    chex_eval_table t;
    char *path = temp_file("Image Index,Finding Labels\na.png,Mass\nb.png,Mass\na.png,Nodule\n", 0);
    assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_non_null(strstr(msg, "line 4: image 'a.png' already listed on line 2"));
    unlink(path);
    free(path);
    path = temp_file("Image Index,Finding Labels\na.png,Mass\n,Mass\n", 0);
    assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_non_null(strstr(msg, "line 3: empty image name"));
    unlink(path);
    free(path);
    assert_int_equal(chex_eval_table_load("/nonexistent/labels.csv", &t, msg, sizeof msg),
                     CHEX_EVAL_ERR_IO);
    assert_non_null(strstr(msg, "No such file"));
    /* a truncated gzip file is an error, not a short table */
    path = temp_file("Image Index,Finding Labels\na.png,Mass\nb.png,Nodule\nc.png,No Finding\n", 1);
    FILE *f = fopen(path, "r+");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 30), 0);
    fclose(f);
    assert_int_not_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_OK);
    unlink(path);
    free(path);
}

static void test_predictions_file(void **state)
{
    (void)state;
    const char *text = "Image Index,prob_Mass,Nodule,prob_Pleural_Thickening\n"
                       "a.png,0.25,1e-3,\n"
                       "b.png,nan,0.5,0.75\n";
    char *path = temp_file(text, 0);
    char msg[256];
    chex_eval_table t;
    assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_OK);
    const char *names[8];
    int cols[8];
    assert_int_equal(chex_eval_preds_labels(&t, names, cols, 8), 3);
    assert_string_equal(names[0], "Mass");
    assert_string_equal(names[1], "Nodule");
    assert_string_equal(names[2], "Pleural_Thickening");
    assert_int_equal(chex_eval_preds_col(&t, "Pleural Thickening"), 3);
    assert_int_equal(chex_eval_preds_col(&t, "nodule"), 2);
    assert_int_equal(chex_eval_preds_col(&t, "Hernia"), -1);
    double s[2];
    assert_int_equal(chex_eval_preds_scores(&t, 1, s, msg, sizeof msg), CHEX_EVAL_OK);
    assert_true(s[0] == 0.25 && isnan(s[1]));
    assert_int_equal(chex_eval_preds_scores(&t, 2, s, msg, sizeof msg), CHEX_EVAL_OK);
    assert_true(s[0] == 1e-3 && s[1] == 0.5);
    assert_int_equal(chex_eval_preds_scores(&t, 3, s, msg, sizeof msg), CHEX_EVAL_OK);
    assert_true(isnan(s[0]) && s[1] == 0.75);
    chex_eval_table_free(&t);
    unlink(path);
    free(path);

    path = temp_file("Image Index,prob_Mass\na.png,0.1\nb.png,high\n", 0);
    assert_int_equal(chex_eval_table_load(path, &t, msg, sizeof msg), CHEX_EVAL_OK);
    assert_int_equal(chex_eval_preds_scores(&t, 1, s, msg, sizeof msg), CHEX_EVAL_ERR_FORMAT);
    assert_string_equal(msg, "line 3, column 'prob_Mass': 'high' is not a number");
    chex_eval_table_free(&t);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quoting),     cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_random),
        cmocka_unit_test(test_name_eq),         cmocka_unit_test(test_findings_layout),
        cmocka_unit_test(test_columns_layout),  cmocka_unit_test(test_table_errors),
        cmocka_unit_test(test_predictions_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
