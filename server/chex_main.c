/* server/chex_main.c - bin/chex, the one-shot command line:
 *   chex classify [--model FILE] [--threads N] [--top K] [--threshold P] IMAGE...
 *   chex bench [--model FILE] [--batch N] [--runs R] [--threads T]
 *              [--isa avx512|avx2|generic] [--precision fp32|int8] [--image FILE]
 *   chex calibrate [--model FILE] --out FILE IMAGE...
 *   chex evaluate ...            (site validation, see docs/EVALUATION.md)
 * classify prints one JSON line per image with the daemon's schema (same
 * builder, server/answer.c). Exit: 0 ok, 1 some image failed, 2 usage/model. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>

#include "config/config.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "report/report.h"
#include "preprocessing/preprocess.h"
#include "server/answer.h"
#include "server/heatmap.h"
#include "server/pipeline.h"
#include "tools/eval/evaluate.h"

#ifndef CHEXD_DEFAULT_MODEL
#define CHEXD_DEFAULT_MODEL "models/chexnet-demo.safetensors"
#endif

#define DENSENET121_GFLOP 5.666

static void usage(FILE *out)
{
    fprintf(out,
            "usage: chex COMMAND [OPTIONS]\n"
            "\n"
            "  chex classify [--model FILE] [--threads N] [--top K] [--threshold P]\n"
            "                [--cam LABEL|top [--cam-out DIR]] IMAGE...\n"
            "      Classifies PNG, JPEG or DICOM files; prints one JSON line per image, the\n"
            "      same object chexd answers (plus \"file\"). Any chexd key is accepted as a\n"
            "      flag too (e.g. --png16-scaling full, --max-image-pixels N).\n"
            "      --cam writes the class activation map of LABEL (or of the most probable\n"
            "      label) into DIR (default .): STEM.cam-LABEL.png (gray map) and\n"
            "      STEM.overlay-LABEL.png; the line gains \"cam\": {label, heatmap, overlay}.\n"
            "      --sr DIR (DICOM inputs) writes the result as a DICOM Comprehensive SR,\n"
            "      DIR/STEM.sr.dcm, a new series in the source's study; the line gains\n"
            "      \"sr\": PATH. --sc DIR (with --cam) writes the overlay as a DICOM\n"
            "      Secondary Capture, DIR/STEM.sc-LABEL.dcm (\"sc\": PATH). A PNG/JPEG input\n"
            "      has no study to attach them to: its line is an error (not_dicom).\n"
            "      Exit 0 when every image was classified, 1 when any failed (its line is\n"
            "      an error object), 2 on a usage or model error.\n"
            "  chex bench [--model FILE] [--batch N] [--runs R] [--threads T]\n"
            "             [--isa avx512|avx2|generic] [--precision fp32|int8] [--image FILE]\n"
            "      Times the network on batches of N images (default 1; 3 warm-up runs,\n"
            "      then R timed runs, default 30) and prints one JSON object: batch,\n"
            "      threads, isa, precision, median_ms, p90_ms, images_per_s, gflops,\n"
            "      peak_rss_mb (int8 adds max_prob_diff_fp32: the worst probability\n"
            "      difference to fp32 on the same input). Without --image the input is a\n"
            "      fixed pseudo-random tensor.\n"
            "  chex calibrate [--model FILE] --out FILE IMAGE...\n"
            "      int8 calibration: runs the fp32 network over the images (real\n"
            "      radiographs, PNG/JPEG/DICOM) and writes a copy of the weights file (as\n"
            "      F32) with what precision int8 needs: the largest input value of every\n"
            "      int8 convolution (metadata int8_act_max), and its weights rounded to\n"
            "      int8 by GPTQ over the first 16 crops' activations with per-channel\n"
            "      input scales (tensors <conv>.int8_weight, .int8_scale,\n"
            "      .int8_act_scale). About 10 s for 16 images (tools/calibrate_int8.sh).\n"
            "  chex evaluate ...\n"
            "      Site validation: per-label AUROC on a labelled image set\n"
            "      (chex evaluate --help).\n"
            "  chex --help | --version\n"
            "\n"
            "The default model is %s (demo weights: probabilities mean nothing clinically).\n",
            CHEXD_DEFAULT_MODEL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void new_id(char *out, size_t cap)
{
    unsigned char r[8] = {0};
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        unsigned long long v = (unsigned long long)time(NULL) ^ (unsigned long long)clock();
        memcpy(r, &v, sizeof r);
    }
    snprintf(out, cap, "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5],
             r[6], r[7]);
}

/* Reads a whole file, at most max bytes. Returns 0 or -1 with msg. */
static int read_file(const char *path, uint64_t max, uint8_t **out, size_t *len, char *msg,
                     size_t msglen)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, msglen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap > max) {
                free(buf);
                fclose(f);
                snprintf(msg, msglen, "%s is larger than max_upload_bytes (%llu)", path,
                         (unsigned long long)max);
                return -2;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        snprintf(msg, msglen, "cannot read %s", path);
        return -1;
    }
    if (n > max) {
        free(buf);
        snprintf(msg, msglen, "%s is larger than max_upload_bytes (%llu)", path,
                 (unsigned long long)max);
        return -2;
    }
    *out = buf;
    *len = n;
    return 0;
}

static void print_line(json_t *j, const char *file)
{
    if (j && file)
        json_object_set_new(j, "file", json_string(file));
    char *s = chex_answer_dump(j);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    } else {
        fputs("{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}\n", stdout);
    }
    fflush(stdout);
}

static int load_model(const chex_config *cfg, chex_model **m, chex_pipeline *p)
{
    char msg[1024] = "";
    chex_model_err e = chex_model_load(cfg->model, m, msg, sizeof msg);
    if (e != CHEX_MODEL_OK) {
        fprintf(stderr, "chex: model %s: %s\n", cfg->model, msg[0] ? msg : chex_model_strerror(e));
        return -1;
    }
    if (chex_pipeline_init(p, *m, cfg, msg, sizeof msg) != 0) {
        fprintf(stderr, "chex: model %s: %s\n", cfg->model, msg);
        chex_model_free(*m);
        *m = NULL;
        return -1;
    }
    return 0;
}

/* --key value or --key=value; returns the value or NULL (and prints). */
static const char *opt_value(int argc, char **argv, int *i, char *key, size_t keycap)
{
    const char *a = argv[*i] + 2;
    const char *eq = strchr(a, '=');
    if (eq) {
        snprintf(key, keycap, "%.*s", (int)(eq - a), a);
        return eq + 1;
    }
    snprintf(key, keycap, "%s", a);
    if (*i + 1 >= argc) {
        fprintf(stderr, "chex: flag --%s needs a value\n", key);
        return NULL;
    }
    return argv[++*i];
}

/* A command's arguments: IMAGE operands into files (room for argc), --KEY
 * VALUE for the command's own keys (names[i] -> *vals[i]; a '-' in a name
 * also matches '_'), any other --KEY as a chexd config key into cfg.
 * Returns 0, 1 after --help (usage printed), or 2 after an error (printed). */
static int parse_args(int argc, char **argv, chex_config *cfg, const char *const *names,
                      const char **vals, char **files, int *nfiles)
{
    char msg[1024];
    *nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strncmp(argv[i], "--", 2) != 0 || argv[i][2] == '\0') {
            files[(*nfiles)++] = argv[i];
            continue;
        }
        char key[64], src[80];
        const char *v = opt_value(argc, argv, &i, key, sizeof key);
        if (!v)
            return 2;
        for (char *c = key; *c; c++)
            if (*c == '_')
                *c = '-';
        int k;
        for (k = 0; names && names[k] && strcmp(names[k], key) != 0; k++)
            ;
        if (names && names[k]) {
            vals[k] = v;
            continue;
        }
        snprintf(src, sizeof src, "flag --%s", key);
        if (chex_config_set(cfg, key, v, src, msg, sizeof msg) != CHEX_CONFIG_OK) {
            fprintf(stderr, "chex: %s\n", msg);
            return 2;
        }
    }
    return 0;
}

/* DIR/STEM + suffix, STEM the image's file name without its extension,
 * characters other than letters, digits, '-', '_' and '.' as '_'. */
static int out_path(char *path, size_t cap, const char *dir, const char *image,
                    const char *suffix)
{
    const char *base = strrchr(image, '/');
    base = base ? base + 1 : image;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char stem[256];
    if (n > sizeof stem - 1)
        n = sizeof stem - 1;
    for (size_t i = 0; i < n; i++) {
        char c = base[i];
        stem[i] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_' || c == '.')
                      ? c
                      : '_';
    }
    stem[n] = '\0';
    int w = snprintf(path, cap, "%s/%s%s", dir, stem, suffix);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

/* Writes data to path through a temporary file and rename. */
static int write_whole(const char *path, const uint8_t *data, size_t len, char *msg,
                       size_t msglen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(msg, msglen, "cannot create %.900s: %s", tmp, strerror(errno));
        return -1;
    }
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(msg, msglen, "cannot write %.900s: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

/* A report error as msg; "not_dicom: " starts it when the input is not DICOM. */
static void report_msg(chex_report_err e, const char *what, char *msg, size_t msglen)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", msg);
    if (e == CHEX_REPORT_ERR_NOT_DICOM)
        snprintf(msg, msglen, "not_dicom: %s: %.900s", what, tmp);
    else
        snprintf(msg, msglen, "%s: %.900s", what, tmp);
}

/* classify --sr DIR: the Structured Report of one image. */
static int write_sr(const chex_report_ctx *ctx, const char *dir, const char *image,
                    const uint8_t *buf, size_t len, const float *probs,
                    const chex_answer_opts *opts, char *path, char *msg, size_t msglen)
{
    uint8_t *dcm = NULL;
    size_t dlen = 0;
    chex_report_err e = chex_report_sr(ctx, buf, len, probs, opts->has_threshold,
                                       opts->threshold, &dcm, &dlen, msg, msglen);
    if (e != CHEX_REPORT_OK) {
        report_msg(e, "--sr", msg, msglen);
        return -1;
    }
    int rc = out_path(path, 4096, dir, image, ".sr.dcm");
    if (rc != 0)
        snprintf(msg, msglen, "--sr: path too long");
    else
        rc = write_whole(path, dcm, dlen, msg, msglen);
    free(dcm);
    return rc;
}

/* classify --cam L --sc DIR: the overlay of one image as a Secondary Capture. */
static int write_sc(const chex_report_ctx *ctx, const char *dir, const char *image,
                    const uint8_t *buf, size_t len, const chex_pre_display *img, const float *map,
                    int label, float prob, char *path, char *msg, size_t msglen)
{
    uint8_t *rgb = chex_heatmap_rgb_overlay(img, map, msg, msglen);
    if (!rgb)
        return -1;
    uint8_t *dcm = NULL;
    size_t dlen = 0;
    chex_report_err e = chex_report_sc(ctx, buf, len, rgb, img->width, img->height, label, prob,
                                       &dcm, &dlen, msg, msglen);
    free(rgb);
    if (e != CHEX_REPORT_OK) {
        report_msg(e, "--sc", msg, msglen);
        return -1;
    }
    char suffix[128];
    snprintf(suffix, sizeof suffix, ".sc-%s.dcm", ctx->model->labels[label]);
    for (char *c = suffix; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '-' || *c == '_' || *c == '.'))
            *c = '_';
    int rc = out_path(path, 4096, dir, image, suffix);
    if (rc != 0)
        snprintf(msg, msglen, "--sc: path too long");
    else
        rc = write_whole(path, dcm, dlen, msg, msglen);
    free(dcm);
    return rc;
}

static int cmd_classify(int argc, char **argv)
{
    static chex_config cfg;
    char msg[1024];
    chex_config_defaults(&cfg, CHEXD_DEFAULT_MODEL);
    static const char *const names[] = {"top", "threshold", "cam", "cam-out", "sr", "sc", NULL};
    const char *vals[6] = {NULL, NULL, NULL, ".", NULL, NULL};
    char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    if (!files)
        return 2;
    int rc = parse_args(argc, argv, &cfg, names, vals, files, &nfiles);
    if (rc != 0) {
        free(files);
        return rc == 1 ? 0 : 2;
    }
    const char *top = vals[0], *threshold = vals[1], *cam = vals[2], *cam_out = vals[3];
    const char *sr_dir = vals[4], *sc_dir = vals[5];
    if (sc_dir && !cam) {
        fprintf(stderr, "chex classify: --sc needs --cam LABEL|top (the map to capture)\n");
        free(files);
        return 2;
    }
    if (chex_config_check(&cfg, msg, sizeof msg) != CHEX_CONFIG_OK) {
        fprintf(stderr, "chex: %s\n", msg);
        free(files);
        return 2;
    }
    if (nfiles == 0) {
        fprintf(stderr, "chex classify: no IMAGE given (chex --help)\n");
        free(files);
        return 2;
    }
    chex_model *m = NULL;
    chex_pipeline p;
    if (load_model(&cfg, &m, &p) != 0) {
        free(files);
        return 2;
    }
    chex_answer_opts opts;
    if (chex_answer_opts_parse(&opts, top, threshold, p.info->num_labels, msg, sizeof msg) != 0) {
        fprintf(stderr, "chex: %s\n", msg);
        chex_model_free(m);
        free(files);
        return 2;
    }
    int cam_choice = CHEX_CAM_NONE;
    char lmsg[1536];
    if (cam && chex_heatmap_parse_label(p.info, cam, 1, &cam_choice, lmsg, sizeof lmsg) != 0) {
        fprintf(stderr, "chex: --cam: %s\n", lmsg);
        chex_model_free(m);
        free(files);
        return 2;
    }
    float *cam_raw = cam ? malloc(chex_heatmap_raw_floats(&p) * sizeof(float)) : NULL;
    if (cam && !cam_raw) {
        fprintf(stderr, "chex: out of memory\n");
        chex_model_free(m);
        free(files);
        return 2;
    }
    chex_model_ws *ws = NULL;
    chex_model_err me = chex_pipeline_ws_create(&p, p.ncrops, &ws);
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "chex: model workspace: %s\n", chex_model_strerror(me));
        chex_model_free(m);
        free(files);
        return 2;
    }
    omp_set_num_threads(cfg.threads > 0 ? cfg.threads : omp_get_num_procs());
    int failed = 0;
    float probs[CHEX_MODEL_MAX_LABELS];
    for (int f = 0; f < nfiles; f++) {
        char id[32];
        new_id(id, sizeof id);
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = read_file(files[f], cfg.max_upload_bytes, &buf, &len, msg, sizeof msg);
        if (rc != 0) {
            print_line(chex_answer_error(rc == -2 ? "payload_too_large" : "io_error", msg, id),
                       files[f]);
            failed++;
            continue;
        }
        chex_prepared pp;
        chex_pre_err pe = chex_pipeline_prepare_ex(&p, buf, len, cam != NULL, &pp, msg, sizeof msg);
        if (pe != CHEX_PRE_OK) {
            free(buf);
            print_line(chex_answer_error(chex_answer_pre_code(pe), msg, id), files[f]);
            failed++;
            continue;
        }
        chex_report_ctx rctx = {cfg.uid_root, CHEXD_VERSION, p.info, chex_answer_demo_warning,
                                (long long)time(NULL)};
        chex_prepared *one = &pp;
        me = chex_pipeline_infer(&p, ws, &one, 1, probs);
        if (me != CHEX_MODEL_OK) {
            print_line(chex_answer_error("inference_failed", chex_model_strerror(me), id),
                       files[f]);
            failed++;
        } else {
            json_t *j = chex_answer_image(&p, id, &pp, probs, &opts);
            if (j && cam) {
                /* The map reads the features of this image's forward, still in ws. */
                int label = chex_heatmap_resolve(p.info, cam_choice, probs);
                static char paths[2][4096];
                static char sc_path[4096];
                float *map = NULL;
                int rc = chex_heatmap_take(&p, ws, 0, label, cam_raw, msg, sizeof msg);
                if (rc == 0) {
                    map = chex_heatmap_map(&p, &pp, cam_raw, msg, sizeof msg);
                    rc = map ? chex_heatmap_write_files(cam_out, files[f], p.info->labels[label],
                                                        &pp.display, map, paths, msg, sizeof msg)
                             : -1;
                }
                if (rc == 0 && sc_dir)
                    rc = write_sc(&rctx, sc_dir, files[f], buf, len, &pp.display, map, label,
                                  probs[label], sc_path, msg, sizeof msg);
                free(map);
                if (rc == 0) {
                    json_object_set_new(j, "cam",
                                        json_pack("{s:s, s:s, s:s, s:i, s:i}", "label",
                                                  p.info->labels[label], "heatmap", paths[0],
                                                  "overlay", paths[1], "overlay_width",
                                                  pp.display.width, "overlay_height",
                                                  pp.display.height));
                    if (sc_dir)
                        json_object_set_new(j, "sc", json_string(sc_path));
                } else if (!strncmp(msg, "not_dicom: ", 11)) {
                    json_decref(j);
                    j = chex_answer_error("not_dicom", msg + 11, id);
                    failed++;
                } else {
                    json_decref(j);
                    j = chex_answer_error("cam_failed", msg, id);
                    failed++;
                }
            }
            if (j && sr_dir && !json_object_get(j, "error")) {
                static char sr_path[4096];
                if (write_sr(&rctx, sr_dir, files[f], buf, len, probs, &opts, sr_path, msg,
                             sizeof msg) == 0) {
                    json_object_set_new(j, "sr", json_string(sr_path));
                } else {
                    int nd = !strncmp(msg, "not_dicom: ", 11);
                    json_decref(j);
                    j = chex_answer_error(nd ? "not_dicom" : "sr_failed", msg + (nd ? 11 : 0), id);
                    failed++;
                }
            }
            print_line(j, files[f]);
        }
        free(buf);
        chex_pipeline_prepared_free(&pp);
    }
    chex_model_ws_free(ws);
    chex_model_free(m);
    free(cam_raw);
    free(files);
    return failed ? 1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_bench(int argc, char **argv)
{
    static chex_config cfg;
    char msg[1024];
    chex_config_defaults(&cfg, CHEXD_DEFAULT_MODEL);
    int batch = 1, runs = 30, threads = 0;
    const char *isa = NULL, *precision = "fp32", *image = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            fprintf(stderr, "chex bench: unexpected argument %s\n", argv[i]);
            return 2;
        }
        char key[64];
        const char *v = opt_value(argc, argv, &i, key, sizeof key);
        if (!v)
            return 2;
        char *end = NULL;
        if (strcmp(key, "batch") == 0 || strcmp(key, "runs") == 0 || strcmp(key, "threads") == 0) {
            long n = strtol(v, &end, 10);
            long lo = strcmp(key, "threads") == 0 ? 0 : 1;
            if (end == v || *end != '\0' || n < lo || n > 100000) {
                fprintf(stderr, "chex bench: flag --%s: \"%s\" is not an integer >= %ld\n", key, v,
                        lo);
                return 2;
            }
            if (key[0] == 'b')
                batch = (int)n;
            else if (key[0] == 'r')
                runs = (int)n;
            else
                threads = (int)n;
        } else if (strcmp(key, "isa") == 0) {
            if (strcmp(v, "avx512") != 0 && strcmp(v, "avx2") != 0 && strcmp(v, "generic") != 0) {
                fprintf(stderr, "chex bench: flag --isa: \"%s\" is not avx512, avx2 or generic\n",
                        v);
                return 2;
            }
            isa = v;
        } else if (strcmp(key, "precision") == 0) {
            if (chex_config_set(&cfg, "precision", v, "flag --precision", msg, sizeof msg) !=
                CHEX_CONFIG_OK) {
                fprintf(stderr, "chex bench: %s\n", msg);
                return 2;
            }
            precision = v;
        } else if (strcmp(key, "image") == 0) {
            image = v;
        } else if (strcmp(key, "model") == 0) {
            if (chex_config_set(&cfg, "model", v, "flag --model", msg, sizeof msg) !=
                CHEX_CONFIG_OK) {
                fprintf(stderr, "chex: %s\n", msg);
                return 2;
            }
        } else {
            fprintf(stderr, "chex bench: unknown flag --%s (chex --help)\n", key);
            return 2;
        }
    }
    /* model/ picks its kernels from CHEXD_ISA at first use; set_isa also
     * checks that this CPU has it. */
    if (isa) {
        setenv("CHEXD_ISA", isa, 1);
        if (chex_model_set_isa(isa) != CHEX_MODEL_OK) {
            fprintf(stderr, "chex bench: flag --isa: %s is not supported by this CPU\n", isa);
            return 2;
        }
    }
    chex_model *m = NULL;
    chex_pipeline p;
    if (load_model(&cfg, &m, &p) != 0)
        return 2;
    int tensors = batch * p.ncrops;
    chex_model_ws *ws = NULL;
    chex_model_err me = chex_pipeline_ws_create(&p, tensors, &ws);
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "chex bench: workspace for %d tensors: %s\n", tensors,
                chex_model_strerror(me));
        chex_model_free(m);
        return 2;
    }
    size_t per = chex_pipeline_tensor_floats(&p);
    float *in = malloc((size_t)tensors * per * sizeof(float));
    float *probs = malloc((size_t)tensors * (size_t)p.info->num_labels * sizeof(float));
    double *ms = malloc((size_t)runs * sizeof(double));
    if (!in || !probs || !ms) {
        fprintf(stderr, "chex bench: out of memory\n");
        free(in);
        free(probs);
        free(ms);
        chex_model_ws_free(ws);
        chex_model_free(m);
        return 2;
    }
    if (image) {
        uint8_t *buf = NULL;
        size_t len = 0;
        chex_prepared pp;
        if (read_file(image, cfg.max_upload_bytes, &buf, &len, msg, sizeof msg) != 0 ||
            chex_pipeline_prepare(&p, buf, len, &pp, msg, sizeof msg) != CHEX_PRE_OK) {
            fprintf(stderr, "chex bench: %s: %s\n", image, msg);
            free(buf);
            free(in);
            free(probs);
            free(ms);
            chex_model_ws_free(ws);
            chex_model_free(m);
            return 2;
        }
        free(buf);
        for (int b = 0; b < batch; b++)
            memcpy(in + (size_t)b * p.ncrops * per, pp.tensor, (size_t)p.ncrops * per * sizeof(float));
        chex_pipeline_prepared_free(&pp);
    } else {
        uint32_t s = 12345u;
        for (size_t i = 0; i < (size_t)tensors * per; i++) {
            s = s * 1664525u + 1013904223u;
            in[i] = ((float)(s >> 8) / 16777216.0f) * 4.0f - 2.0f;
        }
    }
    if (threads == 0)
        threads = cfg.threads > 0 ? cfg.threads : omp_get_num_procs();
    omp_set_num_threads(threads);
    for (int w = 0; w < 3 && me == CHEX_MODEL_OK; w++)
        me = chex_model_forward(m, ws, in, tensors, NULL, probs);
    for (int r = 0; r < runs && me == CHEX_MODEL_OK; r++) {
        double t0 = now_ms();
        me = chex_model_forward(m, ws, in, tensors, NULL, probs);
        ms[r] = now_ms() - t0;
    }
    /* Peak RSS of the timed configuration, before the comparison below
     * allocates a second (fp32) workspace. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* int8: the worst probability difference to fp32 on the same input. */
    double maxdiff = -1.0;
    if (me == CHEX_MODEL_OK && strcmp(precision, "int8") == 0) {
        chex_model_ws *ws32 = NULL;
        const size_t np = (size_t)tensors * (size_t)p.info->num_labels;
        float *p32 = malloc(np * sizeof(float));
        me = p32 ? chex_model_ws_create(m, tensors, &ws32) : CHEX_MODEL_ERR_NOMEM;
        if (me == CHEX_MODEL_OK)
            me = chex_model_forward(m, ws32, in, tensors, NULL, p32);
        for (size_t i = 0; me == CHEX_MODEL_OK && i < np; i++)
            maxdiff = fmax(maxdiff, fabs((double)probs[i] - p32[i]));
        chex_model_ws_free(ws32);
        free(p32);
    }
    if (me != CHEX_MODEL_OK) {
        fprintf(stderr, "chex bench: forward: %s\n", chex_model_strerror(me));
    } else {
        qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
        double med = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
        int i90 = (int)ceil(0.9 * runs) - 1;
        double p90 = ms[i90 < 0 ? 0 : i90];
        const char *isa_used = chex_model_isa();
        double ips = batch / (med / 1e3);
        double gflop = chex_model_flops_per_image(m) / 1e9;
        if (!(gflop > 0.0))
            gflop = DENSENET121_GFLOP;
        printf("{\"batch\":%d,\"threads\":%d,\"isa\":\"%s\",\"precision\":\"%s\","
               "\"median_ms\":%.3f,\"p90_ms\":%.3f,\"images_per_s\":%.3f,\"gflops\":%.2f,"
               "\"peak_rss_mb\":%.1f",
               batch, threads, isa_used, precision, med, p90, ips, gflop * p.ncrops * ips,
               (double)ru.ru_maxrss / 1024.0);
        if (maxdiff >= 0.0)
            printf(",\"max_prob_diff_fp32\":%.6f", maxdiff);
        printf("}\n");
    }
    free(in);
    free(probs);
    free(ms);
    chex_model_ws_free(ws);
    chex_model_free(m);
    return me == CHEX_MODEL_OK ? 0 : 1;
}

/* Crops whose activations steer the weight rounding (about 6 MB each);
 * the activation ranges come from every image. */
#define CALIB_KEEP 16

/* chex calibrate: a copy of the weights file with the int8 calibration: the
 * metadata keys CHEX_MODEL_INT8_KEY and int8_calibration, and per quantised
 * conv its GPTQ-rounded weights (<conv>.int8_weight, I8), their scales
 * (.int8_scale) and its input's per-channel scales (.int8_act_scale). The
 * input's tensors are kept (as F32), earlier int8 tensors replaced. */
static int write_calibrated(const char *in_path, const char *out_path, const chex_model *m,
                            const chex_model_calib *cal, int nimages, int ncrops, char *msg,
                            size_t msglen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (read_file(in_path, (uint64_t)1 << 34, &buf, &len, msg, msglen) != 0)
        return -1;
    chex_st_file f;
    memset(&f, 0, sizeof f);
    int rc = -1, nt = 0;
    const int nq = chex_model_qconv_count(m);
    chex_st_wtensor *wt = NULL;
    const char **kv = NULL;
    char *scales = NULL, info[200], (*qnames)[128] = NULL;
    json_t *o = json_object();
    if (chex_st_parse(buf, len, &f, msg, msglen) != CHEX_MODEL_OK)
        goto out;
    wt = calloc((size_t)f.ntensors + 3 * (size_t)nq, sizeof *wt);
    kv = calloc(2 * (size_t)f.nmeta + 5, sizeof *kv);
    qnames = calloc(3 * (size_t)nq, sizeof *qnames);
    if (!wt || !kv || !o || !qnames)
        goto nomem;
    char name[96];
    for (int i = 0; i < nq; i++) {
        chex_model_qconv_calib q;
        chex_model_calib_get(cal, i, &q);
        chex_model_qconv_name(m, i, name, sizeof name);
        if (json_object_set_new(o, name, json_real(q.act_max)))
            goto nomem;
        for (int s = 0; s < 3; s++)
            chex_model_int8_tensor_name(m, i, s, qnames[3 * i + s], sizeof qnames[0]);
    }
    scales = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!scales)
        goto nomem;
    snprintf(info, sizeof info,
             "{\"method\":\"max per channel, gptq weights\",\"images\":%d,\"gptq_crops\":%d,"
             "\"fp32_path\":\"%s\"}",
             nimages, ncrops, chex_model_calib_path(cal));
    int nk = 0;
    for (int i = 0; i < f.nmeta; i++) {
        if (!strcmp(f.meta[i].key, CHEX_MODEL_INT8_KEY) || !strcmp(f.meta[i].key, "int8_calibration"))
            continue;
        kv[nk++] = f.meta[i].key;
        kv[nk++] = f.meta[i].value;
    }
    kv[nk++] = CHEX_MODEL_INT8_KEY;
    kv[nk++] = scales;
    kv[nk++] = "int8_calibration";
    kv[nk++] = info;
    kv[nk] = NULL;
    for (int i = 0; i < f.ntensors; i++) {
        const chex_st_tensor *t = &f.tensors[i];
        if (chex_model_is_int8_tensor(t->name))
            continue; /* an earlier calibration's */
        float *d = malloc(sizeof(float) * (size_t)(chex_st_numel(t) ? chex_st_numel(t) : 1));
        if (!d)
            goto nomem;
        chex_st_to_f32(&f, t, d);
        wt[nt].name = t->name;
        wt[nt].ndim = t->ndim;
        memcpy(wt[nt].shape, t->shape, sizeof t->shape);
        wt[nt++].data = d;
    }
    const int nown = nt;
    for (int i = 0; i < nq; i++) {
        chex_model_qconv_calib q;
        chex_model_calib_get(cal, i, &q);
        const int kk = q.taps == 9 ? 3 : 1;
        wt[nt++] = (chex_st_wtensor){.name = qnames[3 * i], .ndim = 4,
                                     .shape = {q.m, q.c, kk, kk}, .dtype = CHEX_ST_I8,
                                     .i8 = q.w};
        wt[nt++] = (chex_st_wtensor){.name = qnames[3 * i + 1], .ndim = 1, .shape = {q.m},
                                     .data = q.w_scale};
        wt[nt++] = (chex_st_wtensor){.name = qnames[3 * i + 2], .ndim = 1, .shape = {q.c},
                                     .data = q.act_scale};
    }
    if (chex_st_write(out_path, wt, nt, kv, msg, msglen) == CHEX_MODEL_OK)
        rc = 0;
    for (int i = nown; i < nt; i++)
        wt[i].data = NULL; /* borrowed from cal */
    goto out;
nomem:
    snprintf(msg, msglen, "out of memory");
out:
    if (wt)
        for (int i = 0; i < nt; i++)
            free((void *)wt[i].data);
    free(wt);
    free(kv);
    free(qnames);
    free(scales);
    json_decref(o);
    chex_st_free(&f);
    free(buf);
    return rc;
}

static int cmd_calibrate(int argc, char **argv)
{
    static chex_config cfg;
    char msg[1024];
    chex_config_defaults(&cfg, CHEXD_DEFAULT_MODEL);
    static const char *const names[] = {"out", NULL};
    const char *vals[1] = {NULL};
    char **files = calloc((size_t)argc, sizeof *files);
    int nfiles = 0;
    if (!files)
        return 2;
    int prc = parse_args(argc, argv, &cfg, names, vals, files, &nfiles);
    if (prc != 0) {
        free(files);
        return prc == 1 ? 0 : 2;
    }
    const char *out_path = vals[0];
    if (!out_path || nfiles == 0) {
        fprintf(stderr, "chex calibrate: %s (chex --help)\n",
                !out_path ? "--out FILE is required" : "no IMAGE given");
        free(files);
        return 2;
    }
    /* Calibration runs the fp32 network whatever precision says. */
    snprintf(cfg.precision, sizeof cfg.precision, "fp32");
    chex_model *m = NULL;
    chex_pipeline p;
    if (load_model(&cfg, &m, &p) != 0) {
        free(files);
        return 2;
    }
    chex_model_ws *ws = NULL;
    chex_model_calib *cal = NULL;
    if (chex_model_calib_create(m, CALIB_KEEP, &cal) != CHEX_MODEL_OK ||
        chex_pipeline_ws_create(&p, p.ncrops, &ws) != CHEX_MODEL_OK) {
        fprintf(stderr, "chex calibrate: out of memory\n");
        chex_model_calib_free(cal);
        chex_model_free(m);
        free(files);
        return 2;
    }
    omp_set_num_threads(cfg.threads > 0 ? cfg.threads : omp_get_num_procs());
    int rc = 0;
    for (int i = 0; i < nfiles && rc == 0; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        chex_prepared pp;
        if (read_file(files[i], cfg.max_upload_bytes, &buf, &len, msg, sizeof msg) != 0 ||
            chex_pipeline_prepare(&p, buf, len, &pp, msg, sizeof msg) != CHEX_PRE_OK) {
            fprintf(stderr, "chex calibrate: %s: %s\n", files[i], msg);
            rc = 1;
        } else {
            chex_model_err me = chex_model_calib_add(cal, ws, pp.tensor, pp.ncrops);
            if (me != CHEX_MODEL_OK) {
                fprintf(stderr, "chex calibrate: %s: %s\n", files[i], chex_model_strerror(me));
                rc = 1;
            }
            chex_pipeline_prepared_free(&pp);
        }
        free(buf);
    }
    if (rc == 0 && chex_model_calib_finish(cal, msg, sizeof msg) != CHEX_MODEL_OK) {
        fprintf(stderr, "chex calibrate: %s\n", msg);
        rc = 1;
    }
    const int kept = nfiles * p.ncrops < CALIB_KEEP ? nfiles * p.ncrops : CALIB_KEEP;
    if (rc == 0 && write_calibrated(cfg.model, out_path, m, cal, nfiles, kept, msg,
                                    sizeof msg) != 0) {
        fprintf(stderr, "chex calibrate: %s\n", msg);
        rc = 1;
    }
    if (rc == 0)
        fprintf(stderr, "chex calibrate: %d images, %d int8 convolutions calibrated, wrote %s\n",
                nfiles, chex_model_qconv_count(m), out_path);
    chex_model_calib_free(cal);
    chex_model_ws_free(ws);
    chex_model_free(m);
    free(files);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        chex_pre_decoder_versions dv;
        chex_pre_get_decoder_versions(&dv);
        printf("chex %s (OpenJPEG %s, CharLS %s)\n", CHEXD_VERSION, dv.openjpeg, dv.charls);
        return 0;
    }
    if (strcmp(cmd, "classify") == 0)
        return cmd_classify(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0)
        return cmd_calibrate(argc - 1, argv + 1);
    if (strcmp(cmd, "evaluate") == 0)
        return chex_eval_main(argc - 1, argv + 1);
    fprintf(stderr, "chex: unknown command \"%s\" (chex --help)\n", cmd);
    return 2;
}
