/* server/bodycache.c - kept body buffers (see bodycache.h). */
#include "server/bodycache.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

uint8_t *chex_bodybuf_map(size_t cap)
{
    void *p = mmap(NULL, page_round(cap), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

uint8_t *chex_bodybuf_grow(uint8_t *p, size_t cap, size_t ncap)
{
    void *q = mremap(p, page_round(cap), page_round(ncap), MREMAP_MAYMOVE);
    return q == MAP_FAILED ? NULL : q;
}

void chex_bodybuf_unmap(uint8_t *p, size_t cap)
{
    if (p)
        munmap(p, page_round(cap));
}

int chex_bodycache_init(chex_bodycache *c, chex_budget *b, uint64_t max_bytes)
{
    memset(c, 0, sizeof *c);
    c->budget = b;
    c->max_bytes = max_bytes;
    return pthread_mutex_init(&c->lock, NULL) == 0 ? 0 : -1;
}

void chex_bodycache_destroy(chex_bodycache *c)
{
    chex_bodycache_reclaim(c, UINT64_MAX);
    pthread_mutex_destroy(&c->lock);
}

/* Lock held: removes entry i, keeping the others in the order given. */
static void drop(chex_bodycache *c, int i)
{
    c->bytes -= c->e[i].cap;
    memmove(&c->e[i], &c->e[i + 1], (size_t)(c->n - 1 - i) * sizeof c->e[0]);
    c->n--;
}

uint8_t *chex_bodycache_take(chex_bodycache *c, size_t want, size_t *cap)
{
    uint8_t *p = NULL;
    pthread_mutex_lock(&c->lock);
    int best = -1;
    for (int i = 0; i < c->n; i++)
        if (c->e[i].cap >= want && c->e[i].cap / 2 <= want &&
            (best < 0 || c->e[i].cap < c->e[best].cap))
            best = i;
    if (best >= 0) {
        p = c->e[best].p;
        *cap = c->e[best].cap;
        drop(c, best);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->lock);
    return p;
}

void chex_bodycache_give(chex_bodycache *c, uint8_t *p, size_t cap)
{
    if (!p)
        return;
    chex_bodycache_entry out[CHEX_BODYCACHE_MAX + 1];
    int nout = 0;
    pthread_mutex_lock(&c->lock);
    if (cap <= c->max_bytes) {
        while (c->n > 0 && (c->n == CHEX_BODYCACHE_MAX || c->bytes > c->max_bytes - cap)) {
            out[nout++] = c->e[0];
            drop(c, 0);
        }
        c->e[c->n++] = (chex_bodycache_entry){p, cap};
        c->bytes += cap;
    } else {
        out[nout++] = (chex_bodycache_entry){p, cap};
    }
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < nout; i++) {
        chex_bodybuf_unmap(out[i].p, out[i].cap);
        chex_budget_release(c->budget, out[i].cap);
    }
}

uint64_t chex_bodycache_reclaim(void *ctx, uint64_t bytes)
{
    chex_bodycache *c = ctx;
    uint64_t freed = 0;
    while (freed < bytes) {
        pthread_mutex_lock(&c->lock);
        int big = -1;
        for (int i = 0; i < c->n; i++)
            if (big < 0 || c->e[i].cap > c->e[big].cap)
                big = i;
        uint8_t *p = NULL;
        size_t cap = 0;
        if (big >= 0) {
            p = c->e[big].p;
            cap = c->e[big].cap;
            drop(c, big);
        }
        pthread_mutex_unlock(&c->lock);
        if (!p)
            break;
        chex_bodybuf_unmap(p, cap);
        chex_budget_release(c->budget, cap);
        freed += cap;
    }
    return freed;
}

uint64_t chex_bodycache_bytes(chex_bodycache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t v = c->bytes;
    pthread_mutex_unlock(&c->lock);
    return v;
}
