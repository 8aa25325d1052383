/* server/connguard.h - deadlines libmicrohttpd 0.9.75 does not have: a
 * connection must complete its request headers within header_timeout_s (from
 * its opening, or from the end of its previous request), and a request body
 * must arrive at min_upload_bytes_per_s on average once it has been arriving
 * for 5 s. A connection past either is shut down (shutdown(2) on its socket,
 * from the guard's own thread; libmicrohttpd then sees the end of the stream
 * and closes it), which frees it for the connection and per-IP limits.
 *
 * Wiring: chex_guard_notify is the MHD_OPTION_NOTIFY_CONNECTION callback
 * (cls = the guard); the access handler marks the phases through the
 * connection's chex_guard_conn (chex_guard_of). The phase marks may run on any
 * HTTP thread; the guard's thread only reads them. */
#ifndef CHEX_CONNGUARD_H
#define CHEX_CONNGUARD_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chex_guard chex_guard;
typedef struct chex_guard_conn chex_guard_conn;

/* header_timeout_s 0 and min_rate 0 turn the checks off (the thread still
 * runs when one is on). Returns 0, or -1 with msg. */
int chex_guard_start(chex_guard **out, int header_timeout_s, uint64_t min_rate, char *msg,
                     size_t msglen);

/* Stops the thread and frees everything; call after libmicrohttpd stopped. */
void chex_guard_stop(chex_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION: registers / forgets a connection. */
void chex_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);

/* The connection's entry (NULL when it could not be allocated: unguarded). */
chex_guard_conn *chex_guard_of(struct MHD_Connection *c);

/* Headers complete: the body clock starts when a body follows, else no
 * deadline runs until chex_guard_request_done. NULL gc is accepted by all. */
void chex_guard_headers_done(chex_guard_conn *gc, int body_follows);
/* n more body bytes arrived. */
void chex_guard_body(chex_guard_conn *gc, size_t n);
/* Body complete (or not to be read): no deadline while the answer is made. */
void chex_guard_body_done(chex_guard_conn *gc);
/* Request finished: the header clock of the next request starts. */
void chex_guard_request_done(chex_guard_conn *gc);

/* Connections shut down so far for each reason (for tests and logs). */
void chex_guard_counts(chex_guard *g, unsigned long long *headers, unsigned long long *slow_body);

#endif
