/* server/secret_file.c - small secret files, read whole and wiped on free. */
#include "server/secret_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *chex_secret_read(const char *path, const char *key, size_t max, size_t *len, char *msg,
                       size_t msglen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "%s: cannot open %s: %s", key, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (!buf || err || n > max || n == 0) {
        snprintf(msg, msglen, "%s: %s is %s", key, path,
                 !buf  ? "not readable (out of memory)"
                 : err ? "unreadable"
                 : n == 0 ? "empty"
                          : "too large");
        chex_secret_free(buf, n > max ? max + 1 : n);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

void chex_secret_free(char *buf, size_t len)
{
    if (!buf)
        return;
    volatile char *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = 0;
    free(buf);
}
