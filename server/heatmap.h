/* server/heatmap.h - class activation maps as images: which label a request
 * asks for, the map at the original image's size (model/cam.h), the grayscale
 * 8-bit PNG of it, the colour overlay PNG (the radiograph in gray with the
 * inferno colour map blended on top), base64 and the "cam" JSON object.
 * Shared by bin/chexd (/v1/predict?cam=, /v1/explain) and bin/chex
 * (classify --cam).
 *
 * All functions are reentrant. Returned buffers are malloc'd; the caller frees
 * them. Errors return -1 (or NULL) with one line in msg.
 */
#ifndef CHEX_HEATMAP_H
#define CHEX_HEATMAP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "server/pipeline.h"

/* Label choice of a request. */
#define CHEX_CAM_NONE (-1) /* no map asked for */
#define CHEX_CAM_TOP (-2)  /* the label with the highest probability */

/* Parses a label name (exact, else case-insensitive; '_' and ' ' match each
 * other) or, when allow_top, "top". *label receives the index or CHEX_CAM_TOP.
 * On failure msg names the value and lists the valid labels; a label the
 * model was not trained on (chex_model_info.untrained) is refused by name. */
int chex_heatmap_parse_label(const chex_model_info *in, const char *s, int allow_top, int *label,
                             char *msg, size_t msglen);

/* The label index for a choice: CHEX_CAM_TOP -> argmax of probs
 * (num_labels) over the labels the model was trained on. */
int chex_heatmap_resolve(const chex_model_info *in, int choice, const float *probs);

/* Floats of the raw maps one prepared image needs: ncrops * cells, where
 * cells = h*w of the final feature map for the model's input size. */
size_t chex_heatmap_raw_floats(const chex_pipeline *p);

/* Raw maps (ncrops, h, w) of label for the image whose tensors are
 * first .. first+ncrops-1 of the last forward on ws. */
int chex_heatmap_take(const chex_pipeline *p, const chex_model_ws *ws, int first, int label,
                      float *raw, char *msg, size_t msglen);

/* The normalised map (pp->display.height, pp->display.width) from its raw
 * maps (chex_heatmap_take): the original image's size, or scaled so that its
 * longer side is max_overlay_side. NULL with msg on error. */
float *chex_heatmap_map(const chex_pipeline *p, const chex_prepared *pp, const float *raw,
                        char *msg, size_t msglen);

/* Grayscale 8-bit PNG of a [0,1] map (w x h): round(255 * v). */
int chex_heatmap_png_gray(const float *map, int w, int h, uint8_t **png, size_t *len, char *msg,
                          size_t msglen);

/* RGB PNG at the display copy's size: gray radiograph (luminance for colour
 * images) blended with inferno(map) with opacity 0.2 + 0.45 * map, so cold
 * regions keep the radiograph readable and hot ones stand out. img->pix is
 * needed (chex_pipeline_prepare_ex with want_display); map is the same size. */
int chex_heatmap_png_overlay(const chex_pre_display *img, const float *map, uint8_t **png,
                             size_t *len, char *msg, size_t msglen);

/* The overlay's pixels, what chex_heatmap_png_overlay encodes: height rows of
 * width * 3 bytes (RGB interleaved), malloc'd, the caller frees. NULL with msg
 * on error. (For the DICOM Secondary Capture, report/report.h.) */
uint8_t *chex_heatmap_rgb_overlay(const chex_pre_display *img, const float *map, char *msg,
                                  size_t msglen);

/* inferno (matplotlib's perceptually uniform map), 256 entries. */
extern const uint8_t chex_heatmap_inferno[256][3];

/* Standard base64 (RFC 4648, padded), NUL-terminated. NULL on ENOMEM. */
char *chex_heatmap_base64(const uint8_t *data, size_t len);

/* {"label", "width", "height", "overlay_width", "overlay_height", "png_base64"}:
 * width/height are the original image's, overlay_* the size the PNG was
 * drawn at. New reference, NULL on ENOMEM. */
json_t *chex_heatmap_json(const char *label, int width, int height, int overlay_width,
                          int overlay_height, const uint8_t *png, size_t len);

/* bin/chex classify --cam: writes DIR/STEM.cam-LABEL.png (gray map) and
 * DIR/STEM.overlay-LABEL.png (overlay), each through a temporary file and
 * rename. STEM is the image's file name without its extension; characters
 * other than letters, digits, '-', '_' and '.' become '_'. When paths is not
 * NULL it receives the two file names. */
int chex_heatmap_write_files(const char *dir, const char *image_path, const char *label,
                             const chex_pre_display *img, const float *map,
                             char paths[2][4096], char *msg, size_t msglen);

#endif
