/* model/gptq.h - the arithmetic of int8 weight rounding at calibration
 * (model/calib.c): input second moments and GPTQ (Frantar et al., 2022).
 *
 * GPTQ rounds a weight row w (k inputs) to the int8 grid one input at a
 * time and lets the rounding errors already made steer the inputs still to
 * round, so that the row's OUTPUT error over the calibration inputs,
 * (w - wq) H (w - wq)^T with H = sum_p x_p x_p^T, stays small instead of each
 * weight's own error. With H = V V^T, V upper triangular (a Cholesky factor
 * of H taken from its last row up), column j is rounded as
 *     wq_j = q(w_j + sum_{i<j} (w_i - wq_i) V_ij / V_jj)
 * which is GPTQ's update written without H's inverse (QuIP's LDLQ form).
 *
 * Not thread-safe per call's buffers; the functions run OpenMP teams.
 */
#ifndef CHEX_GPTQ_H
#define CHEX_GPTQ_H

#include <stdint.h>

/* h[i][j] += sum_p x[p][i] * x[p][j] for the tiles on and above the
 * diagonal (64-column tiles; callers read the upper triangle, j >= i).
 * x is (np, kp) row-major, kp a multiple of 64 (pad with zeros); h is
 * (kp, kp) row-major double. */
void chex_gptq_syrk(double *h, const float *x, int np, int kp);

/* The same, one multiply-add at a time (reference for tests). */
void chex_gptq_syrk_naive(double *h, const float *x, int np, int kp);

/* Rounds w (m rows of k, row-major) to q (m x k int8, -127..127) and sw (m):
 * w[o][j] ~ sw[o] * q[o][j], sw[o] = max_j |w[o][j]| / 127 (1 for a zero
 * row), by GPTQ with second moments h (k x k, upper triangle read, row
 * stride ldh). h is modified (damped, factored): pass a copy to keep it.
 * damp: relative damping added to the diagonal (times its mean), e.g. 0.01;
 * inputs that were always 0 (h[j][j] == 0) get a diagonal of 1. Returns 0,
 * or -1 if out of memory. */
int chex_gptq_round(int8_t *q, float *sw, const float *w, int m, int k, double *h, int ldh,
                    double damp);

#endif
