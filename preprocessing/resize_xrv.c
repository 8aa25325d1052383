/* preprocessing/resize_xrv.c - skimage 0.19 resize (torchxrayvision's
 * XRayResizer) as composed per-axis weight tables; see resize_xrv.h. */
#include "preprocessing/resize_xrv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void chex_pre_axis_weights_free(chex_pre_axis_weights *a)
{
    if (!a)
        return;
    free(a->first);
    free(a->count);
    free(a->w);
    memset(a, 0, sizeof *a);
}

/* scipy.ndimage _gaussian_kernel1d(sigma, 0, radius): exp(-0.5 / sigma^2 *
 * x^2) normalised to sum 1, x = -radius..radius; k has 2 * radius + 1. */
static void gaussian_kernel(double *k, double sigma, int radius)
{
    double s2 = sigma * sigma, sum = 0.0;
    for (int x = -radius; x <= radius; x++) {
        k[x + radius] = exp(-0.5 / s2 * (double)x * (double)x);
        sum += k[x + radius];
    }
    for (int x = 0; x <= 2 * radius; x++)
        k[x] /= sum;
}

chex_pre_err chex_pre_xrv_axis_weights(chex_pre_axis_weights *a, int in, int out)
{
    memset(a, 0, sizeof *a);
    if (in < 1 || out < 1)
        return CHEX_PRE_ERR_ARG;
    /* skimage: factor = in / out; anti-aliasing only when downsampling */
    const double factor = (double)in / (double)out;
    const double sigma = in > out && factor > 1.0 ? (factor - 1.0) / 2.0 : 0.0;
    /* scipy skips axes with sigma <= 1e-15; radius int(truncate * sd + 0.5) */
    const int radius = sigma > 1e-15 ? (int)(4.0 * sigma + 0.5) : 0;
    double *k = malloc(sizeof(double) * (size_t)(2 * radius + 1));
    a->in = in;
    a->out = out;
    a->taps = 2 * radius + 2;
    a->first = malloc(sizeof(int) * (size_t)out);
    a->count = malloc(sizeof(int) * (size_t)out);
    a->w = calloc((size_t)out * (size_t)a->taps, sizeof(double));
    if (!k || !a->first || !a->count || !a->w) {
        free(k);
        chex_pre_axis_weights_free(a);
        return CHEX_PRE_ERR_NOMEM;
    }
    if (radius > 0)
        gaussian_kernel(k, sigma, radius);
    else
        k[0] = 1.0;
    for (int o = 0; o < out; o++) {
        /* ndimage zoom, grid_mode: c = (o + 0.5) * zoom - 0.5, zoom = in / out */
        double c = ((double)o + 0.5) * factor - 0.5;
        double fl = floor(c), t = c - fl;
        long s = (long)fl;
        /* filtered[g] = sum_j k[j + radius] * x[g + j], x outside [0, in) is 0;
         * out = (1 - t) * filtered[s] + t * filtered[s + 1], filtered
         * outside [0, in) is 0 too (grid-constant). */
        long lo = s - radius, hi = s + 1 + radius; /* input span, inclusive */
        if (lo < 0)
            lo = 0;
        if (hi > in - 1)
            hi = in - 1;
        double *w = a->w + (size_t)o * (size_t)a->taps;
        int n = hi >= lo ? (int)(hi - lo + 1) : 0;
        for (int e = 0; e < 2; e++) {
            long g = s + e;
            double wt = e ? t : 1.0 - t;
            if (g < 0 || g >= in || wt == 0.0)
                continue;
            for (int j = -radius; j <= radius; j++) {
                long i = g + j;
                if (i >= lo && i <= hi)
                    w[i - lo] += wt * k[j + radius];
            }
        }
        /* trim zero weights at both ends (a tap count of 0 is allowed) */
        int b = 0;
        while (b < n && w[b] == 0.0)
            b++;
        while (n > b && w[n - 1] == 0.0)
            n--;
        if (b > 0)
            memmove(w, w + b, sizeof(double) * (size_t)(n - b));
        for (int j = n - b; j < a->taps; j++)
            w[j] = 0.0;
        a->first[o] = n > b ? (int)lo + b : 0;
        a->count[o] = n - b;
    }
    free(k);
    return CHEX_PRE_OK;
}

chex_pre_err chex_pre_xrv_resize(float *dst, int nc, int S, int sw, int x0, int y0, int side,
                                 chex_pre_xrv_norm_fn norm, const void *ctx)
{
    chex_pre_axis_weights ax;
    chex_pre_err e = chex_pre_xrv_axis_weights(&ax, side, S);
    if (e != CHEX_PRE_OK)
        return e;
    /* one horizontal pass per source row, in double; the vertical pass then
     * reads the (side, S) intermediate */
    double *tmp = malloc(sizeof(double) * (size_t)side * (size_t)S);
    double *acc = malloc(sizeof(double) * (size_t)S);
    float *row = malloc(sizeof(float) * (size_t)side);
    if (!tmp || !acc || !row) {
        e = CHEX_PRE_ERR_NOMEM;
        goto done;
    }
    for (int c = 0; c < nc; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int y = 0; y < side; y++) {
            size_t base = (size_t)(y0 + y) * (size_t)sw + (size_t)x0;
            for (int x = 0; x < side; x++) {
                float v = norm(ctx, base + (size_t)x, c);
                row[x] = v;
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            double *trow = tmp + (size_t)y * (size_t)S;
            for (int o = 0; o < S; o++) {
                const double *w = ax.w + (size_t)o * (size_t)ax.taps;
                const float *s = row + ax.first[o];
                double acc = 0.0;
                for (int j = 0; j < ax.count[o]; j++)
                    acc += w[j] * (double)s[j];
                trow[o] = acc;
            }
        }
        float *plane = dst + (size_t)c * (size_t)S * (size_t)S;
        float omin = INFINITY, omax = -INFINITY;
        for (int o = 0; o < S; o++) {
            const double *w = ax.w + (size_t)o * (size_t)ax.taps;
            for (int x = 0; x < S; x++)
                acc[x] = 0.0;
            for (int j = 0; j < ax.count[o]; j++) {
                const double *trow = tmp + (size_t)(ax.first[o] + j) * (size_t)S;
                for (int x = 0; x < S; x++)
                    acc[x] += w[j] * trow[x];
            }
            float *orow = plane + (size_t)o * (size_t)S;
            for (int x = 0; x < S; x++) {
                orow[x] = (float)acc[x];
                omin = orow[x] < omin ? orow[x] : omin;
                omax = orow[x] > omax ? orow[x] : omax;
            }
        }
        /* skimage _clip_warp_output: the input's range, widened to the cval 0
         * when 0 is outside it but inside the output's */
        if (!(lo <= 0.0f && 0.0f <= hi) && omin <= 0.0f && 0.0f <= omax) {
            lo = lo < 0.0f ? lo : 0.0f;
            hi = hi > 0.0f ? hi : 0.0f;
        }
        for (size_t i = 0; i < (size_t)S * (size_t)S; i++)
            plane[i] = plane[i] < lo ? lo : plane[i] > hi ? hi : plane[i];
    }
done:
    free(tmp);
    free(acc);
    free(row);
    chex_pre_axis_weights_free(&ax);
    return e;
}
