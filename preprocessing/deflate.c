/* preprocessing/deflate.c - raw inflate for Deflated Explicit VR Little Endian
 * (1.2.840.10008.1.2.1.99, PS3.5 A.5): the data set after the file meta group
 * is an RFC 1951 stream without zlib header. The output grows geometrically up
 * to max_out; a stream that would inflate past it is refused before more memory
 * is taken (a deflate bomb stops at the limit).
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "Deflated Explicit VR Little Endian"

chex_pre_err chex_deflate_inflate(const uint8_t *src, size_t len, size_t max_out, uint8_t **out,
                                  size_t *out_len, char *msg, size_t msglen)
{
    if (!out || !out_len || (!src && len) || max_out == 0) {
        chex_pre_msg(msg, msglen, "chex_deflate_inflate: bad argument");
        return CHEX_PRE_ERR_ARG;
    }
    *out = NULL;
    *out_len = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    size_t cap = len < max_out / 4 ? 4 * len + 4096 : max_out;
    if (cap > max_out)
        cap = max_out;
    uint8_t *buf = malloc(cap);
    chex_pre_err err = CHEX_PRE_OK;
    size_t have = 0, in_left = len;
    const uint8_t *in = src;
    if (!buf) {
        err = CHEX_PRE_ERR_NOMEM;
        chex_pre_msg(msg, msglen, "out of memory");
        goto done;
    }
    for (;;) {
        if (have == cap) {
            if (cap == max_out) {
                err = CHEX_PRE_ERR_TOO_LARGE;
                chex_pre_msg(msg, msglen,
                             "DICOM %s data set inflates to more than %zu bytes", NAME, max_out);
                goto done;
            }
            size_t ncap = cap > max_out / 2 ? max_out : 2 * cap;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                err = CHEX_PRE_ERR_NOMEM;
                chex_pre_msg(msg, msglen, "out of memory");
                goto done;
            }
            buf = nb;
            cap = ncap;
        }
        /* zlib counts in uInt: feed and drain in slices */
        uInt ichunk = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
        uInt ochunk = cap - have > 0x40000000u ? 0x40000000u : (uInt)(cap - have);
        z.next_in = (Bytef *)(uintptr_t)in;
        z.avail_in = ichunk;
        z.next_out = buf + have;
        z.avail_out = ochunk;
        int r = inflate(&z, Z_NO_FLUSH);
        in += ichunk - z.avail_in;
        in_left -= ichunk - z.avail_in;
        have += ochunk - z.avail_out;
        if (r == Z_STREAM_END)
            break;
        if (r == Z_BUF_ERROR && z.avail_out > 0 && in_left == 0) {
            err = CHEX_PRE_ERR_MALFORMED;
            chex_pre_msg(msg, msglen, "DICOM malformed: %s data set is truncated", NAME);
            goto done;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            err = r == Z_MEM_ERROR ? CHEX_PRE_ERR_NOMEM : CHEX_PRE_ERR_MALFORMED;
            chex_pre_msg(msg, msglen, "DICOM malformed: %s data set is corrupt (%s)", NAME,
                         z.msg ? z.msg : "zlib error");
            goto done;
        }
    }
done:
    inflateEnd(&z);
    if (err != CHEX_PRE_OK) {
        free(buf);
        return err;
    }
    *out = buf;
    *out_len = have;
    return CHEX_PRE_OK;
}
