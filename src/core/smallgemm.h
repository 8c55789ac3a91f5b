/* Products of a few rows by a weight matrix, for steps of a small batch (B = 1 to 16):
 *
 *     y[b, n] (+)= sum_k x[b, k] w[n, k]        for rows n in [n0, n1), b < B,
 *
 * w in its own row-major (N, K) layout, float32 or int8 with one float32 scale per row
 * (y = scale[n] * sum_k x[b, k] q[n, k]; float32 accumulation).  Each weight is read once
 * from memory for the whole batch: a few weight rows stay in registers' reach while every
 * batch row is multiplied by them, and a batch of more rows than the registers hold takes
 * them again from L1.  BLAS packs both operands for such products instead (OpenBLAS's
 * Haswell target), which costs more than the multiply at these sizes.
 *
 * No packed copy of the weights: the kernels read the caller's arrays as they are, so an
 * update made to them in place (an optimizer step, load_state_dict) is seen by the next
 * call, and a model's weights are not held twice.
 */
#ifndef PREDTEXT_SMALLGEMM_H
#define PREDTEXT_SMALLGEMM_H

#include <stddef.h>
#include <stdint.h>

/* A weight matrix (N, K), row-major: float32 rows `w`, or int8 rows `q` with `scale`. */
typedef struct {
    const float *w;
    const int8_t *q;
    const float *scale;
} pt_weights;

void pt_small_gemm(const pt_weights *w, int B, int K, int n0, int n1, const float *x, int ldx,
                   float *y, int ldy, int accumulate);

/* One token per text through a float32 network on these products (pt_network_step's
 * arguments, the weights as pt_weights): embedding rows of ids, every recurrent layer (h,
 * c: (L, B, H), in place), the decoder and a log-softmax into log_probs (B, V).  One
 * OpenMP team of nthreads for the whole step: each thread takes a block of every
 * product's rows, then its units of the gate math, a barrier between. */
void pt_small_network_step(int cell, int B, int E, int H, int V, int L, const long long *ids,
                           const float *embedding, const pt_weights *w_ih,
                           const pt_weights *w_hh, const float *const *b_ih,
                           const float *const *b_hh, const float *const *peep,
                           const pt_weights *dec, const float *dec_b, float *h, float *c,
                           float *log_probs, float *embedded, float *work, int nthreads);

#endif
