/* tests/unit/helpers/guard.h - place bytes right before a PROT_NONE page, so a
 * parser that reads past len faults at once (picohttpparser's trick). */
#ifndef CHEX_TEST_GUARD_H
#define CHEX_TEST_GUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *base;
    size_t maplen;
    uint8_t *data; /* len bytes ending exactly at the guard page */
    size_t len;
} chex_guard_buf;

/* Copies src[0..len) into a fresh mapping; returns 0 or -1. */
int chex_guard_alloc(chex_guard_buf *g, const void *src, size_t len);
void chex_guard_free(chex_guard_buf *g);

/* Writes "DIR/PREFIX" + mkstemp's six-character placeholder + SUFFIX into buf,
 * DIR being $TMPDIR if the name fits in n bytes, else /tmp: a template for
 * mkstemp/mkstemps/mkdtemp.
 * Returns 0, or -1 if it does not fit. */
int chex_test_tmpl(char *buf, size_t n, const char *prefix, const char *suffix);

/* Reads a whole file into malloc'd memory (caller frees); NULL on error. */
uint8_t *chex_test_read_file(const char *path, size_t *len);

#endif
