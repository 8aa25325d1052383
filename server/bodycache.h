/* server/bodycache.h - request body buffers whose pages are kept for the next
 * request.
 *
 * A body buffer is its own anonymous mapping (chex_bodybuf_*). When a request
 * is done with it, the buffer goes to this cache instead of back to the
 * system, still resident and still reserved in the memory budget (so resident
 * memory stays within memory_limit_mb); the next body of a similar size takes
 * it whole. First-touch page faults are what a fresh 15 MB body costs most
 * (on the VMs measured, ~15 us each, 3,700 per DX upload: more CPU than the
 * forward pass), and a reused buffer has none.
 *
 * When a reservation does not fit, the budget asks the cache to give bytes
 * back first (chex_bodycache_reclaim as the budget's reclaim hook), so a
 * cached buffer never makes a request wait or fail.
 *
 * Thread-safe: take, give and reclaim may be called from any thread. The
 * cache is owned by its creator (init / destroy). Lock order: the cache never
 * holds its lock while it calls into the budget. */
#ifndef CHEX_BODYCACHE_H
#define CHEX_BODYCACHE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "server/budget.h"

#define CHEX_BODYCACHE_MAX 16

typedef struct {
    uint8_t *p;
    size_t cap;
} chex_bodycache_entry;

typedef struct {
    pthread_mutex_t lock;
    chex_budget *budget;
    uint64_t max_bytes; /* bytes the cache may keep */
    uint64_t bytes;     /* bytes kept now (reserved in the budget) */
    int n;
    chex_bodycache_entry e[CHEX_BODYCACHE_MAX]; /* oldest given first */
    unsigned long long hits, misses;
} chex_bodycache;

/* A mapping of cap bytes (pages untouched, so not yet resident); NULL when the
 * system refuses. cap > 0. */
uint8_t *chex_bodybuf_map(size_t cap);
/* Grows p from cap to ncap bytes (may move; contents kept); NULL when it
 * cannot (p stays valid). */
uint8_t *chex_bodybuf_grow(uint8_t *p, size_t cap, size_t ncap);
void chex_bodybuf_unmap(uint8_t *p, size_t cap);

/* max_bytes 0 keeps nothing (every give unmaps). Returns 0 or -1. */
int chex_bodycache_init(chex_bodycache *c, chex_budget *b, uint64_t max_bytes);
/* Unmaps every kept buffer and gives its bytes back to the budget. */
void chex_bodycache_destroy(chex_bodycache *c);

/* A kept buffer of want..2*want bytes (the smallest such), or NULL. On
 * success its *cap bytes, reserved already, become the caller's reservation. */
uint8_t *chex_bodycache_take(chex_bodycache *c, size_t want, size_t *cap);

/* Gives back buffer p of cap bytes whose reservation the caller holds: kept
 * (the reservation becomes the cache's), the oldest kept buffers unmapped and
 * released to make room (the newest is the size now being uploaded), or, when
 * cap alone is over max_bytes, unmapped and released. */
void chex_bodycache_give(chex_bodycache *c, uint8_t *p, size_t cap);

/* Unmaps kept buffers, largest first, until at least bytes were released or
 * none is left; returns the bytes released. The budget's reclaim hook (ctx is
 * the cache). */
uint64_t chex_bodycache_reclaim(void *ctx, uint64_t bytes);

/* Bytes kept now (a gauge for /metrics). */
uint64_t chex_bodycache_bytes(chex_bodycache *c);

#endif
