/* preprocessing/j2k.c - JPEG 2000 (1.2.840.10008.1.2.4.90/.91) through
 * OpenJPEG (Debian 12: 2.5.0), from memory.
 *
 * The stream reads the caller's buffer through user callbacks bounded by len
 * (never a temporary file). The codec is JP2 when the frame starts with the JP2
 * signature box (00 00 00 0C 6A 50 20 20), else a raw codestream (J2K, SOC FF 4F).
 * Strict mode: a truncated codestream is an error, not a partial image.
 * OpenJPEG's messages go to a handler that keeps the first error (never stderr).
 * Samples: each component's int32 values, masked to `precision` bits (two's
 * complement for a signed component), pixel-interleaved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openjpeg-2.5/openjpeg.h> /* Debian 12 libopenjp2-7-dev; no -I needed */

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "JPEG 2000"

const char *chex_j2k_library_version(void)
{
    return opj_version();
}

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
} memsrc;

static OPJ_SIZE_T src_read(void *dst, OPJ_SIZE_T n, void *user)
{
    memsrc *s = user;
    if (s->pos >= s->len)
        return (OPJ_SIZE_T)-1;
    size_t k = s->len - s->pos < n ? s->len - s->pos : n;
    memcpy(dst, s->buf + s->pos, k);
    s->pos += k;
    return k;
}

static OPJ_OFF_T src_skip(OPJ_OFF_T n, void *user)
{
    memsrc *s = user;
    if (n < 0) {
        if ((size_t)-n > s->pos)
            return -1;
        s->pos -= (size_t)-n;
        return n;
    }
    if ((uint64_t)n > s->len - s->pos)
        n = (OPJ_OFF_T)(s->len - s->pos);
    s->pos += (size_t)n;
    return n;
}

static OPJ_BOOL src_seek(OPJ_OFF_T n, void *user)
{
    memsrc *s = user;
    if (n < 0 || (uint64_t)n > s->len)
        return OPJ_FALSE;
    s->pos = (size_t)n;
    return OPJ_TRUE;
}

typedef struct {
    char text[160];
} errbuf;

static void on_error(const char *m, void *user)
{
    errbuf *e = user;
    if (e->text[0] == '\0') {
        snprintf(e->text, sizeof e->text, "%s", m);
        size_t n = strlen(e->text);
        while (n > 0 && (e->text[n - 1] == '\n' || e->text[n - 1] == ' '))
            e->text[--n] = '\0';
    }
}

static void on_quiet(const char *m, void *user)
{
    (void)m;
    (void)user;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The codestream inside a JP2 file: the contents of its top-level jp2c box. */
static const uint8_t *jp2_codestream(const uint8_t *p, size_t len, size_t *cs_len)
{
    size_t pos = 0;
    while (len - pos >= 8) {
        uint64_t box = be32(p + pos), hdr = 8;
        if (box == 1) {
            if (len - pos < 16)
                return NULL;
            box = (uint64_t)be32(p + pos + 8) << 32 | be32(p + pos + 12);
            hdr = 16;
        } else if (box == 0) {
            box = len - pos;
        }
        if (box < hdr || box > len - pos)
            return NULL;
        if (memcmp(p + pos + 4, "jp2c", 4) == 0) {
            *cs_len = (size_t)(box - hdr);
            return p + pos + hdr;
        }
        pos += (size_t)box;
    }
    return NULL;
}

uint64_t chex_j2k_tiles(const uint8_t *frame, size_t len)
{
    static const uint8_t jp2_sig[12] = {0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
    if (!frame)
        return 0;
    if (len >= 12 && memcmp(frame, jp2_sig, 12) == 0)
        frame = jp2_codestream(frame, len, &len);
    /* SOC, SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz */
    if (!frame || len < 40 || frame[0] != 0xFF || frame[1] != 0x4F || frame[2] != 0xFF ||
        frame[3] != 0x51)
        return 0;
    uint32_t xs = be32(frame + 8), ys = be32(frame + 12), xt = be32(frame + 24),
             yt = be32(frame + 28), xto = be32(frame + 32), yto = be32(frame + 36);
    if (xt == 0 || yt == 0 || xto >= xs || yto >= ys)
        return 0;
    return ((uint64_t)(xs - xto) + xt - 1) / xt * (((uint64_t)(ys - yto) + yt - 1) / yt);
}

typedef struct {
    memsrc src;
    errbuf err;
    opj_codec_t *codec;
    opj_stream_t *stream;
    opj_image_t *image;
} j2k_ctx;

static void ctx_close(j2k_ctx *c)
{
    if (c->image)
        opj_image_destroy(c->image);
    if (c->stream)
        opj_stream_destroy(c->stream);
    if (c->codec)
        opj_destroy_codec(c->codec);
    c->image = NULL;
    c->stream = NULL;
    c->codec = NULL;
}

static chex_pre_err bad(j2k_ctx *c, const char *when, char *msg, size_t msglen)
{
    chex_pre_msg(msg, msglen, "DICOM malformed: %s stream %s%s%s", NAME, when,
                 c->err.text[0] ? ": " : "", c->err.text);
    ctx_close(c);
    return CHEX_PRE_ERR_MALFORMED;
}

/* Opens the stream and reads the main header into c->image and *f. */
static chex_pre_err ctx_open(j2k_ctx *c, const uint8_t *frame, size_t len, chex_codec_frame *f,
                             char *msg, size_t msglen)
{
    memset(c, 0, sizeof *c);
    if (!f || (!frame && len)) {
        chex_pre_msg(msg, msglen, "chex_j2k: NULL argument");
        return CHEX_PRE_ERR_ARG;
    }
    static const uint8_t jp2_sig[12] = {0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
    int jp2 = len >= 12 && memcmp(frame, jp2_sig, 12) == 0;
    if (!jp2 && (len < 4 || frame[0] != 0xFF || frame[1] != 0x4F || frame[2] != 0xFF ||
                 frame[3] != 0x51))
        return bad(c, "starts with neither a JP2 signature nor SOC+SIZ (FF 4F FF 51)", msg,
                   msglen);
    /* OpenJPEG's header reader allocates state for every tile (about 10 KB
     * each): 65535 one-pixel tiles of a 255 x 257 image take 640 MB and
     * seconds before a sample is read */
    uint64_t tiles = chex_j2k_tiles(frame, len);
    if (tiles > CHEX_J2K_MAX_TILES) {
        chex_pre_msg(msg, msglen,
                     "%s stream with %llu tiles is not supported (at most %u: OpenJPEG holds "
                     "state for every tile)",
                     NAME, (unsigned long long)tiles, (unsigned)CHEX_J2K_MAX_TILES);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    c->src.buf = frame;
    c->src.len = len;
    c->codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    c->stream = opj_stream_create(64 * 1024, OPJ_TRUE);
    if (!c->codec || !c->stream) {
        ctx_close(c);
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    opj_stream_set_read_function(c->stream, src_read);
    opj_stream_set_skip_function(c->stream, src_skip);
    opj_stream_set_seek_function(c->stream, src_seek);
    opj_stream_set_user_data(c->stream, &c->src, NULL);
    opj_stream_set_user_data_length(c->stream, (OPJ_UINT64)len);
    opj_set_error_handler(c->codec, on_error, &c->err);
    opj_set_warning_handler(c->codec, on_quiet, NULL);
    opj_set_info_handler(c->codec, on_quiet, NULL);
    opj_dparameters_t par;
    opj_set_default_decoder_parameters(&par);
    if (!opj_setup_decoder(c->codec, &par) || !opj_decoder_set_strict_mode(c->codec, OPJ_TRUE))
        return bad(c, "setup", msg, msglen);
    if (!opj_read_header(c->stream, c->codec, &c->image) || !c->image)
        return bad(c, "header", msg, msglen);
    const opj_image_t *im = c->image;
    if (im->numcomps < 1 || im->numcomps > 4 || im->x1 <= im->x0 || im->y1 <= im->y0) {
        chex_pre_msg(msg, msglen, "%s stream with %u components is not supported", NAME,
                     im->numcomps);
        ctx_close(c);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    for (OPJ_UINT32 i = 0; i < im->numcomps; i++) {
        const opj_image_comp_t *k = &im->comps[i];
        if (k->dx != 1 || k->dy != 1 || k->prec < 1 || k->prec > 16 ||
            k->prec != im->comps[0].prec || k->sgnd != im->comps[0].sgnd) {
            chex_pre_msg(msg, msglen,
                         "%s stream with subsampled, mixed or %u-bit components is not supported",
                         NAME, k->prec);
            ctx_close(c);
            return CHEX_PRE_ERR_UNSUPPORTED;
        }
    }
    f->width = (int)(im->x1 - im->x0);
    f->height = (int)(im->y1 - im->y0);
    f->spp = (int)im->numcomps;
    f->precision = (int)im->comps[0].prec;
    f->is_signed = im->comps[0].sgnd ? 1 : 0;
    return CHEX_PRE_OK;
}

chex_pre_err chex_j2k_probe(const uint8_t *frame, size_t len, chex_codec_frame *f, char *msg,
                            size_t msglen)
{
    j2k_ctx c;
    chex_pre_err e = ctx_open(&c, frame, len, f, msg, msglen);
    ctx_close(&c);
    return e;
}

chex_pre_err chex_j2k_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                             chex_codec_frame *f, char *msg, size_t msglen)
{
    j2k_ctx c;
    chex_pre_err e = ctx_open(&c, frame, len, f, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    size_t np = (size_t)f->width * (size_t)f->height, need = np * (size_t)f->spp;
    if (!out || out_cap < need) {
        ctx_close(&c);
        chex_pre_msg(msg, msglen, "chex_j2k_decode: buffer of %zu samples, %zu needed", out_cap,
                     need);
        return CHEX_PRE_ERR_ARG;
    }
    if (!opj_decode(c.codec, c.stream, c.image) || !opj_end_decompress(c.codec, c.stream))
        return bad(&c, "is corrupt or truncated", msg, msglen);
    const opj_image_t *im = c.image;
    for (OPJ_UINT32 i = 0; i < im->numcomps; i++)
        if (!im->comps[i].data || im->comps[i].w != (OPJ_UINT32)f->width ||
            im->comps[i].h != (OPJ_UINT32)f->height)
            return bad(&c, "decoded to components of another size", msg, msglen);
    const uint32_t mask = (1u << f->precision) - 1u;
    for (size_t k = 0; k < (size_t)f->spp; k++) {
        const OPJ_INT32 *d = im->comps[k].data;
        for (size_t i = 0; i < np; i++)
            out[i * (size_t)f->spp + k] = (uint16_t)((uint32_t)d[i] & mask);
    }
    ctx_close(&c);
    return CHEX_PRE_OK;
}
