/* tools/eval/plot.c - ROC plot rendering and PNG output (see plot.h). */
#include "tools/eval/plot.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/font.h"

typedef struct {
    uint8_t r, g, b;
} rgbc;

static const rgbc WHITE = {255, 255, 255};
static const rgbc BLACK = {0, 0, 0};
static const rgbc GRID = {0xe4, 0xe4, 0xe4};
static const rgbc DIAG = {CHEX_PLOT_DIAG_RGB};
static const rgbc CURVE = {CHEX_PLOT_CURVE_RGB};
static const rgbc WARN = {0xc0, 0x20, 0x20};
static const rgbc GREY_TEXT = {0x50, 0x50, 0x50};

static void put(uint8_t *img, int x, int y, rgbc c)
{
    if (x < 0 || y < 0 || x >= CHEX_PLOT_W || y >= CHEX_PLOT_H)
        return;
    uint8_t *p = img + ((size_t)y * CHEX_PLOT_W + (size_t)x) * 3;
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

static void fill(uint8_t *img, int x0, int y0, int x1, int y1, rgbc c)
{
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            put(img, x, y, c);
}

/* Line from (x0,y0) to (x1,y1) of width 2*r+1; dash > 0 draws dash-long
 * pieces separated by equal gaps. */
static void line(uint8_t *img, double x0, double y0, double x1, double y1, int r, int dash, rgbc c)
{
    double dx = x1 - x0, dy = y1 - y0;
    double len = sqrt(dx * dx + dy * dy);
    int steps = (int)ceil(len * 2.0) + 1;
    for (int i = 0; i <= steps; i++) {
        double t = (double)i / steps;
        if (dash > 0 && ((int)(t * len) / dash) % 2 == 1)
            continue;
        int x = (int)lround(x0 + t * dx), y = (int)lround(y0 + t * dy);
        for (int v = -r; v <= r; v++)
            for (int u = -r; u <= r; u++)
                put(img, x + u, y + v, c);
    }
}

/* Text with its top-left corner at (x, y). */
static void text(uint8_t *img, int x, int y, const char *s, int scale, rgbc c)
{
    for (; *s; s++, x += (CHEX_RFONT_W + 1) * scale)
        for (int gy = 0; gy < CHEX_RFONT_H; gy++)
            for (int gx = 0; gx < CHEX_RFONT_W; gx++)
                if (chex_report_font_pixel(*s, gx, gy))
                    fill(img, x + gx * scale, y + gy * scale, x + (gx + 1) * scale,
                         y + (gy + 1) * scale, c);
}

/* Text rotated a quarter turn counter-clockwise, reading upwards from
 * (x, y) = its bottom-left corner. */
static void text_up(uint8_t *img, int x, int y, const char *s, int scale, rgbc c)
{
    for (; *s; s++, y -= (CHEX_RFONT_W + 1) * scale)
        for (int gy = 0; gy < CHEX_RFONT_H; gy++)
            for (int gx = 0; gx < CHEX_RFONT_W; gx++)
                if (chex_report_font_pixel(*s, gx, gy)) {
                    int px = x + gy * scale, py = y - (gx + 1) * scale;
                    fill(img, px, py, px + scale, py + scale, c);
                }
}

static double px_x(double fpr)
{
    return CHEX_PLOT_X0 + fpr * CHEX_PLOT_SIDE;
}

static double px_y(double tpr)
{
    return CHEX_PLOT_Y0 + (1.0 - tpr) * CHEX_PLOT_SIDE;
}

chex_eval_err chex_eval_render_roc(const chex_roc_plot *p, uint8_t *img)
{
    if (!p || !img || !p->title || (p->npts && (!p->fpr || !p->tpr)))
        return CHEX_EVAL_ERR_ARG;
    const int X0 = CHEX_PLOT_X0, Y0 = CHEX_PLOT_Y0, S = CHEX_PLOT_SIDE;
    fill(img, 0, 0, CHEX_PLOT_W, CHEX_PLOT_H, WHITE);

    /* title, centred above the plot area */
    char title[96];
    snprintf(title, sizeof title, "ROC - %s", p->title);
    int tw = chex_report_font_text_width(title, 3);
    text(img, X0 + S / 2 - tw / 2, 18, title, 3, BLACK);

    /* grid, ticks and tick labels every 0.2 */
    for (int k = 0; k <= 5; k++) {
        double v = k * 0.2;
        int gx = (int)lround(px_x(v)), gy = (int)lround(px_y(v));
        if (k > 0 && k < 5) {
            fill(img, gx, Y0, gx + 1, Y0 + S, GRID);
            fill(img, X0, gy, X0 + S, gy + 1, GRID);
        }
        fill(img, gx - 1, Y0 + S, gx + 1, Y0 + S + 8, BLACK);
        fill(img, X0 - 8, gy - 1, X0, gy + 1, BLACK);
        char lab[8];
        snprintf(lab, sizeof lab, "%.1f", v);
        int lw = chex_report_font_text_width(lab, 2);
        text(img, gx - lw / 2, Y0 + S + 14, lab, 2, BLACK);
        text(img, X0 - 14 - lw, gy - CHEX_RFONT_H + 2, lab, 2, BLACK);
    }

    /* chance diagonal, dashed */
    line(img, px_x(0), px_y(0), px_x(1), px_y(1), 0, 8, DIAG);

    /* the curve */
    for (size_t i = 1; i < p->npts; i++)
        line(img, px_x(p->fpr[i - 1]), px_y(p->tpr[i - 1]), px_x(p->fpr[i]), px_y(p->tpr[i]), 1, 0,
             CURVE);

    /* axes box on top of grid and curve ends */
    fill(img, X0 - 1, Y0 - 1, X0 + S + 1, Y0 + 1, BLACK);
    fill(img, X0 - 1, Y0 + S - 1, X0 + S + 1, Y0 + S + 1, BLACK);
    fill(img, X0 - 1, Y0 - 1, X0 + 1, Y0 + S + 1, BLACK);
    fill(img, X0 + S - 1, Y0 - 1, X0 + S + 1, Y0 + S + 1, BLACK);

    /* axis titles */
    const char *xt = "False positive rate (1 - specificity)";
    text(img, X0 + S / 2 - chex_report_font_text_width(xt, 2) / 2, Y0 + S + 44, xt, 2, BLACK);
    const char *yt = "True positive rate (sensitivity)";
    text_up(img, 22, Y0 + S / 2 + chex_report_font_text_width(yt, 2) / 2, yt, 2, BLACK);

    /* legend, lower right inside the plot */
    char l1[64], l2[64], l3[64];
    snprintf(l1, sizeof l1, "AUROC = %.4f", p->auc);
    if (isnan(p->ci_low) || isnan(p->ci_high))
        snprintf(l2, sizeof l2, "95%% CI n/a");
    else
        snprintf(l2, sizeof l2, "95%% CI %.4f-%.4f (%s)", p->ci_low, p->ci_high,
                 p->ci_name ? p->ci_name : "");
    snprintf(l3, sizeof l3, "n_pos %zu, n_neg %zu", p->n_pos, p->n_neg);
    const char *l4 = "chance";
    const char *l5 = "DEMO WEIGHTS - not clinical";
    int lines = p->demo ? 5 : 4;
    int w = chex_report_font_text_width(l2, 2);
    if (chex_report_font_text_width(l5, 2) > w && p->demo)
        w = chex_report_font_text_width(l5, 2);
    int bw = 40 + w + 14, lh = 22, bh = lines * lh + 12;
    int bx = X0 + S - bw - 12, by = Y0 + S - bh - 12;
    fill(img, bx, by, bx + bw, by + bh, WHITE);
    fill(img, bx, by, bx + bw, by + 1, BLACK);
    fill(img, bx, by + bh - 1, bx + bw, by + bh, BLACK);
    fill(img, bx, by, bx + 1, by + bh, BLACK);
    fill(img, bx + bw - 1, by, bx + bw, by + bh, BLACK);
    int ty = by + 8;
    line(img, bx + 8, ty + 7, bx + 32, ty + 7, 1, 0, CURVE);
    text(img, bx + 40, ty, l1, 2, BLACK);
    ty += lh;
    text(img, bx + 40, ty, l2, 2, GREY_TEXT);
    ty += lh;
    text(img, bx + 40, ty, l3, 2, GREY_TEXT);
    ty += lh;
    line(img, bx + 8, ty + 7, bx + 32, ty + 7, 0, 4, DIAG);
    text(img, bx + 40, ty, l4, 2, BLACK);
    ty += lh;
    if (p->demo)
        text(img, bx + 40, ty, l5, 2, WARN);
    return CHEX_EVAL_OK;
}

chex_eval_err chex_eval_plot_roc(const char *path, const chex_roc_plot *p, char *msg, size_t msglen)
{
    uint8_t *img = malloc((size_t)CHEX_PLOT_W * CHEX_PLOT_H * 3);
    if (!img) {
        snprintf(msg, msglen, "out of memory");
        return CHEX_EVAL_ERR_NOMEM;
    }
    chex_eval_err e = chex_eval_render_roc(p, img);
    if (e) {
        free(img);
        snprintf(msg, msglen, "%s: bad plot arguments", path);
        return e;
    }
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) {
        free(img);
        snprintf(msg, msglen, "out of memory");
        return CHEX_EVAL_ERR_NOMEM;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    pi.width = CHEX_PLOT_W;
    pi.height = CHEX_PLOT_H;
    pi.format = PNG_FORMAT_RGB;
    int ok = png_image_write_to_file(&pi, tmp, 0, img, CHEX_PLOT_W * 3, NULL);
    free(img);
    if (!ok) {
        snprintf(msg, msglen, "%s: cannot write PNG: %s", tmp, pi.message);
        png_image_free(&pi);
        remove(tmp);
        free(tmp);
        return CHEX_EVAL_ERR_IO;
    }
    if (rename(tmp, path) != 0) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return CHEX_EVAL_ERR_IO;
    }
    free(tmp);
    return CHEX_EVAL_OK;
}
