/* Kept body buffers (server/bodycache.h) and the budget's reclaim hook: a kept
 * buffer stays reserved, is taken whole by a similar size only, comes back to
 * the budget when a reservation needs its room, and the cache's bounds hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/bodycache.h"
#include "server/budget.h"

#define MIB (UINT64_C(1) << 20)

typedef struct {
    chex_budget b;
    chex_bodycache c;
} fixture;

static int setup(void **state)
{
    static fixture f;
    assert_int_equal(chex_budget_init(&f.b, 64 * MIB), 0);
    assert_int_equal(chex_bodycache_init(&f.c, &f.b, 32 * MIB), 0);
    chex_budget_set_reclaim(&f.b, chex_bodycache_reclaim, &f.c);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    chex_bodycache_destroy(&f->c);
    assert_int_equal(chex_budget_reserved(&f->b), 0);
    chex_budget_destroy(&f->b);
    return 0;
}

/* A reserved, mapped, written buffer of cap bytes. */
static uint8_t *held(fixture *f, size_t cap, uint8_t fill)
{
    assert_int_equal(chex_budget_try_reserve(&f->b, cap), 0);
    uint8_t *p = chex_bodybuf_map(cap);
    assert_non_null(p);
    memset(p, fill, cap);
    return p;
}

static void kept_buffer_is_reused_whole(void **state)
{
    fixture *f = *state;
    uint8_t *p = held(f, 10 * MIB, 0xAB);
    chex_bodycache_give(&f->c, p, 10 * MIB);
    assert_int_equal(chex_bodycache_bytes(&f->c), 10 * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), 10 * MIB); /* still counted */

    size_t cap = 0;
    assert_null(chex_bodycache_take(&f->c, 4 * MIB, &cap)); /* more than twice the want */
    assert_null(chex_bodycache_take(&f->c, 11 * MIB, &cap)); /* too small */
    uint8_t *q = chex_bodycache_take(&f->c, 6 * MIB, &cap);
    assert_ptr_equal(q, p);
    assert_int_equal(cap, 10 * MIB);
    assert_int_equal(q[10 * MIB - 1], 0xAB); /* resident pages, kept as they were */
    assert_int_equal(chex_bodycache_bytes(&f->c), 0);
    assert_int_equal(chex_budget_reserved(&f->b), 10 * MIB); /* now the caller's */
    chex_bodybuf_unmap(q, cap);
    chex_budget_release(&f->b, cap);
}

static void smallest_fitting_buffer_is_taken(void **state)
{
    fixture *f = *state;
    uint8_t *a = held(f, 8 * MIB, 1), *b = held(f, 5 * MIB, 2), *c = held(f, 6 * MIB, 3);
    chex_bodycache_give(&f->c, a, 8 * MIB);
    chex_bodycache_give(&f->c, b, 5 * MIB);
    chex_bodycache_give(&f->c, c, 6 * MIB);
    size_t cap;
    uint8_t *q = chex_bodycache_take(&f->c, 5 * MIB + 1, &cap);
    assert_ptr_equal(q, c);
    assert_int_equal(cap, 6 * MIB);
    chex_bodybuf_unmap(q, cap);
    chex_budget_release(&f->b, cap);
}

static void reservation_reclaims_kept_buffers(void **state)
{
    fixture *f = *state;
    uint8_t *a = held(f, 20 * MIB, 1), *b = held(f, 10 * MIB, 2);
    chex_bodycache_give(&f->c, a, 20 * MIB);
    chex_bodycache_give(&f->c, b, 10 * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), 30 * MIB);
    /* 40 MiB fit only once the largest kept buffer is given back. */
    assert_int_equal(chex_budget_try_reserve(&f->b, 40 * MIB), 0);
    assert_int_equal(chex_bodycache_bytes(&f->c), 10 * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), 50 * MIB);
    /* What can never fit is refused without emptying the cache. */
    assert_int_equal(chex_budget_try_reserve(&f->b, 65 * MIB), -1);
    assert_int_equal(chex_bodycache_bytes(&f->c), 10 * MIB);
    /* 20 more need the last kept buffer too: 40 + 20 = 60 <= 64. */
    assert_int_equal(chex_budget_try_reserve(&f->b, 20 * MIB), 0);
    assert_int_equal(chex_bodycache_bytes(&f->c), 0);
    /* Nothing left to reclaim: refused and counted. */
    unsigned long long refused = chex_budget_refused(&f->b);
    assert_int_equal(chex_budget_try_reserve(&f->b, 5 * MIB), -1);
    assert_int_equal(chex_budget_refused(&f->b), refused + 1);
    chex_budget_release(&f->b, 60 * MIB);
}

static void cache_bounds_hold(void **state)
{
    fixture *f = *state;
    /* Over max_bytes (32 MiB): the third 12 MiB buffer is kept and the
     * first, the oldest, unmapped and released. */
    for (int i = 0; i < 3; i++)
        chex_bodycache_give(&f->c, held(f, 12 * MIB, (uint8_t)i), 12 * MIB);
    assert_int_equal(chex_bodycache_bytes(&f->c), 24 * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), 24 * MIB);
    size_t cap;
    for (int i = 1; i <= 2; i++) {
        uint8_t *q = chex_bodycache_take(&f->c, 12 * MIB, &cap);
        assert_non_null(q);
        assert_int_equal(q[0], i);
        chex_bodybuf_unmap(q, cap);
        chex_budget_release(&f->b, cap);
    }
    assert_null(chex_bodycache_take(&f->c, 12 * MIB, &cap));
    /* A buffer over max_bytes by itself is never kept. */
    chex_bodycache_give(&f->c, held(f, 33 * MIB, 0), 33 * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), 0);
    /* Over the entry count: the oldest are released. Sizes that stopped
     * coming (2 MiB) make room for the new ones (1 MiB). */
    chex_bodycache_give(&f->c, held(f, 2 * MIB, 9), 2 * MIB);
    for (int i = 0; i < CHEX_BODYCACHE_MAX + 4; i++)
        chex_bodycache_give(&f->c, held(f, 1 * MIB, 0), 1 * MIB);
    assert_int_equal(chex_bodycache_bytes(&f->c), (uint64_t)CHEX_BODYCACHE_MAX * MIB);
    assert_int_equal(chex_budget_reserved(&f->b), (uint64_t)CHEX_BODYCACHE_MAX * MIB);
    assert_null(chex_bodycache_take(&f->c, 2 * MIB, &cap));
}

static void grown_buffer_keeps_its_bytes(void **state)
{
    (void)state;
    uint8_t *p = chex_bodybuf_map(65536);
    assert_non_null(p);
    for (int i = 0; i < 65536; i++)
        p[i] = (uint8_t)i;
    p = chex_bodybuf_grow(p, 65536, 3 * MIB + 17);
    assert_non_null(p);
    for (int i = 0; i < 65536; i++)
        assert_int_equal(p[i], (uint8_t)i);
    p[3 * MIB + 16] = 7;
    chex_bodybuf_unmap(p, 3 * MIB + 17);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(kept_buffer_is_reused_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(smallest_fitting_buffer_is_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(reservation_reclaims_kept_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(cache_bounds_hold, setup, teardown),
        cmocka_unit_test(grown_buffer_keeps_its_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
