/* preprocessing/resample.c - weight tables and the two engines applying them
 * (see resample.h). */
#include "preprocessing/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float aa_filter(float x)
{
    if (x < 0.0f)
        x = -x;
    return x < 1.0f ? 1.0f - x : 0.0f;
}

void chex_pre_axis_free(chex_pre_axis *a)
{
    free(a->first);
    free(a->count);
    free(a->w);
    a->first = a->count = NULL;
    a->w = NULL;
}

size_t chex_pre_axis_bytes(int out, int taps)
{
    return (size_t)out * (2 * sizeof(int) + (size_t)taps * sizeof(float));
}

int chex_pre_axis_torch_aa_taps(int in, int out)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? (float)(1.0 * (double)scale) : 1.0f;
    return (int)ceilf(support) * 2 + 1;
}

/* Mirrors PyTorch's _compute_indices_weights_aa / _compute_weights_aa for float
 * tensors, including where it rounds through double and back to float. */
int chex_pre_axis_torch_aa(chex_pre_axis *a, int in, int out)
{
    memset(a, 0, sizeof *a);
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? (float)(1.0 * (double)scale) : 1.0f;
    a->in = in;
    a->out = out;
    a->taps = chex_pre_axis_torch_aa_taps(in, out);
    a->first = malloc((size_t)out * sizeof(int));
    a->count = malloc((size_t)out * sizeof(int));
    a->w = malloc((size_t)out * (size_t)a->taps * sizeof(float));
    if (!a->first || !a->count || !a->w) {
        chex_pre_axis_free(a);
        return -1;
    }
    float invscale = scale >= 1.0f ? (float)(1.0 / (double)scale) : 1.0f;
    for (int i = 0; i < out; i++) {
        float center = (float)((double)scale * (i + 0.5));
        long xmin = (long)((double)(center - support) + 0.5);
        if (xmin < 0)
            xmin = 0;
        long xmax = (long)((double)(center + support) + 0.5);
        if (xmax > in)
            xmax = in;
        long xsize = xmax - xmin;
        if (xsize > a->taps)
            xsize = a->taps;
        float *w = a->w + (size_t)i * (size_t)a->taps;
        float total = 0.0f;
        for (long j = 0; j < xsize; j++) {
            float arg = (float)(((double)((float)(j + xmin) - center) + 0.5) * (double)invscale);
            w[j] = aa_filter(arg);
            total += w[j];
        }
        for (long j = 0; j < xsize; j++)
            if (total != 0.0f)
                w[j] /= total;
        for (long j = xsize < 0 ? 0 : xsize; j < a->taps; j++)
            w[j] = 0.0f;
        a->first[i] = (int)(xmin < in ? xmin : in);
        a->count[i] = (int)(xsize > 0 ? xsize : 0);
    }
    return 0;
}

/* One width-pass row: trow[i] = sum_j row[first_i + j] * w_ij, in j order. */
static void hpass(float *trow, const float *row, const chex_pre_axis *ax)
{
    for (int i = 0; i < ax->out; i++) {
        const float *w = ax->w + (size_t)i * (size_t)ax->taps;
        const float *s = row + ax->first[i];
        int n = ax->count[i];
        float acc = n > 0 ? s[0] * w[0] : 0.0f;
        for (int j = 1; j < n; j++)
            acc += s[j] * w[j];
        trow[i] = acc;
    }
}

/* One height-pass row from n width-pass rows rows[0..n). */
static void vpass(float *orow, const float *const *rows, const float *w, int n, int ow)
{
    if (n <= 0) {
        memset(orow, 0, (size_t)ow * sizeof(float));
        return;
    }
    const float *s = rows[0];
    for (int x = 0; x < ow; x++)
        orow[x] = s[x] * w[0];
    for (int j = 1; j < n; j++) {
        const float *sr = rows[j];
        float wj = w[j];
        for (int x = 0; x < ow; x++)
            orow[x] += sr[x] * wj;
    }
}

void chex_pre_resample_naive(float *dst, const float *src, int nc, size_t splane, int sw, int x0,
                             int y0, const chex_pre_axis *ax, const chex_pre_axis *ay, float *tmp,
                             const float **rows)
{
    const int ow = ax->out, oh = ay->out, rh = ay->in;
    for (int c = 0; c < nc; c++) {
        const float *plane = src + (size_t)c * splane;
        for (int y = 0; y < rh; y++)
            hpass(tmp + (size_t)y * (size_t)ow, plane + (size_t)(y0 + y) * (size_t)sw + x0, ax);
        float *oplane = dst + (size_t)c * (size_t)oh * (size_t)ow;
        for (int i = 0; i < oh; i++) {
            for (int j = 0; j < ay->count[i]; j++)
                rows[j] = tmp + (size_t)(ay->first[i] + j) * (size_t)ow;
            vpass(oplane + (size_t)i * (size_t)ow, rows, ay->w + (size_t)i * (size_t)ay->taps,
                  ay->count[i], ow);
        }
    }
}

size_t chex_pre_stream_bytes_for(int ow, int ytaps, int nc)
{
    size_t r = ytaps > 0 ? (size_t)ytaps : 1;
    return r * (size_t)nc * (size_t)ow * sizeof(float) + r * sizeof(float *);
}

size_t chex_pre_stream_bytes(const chex_pre_axis *ax, const chex_pre_axis *ay, int nc)
{
    return chex_pre_stream_bytes_for(ax->out, ay->taps, nc);
}

int chex_pre_stream_init(chex_pre_stream *s, const chex_pre_axis *ax, const chex_pre_axis *ay,
                         int nc, int x0, int y0, float *out)
{
    return chex_pre_stream_init_band(s, ax, ay, nc, x0, y0, out, 0, ay->out);
}

int chex_pre_stream_init_band(chex_pre_stream *s, const chex_pre_axis *ax,
                              const chex_pre_axis *ay, int nc, int x0, int y0, float *out,
                              int o0, int o1)
{
    memset(s, 0, sizeof *s);
    s->ax = ax;
    s->ay = ay;
    s->nc = nc;
    s->x0 = x0;
    s->y0 = y0;
    s->out = out;
    s->next_out = o0;
    s->end_out = o1;
    s->ring_rows = ay->taps > 0 ? ay->taps : 1;
    s->ring = malloc((size_t)s->ring_rows * (size_t)nc * (size_t)ax->out * sizeof(float));
    s->rows = malloc((size_t)s->ring_rows * sizeof *s->rows);
    if (!s->ring || !s->rows) {
        chex_pre_stream_free(s);
        return -1;
    }
    /* outputs that need no row at all */
    while (s->next_out < o1 && ay->count[s->next_out] == 0) {
        for (int c = 0; c < nc; c++)
            memset(out + ((size_t)c * ay->out + s->next_out) * ax->out, 0,
                   (size_t)ax->out * sizeof(float));
        s->next_out++;
    }
    /* the first row an output of the band reads (none: past the region) */
    s->first_row = ay->in;
    for (int i = s->next_out; i < o1; i++)
        if (ay->count[i] > 0 && ay->first[i] < s->first_row)
            s->first_row = ay->first[i];
    return 0;
}

int chex_pre_stream_wants(const chex_pre_stream *s, int y)
{
    int r = y - s->y0;
    return r >= s->first_row && r < s->ay->in && s->next_out < s->end_out;
}

void chex_pre_stream_push(chex_pre_stream *s, int y, const float *const *planes)
{
    const chex_pre_axis *ax = s->ax, *ay = s->ay;
    int r = y - s->y0;
    if (!chex_pre_stream_wants(s, y))
        return;
    const int ow = ax->out, nc = s->nc, R = s->ring_rows;
    float *slot = s->ring + (size_t)(r % R) * (size_t)nc * (size_t)ow;
    for (int c = 0; c < nc; c++)
        hpass(slot + (size_t)c * (size_t)ow, planes[c] + s->x0, ax);
    /* every output whose last row is r (or earlier) is complete */
    while (s->next_out < s->end_out) {
        int i = s->next_out, n = ay->count[i];
        if (n > 0 && ay->first[i] + n - 1 > r)
            break;
        const float **rows = s->rows;
        for (int c = 0; c < nc; c++) {
            for (int j = 0; j < n; j++)
                rows[j] = s->ring + ((size_t)((ay->first[i] + j) % R) * (size_t)nc + (size_t)c) *
                                        (size_t)ow;
            vpass(s->out + ((size_t)c * (size_t)ay->out + (size_t)i) * (size_t)ow, rows,
                  ay->w + (size_t)i * (size_t)ay->taps, n, ow);
        }
        s->next_out++;
    }
}

int chex_pre_stream_done(const chex_pre_stream *s)
{
    return s->next_out >= s->end_out;
}

void chex_pre_stream_free(chex_pre_stream *s)
{
    free(s->ring);
    free(s->rows);
    s->ring = NULL;
    s->rows = NULL;
}
