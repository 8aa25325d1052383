/* server/secret_file.h - reads the small files chexd keeps secrets in (the API
 * token, the TLS certificate and key). Reentrant. */
#ifndef CHEX_SECRET_FILE_H
#define CHEX_SECRET_FILE_H

#include <stddef.h>

/* Reads all of path (1..max bytes) into a malloc'd NUL-terminated buffer;
 * *len (may be NULL) gets the length. NULL on error with one line in msg
 * naming key and path ("api_token_file: cannot open ...: No such file").
 * The caller wipes and frees the buffer (chex_secret_free). */
char *chex_secret_read(const char *path, const char *key, size_t max, size_t *len, char *msg,
                       size_t msglen);

/* Zeroes len bytes of buf, then frees it. NULL is accepted. */
void chex_secret_free(char *buf, size_t len);

#endif
