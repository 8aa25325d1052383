/* server/log.c - structured one-line logs. */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static chex_log_level min_level = CHEX_LOG_INFO;
static int json_format = 0;

void chex_log_init(const char *level, const char *format)
{
    if (level && strcmp(level, "debug") == 0)
        min_level = CHEX_LOG_DEBUG;
    else if (level && strcmp(level, "warn") == 0)
        min_level = CHEX_LOG_WARN;
    else if (level && strcmp(level, "error") == 0)
        min_level = CHEX_LOG_ERROR;
    else
        min_level = CHEX_LOG_INFO;
    json_format = format && strcmp(format, "json") == 0;
}

int chex_log_enabled(chex_log_level l) { return l >= min_level; }

static const char *level_name(chex_log_level l)
{
    static const char *const n[] = {"debug", "info", "warn", "error"};
    return (l >= CHEX_LOG_DEBUG && l <= CHEX_LOG_ERROR) ? n[l] : "info";
}

typedef struct {
    char b[2048];
    size_t n;
} line;

static void put_raw(line *L, const char *s, size_t len)
{
    for (size_t i = 0; i < len && L->n + 8 < sizeof L->b; i++)
        L->b[L->n++] = s[i];
}

static void put_str(line *L, const char *s) { put_raw(L, s, strlen(s)); }

/* Value with control characters and quotes escaped (same rules for both formats). */
static void put_escaped(line *L, const char *s)
{
    for (; *s && L->n + 8 < sizeof L->b; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            L->b[L->n++] = '\\';
            L->b[L->n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            L->n += (size_t)snprintf(L->b + L->n, sizeof L->b - L->n, "\\u%04x", c);
        } else {
            L->b[L->n++] = (char)c;
        }
    }
}

static int needs_quotes(const char *v)
{
    if (!*v)
        return 1;
    for (; *v; v++)
        if (*v == ' ' || *v == '"' || *v == '=' || (unsigned char)*v < 0x21)
            return 1;
    return 0;
}

static void put_kv(line *L, const char *k, const char *v, int first)
{
    if (json_format) {
        put_str(L, first ? "\"" : ",\"");
        put_str(L, k);
        put_str(L, "\":\"");
        put_escaped(L, v);
        put_str(L, "\"");
    } else {
        if (!first)
            put_str(L, " ");
        put_str(L, k);
        put_str(L, "=");
        int q = needs_quotes(v);
        if (q)
            put_str(L, "\"");
        put_escaped(L, v);
        if (q)
            put_str(L, "\"");
    }
}

static void put_num(line *L, const char *k, const char *v)
{
    if (json_format) {
        put_str(L, ",\"");
        put_str(L, k);
        put_str(L, "\":");
        put_str(L, v);
    } else {
        put_kv(L, k, v, 0);
    }
}

static void begin(line *L, chex_log_level l, const char *msg)
{
    char ts[40];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + k, sizeof ts - k, ".%03ldZ", now.tv_nsec / 1000000L);
    L->n = 0;
    if (json_format)
        put_str(L, "{");
    put_kv(L, "ts", ts, 1);
    put_kv(L, "level", level_name(l), 0);
    put_kv(L, "msg", msg, 0);
}

static void finish(line *L)
{
    if (json_format)
        put_str(L, "}");
    L->b[L->n++] = '\n';
    ssize_t w = write(STDERR_FILENO, L->b, L->n);
    (void)w;
}

void chex_log(chex_log_level l, const char *msg, ...)
{
    if (!chex_log_enabled(l))
        return;
    line L;
    begin(&L, l, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        put_kv(&L, k, v ? v : "", 0);
    }
    va_end(ap);
    finish(&L);
}

void chex_log_request(const char *method, const char *route, int status, unsigned long long bytes,
                      double ms, const char *request_id)
{
    if (!chex_log_enabled(CHEX_LOG_INFO))
        return;
    line L;
    char num[32];
    begin(&L, CHEX_LOG_INFO, "request");
    put_kv(&L, "method", method, 0);
    put_kv(&L, "route", route, 0);
    snprintf(num, sizeof num, "%d", status);
    put_num(&L, "status", num);
    snprintf(num, sizeof num, "%llu", bytes);
    put_num(&L, "bytes", num);
    snprintf(num, sizeof num, "%.3f", ms);
    put_num(&L, "ms", num);
    put_kv(&L, "request_id", request_id, 0);
    finish(&L);
}
