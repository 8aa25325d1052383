/* preprocessing/jpeg.c - JPEG from memory with libjpeg-turbo's TurboJPEG 2.x API
 * (Debian 12 ships 2.1.5: tjInitDecompress/tjDecompressHeader3/tjDecompress2;
 * the tj3* API is 3.0+).
 *
 * Baseline and progressive; grayscale -> 1 channel, YCbCr/RGB -> 3 channels,
 * samples / 255 ("8bit"). CMYK/YCCK, 12-bit and lossless JPEG -> UNSUPPORTED. Decoding uses libjpeg's
 * defaults (accurate integer IDCT, fancy upsampling), the same as PIL's
 * libjpeg(-turbo) decode. Warnings are errors (TJFLAG_STOPONWARNING): a
 * truncated or corrupt stream would otherwise decode to a half-grey image and
 * silently give wrong probabilities. Progressive scans are capped
 * (TJFLAG_LIMITSCANS) against scan-count denial of service.
 *
 * Also used by dicom.c for JPEG Baseline pixel data; it leaves img->is_dicom and
 * img->dicom untouched.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "preprocessing/decoders.h"
#include "preprocessing/pre_internal.h"

/* Finds the frame header (SOFn) before the first scan; returns its marker
 * (0 if none found within len) and its sample precision. Malformed segment
 * structure is left for libjpeg to report. */
static int find_sof(const uint8_t *buf, size_t len, int *precision)
{
    size_t i = 2;
    while (i + 4 <= len) {
        if (buf[i] != 0xFF)
            return 0;
        int m = buf[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) {
            i += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9)
            return 0;
        size_t seg = (size_t)buf[i + 2] << 8 | buf[i + 3];
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (seg < 3 || i + 4 >= len)
                return 0;
            *precision = buf[i + 4];
            return m;
        }
        if (seg < 2)
            return 0;
        i += 2 + seg;
    }
    return 0;
}

chex_pre_err chex_pre_decode_jpeg(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                                  chex_pre_image *img, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!img || !opts) {
        chex_pre_msg(msg, msglen, "JPEG: NULL image or options");
        return CHEX_PRE_ERR_ARG;
    }
    img->pix = NULL;
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (len < 2 || buf[0] != 0xFF || buf[1] != 0xD8) {
        chex_pre_msg(msg, msglen, "no JPEG SOI marker");
        return CHEX_PRE_ERR_FORMAT;
    }
    /* name the variants libjpeg-turbo 2.1's 8-bit build cannot decode */
    int precision = 8, sof = find_sof(buf, len, &precision);
    if (sof == 0xC3 || sof == 0xC7 || sof == 0xCB || sof == 0xCF) {
        chex_pre_msg(msg, msglen, "lossless JPEG (SOF%d) is not supported", sof - 0xC0);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    if (sof && precision != 8) {
        chex_pre_msg(msg, msglen, "JPEG with %d-bit samples is not supported (8-bit only)",
                     precision);
        return CHEX_PRE_ERR_UNSUPPORTED;
    }
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        chex_pre_msg(msg, msglen, "JPEG: cannot create a decompressor: %s", tjGetErrorStr2(NULL));
        return CHEX_PRE_ERR_NOMEM;
    }
    int w = 0, h = 0, subsamp = 0, cs = 0;
    chex_pre_err e = CHEX_PRE_OK;
    uint8_t *raw = NULL;
    float *pix = NULL;
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cs) != 0) {
        chex_pre_msg(msg, msglen, "JPEG header: %s", tjGetErrorStr2(tj));
        e = CHEX_PRE_ERR_MALFORMED;
        goto done;
    }
    /* TurboJPEG 2.1 accepts a tables-only stream (no SOF) with 0x0 dims. */
    if (w <= 0 || h <= 0) {
        chex_pre_msg(msg, msglen, "JPEG has no frame header (truncated before SOF)");
        e = CHEX_PRE_ERR_MALFORMED;
        goto done;
    }
    e = chex_pre_check_dims((uint64_t)w, (uint64_t)h, opts, "JPEG", msg, msglen);
    if (e != CHEX_PRE_OK)
        goto done;
    if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        chex_pre_msg(msg, msglen, "JPEG: CMYK/YCCK colour space is not supported");
        e = CHEX_PRE_ERR_UNSUPPORTED;
        goto done;
    }
    int oc = cs == TJCS_GRAY ? 1 : 3;
    size_t plane = (size_t)w * (size_t)h;
    raw = malloc(plane * (size_t)oc);
    pix = malloc(plane * (size_t)oc * sizeof(float));
    if (!raw || !pix) {
        chex_pre_msg(msg, msglen, "JPEG: out of memory for %dx%d pixels", w, h);
        e = CHEX_PRE_ERR_NOMEM;
        goto done;
    }
    if (tjDecompress2(tj, buf, (unsigned long)len, raw, w, 0, h, oc == 1 ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        chex_pre_msg(msg, msglen, "JPEG data: %s", tjGetErrorStr2(tj));
        e = CHEX_PRE_ERR_MALFORMED;
        goto done;
    }
    float lut[256];
    for (int i = 0; i < 256; i++)
        lut[i] = (float)i / 255.0f;
    for (int c = 0; c < oc; c++) {
        float *dst = pix + (size_t)c * plane;
        const uint8_t *src = raw + c;
        for (size_t i = 0; i < plane; i++, src += oc)
            dst[i] = lut[*src];
    }
    img->width = w;
    img->height = h;
    img->channels = oc;
    img->bit_depth = 8;
    snprintf(img->format, sizeof img->format, "jpeg");
    snprintf(img->scaling, sizeof img->scaling, "8bit");
    img->pix = pix;
    pix = NULL;
done:
    free(raw);
    free(pix);
    tjDestroy(tj);
    return e;
}
