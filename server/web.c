/* server/web.c - the page files behind GET /, /index.html, /app.js, /style.css. */
#include "server/web.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Larger page files are refused (they are a few kilobytes). */
#define WEB_MAX_FILE (4u << 20)

const chex_web_asset *chex_web_find(const char *url_path)
{
    if (!url_path || url_path[0] != '/')
        return NULL;
    const char *name = url_path[1] ? url_path + 1 : "index.html";
    for (size_t i = 0; i < chex_web_nassets; i++)
        if (strcmp(name, chex_web_assets[i].name) == 0)
            return &chex_web_assets[i];
    return NULL;
}

int chex_web_get(const char *web_root, const char *url_path, chex_web_body *out, char *msg,
                 size_t msglen)
{
    memset(out, 0, sizeof *out);
    const chex_web_asset *a = chex_web_find(url_path);
    if (!a) {
        snprintf(msg, msglen, "no such page file");
        return 404;
    }
    out->content_type = a->content_type;
    if (!web_root || !web_root[0]) {
        out->data = a->data;
        out->len = a->len;
        return 200;
    }
    /* The name comes from the embedded table, never from the URL. */
    char path[4352];
    snprintf(path, sizeof path, "%s/%s", web_root, a->name);
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        (unsigned long long)st.st_size > WEB_MAX_FILE) {
        int e = errno;
        snprintf(msg, msglen, "web_root: cannot serve %s: %s", a->name,
                 !f ? strerror(e) : "not a regular file of at most 4 MiB");
        if (f)
            fclose(f);
        return 500;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, f) != n) {
        snprintf(msg, msglen, "web_root: cannot read %s", a->name);
        free(buf);
        fclose(f);
        return 500;
    }
    fclose(f);
    out->owned = buf;
    out->data = buf;
    out->len = n;
    return 200;
}

void chex_web_body_free(chex_web_body *b)
{
    if (!b)
        return;
    free(b->owned);
    memset(b, 0, sizeof *b);
}
