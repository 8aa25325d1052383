/* preprocessing/rle.c - DICOM RLE Lossless (1.2.840.10008.1.2.5, PS3.5 Annex G).
 *
 * Header: 16 little-endian uint32, the segment count (1..15) then the offset of
 * each segment from the start of the frame. Segment k holds byte plane k: for
 * sample c and byte b (0 = most significant) k = c * bytes + b. Each segment is
 * PackBits: n in 0..127 copies the next n+1 bytes, n in -127..-1 repeats the
 * next byte 1-n times, -128 does nothing.
 */
#include <string.h>

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "RLE Lossless"

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static chex_pre_err check(const uint8_t *frame, size_t len, int width, int height, int spp,
                          int bytes, chex_codec_frame *f, char *msg, size_t msglen)
{
    if (!f || (!frame && len) || width < 1 || height < 1 || (spp != 1 && spp != 3) ||
        (bytes != 1 && bytes != 2)) {
        chex_pre_msg(msg, msglen, "chex_rle: bad argument");
        return CHEX_PRE_ERR_ARG;
    }
    if (len < 64) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s frame shorter than its 64-byte header",
                     NAME);
        return CHEX_PRE_ERR_MALFORMED;
    }
    uint32_t nseg = le32(frame);
    if (nseg != (uint32_t)(spp * bytes)) {
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: %s frame has %lu segments, %d samples of %d bytes need %d",
                     NAME, (unsigned long)nseg, spp, bytes, spp * bytes);
        return CHEX_PRE_ERR_MALFORMED;
    }
    for (uint32_t k = 0; k < nseg; k++) {
        uint32_t off = le32(frame + 4 + 4 * k);
        uint32_t end = k + 1 < nseg ? le32(frame + 8 + 4 * k) : (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len);
        if (off < 64 || off > len || end < off || end > len) {
            chex_pre_msg(msg, msglen, "DICOM malformed: %s segment %lu offset %lu is outside the frame",
                         NAME, (unsigned long)k + 1, (unsigned long)off);
            return CHEX_PRE_ERR_MALFORMED;
        }
    }
    f->width = width;
    f->height = height;
    f->spp = spp;
    f->precision = 8 * bytes;
    f->is_signed = 0;
    return CHEX_PRE_OK;
}

chex_pre_err chex_rle_probe(const uint8_t *frame, size_t len, int width, int height, int spp,
                            int bytes, chex_codec_frame *f, char *msg, size_t msglen)
{
    return check(frame, len, width, height, spp, bytes, f, msg, msglen);
}

chex_pre_err chex_rle_decode(uint16_t *out, size_t out_cap, const uint8_t *frame, size_t len,
                             int width, int height, int spp, int bytes, chex_codec_frame *f,
                             char *msg, size_t msglen)
{
    chex_pre_err e = check(frame, len, width, height, spp, bytes, f, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    size_t np = (size_t)width * (size_t)height, need = np * (size_t)spp;
    if (!out || out_cap < need) {
        chex_pre_msg(msg, msglen, "chex_rle_decode: buffer of %zu samples, %zu needed", out_cap,
                     need);
        return CHEX_PRE_ERR_ARG;
    }
    memset(out, 0, need * sizeof *out);
    int nseg = spp * bytes;
    for (int k = 0; k < nseg; k++) {
        size_t p = le32(frame + 4 + 4 * k);
        size_t end = k + 1 < nseg ? le32(frame + 8 + 4 * k) : len;
        int c = k / bytes, shift = 8 * (bytes - 1 - k % bytes);
        uint16_t *o = out + c;
        size_t i = 0; /* pixels written in this plane */
        while (i < np) {
            if (p >= end)
                goto short_segment;
            int n = (int8_t)frame[p++];
            if (n >= 0) {
                size_t cnt = (size_t)n + 1;
                if (end - p < cnt)
                    goto short_segment;
                for (size_t j = 0; j < cnt && i < np; j++, i++)
                    o[i * (size_t)spp] |= (uint16_t)(frame[p + j] << shift);
                p += cnt;
            } else if (n != -128) {
                if (p >= end)
                    goto short_segment;
                uint16_t v = (uint16_t)(frame[p++] << shift);
                for (size_t j = 0; j < (size_t)(1 - n) && i < np; j++, i++)
                    o[i * (size_t)spp] |= v;
            }
        }
        continue;
    short_segment:
        chex_pre_msg(msg, msglen,
                     "DICOM malformed: %s segment %d ends after %zu of %zu bytes (truncated or "
                     "corrupt)",
                     NAME, k + 1, i, np);
        return CHEX_PRE_ERR_MALFORMED;
    }
    return CHEX_PRE_OK;
}
