/* Small-batch products by a row-major weight matrix (see smallgemm.h).
 *
 * Blocks: R weight rows times bb batch rows, R * bb accumulators of 8 floats each over k
 * (GCC's vector types: one AVX register, two SSE or NEON registers), summed across at the
 * end.  Rows go in groups of 4; each batch chunk of at most 6 rows multiplies the group
 * before the next group is read, so the group's weights come from memory once and from L1
 * for the other chunks.  Per target through target_clones, like the gate loops. */
#include "smallgemm.h"

#include "parallel.h"

/* Accumulate with fused multiply-adds where the target has them (ISO C mode leaves
 * contraction off). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

/* The vectors stay inside always-inlined functions: no call passes one, whatever the ABI. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float pt_v8 __attribute__((vector_size(32)));
typedef int32_t pt_i8 __attribute__((vector_size(32)));
typedef uint32_t pt_u8 __attribute__((vector_size(32)));
/* The same, for loads from addresses aligned to one element only. */
typedef float pt_v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t pt_i8u __attribute__((vector_size(32), aligned(1)));

#define PT_GROUP 4    /* weight rows per group */
#define PT_CHUNK 6    /* batch rows per block at most: 12 accumulators in 16 AVX2 registers */
#define PT_QCOLS 512  /* int8: columns per pass, whose permuted x fits a small buffer */
#define PT_QROWS 16   /* int8: batch rows per pass */

static inline __attribute__((always_inline)) float pt_hsum(pt_v8 v)
{
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    typedef float pt_v4 __attribute__((vector_size(16)));
    pt_v4 s = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    s += __builtin_shufflevector(s, s, 2, 3, 0, 1);
    s += __builtin_shufflevector(s, s, 1, 0, 3, 2);
    return s[0];
#else
    float s = 0;
    for (int i = 0; i < 8; i++) s += v[i];
    return s;
#endif
}

/* Rows [n, n + R) of w (row stride ldw) by batch rows [0, bb) of x over columns [0, K); R
 * and bb are constants after inlining.
 *
 * int8 weights go 32 columns at a time: 32 bytes read as 8 int32 lanes, byte j of every
 * lane sign-extended by two shifts, which is the columns k + 4i + j (i = 0..7) -- so x comes
 * permuted to match (pt_permute).  Plain C, lane-local: GCC makes a few instructions of it
 * on every target, where its int8 vector conversion goes byte by byte. */
static inline __attribute__((always_inline)) void pt_block(const pt_weights *w, int ldw, int K,
                                                            int n, const int R, const int bb,
                                                            const float *x, int ldx, float *y,
                                                            int ldy, int accumulate,
                                                            const int quant)
{
    pt_v8 acc[PT_GROUP][PT_CHUNK];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 6
        for (int b = 0; b < bb; b++) acc[r][b] = (pt_v8){0};
    const int step = quant ? 32 : 8;
    int k = 0;
    for (; k + step <= K; k += step) {
        pt_i8 raw[PT_GROUP];
        if (quant)
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) raw[r] = *(const pt_i8u *)(w->q + (size_t)(n + r) * ldw + k);
#pragma GCC unroll 4
        for (int j = 0; j < step / 8; j++) {
            pt_v8 wv[PT_GROUP];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                wv[r] = quant ? __builtin_convertvector(
                                    (pt_i8)((pt_u8)raw[r] << (24 - 8 * j)) >> 24, pt_v8)
                              : *(const pt_v8u *)(w->w + (size_t)(n + r) * ldw + k);
#pragma GCC unroll 6
            for (int b = 0; b < bb; b++) {
                pt_v8 xv = *(const pt_v8u *)(x + (size_t)b * ldx + k + 8 * j);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) acc[r][b] += wv[r] * xv;
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const size_t row = (size_t)(n + r) * ldw;
        const float scale = quant ? w->scale[n + r] : 1.0f;
#pragma GCC unroll 6
        for (int b = 0; b < bb; b++) {
            const float *xb = x + (size_t)b * ldx;
            float s = pt_hsum(acc[r][b]);
            for (int j = k; j < K; j++) s += xb[j] * (quant ? (float)w->q[row + j] : w->w[row + j]);
            float *out = y + (size_t)b * ldy + n + r;
            *out = (accumulate ? *out : 0.0f) + scale * s;
        }
    }
}

/* One block, its constants chosen from R and bb: two loads of a weight vector feed up to
 * six batch rows; one or two batch rows take four weight rows at a time instead. */
#define PT_BLOCK_CASE(R, bb) \
    case bb: pt_block(w, ldw, K, n, R, bb, x, ldx, y, ldy, accumulate, quant); break;

static inline __attribute__((always_inline)) void pt_block_any(const pt_weights *w, int ldw,
                                                                int K, int n, int R, int bb,
                                                                const float *x, int ldx,
                                                                float *y, int ldy,
                                                                int accumulate, const int quant)
{
    if (R == 4) {
        switch (bb) { PT_BLOCK_CASE(4, 1) PT_BLOCK_CASE(4, 2) }
    } else if (R == 2) {
        switch (bb) {
            PT_BLOCK_CASE(2, 3) PT_BLOCK_CASE(2, 4) PT_BLOCK_CASE(2, 5) PT_BLOCK_CASE(2, 6)
        }
    } else {
        switch (bb) {
            PT_BLOCK_CASE(1, 1) PT_BLOCK_CASE(1, 2) PT_BLOCK_CASE(1, 3) PT_BLOCK_CASE(1, 4)
            PT_BLOCK_CASE(1, 5) PT_BLOCK_CASE(1, 6)
        }
    }
}
#undef PT_BLOCK_CASE

static inline __attribute__((always_inline)) void pt_small_gemm_body(
    const pt_weights *w, int ldw, int B, int K, int n0, int n1, const float *x, int ldx,
    float *y, int ldy, int accumulate, const int quant)
{
    /* Batch chunks of near-equal size (7 = 4 + 3, 16 = 6 + 5 + 5). */
    const int chunks = (B + PT_CHUNK - 1) / PT_CHUNK;
    int n = n0;
    for (; n + PT_GROUP <= n1; n += PT_GROUP)
        for (int c = 0, b0 = 0; c < chunks; c++) {
            const int bb = (B - b0) / (chunks - c);
            const int R = bb <= 2 ? 4 : 2;
            for (int r = 0; r < PT_GROUP; r += R)
                pt_block_any(w, ldw, K, n + r, R, bb, x + (size_t)b0 * ldx, ldx,
                             y + (size_t)b0 * ldy, ldy, accumulate, quant);
            b0 += bb;
        }
    for (; n < n1; n++)
        for (int c = 0, b0 = 0; c < chunks; c++) {
            const int bb = (B - b0) / (chunks - c);
            pt_block_any(w, ldw, K, n, 1, bb, x + (size_t)b0 * ldx, ldx, y + (size_t)b0 * ldy,
                         ldy, accumulate, quant);
            b0 += bb;
        }
}

/* x (B, K) into xp (B, K) in the column order of the int8 blocks: within each whole block
 * of 32 columns, xp[8 j + i] = x[4 i + j]; the columns past the last block as they are. */
static void pt_permute(int B, int K, const float *x, int ldx, float *xp)
{
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * ldx;
        float *pb = xp + (size_t)b * K;
        int k = 0;
        for (; k + 32 <= K; k += 32)
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 8; i++) pb[k + 8 * j + i] = xb[k + 4 * i + j];
        for (; k < K; k++) pb[k] = xb[k];
    }
}

PT_CLONES static void pt_small_gemm_f32(const pt_weights *w, int B, int K, int n0, int n1,
                                        const float *x, int ldx, float *y, int ldy,
                                        int accumulate)
{
    pt_small_gemm_body(w, K, B, K, n0, n1, x, ldx, y, ldy, accumulate, 0);
}

/* In passes of at most PT_QROWS batch rows by PT_QCOLS columns, each with its x permuted
 * into a buffer on the stack (32 KiB); the weights are read once per pass of rows. */
PT_CLONES static void pt_small_gemm_i8(const pt_weights *w, int B, int K, int n0, int n1,
                                       const float *x, int ldx, float *y, int ldy,
                                       int accumulate)
{
    float xp[PT_QROWS * PT_QCOLS];
    for (int b0 = 0; b0 < B; b0 += PT_QROWS) {
        const int bs = B - b0 < PT_QROWS ? B - b0 : PT_QROWS;
        for (int k0 = 0; k0 < K || k0 == 0; k0 += PT_QCOLS) {
            const int kn = K - k0 < PT_QCOLS ? K - k0 : PT_QCOLS;
            pt_permute(bs, kn, x + (size_t)b0 * ldx + k0, ldx, xp);
            pt_weights part = {NULL, w->q + k0, w->scale};
            pt_small_gemm_body(&part, K, bs, kn, n0, n1, xp, kn, y + (size_t)b0 * ldy, ldy,
                               accumulate || k0 > 0, 1);
        }
    }
}

void pt_small_gemm(const pt_weights *w, int B, int K, int n0, int n1, const float *x, int ldx,
                   float *y, int ldy, int accumulate)
{
    if (B <= 0 || n1 <= n0) return;
    if (w->q)
        pt_small_gemm_i8(w, B, K, n0, n1, x, ldx, y, ldy, accumulate);
    else
        pt_small_gemm_f32(w, B, K, n0, n1, x, ldx, y, ldy, accumulate);
}
