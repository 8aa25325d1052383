/* server/budget.c - the memory budget's accounting (see budget.h). A mutex
 * rather than atomics: reserve must compare and add as one step, and the
 * counters are read together by /metrics. */
#include "server/budget.h"

#include <string.h>

int chex_budget_init(chex_budget *b, uint64_t limit)
{
    memset(b, 0, sizeof *b);
    b->limit = limit;
    return pthread_mutex_init(&b->lock, NULL) == 0 ? 0 : -1;
}

void chex_budget_destroy(chex_budget *b)
{
    pthread_mutex_destroy(&b->lock);
}

void chex_budget_set_reclaim(chex_budget *b, uint64_t (*fn)(void *, uint64_t), void *ctx)
{
    b->reclaim = fn;
    b->reclaim_ctx = ctx;
}

/* Lock held. 0 and taken, or the shortfall (> 0) and nothing taken. */
static uint64_t take_locked(chex_budget *b, uint64_t bytes)
{
    if (b->limit && (bytes > b->limit || b->reserved > b->limit - bytes))
        return bytes > b->limit ? bytes : bytes - (b->limit - b->reserved);
    b->reserved += bytes;
    if (b->reserved > b->peak)
        b->peak = b->reserved;
    return 0;
}

int chex_budget_try_reserve(chex_budget *b, uint64_t bytes)
{
    if (bytes == 0)
        return 0;
    pthread_mutex_lock(&b->lock);
    uint64_t short_by = take_locked(b, bytes);
    pthread_mutex_unlock(&b->lock);
    if (short_by && b->reclaim && bytes <= b->limit && b->reclaim(b->reclaim_ctx, short_by) > 0) {
        pthread_mutex_lock(&b->lock);
        short_by = take_locked(b, bytes);
        pthread_mutex_unlock(&b->lock);
    }
    if (short_by) {
        pthread_mutex_lock(&b->lock);
        b->refused++;
        pthread_mutex_unlock(&b->lock);
        return -1;
    }
    return 0;
}

void chex_budget_release(chex_budget *b, uint64_t bytes)
{
    pthread_mutex_lock(&b->lock);
    b->reserved = bytes > b->reserved ? 0 : b->reserved - bytes;
    pthread_mutex_unlock(&b->lock);
}

int chex_budget_fits(const chex_budget *b, uint64_t bytes)
{
    return b->limit == 0 || bytes <= b->limit;
}

uint64_t chex_budget_reserved(chex_budget *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t v = b->reserved;
    pthread_mutex_unlock(&b->lock);
    return v;
}

uint64_t chex_budget_peak(chex_budget *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t v = b->peak;
    pthread_mutex_unlock(&b->lock);
    return v;
}

uint64_t chex_budget_limit(const chex_budget *b)
{
    return b->limit;
}

unsigned long long chex_budget_refused(chex_budget *b)
{
    pthread_mutex_lock(&b->lock);
    unsigned long long v = b->refused;
    pthread_mutex_unlock(&b->lock);
    return v;
}
