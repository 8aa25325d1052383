/* config/config.h - chexd's configuration: defaults < JSON file < CHEXD_* env < flags.
 *
 * chex_config_load() is called once from main() before any thread starts; the
 * resulting struct is read-only afterwards and may be shared by all threads.
 * Every key has a flag spelled with dashes (queue_depth -> --queue-depth) and an
 * environment variable in capitals (CHEXD_QUEUE_DEPTH).
 */
#ifndef CHEX_CONFIG_H
#define CHEX_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    CHEX_CONFIG_OK = 0,
    CHEX_CONFIG_HELP,          /* --help: usage printed by caller (chex_config_usage) */
    CHEX_CONFIG_VERSION,       /* --version */
    CHEX_CONFIG_CHECK,         /* --check-config: config valid, caller prints JSON */
    CHEX_CONFIG_ERR_UNKNOWN,   /* unknown key / flag / CHEXD_ variable */
    CHEX_CONFIG_ERR_TYPE,      /* wrong JSON type or unparsable value */
    CHEX_CONFIG_ERR_RANGE,     /* value out of range or not among allowed values */
    CHEX_CONFIG_ERR_FILE,      /* config file unreadable or not valid JSON */
    CHEX_CONFIG_ERR_COUNT
} chex_config_err;

const char *chex_config_strerror(chex_config_err e);

#define CHEX_PATH_MAX 1024

typedef struct {
    char listen[64];               /* address to bind, "127.0.0.1" */
    int port;                      /* 8080 */
    int threads;                   /* OpenMP threads for inference and for one large
                                      DICOM decoded alone (0 = all cores) */
    int http_threads;              /* libmicrohttpd connection thread pool */
    char model[CHEX_PATH_MAX];     /* safetensors path; default the demo model */
    char model_repository[CHEX_PATH_MAX]; /* folder of models; set: served instead of model */
    uint64_t max_upload_bytes;
    uint64_t max_image_pixels;
    int min_image_side;
    char png16_scaling[16];        /* minmax | sbit | full */
    int max_overlay_side;          /* heat-map display copy's longer side, 2048 */
    int queue_depth;
    int max_batch;
    int batch_window_ms;
    int workers;
    int memory_limit_mb;           /* whole process's budget in MiB, 0 = none */
    int request_timeout_ms;
    int shutdown_timeout_ms;
    int connection_limit;
    int per_ip_connection_limit;
    int connection_timeout_s;
    int header_timeout_s;            /* request headers complete within it (0 = no limit) */
    uint64_t min_upload_bytes_per_s; /* slowest body accepted after its first 5 s (0 = any) */
    uint64_t connection_memory_limit;
    char log_level[16];            /* debug | info | warn | error */
    char log_format[16];           /* json | logfmt */
    char api_token_file[CHEX_PATH_MAX];
    char tls_cert_file[CHEX_PATH_MAX];
    char tls_key_file[CHEX_PATH_MAX];
    char web_root[CHEX_PATH_MAX];  /* empty: the embedded page */
    char precision[8];             /* fp32 | int8 */
    char uid_root[48];             /* DICOM UID root; empty = 2.25.<UUID> per UID */
} chex_config;

/* Fills cfg from the four sources. envp is the environment (NULL-terminated).
 * default_model is the demo model path compiled into the binary.
 * On an error returns it and writes one line naming the key and the source
 * ("file FILE", "env CHEXD_X", "flag --x") into msg.
 * The file is named by --config FILE, else by CHEXD_CONFIG. Any other CHEXD_*
 * variable that is not a key is an error, except CHEXD_ISA (read by model/).
 * argv holds flags only: a positional argument is an error. --help/-h and
 * --version return at once, before anything else is checked. */
chex_config_err chex_config_load(chex_config *cfg, int argc, char **argv, char **envp,
                                 const char *default_model, char *msg, size_t msglen);

/* Only the defaults (no file, env or flags): what bin/chex starts from.
 * default_model may be NULL (model then ""). Returns CHEX_CONFIG_ERR_RANGE
 * only when default_model is longer than CHEX_PATH_MAX - 1 (model is "").
 * chex_config_load calls it first; on an error from load cfg is unspecified. */
chex_config_err chex_config_defaults(chex_config *cfg, const char *default_model);

/* memory_limit_mb's default: 80 % of the memory limit of this process's
 * cgroup (v2 memory.max, v1 memory.limit_in_bytes) in MiB, or 1024 when
 * there is no limit. chex_config_defaults applies it. */
int chex_config_memory_default_mb(void);

/* Sets one key from its text, with the same parsing and validation as env and
 * flags. key is the JSON name (queue_depth; the dashed queue-depth is also
 * accepted); source is named in msg, e.g. "flag --threads" (NULL: "set").
 * On error cfg is unchanged and msg holds one line naming key and source. */
chex_config_err chex_config_set(chex_config *cfg, const char *key, const char *value,
                                const char *source, char *msg, size_t msglen);

/* The checks between keys that chex_config_load makes last (tls_cert_file and
 * tls_key_file both or neither; max_image_pixels >= min_image_side^2); for
 * callers that filled cfg with chex_config_set. */
chex_config_err chex_config_check(const chex_config *cfg, char *msg, size_t msglen);

/* Writes the usage text documenting every key. */
void chex_config_usage(const char *prog, FILE *out);

/* Effective config as a JSON object, malloc'd, caller frees; NULL on ENOMEM. */
char *chex_config_to_json(const chex_config *cfg);

#endif
