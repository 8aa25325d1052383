/* server/daemon.h - the HTTP service of bin/chexd: routes, request bodies,
 * bounded queue, the inference workers (dynamic batches) and graceful stop.
 *
 * Threads: libmicrohttpd's polling thread and connection pool read bodies
 * and image headers and send answers; the inference workers (config key
 * workers, each with its own workspace per served model) share the
 * `threads` cores for all decoding, preprocessing, inference and answers;
 * a reaper thread answers 504 for requests that waited too long; a loader
 * thread runs the reloads asked by POST /v1/models/NAME/reload. The
 * chex_config and chex_registry passed in are borrowed and must outlive the
 * daemon. */
#ifndef CHEX_DAEMON_H
#define CHEX_DAEMON_H

#include <stddef.h>

#include "config/config.h"
#include "server/registry.h"

typedef struct chexd chexd;

/* Binds and listens on addr:port (IPv4 or IPv6 literal). Returns the socket,
 * or -1 with one line in msg ("cannot listen on ...: Address already in use"). */
int chexd_listen(const char *addr, int port, char *msg, size_t msglen);

/* Starts serving reg's models on listen_fd (taken over). Returns 0, or -1
 * with one line in msg (TLS files unreadable, memory limit, libmicrohttpd
 * start). reg is borrowed and must outlive the daemon; the daemon gives it
 * the memory budget for reloads. */
int chexd_start(chexd **out, const chex_config *cfg, chex_registry *reg, int listen_fd,
                char *msg, size_t msglen);

/* SIGHUP: re-reads api_token_file, the TLS certificate and key, and every
 * model's file. Requests checked afterwards need the new token; new TLS
 * handshakes get the new certificate, established connections keep going;
 * new requests run on the new weights while those in flight finish on the
 * old (chex_registry_reload). A file that cannot be used leaves the old
 * secret or weights in force and is logged. Returns 0, or -1 when
 * something was kept. Thread-safe with the HTTP threads. */
int chexd_reload(chexd *d);

/* Graceful stop: stops accepting, answers what is queued and in flight
 * (queued requests still waiting after shutdown_timeout_ms get 503), resumes
 * every suspended connection, stops libmicrohttpd, frees everything.
 * Returns 0 when everything queued was answered normally, 1 otherwise. */
int chexd_stop(chexd *d);

#endif
