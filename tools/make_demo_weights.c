/* tools/make_demo_weights.c - writes deterministic demo weights for a
 * torchvision densenet121 with a 14-label classifier (CheXNet layout).
 *
 * No trained weights can be downloaded here, so the default model is built from
 * a fixed-seed PRNG: the same bytes on every run. Tensor names are exactly
 * torchvision's state_dict names minus num_batches_tracked, so PyTorch loads the
 * file with load_state_dict(strict=True) and can check our forward pass.
 *
 * Usage: make_demo_weights OUT.safetensors
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

#define GROWTH 32
#define BN_SIZE 4
#define INIT_FEATURES 64
#define NUM_CLASSES 14
#define MAX_TENSORS 1024

static const int block_layers[4] = {6, 12, 24, 16};

static const char *const labels_json =
    "[\"Atelectasis\",\"Cardiomegaly\",\"Effusion\",\"Infiltration\",\"Mass\",\"Nodule\","
    "\"Pneumonia\",\"Pneumothorax\",\"Consolidation\",\"Edema\",\"Emphysema\",\"Fibrosis\","
    "\"Pleural_Thickening\",\"Hernia\"]";

/* ---- deterministic random numbers: splitmix64 + Box-Muller ---- */

static uint64_t rng_state = 0x43484558u; /* "CHEX" */

static uint64_t splitmix64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double uniform01(void)
{
    return (double)((splitmix64() >> 11) + 1) * (1.0 / 9007199254740992.0);
}

static double normal(double mean, double std)
{
    double u1 = uniform01(), u2 = uniform01();
    return mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static double uniform(double lo, double hi)
{
    return lo + (hi - lo) * uniform01();
}

/* ---- tensor table ---- */

typedef struct {
    char name[CHEX_ST_NAME_LEN];
    chex_st_wtensor w;
    float *data;
} tensor;

static tensor tensors[MAX_TENSORS];
static int ntensors;

static tensor *add(const char *name, int ndim, const int64_t *shape)
{
    if (ntensors == MAX_TENSORS) {
        fprintf(stderr, "make_demo_weights: too many tensors\n");
        return NULL;
    }
    tensor *t = &tensors[ntensors];
    size_t n = 1;
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->w.name = t->name;
    t->w.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t->w.shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    t->data = malloc(n * sizeof(float));
    if (!t->data) {
        fprintf(stderr, "make_demo_weights: out of memory for %s\n", name);
        return NULL;
    }
    t->w.data = t->data;
    ntensors++;
    return t;
}

/* Conv weight (out, in, k, k), Kaiming-normal: std sqrt(2 / fan_in). */
static int add_conv(const char *name, int64_t cout, int64_t cin, int64_t k)
{
    int64_t shape[4] = {cout, cin, k, k};
    tensor *t = add(name, 4, shape);
    if (!t)
        return -1;
    double std = sqrt(2.0 / (double)(cin * k * k));
    for (int64_t i = 0; i < cout * cin * k * k; i++)
        t->data[i] = (float)normal(0.0, std);
    return 0;
}

/* BatchNorm with every statistic randomised so that it is not the identity. */
static int add_bn(const char *prefix, int64_t c)
{
    static const char *const part[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int p = 0; p < 4; p++) {
        char name[CHEX_ST_NAME_LEN];
        snprintf(name, sizeof(name), "%s.%s", prefix, part[p]);
        tensor *t = add(name, 1, &c);
        if (!t)
            return -1;
        for (int64_t i = 0; i < c; i++) {
            double v = p == 0   ? uniform(0.7, 1.3)
                       : p == 1 ? normal(0.0, 0.1)
                       : p == 2 ? normal(0.0, 0.1)
                                : uniform(0.6, 1.4);
            t->data[i] = (float)v;
        }
    }
    return 0;
}

static int build(void)
{
    char name[CHEX_ST_NAME_LEN];
    int64_t nf = INIT_FEATURES;
    if (add_conv("features.conv0.weight", nf, 3, 7) || add_bn("features.norm0", nf))
        return -1;
    for (int b = 0; b < 4; b++) {
        for (int l = 0; l < block_layers[b]; l++) {
            int64_t cin = nf + (int64_t)l * GROWTH;
            char pre[96];
            snprintf(pre, sizeof(pre), "features.denseblock%d.denselayer%d", b + 1, l + 1);
            snprintf(name, sizeof(name), "%s.norm1", pre);
            if (add_bn(name, cin))
                return -1;
            snprintf(name, sizeof(name), "%s.conv1.weight", pre);
            if (add_conv(name, BN_SIZE * GROWTH, cin, 1))
                return -1;
            snprintf(name, sizeof(name), "%s.norm2", pre);
            if (add_bn(name, BN_SIZE * GROWTH))
                return -1;
            snprintf(name, sizeof(name), "%s.conv2.weight", pre);
            if (add_conv(name, GROWTH, BN_SIZE * GROWTH, 3))
                return -1;
        }
        nf += (int64_t)block_layers[b] * GROWTH;
        if (b != 3) {
            snprintf(name, sizeof(name), "features.transition%d.norm", b + 1);
            if (add_bn(name, nf))
                return -1;
            snprintf(name, sizeof(name), "features.transition%d.conv.weight", b + 1);
            if (add_conv(name, nf / 2, nf, 1)) /* compression 0.5 */
                return -1;
            nf /= 2;
        }
    }
    if (add_bn("features.norm5", nf))
        return -1;

    /* Small classifier: pooled features are around 1.6 +- 2.2 (measured in
     * PyTorch on N(0,1) inputs), so std 0.5/sqrt(C) keeps logits within a few
     * units and the sigmoids are not saturated. */
    int64_t cw[2] = {NUM_CLASSES, nf}, cb = NUM_CLASSES;
    tensor *w = add("classifier.weight", 2, cw);
    if (!w)
        return -1;
    double std = 0.5 / sqrt((double)nf);
    for (int64_t i = 0; i < NUM_CLASSES * nf; i++)
        w->data[i] = (float)normal(0.0, std);
    tensor *bias = add("classifier.bias", 1, &cb);
    if (!bias)
        return -1;
    for (int i = 0; i < NUM_CLASSES; i++)
        bias->data[i] = (float)normal(0.0, 0.1);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.safetensors\n", argv[0]);
        return 2;
    }
    int rc = 1;
    chex_st_wtensor *wt = NULL;
    if (build() != 0)
        goto out;
    wt = malloc((size_t)ntensors * sizeof(*wt));
    if (!wt) {
        fprintf(stderr, "make_demo_weights: out of memory\n");
        goto out;
    }
    for (int i = 0; i < ntensors; i++)
        wt[i] = tensors[i].w;

    const char *const meta[] = {
        "name", "chexnet-demo",
        "demo", "true",
        "architecture", "densenet121",
        "labels", labels_json,
        "input_channels", "3",
        "input_size", "224",
        "normalization", "{\"mean\":[0.485,0.456,0.406],\"std\":[0.229,0.224,0.225]}",
        "preprocess", "resize256-crop224",
        "description",
        "Demo weights: DenseNet-121 with fixed-seed random parameters, not trained on any "
        "data. Its probabilities have no clinical meaning.",
        NULL,
    };
    char msg[256];
    chex_model_err e = chex_st_write(argv[1], wt, ntensors, meta, msg, sizeof(msg));
    if (e != CHEX_MODEL_OK) {
        fprintf(stderr, "make_demo_weights: %s: %s (%s)\n", argv[1], msg,
                chex_model_strerror(e));
        goto out;
    }
    rc = 0;
out:
    free(wt);
    for (int i = 0; i < ntensors; i++)
        free(tensors[i].data);
    return rc;
}
