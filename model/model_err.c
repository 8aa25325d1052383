/* model/model_err.c - message table for chex_model_err, and the message
 * writer the module's files share. */
#include "model/model.h"

#include <stdarg.h>
#include <stdio.h>

#include "model/model_msg.h"

static const char *const messages[CHEX_MODEL_ERR_COUNT] = {
    [CHEX_MODEL_OK] = "ok",
    [CHEX_MODEL_ERR_IO] = "cannot open, read or map the model file",
    [CHEX_MODEL_ERR_FORMAT] = "malformed safetensors container",
    [CHEX_MODEL_ERR_DTYPE] = "unsupported tensor dtype",
    [CHEX_MODEL_ERR_MISSING] = "an expected tensor is missing",
    [CHEX_MODEL_ERR_SHAPE] = "a tensor has the wrong shape",
    [CHEX_MODEL_ERR_UNEXPECTED] = "the file has a tensor the network does not use",
    [CHEX_MODEL_ERR_METADATA] = "model metadata missing, malformed or inconsistent",
    [CHEX_MODEL_ERR_NOMEM] = "out of memory",
    [CHEX_MODEL_ERR_ARG] = "bad argument",
};

const char *chex_model_strerror(chex_model_err e)
{
    if ((unsigned)e >= CHEX_MODEL_ERR_COUNT || !messages[e])
        return "unknown model error";
    return messages[e];
}

void chex_model_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    if (!msg || msglen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}
