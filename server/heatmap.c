/* server/heatmap.c - class activation maps as PNG images and JSON; see heatmap.h. */
#include "server/heatmap.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "model/cam.h"

/* matplotlib's "inferno" (Nathaniel J. Smith, Stefan van der Walt; CC0),
 * from matplotlib._cm_listed._inferno_data, each channel round(255 * v). */
const uint8_t chex_heatmap_inferno[256][3] = {
    {0, 0, 4}, {1, 0, 5}, {1, 1, 6}, {1, 1, 8},
    {2, 1, 10}, {2, 2, 12}, {2, 2, 14}, {3, 2, 16},
    {4, 3, 18}, {4, 3, 20}, {5, 4, 23}, {6, 4, 25},
    {7, 5, 27}, {8, 5, 29}, {9, 6, 31}, {10, 7, 34},
    {11, 7, 36}, {12, 8, 38}, {13, 8, 41}, {14, 9, 43},
    {16, 9, 45}, {17, 10, 48}, {18, 10, 50}, {20, 11, 52},
    {21, 11, 55}, {22, 11, 57}, {24, 12, 60}, {25, 12, 62},
    {27, 12, 65}, {28, 12, 67}, {30, 12, 69}, {31, 12, 72},
    {33, 12, 74}, {35, 12, 76}, {36, 12, 79}, {38, 12, 81},
    {40, 11, 83}, {41, 11, 85}, {43, 11, 87}, {45, 11, 89},
    {47, 10, 91}, {49, 10, 92}, {50, 10, 94}, {52, 10, 95},
    {54, 9, 97}, {56, 9, 98}, {57, 9, 99}, {59, 9, 100},
    {61, 9, 101}, {62, 9, 102}, {64, 10, 103}, {66, 10, 104},
    {68, 10, 104}, {69, 10, 105}, {71, 11, 106}, {73, 11, 106},
    {74, 12, 107}, {76, 12, 107}, {77, 13, 108}, {79, 13, 108},
    {81, 14, 108}, {82, 14, 109}, {84, 15, 109}, {85, 15, 109},
    {87, 16, 110}, {89, 16, 110}, {90, 17, 110}, {92, 18, 110},
    {93, 18, 110}, {95, 19, 110}, {97, 19, 110}, {98, 20, 110},
    {100, 21, 110}, {101, 21, 110}, {103, 22, 110}, {105, 22, 110},
    {106, 23, 110}, {108, 24, 110}, {109, 24, 110}, {111, 25, 110},
    {113, 25, 110}, {114, 26, 110}, {116, 26, 110}, {117, 27, 110},
    {119, 28, 109}, {120, 28, 109}, {122, 29, 109}, {124, 29, 109},
    {125, 30, 109}, {127, 30, 108}, {128, 31, 108}, {130, 32, 108},
    {132, 32, 107}, {133, 33, 107}, {135, 33, 107}, {136, 34, 106},
    {138, 34, 106}, {140, 35, 105}, {141, 35, 105}, {143, 36, 105},
    {144, 37, 104}, {146, 37, 104}, {147, 38, 103}, {149, 38, 103},
    {151, 39, 102}, {152, 39, 102}, {154, 40, 101}, {155, 41, 100},
    {157, 41, 100}, {159, 42, 99}, {160, 42, 99}, {162, 43, 98},
    {163, 44, 97}, {165, 44, 96}, {166, 45, 96}, {168, 46, 95},
    {169, 46, 94}, {171, 47, 94}, {173, 48, 93}, {174, 48, 92},
    {176, 49, 91}, {177, 50, 90}, {179, 50, 90}, {180, 51, 89},
    {182, 52, 88}, {183, 53, 87}, {185, 53, 86}, {186, 54, 85},
    {188, 55, 84}, {189, 56, 83}, {191, 57, 82}, {192, 58, 81},
    {193, 58, 80}, {195, 59, 79}, {196, 60, 78}, {198, 61, 77},
    {199, 62, 76}, {200, 63, 75}, {202, 64, 74}, {203, 65, 73},
    {204, 66, 72}, {206, 67, 71}, {207, 68, 70}, {208, 69, 69},
    {210, 70, 68}, {211, 71, 67}, {212, 72, 66}, {213, 74, 65},
    {215, 75, 63}, {216, 76, 62}, {217, 77, 61}, {218, 78, 60},
    {219, 80, 59}, {221, 81, 58}, {222, 82, 56}, {223, 83, 55},
    {224, 85, 54}, {225, 86, 53}, {226, 87, 52}, {227, 89, 51},
    {228, 90, 49}, {229, 92, 48}, {230, 93, 47}, {231, 94, 46},
    {232, 96, 45}, {233, 97, 43}, {234, 99, 42}, {235, 100, 41},
    {235, 102, 40}, {236, 103, 38}, {237, 105, 37}, {238, 106, 36},
    {239, 108, 35}, {239, 110, 33}, {240, 111, 32}, {241, 113, 31},
    {241, 115, 29}, {242, 116, 28}, {243, 118, 27}, {243, 120, 25},
    {244, 121, 24}, {245, 123, 23}, {245, 125, 21}, {246, 126, 20},
    {246, 128, 19}, {247, 130, 18}, {247, 132, 16}, {248, 133, 15},
    {248, 135, 14}, {248, 137, 12}, {249, 139, 11}, {249, 140, 10},
    {249, 142, 9}, {250, 144, 8}, {250, 146, 7}, {250, 148, 7},
    {251, 150, 6}, {251, 151, 6}, {251, 153, 6}, {251, 155, 6},
    {251, 157, 7}, {252, 159, 7}, {252, 161, 8}, {252, 163, 9},
    {252, 165, 10}, {252, 166, 12}, {252, 168, 13}, {252, 170, 15},
    {252, 172, 17}, {252, 174, 18}, {252, 176, 20}, {252, 178, 22},
    {252, 180, 24}, {251, 182, 26}, {251, 184, 29}, {251, 186, 31},
    {251, 188, 33}, {251, 190, 35}, {250, 192, 38}, {250, 194, 40},
    {250, 196, 42}, {250, 198, 45}, {249, 199, 47}, {249, 201, 50},
    {249, 203, 53}, {248, 205, 55}, {248, 207, 58}, {247, 209, 61},
    {247, 211, 64}, {246, 213, 67}, {246, 215, 70}, {245, 217, 73},
    {245, 219, 76}, {244, 221, 79}, {244, 223, 83}, {244, 225, 86},
    {243, 227, 90}, {243, 229, 93}, {242, 230, 97}, {242, 232, 101},
    {242, 234, 105}, {241, 236, 109}, {241, 237, 113}, {241, 239, 117},
    {241, 241, 121}, {242, 242, 125}, {242, 244, 130}, {243, 245, 134},
    {243, 246, 138}, {244, 248, 142}, {245, 249, 146}, {246, 250, 150},
    {248, 251, 154}, {249, 252, 157}, {250, 253, 161}, {252, 255, 164},
};

/* Label names compare equal ignoring case, with '_' and ' ' the same. */
static int label_eq(const char *a, const char *b, int loose)
{
    if (!loose)
        return strcmp(a, b) == 0;
    for (; *a && *b; a++, b++) {
        char x = (char)(*a == '_' ? ' ' : *a), y = (char)(*b == '_' ? ' ' : *b);
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return *a == *b;
}

int chex_heatmap_parse_label(const chex_model_info *in, const char *s, int allow_top, int *label,
                             char *msg, size_t msglen)
{
    if (s && allow_top && strcasecmp(s, "top") == 0) {
        *label = CHEX_CAM_TOP;
        return 0;
    }
    for (int pass = 0; s && pass < 2; pass++)
        for (int i = 0; i < in->num_labels; i++)
            if (label_eq(s, in->labels[i], pass)) {
                if (in->untrained[i]) {
                    snprintf(msg, msglen, "label \"%s\" is not trained in this model (its "
                             "operating point is NaN): no prediction and no heat map for it",
                             in->labels[i]);
                    return -1;
                }
                *label = i;
                return 0;
            }
    /* Printable, bounded copy of what was sent. */
    char shown[48];
    size_t o = 0;
    for (const char *c = s ? s : ""; *c && o + 1 < sizeof shown; c++)
        shown[o++] = ((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f && *c != '"') ? *c
                                                                                        : '?';
    shown[o] = '\0';
    int n = s ? snprintf(msg, msglen, "unknown label \"%s\"; valid labels: %s", shown,
                         allow_top ? "top, " : "")
              : snprintf(msg, msglen, "no label given; valid labels: %s", allow_top ? "top, " : "");
    for (int i = 0, k = 0; i < in->num_labels && n >= 0 && (size_t)n < msglen; i++)
        if (!in->untrained[i])
            n += snprintf(msg + n, msglen - (size_t)n, "%s%s", k++ ? ", " : "", in->labels[i]);
    return -1;
}

int chex_heatmap_resolve(const chex_model_info *in, int choice, const float *probs)
{
    if (choice != CHEX_CAM_TOP)
        return choice;
    int best = -1;
    for (int i = 0; i < in->num_labels; i++)
        if (!in->untrained[i] && (best < 0 || probs[i] > probs[best]))
            best = i;
    return best; /* >= 0: the loader refuses a model with no trained label */
}

size_t chex_heatmap_raw_floats(const chex_pipeline *p)
{
    size_t g = (size_t)chex_cam_grid_side(p->spec.size);
    return (size_t)p->ncrops * g * g;
}

int chex_heatmap_take(const chex_pipeline *p, const chex_model_ws *ws, int first, int label,
                      float *raw, char *msg, size_t msglen)
{
    int c, h, w;
    if (!chex_model_ws_features(ws, &c, &h, &w) || h != w || h != chex_cam_grid_side(p->spec.size)) {
        snprintf(msg, msglen, "class activation map: no feature map of the expected size");
        return -1;
    }
    chex_model_err e = chex_cam_raw_ws(p->model, ws, first, p->ncrops, label, raw);
    if (e != CHEX_MODEL_OK) {
        snprintf(msg, msglen, "class activation map: %s", chex_model_strerror(e));
        return -1;
    }
    return 0;
}

float *chex_heatmap_map(const chex_pipeline *p, const chex_prepared *pp, const float *raw,
                        char *msg, size_t msglen)
{
    int W = pp->image.width, H = pp->image.height, g = chex_cam_grid_side(p->spec.size);
    int DW = pp->display.width, DH = pp->display.height;
    if (W < 1 || H < 1 || DW < 1 || DH < 1 || pp->ncrops < 1 || pp->ncrops > 10) {
        snprintf(msg, msglen, "class activation map: no image geometry");
        return NULL;
    }
    /* crop boxes are in original pixels; the map is drawn at the display size */
    double sx = (double)DW / W, sy = (double)DH / H;
    int same = DW == W && DH == H;
    chex_cam_box boxes[10];
    for (int k = 0; k < pp->ncrops; k++) {
        const chex_pre_crop *c = &pp->crops[k];
        boxes[k] = same ? (chex_cam_box){c->x0, c->y0, c->x1, c->y1, c->flipped}
                        : (chex_cam_box){(float)(c->x0 * sx), (float)(c->y0 * sy),
                                         (float)(c->x1 * sx), (float)(c->y1 * sy), c->flipped};
    }
    float *map = malloc((size_t)DW * (size_t)DH * sizeof(float));
    if (!map) {
        snprintf(msg, msglen, "out of memory for a %dx%d heat map", DW, DH);
        return NULL;
    }
    chex_model_err e = chex_cam_map(map, DW, DH, raw, pp->ncrops, g, g, p->spec.size, boxes);
    if (e != CHEX_MODEL_OK) {
        snprintf(msg, msglen, "class activation map: %s", chex_model_strerror(e));
        free(map);
        return NULL;
    }
    return map;
}

/* ---------- PNG into memory ---------- */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} membuf;

static void png_err(png_structp png, png_const_charp what)
{
    (void)what;
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp what)
{
    (void)png;
    (void)what;
}

static void mem_write(png_structp png, png_bytep data, size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        size_t nc = m->cap ? m->cap : 65536;
        while (nc < m->len + n)
            nc *= 2;
        uint8_t *nb = realloc(m->buf, nc);
        if (!nb)
            png_error(png, "out of memory");
        m->buf = nb;
        m->cap = nc;
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}

static void mem_flush(png_structp png)
{
    (void)png;
}

/* Writes h rows of w pixels (channels 1: gray, 3: RGB) produced one at a time
 * by fill(row, y, ctx) into m. */
typedef void (*row_fill)(uint8_t *row, int y, const void *ctx);

static int png_encode(membuf *m, int w, int h, int channels, row_fill fill, const void *ctx,
                      uint8_t *row)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, png_err, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* Level 3: maps of multi-megapixel radiographs are encoded per request. */
    png_set_compression_level(png, 3);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) {
        fill(row, y, ctx);
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

static int encode(int w, int h, int channels, row_fill fill, const void *ctx, uint8_t **png,
                  size_t *len, char *msg, size_t msglen)
{
    *png = NULL;
    *len = 0;
    if (w < 1 || h < 1) {
        snprintf(msg, msglen, "PNG of %dx%d pixels", w, h);
        return -1;
    }
    membuf m = {0};
    uint8_t *row = malloc((size_t)w * (size_t)channels);
    if (!row || png_encode(&m, w, h, channels, fill, ctx, row) != 0) {
        free(row);
        free(m.buf);
        snprintf(msg, msglen, "cannot encode a %dx%d PNG (out of memory)", w, h);
        return -1;
    }
    free(row);
    *png = m.buf;
    *len = m.len;
    return 0;
}

static uint8_t to_byte(float v)
{
    if (!(v > 0.0f))
        return 0;
    if (v >= 1.0f)
        return 255;
    return (uint8_t)(v * 255.0f + 0.5f);
}

typedef struct {
    const float *map;
    int w;
} gray_ctx;

static void fill_gray(uint8_t *row, int y, const void *ctx)
{
    const gray_ctx *g = ctx;
    const float *src = g->map + (size_t)y * (size_t)g->w;
    for (int x = 0; x < g->w; x++)
        row[x] = to_byte(src[x]);
}

int chex_heatmap_png_gray(const float *map, int w, int h, uint8_t **png, size_t *len, char *msg,
                          size_t msglen)
{
    gray_ctx g = {map, w};
    return encode(w, h, 1, fill_gray, &g, png, len, msg, msglen);
}

typedef struct {
    const chex_pre_display *img;
    const float *map;
} overlay_ctx;

static void fill_overlay(uint8_t *row, int y, const void *ctx)
{
    const overlay_ctx *o = ctx;
    const chex_pre_display *img = o->img;
    size_t off = (size_t)y * (size_t)img->width;
    const float *m = o->map + off;
    const float *r = img->pix + off;
    for (int x = 0; x < img->width; x++) {
        float gray = r[x];
        float v = m[x] < 0.0f ? 0.0f : m[x] > 1.0f ? 1.0f : m[x];
        const uint8_t *c = chex_heatmap_inferno[to_byte(v)];
        float a = 0.2f + 0.45f * v;
        float g = (gray < 0.0f ? 0.0f : gray > 1.0f ? 1.0f : gray) * 255.0f * (1.0f - a);
        for (int k = 0; k < 3; k++) {
            float out = g + a * (float)c[k];
            row[3 * x + k] = (uint8_t)(out > 255.0f ? 255 : out + 0.5f);
        }
    }
}

int chex_heatmap_png_overlay(const chex_pre_display *img, const float *map, uint8_t **png,
                             size_t *len, char *msg, size_t msglen)
{
    if (!img || !img->pix || !map) {
        *png = NULL;
        *len = 0;
        snprintf(msg, msglen, "overlay: no decoded image pixels");
        return -1;
    }
    overlay_ctx o = {img, map};
    return encode(img->width, img->height, 3, fill_overlay, &o, png, len, msg, msglen);
}

uint8_t *chex_heatmap_rgb_overlay(const chex_pre_display *img, const float *map, char *msg,
                                  size_t msglen)
{
    if (!img || !img->pix || !map || img->width < 1 || img->height < 1) {
        snprintf(msg, msglen, "overlay: no decoded image pixels");
        return NULL;
    }
    size_t row = (size_t)img->width * 3;
    uint8_t *rgb = malloc(row * (size_t)img->height);
    if (!rgb) {
        snprintf(msg, msglen, "overlay: out of memory");
        return NULL;
    }
    overlay_ctx o = {img, map};
    for (int y = 0; y < img->height; y++)
        fill_overlay(rgb + (size_t)y * row, y, &o);
    return rgb;
}

/* ---------- base64, JSON, files ---------- */

char *chex_heatmap_base64(const uint8_t *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 4 * ((len + 2) / 3);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

json_t *chex_heatmap_json(const char *label, int width, int height, int overlay_width,
                          int overlay_height, const uint8_t *png, size_t len)
{
    char *b64 = chex_heatmap_base64(png, len);
    if (!b64)
        return NULL;
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:s}", "label", label, "width", width,
                          "height", height, "overlay_width", overlay_width, "overlay_height",
                          overlay_height, "png_base64", b64);
    free(b64);
    return j;
}

/* File-name safe copy: letters, digits, '-', '_', '.'; anything else -> '_'. */
static void safe_name(char *dst, size_t cap, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && src[i] && o + 1 < cap; i++) {
        char c = src[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.';
        dst[o++] = ok ? c : '_';
    }
    dst[o] = '\0';
}

static int write_atomic(const char *path, const uint8_t *data, size_t len, char *msg,
                        size_t msglen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(msg, msglen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    int bad = fwrite(data, 1, len, f) != len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        snprintf(msg, msglen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int chex_heatmap_write_files(const char *dir, const char *image_path, const char *label,
                             const chex_pre_display *img, const float *map,
                             char paths[2][4096], char *msg, size_t msglen)
{
    const char *base = strrchr(image_path, '/');
    base = base ? base + 1 : image_path;
    const char *dot = strrchr(base, '.');
    char stem[256], lab[CHEX_MODEL_LABEL_LEN];
    safe_name(stem, sizeof stem, base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
    safe_name(lab, sizeof lab, label, strlen(label));
    char gray_path[4096], over_path[4096];
    int n1 = snprintf(gray_path, sizeof gray_path, "%s/%s.cam-%s.png", dir, stem, lab);
    int n2 = snprintf(over_path, sizeof over_path, "%s/%s.overlay-%s.png", dir, stem, lab);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof gray_path || (size_t)n2 >= sizeof over_path) {
        snprintf(msg, msglen, "--cam-out: path too long");
        return -1;
    }
    uint8_t *png = NULL;
    size_t len = 0;
    if (chex_heatmap_png_gray(map, img->width, img->height, &png, &len, msg, msglen) != 0)
        return -1;
    int rc = write_atomic(gray_path, png, len, msg, msglen);
    free(png);
    if (rc != 0)
        return -1;
    if (chex_heatmap_png_overlay(img, map, &png, &len, msg, msglen) != 0)
        return -1;
    rc = write_atomic(over_path, png, len, msg, msglen);
    free(png);
    if (rc == 0 && paths) {
        memcpy(paths[0], gray_path, sizeof gray_path);
        memcpy(paths[1], over_path, sizeof over_path);
    }
    return rc;
}
