/* tools/eval/plot.h - ROC curve plots as PNG, drawn pixel by pixel (libpng
 * only, no plotting library): axes with ticks at 0.2 steps, grid, dashed
 * chance diagonal, the curve, a legend with the AUROC. Reentrant. */
#ifndef CHEX_EVAL_PLOT_H
#define CHEX_EVAL_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "tools/eval/auroc.h"

#define CHEX_PLOT_W 640
#define CHEX_PLOT_H 640

/* Plot area in canvas pixels: FPR 0..1 maps to x CHEX_PLOT_X0..X0+SIDE,
 * TPR 0..1 to y Y0+SIDE..Y0 (up). */
#define CHEX_PLOT_X0 100
#define CHEX_PLOT_Y0 70
#define CHEX_PLOT_SIDE 480

/* Colours (RGB) used, so tests can find what was drawn. */
#define CHEX_PLOT_CURVE_RGB 0x1f, 0x5f, 0xbf
#define CHEX_PLOT_DIAG_RGB 0x90, 0x90, 0x90

typedef struct {
    const char *title;          /* label name */
    const double *fpr, *tpr;    /* npts points, from chex_roc_curve */
    size_t npts;
    double auc, ci_low, ci_high; /* ci NAN when unknown */
    const char *ci_name;        /* "DeLong" / "bootstrap" */
    size_t n_pos, n_neg;
    int demo;                   /* adds the demo-weights notice */
} chex_roc_plot;

/* Draws into rgb, CHEX_PLOT_W * CHEX_PLOT_H * 3 bytes, rows top to bottom. */
chex_eval_err chex_eval_render_roc(const chex_roc_plot *p, uint8_t *rgb);

/* Renders and writes an 8-bit RGB PNG to path (through path.tmp + rename, so
 * a failure never leaves a partial file). */
chex_eval_err chex_eval_plot_roc(const char *path, const chex_roc_plot *p, char *msg, size_t msglen);

#endif
