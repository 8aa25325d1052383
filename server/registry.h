/* server/registry.h - the models chexd serves and their weights in force.
 *
 * One slot per served model version: the `model` file (one slot, named by
 * the file's metadata, version "1"), or each model of `model_repository`
 * (NAME/VERSION/model.safetensors, NAME.safetensors as version "1"), sorted
 * by name and version. Models share the cores and the memory budget; each
 * version has a workspace per inference worker. Each slot holds the loaded weights now
 * in force (a chex_served: model, pipeline, workspace). A reload loads the
 * slot's file again beside the weights in use, switches once the loader's
 * checks pass, and the old weights are freed when the last request holding
 * them is released (reference count): no request is dropped and each runs
 * on the weights it acquired. A file that fails leaves the old weights
 * serving; the error is kept for GET /v1/models.
 *
 * Memory: the weights loaded at start are part of what the daemon measures
 * as resident at start. A reload reserves the second copy (its workspace and,
 * while loading, the file's mapping) in the memory budget first and is
 * refused when it does not fit; the reservation goes back once the old
 * weights are freed.
 *
 * Threads: every function is thread-safe. A chex_served returned by
 * chex_registry_acquire stays valid and unchanged until the matching
 * chex_registry_release. Its ws[w] and batch[w] are used by inference worker
 * w only. */
#ifndef CHEX_REGISTRY_H
#define CHEX_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "model/model.h"
#include "server/budget.h"
#include "server/oip.h"
#include "server/pipeline.h"

/* Most inference workers (config key workers). */
#define CHEX_REGISTRY_MAX_WORKERS 64

typedef struct {
    chex_model *model;             /* owned */
    chex_pipeline p;               /* p.model is model */
    int nworkers;
    chex_model_ws *ws[CHEX_REGISTRY_MAX_WORKERS]; /* one per worker, for its batch */
    chex_pipeline_batch batch[CHEX_REGISTRY_MAX_WORKERS]; /* the same */
    chex_oip_model oip;            /* as the Open Inference Protocol shows it */
    const char *oip_labels[CHEX_MODEL_MAX_LABELS];
    int slot;                      /* index in the registry */
    uint64_t bytes;                /* weights, workspace and batch buffers */
    uint64_t charged;              /* of bytes, reserved in the budget (0: counted at start) */
    int refs;                      /* under the registry's lock */
} chex_served;

typedef struct chex_registry chex_registry;

/* Loads what cfg serves (cfg->model_repository when set, else cfg->model)
 * with, for each of workers (1..CHEX_REGISTRY_MAX_WORKERS) inference
 * workers, a workspace for its share of max_batch images: ceil(max_batch /
 * workers). cfg is borrowed and must outlive the registry. Returns 0, or -1
 * with one line in msg naming the file. */
int chex_registry_open(chex_registry **out, const chex_config *cfg, int max_batch, int workers,
                       char *msg, size_t msglen);

/* Frees the registry and the weights in force; every acquired chex_served
 * must have been released. */
void chex_registry_free(chex_registry *reg);

/* Requests' memory budget, used by reloads (NULL: no accounting). */
void chex_registry_set_budget(chex_registry *reg, chex_budget *budget);

int chex_registry_count(const chex_registry *reg);
/* The images one worker's workspace holds: ceil(max_batch / workers). */
int chex_registry_max_batch(const chex_registry *reg);
int chex_registry_workers(const chex_registry *reg);
/* The slot's name and version (static for the registry's life). */
const char *chex_registry_name(const chex_registry *reg, int slot);
const char *chex_registry_version(const chex_registry *reg, int slot);

/* The slot serving name[0..name_len), version[0..version_len) (version NULL:
 * the newest version of that name; name NULL: the newest version of the
 * first name, the default of /v1 routes). -1 when none. */
int chex_registry_find(const chex_registry *reg, const char *name, size_t name_len,
                       const char *version, size_t version_len);

/* The weights in force for slot, held until chex_registry_release. */
chex_served *chex_registry_acquire(chex_registry *reg, int slot);
void chex_registry_release(chex_registry *reg, chex_served *sv);

/* Reloads slot's file (see above). Returns 0 when the new weights are in
 * force; when the old ones stay, -1 (the file failed the loader's checks) or
 * -2 (the memory budget has no room for the second copy now), with the
 * reason in msg (also kept for
 * chex_registry_list and cleared by the next successful reload). Reloads of
 * one slot are serialised. *sha256 (65 bytes, may be NULL) gets the digest in
 * force afterwards. */
int chex_registry_reload(chex_registry *reg, int slot, char *sha256, char *msg, size_t msglen);

/* GET /v1/models: {"models": [{name, versions: [{version, sha256, labels,
 * state, reloads, error}]}]}. NULL on ENOMEM. */
json_t *chex_registry_list(chex_registry *reg);

#endif
