/* server/token.h - the API bearer token, read from api_token_file at start
 * and again on SIGHUP (chex_token_reload), so it can be rotated without a
 * restart: requests checked after the reload need the new token.
 *
 * Thread-safe: chex_token_check may run on every HTTP thread while
 * chex_token_reload runs on another. */
#ifndef CHEX_TOKEN_H
#define CHEX_TOKEN_H

#include <stddef.h>

typedef struct chex_token chex_token;

/* Reads the token from path (trailing whitespace and newlines dropped; at
 * most 511 bytes). An empty path means no token: every check passes.
 * Returns 0, or -1 with one line in msg naming api_token_file. */
int chex_token_open(chex_token **out, const char *path, char *msg, size_t msglen);

/* Re-reads the file. On an error (unreadable, empty) the old token stays in
 * force and -1 is returned with msg. 0 when nothing is configured. */
int chex_token_reload(chex_token *t, char *msg, size_t msglen);

/* 1 when a token is required. */
int chex_token_required(const chex_token *t);

/* 1 when the Authorization header value is "Bearer <token>" (compared in
 * time that depends only on the lengths), or no token is required. */
int chex_token_check(chex_token *t, const char *authorization);

void chex_token_free(chex_token *t);

#endif
