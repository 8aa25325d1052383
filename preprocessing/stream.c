/* preprocessing/stream.c - where decoded rows go: the full float image
 * (chex_pre_decode) or the streaming resamplers (chex_pre_prepare). See
 * stream.h. */
#include "preprocessing/stream.h"

#include <math.h>
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
        n += chex_pre_stream_bytes_for(g.ow, ty, wc);
    }
    n += (uint64_t)wc * (uint64_t)g.ow * (uint64_t)g.oh * sizeof(float);
    int dw, dh;
    chex_pre_display_size(w, h, max_display_side, &dw, &dh);
    if (dw != w || dh != h) {
        int dtx = chex_pre_axis_torch_aa_taps(w, dw), dty = chex_pre_axis_torch_aa_taps(h, dh);
        n += chex_pre_axis_bytes(dw, dtx) + chex_pre_axis_bytes(dh, dty);
        n += chex_pre_stream_bytes_for(dw, dty, 1);
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

/* The xrv preset's row: torchxrayvision's normalisation in float, as the
 * reference (tensor.c xrv_norm) computes it, over the region's columns; raw
 * values go as they are. */
static void xrv_push(chex_pre_rows *r)
{
    if (r->raw_values) {
        chex_pre_xrv_stream_push(&r->xs, r->y, (const float *const *)r->planes);
        return;
    }
    const chex_pre_spec *spec = r->spec;
    const int x0 = r->geom.x0, x1 = r->geom.x0 + r->geom.rw;
    const float *nr[3];
    for (int c = 0; c < r->wc; c++) {
        float *o = r->nrow + (size_t)c * (size_t)r->width;
        const float m = spec->mean[c], sd = spec->std[c];
        if (r->channels == 3 && r->wc == 1) {
            const float *R = r->planes[0], *G = r->planes[1], *B = r->planes[2];
            for (int x = x0; x < x1; x++) {
                float vr = (R[x] - m) / sd, vg = (G[x] - m) / sd, vb = (B[x] - m) / sd;
                o[x] = (vr + vg + vb) / 3.0f;
            }
        } else {
            const float *p = r->planes[r->channels == 3 ? c : 0];
            for (int x = x0; x < x1; x++)
                o[x] = (p[x] - m) / sd;
        }
        nr[c] = o;
    }
    chex_pre_xrv_stream_push(&r->xs, r->y, nr);
}

void chex_pre_rows_commit(chex_pre_rows *r)
{
    if (r->img || r->y >= r->height) {
        r->y++;
        return;
    }
    const int xrv = r->geom.preset == CHEX_PRESET_XRV;
    if (xrv && r->y >= r->geom.y0 && r->y < r->geom.y0 + r->geom.rh)
        xrv_push(r);
    const float *gray = r->planes[0];
    if (r->channels == 3 && ((!xrv && r->wc == 1) || r->display)) {
        const float *R = r->planes[0], *G = r->planes[1], *B = r->planes[2];
        for (int x = 0; x < r->width; x++)
            r->lum[x] = R[x] * 0.299f + G[x] * 0.587f + B[x] * 0.114f;
        gray = r->lum;
    }
    if (!xrv)
        chex_pre_stream_push(&r->st, r->y, r->wc == 3 ? (const float *const *)r->planes : &gray);
    if (r->display) {
        if (r->disp_scaled)
            chex_pre_stream_push(&r->dst, r->y, &gray);
        else
            memcpy(r->display->pix + (size_t)r->y * (size_t)r->width, gray,
                   (size_t)r->width * sizeof(float));
    }
    r->y++;
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
