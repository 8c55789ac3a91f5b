/* predtext compiled core: recurrent kernels in plain C (no Python, no GIL).
 *
 * Layout (PyTorch's): gate blocks stacked along the first weight axis, LSTM i,f,g,o,
 * GRU r,z,n with b_hn inside the reset product.  Arrays are C-contiguous, time-major:
 * x (T,B,I), gates (T,B,G*H), states (B,H).  Every matrix product goes through BLAS but
 * the per-step ones where BLAS would pack the weights on every call (kernels_impl.h); the
 * gate nonlinearities are fused into one loop per step.
 *
 * Threading: one OpenMP team per call.  In each step thread p computes a contiguous block
 * of gate rows of the recurrent product, then, after a barrier (the gate math needs every
 * block), the gate math of its own slice of hidden units [j0,j1); a second barrier ends
 * the step.  Where the per-step products run on W_hh packed once per sequence (BLAS
 * without small-matrix kernels, see kernels_impl.h), thread p multiplies the gate rows of
 * its own units, and the first barrier goes.  BLAS is called single-threaded from inside the team (the Python shim pins
 * BLAS to one thread while a kernel runs), so the two thread pools never fight over the
 * cores.  The per-cell gate math is in row kernels, found through the cell table
 * (cells.h).
 */
#ifndef PREDTEXT_KERNELS_H
#define PREDTEXT_KERNELS_H

#include <stddef.h>

#include "cells.h"

#define PT_CELL_CODE(code, ...) code,
enum pt_cell { PT_CELLS(PT_CELL_CODE) PT_NCELLS };
#undef PT_CELL_CODE

/* A cell's row of the table in cells.h, less its kernels. */
typedef struct {
    const char *name;
    int gates, extra_rows, flags;
} pt_cell_info;

typedef void (*pt_sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *,
                            float *, int *, float *, float *, int *);
typedef void (*pt_dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *,
                            double *, int *, double *, double *, int *);

typedef void (*pt_sgemv_fn)(char *, int *, int *, float *, float *, int *, float *, int *,
                            float *, float *, int *);
typedef void (*pt_dgemv_fn)(char *, int *, int *, double *, double *, int *, double *, int *,
                            double *, double *, int *);

typedef struct {
    int cell;           /* enum pt_cell */
    int T, B, n_in, H; /* n_in: input size (I clashes with complex.h) */
    int G;              /* the cell's gate blocks (cells.h) */
    const int *lengths; /* per-sequence lengths (B) or NULL for all T */
    int nthreads;
    /* Recurrent dropout, NULL for none: hmask (B,H) of the call's type multiplies h_{t-1}
     * where it enters the recurrent product (only there: a GRU's carry z*h_{t-1} and the
     * row kernels see the state unmasked).  hmasked: those products' operands, (T,B,H) in
     * training (backward's W_hh gradient reads them), (1,B,H) otherwise.  In backward
     * hmask scales the recurrent part of dL/dh_{t-1} the same way. */
    const void *hmask;
    void *hmasked;
} pt_dims;

void pt_set_blas(pt_sgemm_fn sgemm, pt_dgemm_fn dgemm, pt_sgemv_fn sgemv, pt_dgemv_fn dgemv);
int pt_gate_count(int cell);
/* The cell with code `cell` (0 <= cell < PT_NCELLS). */
const pt_cell_info *pt_cell(int cell);
void pt_set_step_rows(int which, int rows);
int pt_get_step_rows(int which);
int pt_max_threads(void);
int pt_have_openmp(void);

/* Whole-sequence forward.  xg: workspace (T,B,G*H) that keeps the gate activations for
 * backward.  hs/cs: (T+1,B,H) in training mode (slot 0 = initial state), (2,B,H)/(1,B,H)
 * in inference mode (cs: cells with PT_CELL_STATE only).  hn_cache: cells with PT_KEEPS,
 * (T,B,H) in training.  hh_work: cells with PT_HIDDEN_APART, (B,G*H).  pt_step's work:
 * (B,G*H), twice that with PT_HIDDEN_APART. */
#define PT_FORWARD_DECL(REAL, SFX)                                                          \
    void pt_forward_##SFX(const pt_dims *d, int training, const REAL *x, const REAL *w_ih,  \
                          const REAL *w_hh, const REAL *b_ih, const REAL *b_hh,             \
                          const REAL *peep, const REAL *h0, const REAL *c0, REAL *xg,        \
                          REAL *hs, REAL *cs, REAL *hn_cache, REAL *hh_work, REAL *out,      \
                          REAL *h_n, REAL *c_n);                                             \
    void pt_backward_##SFX(const pt_dims *d, const REAL *x, const REAL *w_ih,                \
                           const REAL *w_hh, const REAL *peep, const REAL *xg,              \
                           const REAL *hs, const REAL *cs, const REAL *hn_cache,            \
                           const REAL *d_out, const REAL *d_hn, const REAL *d_cn, REAL *dgx, \
                           REAL *dgh, REAL *dh, REAL *dc, REAL *dx, REAL *dh0, REAL *dc0,    \
                           REAL *dw_ih, REAL *dw_hh, REAL *db_ih, REAL *db_hh, REAL *dpeep);  \
    void pt_step_##SFX(int cell, int B, int n_in, int H, int nthreads, const REAL *x,          \
                       const REAL *h, const REAL *c, const REAL *w_ih, const REAL *w_hh,    \
                       const REAL *b_ih, const REAL *b_hh, const REAL *peep, REAL *h_out,   \
                       REAL *c_out, REAL *work);                                             \
    void pt_step_gates_##SFX(int cell, int B, int H, int j0, int j1, REAL *work,             \
                             const REAL *b_hh, const REAL *peep, const REAL *h, const REAL *c, \
                             REAL *h_out, REAL *c_out);                                      \
    void pt_log_softmax_rows_##SFX(int b0, int b1, int V, const REAL *bias, REAL *logits);  \
    void pt_reverse_##SFX(int T, int B, int F, const int *lengths, const REAL *src, REAL *dst); \
    void pt_matmul_##SFX(int ta, int tb, int M, int N, int K, const REAL *a, int lda,          \
                         const REAL *b, int ldb, REAL beta, REAL *c, int ldc, int nthreads);  \
    void pt_network_step_##SFX(int cell, int B, int E, int H, int V, int L,                    \
                               const long long *ids, const REAL *embedding,                    \
                               const REAL *const *w_ih, const REAL *const *w_hh,               \
                               const REAL *const *b_ih, const REAL *const *b_hh,               \
                               const REAL *const *peep, const REAL *dec_w, const REAL *dec_b,  \
                               REAL *h, REAL *c, REAL *log_probs, REAL *embedded, REAL *work,  \
                               const int *threads);

PT_FORWARD_DECL(float, f)
PT_FORWARD_DECL(double, d)

/* Elementwise math, exposed so tests can check the float approximations. */
void pt_sigmoid_array_f(size_t n, const float *x, float *y);
void pt_tanh_array_f(size_t n, const float *x, float *y);

/* Pin BLAS to one thread while a kernel runs (nestable across concurrent callers). */
int pt_add_blas_threads_fns(void *set_fn, void *get_fn);
void pt_blas_single_enter(void);
void pt_blas_single_exit(void);

#endif
