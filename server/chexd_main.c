/* server/chexd_main.c - bin/chexd: configuration, model, HTTP service, signals.
 * SIGHUP re-reads api_token_file, the TLS certificate and key, and the model
 * files (rotation without dropping connections or requests; a file that
 * cannot be used keeps the old one).
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT) or --help/--version/
 * --check-config; 2 when start-up fails (config, model, port, TLS), with one
 * line on stderr. */
#include <malloc.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "model/model.h"
#include "preprocessing/preprocess.h"
#include "server/answer.h"
#include "server/daemon.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/pipeline.h"

#ifndef CHEXD_DEFAULT_MODEL
#define CHEXD_DEFAULT_MODEL "models/chexnet-demo.safetensors"
#endif

extern char **environ;

/* Idle OpenMP team threads may spin only briefly: long enough to catch the
 * next barrier of the same forward pass (DenseNet has hundreds; sleeping at
 * each cost ~7 ms per batch-1 forward on an idle machine), not so long that
 * they take the cores the decoders and the HTTP threads need (libgomp's
 * default spins up to 300,000 iterations; docs/PERFORMANCE.md has the
 * measurements). libgomp reads its environment in a constructor, before
 * main, so when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT chexd
 * sets GOMP_SPINCOUNT and executes itself again (same pid, same arguments);
 * if that exec fails it carries on with the runtime's default. */
static void set_omp_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT"))
        return;
    if (setenv("GOMP_SPINCOUNT", "10000", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
}

/* glibc raises its mmap threshold as big blocks come and go and keeps freed
 * memory in its arenas. A fixed 1 MiB threshold: buffers of 1 MiB or more
 * (decode frames, interlaced PNGs, answers with maps) are their own mappings,
 * returned to the system when freed, so the resident size follows the memory
 * budget; smaller ones (a request's tensor, resized planes, rings) are reused
 * from the arenas instead of being faulted in afresh for every request (a
 * first-touch fault costs ~15 us on the VMs measured). Bodies are mappings
 * of their own (server/bodycache.h). */
static void set_malloc_policy(void)
{
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
}

int main(int argc, char **argv)
{
    set_omp_wait_policy(argv);
    set_malloc_policy();

    /* Signals are taken synchronously by this thread (sigwait); every thread
     * started later inherits the mask. */
    sigset_t stopset;
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stopset, NULL);
    signal(SIGPIPE, SIG_IGN);

    static chex_config cfg;
    char msg[1024] = "";
    chex_config_err ce =
        chex_config_load(&cfg, argc, argv, environ, CHEXD_DEFAULT_MODEL, msg, sizeof msg);
    switch (ce) {
    case CHEX_CONFIG_OK:
        break;
    case CHEX_CONFIG_HELP:
        chex_config_usage("chexd", stdout);
        return 0;
    case CHEX_CONFIG_VERSION:
        chex_pre_decoder_versions dv;
        chex_pre_get_decoder_versions(&dv);
        printf("chexd %s (OpenJPEG %s, CharLS %s)\n", CHEXD_VERSION, dv.openjpeg, dv.charls);
        return 0;
    case CHEX_CONFIG_CHECK: {
        char *j = chex_config_to_json(&cfg);
        if (!j) {
            fprintf(stderr, "chexd: out of memory\n");
            return 2;
        }
        printf("%s\n", j);
        free(j);
        return 0;
    }
    default:
        fprintf(stderr, "chexd: %s\n", msg[0] ? msg : chex_config_strerror(ce));
        return 2;
    }
    chex_log_init(cfg.log_level, cfg.log_format);

    /* The port first: a busy port fails before the model is read. */
    int fd = chexd_listen(cfg.listen, cfg.port, msg, sizeof msg);
    if (fd < 0) {
        fprintf(stderr, "chexd: %s\n", msg);
        return 2;
    }

    int max_batch = cfg.max_batch > 0 ? cfg.max_batch : 1;
    if (max_batch > 256)
        max_batch = 256;
    /* Default: a worker per thread (each runs its batch alone, so no
     * barrier of one batch waits on a preempted thread), at most one per
     * image of max_batch. */
    int threads = cfg.threads > 0 ? cfg.threads : omp_get_num_procs();
    int workers = cfg.workers > 0 ? cfg.workers : threads < max_batch ? threads : max_batch;
    if (workers > CHEX_REGISTRY_MAX_WORKERS)
        workers = CHEX_REGISTRY_MAX_WORKERS;
    chex_registry *reg = NULL;
    if (chex_registry_open(&reg, &cfg, max_batch, workers, msg, sizeof msg) != 0) {
        fprintf(stderr, "chexd: %s\n", msg);
        close(fd);
        return 2;
    }
    /* The first model's info, for the start-up line and /metrics. */
    chex_served *first = chex_registry_acquire(reg, 0);
    static chex_model_info info_copy;
    info_copy = *first->p.info;
    chex_registry_release(reg, first);
    const chex_model_info *info = &info_copy;
    chex_metrics_init(info);
    if (info->demo)
        chex_log(CHEX_LOG_WARN, "DEMO WEIGHTS loaded: answers are not a diagnosis", "model",
                 info->name, "detail", chex_answer_demo_warning, NULL);

    chexd *d = NULL;
    if (chexd_start(&d, &cfg, reg, fd, msg, sizeof msg) != 0) {
        fprintf(stderr, "chexd: %s\n", msg);
        chex_registry_free(reg);
        return 2;
    }
    char port[16], batch[16], qd[16], nw[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    snprintf(nw, sizeof nw, "%d", workers);
    snprintf(batch, sizeof batch, "%d", cfg.max_batch);
    snprintf(qd, sizeof qd, "%d", cfg.queue_depth);
    chex_log(CHEX_LOG_INFO, "listening", "listen", cfg.listen, "port", port, "tls",
             cfg.tls_cert_file[0] ? "on" : "off", "model", info->name, "sha256", info->sha256,
             "preprocess", info->preprocess, "max_batch", batch, "workers", nw, "queue_depth", qd, "auth",
             cfg.api_token_file[0] ? "bearer" : "off", "isa", chex_model_isa(), "version",
             CHEXD_VERSION, NULL);

    int sig = 0;
    for (;;) {
        if (sigwait(&stopset, &sig) != 0)
            continue;
        if (sig != SIGHUP)
            break;
        chex_log(CHEX_LOG_INFO, "SIGHUP: reloading the token, TLS certificate and models", NULL);
        chexd_reload(d);
    }
    chex_log(CHEX_LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    chexd_stop(d);
    chex_registry_free(reg);
    chex_log(CHEX_LOG_INFO, "stopped", NULL);
    return 0;
}
