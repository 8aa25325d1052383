/* model/model_msg.h - the one-line error message writer model/'s files share
 * (densenet.c, quant.c, safetensors.c). Not a public header. */
#ifndef CHEX_MODEL_MSG_H
#define CHEX_MODEL_MSG_H

#include <stddef.h>

/* vsnprintf into msg (msglen bytes); nothing when msg is NULL or msglen 0. */
void chex_model_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
