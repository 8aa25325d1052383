/* ROC plot: the built-in font covers printable ASCII, the curve, the dashed
 * diagonal and the legend land where they should, the PNG reads back. */
#include <png.h>
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

#include "report/font.h"
#include "tools/eval/plot.h"

static void test_font(void **state)
{
    (void)state;
    /* the hollow box drawn for unknown bytes */
    int box[CHEX_RFONT_H][CHEX_RFONT_W];
    for (int y = 0; y < CHEX_RFONT_H; y++)
        for (int x = 0; x < CHEX_RFONT_W; x++)
            box[y][x] = chex_report_font_pixel('\x01', x, y);
    assert_int_equal(box[0][0], 1);
    assert_int_equal(box[3][2], 0);
    for (int c = 33; c < 127; c++) {
        int ink = 0, same_as_box = 1;
        for (int y = 0; y < CHEX_RFONT_H; y++)
            for (int x = 0; x < CHEX_RFONT_W; x++) {
                int p = chex_report_font_pixel((char)c, x, y);
                ink += p;
                same_as_box &= p == box[y][x];
            }
        if (!ink || same_as_box)
            fail_msg("character '%c' has no glyph of its own", c);
    }
    for (int y = 0; y < CHEX_RFONT_H; y++)
        for (int x = 0; x < CHEX_RFONT_W; x++)
            assert_int_equal(chex_report_font_pixel(' ', x, y), 0);
    /* 'A' has its bar on row 3; 'g' descends below row 6; outside the cell is blank */
    for (int x = 0; x < CHEX_RFONT_W; x++)
        assert_int_equal(chex_report_font_pixel('A', x, 3), 1);
    assert_int_equal(chex_report_font_pixel('g', 1, 8), 1);
    assert_int_equal(chex_report_font_pixel('A', -1, 0), 0);
    assert_int_equal(chex_report_font_pixel('A', 0, CHEX_RFONT_H), 0);
    assert_int_equal(chex_report_font_text_width("AUROC", 2), 5 * 12 - 2);
    assert_int_equal(chex_report_font_text_width("", 2), 0);
}

static const uint8_t *px(const uint8_t *img, int x, int y)
{
    return img + ((size_t)y * CHEX_PLOT_W + (size_t)x) * 3;
}

static int is_rgb(const uint8_t *p, int r, int g, int b)
{
    return p[0] == r && p[1] == g && p[2] == b;
}

static int is_curve(const uint8_t *p)
{
    return is_rgb(p, CHEX_PLOT_CURVE_RGB);
}

static int is_diag(const uint8_t *p)
{
    return is_rgb(p, CHEX_PLOT_DIAG_RGB);
}

static const double fpr[] = {0.0, 0.5, 1.0};
static const double tpr[] = {0.0, 0.8, 1.0};

static chex_roc_plot plot_of(int demo)
{
    chex_roc_plot p = {"Mass", fpr, tpr, 3, 0.65, 0.55, 0.75, "DeLong", 10, 20, demo};
    return p;
}

static void test_render(void **state)
{
    (void)state;
    uint8_t *img = malloc((size_t)CHEX_PLOT_W * CHEX_PLOT_H * 3);
    assert_non_null(img);
    chex_roc_plot p = plot_of(0);
    assert_int_equal(chex_eval_render_roc(&p, img), CHEX_EVAL_OK);
    const int X0 = CHEX_PLOT_X0, Y0 = CHEX_PLOT_Y0, S = CHEX_PLOT_SIDE;
    /* curve: the middle of the first segment, (0.25, 0.4) */
    assert_true(is_curve(px(img, X0 + S / 4, Y0 + S - (int)(0.4 * S))));
    /* and of the second, (0.75, 0.9) */
    assert_true(is_curve(px(img, X0 + 3 * S / 4, Y0 + S - (int)(0.9 * S))));
    /* nothing of the curve's colour far from it, e.g. at (0.9, 0.1) */
    assert_false(is_curve(px(img, X0 + 9 * S / 10, Y0 + S - S / 10)));
    /* diagonal: dashed, so both ink and gaps along (t, t) for t in 0.1..0.4 */
    int ink = 0, gap = 0;
    for (int k = S / 10; k < 4 * S / 10; k++) {
        const uint8_t *q = px(img, X0 + k, Y0 + S - k);
        if (is_diag(q))
            ink++;
        else if (is_rgb(q, 255, 255, 255) || is_rgb(q, 0xe4, 0xe4, 0xe4))
            gap++;
    }
    assert_true(ink > 20 && gap > 20);
    /* axes: black frame */
    assert_true(is_rgb(px(img, X0, Y0 + S / 3), 0, 0, 0));
    assert_true(is_rgb(px(img, X0 + S / 3, Y0 + S), 0, 0, 0));
    /* corners of the canvas are background */
    assert_true(is_rgb(px(img, 0, 0), 255, 255, 255));
    assert_true(is_rgb(px(img, CHEX_PLOT_W - 1, CHEX_PLOT_H - 1), 255, 255, 255));

    /* the demo notice adds red text */
    int red0 = 0, red1 = 0;
    for (size_t i = 0; i < (size_t)CHEX_PLOT_W * CHEX_PLOT_H; i++)
        red0 += is_rgb(img + 3 * i, 0xc0, 0x20, 0x20);
    p = plot_of(1);
    assert_int_equal(chex_eval_render_roc(&p, img), CHEX_EVAL_OK);
    for (size_t i = 0; i < (size_t)CHEX_PLOT_W * CHEX_PLOT_H; i++)
        red1 += is_rgb(img + 3 * i, 0xc0, 0x20, 0x20);
    assert_int_equal(red0, 0);
    assert_true(red1 > 100);

    p.title = NULL;
    assert_int_equal(chex_eval_render_roc(&p, img), CHEX_EVAL_ERR_ARG);
    free(img);
}

static void test_png_file(void **state)
{
    (void)state;
    char dir[512];
    assert_int_equal(chex_test_tmpl(dir, sizeof dir, "chex_plot_", NULL), 0);
    assert_non_null(mkdtemp(dir));
    char path[600], tmp[610];
    snprintf(path, sizeof path, "%s/roc_Mass.png", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    chex_roc_plot p = plot_of(0);
    char msg[256];
    assert_int_equal(chex_eval_plot_roc(path, &p, msg, sizeof msg), CHEX_EVAL_OK);
    assert_int_not_equal(access(tmp, F_OK), 0);

    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    assert_true(png_image_begin_read_from_file(&pi, path));
    assert_int_equal(pi.width, CHEX_PLOT_W);
    assert_int_equal(pi.height, CHEX_PLOT_H);
    pi.format = PNG_FORMAT_RGB;
    uint8_t *got = malloc(PNG_IMAGE_SIZE(pi)), *want = malloc((size_t)CHEX_PLOT_W * CHEX_PLOT_H * 3);
    assert_non_null(got);
    assert_non_null(want);
    assert_true(png_image_finish_read(&pi, NULL, got, 0, NULL));
    assert_int_equal(chex_eval_render_roc(&p, want), CHEX_EVAL_OK);
    assert_memory_equal(got, want, (size_t)CHEX_PLOT_W * CHEX_PLOT_H * 3);
    free(got);
    free(want);
    unlink(path);

    /* unwritable place: an error, and no file left behind */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no/such/dir/roc.png", dir);
    assert_int_equal(chex_eval_plot_roc(bad, &p, msg, sizeof msg), CHEX_EVAL_ERR_IO);
    assert_non_null(strstr(msg, "cannot write PNG"));
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_font),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_png_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
