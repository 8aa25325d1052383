/* preprocessing/stream.c - where decoded rows go: the full float image
 * (chex_pre_decode) or the streaming resamplers (chex_pre_prepare). See
 * stream.h. */
#include "preprocessing/stream.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preprocessing/pre_internal.h"

void chex_pre_display_size(int W, int H, int max_side, int *dw, int *dh)
{
    *dw = W;
    *dh = H;
    if (max_side <= 0 || (W <= max_side && H <= max_side))
        return;
    if (W >= H) {
        long s = lround((double)H * max_side / W);
        *dw = max_side;
        *dh = (int)(s < 1 ? 1 : s);
    } else {
        long s = lround((double)W * max_side / H);
        *dh = max_side;
        *dw = (int)(s < 1 ? 1 : s);
    }
}

/* per allocation: the allocator's header and rounding (large blocks are
 * mmap'd and rounded up to a page) */
#define MALLOC_SLACK 4096u

uint64_t chex_pre_rows_bytes(const chex_pre_spec *spec, int w, int h, int channels,
                             int max_display_side, uint64_t *display_bytes)
{
    chex_pre_geom g;
    *display_bytes = 0;
    if (chex_pre_geom_make(spec, w, h, &g, NULL, 0) != CHEX_PRE_OK)
        return 0;
    int wc = channels == 3 && spec->channels == 3 ? 3 : 1;
    uint64_t n = (uint64_t)channels * (uint64_t)w * sizeof(float);
    if (channels == 3)
        n += (uint64_t)w * sizeof(float);
    if (g.preset == CHEX_PRESET_XRV) {
        /* nrow, one table for both axes, the double engine, its sums */
        wc = spec->channels;
        n += (uint64_t)wc * (uint64_t)w * sizeof(float);
        n += chex_pre_xrv_axis_bytes(g.rw, g.ow);
        n += chex_pre_xrv_stream_bytes(g.rw, g.ow, wc);
        n += (uint64_t)g.ow * sizeof(double);
        n += 8u * MALLOC_SLACK;
    } else {
        int tx = chex_pre_axis_torch_aa_taps(g.rw, g.ow);
        int ty = chex_pre_axis_torch_aa_taps(g.rh, g.oh);
        n += chex_pre_axis_bytes(g.ow, tx) + chex_pre_axis_bytes(g.oh, ty);
        n += chex_pre_stream_bytes_for(g.rw, chex_pre_axis_torch_aa_live(g.rh, g.oh), wc);
    }
    n += (uint64_t)wc * (uint64_t)g.ow * (uint64_t)g.oh * sizeof(float);
    int dw, dh;
    chex_pre_display_size(w, h, max_display_side, &dw, &dh);
    if (dw != w || dh != h) {
        int dtx = chex_pre_axis_torch_aa_taps(w, dw), dty = chex_pre_axis_torch_aa_taps(h, dh);
        n += chex_pre_axis_bytes(dw, dtx) + chex_pre_axis_bytes(dh, dty);
        n += chex_pre_stream_bytes_for(w, chex_pre_axis_torch_aa_live(h, dh), 1);
    }
    *display_bytes = (uint64_t)dw * (uint64_t)dh * sizeof(float) + MALLOC_SLACK;
    return n + 16u * MALLOC_SLACK;
}

chex_pre_err chex_pre_rows_begin(chex_pre_rows *r, int w, int h, int channels, char *msg,
                                 size_t msglen)
{
    r->width = w;
    r->height = h;
    r->channels = channels;
    r->y = 0;
    if (r->img) {
        size_t n = (size_t)channels * (size_t)w * (size_t)h;
        r->img->pix = malloc(n * sizeof(float));
        if (!r->img->pix) {
            chex_pre_msg(msg, msglen, "out of memory for %dx%d pixels", w, h);
            return CHEX_PRE_ERR_NOMEM;
        }
        return CHEX_PRE_OK;
    }
    chex_pre_err e = chex_pre_geom_make(r->spec, w, h, &r->geom, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    const chex_pre_geom *g = &r->geom;
    const int xrv = g->preset == CHEX_PRESET_XRV;
    r->wc = xrv ? r->spec->channels : channels == 3 && r->spec->channels == 3 ? 3 : 1;
    if (channels != 1)
        r->raw_values = 0; /* only 16-bit gray PNGs map afterwards */
    r->scratch = malloc((size_t)channels * (size_t)w * sizeof(float));
    if (channels == 3)
        r->lum = malloc((size_t)w * sizeof(float));
    r->res = malloc((size_t)r->wc * (size_t)g->ow * (size_t)g->oh * sizeof(float));
    if (!r->scratch || (channels == 3 && !r->lum) || !r->res)
        goto nomem;
    if (xrv) {
        r->nrow = malloc((size_t)r->wc * (size_t)w * sizeof(float));
        if (!r->nrow || chex_pre_xrv_axis_weights(&r->xa, g->rw, g->ow) != CHEX_PRE_OK ||
            chex_pre_xrv_stream_init(&r->xs, &r->xa, r->raw_values ? 1 : r->wc, g->x0,
                                     g->y0) != CHEX_PRE_OK)
            goto nomem;
        if (r->raw_values) {
            r->xsum = malloc((size_t)g->ow * sizeof(double));
            if (!r->xsum)
                goto nomem;
            chex_pre_xrv_weight_sums(&r->xa, r->xsum);
        }
    } else if (chex_pre_axis_torch_aa(&r->ax, g->rw, g->ow) != 0 ||
               chex_pre_axis_torch_aa(&r->ay, g->rh, g->oh) != 0 ||
               chex_pre_stream_init(&r->st, &r->ax, &r->ay, r->wc, g->x0, g->y0, r->res) != 0) {
        goto nomem;
    }
    for (int c = 0; c < channels; c++)
        r->planes[c] = r->scratch + (size_t)c * (size_t)w;
    if (r->display) {
        chex_pre_display *d = r->display;
        chex_pre_display_size(w, h, r->max_display_side, &d->width, &d->height);
        d->pix = malloc((size_t)d->width * (size_t)d->height * sizeof(float));
        if (!d->pix)
            goto nomem;
        r->disp_scaled = d->width != w || d->height != h;
        if (r->disp_scaled &&
            (chex_pre_axis_torch_aa(&r->dax, w, d->width) != 0 ||
             chex_pre_axis_torch_aa(&r->day, h, d->height) != 0 ||
             chex_pre_stream_init(&r->dst, &r->dax, &r->day, 1, 0, 0, d->pix) != 0))
            goto nomem;
    }
    return CHEX_PRE_OK;
nomem:
    chex_pre_msg(msg, msglen, "out of memory preparing a %dx%d image", w, h);
    return CHEX_PRE_ERR_NOMEM;
}

float *const *chex_pre_rows_next(chex_pre_rows *r)
{
    if (r->img) {
        size_t plane = (size_t)r->width * (size_t)r->height;
        for (int c = 0; c < r->channels; c++)
            r->planes[c] = r->img->pix + (size_t)c * plane + (size_t)r->y * (size_t)r->width;
    }
    return r->planes;
}

/* What one row goes through, on the calling thread (the rows' own state) or
 * on one band's thread (its own buffers and band streams). */
typedef struct {
    float *const *planes;     /* the row, channels planes */
    float *lum;               /* (width) colour -> gray */
    float *nrow;              /* xrv: (wc, width) normalised row */
    chex_pre_stream *st, *dst;
    chex_pre_xrv_stream *xs;
    int copy_lo, copy_hi;     /* unscaled display: rows copied */
} lane;

/* The xrv preset's row: torchxrayvision's normalisation in float, as the
 * reference (tensor.c xrv_norm) computes it, over the region's columns; raw
 * values go as they are. */
static void xrv_push(const chex_pre_rows *r, const lane *l, int y)
{
    if (r->raw_values) {
        chex_pre_xrv_stream_push(l->xs, y, (const float *const *)l->planes);
        return;
    }
    const chex_pre_spec *spec = r->spec;
    const int x0 = r->geom.x0, x1 = r->geom.x0 + r->geom.rw;
    const float *nr[3];
    for (int c = 0; c < r->wc; c++) {
        float *o = l->nrow + (size_t)c * (size_t)r->width;
        const float m = spec->mean[c], sd = spec->std[c];
        if (r->channels == 3 && r->wc == 1) {
            const float *R = l->planes[0], *G = l->planes[1], *B = l->planes[2];
            for (int x = x0; x < x1; x++) {
                float vr = (R[x] - m) / sd, vg = (G[x] - m) / sd, vb = (B[x] - m) / sd;
                o[x] = (vr + vg + vb) / 3.0f;
            }
        } else {
            const float *p = l->planes[r->channels == 3 ? c : 0];
            for (int x = x0; x < x1; x++)
                o[x] = (p[x] - m) / sd;
        }
        nr[c] = o;
    }
    chex_pre_xrv_stream_push(l->xs, y, nr);
}

static void commit_row(const chex_pre_rows *r, const lane *l, int y)
{
    const int xrv = r->geom.preset == CHEX_PRESET_XRV;
    if (xrv && y >= r->geom.y0 && y < r->geom.y0 + r->geom.rh)
        xrv_push(r, l, y);
    const float *gray = l->planes[0];
    if (r->channels == 3 && ((!xrv && r->wc == 1) || r->display)) {
        const float *R = l->planes[0], *G = l->planes[1], *B = l->planes[2];
        for (int x = 0; x < r->width; x++)
            l->lum[x] = R[x] * 0.299f + G[x] * 0.587f + B[x] * 0.114f;
        gray = l->lum;
    }
    if (!xrv)
        chex_pre_stream_push(l->st, y, r->wc == 3 ? (const float *const *)l->planes : &gray);
    if (r->display) {
        if (r->disp_scaled)
            chex_pre_stream_push(l->dst, y, &gray);
        else if (y >= l->copy_lo && y < l->copy_hi)
            memcpy(r->display->pix + (size_t)y * (size_t)r->width, gray,
                   (size_t)r->width * sizeof(float));
    }
}

void chex_pre_rows_commit(chex_pre_rows *r)
{
    if (r->img || r->y >= r->height) {
        r->y++;
        return;
    }
    lane l = {.planes = r->planes, .lum = r->lum, .nrow = r->nrow, .st = &r->st,
              .dst = &r->dst, .xs = &r->xs, .copy_lo = 0, .copy_hi = r->height};
    commit_row(r, &l, r->y);
    r->y++;
}

/* ---- bands ---- */

int chex_pre_band_count(int threads, int w, int h)
{
    if (threads <= 1 || (uint64_t)w * (uint64_t)h < CHEX_PRE_BAND_MIN_PIXELS)
        return 1;
    int n = threads < CHEX_PRE_MAX_BANDS / CHEX_PRE_BANDS_PER_THREAD
                ? threads * CHEX_PRE_BANDS_PER_THREAD
                : CHEX_PRE_MAX_BANDS;
    int most = h / CHEX_PRE_BAND_MIN_ROWS;
    n = n < most ? n : most;
    return n > 1 ? n : 1;
}

/* Band t of nbands over image rows [y0, y1) gets the output rows [*o0, *o1)
 * of an axis (region starting at image row origin) whose key, the last input
 * row an output reads (that of the output before when it reads none), is in
 * [y0, y1): keys never decrease, so bands are consecutive and cover every
 * output once. */
static int outputs_before(const int *first, const int *count, int n, int origin, int y)
{
    int k = 0, key = -1;
    while (k < n) {
        if (count[k] > 0)
            key = origin + first[k] + count[k] - 1;
        if (key >= y)
            break;
        k++;
    }
    return k;
}

static void band_outputs(const int *first, const int *count, int n, int origin, int t,
                         int nbands, int y0, int y1, int *o0, int *o1)
{
    *o0 = t == 0 ? 0 : outputs_before(first, count, n, origin, y0);
    *o1 = t + 1 == nbands ? n : outputs_before(first, count, n, origin, y1);
}

typedef struct {
    float *row, *nrow;
    chex_pre_stream st, dst;
    chex_pre_xrv_stream xs;
    int y0, y1;  /* image rows [y0, y1) are this band's */
    int lo;      /* first image row it reads */
} band;

uint64_t chex_pre_rows_band_bytes(const chex_pre_spec *spec, int w, int h, int max_display_side,
                                  int nbands)
{
    chex_pre_geom g;
    if (nbands <= 1 || chex_pre_geom_make(spec, w, h, &g, NULL, 0) != CHEX_PRE_OK)
        return 0;
    /* per band: its state, the row, its band streams' rings (and 1 KiB for
     * OpenMP's team bookkeeping) */
    uint64_t b = sizeof(band) + 1024u + (uint64_t)w * sizeof(float) + MALLOC_SLACK;
    if (g.preset == CHEX_PRESET_XRV) {
        int taps = chex_pre_xrv_taps(g.rw, g.ow);
        taps = taps > 0 ? taps : 1;
        b += (uint64_t)spec->channels * (uint64_t)w * sizeof(float) + MALLOC_SLACK;
        b += (uint64_t)taps * ((uint64_t)spec->channels * (uint64_t)g.ow * sizeof(double) +
                               sizeof(double *)) +
             2u * MALLOC_SLACK;
    } else {
        b += chex_pre_stream_bytes_for(g.rw, chex_pre_axis_torch_aa_live(g.rh, g.oh), 1) +
             2u * MALLOC_SLACK;
    }
    int dw, dh;
    chex_pre_display_size(w, h, max_display_side, &dw, &dh);
    if (dw != w || dh != h)
        b += chex_pre_stream_bytes_for(w, chex_pre_axis_torch_aa_live(h, dh), 1) +
             2u * MALLOC_SLACK;
    return (uint64_t)nbands * b + MALLOC_SLACK;
}

static void band_run(const chex_pre_rows *r, band *b, chex_pre_row_fn row, void *ctx)
{
    const int xrv = r->geom.preset == CHEX_PRESET_XRV;
    float *planes[1] = {b->row};
    lane l = {.planes = planes, .lum = NULL, .nrow = b->nrow, .st = &b->st, .dst = &b->dst,
              .xs = &b->xs, .copy_lo = b->y0, .copy_hi = b->y1};
    for (int y = b->lo; y < b->y1; y++) {
        int want = xrv ? chex_pre_xrv_stream_wants(&b->xs, y) : chex_pre_stream_wants(&b->st, y);
        if (r->display)
            want = want || (r->disp_scaled ? chex_pre_stream_wants(&b->dst, y) : y >= b->y0);
        if (!want)
            continue;
        row(ctx, y, b->row);
        commit_row(r, &l, y);
    }
}

chex_pre_err chex_pre_rows_banded(chex_pre_rows *r, int nbands, int nthreads,
                                  chex_pre_row_fn row, void *ctx, char *msg, size_t msglen)
{
    if (r->img || r->channels != 1 || r->raw_values || r->y != 0 || nbands < 1 ||
        nbands > CHEX_PRE_MAX_BANDS || nthreads < 1) {
        chex_pre_msg(msg, msglen, "chex_pre_rows_banded: not a fresh one-channel stream");
        return CHEX_PRE_ERR_ARG;
    }
    const chex_pre_geom *g = &r->geom;
    const int xrv = g->preset == CHEX_PRESET_XRV, H = r->height;
    band *bs = calloc((size_t)nbands, sizeof *bs);
    chex_pre_err e = CHEX_PRE_OK;
    if (!bs)
        goto nomem;
    for (int t = 0; t < nbands; t++) {
        band *b = &bs[t];
        b->y0 = (int)((int64_t)H * t / nbands);
        b->y1 = (int)((int64_t)H * (t + 1) / nbands);
        b->row = malloc((size_t)r->width * sizeof(float));
        if (!b->row)
            goto nomem;
        b->lo = b->y0;
        if (xrv) {
            const chex_pre_axis_weights *a = &r->xa;
            int o0, o1;
            band_outputs(a->first, a->count, a->out, g->y0, t, nbands, b->y0, b->y1, &o0, &o1);
            b->nrow = malloc((size_t)r->wc * (size_t)r->width * sizeof(float));
            if (!b->nrow || chex_pre_xrv_stream_init_band(&b->xs, a, r->wc, g->x0, g->y0,
                                                          r->xs.out, o0, o1, b->y0 - g->y0,
                                                          b->y1 - g->y0) != CHEX_PRE_OK)
                goto nomem;
            if (b->xs.next_out < o1 && g->y0 + b->xs.first_row < b->lo)
                b->lo = g->y0 + b->xs.first_row;
        } else {
            const chex_pre_axis *ay = &r->ay;
            int o0, o1;
            band_outputs(ay->first, ay->count, ay->out, g->y0, t, nbands, b->y0, b->y1, &o0,
                         &o1);
            if (chex_pre_stream_init_band(&b->st, &r->ax, ay, 1, g->x0, g->y0, r->res, o0, o1))
                goto nomem;
            if (b->st.next_out < o1 && g->y0 + b->st.first_row < b->lo)
                b->lo = g->y0 + b->st.first_row;
        }
        if (r->display && r->disp_scaled) {
            const chex_pre_axis *day = &r->day;
            int o0, o1;
            band_outputs(day->first, day->count, day->out, 0, t, nbands, b->y0, b->y1, &o0,
                         &o1);
            if (chex_pre_stream_init_band(&b->dst, &r->dax, day, 1, 0, 0, r->display->pix, o0,
                                          o1))
                goto nomem;
            if (b->dst.next_out < o1 && b->dst.first_row < b->lo)
                b->lo = b->dst.first_row;
        }
    }
    /* bands in order to whichever thread is free: a thread the system
     * delays holds up one band, not half the image */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads < nbands ? nthreads : nbands)
    for (int t = 0; t < nbands; t++)
        band_run(r, &bs[t], row, ctx);
    if (xrv)
        for (int t = 0; t < nbands; t++)
            for (int c = 0; c < r->wc; c++) {
                r->xs.lo[c] = bs[t].xs.lo[c] < r->xs.lo[c] ? bs[t].xs.lo[c] : r->xs.lo[c];
                r->xs.hi[c] = bs[t].xs.hi[c] > r->xs.hi[c] ? bs[t].xs.hi[c] : r->xs.hi[c];
            }
    r->y = H;
    goto done;
nomem:
    chex_pre_msg(msg, msglen, "out of memory preparing a %dx%d image in %d bands", r->width, H,
                 nbands);
    e = CHEX_PRE_ERR_NOMEM;
done:
    for (int t = 0; bs && t < nbands; t++) {
        free(bs[t].row);
        free(bs[t].nrow);
        chex_pre_stream_free(&bs[t].st);
        chex_pre_stream_free(&bs[t].dst);
        chex_pre_xrv_stream_free(&bs[t].xs);
    }
    free(bs);
    return e;
}

static void apply_map(float *v, size_t n, float off, float range)
{
    if (range > 0.0f) {
        for (size_t i = 0; i < n; i++)
            v[i] = (v[i] - off) / range;
    } else {
        memset(v, 0, n * sizeof *v); /* constant image: all 0 */
    }
}

/* The xrv preset's result: the double planes rounded to float (raw values:
 * mapped and normalised first, a * R + b * sum_y * sum_x), then clipped to
 * the region's normalised range. */
static void xrv_finish(chex_pre_rows *r, int with_map, float off, float range)
{
    const int S = r->geom.ow;
    const size_t n = (size_t)S * (size_t)S;
    for (int c = 0; c < r->wc; c++) {
        float *plane = r->res + (size_t)c * n;
        float lo, hi;
        if (r->raw_values) {
            const float m = r->spec->mean[c], sd = r->spec->std[c];
            const double *R = r->xs.out;
            double a = 0.0, b = -(double)m / (double)sd;
            if (with_map && range > 0.0f) {
                a = 1.0 / ((double)range * (double)sd);
                b = -((double)off / (double)range + (double)m) / (double)sd;
            } else if (!with_map) {
                a = 1.0 / (double)sd;
            }
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    size_t i = (size_t)y * (size_t)S + (size_t)x;
                    plane[i] = (float)(a * R[i] + b * (r->xsum[y] * r->xsum[x]));
                }
            /* the bounds through the same float map as the reference */
            float v[2] = {r->xs.lo[0], r->xs.hi[0]};
            for (int k = 0; k < 2; k++) {
                float x = v[k];
                if (with_map)
                    x = range > 0.0f ? (x - off) / range : 0.0f;
                v[k] = (x - m) / sd;
            }
            lo = v[0] < v[1] ? v[0] : v[1];
            hi = v[0] < v[1] ? v[1] : v[0];
        } else {
            const double *o = r->xs.out + (size_t)c * n;
            for (size_t i = 0; i < n; i++)
                plane[i] = (float)o[i];
            lo = r->xs.lo[c];
            hi = r->xs.hi[c];
        }
        chex_pre_xrv_clip(plane, n, lo, hi);
    }
}

void chex_pre_rows_finish(chex_pre_rows *r, int with_map, float off, float range)
{
    if (r->img) {
        if (with_map)
            apply_map(r->img->pix, (size_t)r->channels * (size_t)r->width * (size_t)r->height,
                      off, range);
        return;
    }
    const chex_pre_geom *g = &r->geom;
    if (g->preset == CHEX_PRESET_XRV) {
        xrv_finish(r, with_map, off, range);
        if (with_map && r->display)
            apply_map(r->display->pix, (size_t)r->display->width * (size_t)r->display->height,
                      off, range);
    } else if (with_map) {
        apply_map(r->res, (size_t)r->wc * (size_t)g->ow * (size_t)g->oh, off, range);
        if (r->display)
            apply_map(r->display->pix, (size_t)r->display->width * (size_t)r->display->height,
                      off, range);
    }
    chex_pre_emit(r->out, r->crops, r->res, r->wc, g, r->spec);
}

void chex_pre_rows_free(chex_pre_rows *r)
{
    free(r->scratch);
    free(r->lum);
    free(r->res);
    free(r->nrow);
    free(r->xsum);
    r->scratch = r->lum = r->res = r->nrow = NULL;
    r->xsum = NULL;
    chex_pre_xrv_stream_free(&r->xs);
    chex_pre_axis_weights_free(&r->xa);
    chex_pre_stream_free(&r->st);
    chex_pre_stream_free(&r->dst);
    chex_pre_axis_free(&r->ax);
    chex_pre_axis_free(&r->ay);
    chex_pre_axis_free(&r->dax);
    chex_pre_axis_free(&r->day);
}
