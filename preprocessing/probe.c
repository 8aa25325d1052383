/* preprocessing/probe.c - what an image will cost before any pixel is
 * decoded: the header's geometry and the worst-case heap bytes of
 * chex_pre_prepare for it (the decoder's own share from each decoder's probe,
 * the resampler's from chex_pre_rows_bytes, plus the output tensors). */
#include <string.h>

#include "preprocessing/decoders.h"
#include "preprocessing/pre_internal.h"
#include "preprocessing/stream.h"

chex_pre_err chex_pre_probe(const uint8_t *buf, size_t len, const chex_pre_opts *opts,
                            const chex_pre_spec *spec, chex_pre_probe_info *info,
                            char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!opts || !spec || !info) {
        chex_pre_msg(msg, msglen, "chex_pre_probe: NULL options, spec or info");
        return CHEX_PRE_ERR_ARG;
    }
    memset(info, 0, sizeof *info);
    info->frames = 1;
    chex_pre_err e = chex_pre_spec_check(spec, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    if (!buf || len == 0) {
        chex_pre_msg(msg, msglen, "empty image body");
        return CHEX_PRE_ERR_EMPTY;
    }
    if (chex_pre_is_png(buf, len))
        e = chex_pre_probe_png(buf, len, opts, info, msg, msglen);
    else if (chex_pre_is_jpeg(buf, len))
        e = chex_pre_probe_jpeg(buf, len, opts, info, msg, msglen);
    else if (chex_pre_is_dicom(buf, len))
        e = chex_pre_probe_dicom(buf, len, opts, info, msg, msglen);
    else {
        chex_pre_msg(msg, msglen, "not a PNG, JPEG or DICOM file (first bytes %02x %02x %02x %02x)",
                     buf[0], len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
        e = CHEX_PRE_ERR_FORMAT;
    }
    if (e != CHEX_PRE_OK)
        return e;
    /* the preset refuses extreme aspect ratios before decoding too */
    chex_pre_geom g;
    e = chex_pre_geom_make(spec, info->width, info->height, &g, msg, msglen);
    if (e != CHEX_PRE_OK)
        return e;
    uint64_t tensors = (uint64_t)chex_pre_ncrops(spec) * (uint64_t)spec->channels *
                       (uint64_t)spec->size * (uint64_t)spec->size * sizeof(float);
    info->decode_bytes += chex_pre_rows_bytes(spec, info->width, info->height, info->channels,
                                              opts->max_overlay_side, &info->display_bytes) +
                          tensors;
    /* large DICOM frames are resampled in bands (chex_pre_rows_banded) */
    if (strcmp(info->format, "dicom") == 0)
        info->decode_bytes += chex_pre_rows_band_bytes(
            spec, info->width, info->height, opts->max_overlay_side,
            chex_pre_band_count(opts->threads, info->width, info->height));
    return CHEX_PRE_OK;
}
