#include "tests/unit/helpers/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int chex_guard_alloc(chex_guard_buf *g, const void *src, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (len + page - 1) / page * page;
    if (body == 0)
        body = page;
    g->maplen = body + page;
    g->base = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->base == MAP_FAILED)
        return -1;
    uint8_t *guard = (uint8_t *)g->base + body;
    if (mprotect(guard, page, PROT_NONE) != 0) {
        munmap(g->base, g->maplen);
        return -1;
    }
    g->data = guard - len;
    g->len = len;
    if (len)
        memcpy(g->data, src, len);
    return 0;
}

void chex_guard_free(chex_guard_buf *g)
{
    if (g->base)
        munmap(g->base, g->maplen);
    g->base = NULL;
}

int chex_test_tmpl(char *buf, size_t n, const char *prefix, const char *suffix)
{
    char placeholder[7];
    memset(placeholder, 'X', 6);
    placeholder[6] = '\0';
    /* $TMPDIR when the name fits the caller's buffer, else /tmp. */
    const char *dirs[] = {getenv("TMPDIR"), "/tmp"};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i] || !*dirs[i])
            continue;
        int w = snprintf(buf, n, "%s/%s%s%s", dirs[i], prefix, placeholder, suffix ? suffix : "");
        if (w >= 0 && (size_t)w < n)
            return 0;
    }
    return -1;
}

uint8_t *chex_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        *len = (size_t)n;
    return buf;
}
