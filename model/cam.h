/* model/cam.h - class activation maps (CAM, Zhou et al. 2016; CheXNet's heat maps).
 *
 * For label c and one input tensor, the map is
 *     cam[y][x] = sum_k w[c][k] * F[k][y][x]
 * with F the final (1024, h, w) feature map (relu(norm5), h = w = S/32, see
 * chex_model_ws_features) and w the classifier's weight row. The classifier
 * bias is left out: it shifts every cell by the same amount and disappears
 * under the min-max normalisation. Computing it is one pass over the h x w
 * maps already in the workspace: no second forward.
 *
 * Geometry. A map of a (S, S) input tensor is upsampled to (S, S) with
 * bilinear interpolation, align_corners=False (as torch's
 * F.interpolate(mode='bilinear', align_corners=False)), then placed back onto
 * the original image: each tensor came from a box of the original image
 * (chex_cam_box, the same numbers as preprocessing's chex_pre_crop), so an
 * original pixel centre (X+0.5, Y+0.5) inside a box reads the (S, S) map
 * bilinearly at u = (X+0.5-x0) * S/(x1-x0) - 0.5 (mirrored, u -> S-1-u, for a
 * flipped box), v likewise.
 *  - Several boxes (tencrop): a pixel gets the mean of the maps of every box
 *    that contains it, flipped boxes mirrored back first, so all ten crops
 *    count where they overlap.
 *  - Outside every box (the margins a centre crop cut away): the value of the
 *    nearest box's edge (coordinates clamped into it: "extend edge"), so the
 *    map has no artificial cold frame.
 * The result is min-max normalised to [0, 1] over the whole image; a constant
 * map becomes all zeros.
 *
 * No function here keeps state; all are reentrant. Only chex_cam_project and
 * chex_cam_map allocate (scratch freed before they return).
 */
#ifndef CHEX_CAM_H
#define CHEX_CAM_H

#include <stddef.h>

#include "model/model.h"

/* Where one input tensor came from in the original image (pixel coordinates,
 * x1/y1 exclusive), and whether it was mirrored left-right. */
typedef struct {
    float x0, y0, x1, y1;
    int flipped;
} chex_cam_box;

/* The classifier (defined in model/densenet.c): w (ncls, nfeat) row-major,
 * b (ncls). Borrowed, valid while m lives. Any output may be NULL. */
void chex_model_classifier(const chex_model *m, const float **w, const float **b, int *ncls,
                           int *nfeat);

/* raw (n, h, w) = maps of label for the n tensors of feat (n, nfeat, h, w).
 * CHEX_MODEL_ERR_ARG for a label outside 0..ncls-1 or bad sizes. */
chex_model_err chex_cam_raw(const chex_model *m, const float *feat, int n, int nfeat, int h, int w,
                            int label, float *raw);

/* The same from the last forward on ws, tensors first .. first+n-1 of that batch. */
chex_model_err chex_cam_raw_ws(const chex_model *m, const chex_model_ws *ws, int first, int n,
                               int label, float *raw);

/* Side of the final feature map for an (S, S) input, as DenseNet-121 computes
 * it (conv0 7x7/2 pad 3, pool0 3x3/2 pad 1, three 2x2/2 transitions): 7 for
 * 224. Lets callers size raw-map buffers before any forward. */
int chex_cam_grid_side(int S);

/* out (oh, ow) = bilinear, align_corners=False resize of in (h, w). */
void chex_cam_upsample(float *out, int oh, int ow, const float *in, int h, int w);

/* out (H, W) = the n (S, S) maps of up placed back by their boxes (see the
 * geometry above), not normalised. 1 <= n <= 64. CHEX_MODEL_ERR_ARG for empty
 * sizes or a box with no area, CHEX_MODEL_ERR_NOMEM for its lookup tables. */
chex_model_err chex_cam_project(float *out, int W, int H, const float *up, int S,
                                const chex_cam_box *boxes, int n);

/* Min-max to [0, 1] in place; constant (or non-finite range) -> zeros. */
void chex_cam_normalise(float *map, size_t n);

/* The whole chain: raw (n, h, w) -> upsample each to (S, S) -> project onto
 * (H, W) -> normalise. CHEX_MODEL_ERR_NOMEM if the scratch cannot be had. */
chex_model_err chex_cam_map(float *out, int W, int H, const float *raw, int n, int h, int w, int S,
                            const chex_cam_box *boxes);

#endif
