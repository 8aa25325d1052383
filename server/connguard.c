/* server/connguard.c - header deadline and minimum body rate (see connguard.h). */
#include "server/connguard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "server/log.h"

#define SWEEP_MS 100
#define RATE_GRACE_MS 5000

enum { PH_HEADERS = 0, PH_BODY, PH_ANSWER, PH_CUT };

struct chex_guard_conn {
    int fd;
    atomic_int phase;
    atomic_llong t_phase; /* ms, monotonic: when the phase began */
    atomic_ullong received;
    chex_guard_conn *prev, *next;
};

struct chex_guard {
    int header_ms;
    uint64_t min_rate;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    chex_guard_conn *head;
    int stop;
    pthread_t thread;
    int started;
    unsigned long long cut_headers, cut_slow;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_phase(chex_guard_conn *gc, int phase)
{
    if (!gc)
        return;
    atomic_store(&gc->t_phase, mono_ms());
    atomic_store(&gc->phase, phase);
}

void chex_guard_headers_done(chex_guard_conn *gc, int body_follows)
{
    if (gc)
        atomic_store(&gc->received, 0);
    set_phase(gc, body_follows ? PH_BODY : PH_ANSWER);
}

void chex_guard_body(chex_guard_conn *gc, size_t n)
{
    if (gc)
        atomic_fetch_add(&gc->received, (unsigned long long)n);
}

void chex_guard_body_done(chex_guard_conn *gc)
{
    set_phase(gc, PH_ANSWER);
}

void chex_guard_request_done(chex_guard_conn *gc)
{
    set_phase(gc, PH_HEADERS);
}

chex_guard_conn *chex_guard_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (chex_guard_conn *)ci->socket_context : NULL;
}

void chex_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code)
{
    chex_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        chex_guard_conn *gc = ci ? calloc(1, sizeof *gc) : NULL;
        *socket_context = gc;
        if (!gc)
            return;
        gc->fd = ci->connect_fd;
        set_phase(gc, PH_HEADERS);
        pthread_mutex_lock(&g->lock);
        gc->next = g->head;
        if (g->head)
            g->head->prev = gc;
        g->head = gc;
        pthread_mutex_unlock(&g->lock);
        return;
    }
    /* Closed: libmicrohttpd tells this before it closes the socket, and the
     * sweep shuts sockets down under the same lock, so it never touches a
     * descriptor number that was reused. */
    chex_guard_conn *gc = *socket_context;
    *socket_context = NULL;
    if (!gc)
        return;
    pthread_mutex_lock(&g->lock);
    if (gc->prev)
        gc->prev->next = gc->next;
    else
        g->head = gc->next;
    if (gc->next)
        gc->next->prev = gc->prev;
    pthread_mutex_unlock(&g->lock);
    free(gc);
}

/* One pass over the connections (lock held). */
static void sweep_locked(chex_guard *g, unsigned long long *nh, unsigned long long *ns)
{
    long long now = mono_ms();
    for (chex_guard_conn *gc = g->head; gc; gc = gc->next) {
        int ph = atomic_load(&gc->phase);
        long long age = now - atomic_load(&gc->t_phase);
        int cut = 0;
        if (ph == PH_HEADERS && g->header_ms > 0 && age > g->header_ms) {
            cut = 1;
            (*nh)++;
        } else if (ph == PH_BODY && g->min_rate > 0 && age > RATE_GRACE_MS &&
                   (double)atomic_load(&gc->received) < (double)g->min_rate * (double)age / 1e3) {
            cut = 1;
            (*ns)++;
        }
        if (cut) {
            atomic_store(&gc->phase, PH_CUT);
            shutdown(gc->fd, SHUT_RDWR);
        }
    }
}

static void *guard_main(void *arg)
{
    chex_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        unsigned long long nh = 0, ns = 0;
        sweep_locked(g, &nh, &ns);
        g->cut_headers += nh;
        g->cut_slow += ns;
        if (nh || ns) {
            /* Logged without the lock: HTTP threads take it on every connection. */
            pthread_mutex_unlock(&g->lock);
            char a[24], b[24];
            snprintf(a, sizeof a, "%llu", nh);
            snprintf(b, sizeof b, "%llu", ns);
            chex_log(CHEX_LOG_INFO, "connections closed: headers or body too slow",
                     "past_header_timeout", a, "below_min_upload_rate", b, NULL);
            pthread_mutex_lock(&g->lock);
            if (g->stop)
                break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SWEEP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cond, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int chex_guard_start(chex_guard **out, int header_timeout_s, uint64_t min_rate, char *msg,
                     size_t msglen)
{
    *out = NULL;
    chex_guard *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    g->header_ms = header_timeout_s * 1000;
    g->min_rate = min_rate;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    if (g->header_ms > 0 || g->min_rate > 0) {
        if (pthread_create(&g->thread, NULL, guard_main, g) != 0) {
            snprintf(msg, msglen, "cannot start the connection deadline thread");
            chex_guard_stop(g);
            return -1;
        }
        g->started = 1;
    }
    *out = g;
    return 0;
}

void chex_guard_counts(chex_guard *g, unsigned long long *headers, unsigned long long *slow_body)
{
    pthread_mutex_lock(&g->lock);
    *headers = g->cut_headers;
    *slow_body = g->cut_slow;
    pthread_mutex_unlock(&g->lock);
}

void chex_guard_stop(chex_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    if (g->started)
        pthread_join(g->thread, NULL);
    for (chex_guard_conn *gc = g->head, *next; gc; gc = next) {
        next = gc->next;
        free(gc);
    }
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}
