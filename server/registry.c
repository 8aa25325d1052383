/* server/registry.c - served models, reference-counted weights, reloads
 * (see registry.h). One mutex guards every slot's pointer and every
 * chex_served's count; loading happens outside it. */
#include "server/registry.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/log.h"
#include "server/metrics.h"

#define MAX_SLOTS 64
#define MIB(x) ((double)(x) / 1048576.0)

typedef struct {
    char name[128];
    char version[32];
    char path[CHEX_PATH_MAX];
    chex_served *cur;         /* holds one reference */
    int reloading;
    unsigned long long reloads;
    char error[512];          /* the last reload's failure, "" after a success */
    pthread_mutex_t reload_lock;
} slot_t;

struct chex_registry {
    const chex_config *cfg;
    int max_batch; /* per worker */
    int workers;
    pthread_mutex_t lock;
    chex_budget *budget;
    /* Bytes of weights counted as resident at start that were freed and not
     * yet handed to a newer version's charge. */
    uint64_t credit;
    int n;
    slot_t slots[MAX_SLOTS];
};

static void served_free(chex_served *sv)
{
    if (!sv)
        return;
    for (int w = 0; w < sv->nworkers; w++) {
        if (sv->ws[w])
            chex_model_ws_free(sv->ws[w]);
        chex_pipeline_batch_free(&sv->batch[w]);
    }
    chex_model_free(sv->model);
    free(sv);
}

/* Loads path with its pipeline and worker buffers. */
static chex_served *served_load(const chex_registry *reg, int slot, const char *path, char *msg,
                                size_t msglen)
{
    chex_served *sv = calloc(1, sizeof *sv);
    if (!sv) {
        snprintf(msg, msglen, "out of memory");
        return NULL;
    }
    sv->slot = slot;
    char m[768] = "";
    chex_model_err me = chex_model_load(path, &sv->model, m, sizeof m);
    if (me != CHEX_MODEL_OK) {
        snprintf(msg, msglen, "model %s: %s", path, m[0] ? m : chex_model_strerror(me));
        served_free(sv);
        return NULL;
    }
    if (chex_pipeline_init(&sv->p, sv->model, reg->cfg, m, sizeof m) != 0) {
        snprintf(msg, msglen, "%s (model %s)", m, path);
        served_free(sv);
        return NULL;
    }
    int rows = reg->max_batch * sv->p.ncrops;
    for (int w = 0; w < reg->workers; w++) {
        sv->nworkers = w + 1;
        if (chex_pipeline_batch_init(&sv->p, &sv->batch[w], reg->max_batch) != 0) {
            snprintf(msg, msglen, "out of memory for a batch of %d images (model %s)",
                     reg->max_batch, path);
            served_free(sv);
            return NULL;
        }
        me = chex_pipeline_ws_create(&sv->p, rows, &sv->ws[w]);
        if (me != CHEX_MODEL_OK) {
            snprintf(msg, msglen, "model workspace for %d tensors: %s (model %s)", rows,
                     chex_model_strerror(me), path);
            served_free(sv);
            return NULL;
        }
    }
    const chex_model_info *in = sv->p.info;
    for (int i = 0; i < in->num_labels; i++)
        sv->oip_labels[i] = in->labels[i];
    const slot_t *s = &reg->slots[slot];
    sv->oip = (chex_oip_model){s->name,          s->version,       "chexd_densenet121",
                               in->input_channels, in->input_size, in->num_labels,
                               sv->oip_labels,   in->sha256};
    sv->bytes = chex_model_bytes(sv->model);
    for (int w = 0; w < reg->workers; w++)
        sv->bytes += chex_model_ws_bytes(sv->ws[w]) +
                     (uint64_t)rows * chex_pipeline_tensor_floats(&sv->p) * sizeof(float) +
                     (uint64_t)rows * (uint64_t)in->num_labels * sizeof(float);
    return sv;
}

/* Versions compare as numbers when both are (2 < 10), else as text. */
static int version_cmp(const char *a, const char *b)
{
    char *ea, *eb;
    unsigned long long va = strtoull(a, &ea, 10), vb = strtoull(b, &eb, 10);
    if (*a && *b && !*ea && !*eb)
        return va < vb ? -1 : va > vb;
    return strcmp(a, b);
}

/* A name or version usable in a route: [A-Za-z0-9._-], not starting with '.'. */
static int name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int add_slot(chex_registry *reg, const char *name, const char *version, const char *path,
                    char *msg, size_t msglen)
{
    const char *dir = reg->cfg->model_repository;
    for (int i = 0; i < reg->n; i++)
        if (strcmp(reg->slots[i].name, name) == 0 && strcmp(reg->slots[i].version, version) == 0) {
            snprintf(msg, msglen, "config: model_repository: %s: model %s is both %s.safetensors "
                     "and a folder %s/", dir, name, name, name);
            return -1;
        }
    if (reg->n == MAX_SLOTS) {
        snprintf(msg, msglen, "config: model_repository: %s: more than %d model versions", dir,
                 MAX_SLOTS);
        return -1;
    }
    slot_t *s = &reg->slots[reg->n];
    if ((size_t)snprintf(s->path, sizeof s->path, "%s", path) >= sizeof s->path) {
        snprintf(msg, msglen, "config: model_repository: path too long under %s", dir);
        return -1;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->version, sizeof s->version, "%s", version);
    reg->n++;
    return 0;
}

static int slot_cmp(const void *a, const void *b)
{
    const slot_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : version_cmp(x->version, y->version);
}

/* Fills the slots from model_repository: NAME/VERSION/model.safetensors and
 * NAME.safetensors (version "1"), sorted by name and version. */
static int scan_repository(chex_registry *reg, char *msg, size_t msglen)
{
    const char *dir = reg->cfg->model_repository;
    DIR *top = opendir(dir);
    if (!top) {
        snprintf(msg, msglen, "config: model_repository: cannot open the folder %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    char path[CHEX_PATH_MAX + 512];
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(top)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t n = strlen(e->d_name);
        static const char ext[] = ".safetensors";
        if (n > sizeof ext - 1 && strcmp(e->d_name + n - (sizeof ext - 1), ext) == 0 &&
            !is_dir(path)) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(n - (sizeof ext - 1)), e->d_name);
            if (!name_ok(name, sizeof name)) {
                snprintf(msg, msglen, "config: model_repository: %s: model name \"%s\" must be "
                         "letters, digits, '.', '_' or '-'", dir, name);
                rc = -1;
            } else {
                rc = add_slot(reg, name, "1", path, msg, msglen);
            }
            continue;
        }
        if (!is_dir(path))
            continue; /* other files are not models */
        if (!name_ok(e->d_name, 128)) {
            snprintf(msg, msglen, "config: model_repository: %s: model name \"%s\" must be "
                     "letters, digits, '.', '_' or '-'", dir, e->d_name);
            rc = -1;
            continue;
        }
        DIR *sub = opendir(path);
        if (!sub) {
            snprintf(msg, msglen, "config: model_repository: cannot open %s: %s", path,
                     strerror(errno));
            rc = -1;
            continue;
        }
        struct dirent *v;
        int versions = 0;
        while (rc == 0 && (v = readdir(sub)) != NULL) {
            char vdir[CHEX_PATH_MAX + 1024], file[CHEX_PATH_MAX + 1100];
            snprintf(vdir, sizeof vdir, "%s/%s", path, v->d_name);
            if (v->d_name[0] == '.' || !is_dir(vdir))
                continue;
            if (!name_ok(v->d_name, 32)) {
                snprintf(msg, msglen, "config: model_repository: %s: version \"%s\" must be "
                         "letters, digits, '.', '_' or '-' (at most 31)", path, v->d_name);
                rc = -1;
                break;
            }
            snprintf(file, sizeof file, "%s/model.safetensors", vdir);
            struct stat st;
            if (stat(file, &st) != 0) {
                snprintf(msg, msglen, "config: model_repository: %s has no model.safetensors",
                         vdir);
                rc = -1;
                break;
            }
            rc = add_slot(reg, e->d_name, v->d_name, file, msg, msglen);
            versions++;
        }
        closedir(sub);
        if (rc == 0 && versions == 0) {
            snprintf(msg, msglen, "config: model_repository: %s has no VERSION/model.safetensors",
                     path);
            rc = -1;
        }
    }
    closedir(top);
    if (rc == 0 && reg->n == 0) {
        snprintf(msg, msglen, "config: model_repository: %s holds no NAME.safetensors or "
                 "NAME/VERSION/model.safetensors", dir);
        rc = -1;
    }
    if (rc == 0)
        qsort(reg->slots, (size_t)reg->n, sizeof reg->slots[0], slot_cmp);
    return rc;
}

int chex_registry_open(chex_registry **out, const chex_config *cfg, int max_batch, int workers,
                       char *msg, size_t msglen)
{
    *out = NULL;
    if (max_batch < 1 || workers < 1 || workers > CHEX_REGISTRY_MAX_WORKERS) {
        snprintf(msg, msglen, "workers %d, max_batch %d: out of range", workers, max_batch);
        return -1;
    }
    chex_registry *reg = calloc(1, sizeof *reg);
    if (!reg) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    reg->cfg = cfg;
    reg->max_batch = (max_batch + workers - 1) / workers;
    reg->workers = workers;
    pthread_mutex_init(&reg->lock, NULL);
    int repo = cfg->model_repository[0] != '\0';
    if (repo) {
        if (scan_repository(reg, msg, msglen) != 0) {
            chex_registry_free(reg);
            return -1;
        }
    } else {
        /* The single model is named by its file's metadata (below). */
        slot_t *s = &reg->slots[0];
        snprintf(s->path, sizeof s->path, "%s", cfg->model);
        snprintf(s->version, sizeof s->version, "1");
        reg->n = 1;
    }
    for (int i = 0; i < reg->n; i++) /* after the sort: a mutex is not moved */
        pthread_mutex_init(&reg->slots[i].reload_lock, NULL);
    for (int i = 0; i < reg->n; i++) {
        slot_t *s = &reg->slots[i];
        chex_served *sv = served_load(reg, i, s->path, msg, msglen);
        if (!sv) {
            chex_registry_free(reg);
            return -1;
        }
        if (!repo) /* sv->oip.name points at it */
            snprintf(s->name, sizeof s->name, "%s", sv->p.info->name);
        sv->refs = 1;
        s->cur = sv;
    }
    *out = reg;
    return 0;
}

void chex_registry_free(chex_registry *reg)
{
    if (!reg)
        return;
    for (int i = 0; i < reg->n; i++) {
        served_free(reg->slots[i].cur);
        pthread_mutex_destroy(&reg->slots[i].reload_lock);
    }
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

void chex_registry_set_budget(chex_registry *reg, chex_budget *budget)
{
    pthread_mutex_lock(&reg->lock);
    reg->budget = budget;
    pthread_mutex_unlock(&reg->lock);
}

int chex_registry_count(const chex_registry *reg)
{
    return reg->n;
}

int chex_registry_max_batch(const chex_registry *reg)
{
    return reg->max_batch;
}

int chex_registry_workers(const chex_registry *reg)
{
    return reg->workers;
}

const char *chex_registry_name(const chex_registry *reg, int slot)
{
    return reg->slots[slot].name;
}

const char *chex_registry_version(const chex_registry *reg, int slot)
{
    return reg->slots[slot].version;
}

static int seg_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

int chex_registry_find(const chex_registry *reg, const char *name, size_t name_len,
                       const char *version, size_t version_len)
{
    int best = -1;
    if (!name) {
        name = reg->slots[0].name;
        name_len = strlen(name);
        version = NULL;
    }
    for (int i = 0; i < reg->n; i++) {
        const slot_t *s = &reg->slots[i];
        if (!seg_is(name, name_len, s->name))
            continue;
        if (version) {
            if (seg_is(version, version_len, s->version))
                return i;
            continue;
        }
        if (best < 0 || version_cmp(s->version, reg->slots[best].version) > 0)
            best = i;
    }
    return best;
}

chex_served *chex_registry_acquire(chex_registry *reg, int slot)
{
    if (slot < 0 || slot >= reg->n)
        return NULL;
    pthread_mutex_lock(&reg->lock);
    chex_served *sv = reg->slots[slot].cur;
    sv->refs++;
    pthread_mutex_unlock(&reg->lock);
    return sv;
}

/* Lock held: sv's weights are gone; gives back its charge, and hands what
 * was counted at start for it to the charges of the weights in force. */
static void uncharge_locked(chex_registry *reg, const chex_served *sv)
{
    uint64_t back = sv->charged;
    if (sv->charged == 0)
        reg->credit += sv->bytes;
    for (int i = 0; i < reg->n && reg->credit > 0; i++) {
        chex_served *c = reg->slots[i].cur;
        uint64_t x = c->charged < reg->credit ? c->charged : reg->credit;
        c->charged -= x;
        reg->credit -= x;
        back += x;
    }
    if (reg->budget && back)
        chex_budget_release(reg->budget, back);
}

void chex_registry_release(chex_registry *reg, chex_served *sv)
{
    if (!sv)
        return;
    pthread_mutex_lock(&reg->lock);
    int last = --sv->refs == 0;
    if (last)
        uncharge_locked(reg, sv);
    pthread_mutex_unlock(&reg->lock);
    if (last) {
        char n[16];
        snprintf(n, sizeof n, "%s", reg->slots[sv->slot].version);
        chex_log(CHEX_LOG_INFO, "model: old weights freed", "model", reg->slots[sv->slot].name,
                 "version", n, "sha256", sv->p.info->sha256, NULL);
        served_free(sv);
    }
}

static int fail_reload(chex_registry *reg, slot_t *s, char *msg, size_t msglen)
{
    pthread_mutex_lock(&reg->lock);
    snprintf(s->error, sizeof s->error, "%s", msg);
    s->reloading = 0;
    pthread_mutex_unlock(&reg->lock);
    chex_log(CHEX_LOG_ERROR, "model reload failed: keeping the weights in force", "model",
             s->name, "file", s->path, "detail", msg, NULL);
    (void)msglen;
    return -1;
}

int chex_registry_reload(chex_registry *reg, int slot, char *sha256, char *msg, size_t msglen)
{
    if (slot < 0 || slot >= reg->n) {
        snprintf(msg, msglen, "no such model");
        return -1;
    }
    slot_t *s = &reg->slots[slot];
    pthread_mutex_lock(&s->reload_lock);
    pthread_mutex_lock(&reg->lock);
    s->reloading = 1;
    uint64_t est = s->cur->bytes;
    chex_budget *budget = reg->budget;
    pthread_mutex_unlock(&reg->lock);
    /* While loading, the file is mapped and read whole (its checksum). */
    struct stat st;
    if (stat(s->path, &st) == 0 && st.st_size > 0)
        est += (uint64_t)st.st_size;
    int rc = -1;
    if (budget && chex_budget_try_reserve(budget, est) != 0) {
        uint64_t lim = chex_budget_limit(budget), held = chex_budget_reserved(budget);
        snprintf(msg, msglen,
                 "loading %s beside the weights in use needs about %.0f MiB and the memory "
                 "budget (memory_limit_mb %d) has %.0f MiB free now; raise memory_limit_mb or "
                 "retry when fewer requests are in flight",
                 s->path, MIB(est), reg->cfg->memory_limit_mb,
                 MIB(held < lim ? lim - held : 0));
        rc = fail_reload(reg, s, msg, msglen) - 1;
        goto out;
    }
    chex_served *nv = served_load(reg, slot, s->path, msg, msglen);
    if (!nv) {
        if (budget)
            chex_budget_release(budget, est);
        rc = fail_reload(reg, s, msg, msglen);
        goto out;
    }
    /* The mapping is gone: hold exactly what the new weights hold. */
    if (budget) {
        if (nv->bytes > est && chex_budget_try_reserve(budget, nv->bytes - est) != 0) {
            snprintf(msg, msglen,
                     "the weights of %s hold %.0f MiB, more than the memory budget "
                     "(memory_limit_mb %d) has free beside the weights in use",
                     s->path, MIB(nv->bytes), reg->cfg->memory_limit_mb);
            chex_budget_release(budget, est);
            served_free(nv);
            rc = fail_reload(reg, s, msg, msglen) - 1;
            goto out;
        }
        if (nv->bytes < est)
            chex_budget_release(budget, est - nv->bytes);
        nv->charged = nv->bytes;
    }
    nv->refs = 1;
    pthread_mutex_lock(&reg->lock);
    chex_served *old = s->cur;
    s->cur = nv;
    s->reloading = 0;
    s->reloads++;
    s->error[0] = '\0';
    pthread_mutex_unlock(&reg->lock);
    char n[24];
    snprintf(n, sizeof n, "%llu", s->reloads);
    chex_log(CHEX_LOG_INFO, "model reloaded: new requests use the new weights", "model", s->name,
             "file", s->path, "sha256", nv->p.info->sha256, "previous", old->p.info->sha256,
             "reloads", n, NULL);
    if (sha256)
        snprintf(sha256, 65, "%s", nv->p.info->sha256);
    if (slot == 0)
        chex_metrics_model(nv->p.info);
    chex_registry_release(reg, old); /* the slot's reference */
    rc = 0;
out:
    if (rc != 0 && sha256) {
        pthread_mutex_lock(&reg->lock);
        snprintf(sha256, 65, "%s", s->cur->p.info->sha256);
        pthread_mutex_unlock(&reg->lock);
    }
    pthread_mutex_unlock(&s->reload_lock);
    return rc;
}

json_t *chex_registry_list(chex_registry *reg)
{
    json_t *models = json_array();
    if (!models)
        return NULL;
    pthread_mutex_lock(&reg->lock);
    for (int i = 0; i < reg->n; i++) {
        const slot_t *s = &reg->slots[i];
        json_t *entry = NULL;
        for (size_t k = 0; k < json_array_size(models); k++) {
            json_t *e = json_array_get(models, k);
            if (strcmp(json_string_value(json_object_get(e, "name")), s->name) == 0)
                entry = e;
        }
        if (!entry) {
            entry = json_pack("{s:s, s:[]}", "name", s->name, "versions");
            if (!entry || json_array_append_new(models, entry) != 0)
                continue;
        }
        const chex_model_info *in = s->cur->p.info;
        json_t *labels = json_array();
        for (int l = 0; labels && l < in->num_labels; l++)
            json_array_append_new(labels, json_string(in->labels[l]));
        json_t *v = json_pack("{s:s, s:s, s:s, s:o, s:s, s:i, s:i, s:s, s:I, s:o}", "version",
                              s->version, "sha256", in->sha256, "model_name", in->name, "labels",
                              labels ? labels : json_array(), "state",
                              s->reloading ? "reloading" : "ready", "input_channels",
                              in->input_channels, "num_labels", in->num_labels, "preprocess",
                              in->preprocess, "reloads", (json_int_t)s->reloads, "error",
                              s->error[0] ? json_string(s->error) : json_null());
        if (v)
            json_array_append_new(json_object_get(entry, "versions"), v);
    }
    pthread_mutex_unlock(&reg->lock);
    return json_pack("{s:o}", "models", models);
}
