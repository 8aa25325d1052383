/* server/token.c - the bearer token and its rotation (see token.h). */
#include "server/token.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "server/secret_file.h"

#define TOKEN_MAX 511

struct chex_token {
    pthread_rwlock_t lock;
    char path[CHEX_PATH_MAX];
    char value[TOKEN_MAX + 1];
    size_t len; /* 0: no token required */
};

static void wipe(void *p, size_t n)
{
    volatile char *v = p;
    for (size_t i = 0; i < n; i++)
        v[i] = 0;
}

/* Reads path into out/len (len 0 on error). */
static int read_token(const char *path, char *out, size_t *len, char *msg, size_t msglen)
{
    size_t n = 0;
    char *t = chex_secret_read(path, "api_token_file", TOKEN_MAX + 2, &n, msg, msglen);
    if (!t)
        return -1;
    size_t k = n;
    while (k && (t[k - 1] == '\n' || t[k - 1] == '\r' || t[k - 1] == ' ' || t[k - 1] == '\t'))
        k--;
    int rc = 0;
    if (k == 0) {
        snprintf(msg, msglen, "api_token_file: %s holds no token", path);
        rc = -1;
    } else if (k > TOKEN_MAX) {
        snprintf(msg, msglen, "api_token_file: %s: token longer than %d bytes", path, TOKEN_MAX);
        rc = -1;
    } else {
        memcpy(out, t, k);
        out[k] = '\0';
        *len = k;
    }
    chex_secret_free(t, n);
    return rc;
}

int chex_token_open(chex_token **out, const char *path, char *msg, size_t msglen)
{
    *out = NULL;
    chex_token *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    pthread_rwlock_init(&t->lock, NULL);
    if (path && path[0]) {
        snprintf(t->path, sizeof t->path, "%s", path);
        if (read_token(t->path, t->value, &t->len, msg, msglen) != 0) {
            chex_token_free(t);
            return -1;
        }
    }
    *out = t;
    return 0;
}

int chex_token_reload(chex_token *t, char *msg, size_t msglen)
{
    if (!t->path[0])
        return 0;
    char value[TOKEN_MAX + 1];
    size_t len = 0;
    if (read_token(t->path, value, &len, msg, msglen) != 0)
        return -1;
    pthread_rwlock_wrlock(&t->lock);
    wipe(t->value, sizeof t->value);
    memcpy(t->value, value, len + 1);
    t->len = len;
    pthread_rwlock_unlock(&t->lock);
    wipe(value, sizeof value);
    return 0;
}

int chex_token_required(const chex_token *t)
{
    return t->path[0] != '\0';
}

int chex_token_check(chex_token *t, const char *authorization)
{
    if (!t->path[0])
        return 1;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return 0;
    const char *given = authorization + 7;
    while (*given == ' ')
        given++;
    size_t glen = strlen(given);
    pthread_rwlock_rdlock(&t->lock);
    unsigned diff = (unsigned)(glen ^ t->len);
    for (size_t i = 0; i < t->len; i++) {
        unsigned char g = i < glen ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)t->value[i]);
    }
    pthread_rwlock_unlock(&t->lock);
    return diff == 0;
}

void chex_token_free(chex_token *t)
{
    if (!t)
        return;
    pthread_rwlock_destroy(&t->lock);
    wipe(t->value, sizeof t->value);
    free(t);
}
