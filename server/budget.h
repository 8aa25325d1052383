/* server/budget.h - chexd's memory budget: the bytes requests may hold at once.
 *
 * The process's limit (config key memory_limit_mb) minus what is resident at
 * start (model, workspaces, libraries) is what requests share. Every request
 * reserves its worst-case bytes before it allocates them (body buffer as it
 * grows, decode scratch and tensors from the image header, the answer) and
 * releases exactly what it reserved when it is done, whatever the outcome.
 *
 * Thread-safe: every function may be called from any thread. The struct is
 * owned by its creator (chex_budget_init / chex_budget_destroy). */
#ifndef CHEX_BUDGET_H
#define CHEX_BUDGET_H

#include <pthread.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t lock;
    uint64_t limit;        /* bytes requests may hold together; 0 = no limit */
    uint64_t reserved;     /* held now */
    uint64_t peak;         /* most ever held */
    unsigned long long refused; /* try_reserve calls that did not fit */
    /* Asked to give back at least its argument's bytes (e.g. kept buffers)
     * before a reservation is refused; returns what it released. */
    uint64_t (*reclaim)(void *ctx, uint64_t bytes);
    void *reclaim_ctx;
} chex_budget;

/* limit 0 = no limit (reservations are still counted). Returns 0 or -1. */
int chex_budget_init(chex_budget *b, uint64_t limit);
void chex_budget_destroy(chex_budget *b);

/* Sets the reclaim hook (before other threads use the budget). The hook is
 * called without the budget's lock held and may call chex_budget_release. */
void chex_budget_set_reclaim(chex_budget *b, uint64_t (*fn)(void *, uint64_t), void *ctx);

/* Takes bytes when reserved + bytes <= limit (or no limit): returns 0.
 * Otherwise asks the reclaim hook for the shortfall and tries once more; if it
 * still does not fit, takes nothing and returns -1. bytes 0 always succeeds. */
int chex_budget_try_reserve(chex_budget *b, uint64_t bytes);

/* Gives back bytes taken by try_reserve (releasing more than is held is a
 * programmer error; the count is clamped at 0). */
void chex_budget_release(chex_budget *b, uint64_t bytes);

/* 1 when bytes could ever be reserved (bytes <= limit, or no limit). */
int chex_budget_fits(const chex_budget *b, uint64_t bytes);

uint64_t chex_budget_reserved(chex_budget *b);
uint64_t chex_budget_peak(chex_budget *b);
uint64_t chex_budget_limit(const chex_budget *b);
unsigned long long chex_budget_refused(chex_budget *b);

#endif
