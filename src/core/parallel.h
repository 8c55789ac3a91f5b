/* What the core's C files share about threads and per-target code: the OpenMP team's
 * thread numbers (1 thread without OpenMP), how work is split among them, and the
 * target_clones attribute that compiles a loop for several x86-64 levels. */
#ifndef PREDTEXT_PARALLEL_H
#define PREDTEXT_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
static inline int pt_thread_num(void) { return omp_get_thread_num(); }
static inline int pt_num_threads(void) { return omp_get_num_threads(); }
#else
static inline int pt_thread_num(void) { return 0; }
static inline int pt_num_threads(void) { return 1; }
#endif

/* Compile hot loops for AVX-512, AVX2 and baseline x86-64 and pick one at load time, so
 * one build is fast on the machine it lands on without -march=native. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(PT_NO_CLONES)
#define PT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PT_CLONES
#endif

/* Split n items among np threads in chunks that are multiples of align (SIMD width),
 * the last thread taking the remainder. */
static inline void pt_slice(int n, int np, int p, int align, int *lo, int *hi)
{
    int chunks = (n + align - 1) / align;
    int per = chunks / np, extra = chunks % np;
    int c0 = p * per + (p < extra ? p : extra);
    int c1 = c0 + per + (p < extra ? 1 : 0);
    *lo = c0 * align < n ? c0 * align : n;
    *hi = c1 * align < n ? c1 * align : n;
}

#endif
