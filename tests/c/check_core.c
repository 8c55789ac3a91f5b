/* The compiled core's kernels checked from C, for targets with no Python to drive them (an
 * aarch64 build run under qemu-user) and natively alike: tests/test_core_c.py builds this
 * with the core's C files and runs it.
 *
 * Every figure is checked against a reference computed here: the small-batch products
 * against float64 sums; the small-batch network step against the BLAS network step; the
 * whole-sequence forward (its packed, register-blocked W_hh products) against one step at
 * a time; the float64 backward against central finite differences of the forward.  The
 * BLAS the core calls is the plain column-major loops below, with the Fortran signature
 * the Python shim hands it from SciPy.  Tolerances are the Python tests'.
 *
 * Prints one line per failing case (the first few) and a summary; exits 1 on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "smallgemm.h"

/* ---- checks and their report ---- */

static long checks, failures;

static void fail(const char *what, const char *detail)
{
    if (++failures <= 20) printf("FAIL %s: %s\n", what, detail);
}

/* got within atol + rtol |want| of want at every index (NumPy's assert_allclose). */
static void expect_close_d(const char *what, size_t n, const double *got, const double *want,
                         double rtol, double atol)
{
    checks++;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i]))) {
            char detail[160];
            snprintf(detail, sizeof detail, "index %zu: got %.9g, want %.9g", i, got[i],
                     want[i]);
            fail(what, detail);
            return;
        }
}

static void expect_close_f(const char *what, size_t n, const float *got, const float *want,
                           double rtol, double atol)
{
    double *g = malloc(n * sizeof *g), *w = malloc(n * sizeof *w);
    for (size_t i = 0; i < n; i++) g[i] = got[i], w[i] = want[i];
    expect_close_d(what, n, g, w, rtol, atol);
    free(g);
    free(w);
}

/* ---- fixed-seed random numbers: uniform in [-scale, scale) ---- */

static uint64_t rng_state;

static void seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ULL + 1; }

static double uniform(double scale)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return scale * ((double)(rng_state >> 11) / 9007199254740992.0 * 2 - 1);
}

static float *new_f(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }
static double *new_d(size_t n) { return malloc((n ? n : 1) * sizeof(double)); }
static double *zeros_d(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static float *random_f(size_t n, double scale)
{
    float *a = new_f(n);
    for (size_t i = 0; i < n; i++) a[i] = (float)uniform(scale);
    return a;
}

static double *random_d(size_t n, double scale)
{
    double *a = new_d(n);
    for (size_t i = 0; i < n; i++) a[i] = uniform(scale);
    return a;
}

static void *copy_of(const void *a, size_t bytes)
{
    void *c = malloc(bytes ? bytes : 1);
    if (bytes) memcpy(c, a, bytes);
    return c;
}

/* Per-row int8 quantisation as predtext.lm.quantize.quantize_rows does it, and the float32
 * weights it stands for. */
static void quantize(int N, int K, const float *w, int8_t *q, float *scale, float *deq)
{
    for (int n = 0; n < N; n++) {
        float peak = 0;
        for (int k = 0; k < K; k++) peak = fmaxf(peak, fabsf(w[(size_t)n * K + k]));
        scale[n] = peak / 127.0f;
        if (scale[n] == 0) scale[n] = 1;
        for (int k = 0; k < K; k++) {
            double v = rint((double)w[(size_t)n * K + k] / scale[n]);
            q[(size_t)n * K + k] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            deq[(size_t)n * K + k] = (float)q[(size_t)n * K + k] * scale[n];
        }
    }
}

/* ---- plain BLAS: column-major, Fortran calling convention, sums in double ---- */

/* op(A)[i, l] = a[i * ai + l * al] and the like: the strides of each operand's two axes. */
#define PLAIN_BLAS(REAL, P)                                                                  \
    static void P##gemm(char *ta, char *tb, int *m, int *n, int *k, REAL *alpha, REAL *a,    \
                        int *lda, REAL *b, int *ldb, REAL *beta, REAL *c, int *ldc)          \
    {                                                                                        \
        const size_t ai = *ta == 'N' ? 1 : *lda, al = *ta == 'N' ? *lda : 1;                 \
        const size_t bl = *tb == 'N' ? 1 : *ldb, bj = *tb == 'N' ? *ldb : 1;                 \
        for (int j = 0; j < *n; j++)                                                         \
            for (int i = 0; i < *m; i++) {                                                   \
                double s = 0;                                                                \
                for (int l = 0; l < *k; l++) s += (double)a[i * ai + l * al] * b[l * bl + j * bj]; \
                REAL *cij = c + i + (size_t)j * *ldc;                                        \
                *cij = (REAL)(*alpha * s + (*beta == 0 ? 0 : *beta * (double)*cij));        \
            }                                                                                \
    }                                                                                        \
    static void P##gemv(char *t, int *m, int *n, REAL *alpha, REAL *a, int *lda, REAL *x,    \
                        int *incx, REAL *beta, REAL *y, int *incy)                           \
    {                                                                                        \
        const int rows = *t == 'N' ? *m : *n, cols = *t == 'N' ? *n : *m;                    \
        const size_t ai = *t == 'N' ? 1 : *lda, al = *t == 'N' ? *lda : 1;                   \
        for (int i = 0; i < rows; i++) {                                                     \
            double s = 0;                                                                    \
            for (int l = 0; l < cols; l++) s += (double)a[i * ai + l * al] * x[(size_t)l * *incx]; \
            REAL *yi = y + (size_t)i * *incy;                                                \
            *yi = (REAL)(*alpha * s + (*beta == 0 ? 0 : *beta * (double)*yi));              \
        }                                                                                    \
    }

PLAIN_BLAS(float, s)
PLAIN_BLAS(double, d)

/* ---- 1. pt_small_gemm: float32 and int8 against float64 sums ---- */

/* Rows [n0, n1) of y (B, ldy) against (accumulate ? y0 : 0) + x w^T in float64, within
 * 1e-6 of the sum of magnitudes (tests/test_core_smallgemm.py's bound); every other
 * element of y, row padding included, must keep y0's bits. */
static void check_product(const char *kind, int K, int N, int B, int n0, int n1,
                          int accumulate, const pt_weights *pw, const float *wf,
                          const float *x, int ldx, int ldy)
{
    float *y0 = random_f((size_t)B * ldy, 1), *y = malloc((size_t)B * ldy * sizeof *y);
    memcpy(y, y0, (size_t)B * ldy * sizeof *y);
    pt_small_gemm(pw, B, K, n0, n1, x, ldx, y, ldy, accumulate);
    char what[160];
    snprintf(what, sizeof what, "small_gemm %s K=%d N=%d B=%d rows [%d,%d) accumulate=%d",
             kind, K, N, B, n0, n1, accumulate);
    checks++;
    for (int b = 0; b < B; b++)
        for (int n = 0; n < ldy; n++) {
            const size_t i = (size_t)b * ldy + n;
            if (n < n0 || n >= n1) {
                if (memcmp(&y[i], &y0[i], sizeof y[i]) != 0) {
                    fail(what, "wrote outside its rows");
                    goto done;
                }
                continue;
            }
            double want = accumulate ? y0[i] : 0, bound = accumulate ? fabs(y0[i]) : 0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)b * ldx + k] * wf[(size_t)n * K + k];
                want += p;
                bound += fabs(p);
            }
            if (!(fabs(y[i] - want) <= 1e-6 * (bound + 1))) {
                char detail[120];
                snprintf(detail, sizeof detail, "y[%d,%d] = %.9g, want %.9g", b, n, y[i], want);
                fail(what, detail);
                goto done;
            }
        }
done:
    free(y0);
    free(y);
}

static void check_small_gemm(void)
{
    /* Odd sizes around the blocks' edges: 4 weight rows per group, 8 (float32) and 32
     * (int8) columns per vector step, batch chunks of 6, int8 passes of 512 columns. */
    static const int shapes[][2] = {{1, 1}, {3, 5}, {7, 13}, {31, 33}, {33, 67}, {257, 19},
                                    {1030, 9}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int K = shapes[s][0], N = shapes[s][1], ldx = K + 3, ldy = N + 2;
        seed(100 + s);
        float *w = random_f((size_t)N * K, 1), *deq = malloc((size_t)N * K * sizeof *deq);
        int8_t *q = malloc((size_t)N * K);
        float *scale = malloc((size_t)N * sizeof *scale);
        quantize(N, K, w, q, scale, deq);
        const pt_weights wf = {w, NULL, NULL}, wq = {NULL, q, scale};
        for (int B = 1; B <= 17; B++) {
            float *x = random_f((size_t)B * ldx, 1);
            for (int accumulate = 0; accumulate < 2; accumulate++) {
                const int ranges[2][2] = {{0, N}, {N / 3, N - N / 4}};
                for (int r = 0; r < 2; r++) {
                    const int n0 = ranges[r][0], n1 = ranges[r][1];
                    if (r && n1 <= n0) continue;
                    if (B <= 16)   /* int8 past one pass of 16 batch rows too */
                        check_product("float32", K, N, B, n0, n1, accumulate, &wf, w, x, ldx,
                                      ldy);
                    check_product("int8", K, N, B, n0, n1, accumulate, &wq, deq, x, ldx, ldy);
                }
            }
            free(x);
        }
        free(w);
        free(deq);
        free(q);
        free(scale);
    }
}

/* ---- 2. pt_small_network_step against pt_network_step_f ---- */

typedef struct {
    const char *name;
    int cell, layers, peephole, bias;
} net_case;

static void check_network_step(void)
{
    static const net_case cases[] = {
        {"gru", PT_GRU, 1, 0, 1},          {"gru", PT_GRU, 2, 0, 0},
        {"lstm", PT_LSTM, 1, 1, 1},        {"lstm", PT_LSTM, 2, 0, 1},
        {"rnn_tanh", PT_RNN_TANH, 1, 0, 1}, {"rnn_tanh", PT_RNN_TANH, 2, 0, 0},
    };
    /* Past one int8 vector step (32 columns) in both products, with a remainder; two
     * steps in a row (the second from the first's state). */
    const int V = 23, E = 34, H = 33, steps = 2;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const net_case *nc = &cases[ci];
        const int L = nc->layers, G = pt_gate_count(nc->cell), GH = G * H;
        const int apart = pt_cell(nc->cell)->flags & PT_HIDDEN_APART;
        const int has_c = pt_cell(nc->cell)->flags & PT_CELL_STATE;
        seed(200 + ci);
        float *embedding = random_f((size_t)V * E, 0.5);
        float *w[2][2], *deq[2][2], *scale[2][2], *b_ih[2], *b_hh[2], *peep[2];
        int8_t *q[2][2];
        pt_weights fw_ih[2], fw_hh[2], qw_ih[2], qw_hh[2];
        for (int l = 0; l < L; l++) {
            for (int m = 0; m < 2; m++) {
                const int K = m == 0 && l == 0 ? E : H;
                w[l][m] = random_f((size_t)GH * K, 0.5);
                deq[l][m] = new_f((size_t)GH * K);
                q[l][m] = malloc((size_t)GH * K);
                scale[l][m] = new_f(GH);
                quantize(GH, K, w[l][m], q[l][m], scale[l][m], deq[l][m]);
            }
            fw_ih[l] = (pt_weights){w[l][0], NULL, NULL};
            fw_hh[l] = (pt_weights){w[l][1], NULL, NULL};
            qw_ih[l] = (pt_weights){NULL, q[l][0], scale[l][0]};
            qw_hh[l] = (pt_weights){NULL, q[l][1], scale[l][1]};
            b_ih[l] = nc->bias ? random_f(GH, 0.5) : NULL;
            b_hh[l] = nc->bias ? random_f(GH, 0.5) : NULL;
            peep[l] = nc->peephole ? random_f(3 * H, 0.5) : NULL;
        }
        float *dec_w = random_f((size_t)V * H, 0.5), *dec_deq = new_f((size_t)V * H);
        float *dec_scale = new_f(V), *dec_b = nc->bias ? random_f(V, 0.5) : NULL;
        int8_t *dec_q = malloc((size_t)V * H);
        quantize(V, H, dec_w, dec_q, dec_scale, dec_deq);
        const pt_weights fdec = {dec_w, NULL, NULL}, qdec = {NULL, dec_q, dec_scale};

        for (int quant = 0; quant < 2; quant++)
            for (int nthreads = 1; nthreads <= 2; nthreads++)
                for (int B = 1; B <= 16; B++) {
                    const size_t LBH = (size_t)L * B * H;
                    float *h0 = random_f(LBH, 1), *c0 = random_f(LBH, 1);
                    const size_t bytes = LBH * sizeof(float);
                    float *hs = copy_of(h0, bytes), *hb = copy_of(h0, bytes);
                    float *cs = copy_of(c0, bytes), *cb = copy_of(c0, bytes);
                    float *ps = new_f((size_t)B * V), *pb = new_f((size_t)B * V);
                    float *embedded = new_f((size_t)B * E);
                    float *work = new_f((size_t)B * GH * (apart ? 2 : 1));
                    long long *ids = malloc(B * sizeof *ids);
                    const float *bw_ih[2], *bw_hh[2];
                    for (int l = 0; l < L; l++) {
                        bw_ih[l] = quant ? deq[l][0] : w[l][0];
                        bw_hh[l] = quant ? deq[l][1] : w[l][1];
                    }
                    int threads[3] = {nthreads, nthreads, nthreads};
                    for (int t = 0; t < steps; t++) {
                        for (int b = 0; b < B; b++) ids[b] = (3 * b + 5 * t + (int)ci) % V;
                        pt_small_network_step(nc->cell, B, E, H, V, L, ids, embedding,
                                              quant ? qw_ih : fw_ih, quant ? qw_hh : fw_hh,
                                              (const float *const *)b_ih,
                                              (const float *const *)b_hh,
                                              (const float *const *)peep,
                                              quant ? &qdec : &fdec, dec_b, hs,
                                              has_c ? cs : NULL, ps, embedded, work, nthreads);
                        pt_network_step_f(nc->cell, B, E, H, V, L, ids, embedding, bw_ih, bw_hh,
                                          (const float *const *)b_ih, (const float *const *)b_hh,
                                          (const float *const *)peep,
                                          quant ? dec_deq : dec_w, dec_b, hb,
                                          has_c ? cb : NULL, pb, embedded, work, threads);
                        char what[160];
                        snprintf(what, sizeof what,
                                 "network step %s layers=%d %s B=%d threads=%d step %d: ",
                                 nc->name, L, quant ? "int8" : "float32", B, nthreads, t);
                        const size_t at = strlen(what);
                        strcpy(what + at, "h");
                        expect_close_f(what, LBH, hs, hb, 2e-5, 2e-5);
                        if (has_c) {
                            strcpy(what + at, "c");
                            expect_close_f(what, LBH, cs, cb, 2e-5, 2e-5);
                        }
                        strcpy(what + at, "log_probs");
                        expect_close_f(what, (size_t)B * V, ps, pb, 2e-5, 2e-5);
                    }
                    free(h0), free(c0), free(hs), free(hb), free(cs), free(cb);
                    free(ps), free(pb), free(embedded), free(work), free(ids);
                }
        for (int l = 0; l < L; l++) {
            for (int m = 0; m < 2; m++)
                free(w[l][m]), free(deq[l][m]), free(q[l][m]), free(scale[l][m]);
            free(b_ih[l]), free(b_hh[l]), free(peep[l]);
        }
        free(embedding), free(dec_w), free(dec_deq), free(dec_scale), free(dec_b), free(dec_q);
    }
}

/* ---- 3 and 4: whole sequences, in float32 and float64 ---- */

typedef struct {
    const char *name;
    int cell, peephole;
} seq_case;

static const seq_case seq_cases[] = {
    {"rnn_tanh", PT_RNN_TANH, 0}, {"rnn_relu", PT_RNN_RELU, 0}, {"lstm", PT_LSTM, 0},
    {"lstm peephole", PT_LSTM, 1}, {"gru", PT_GRU, 0},
};
#define N_SEQ_CASES (int)(sizeof seq_cases / sizeof seq_cases[0])

/* One type's sequence checks: REAL, its suffix SFX, random_SFX and the tolerance. */
#define SEQUENCE_CHECKS(REAL, SFX)                                                            \
    typedef struct {                                                                          \
        int cell, T, B, I, H, G, nthreads;                                                    \
        REAL *x, *w_ih, *w_hh, *b_ih, *b_hh, *peep, *h0, *c0;                                 \
    } seq_##SFX;                                                                              \
                                                                                              \
    static void seq_init_##SFX(seq_##SFX *s, const seq_case *sc, int T, int B, int I, int H,  \
                               int nthreads)                                                  \
    {                                                                                         \
        const int G = pt_gate_count(sc->cell), GH = G * H;                                    \
        *s = (seq_##SFX){.cell = sc->cell, .T = T, .B = B, .I = I, .H = H, .G = G,            \
                          .nthreads = nthreads};                                      \
        s->x = random_##SFX((size_t)T * B * I, 1);                                            \
        s->w_ih = random_##SFX((size_t)GH * I, 0.5);                                          \
        s->w_hh = random_##SFX((size_t)GH * H, 0.5);                                          \
        s->b_ih = random_##SFX(GH, 0.5);                                                      \
        s->b_hh = random_##SFX(GH, 0.5);                                                      \
        s->peep = sc->peephole ? random_##SFX(3 * H, 0.5) : NULL;                             \
        s->h0 = random_##SFX((size_t)B * H, 0.5);                                             \
        s->c0 = random_##SFX((size_t)B * H, 0.5);                                             \
    }                                                                                         \
                                                                                              \
    static void seq_free_##SFX(seq_##SFX *s)                                                  \
    {                                                                                         \
        free(s->x), free(s->w_ih), free(s->w_hh), free(s->b_ih), free(s->b_hh);               \
        free(s->peep), free(s->h0), free(s->c0);                                              \
    }                                                                                         \
                                                                                              \
    /* pt_forward into out (T,B,H), h_n, c_n; training keeps what backward needs in the    \
     * caller's xg, hs, cs, keep (all allocated here when training is 0). */                 \
    static void seq_forward_##SFX(const seq_##SFX *s, int training, REAL *out, REAL *h_n,     \
                                  REAL *c_n, REAL *xg, REAL *hs, REAL *cs, REAL *keep)        \
    {                                                                                         \
        const int flags = pt_cell(s->cell)->flags, GH = s->G * s->H;                          \
        const size_t BH = (size_t)s->B * s->H;                                                \
        pt_dims d = {s->cell, s->T, s->B, s->I, s->H, s->G, NULL, s->nthreads, NULL, NULL};   \
        REAL *own_xg = training ? xg : new_##SFX((size_t)s->T * s->B * GH);       \
        REAL *own_hs = training ? hs : new_##SFX(2 * BH);                         \
        REAL *own_cs = training ? cs : new_##SFX(BH);                             \
        REAL *hh = new_##SFX((size_t)s->B * GH);                                  \
        pt_forward_##SFX(&d, training, s->x, s->w_ih, s->w_hh, s->b_ih, s->b_hh, s->peep,     \
                         s->h0, s->c0, own_xg, own_hs,                                        \
                         flags & PT_CELL_STATE ? own_cs : NULL,                               \
                         training && flags & PT_KEEPS ? keep : NULL,                          \
                         flags & PT_HIDDEN_APART ? hh : NULL, out, h_n,                       \
                         flags & PT_CELL_STATE ? c_n : NULL);                                 \
        if (!training) free(own_xg), free(own_hs), free(own_cs);                              \
        free(hh);                                                                             \
    }                                                                                         \
                                                                                              \
    /* The forward in inference and in training mode against T calls of pt_step. */        \
    static void check_forward_##SFX(const seq_case *sc, int T, int B, int I, int H,           \
                                    int nthreads, int rows, double tol)                       \
    {                                                                                         \
        seq_##SFX s;                                                                          \
        seq_init_##SFX(&s, sc, T, B, I, H, nthreads);                                         \
        const int has_c = pt_cell(sc->cell)->flags & PT_CELL_STATE, GH = s.G * H;             \
        const size_t BH = (size_t)B * H;                                                      \
        REAL *h = copy_of(s.h0, BH * sizeof(REAL)), *c = copy_of(s.c0, BH * sizeof(REAL));    \
        REAL *want = new_##SFX(T * BH), *work = new_##SFX(2 * (size_t)B * GH); \
        for (int t = 0; t < T; t++) {                                                         \
            pt_step_##SFX(sc->cell, B, I, H, nthreads, s.x + (size_t)t * B * I, h, c, s.w_ih, \
                          s.w_hh, s.b_ih, s.b_hh, s.peep, h, c, work);                        \
            memcpy(want + t * BH, h, BH * sizeof(REAL));                                      \
        }                                                                                     \
        for (int training = 0; training < 2; training++) {                                   \
            REAL *out = new_##SFX(T * BH), *h_n = new_##SFX(BH);      \
            REAL *c_n = new_##SFX(BH);                                            \
            REAL *xg = new_##SFX((size_t)T * B * GH);                             \
            REAL *hs = new_##SFX((T + 1) * BH), *cs = new_##SFX((T + 1) * BH); \
            REAL *keep = new_##SFX(T * BH);                                       \
            seq_forward_##SFX(&s, training, out, h_n, c_n, xg, hs, cs, keep);                 \
            char what[160];                                                                   \
            snprintf(what, sizeof what,                                                       \
                     "forward_" #SFX " %s T=%d B=%d I=%d H=%d threads=%d step rows %d %s: ",  \
                     sc->name, T, B, I, H, nthreads, rows, training ? "training" : "inference"); \
            const size_t at = strlen(what);                                                   \
            strcpy(what + at, "out");                                                         \
            expect_close_##SFX(what, T * BH, out, want, tol, tol);                             \
            strcpy(what + at, "h_n");                                                         \
            expect_close_##SFX(what, BH, h_n, h, tol, tol);                                    \
            if (has_c) {                                                                      \
                strcpy(what + at, "c_n");                                                     \
                expect_close_##SFX(what, BH, c_n, c, tol, tol);                                \
            }                                                                                 \
            free(out), free(h_n), free(c_n), free(xg), free(hs), free(cs), free(keep);        \
        }                                                                                     \
        free(h), free(c), free(want), free(work);                                             \
        seq_free_##SFX(&s);                                                                   \
    }

SEQUENCE_CHECKS(float, f)
SEQUENCE_CHECKS(double, d)

static void check_forward(void)
{
    /* Partial columns of units (H = 13, 21) and every remainder of the six-row tile; two
     * threads split 21 units 16 + 5.  rows 0: W_hh packed once per sequence (the core's
     * own tile); 16: BLAS in blocks of 16 rows (where OpenBLAS has small kernels). */
    static const int sizes[][2] = {{5, 3}, {13, 1}, {13, 7}, {21, 9}, {21, 16}};
    for (int c = 0; c < N_SEQ_CASES; c++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            for (int nthreads = 1; nthreads <= 2; nthreads++)
                for (int rows = 0; rows <= 16; rows += 16) {
                    pt_set_step_rows(0, rows);
                    pt_set_step_rows(1, rows);
                    seed(300 + 10 * c + k);
                    check_forward_f(&seq_cases[c], 4, sizes[k][1], 7, sizes[k][0], nthreads,
                                    rows, 2e-5);
                    seed(300 + 10 * c + k);
                    check_forward_d(&seq_cases[c], 4, sizes[k][1], 7, sizes[k][0], nthreads,
                                    rows, 1e-12);
                }
    pt_set_step_rows(0, 0);
    pt_set_step_rows(1, 0);
}

/* loss = sum(r_out * out) + sum(r_h * h_n) + sum(r_c * c_n) of the float64 forward. */
static double seq_loss(const seq_d *s, const double *r_out, const double *r_h,
                       const double *r_c)
{
    const size_t BH = (size_t)s->B * s->H, TBH = s->T * BH;
    double *out = malloc(TBH * sizeof *out), *h_n = malloc(BH * sizeof *h_n);
    double *c_n = malloc(BH * sizeof *c_n);
    seq_forward_d(s, 0, out, h_n, c_n, NULL, NULL, NULL, NULL);
    double loss = 0;
    for (size_t i = 0; i < TBH; i++) loss += r_out[i] * out[i];
    for (size_t i = 0; i < BH; i++)
        loss += r_h[i] * h_n[i] + (pt_cell(s->cell)->flags & PT_CELL_STATE ? r_c[i] * c_n[i] : 0);
    free(out), free(h_n), free(c_n);
    return loss;
}

/* pt_backward_d's gradients against central differences of seq_loss, every element of
 * every input (tests/test_core_gradients.py's tolerances). */
static void check_backward(const seq_case *sc, int nthreads, int rows)
{
    const int T = 3, B = 2, I = 3, H = 5;
    seq_d s;
    seed(400 + (sc - seq_cases));
    seq_init_d(&s, sc, T, B, I, H, nthreads);
    const int flags = pt_cell(sc->cell)->flags, has_c = flags & PT_CELL_STATE;
    const int G = s.G, GH = G * H;
    const size_t BH = (size_t)B * H, TBH = T * BH, TBGH = TBH * G;
    double *r_out = random_d(TBH, 1), *r_h = random_d(BH, 1), *r_c = random_d(BH, 1);
    double *out = new_d(TBH), *h_n = new_d(BH), *c_n = new_d(BH);
    double *xg = new_d(TBGH), *hs = new_d((T + 1) * BH);
    double *cs = new_d((T + 1) * BH), *keep = new_d(TBH);
    pt_set_step_rows(0, rows);
    pt_set_step_rows(1, rows);
    seq_forward_d(&s, 1, out, h_n, c_n, xg, hs, cs, keep);

    double *dgx = new_d(TBGH), *dgh = flags & PT_HIDDEN_APART ? new_d(TBGH) : dgx;
    double *dh = new_d(BH), *dc = new_d(BH), *dx = new_d((size_t)T * B * I);
    double *dh0 = new_d(BH), *dc0 = new_d(BH);
    double *dw_ih = zeros_d((size_t)GH * I), *dw_hh = zeros_d((size_t)GH * H);
    double *db_ih = zeros_d(GH), *db_hh = zeros_d(GH), *dpeep = zeros_d(3 * H);
    pt_dims d = {sc->cell, T, B, I, H, G, NULL, nthreads, NULL, NULL};
    pt_backward_d(&d, s.x, s.w_ih, s.w_hh, s.peep, xg, hs, has_c ? cs : NULL,
                  flags & PT_KEEPS ? keep : NULL, r_out, r_h, has_c ? r_c : NULL, dgx, dgh, dh,
                  has_c ? dc : NULL, dx, dh0, has_c ? dc0 : NULL, dw_ih, dw_hh, db_ih, db_hh,
                  s.peep ? dpeep : NULL);

    struct {
        const char *name;
        double *value, *grad;
        size_t n;
    } inputs[] = {
        {"x", s.x, dx, (size_t)T * B * I}, {"h0", s.h0, dh0, BH},
        {"c0", has_c ? s.c0 : NULL, dc0, BH}, {"w_ih", s.w_ih, dw_ih, (size_t)GH * I},
        {"w_hh", s.w_hh, dw_hh, (size_t)GH * H}, {"b_ih", s.b_ih, db_ih, GH},
        {"b_hh", s.b_hh, db_hh, GH}, {"peephole", s.peep, dpeep, 3 * (size_t)H},
    };
    for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
        if (!inputs[k].value) continue;
        double *numeric = new_d(inputs[k].n);
        for (size_t i = 0; i < inputs[k].n; i++) {
            const double eps = 1e-6, v = inputs[k].value[i];
            inputs[k].value[i] = v + eps;
            const double plus = seq_loss(&s, r_out, r_h, r_c);
            inputs[k].value[i] = v - eps;
            const double minus = seq_loss(&s, r_out, r_h, r_c);
            inputs[k].value[i] = v;
            numeric[i] = (plus - minus) / (2 * eps);
        }
        char what[160];
        snprintf(what, sizeof what, "backward_d %s threads=%d step rows %d: d%s", sc->name,
                 nthreads, rows, inputs[k].name);
        expect_close_d(what, inputs[k].n, inputs[k].grad, numeric, 1e-6, 1e-8);
        free(numeric);
    }
    pt_set_step_rows(0, 0);
    pt_set_step_rows(1, 0);
    free(r_out), free(r_h), free(r_c), free(out), free(h_n), free(c_n), free(xg), free(hs);
    free(cs), free(keep), free(dgx), free(dh), free(dc), free(dx), free(dh0), free(dc0);
    if (dgh != dgx) free(dgh);
    free(dw_ih), free(dw_hh), free(db_ih), free(db_hh), free(dpeep);
    seq_free_d(&s);
}

static void check_backward_all(void)
{
    for (int c = 0; c < N_SEQ_CASES; c++)
        if (seq_cases[c].cell != PT_RNN_RELU)   /* its kink is no place for differences */
            for (int nthreads = 1; nthreads <= 2; nthreads++)
                for (int rows = 0; rows <= 16; rows += 16)
                    check_backward(&seq_cases[c], nthreads, rows);
}

/* The parts by name; no argument runs them all. */
static const struct {
    const char *name;
    void (*run)(void);
} parts[] = {{"small_gemm", check_small_gemm}, {"network_step", check_network_step},
             {"forward", check_forward}, {"backward", check_backward_all}};
#define N_PARTS (int)(sizeof parts / sizeof parts[0])

int main(int argc, char **argv)
{
    pt_set_blas(sgemm, dgemm, sgemv, dgemv);
    for (int i = 1; i < argc; i++) {
        int known = 0;
        for (int k = 0; k < N_PARTS; k++) known |= strcmp(argv[i], parts[k].name) == 0;
        if (!known) {
            fprintf(stderr, "check_core: no part named %s\n", argv[i]);
            return 2;
        }
    }
    for (int k = 0; k < N_PARTS; k++) {
        int chosen = argc == 1;
        for (int i = 1; i < argc; i++) chosen |= strcmp(argv[i], parts[k].name) == 0;
        if (chosen) parts[k].run();
    }
    printf("check_core: %ld checks, %ld failed (OpenMP %s)\n", checks, failures,
           pt_have_openmp() ? "on" : "off");
    return failures != 0;
}
