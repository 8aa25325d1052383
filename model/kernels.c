/* model/kernels.c - naive reference operators, the portable-C fast path and
 * the run-time choice of instruction set. */
#include "model/kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- naive reference operators ---- */

void conv2d_forward_naive(float *out, const float *in, const float *w, const float *bias, int n,
                          int c, int h, int wd, int m, int kh, int kw, int stride, int pad)
{
    const int oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < m; o++) {
            float *op = out + ((long)i * m + o) * oh * ow;
            for (int y = 0; y < oh; y++)
                for (int x = 0; x < ow; x++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int ci = 0; ci < c; ci++)
                        for (int ky = 0; ky < kh; ky++) {
                            int iy = y * stride - pad + ky;
                            if (iy < 0 || iy >= h)
                                continue;
                            for (int kx = 0; kx < kw; kx++) {
                                int ix = x * stride - pad + kx;
                                if (ix < 0 || ix >= wd)
                                    continue;
                                acc += (double)w[((long)(o * c + ci) * kh + ky) * kw + kx] *
                                       in[(((long)i * c + ci) * h + iy) * wd + ix];
                            }
                        }
                    op[(long)y * ow + x] = (float)acc;
                }
        }
}

void batchnorm_forward_naive(float *out, const float *in, const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps, int n, int c,
                             long hw)
{
    for (int i = 0; i < n; i++)
        for (int ci = 0; ci < c; ci++) {
            const float inv = 1.0f / sqrtf(var[ci] + eps);
            const float *x = in + ((long)i * c + ci) * hw;
            float *y = out + ((long)i * c + ci) * hw;
            for (long p = 0; p < hw; p++)
                y[p] = (x[p] - mean[ci]) * inv * gamma[ci] + beta[ci];
        }
}

void relu_forward_naive(float *x, long count)
{
    for (long i = 0; i < count; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void maxpool2d_forward_naive(float *out, const float *in, int n, int c, int h, int wd, int k,
                             int stride, int pad)
{
    const int oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1;
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float *x = in + plane * h * wd;
        float *y = out + plane * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float best = -INFINITY;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < wd && x[iy * wd + ix] > best)
                            best = x[iy * wd + ix];
                    }
                y[oy * ow + ox] = best;
            }
    }
}

void avgpool2d_forward_naive(float *out, const float *in, int n, int c, int h, int wd, int k)
{
    const int oh = h / k, ow = wd / k;
    for (long plane = 0; plane < (long)n * c; plane++) {
        const float *x = in + plane * h * wd;
        float *y = out + plane * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float s = 0.0f;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        s += x[(oy * k + ky) * wd + ox * k + kx];
                y[oy * ow + ox] = s / (float)(k * k);
            }
    }
}

void global_avgpool_forward_naive(float *out, const float *in, int n, int c, long hw)
{
    for (long plane = 0; plane < (long)n * c; plane++) {
        double s = 0.0;
        for (long p = 0; p < hw; p++)
            s += in[plane * hw + p];
        out[plane] = (float)(s / (double)hw);
    }
}

void linear_forward_naive(float *out, const float *in, const float *w, const float *b, int n,
                          int in_f, int out_f)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out_f; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < in_f; k++)
                s += (double)in[(long)i * in_f + k] * w[(long)o * in_f + k];
            out[(long)i * out_f + o] = (float)s;
        }
}

void sigmoid_forward_naive(float *out, const float *in, long count)
{
    for (long i = 0; i < count; i++)
        out[i] = 1.0f / (1.0f + expf(-in[i]));
}

/* ---- portable fast path ---- */

#define KT_MR 4
#define KT_NR 16
#define KT_FN(x) generic_##x

static void kt_micro(int k, const float *a, const float *bp, float *c, long ldc, int nc,
                     const float *ps, const float *pt, int relu)
{
    float acc[KT_MR][KT_NR];
    memset(acc, 0, sizeof(acc));
    for (int q = 0; q < k; q++) {
        const float *b = bp + (long)q * KT_NR;
        for (int r = 0; r < KT_MR; r++) {
            const float av = a[q * 8 + r];
            for (int j = 0; j < KT_NR; j++)
                acc[r][j] += av * b[j];
        }
    }
    for (int r = 0; r < KT_MR; r++) {
        const float s = ps ? ps[r] : 1.0f, t = pt ? pt[r] : 0.0f;
        for (int j = 0; j < nc; j++) {
            float v = acc[r][j] * s + t;
            c[r * ldc + j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

#include "model/kernels_tmpl.h"

const chex_kernels chex_kernels_generic = {"generic", KT_NR, generic_conv, NULL, NULL};

size_t chex_winograd_scratch_floats(int c, int m)
{
    return ((size_t)16 * (c + m) * 32 + 15) & ~(size_t)15; /* largest NR = 32 */
}

void chex_winograd_weights(float *u, const float *w, int m, int c)
{
    for (int o = 0; o < m; o++)
        for (int ci = 0; ci < c; ci++) {
            const float *g = w + ((long)o * c + ci) * 9;
            float t[4][3], r[4][4];
            for (int k = 0; k < 3; k++) { /* G g */
                t[0][k] = g[k];
                t[1][k] = 0.5f * (g[k] + g[3 + k] + g[6 + k]);
                t[2][k] = 0.5f * (g[k] - g[3 + k] + g[6 + k]);
                t[3][k] = g[6 + k];
            }
            for (int i = 0; i < 4; i++) { /* (G g) G^T */
                r[i][0] = t[i][0];
                r[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                r[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                r[i][3] = t[i][2];
            }
            for (int e = 0; e < 16; e++)
                u[(size_t)e * m * c + (long)(o / 8) * 8 * c + (long)ci * 8 + o % 8] =
                    r[e / 4][e % 4];
        }
}

size_t chex_winograd4_scratch_floats(int c, int m)
{
    return (size_t)(37 * c + 36 * m) * 16; /* V (37 x 16 per channel) and M of one panel */
}

void chex_winograd4_weights(float *u, const float *w, int m, int c)
{
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    for (int o = 0; o < m; o++)
        for (int ci = 0; ci < c; ci++) {
            const float *g = w + ((long)o * c + ci) * 9;
            double t[6][3];
            for (int i = 0; i < 6; i++) /* G g */
                for (int k = 0; k < 3; k++)
                    t[i][k] = G[i][0] * g[k] + G[i][1] * g[3 + k] + G[i][2] * g[6 + k];
            for (int i = 0; i < 6; i++) /* (G g) G^T */
                for (int j = 0; j < 6; j++)
                    u[(size_t)(6 * i + j) * m * c + (long)(o / 8) * 8 * c + (long)ci * 8 +
                      o % 8] = (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
        }
}

size_t chex_conv_scratch_floats(int k)
{
    /* Packed panels: at most KT_BUDGET_FLOATS, or one panel of the largest
     * NR (32) when k is long; plus one MR x NR tile (MR <= 8). */
    size_t panel = (size_t)k * 32, budget = KT_BUDGET_FLOATS;
    size_t f = (panel > budget ? panel : budget) + 8 * 32;
    return (f + 15) & ~(size_t)15;
}

void chex_pack_weights(float *dst, const float *src, int m, int k)
{
    for (int o = 0; o < m; o++)
        for (int q = 0; q < k; q++)
            dst[(long)(o / 8) * 8 * k + (long)q * 8 + o % 8] = src[(long)o * k + q];
}

void chex_unpack_weights(float *dst, const float *src, int m, int k)
{
    for (int o = 0; o < m; o++)
        for (int q = 0; q < k; q++)
            dst[(long)o * k + q] = src[(long)(o / 8) * 8 * k + (long)q * 8 + o % 8];
}

/* ---- task scheduling shared by the fp32 and int8 drivers ---- */

void chex_gemm_run(const chex_gemm_plan *p, chex_gemm_task_fn fn, const void *ctx,
                   void *scratch, size_t area_bytes)
{
    if (p->nthreads <= 1) {
        long last = -1;
        for (long task = 0; task < p->ntasks; task++)
            fn(ctx, task, scratch, &last);
        return;
    }
#pragma omp parallel num_threads(p->nthreads)
    {
        void *area = (char *)scratch + (size_t)omp_get_thread_num() * area_bytes;
        long last = -1;
#pragma omp for schedule(dynamic, 1)
        for (long task = 0; task < p->ntasks; task++)
            fn(ctx, task, area, &last);
    }
}

/* ---- run-time choice ---- */

const chex_kernels *chex_kernels_by_name(const char *name)
{
    if (!name)
        return NULL;
    __builtin_cpu_init();
    if (!strcmp(name, "generic"))
        return &chex_kernels_generic;
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   ? &chex_kernels_avx2
                   : NULL;
    if (!strcmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")
                   ? &chex_kernels_avx512
                   : NULL;
    return NULL;
}

static _Atomic(const chex_kernels *) g_kernels;

const chex_kernels *chex_kernels_get(void)
{
    const chex_kernels *k = atomic_load(&g_kernels);
    if (k)
        return k;
    k = chex_kernels_by_name(getenv("CHEXD_ISA"));
    if (!k)
        k = chex_kernels_by_name("avx512");
    if (!k)
        k = chex_kernels_by_name("avx2");
    if (!k)
        k = &chex_kernels_generic;
    atomic_store(&g_kernels, k);
    return k;
}

int chex_kernels_select(const char *name)
{
    const chex_kernels *k = chex_kernels_by_name(name);
    if (!k)
        return -1;
    atomic_store(&g_kernels, k);
    return 0;
}
