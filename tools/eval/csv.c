/* tools/eval/csv.c - RFC 4180 CSV reader (see csv.h). */
#include "tools/eval/csv.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void chex_csv_free(chex_csv *t)
{
    if (!t)
        return;
    free(t->header);
    free(t->rows);
    free(t->line);
    free(t->arena);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

typedef struct {
    size_t *v;
    size_t n, cap;
} sizevec;

static int sv_push(sizevec *s, size_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        size_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

chex_eval_err chex_csv_parse(const uint8_t *b, size_t len, chex_csv *t, char *msg, size_t msglen)
{
    memset(t, 0, sizeof *t);
    if (!b && len)
        return CHEX_EVAL_ERR_ARG;
    /* Every output byte comes from an input byte; each field adds one NUL and
     * the arena starts with the "" used to pad short rows. */
    char *arena = malloc(2 * len + 2);
    sizevec cells = {0}, rec_first = {0}, rec_count = {0}, rec_line = {0};
    chex_eval_err err = CHEX_EVAL_ERR_NOMEM;
    if (!arena)
        goto fail;
    arena[0] = '\0';
    size_t a = 1, p = 0, line = 1;
    if (len >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF)
        p = 3;
    while (p < len) {
        if (b[p] == '\n') {
            line++;
            p++;
            continue;
        }
        if (b[p] == '\r' && (p + 1 == len || b[p + 1] == '\n')) {
            p++;
            continue;
        }
        size_t first = cells.n, start_line = line;
        for (;;) {
            size_t fstart = a;
            if (p < len && b[p] == '"') {
                p++;
                for (;;) {
                    if (p >= len) {
                        snprintf(msg, msglen, "line %zu: unterminated quoted field", start_line);
                        err = CHEX_EVAL_ERR_FORMAT;
                        goto fail;
                    }
                    if (b[p] == '"') {
                        if (p + 1 < len && b[p + 1] == '"') {
                            arena[a++] = '"';
                            p += 2;
                            continue;
                        }
                        p++;
                        break;
                    }
                    if (b[p] == '\0') {
                        snprintf(msg, msglen, "line %zu: NUL byte in a field", line);
                        err = CHEX_EVAL_ERR_FORMAT;
                        goto fail;
                    }
                    if (b[p] == '\n')
                        line++;
                    arena[a++] = (char)b[p++];
                }
            }
            /* unquoted field, or what follows a closing quote (kept, leniently) */
            while (p < len && b[p] != ',' && b[p] != '\n') {
                if (b[p] == '\r' && (p + 1 == len || b[p + 1] == '\n')) {
                    p++;
                    continue;
                }
                if (b[p] == '\0') {
                    snprintf(msg, msglen, "line %zu: NUL byte in a field", line);
                    err = CHEX_EVAL_ERR_FORMAT;
                    goto fail;
                }
                arena[a++] = (char)b[p++];
            }
            arena[a++] = '\0';
            if (sv_push(&cells, fstart))
                goto fail;
            if (p < len && b[p] == ',') {
                p++;
                continue;
            }
            if (p < len) { /* '\n' */
                p++;
                line++;
            }
            break;
        }
        if (sv_push(&rec_first, first) || sv_push(&rec_count, cells.n - first) ||
            sv_push(&rec_line, start_line))
            goto fail;
    }
    if (rec_first.n == 0) {
        snprintf(msg, msglen, "empty file (no header row)");
        err = CHEX_EVAL_ERR_FORMAT;
        goto fail;
    }

    size_t ncols = rec_count.v[0], nrows = rec_first.n - 1;
    for (size_t r = 1; r < rec_first.n; r++) {
        if (rec_count.v[r] > ncols) {
            snprintf(msg, msglen, "line %zu: %zu fields, the header has %zu", rec_line.v[r],
                     rec_count.v[r], ncols);
            err = CHEX_EVAL_ERR_FORMAT;
            goto fail;
        }
    }
    t->header = malloc(ncols * sizeof *t->header);
    t->cells = malloc((nrows ? nrows : 1) * ncols * sizeof *t->cells);
    t->rows = malloc((nrows ? nrows : 1) * sizeof *t->rows);
    t->line = malloc((nrows ? nrows : 1) * sizeof *t->line);
    if (!t->header || !t->cells || !t->rows || !t->line)
        goto fail;
    for (size_t c = 0; c < ncols; c++)
        t->header[c] = arena + cells.v[c];
    for (size_t r = 0; r < nrows; r++) {
        char **row = t->cells + r * ncols;
        size_t f = rec_first.v[r + 1], k = rec_count.v[r + 1];
        for (size_t c = 0; c < ncols; c++)
            row[c] = c < k ? arena + cells.v[f + c] : arena;
        t->rows[r] = row;
        t->line[r] = rec_line.v[r + 1];
    }
    t->arena = arena;
    t->ncols = ncols;
    t->nrows = nrows;
    free(cells.v);
    free(rec_first.v);
    free(rec_count.v);
    free(rec_line.v);
    return CHEX_EVAL_OK;

fail:
    if (err == CHEX_EVAL_ERR_NOMEM)
        snprintf(msg, msglen, "out of memory");
    free(arena);
    free(cells.v);
    free(rec_first.v);
    free(rec_count.v);
    free(rec_line.v);
    free(t->header);
    free(t->cells);
    free(t->rows);
    free(t->line);
    memset(t, 0, sizeof *t);
    return err;
}

chex_eval_err chex_csv_read_file(const char *path, uint8_t **buf, size_t *len, char *msg,
                                 size_t msglen)
{
    *buf = NULL;
    *len = 0;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        snprintf(msg, msglen, "%s: %s", path, strerror(errno));
        return CHEX_EVAL_ERR_IO;
    }
    fclose(probe);
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        snprintf(msg, msglen, "%s: cannot open", path);
        return CHEX_EVAL_ERR_IO;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = malloc(cap);
    if (!b) {
        gzclose(gz);
        snprintf(msg, msglen, "out of memory");
        return CHEX_EVAL_ERR_NOMEM;
    }
    for (;;) {
        if (cap - n < (1 << 16)) {
            uint8_t *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                gzclose(gz);
                snprintf(msg, msglen, "out of memory");
                return CHEX_EVAL_ERR_NOMEM;
            }
            b = nb;
            cap *= 2;
        }
        int got = gzread(gz, b + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (got < 0) {
            int zerr;
            const char *zm = gzerror(gz, &zerr);
            snprintf(msg, msglen, "%s: read error: %s", path, zm ? zm : "unknown");
            free(b);
            gzclose(gz);
            return zerr == Z_DATA_ERROR ? CHEX_EVAL_ERR_FORMAT : CHEX_EVAL_ERR_IO;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    /* a truncated gzip stream reads as a short file: gzclose reports it */
    int zc = gzclose(gz);
    if (zc != Z_OK) {
        snprintf(msg, msglen, "%s: %s", path,
                 zc == Z_BUF_ERROR ? "truncated gzip stream" : "read error");
        free(b);
        return CHEX_EVAL_ERR_FORMAT;
    }
    *buf = b;
    *len = n;
    return CHEX_EVAL_OK;
}

chex_eval_err chex_csv_load(const char *path, chex_csv *t, char *msg, size_t msglen)
{
    uint8_t *buf;
    size_t len;
    memset(t, 0, sizeof *t);
    chex_eval_err e = chex_csv_read_file(path, &buf, &len, msg, msglen);
    if (e)
        return e;
    char m[256];
    e = chex_csv_parse(buf, len, t, m, sizeof m);
    free(buf);
    if (e)
        snprintf(msg, msglen, "%s: %s", path, m);
    return e;
}

static int name_char(unsigned char c)
{
    return c == ' ' ? '_' : tolower(c);
}

int chex_eval_name_eq(const char *a, const char *b)
{
    while (*a == ' ' || *a == '\t')
        a++;
    while (*b == ' ' || *b == '\t')
        b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la && (a[la - 1] == ' ' || a[la - 1] == '\t'))
        la--;
    while (lb && (b[lb - 1] == ' ' || b[lb - 1] == '\t'))
        lb--;
    if (la != lb)
        return 0;
    for (size_t i = 0; i < la; i++)
        if (name_char((unsigned char)a[i]) != name_char((unsigned char)b[i]))
            return 0;
    return 1;
}

int chex_csv_find_col(const chex_csv *t, const char *const *names)
{
    for (const char *const *n = names; *n; n++)
        for (size_t c = 0; c < t->ncols; c++)
            if (chex_eval_name_eq(t->header[c], *n))
                return (int)c;
    return -1;
}
