/* server/log.h - one-line structured logs to stderr (logfmt or JSON lines).
 * Thread-safe: each line is built in a local buffer and written with one
 * write(2). Never pass image bytes or patient identifiers. */
#ifndef CHEX_LOG_H
#define CHEX_LOG_H

typedef enum { CHEX_LOG_DEBUG = 0, CHEX_LOG_INFO, CHEX_LOG_WARN, CHEX_LOG_ERROR } chex_log_level;

/* level: debug|info|warn|error; format: json|logfmt. Call before threads. */
void chex_log_init(const char *level, const char *format);
int chex_log_enabled(chex_log_level l);

/* msg then key/value string pairs, terminated by NULL. */
void chex_log(chex_log_level l, const char *msg, ...);

/* The per-request line (level info). */
void chex_log_request(const char *method, const char *route, int status, unsigned long long bytes,
                      double ms, const char *request_id);

#endif
