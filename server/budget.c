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

int chex_budget_try_reserve(chex_budget *b, uint64_t bytes)
{
    if (bytes == 0)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    if (b->limit && (bytes > b->limit || b->reserved > b->limit - bytes)) {
        b->refused++;
        rc = -1;
    } else {
        b->reserved += bytes;
        if (b->reserved > b->peak)
            b->peak = b->reserved;
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
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
