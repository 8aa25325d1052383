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

/* skimage: factor = in / out; anti-aliasing only when downsampling, sigma
 * (factor - 1) / 2; scipy skips axes with sigma <= 1e-15; radius
 * int(truncate * sd + 0.5) */
static int gaussian_radius(int in, int out, double *sigma_out)
{
    const double factor = (double)in / (double)out;
    const double sigma = in > out && factor > 1.0 ? (factor - 1.0) / 2.0 : 0.0;
    if (sigma_out)
        *sigma_out = sigma;
    return sigma > 1e-15 ? (int)(4.0 * sigma + 0.5) : 0;
}

int chex_pre_xrv_taps(int in, int out)
{
    return in < 1 || out < 1 ? 0 : 2 * gaussian_radius(in, out, NULL) + 2;
}

size_t chex_pre_xrv_axis_bytes(int in, int out)
{
    size_t taps = (size_t)chex_pre_xrv_taps(in, out);
    return (size_t)out * (2 * sizeof(int) + taps * sizeof(double)) +
           (2 * taps) * sizeof(double); /* the kernel, freed before returning */
}

chex_pre_err chex_pre_xrv_axis_weights(chex_pre_axis_weights *a, int in, int out)
{
    memset(a, 0, sizeof *a);
    if (in < 1 || out < 1)
        return CHEX_PRE_ERR_ARG;
    const double factor = (double)in / (double)out;
    double sigma;
    const int radius = gaussian_radius(in, out, &sigma);
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

/* One width-pass row (side -> S) in double, in tap order. */
static void xrv_hpass(double *trow, const float *row, const chex_pre_axis_weights *a)
{
    for (int o = 0; o < a->out; o++) {
        const double *w = a->w + (size_t)o * (size_t)a->taps;
        const float *s = row + a->first[o];
        double acc = 0.0;
        for (int j = 0; j < a->count[o]; j++)
            acc += w[j] * (double)s[j];
        trow[o] = acc;
    }
}

/* One height-pass row from n width-pass rows, in tap order. */
static void xrv_vpass(double *orow, const double *const *rows, const double *w, int n, int S)
{
    for (int x = 0; x < S; x++)
        orow[x] = 0.0;
    for (int j = 0; j < n; j++) {
        const double *trow = rows[j];
        for (int x = 0; x < S; x++)
            orow[x] += w[j] * trow[x];
    }
}

void chex_pre_xrv_clip(float *plane, size_t n, float lo, float hi)
{
    float omin = INFINITY, omax = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        omin = plane[i] < omin ? plane[i] : omin;
        omax = plane[i] > omax ? plane[i] : omax;
    }
    /* skimage _clip_warp_output: the input's range, widened to the cval 0
     * when 0 is outside it but inside the output's */
    if (!(lo <= 0.0f && 0.0f <= hi) && omin <= 0.0f && 0.0f <= omax) {
        lo = lo < 0.0f ? lo : 0.0f;
        hi = hi > 0.0f ? hi : 0.0f;
    }
    for (size_t i = 0; i < n; i++)
        plane[i] = plane[i] < lo ? lo : plane[i] > hi ? hi : plane[i];
}

void chex_pre_xrv_weight_sums(const chex_pre_axis_weights *a, double *sum)
{
    for (int o = 0; o < a->out; o++) {
        const double *w = a->w + (size_t)o * (size_t)a->taps;
        double acc = 0.0;
        for (int j = 0; j < a->count[o]; j++)
            acc += w[j];
        sum[o] = acc;
    }
}

/* The reference: the whole region through norm, then the height pass. */
chex_pre_err chex_pre_xrv_resize(float *dst, int nc, int S, int sw, int x0, int y0, int side,
                                 chex_pre_xrv_norm_fn norm, const void *ctx)
{
    chex_pre_axis_weights ax;
    chex_pre_err e = chex_pre_xrv_axis_weights(&ax, side, S);
    if (e != CHEX_PRE_OK)
        return e;
    double *tmp = malloc(sizeof(double) * (size_t)side * (size_t)S);
    double *acc = malloc(sizeof(double) * (size_t)S);
    float *row = malloc(sizeof(float) * (size_t)side);
    const double **rows = malloc(sizeof *rows * (size_t)(ax.taps > 0 ? ax.taps : 1));
    if (!tmp || !acc || !row || !rows) {
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
            xrv_hpass(tmp + (size_t)y * (size_t)S, row, &ax);
        }
        float *plane = dst + (size_t)c * (size_t)S * (size_t)S;
        for (int o = 0; o < S; o++) {
            for (int j = 0; j < ax.count[o]; j++)
                rows[j] = tmp + (size_t)(ax.first[o] + j) * (size_t)S;
            xrv_vpass(acc, rows, ax.w + (size_t)o * (size_t)ax.taps, ax.count[o], S);
            float *orow = plane + (size_t)o * (size_t)S;
            for (int x = 0; x < S; x++)
                orow[x] = (float)acc[x];
        }
        chex_pre_xrv_clip(plane, (size_t)S * (size_t)S, lo, hi);
    }
done:
    free(tmp);
    free(acc);
    free(row);
    free(rows);
    chex_pre_axis_weights_free(&ax);
    return e;
}

size_t chex_pre_xrv_stream_bytes(int side, int S, int nc)
{
    size_t taps = (size_t)chex_pre_xrv_taps(side, S);
    taps = taps > 0 ? taps : 1;
    return (taps * (size_t)nc * (size_t)S + (size_t)nc * (size_t)S * (size_t)S) * sizeof(double) +
           taps * sizeof(double *);
}

chex_pre_err chex_pre_xrv_stream_init(chex_pre_xrv_stream *s, const chex_pre_axis_weights *a,
                                      int nc, int x0, int y0)
{
    return chex_pre_xrv_stream_init_band(s, a, nc, x0, y0, NULL, 0, a->out, 0, a->in);
}

chex_pre_err chex_pre_xrv_stream_init_band(chex_pre_xrv_stream *s,
                                           const chex_pre_axis_weights *a, int nc, int x0,
                                           int y0, double *out, int o0, int o1, int mm_lo,
                                           int mm_hi)
{
    memset(s, 0, sizeof *s);
    if (nc < 1 || nc > 3 || o0 < 0 || o0 > o1 || o1 > a->out)
        return CHEX_PRE_ERR_ARG;
    const int S = a->out, R = a->taps > 0 ? a->taps : 1;
    s->a = a;
    s->nc = nc;
    s->x0 = x0;
    s->y0 = y0;
    s->next_out = o0;
    s->end_out = o1;
    s->mm_lo = mm_lo;
    s->mm_hi = mm_hi;
    s->ring = malloc(sizeof(double) * (size_t)R * (size_t)nc * (size_t)S);
    s->own_out = out == NULL;
    s->out = out ? out : malloc(sizeof(double) * (size_t)nc * (size_t)S * (size_t)S);
    s->rows = malloc(sizeof *s->rows * (size_t)R);
    if (!s->ring || !s->out || !s->rows) {
        chex_pre_xrv_stream_free(s);
        return CHEX_PRE_ERR_NOMEM;
    }
    for (int c = 0; c < nc; c++) {
        s->lo[c] = INFINITY;
        s->hi[c] = -INFINITY;
    }
    /* outputs that see only padding */
    while (s->next_out < o1 && a->count[s->next_out] == 0) {
        for (int c = 0; c < nc; c++)
            xrv_vpass(s->out + ((size_t)c * (size_t)S + (size_t)s->next_out) * (size_t)S, NULL,
                      NULL, 0, S);
        s->next_out++;
    }
    /* the first row an output of the band reads (none: past the region) */
    s->first_row = a->in;
    for (int o = s->next_out; o < o1; o++)
        if (a->count[o] > 0 && a->first[o] < s->first_row)
            s->first_row = a->first[o];
    return CHEX_PRE_OK;
}

int chex_pre_xrv_stream_wants(const chex_pre_xrv_stream *s, int y)
{
    int r = y - s->y0;
    if (r < 0 || r >= s->a->in)
        return 0;
    return (r >= s->mm_lo && r < s->mm_hi) || (r >= s->first_row && s->next_out < s->end_out);
}

void chex_pre_xrv_stream_push(chex_pre_xrv_stream *s, int y, const float *const *planes)
{
    const chex_pre_axis_weights *a = s->a;
    const int side = a->in, S = a->out, nc = s->nc, R = a->taps > 0 ? a->taps : 1;
    int r = y - s->y0;
    if (r < 0 || r >= side)
        return;
    if (r >= s->mm_lo && r < s->mm_hi)
        for (int c = 0; c < nc; c++) {
            const float *row = planes[c] + s->x0;
            float lo = s->lo[c], hi = s->hi[c];
            for (int x = 0; x < side; x++) {
                lo = row[x] < lo ? row[x] : lo;
                hi = row[x] > hi ? row[x] : hi;
            }
            s->lo[c] = lo;
            s->hi[c] = hi;
        }
    if (r < s->first_row || s->next_out >= s->end_out)
        return;
    double *slot = s->ring + (size_t)(r % R) * (size_t)nc * (size_t)S;
    for (int c = 0; c < nc; c++)
        xrv_hpass(slot + (size_t)c * (size_t)S, planes[c] + s->x0, a);
    while (s->next_out < s->end_out) {
        int o = s->next_out, n = a->count[o];
        if (n > 0 && a->first[o] + n - 1 > r)
            break;
        for (int c = 0; c < nc; c++) {
            for (int j = 0; j < n; j++)
                s->rows[j] = s->ring + ((size_t)((a->first[o] + j) % R) * (size_t)nc + (size_t)c) *
                                           (size_t)S;
            xrv_vpass(s->out + ((size_t)c * (size_t)S + (size_t)o) * (size_t)S, s->rows,
                      a->w + (size_t)o * (size_t)a->taps, n, S);
        }
        s->next_out++;
    }
}

void chex_pre_xrv_stream_free(chex_pre_xrv_stream *s)
{
    free(s->ring);
    if (s->own_out)
        free(s->out);
    free(s->rows);
    s->ring = s->out = NULL;
    s->rows = NULL;
}
