/* predtext compiled core: type-generic kernels instantiated for float and double. */
#include "kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

#ifdef _OPENMP
int pt_max_threads(void) { return omp_get_num_procs(); }
int pt_have_openmp(void) { return 1; }
#else
int pt_max_threads(void) { return 1; }
int pt_have_openmp(void) { return 0; }
#endif

#include "fastmath.h"

static pt_sgemm_fn pt_sgemm;
static pt_dgemm_fn pt_dgemm;
static pt_sgemv_fn pt_sgemv;
static pt_dgemv_fn pt_dgemv;

void pt_set_blas(pt_sgemm_fn sgemm, pt_dgemm_fn dgemm, pt_sgemv_fn sgemv, pt_dgemv_fn dgemv)
{
    pt_sgemm = sgemm;
    pt_dgemm = dgemm;
    pt_sgemv = sgemv;
    pt_dgemv = dgemv;
}

/* Rows per BLAS call for the per-step recurrent products (0: one call), indexed by
 * whether A is transposed: [0] backward's dh product, [1] forward's.  The shim sets both
 * from the BLAS it finds (see _choose_step_rows). */
static int pt_step_rows[2] = {0, 0};
/* Largest block (rows * n * k) OpenBLAS's AVX-512 small-matrix kernels were measured to
 * take without packing. */
#define PT_SMALL_GEMM (1LL << 19)

void pt_set_step_rows(int which, int rows) { pt_step_rows[which != 0] = rows < 0 ? 0 : rows; }
int pt_get_step_rows(int which) { return pt_step_rows[which != 0]; }

#define PT_CELL_INFO(code, name, gates, extra_rows, flags, ...) \
    [code] = {name, gates, extra_rows, flags},
static const pt_cell_info pt_cells[PT_NCELLS] = {PT_CELLS(PT_CELL_INFO)};
#undef PT_CELL_INFO

const pt_cell_info *pt_cell(int cell) { return &pt_cells[cell]; }
int pt_gate_count(int cell) { return pt_cells[cell].gates; }

/* This thread's share of a kernel's work: hidden units [j0, j1) for the gate math (SIMD
 * aligned), rows [r0, r1) of the T*B sequence rows, and gate rows [m0, m1) of G*H. */
typedef struct {
    int j0, j1, r0, r1, m0, m1;
} pt_share;

static void pt_thread_share(int H, int rows, int GH, pt_share *s)
{
    int p = pt_thread_num(), np = pt_num_threads();
    pt_slice(H, np, p, 8, &s->j0, &s->j1);
    pt_slice(rows, np, p, 1, &s->r0, &s->r1);
    pt_slice(GH, np, p, 16, &s->m0, &s->m1);
}

#define REAL float
#define SFX f
#define SIGMOID pt_sigmoidf
#define TANH pt_tanhf
#define GEMM pt_sgemm
#define GEMV pt_sgemv
#define EXP expf
#define LOG logf
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef SIGMOID
#undef TANH
#undef GEMM
#undef GEMV
#undef EXP
#undef LOG

#define REAL double
#define SFX d
#define SIGMOID pt_sigmoidd
#define TANH pt_tanhd
#define GEMM pt_dgemm
#define GEMV pt_dgemv
#define EXP exp
#define LOG log
#include "kernels_impl.h"
#undef REAL
#undef SFX
#undef SIGMOID
#undef TANH
#undef GEMM
#undef GEMV
#undef EXP
#undef LOG

PT_CLONES void pt_sigmoid_array_f(size_t n, const float *x, float *y)
{
#pragma omp simd
    for (size_t k = 0; k < n; k++) y[k] = pt_sigmoidf(x[k]);
}

PT_CLONES void pt_tanh_array_f(size_t n, const float *x, float *y)
{
#pragma omp simd
    for (size_t k = 0; k < n; k++) y[k] = pt_tanhf(x[k]);
}

/* BLAS thread pinning.  OpenBLAS's thread count is global, so concurrent kernels share
 * the saved values: the first to enter saves and pins, the last to leave restores.  Every
 * OpenBLAS copy in the process is pinned (NumPy and SciPy may each bring one). */
#define PT_MAX_BLAS_LIBS 4
typedef void (*pt_set_threads_fn)(int);
typedef int (*pt_get_threads_fn)(void);
static pt_set_threads_fn pt_blas_set[PT_MAX_BLAS_LIBS];
static pt_get_threads_fn pt_blas_get[PT_MAX_BLAS_LIBS];
static int pt_blas_saved[PT_MAX_BLAS_LIBS];
static int pt_blas_nlibs;
static int pt_blas_active;

int pt_add_blas_threads_fns(void *set_fn, void *get_fn)
{
    if (pt_blas_nlibs >= PT_MAX_BLAS_LIBS || !set_fn || !get_fn) return -1;
    pt_blas_set[pt_blas_nlibs] = (pt_set_threads_fn)set_fn;
    pt_blas_get[pt_blas_nlibs] = (pt_get_threads_fn)get_fn;
    pt_blas_nlibs++;
    return 0;
}

void pt_blas_single_enter(void)
{
    if (__atomic_fetch_add(&pt_blas_active, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (int k = 0; k < pt_blas_nlibs; k++) {
        pt_blas_saved[k] = pt_blas_get[k]();
        if (pt_blas_saved[k] != 1) pt_blas_set[k](1);
    }
}

void pt_blas_single_exit(void)
{
    if (__atomic_sub_fetch(&pt_blas_active, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (int k = 0; k < pt_blas_nlibs; k++)
        if (pt_blas_saved[k] != 1) pt_blas_set[k](pt_blas_saved[k]);
}
