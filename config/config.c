/* config/config.c - one table of keys drives defaults, the JSON file, the
 * CHEXD_* environment, command-line flags, validation, --help and the JSON dump.
 *
 * Nothing here is global except read-only tables; every function is reentrant.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "report/dcmw.h"

typedef enum { KT_INT, KT_U64, KT_STR, KT_ENUM } key_type;

enum {
    KF_NONEMPTY = 1u << 0, /* string may not be empty */
    KF_ADDR = 1u << 1,     /* string must be an IPv4 or IPv6 literal */
    KF_UIDROOT = 1u << 2   /* empty, or a DICOM UID root (report/dcmw.h) */
};

typedef struct {
    const char *key;           /* JSON key; flag and env name derive from it */
    key_type type;
    size_t off, size;          /* field in chex_config */
    uint64_t min, max;         /* KT_INT / KT_U64 range, inclusive */
    unsigned flags;
    const char *const *allowed; /* KT_ENUM values, NULL-terminated */
    const char *def;           /* default as text; NULL = from default_model */
    const char *meta;          /* value placeholder in --help */
    const char *desc;          /* one line */
} key_def;

#define F(name) offsetof(chex_config, name), sizeof(((chex_config *)0)->name)

static const char *const png16_values[] = {"minmax", "sbit", "full", NULL};
static const char *const level_values[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_values[] = {"json", "logfmt", NULL};
static const char *const precision_values[] = {"fp32", "int8", NULL};

static const key_def keys[] = {
    {"listen", KT_STR, F(listen), 0, 0, KF_NONEMPTY | KF_ADDR, NULL, "127.0.0.1", "ADDR",
     "IPv4 or IPv6 address to bind (a literal, not a host name)"},
    {"port", KT_INT, F(port), 1, 65535, 0, NULL, "8080", "PORT", "TCP port to listen on"},
    {"threads", KT_INT, F(threads), 0, 256, 0, NULL, "0", "N",
     "OpenMP threads for inference and for one large DICOM decoded alone (0 = all cores)"},
    {"http_threads", KT_INT, F(http_threads), 1, 256, 0, NULL, "4", "N",
     "libmicrohttpd connection thread pool size"},
    {"model", KT_STR, F(model), 0, 0, KF_NONEMPTY, NULL, NULL, "FILE",
     "safetensors weights file to load"},
    {"model_repository", KT_STR, F(model_repository), 0, 0, 0, NULL, "", "DIR",
     "folder of models served instead of model: NAME/VERSION/model.safetensors or "
     "NAME.safetensors (empty = serve model)"},
    {"max_upload_bytes", KT_U64, F(max_upload_bytes), 1024, UINT64_C(1) << 30, 0, NULL,
     "33554432", "BYTES", "largest request body accepted; larger gets 413"},
    {"max_image_pixels", KT_U64, F(max_image_pixels), 1, 1000000000, 0, NULL, "50000000", "N",
     "largest width*height decoded, checked from the header; larger gets 413"},
    {"min_image_side", KT_INT, F(min_image_side), 1, 65535, 0, NULL, "64", "PX",
     "images whose shorter side is below this get 422"},
    {"png16_scaling", KT_ENUM, F(png16_scaling), 0, 0, 0, png16_values, "minmax", NULL,
     "16-bit grayscale PNG to [0,1]: own min..max, 2^sBIT-1, or 65535"},
    {"max_overlay_side", KT_INT, F(max_overlay_side), 64, 16384, 0, NULL, "2048", "PX",
     "heat maps and overlays of larger images are drawn with this longer side"},
    {"queue_depth", KT_INT, F(queue_depth), 1, 100000, 0, NULL, "64", "N",
     "requests waiting for inference; beyond it new ones get 503"},
    {"max_batch", KT_INT, F(max_batch), 1, 64, 0, NULL, "8", "N",
     "most images run through the network together"},
    {"batch_window_ms", KT_INT, F(batch_window_ms), 0, 1000, 0, NULL, "0", "MS",
     "how long a free worker waits to fill a batch (0: starts at once with what is queued)"},
    {"workers", KT_INT, F(workers), 0, 64, 0, NULL, "0", "N",
     "inference workers running batches side by side, each with its own workspace "
     "(0 = min(threads, max_batch))"},
    {"memory_limit_mb", KT_INT, F(memory_limit_mb), 0, 4194304, 0, NULL, "1024", "MB",
     "the whole process's memory budget in MiB (model included; default 80% of the cgroup's "
     "limit, else 1024; 0 = none)"},
    {"request_timeout_ms", KT_INT, F(request_timeout_ms), 1, 3600000, 0, NULL, "30000", "MS",
     "a request waiting longer than this gets 504"},
    {"shutdown_timeout_ms", KT_INT, F(shutdown_timeout_ms), 0, 600000, 0, NULL, "10000", "MS",
     "on SIGTERM/SIGINT, longest wait for queued and in-flight requests"},
    {"connection_limit", KT_INT, F(connection_limit), 1, 100000, 0, NULL, "512", "N",
     "most simultaneous connections (MHD_OPTION_CONNECTION_LIMIT)"},
    {"per_ip_connection_limit", KT_INT, F(per_ip_connection_limit), 0, 100000, 0, NULL, "64",
     "N", "most simultaneous connections from one IP address (0 = unlimited)"},
    {"connection_timeout_s", KT_INT, F(connection_timeout_s), 1, 3600, 0, NULL, "10", "S",
     "idle connections are closed after this many seconds"},
    {"header_timeout_s", KT_INT, F(header_timeout_s), 0, 3600, 0, NULL, "10", "S",
     "a connection whose request headers are not complete within this is closed (0 = off)"},
    {"min_upload_bytes_per_s", KT_U64, F(min_upload_bytes_per_s), 0, UINT64_C(1) << 30, 0, NULL,
     "16384", "BYTES", "a body arriving slower than this after its first 5 s is cut off (0 = off)"},
    {"connection_memory_limit", KT_U64, F(connection_memory_limit), 4096, UINT64_C(64) << 20, 0,
     NULL, "65536", "BYTES", "libmicrohttpd memory pool per connection (headers, multipart)"},
    {"log_level", KT_ENUM, F(log_level), 0, 0, 0, level_values, "info", NULL,
     "least severe message logged"},
    {"log_format", KT_ENUM, F(log_format), 0, 0, 0, format_values, "logfmt", NULL,
     "log lines on stderr as JSON objects or logfmt"},
    {"api_token_file", KT_STR, F(api_token_file), 0, 0, 0, NULL, "", "FILE",
     "file holding the bearer token required on API routes (empty = no token)"},
    {"tls_cert_file", KT_STR, F(tls_cert_file), 0, 0, 0, NULL, "", "FILE",
     "PEM certificate for HTTPS (set together with tls_key_file)"},
    {"tls_key_file", KT_STR, F(tls_key_file), 0, 0, 0, NULL, "", "FILE",
     "PEM private key for HTTPS (set together with tls_cert_file)"},
    {"web_root", KT_STR, F(web_root), 0, 0, 0, NULL, "", "DIR",
     "folder of static files served at / (empty = the embedded page)"},
    {"precision", KT_ENUM, F(precision), 0, 0, 0, precision_values, "fp32", NULL,
     "inference arithmetic: fp32, or int8 (faster; needs the model's int8 calibration)"},
    {"uid_root", KT_STR, F(uid_root), 0, 0, KF_UIDROOT, NULL, "", "ROOT",
     "DICOM UID root of the SR/SC objects written (empty = 2.25. + a random UUID per UID)"},
};

#define NKEYS (sizeof keys / sizeof keys[0])
#define NAME_MAX_LEN 64 /* longest key name, with room */

static const char *const err_msgs[CHEX_CONFIG_ERR_COUNT] = {
    [CHEX_CONFIG_OK] = "ok",
    [CHEX_CONFIG_HELP] = "help requested",
    [CHEX_CONFIG_VERSION] = "version requested",
    [CHEX_CONFIG_CHECK] = "configuration checked",
    [CHEX_CONFIG_ERR_UNKNOWN] = "unknown key",
    [CHEX_CONFIG_ERR_TYPE] = "wrong type or unparsable value",
    [CHEX_CONFIG_ERR_RANGE] = "value out of range or not allowed",
    [CHEX_CONFIG_ERR_FILE] = "config file unreadable or not valid JSON",
};

const char *chex_config_strerror(chex_config_err e)
{
    if ((int)e < 0 || e >= CHEX_CONFIG_ERR_COUNT)
        return "unknown error";
    return err_msgs[e];
}

/* ---- helpers ---------------------------------------------------------- */

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    if (!msg || msglen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

static void *field(chex_config *cfg, const key_def *k)
{
    return (char *)cfg + k->off;
}

static const void *cfield(const chex_config *cfg, const key_def *k)
{
    return (const char *)cfg + k->off;
}

/* "queue_depth" -> "queue-depth" */
static void key_to_flag(const char *key, char *out, size_t n)
{
    size_t i = 0;
    for (; key[i] && i + 1 < n; i++)
        out[i] = key[i] == '_' ? '-' : key[i];
    out[i] = '\0';
}

/* "queue_depth" -> "CHEXD_QUEUE_DEPTH" */
static void key_to_env(const char *key, char *out, size_t n)
{
    size_t j = (size_t)snprintf(out, n, "CHEXD_");
    for (size_t i = 0; key[i] && j + 1 < n; i++, j++)
        out[j] = (char)toupper((unsigned char)key[i]);
    if (j < n)
        out[j] = '\0';
}

static const key_def *find_key(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

static const key_def *find_flag(const char *flag, size_t len)
{
    char buf[NAME_MAX_LEN];
    for (size_t i = 0; i < NKEYS; i++) {
        key_to_flag(keys[i].key, buf, sizeof buf);
        if (strlen(buf) == len && memcmp(buf, flag, len) == 0)
            return &keys[i];
    }
    return NULL;
}

static const key_def *find_env(const char *name, size_t len)
{
    char buf[NAME_MAX_LEN];
    for (size_t i = 0; i < NKEYS; i++) {
        key_to_env(keys[i].key, buf, sizeof buf);
        if (strlen(buf) == len && memcmp(buf, name, len) == 0)
            return &keys[i];
    }
    return NULL;
}

/* Levenshtein distance, capped inputs; used for "did you mean". */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[NAME_MAX_LEN + 1];
    if (la > NAME_MAX_LEN || lb > NAME_MAX_LEN)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (tolower((unsigned char)a[i - 1]) !=
                                  tolower((unsigned char)b[j - 1]));
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

enum { NAME_KEY, NAME_FLAG, NAME_ENV };

/* The closest known name within distance 2 (or a third of its length),
 * written in the spelling of the source; "" when nothing is close. */
static void suggest(const char *given, size_t len, int style, char *out, size_t n)
{
    size_t best = (size_t)-1;
    out[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        char name[NAME_MAX_LEN];
        if (style == NAME_FLAG)
            key_to_flag(keys[i].key, name, sizeof name);
        else if (style == NAME_ENV)
            key_to_env(keys[i].key, name, sizeof name);
        else
            snprintf(name, sizeof name, "%s", keys[i].key);
        size_t d = edit_distance(given, len, name, strlen(name));
        size_t limit = strlen(name) / 3 > 2 ? strlen(name) / 3 : 2;
        if (d <= limit && d < best) {
            best = d;
            snprintf(out, n, "%s%s", style == NAME_FLAG ? "--" : "", name);
        }
    }
}

/* ---- origins: where each key's value came from ------------------------ */

typedef enum { ORIG_DEFAULT = 0, ORIG_FILE, ORIG_ENV, ORIG_FLAG, ORIG_SET } orig_kind;

typedef struct {
    orig_kind kind;
    const char *name; /* file path for ORIG_FILE, source text for ORIG_SET */
} origin;

/* "file cfg.json", "env CHEXD_PORT", "flag --port", "default". */
static void origin_text(const key_def *k, origin o, char *out, size_t n)
{
    char name[NAME_MAX_LEN];
    switch (o.kind) {
    case ORIG_FILE:
        snprintf(out, n, "file %s", o.name);
        break;
    case ORIG_ENV:
        key_to_env(k->key, name, sizeof name);
        snprintf(out, n, "env %s", name);
        break;
    case ORIG_FLAG:
        key_to_flag(k->key, name, sizeof name);
        snprintf(out, n, "flag --%s", name);
        break;
    case ORIG_SET:
        snprintf(out, n, "%s", o.name ? o.name : "set");
        break;
    default:
        snprintf(out, n, "default");
        break;
    }
}

#define SRC_MAX (CHEX_PATH_MAX + 32)

/* ---- values ----------------------------------------------------------- */

/* Parses a whole decimal number: optional sign, digits, nothing else.
 * Returns 0, -1 when it is not a number, -2 when it does not fit 64 bits.
 * *neg is set for a negative number (then *mag is 0). */
static int parse_number(const char *s, int *neg, uint64_t *mag)
{
    const char *p = s;
    *neg = 0;
    *mag = 0;
    if (*p == '-' || *p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return -1;
    errno = 0;
    char *end;
    if (s[0] == '-') {
        long long v = strtoll(s, &end, 10);
        if (errno == ERANGE)
            return -2;
        *neg = v < 0;
        *mag = v < 0 ? 0 : (uint64_t)v;
        return 0;
    }
    unsigned long long v = strtoull(p, &end, 10);
    if (errno == ERANGE)
        return -2;
    *mag = v;
    return 0;
}

static void enum_list(const key_def *k, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; k->allowed[i]; i++) {
        int w = snprintf(out + used, n - used, "%s%s", i ? "|" : "", k->allowed[i]);
        if (w < 0 || (size_t)w >= n - used)
            break;
        used += (size_t)w;
    }
}

static chex_config_err range_error(const key_def *k, const char *val, const char *src, char *msg,
                                   size_t msglen)
{
    set_msg(msg, msglen,
            "config: %s: value %s out of range %" PRIu64 "..%" PRIu64 " (from %s)", k->key, val,
            k->min, k->max, src);
    return CHEX_CONFIG_ERR_RANGE;
}

/* Stores an integer already parsed; checks the range. */
static chex_config_err store_number(chex_config *cfg, const key_def *k, int neg, uint64_t mag,
                                    const char *text, const char *src, char *msg, size_t msglen)
{
    if (neg || mag < k->min || mag > k->max)
        return range_error(k, text, src, msg, msglen);
    if (k->type == KT_INT)
        *(int *)field(cfg, k) = (int)mag;
    else
        *(uint64_t *)field(cfg, k) = mag;
    return CHEX_CONFIG_OK;
}

static chex_config_err store_string(chex_config *cfg, const key_def *k, const char *val,
                                    const char *src, char *msg, size_t msglen)
{
    size_t len = strlen(val);
    if (k->type == KT_ENUM) {
        for (size_t i = 0; k->allowed[i]; i++) {
            if (strcmp(k->allowed[i], val) == 0) {
                memset(field(cfg, k), 0, k->size);
                memcpy(field(cfg, k), val, len + 1);
                return CHEX_CONFIG_OK;
            }
        }
        char list[128];
        enum_list(k, list, sizeof list);
        set_msg(msg, msglen, "config: %s: value \"%.*s\" not one of %s (from %s)", k->key,
                len > 64 ? 64 : (int)len, val, list, src);
        return CHEX_CONFIG_ERR_RANGE;
    }
    if (len >= k->size) {
        set_msg(msg, msglen, "config: %s: value is %zu bytes long, at most %zu allowed (from %s)",
                k->key, len, k->size - 1, src);
        return CHEX_CONFIG_ERR_RANGE;
    }
    if ((k->flags & KF_NONEMPTY) && len == 0) {
        set_msg(msg, msglen, "config: %s: value must not be empty (from %s)", k->key, src);
        return CHEX_CONFIG_ERR_RANGE;
    }
    if (k->flags & KF_ADDR) {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, val, buf) != 1 && inet_pton(AF_INET6, val, buf) != 1) {
            set_msg(msg, msglen,
                    "config: %s: value \"%s\" is not an IPv4 or IPv6 address (from %s)", k->key,
                    val, src);
            return CHEX_CONFIG_ERR_TYPE;
        }
    }
    if (k->flags & KF_UIDROOT) {
        char why[160];
        if (chex_dcmw_uid_root_check(val, why, sizeof why) != CHEX_DCMW_OK) {
            set_msg(msg, msglen, "config: %s (from %s)", why, src);
            return CHEX_CONFIG_ERR_RANGE;
        }
    }
    /* Zero the tail too: equal configs are equal byte for byte. */
    memset(field(cfg, k), 0, k->size);
    memcpy(field(cfg, k), val, len + 1);
    return CHEX_CONFIG_OK;
}

/* A value given as text (env, flag, default, chex_config_set). */
static chex_config_err set_text(chex_config *cfg, const key_def *k, const char *val,
                                const char *src, char *msg, size_t msglen)
{
    if (k->type == KT_STR || k->type == KT_ENUM)
        return store_string(cfg, k, val, src, msg, msglen);
    int neg;
    uint64_t mag;
    int r = parse_number(val, &neg, &mag);
    if (r != 0) {
        size_t len = strlen(val);
        set_msg(msg, msglen, "config: %s: value \"%.*s%s\" %s (from %s)", k->key,
                len > 64 ? 64 : (int)len, val, len > 64 ? "..." : "",
                r == -2 ? "does not fit in 64 bits" : "is not a whole number", src);
        return CHEX_CONFIG_ERR_TYPE;
    }
    return store_number(cfg, k, neg, mag, val, src, msg, msglen);
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static chex_config_err set_json(chex_config *cfg, const key_def *k, const json_t *v,
                                const char *src, char *msg, size_t msglen)
{
    if (k->type == KT_STR || k->type == KT_ENUM) {
        if (!json_is_string(v)) {
            set_msg(msg, msglen, "config: %s: expected a string, got %s (from %s)", k->key,
                    json_type_name(v), src);
            return CHEX_CONFIG_ERR_TYPE;
        }
        /* No NUL inside: the file is parsed without JSON_ALLOW_NUL. */
        return store_string(cfg, k, json_string_value(v), src, msg, msglen);
    }
    if (!json_is_integer(v)) {
        set_msg(msg, msglen, "config: %s: expected an integer, got %s (from %s)", k->key,
                json_type_name(v), src);
        return CHEX_CONFIG_ERR_TYPE;
    }
    json_int_t iv = json_integer_value(v);
    char text[32];
    snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, iv);
    return store_number(cfg, k, iv < 0, iv < 0 ? 0 : (uint64_t)iv, text, src, msg, msglen);
}

/* ---- public: defaults and set ----------------------------------------- */

static chex_config_err apply_defaults(chex_config *cfg, const char *default_model, origin *orig)
{
    char msg[16];
    chex_config_err worst = CHEX_CONFIG_OK;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NKEYS; i++) {
        const char *def = keys[i].def ? keys[i].def : (default_model ? default_model : "");
        /* An empty default model is allowed (the caller may not have one);
         * the empty check then applies to values users give. */
        chex_config_err e = CHEX_CONFIG_OK;
        if (!(keys[i].def == NULL && def[0] == '\0'))
            e = set_text(cfg, &keys[i], def, "default", msg, sizeof msg);
        if (e != CHEX_CONFIG_OK && worst == CHEX_CONFIG_OK)
            worst = e;
        if (orig)
            orig[i] = (origin){ORIG_DEFAULT, NULL};
    }
    cfg->memory_limit_mb = chex_config_memory_default_mb();
    return worst;
}

chex_config_err chex_config_defaults(chex_config *cfg, const char *default_model)
{
    return apply_defaults(cfg, default_model, NULL);
}

/* The limit of the cgroup that /proc/self/cgroup names for the memory
 * controller (v2: "0::PATH", memory.max; v1: "N:...memory...:PATH",
 * memory.limit_in_bytes), falling back to the mount's root file (inside a
 * container the listed path is often the root). 0 when there is none. */
static uint64_t cgroup_memory_limit(void)
{
    char v2[CHEX_PATH_MAX] = "", v1[CHEX_PATH_MAX] = "";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        char line[CHEX_PATH_MAX];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!c2)
                continue;
            *c2 = '\0';
            const char *ctl = c1 + 1, *path = c2 + 1;
            if (strcmp(line, "0") == 0 && ctl[0] == '\0')
                snprintf(v2, sizeof v2, "%s", path);
            else if (strstr(ctl, "memory"))
                snprintf(v1, sizeof v1, "%s", path);
        }
        fclose(f);
    }
    char cand[4][CHEX_PATH_MAX + 64];
    int n = 0;
    if (v1[0]) {
        snprintf(cand[n++], sizeof cand[0], "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", v1);
        snprintf(cand[n++], sizeof cand[0], "/sys/fs/cgroup/memory/memory.limit_in_bytes");
    }
    if (v2[0]) {
        snprintf(cand[n++], sizeof cand[0], "/sys/fs/cgroup%s/memory.max", v2);
        snprintf(cand[n++], sizeof cand[0], "/sys/fs/cgroup/memory.max");
    }
    for (int i = 0; i < n; i++) {
        FILE *m = fopen(cand[i], "r");
        if (!m)
            continue;
        char text[64] = "";
        int got = fgets(text, sizeof text, m) != NULL;
        fclose(m);
        if (!got)
            continue;
        if (strncmp(text, "max", 3) == 0)
            return 0;
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (errno || end == text)
            continue;
        /* v1 says "no limit" with a huge page-rounded number. */
        return v >= (UINT64_C(1) << 60) ? 0 : (uint64_t)v;
    }
    return 0;
}

int chex_config_memory_default_mb(void)
{
    uint64_t lim = cgroup_memory_limit();
    if (lim == 0)
        return 1024;
    uint64_t mb = lim / 5 * 4 / (UINT64_C(1) << 20);
    if (mb < 1)
        mb = 1;
    return mb > 4194304 ? 4194304 : (int)mb;
}

chex_config_err chex_config_set(chex_config *cfg, const char *key, const char *value,
                                const char *source, char *msg, size_t msglen)
{
    char name[NAME_MAX_LEN];
    const char *src = source ? source : "set";
    if (msg && msglen)
        msg[0] = '\0';
    if (!key || !value) {
        set_msg(msg, msglen, "config: %s: no value (from %s)", key ? key : "(null)", src);
        return CHEX_CONFIG_ERR_TYPE;
    }
    /* Accept the dashed flag spelling too, so a CLI can pass its option names. */
    const key_def *k = NULL;
    size_t klen = strlen(key);
    if (klen < sizeof name) {
        for (size_t i = 0; i <= klen; i++)
            name[i] = key[i] == '-' ? '_' : key[i];
        k = find_key(name);
    }
    if (!k) {
        char hint[NAME_MAX_LEN + 2];
        suggest(key, strlen(key), NAME_KEY, hint, sizeof hint);
        set_msg(msg, msglen, "config: %s: unknown key%s%s%s (from %s)", key,
                hint[0] ? ", did you mean " : "", hint, hint[0] ? "?" : "", src);
        return CHEX_CONFIG_ERR_UNKNOWN;
    }
    return set_text(cfg, k, value, src, msg, msglen);
}

/* Checks between keys; orig (may be NULL) tells which source to name. */
static chex_config_err cross_check(const chex_config *cfg, const origin *orig, char *msg,
                                   size_t msglen)
{
    const key_def *cert = find_key("tls_cert_file"), *key = find_key("tls_key_file");
    const char *c = cfield(cfg, cert), *kf = cfield(cfg, key);
    if ((c[0] != '\0') != (kf[0] != '\0')) {
        const key_def *missing = c[0] ? key : cert, *given = c[0] ? cert : key;
        char src[SRC_MAX];
        origin o = orig ? orig[given - keys] : (origin){ORIG_SET, "effective config"};
        origin_text(given, o, src, sizeof src);
        set_msg(msg, msglen, "config: %s: must be set together with %s, which is set (from %s)",
                missing->key, given->key, src);
        return CHEX_CONFIG_ERR_RANGE;
    }
    const key_def *mk = find_key("model"), *repo = find_key("model_repository");
    const char *rv = cfield(cfg, repo);
    if (orig && rv[0] != '\0' && orig[mk - keys].kind != ORIG_DEFAULT) {
        char src[SRC_MAX], src2[SRC_MAX];
        origin_text(repo, orig[repo - keys], src, sizeof src);
        origin_text(mk, orig[mk - keys], src2, sizeof src2);
        set_msg(msg, msglen,
                "config: model_repository: set (from %s) together with model (from %s); they "
                "are alternatives: set one",
                src, src2);
        return CHEX_CONFIG_ERR_RANGE;
    }
    const key_def *px = find_key("max_image_pixels"), *side = find_key("min_image_side");
    uint64_t maxpx = *(const uint64_t *)cfield(cfg, px);
    int minside = *(const int *)cfield(cfg, side);
    if (maxpx < (uint64_t)minside * (uint64_t)minside) {
        char src[SRC_MAX];
        origin o = orig ? orig[px - keys] : (origin){ORIG_SET, "effective config"};
        origin_text(px, o, src, sizeof src);
        set_msg(msg, msglen,
                "config: max_image_pixels: value %" PRIu64
                " below min_image_side squared (%d*%d), no image could pass (from %s)",
                maxpx, minside, minside, src);
        return CHEX_CONFIG_ERR_RANGE;
    }
    return CHEX_CONFIG_OK;
}

chex_config_err chex_config_check(const chex_config *cfg, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    return cross_check(cfg, NULL, msg, msglen);
}

/* ---- sources ---------------------------------------------------------- */

static chex_config_err load_file(chex_config *cfg, const char *path, const char *path_src,
                                 origin *orig, char *msg, size_t msglen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_msg(msg, msglen, "config: config: cannot open \"%s\": %s (from %s)", path,
                strerror(errno), path_src);
        return CHEX_CONFIG_ERR_FILE;
    }
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    int read_err = ferror(f);
    fclose(f);
    if (!root) {
        if (read_err)
            set_msg(msg, msglen, "config: config: cannot read \"%s\" (from %s)", path, path_src);
        else
            set_msg(msg, msglen,
                    "config: config: invalid JSON in \"%s\" at line %d column %d: %s (from %s)",
                    path, jerr.line, jerr.column, jerr.text, path_src);
        return CHEX_CONFIG_ERR_FILE;
    }
    if (!json_is_object(root)) {
        set_msg(msg, msglen, "config: config: \"%s\" must hold a JSON object, not %s (from %s)",
                path, json_type_name(root), path_src);
        json_decref(root);
        return CHEX_CONFIG_ERR_FILE;
    }
    char src[SRC_MAX];
    snprintf(src, sizeof src, "file %s", path);
    chex_config_err e = CHEX_CONFIG_OK;
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        const key_def *k = find_key(name);
        if (!k) {
            char hint[NAME_MAX_LEN + 2];
            size_t len = strlen(name);
            suggest(name, len, NAME_KEY, hint, sizeof hint);
            set_msg(msg, msglen, "config: %.*s%s: unknown key%s%s%s (from %s)",
                    len > 64 ? 64 : (int)len, name, len > 64 ? "..." : "",
                    hint[0] ? ", did you mean " : "", hint, hint[0] ? "?" : "", src);
            e = CHEX_CONFIG_ERR_UNKNOWN;
            break;
        }
        e = set_json(cfg, k, v, src, msg, msglen);
        if (e != CHEX_CONFIG_OK)
            break;
        orig[k - keys] = (origin){ORIG_FILE, path};
    }
    json_decref(root);
    return e;
}

/* Variables named CHEXD_* that are not keys but are read elsewhere. */
static int env_extra(const char *name, size_t len)
{
    static const char *const extras[] = {"CHEXD_CONFIG", "CHEXD_ISA", "CHEXD_WINOGRAD"};
    for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++)
        if (strlen(extras[i]) == len && memcmp(extras[i], name, len) == 0)
            return 1;
    return 0;
}

static chex_config_err load_env(chex_config *cfg, char **envp, origin *orig, char *msg,
                                size_t msglen)
{
    if (!envp)
        return CHEX_CONFIG_OK;
    for (char **e = envp; *e; e++) {
        if (strncmp(*e, "CHEXD_", 6) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t len = (size_t)(eq - *e);
        if (env_extra(*e, len))
            continue;
        const key_def *k = find_env(*e, len);
        int shown = len > 64 ? 64 : (int)len;
        if (!k) {
            char hint[NAME_MAX_LEN + 2];
            suggest(*e, len, NAME_ENV, hint, sizeof hint);
            set_msg(msg, msglen, "config: %.*s: unknown variable%s%s%s (from env %.*s)", shown,
                    *e, hint[0] ? ", did you mean " : "", hint, hint[0] ? "?" : "", shown, *e);
            return CHEX_CONFIG_ERR_UNKNOWN;
        }
        char src[NAME_MAX_LEN + 8];
        snprintf(src, sizeof src, "env %.*s", shown, *e);
        chex_config_err err = set_text(cfg, k, eq + 1, src, msg, msglen);
        if (err != CHEX_CONFIG_OK)
            return err;
        orig[k - keys] = (origin){ORIG_ENV, NULL};
    }
    return CHEX_CONFIG_OK;
}

static const char *env_get(char **envp, const char *name)
{
    size_t len = strlen(name);
    const char *found = NULL;
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            found = *e + len + 1;
    return found;
}

/* One parsed command-line argument. */
typedef struct {
    enum { ARG_KEY, ARG_CONFIG, ARG_CHECK } what;
    const key_def *k;
    const char *value;
} parsed_arg;

/* Parses argv[*i] (and its value); advances *i past what it used. */
static chex_config_err parse_arg(int argc, char **argv, int *i, parsed_arg *out, char *msg,
                                 size_t msglen)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
        size_t len = strlen(a);
        set_msg(msg, msglen,
                "config: %.*s%s: unexpected argument, chexd takes only --flags (from argument "
                "%d)",
                len > 64 ? 64 : (int)len, a, len > 64 ? "..." : "", *i);
        return CHEX_CONFIG_ERR_UNKNOWN;
    }
    const char *name = a + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    int shown = nlen > 64 ? 64 : (int)nlen;

    if (nlen == 12 && memcmp(name, "check-config", 12) == 0) {
        if (eq) {
            set_msg(msg, msglen, "config: check-config: takes no value (from flag --check-config)");
            return CHEX_CONFIG_ERR_TYPE;
        }
        out->what = ARG_CHECK;
        (*i)++;
        return CHEX_CONFIG_OK;
    }
    const key_def *k = NULL;
    int is_config = nlen == 6 && memcmp(name, "config", 6) == 0;
    if (!is_config) {
        k = find_flag(name, nlen);
        if (!k) {
            char hint[NAME_MAX_LEN + 4];
            suggest(name, nlen, NAME_FLAG, hint, sizeof hint);
            set_msg(msg, msglen, "config: %.*s: unknown flag%s%s%s (from flag --%.*s)", shown,
                    name, hint[0] ? ", did you mean " : "", hint, hint[0] ? "?" : "", shown,
                    name);
            return CHEX_CONFIG_ERR_UNKNOWN;
        }
    }
    const char *value;
    if (eq) {
        value = eq + 1;
        (*i)++;
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        value = argv[*i + 1];
        *i += 2;
    } else {
        set_msg(msg, msglen,
                "config: %s: missing value, use --%.*s VALUE or --%.*s=VALUE (from flag --%.*s)",
                k ? k->key : "config", shown, name, shown, name, shown, name);
        return CHEX_CONFIG_ERR_TYPE;
    }
    out->what = is_config ? ARG_CONFIG : ARG_KEY;
    out->k = k;
    out->value = value;
    return CHEX_CONFIG_OK;
}

/* ---- public: load ----------------------------------------------------- */

chex_config_err chex_config_load(chex_config *cfg, int argc, char **argv, char **envp,
                                 const char *default_model, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';

    /* --help and --version win over anything else on the line. A value is
     * never taken from a word starting with "--", so these are always flags. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CHEX_CONFIG_HELP;
        if (strcmp(argv[i], "--version") == 0)
            return CHEX_CONFIG_VERSION;
    }

    /* Check the shape of the command line before reading any file. */
    const char *config_path = NULL;
    int check = 0;
    for (int i = 1; i < argc;) {
        parsed_arg pa;
        chex_config_err e = parse_arg(argc, argv, &i, &pa, msg, msglen);
        if (e != CHEX_CONFIG_OK)
            return e;
        if (pa.what == ARG_CONFIG)
            config_path = pa.value;
        else if (pa.what == ARG_CHECK)
            check = 1;
    }

    origin orig[NKEYS];
    chex_config_err e = apply_defaults(cfg, default_model, orig);
    if (e != CHEX_CONFIG_OK) {
        set_msg(msg, msglen, "config: model: default model path too long (from default)");
        return e;
    }

    const char *path_src = "flag --config";
    if (!config_path) {
        config_path = env_get(envp, "CHEXD_CONFIG");
        path_src = "env CHEXD_CONFIG";
    }
    if (config_path && config_path[0] == '\0' && strcmp(path_src, "flag --config") == 0) {
        set_msg(msg, msglen, "config: config: empty file name (from flag --config)");
        return CHEX_CONFIG_ERR_FILE;
    }
    if (config_path && config_path[0]) {
        e = load_file(cfg, config_path, path_src, orig, msg, msglen);
        if (e != CHEX_CONFIG_OK)
            return e;
    }

    e = load_env(cfg, envp, orig, msg, msglen);
    if (e != CHEX_CONFIG_OK)
        return e;

    for (int i = 1; i < argc;) {
        parsed_arg pa;
        e = parse_arg(argc, argv, &i, &pa, msg, msglen);
        if (e != CHEX_CONFIG_OK)
            return e;
        if (pa.what != ARG_KEY)
            continue;
        char src[NAME_MAX_LEN + 8], flag[NAME_MAX_LEN];
        key_to_flag(pa.k->key, flag, sizeof flag);
        snprintf(src, sizeof src, "flag --%s", flag);
        e = set_text(cfg, pa.k, pa.value, src, msg, msglen);
        if (e != CHEX_CONFIG_OK)
            return e;
        orig[pa.k - keys] = (origin){ORIG_FLAG, NULL};
    }

    e = cross_check(cfg, orig, msg, msglen);
    if (e != CHEX_CONFIG_OK)
        return e;
    return check ? CHEX_CONFIG_CHECK : CHEX_CONFIG_OK;
}

/* ---- public: usage and JSON ------------------------------------------- */

static void type_text(const key_def *k, char *out, size_t n)
{
    switch (k->type) {
    case KT_INT:
        snprintf(out, n, "int %" PRIu64 "..%" PRIu64, k->min, k->max);
        break;
    case KT_U64:
        snprintf(out, n, "uint64 %" PRIu64 "..%" PRIu64, k->min, k->max);
        break;
    case KT_ENUM: {
        char list[128];
        enum_list(k, list, sizeof list);
        snprintf(out, n, "one of %s", list);
        break;
    }
    default:
        snprintf(out, n, "string%s", (k->flags & KF_ADDR) ? " (IP address)" : "");
        break;
    }
}

void chex_config_usage(const char *prog, FILE *out)
{
    fprintf(out,
            "Usage: %s [--config FILE] [--KEY VALUE | --KEY=VALUE]...\n"
            "\n"
            "chexd classifies chest radiographs over HTTP. Settings come from, lowest to\n"
            "highest precedence: built-in defaults < the JSON file given by --config (or\n"
            "CHEXD_CONFIG) < CHEXD_* environment variables < command-line flags.\n"
            "\n"
            "  --help                 print this help and exit\n"
            "  --version              print the version and exit\n"
            "  --check-config         validate the settings, print them as JSON and exit\n"
            "  --config FILE          JSON object of settings, keys as below (env CHEXD_CONFIG)\n"
            "\n"
            "Keys (flag, environment variable, description, JSON key, type, default):\n",
            prog ? prog : "chexd");
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        char flag[NAME_MAX_LEN], env[NAME_MAX_LEN], type[160], arg[256];
        key_to_flag(k->key, flag, sizeof flag);
        key_to_env(k->key, env, sizeof env);
        type_text(k, type, sizeof type);
        if (k->type == KT_ENUM) {
            char list[128];
            enum_list(k, list, sizeof list);
            snprintf(arg, sizeof arg, "--%s %s", flag, list);
        } else {
            snprintf(arg, sizeof arg, "--%s %s", flag, k->meta);
        }
        fprintf(out, "  %-38s env %s\n", arg, env);
        fprintf(out, "      %s\n", k->desc);
        fprintf(out, "      key %s, %s, default ", k->key, type);
        if (!k->def)
            fprintf(out, "the demo model\n");
        else if (k->type == KT_STR || k->type == KT_ENUM)
            fprintf(out, "\"%s\"\n", k->def);
        else
            fprintf(out, "%s\n", k->def);
    }
    fprintf(out,
            "\n"
            "Also read: CHEXD_ISA=avx512|avx2|generic forces the inference code path;\n"
            "CHEXD_WINOGRAD=0 turns off the Winograd 3x3 convolutions (AVX-512),\n"
            "CHEXD_WINOGRAD=2 uses F(2x2,3x3) instead of F(4x4,3x3).\n"
            "Exit status 2 on a configuration error, with one line naming the key and source.\n");
}

char *chex_config_to_json(const chex_config *cfg)
{
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const void *p = cfield(cfg, k);
        json_t *v;
        if (k->type == KT_INT) {
            v = json_integer(*(const int *)p);
        } else if (k->type == KT_U64) {
            /* Ranges keep every uint64 key far below JSON_INTEGER max. */
            v = json_integer((json_int_t) * (const uint64_t *)p);
        } else {
            /* Bounded: the field may lack its NUL if a caller filled the
             * struct by hand. A path that is not UTF-8 is shown with '?'. */
            size_t len = strnlen((const char *)p, k->size);
            v = json_stringn((const char *)p, len);
            if (!v) {
                char tmp[CHEX_PATH_MAX];
                for (size_t j = 0; j < len; j++) {
                    unsigned char c = ((const unsigned char *)p)[j];
                    tmp[j] = c < 0x80 ? (char)c : '?';
                }
                v = json_stringn(tmp, len);
            }
        }
        if (!v || json_object_set_new(obj, k->key, v) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    char *s = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return s;
}
