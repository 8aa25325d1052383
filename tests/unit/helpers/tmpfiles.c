#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/helpers/guard.h"
#include "tests/unit/helpers/tmpfiles.h"

int chex_test_tmpfiles_setup(void **state)
{
    chex_test_tmpfiles *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    return 0;
}

int chex_test_tmpfiles_teardown(void **state)
{
    chex_test_tmpfiles *fx = *state;
    for (int i = 0; i < 2; i++)
        if (fx->path[i][0])
            unlink(fx->path[i]);
    free(fx);
    return 0;
}

const char *chex_test_tmpfile(chex_test_tmpfiles *fx, int slot, const char *text)
{
    assert_true(slot == 0 || slot == 1);
    assert_int_equal(chex_test_tmpl(fx->path[slot], sizeof fx->path[slot], "chex_cfg_", NULL), 0);
    int fd = mkstemp(fx->path[slot]);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return fx->path[slot];
}
