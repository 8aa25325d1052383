/* tests/unit/helpers/tmpfiles.h - a cmocka fixture of up to two temp files
 * with given contents, removed in teardown. */
#ifndef CHEX_TEST_TMPFILES_H
#define CHEX_TEST_TMPFILES_H

typedef struct {
    char path[2][64]; /* temp files, removed in teardown */
} chex_test_tmpfiles;

/* cmocka setup/teardown: *state is a chex_test_tmpfiles. */
int chex_test_tmpfiles_setup(void **state);
int chex_test_tmpfiles_teardown(void **state);

/* Writes text to a new temp file; its name goes to fx->path[slot] (0 or 1)
 * and is returned. Fails the running test on any error. */
const char *chex_test_tmpfile(chex_test_tmpfiles *fx, int slot, const char *text);

#endif
