/* preprocessing/pre_internal.h - helpers shared by the decoders (internal). */
#ifndef CHEX_PRE_INTERNAL_H
#define CHEX_PRE_INTERNAL_H

#include "preprocessing/preprocess.h"

/* Ceiling applied whatever opts->max_pixels says (and when it is 0): 2^30
 * pixels, i.e. a 4 GiB float plane; sides must also fit an int. */
#define CHEX_PRE_HARD_MAX_PIXELS (UINT64_C(1) << 30)
#define CHEX_PRE_MAX_SIDE UINT64_C(0x7fffffff)

/* snprintf into msg when msg/msglen allow it. */
void chex_pre_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Header-time checks, before any pixel buffer exists: zero size -> UNUSABLE,
 * width*height over the limit -> TOO_LARGE, shorter side < min_side -> UNUSABLE.
 * what names the source in the message ("PNG", "JPEG"). */
chex_pre_err chex_pre_check_dims(uint64_t width, uint64_t height, const chex_pre_opts *opts,
                                 const char *what, char *msg, size_t msglen);

#endif
