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

/* first/count of output i of a torch aa axis with `taps` weights, as
 * PyTorch's _compute_indices_weights_aa computes the input range (count
 * clamped to taps; first < in whenever count > 0). */
static void aa_first_count(int in, int out, int taps, int i, int *first, int *count)
{
    float scale = (float)in / (float)out;
    float support = scale >= 1.0f ? (float)(1.0 * (double)scale) : 1.0f;
    float center = (float)((double)scale * (i + 0.5));
    long xmin = (long)((double)(center - support) + 0.5);
    if (xmin < 0)
        xmin = 0;
    long xmax = (long)((double)(center + support) + 0.5);
    if (xmax > in)
        xmax = in;
    long xsize = xmax - xmin;
    if (xsize > taps)
        xsize = taps;
    *first = (int)(xmin < in ? xmin : in);
    *count = (int)(xsize > 0 ? xsize : 0);
}

/* Most outputs of one axis a single input row is summed into at once (the
 * streaming engine's accumulators): 1 + the largest k - i such that output k
 * starts (its first row) before output i, i < k, ends (its last row). first
 * and first + count - 1 never decrease, so both walks move forward only. */
int chex_pre_axis_torch_aa_live(int in, int out)
{
    const int taps = chex_pre_axis_torch_aa_taps(in, out);
    int live = 1, i = 0, fi, ci;
    aa_first_count(in, out, taps, 0, &fi, &ci);
    for (int k = 0; k < out; k++) {
        int fk, ck;
        aa_first_count(in, out, taps, k, &fk, &ck);
        if (ck == 0)
            continue;
        /* oldest output still being summed when row fk arrives */
        while (i < k && (ci == 0 || fi + ci - 1 < fk)) {
            i++;
            aa_first_count(in, out, taps, i, &fi, &ci);
        }
        if (k - i + 1 > live)
            live = k - i + 1;
    }
    return live;
}

/* Mirrors PyTorch's _compute_indices_weights_aa / _compute_weights_aa for float
 * tensors, including where it rounds through double and back to float. */
int chex_pre_axis_torch_aa(chex_pre_axis *a, int in, int out)
{
    memset(a, 0, sizeof *a);
    float scale = (float)in / (float)out;
    a->in = in;
    a->out = out;
    a->taps = chex_pre_axis_torch_aa_taps(in, out);
    a->live = chex_pre_axis_torch_aa_live(in, out);
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
        int first, n;
        aa_first_count(in, out, a->taps, i, &first, &n);
        float *w = a->w + (size_t)i * (size_t)a->taps;
        float total = 0.0f;
        for (int j = 0; j < n; j++) {
            float arg = (float)(((double)((float)(j + first) - center) + 0.5) * (double)invscale);
            w[j] = aa_filter(arg);
            total += w[j];
        }
        for (int j = 0; j < n; j++)
            if (total != 0.0f)
                w[j] /= total;
        for (int j = n; j < a->taps; j++)
            w[j] = 0.0f;
        a->first[i] = first;
        a->count[i] = n;
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

/* The height pass, one input row at a time: acc = row * w (the first row of
 * an output), then acc += row * w for the next ones, in row order. Each
 * product and each sum is rounded to float on its own (no fused
 * multiply-add), so the AVX-512 versions give the scalar ones' floats. */
static void vset_scalar(float *restrict acc, const float *restrict row, float w, int n)
{
    for (int x = 0; x < n; x++)
        acc[x] = row[x] * w;
}

static void vadd_scalar(float *restrict acc, const float *restrict row, float w, int n)
{
    for (int x = 0; x < n; x++)
        acc[x] += row[x] * w;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
/* _round_ forms: the compiler never fuses them into an FMA */
__attribute__((target("avx512f"))) static void vset_avx512(float *restrict acc,
                                                           const float *restrict row, float w,
                                                           int n)
{
    const __m512 wv = _mm512_set1_ps(w);
    int x = 0;
    for (; x + 16 <= n; x += 16)
        _mm512_storeu_ps(acc + x, _mm512_mul_round_ps(_mm512_loadu_ps(row + x), wv, RND));
    if (x < n) {
        __mmask16 m = (__mmask16)((1u << (n - x)) - 1u);
        _mm512_mask_storeu_ps(acc + x, m,
                              _mm512_mul_round_ps(_mm512_maskz_loadu_ps(m, row + x), wv, RND));
    }
}

__attribute__((target("avx512f"))) static void vadd_avx512(float *restrict acc,
                                                           const float *restrict row, float w,
                                                           int n)
{
    const __m512 wv = _mm512_set1_ps(w);
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        __m512 p = _mm512_mul_round_ps(_mm512_loadu_ps(row + x), wv, RND);
        _mm512_storeu_ps(acc + x, _mm512_add_round_ps(_mm512_loadu_ps(acc + x), p, RND));
    }
    if (x < n) {
        __mmask16 m = (__mmask16)((1u << (n - x)) - 1u);
        __m512 p = _mm512_mul_round_ps(_mm512_maskz_loadu_ps(m, row + x), wv, RND);
        _mm512_mask_storeu_ps(acc + x, m,
                              _mm512_add_round_ps(_mm512_maskz_loadu_ps(m, acc + x), p, RND));
    }
}
#endif

static int use_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int cached = -1; /* racy but idempotent: every thread computes the same */
    if (cached < 0)
        cached = __builtin_cpu_supports("avx512f") && !getenv("CHEX_PRE_SCALAR");
    return cached;
#else
    return 0;
#endif
}

void chex_pre_vrow_scalar(float *acc, const float *row, float w, int n, int first)
{
    (first ? vset_scalar : vadd_scalar)(acc, row, w, n);
}

void chex_pre_vrow(float *acc, const float *row, float w, int n, int first)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx512()) {
        (first ? vset_avx512 : vadd_avx512)(acc, row, w, n);
        return;
    }
#endif
    chex_pre_vrow_scalar(acc, row, w, n, first);
}

void chex_pre_resample_naive(float *dst, const float *src, int nc, size_t splane, int sw, int x0,
                             int y0, const chex_pre_axis *ax, const chex_pre_axis *ay, float *tmp)
{
    const int ow = ax->out, oh = ay->out, rw = ax->in;
    for (int c = 0; c < nc; c++) {
        const float *plane = src + (size_t)c * splane;
        float *oplane = dst + (size_t)c * (size_t)oh * (size_t)ow;
        for (int i = 0; i < oh; i++) {
            const int n = ay->count[i];
            const float *w = ay->w + (size_t)i * (size_t)ay->taps;
            float *orow = oplane + (size_t)i * (size_t)ow;
            if (n <= 0) {
                memset(orow, 0, (size_t)ow * sizeof(float));
                continue;
            }
            for (int j = 0; j < n; j++)
                chex_pre_vrow(tmp, plane + (size_t)(y0 + ay->first[i] + j) * (size_t)sw + x0,
                              w[j], rw, j == 0);
            hpass(orow, tmp, ax);
        }
    }
}

size_t chex_pre_stream_bytes_for(int rw, int live, int nc)
{
    size_t r = live > 0 ? (size_t)live : 1;
    return r * (size_t)nc * (size_t)rw * sizeof(float);
}

size_t chex_pre_stream_bytes(const chex_pre_axis *ax, const chex_pre_axis *ay, int nc)
{
    return chex_pre_stream_bytes_for(ax->in, ay->live, nc);
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
    s->live = ay->live > 0 ? ay->live : 1;
    s->acc = malloc((size_t)s->live * (size_t)nc * (size_t)ax->in * sizeof(float));
    if (!s->acc) {
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
    const int rw = ax->in, ow = ax->out, nc = s->nc, L = s->live;
    /* row r into every output that reads it; first never decreases, so
     * those are consecutive from next_out */
    for (int i = s->next_out; i < s->end_out && ay->first[i] <= r; i++) {
        int n = ay->count[i], j = r - ay->first[i];
        if (j >= n)
            continue;
        float *slot = s->acc + (size_t)(i % L) * (size_t)nc * (size_t)rw;
        float w = ay->w[(size_t)i * (size_t)ay->taps + (size_t)j];
        for (int c = 0; c < nc; c++)
            chex_pre_vrow(slot + (size_t)c * (size_t)rw, planes[c] + s->x0, w, rw, j == 0);
    }
    /* every output whose last row is r (or earlier) is complete: its width
     * pass */
    while (s->next_out < s->end_out) {
        int i = s->next_out, n = ay->count[i];
        if (n > 0 && ay->first[i] + n - 1 > r)
            break;
        const float *slot = s->acc + (size_t)(i % L) * (size_t)nc * (size_t)rw;
        for (int c = 0; c < nc; c++) {
            float *orow = s->out + ((size_t)c * (size_t)ay->out + (size_t)i) * (size_t)ow;
            if (n > 0)
                hpass(orow, slot + (size_t)c * (size_t)rw, ax);
            else
                memset(orow, 0, (size_t)ow * sizeof(float));
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
    free(s->acc);
    s->acc = NULL;
}
