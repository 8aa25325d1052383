/* server/answer_dicom.c - DICOM answers; see answer_dicom.h. */
#include "server/answer_dicom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "report/report.h"
#include "server/heatmap.h"

const char chex_answer_dicom_not_dicom[] =
    "a PNG/JPEG input has no DICOM study to attach a result to: send a DICOM image, or ask "
    "for application/json";

int chex_answer_dicom_accepts(const char *accept)
{
    static const char want[] = "application/dicom";
    const size_t wn = sizeof want - 1;
    for (const char *p = accept; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n >= wn && strncasecmp(p, want, wn) == 0 &&
            (n == wn || p[wn] == ';' || p[wn] == ' ' || p[wn] == '\t')) {
            /* q=0 means "not acceptable" */
            const char *q = p + wn;
            int zero = 0;
            while (q < p + n) {
                const char *semi = memchr(q, ';', (size_t)(p + n - q));
                if (!semi)
                    break;
                q = semi + 1;
                while (*q == ' ')
                    q++;
                if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                    char *e = NULL;
                    double v = strtod(q + 2, &e);
                    zero = e != q + 2 && v <= 0.0;
                }
            }
            if (!zero)
                return 1;
        }
        p += n;
    }
    return 0;
}

static int fail(chex_answer_dicom_out *o, int status, const char *code, const char *msg)
{
    free(o->body);
    o->body = NULL;
    o->len = 0;
    o->status = status;
    o->code = code;
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    return -1;
}

static int fail_report(chex_answer_dicom_out *o, chex_report_err e, int part, int n,
                       const char *msg)
{
    char full[320];
    if (n > 1)
        snprintf(full, sizeof full, "part %d: %.280s", part + 1, msg);
    else
        snprintf(full, sizeof full, "%.300s", msg);
    switch (e) {
    case CHEX_REPORT_ERR_NOT_DICOM:
        return fail(o, 406, "not_acceptable", full);
    case CHEX_REPORT_ERR_SOURCE:
        return fail(o, 422, "unusable_image", full);
    default:
        return fail(o, 500, "internal_error", full);
    }
}

/* Appends to the growing body. */
static int append(chex_answer_dicom_out *o, size_t *cap, const void *data, size_t n)
{
    if (o->len + n > *cap) {
        size_t nc = (*cap ? *cap * 2 : 4096) + n;
        uint8_t *nb = realloc(o->body, nc);
        if (!nb)
            return -1;
        o->body = nb;
        *cap = nc;
    }
    memcpy(o->body + o->len, data, n);
    o->len += n;
    return 0;
}

int chex_answer_dicom(const chex_answer_dicom_in *in, chex_answer_dicom_out *o)
{
    memset(o, 0, sizeof *o);
    const chex_model_info *mi = in->p->info;
    chex_report_ctx ctx = {in->uid_root, CHEXD_VERSION, mi, chex_answer_demo_warning,
                           (long long)time(NULL)};
    char boundary[40];
    unsigned char r[12] = {0};
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        unsigned long long t = (unsigned long long)time(NULL) ^ (unsigned long long)clock();
        memcpy(r, &t, sizeof t);
    }
    snprintf(boundary, sizeof boundary, "chexd-%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x",
             r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]);
    int nobj = in->explain ? 1 : in->n;
    int multipart = in->multipart && !in->explain; /* explain: one image, one object */
    size_t cap = 0;
    char msg[300];
    for (int i = 0; i < nobj; i++) {
        uint8_t *dcm = NULL;
        size_t dlen = 0;
        chex_report_err e;
        if (in->explain) {
            const chex_prepared *pp = &in->imgs[0];
            int label = in->cam_label[0];
            float *map = chex_heatmap_map(in->p, pp, in->cam_raw, msg, sizeof msg);
            uint8_t *rgb = map ? chex_heatmap_rgb_overlay(&pp->display, map, msg, sizeof msg) : NULL;
            free(map);
            if (!rgb)
                return fail(o, 500, "internal_error", msg);
            e = chex_report_sc(&ctx, in->src[0], in->src_len[0], rgb, pp->display.width,
                               pp->display.height, label, in->probs[label], &dcm, &dlen, msg,
                               sizeof msg);
            free(rgb);
        } else {
            e = chex_report_sr(&ctx, in->src[i], in->src_len[i],
                               in->probs + (size_t)i * (size_t)mi->num_labels,
                               in->opts->has_threshold, in->opts->threshold, &dcm, &dlen, msg,
                               sizeof msg);
        }
        if (e != CHEX_REPORT_OK)
            return fail_report(o, e, i, nobj, msg);
        int bad = 0;
        if (multipart) {
            char head[120];
            int hn = snprintf(head, sizeof head, "--%s\r\nContent-Type: application/dicom\r\n\r\n",
                              boundary);
            bad = append(o, &cap, head, (size_t)hn) || append(o, &cap, dcm, dlen) ||
                  append(o, &cap, "\r\n", 2);
        } else {
            bad = append(o, &cap, dcm, dlen);
        }
        free(dcm);
        if (bad)
            return fail(o, 500, "internal_error", "out of memory");
    }
    if (multipart) {
        char tail[64];
        int tn = snprintf(tail, sizeof tail, "--%s--\r\n", boundary);
        if (append(o, &cap, tail, (size_t)tn))
            return fail(o, 500, "internal_error", "out of memory");
        snprintf(o->ctype, sizeof o->ctype,
                 "multipart/related; type=\"application/dicom\"; boundary=%s", boundary);
    } else {
        snprintf(o->ctype, sizeof o->ctype, "application/dicom");
    }
    return 0;
}
