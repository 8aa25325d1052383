/* preprocessing/deflate.c - raw inflate for Deflated Explicit VR Little Endian
 * (1.2.840.10008.1.2.1.99, PS3.5 A.5): the data set after the file meta group
 * is an RFC 1951 stream without zlib header.
 *
 * A deflate bomb (a small body inflating to gigabytes) must cost neither
 * memory nor unbounded time: chex_deflate_size counts the inflated bytes
 * through a fixed scratch buffer and stops at max_out, so the size is known
 * (and refused, or reserved in the memory budget) before any buffer of that
 * size exists; chex_deflate_inflate then takes exactly that many bytes once.
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "preprocessing/codecs.h"
#include "preprocessing/pre_internal.h"

#define NAME "Deflated Explicit VR Little Endian"

/* zlib counts in uInt: feed and drain in slices of at most this */
#define SLICE 0x40000000u

typedef struct {
    z_stream z;
    const uint8_t *in;
    size_t in_left;
} inflater;

static chex_pre_err inf_open(inflater *s, const uint8_t *src, size_t len, char *msg, size_t msglen)
{
    memset(s, 0, sizeof *s);
    s->in = src;
    s->in_left = len;
    if (inflateInit2(&s->z, -15) != Z_OK) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    return CHEX_PRE_OK;
}

/* Inflates into dst[0..cap); *got = bytes written, *ended = 1 when the
 * stream's end was reached. Stops when dst is full or the stream ends. */
static chex_pre_err inf_fill(inflater *s, uint8_t *dst, size_t cap, size_t *got, int *ended,
                             char *msg, size_t msglen)
{
    *got = 0;
    *ended = 0;
    while (*got < cap) {
        uInt ichunk = s->in_left > SLICE ? SLICE : (uInt)s->in_left;
        uInt ochunk = cap - *got > SLICE ? SLICE : (uInt)(cap - *got);
        s->z.next_in = (Bytef *)(uintptr_t)s->in;
        s->z.avail_in = ichunk;
        s->z.next_out = dst + *got;
        s->z.avail_out = ochunk;
        int r = inflate(&s->z, Z_NO_FLUSH);
        s->in += ichunk - s->z.avail_in;
        s->in_left -= ichunk - s->z.avail_in;
        *got += ochunk - s->z.avail_out;
        if (r == Z_STREAM_END) {
            *ended = 1;
            return CHEX_PRE_OK;
        }
        if (r == Z_BUF_ERROR && s->z.avail_out > 0 && s->in_left == 0) {
            chex_pre_msg(msg, msglen, "DICOM malformed: %s data set is truncated", NAME);
            return CHEX_PRE_ERR_MALFORMED;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            chex_pre_msg(msg, msglen, "DICOM malformed: %s data set is corrupt (%s)", NAME,
                         s->z.msg ? s->z.msg : "zlib error");
            return r == Z_MEM_ERROR ? CHEX_PRE_ERR_NOMEM : CHEX_PRE_ERR_MALFORMED;
        }
    }
    return CHEX_PRE_OK;
}

static chex_pre_err too_large(size_t max_out, char *msg, size_t msglen)
{
    chex_pre_msg(msg, msglen, "DICOM %s data set inflates to more than %zu bytes", NAME, max_out);
    return CHEX_PRE_ERR_TOO_LARGE;
}

chex_pre_err chex_deflate_size(const uint8_t *src, size_t len, size_t max_out, size_t *out_len,
                               char *msg, size_t msglen)
{
    if (!out_len || (!src && len)) {
        chex_pre_msg(msg, msglen, "chex_deflate_size: bad argument");
        return CHEX_PRE_ERR_ARG;
    }
    *out_len = 0;
    inflater s;
    chex_pre_err err = inf_open(&s, src, len, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    uint8_t scratch[16384];
    size_t total = 0;
    for (;;) {
        size_t got;
        int ended;
        err = inf_fill(&s, scratch, sizeof scratch, &got, &ended, msg, msglen);
        if (err != CHEX_PRE_OK)
            break;
        if (got > max_out - total) {
            err = too_large(max_out, msg, msglen);
            break;
        }
        total += got;
        if (ended)
            break;
    }
    inflateEnd(&s.z);
    if (err == CHEX_PRE_OK)
        *out_len = total;
    return err;
}

chex_pre_err chex_deflate_head(const uint8_t *src, size_t len, uint8_t *dst, size_t cap,
                               size_t *got, char *msg, size_t msglen)
{
    if (!got || (!src && len) || (!dst && cap)) {
        chex_pre_msg(msg, msglen, "chex_deflate_head: bad argument");
        return CHEX_PRE_ERR_ARG;
    }
    *got = 0;
    inflater s;
    chex_pre_err err = inf_open(&s, src, len, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    int ended;
    err = inf_fill(&s, dst, cap, got, &ended, msg, msglen);
    inflateEnd(&s.z);
    return err;
}

chex_pre_err chex_deflate_inflate(const uint8_t *src, size_t len, size_t max_out, uint8_t **out,
                                  size_t *out_len, char *msg, size_t msglen)
{
    if (!out || !out_len || (!src && len) || max_out == 0) {
        chex_pre_msg(msg, msglen, "chex_deflate_inflate: bad argument");
        return CHEX_PRE_ERR_ARG;
    }
    *out = NULL;
    *out_len = 0;
    size_t n = 0;
    chex_pre_err err = chex_deflate_size(src, len, max_out, &n, msg, msglen);
    if (err != CHEX_PRE_OK)
        return err;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        chex_pre_msg(msg, msglen, "out of memory");
        return CHEX_PRE_ERR_NOMEM;
    }
    size_t got = 0;
    err = chex_deflate_head(src, len, buf, n, &got, msg, msglen);
    if (err == CHEX_PRE_OK && got != n) {
        chex_pre_msg(msg, msglen, "DICOM malformed: %s data set inflated to %zu bytes, then %zu",
                     NAME, n, got);
        err = CHEX_PRE_ERR_MALFORMED;
    }
    if (err != CHEX_PRE_OK) {
        free(buf);
        return err;
    }
    *out = buf;
    *out_len = n;
    return CHEX_PRE_OK;
}
