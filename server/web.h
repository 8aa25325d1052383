/* server/web.h - the static web page chexd serves at / (index.html, app.js,
 * style.css): embedded in the binary (server/web_assets.c, generated from
 * server/web/ by server/web/embed.py) or, when the config key web_root names
 * a folder, read from that folder on each request (its files replace the
 * embedded ones, so the page can be edited without a restart).
 * Only these file names are ever served: no path from a URL reaches the file
 * system. Reentrant. */
#ifndef CHEX_WEB_H
#define CHEX_WEB_H

#include <stddef.h>

typedef struct {
    const char *name;          /* "index.html" */
    const char *content_type;  /* "text/html; charset=utf-8" */
    const char *data;
    size_t len;
} chex_web_asset;

/* The embedded files (server/web_assets.c). */
extern const chex_web_asset chex_web_assets[];
extern const size_t chex_web_nassets;

/* The embedded asset a URL path names: "/" and "/index.html" -> index.html,
 * "/app.js", "/style.css"; NULL for anything else. */
const chex_web_asset *chex_web_find(const char *url_path);

/* One file to send. data points at the embedded bytes or at owned (malloc'd,
 * freed with chex_web_body_free). */
typedef struct {
    const char *content_type;
    const char *data;
    size_t len;
    char *owned;
} chex_web_body;

/* Fills out for url_path. Returns 200, 404 (not a page file) or 500 (web_root
 * set but its copy of the file cannot be read; msg names the file). */
int chex_web_get(const char *web_root, const char *url_path, chex_web_body *out, char *msg,
                 size_t msglen);
void chex_web_body_free(chex_web_body *b);

#endif
