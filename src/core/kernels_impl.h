/* Kernels for one floating type.  kernels.c includes this file once per type with
 * REAL (float/double), SFX (f/d), SIGMOID, TANH, GEMM, GEMV, EXP and LOG defined. */

#define PT_CAT2(a, b) a##_##b
#define PT_CAT(a, b) PT_CAT2(a, b)
#define NAME(x) PT_CAT(x, SFX)

/* Column-major C = alpha op(A) op(B) + beta C (callers express row-major products this
 * way).  Empty products are skipped, which some BLAS builds reject; a one-column product
 * goes to GEMV, since OpenBLAS's GEMM is many times slower there (a batch of one, as in
 * incremental inference). */
static void NAME(gemm)(char ta, char tb, int m, int n, int k, REAL alpha, const REAL *a,
                       int lda, const REAL *b, int ldb, REAL beta, REAL *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    if (n == 1 && k > 0) {
        int inc_b = tb == 'N' ? 1 : ldb, one = 1;
        if (ta == 'N') {
            char t = 'N';
            GEMV(&t, &m, &k, &alpha, (REAL *)a, &lda, (REAL *)b, &inc_b, &beta, c, &one);
        } else {
            char t = 'T';
            GEMV(&t, &k, &m, &alpha, (REAL *)a, &lda, (REAL *)b, &inc_b, &beta, c, &one);
        }
        return;
    }
    GEMM(&ta, &tb, &m, &n, &k, &alpha, (REAL *)a, &lda, (REAL *)b, &ldb, &beta, c, &ldc);
}

/* The per-step recurrent product, in blocks of pt_step_rows rows of C.  OpenBLAS packs
 * both operands of a GEMM before multiplying; for a step's product (few columns: the
 * batch) that copy of the weights costs half as much as the multiply.  Blocks this small
 * take its unpacked small-matrix kernels instead: measured 1.3-1.5x faster per step on
 * AVX-512 (see README, benchmarks).  Large products keep single calls. */
static void NAME(gemm_rows)(char ta, char tb, int m, int n, int k, REAL alpha, const REAL *a,
                            int lda, const REAL *b, int ldb, REAL beta, REAL *c, int ldc)
{
    int rows = pt_step_rows[ta == 'T'];
    /* Only blocks small enough for those kernels pay; a larger block is packed anyway. */
    if (rows <= 0 || n == 1 || (long long)rows * n * k > PT_SMALL_GEMM) rows = m;
    for (int i = 0; i < m; i += rows) {
        int mm = m - i < rows ? m - i : rows;
        const REAL *ai = ta == 'T' ? a + (size_t)i * lda : a + i;
        NAME(gemm)(ta, tb, mm, n, k, alpha, ai, lda, b, ldb, beta, c + i, ldc);
    }
}

/* ---- the cells' row kernels: fused gate math for one batch row ---- */

/* What every forward (and step) row kernel takes: units [0, n) of one batch row's share of
 * a thread's slice, each pointer already at the slice's first unit, gate block k at k * H
 * further on.  A pointer the cell or the call has no use for is NULL. */
typedef struct {
    int n, H;
    REAL *g;           /* gate pre-activations in, activations out (what backward reads) */
    const REAL *hh;    /* PT_HIDDEN_APART: the recurrent product W_hh h_{t-1}, */
    const REAL *b_hh;  /* and its bias (NULL: none) */
    const REAL *extra; /* the extra weights, blocks H apart (the LSTM's peepholes), or NULL */
    const REAL *h_prev, *c_prev;
    REAL *h_new, *c_new;
    REAL *out;         /* this step's output; NULL in a single step */
    REAL *keep;        /* PT_KEEPS in a training forward: what backward needs beyond g */
} NAME(pt_fwd_row);

/* What every backward row kernel takes, laid out as above.  dh holds dL/dh_t on entry
 * (its recurrent part) and the elementwise part of dL/dh_{t-1} on exit; dc likewise. */
typedef struct {
    int n, H;
    const REAL *g, *keep;            /* what the forward left */
    const REAL *h_prev, *c_prev, *c; /* the states before the step, and c_t */
    const REAL *dout;                /* this step's output gradient */
    REAL *dh, *dc;
    REAL *dgx, *dgh;   /* gate gradients, input and hidden side (the same but with
                        * PT_HIDDEN_APART) */
    const REAL *extra;
    REAL *d_extra;     /* the extra weights' gradient, added into */
} NAME(pt_bwd_row);

/* The flags below are compile-time constants after inlining (each row function calls its
 * body once per flag combination): branch-free bodies are what the vectoriser needs. */
#define PT_BODY static inline __attribute__((always_inline))

PT_BODY void NAME(rnn_fwd_body)(int n, REAL *a, REAL *h_new, REAL *out, const int relu,
                                const int has_out)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL v = relu ? (a[j] > 0 ? a[j] : 0) : TANH(a[j]);
        a[j] = v;
        h_new[j] = v;
        if (has_out) out[j] = v;
    }
}

/* A store under a runtime test stays scalar where the target has no masked stores (NEON,
 * SSE2): whether there is an output is a constant in each call of the body. */
PT_CLONES static void NAME(rnn_tanh_fwd_row)(const NAME(pt_fwd_row) *r)
{
    if (r->out)
        NAME(rnn_fwd_body)(r->n, r->g, r->h_new, r->out, 0, 1);
    else
        NAME(rnn_fwd_body)(r->n, r->g, r->h_new, r->out, 0, 0);
}

PT_CLONES static void NAME(rnn_relu_fwd_row)(const NAME(pt_fwd_row) *r)
{
    if (r->out)
        NAME(rnn_fwd_body)(r->n, r->g, r->h_new, r->out, 1, 1);
    else
        NAME(rnn_fwd_body)(r->n, r->g, r->h_new, r->out, 1, 0);
}

PT_BODY void NAME(lstm_fwd_body)(int n, REAL *gi, REAL *gf, REAL *gg, REAL *go,
                                 const REAL *c_prev, REAL *c_new, REAL *h_new, REAL *out,
                                 const REAL *pi, const REAL *pf, const REAL *po,
                                 const int peep, const int has_out)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL cp = c_prev[j];
        REAL i = SIGMOID(gi[j] + (peep ? pi[j] * cp : 0));
        REAL f = SIGMOID(gf[j] + (peep ? pf[j] * cp : 0));
        REAL g = TANH(gg[j]);
        REAL c = f * cp + i * g;
        REAL o = SIGMOID(go[j] + (peep ? po[j] * c : 0));
        REAL h = o * TANH(c);
        gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
        c_new[j] = c;
        h_new[j] = h;
        if (has_out) out[j] = h;
    }
}

/* Peephole weights (extra): input and forget gates on c_{t-1}, output gate on c_t. */
PT_CLONES static void NAME(lstm_fwd_row)(const NAME(pt_fwd_row) *r)
{
    const int n = r->n, H = r->H;
    REAL *gi = r->g, *gf = gi + H, *gg = gi + 2 * H, *go = gi + 3 * H, *out = r->out;
    const REAL *c_prev = r->c_prev, *pi = r->extra;
    const REAL *pf = pi ? pi + H : NULL, *po = pi ? pi + 2 * H : NULL;
    REAL *c_new = r->c_new, *h_new = r->h_new;
    if (pi && out)
        NAME(lstm_fwd_body)(n, gi, gf, gg, go, c_prev, c_new, h_new, out, pi, pf, po, 1, 1);
    else if (pi)
        NAME(lstm_fwd_body)(n, gi, gf, gg, go, c_prev, c_new, h_new, out, pi, pf, po, 1, 0);
    else if (out)
        NAME(lstm_fwd_body)(n, gi, gf, gg, go, c_prev, c_new, h_new, out, pi, pf, po, 0, 1);
    else
        NAME(lstm_fwd_body)(n, gi, gf, gg, go, c_prev, c_new, h_new, out, pi, pf, po, 0, 0);
}

PT_BODY void NAME(gru_fwd_body)(int n, REAL *gr, REAL *gz, REAL *gn, const REAL *hr,
                                const REAL *hz, const REAL *hn, const REAL *bhr,
                                const REAL *bhz, const REAL *bhn, const REAL *h_prev,
                                REAL *h_new, REAL *out, REAL *hn_keep, const int bias,
                                const int train)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL hnb = hn[j] + (bias ? bhn[j] : 0);
        REAL r = SIGMOID(gr[j] + hr[j] + (bias ? bhr[j] : 0));
        REAL z = SIGMOID(gz[j] + hz[j] + (bias ? bhz[j] : 0));
        REAL nn = TANH(gn[j] + r * hnb);
        REAL h = (1 - z) * nn + z * h_prev[j];
        gr[j] = r; gz[j] = z; gn[j] = nn;
        h_new[j] = h;
        if (train) {
            hn_keep[j] = hnb;
            out[j] = h;
        }
    }
}

/* keep (the hidden n-part with its bias) and out are given together in a training
 * forward; otherwise only out may be given. */
PT_CLONES static void NAME(gru_fwd_row)(const NAME(pt_fwd_row) *rw)
{
    const int n = rw->n, H = rw->H;
    REAL *gr = rw->g, *gz = gr + H, *gn = gr + 2 * H;
    const REAL *hr = rw->hh, *hz = hr + H, *hn = hr + 2 * H, *bhr = rw->b_hh;
    const REAL *bhz = bhr ? bhr + H : NULL, *bhn = bhr ? bhr + 2 * H : NULL;
    const REAL *h_prev = rw->h_prev;
    REAL *h_new = rw->h_new, *out = rw->out, *hn_keep = rw->keep;
    if (hn_keep) {
        if (bhr)
            NAME(gru_fwd_body)(n, gr, gz, gn, hr, hz, hn, bhr, bhz, bhn, h_prev, h_new, out,
                               hn_keep, 1, 1);
        else
            NAME(gru_fwd_body)(n, gr, gz, gn, hr, hz, hn, bhr, bhz, bhn, h_prev, h_new, out,
                               hn_keep, 0, 1);
    } else {
        if (bhr)
            NAME(gru_fwd_body)(n, gr, gz, gn, hr, hz, hn, bhr, bhz, bhn, h_prev, h_new, out,
                               hn_keep, 1, 0);
        else
            NAME(gru_fwd_body)(n, gr, gz, gn, hr, hz, hn, bhr, bhz, bhn, h_prev, h_new, out,
                               hn_keep, 0, 0);
        if (out) memcpy(out, h_new, n * sizeof(REAL));
    }
}

PT_BODY void NAME(rnn_bwd_body)(int n, const REAL *a, const REAL *dout, REAL *dh, REAL *dg,
                                const int relu)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL d = dh[j] + dout[j];
        dg[j] = relu ? (a[j] > 0 ? d : 0) : d * (1 - a[j] * a[j]);
        dh[j] = 0;
    }
}

PT_CLONES static void NAME(rnn_tanh_bwd_row)(const NAME(pt_bwd_row) *r)
{
    NAME(rnn_bwd_body)(r->n, r->g, r->dout, r->dh, r->dgx, 0);
}

PT_CLONES static void NAME(rnn_relu_bwd_row)(const NAME(pt_bwd_row) *r)
{
    NAME(rnn_bwd_body)(r->n, r->g, r->dout, r->dh, r->dgx, 1);
}

PT_BODY void NAME(lstm_bwd_body)(int n, const REAL *gi, const REAL *gf, const REAL *gg,
                                 const REAL *go, const REAL *c_prev, const REAL *c,
                                 const REAL *dout, REAL *dh, REAL *dc, REAL *di, REAL *df,
                                 REAL *dgg, REAL *dgo, const REAL *pi, const REAL *pf,
                                 const REAL *po, REAL *dpi, REAL *dpf, REAL *dpo,
                                 const int peep)
{
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL i = gi[j], f = gf[j], g = gg[j], o = go[j], cp = c_prev[j];
        REAL dH = dh[j] + dout[j];
        REAL tc = TANH(c[j]);
        REAL do_pre = dH * tc * o * (1 - o);
        REAL dC = dc[j] + dH * o * (1 - tc * tc) + (peep ? do_pre * po[j] : 0);
        REAL di_pre = dC * g * i * (1 - i);
        REAL df_pre = dC * cp * f * (1 - f);
        REAL dg_pre = dC * i * (1 - g * g);
        di[j] = di_pre; df[j] = df_pre; dgg[j] = dg_pre; dgo[j] = do_pre;
        dc[j] = dC * f + (peep ? di_pre * pi[j] + df_pre * pf[j] : 0);
        dh[j] = 0;
        if (peep) {
            dpi[j] += di_pre * cp;
            dpf[j] += df_pre * cp;
            dpo[j] += do_pre * c[j];
        }
    }
}

PT_CLONES static void NAME(lstm_bwd_row)(const NAME(pt_bwd_row) *r)
{
    const int n = r->n, H = r->H;
    const REAL *gi = r->g, *gf = gi + H, *gg = gi + 2 * H, *go = gi + 3 * H;
    REAL *di = r->dgx, *df = di + H, *dgg = di + 2 * H, *dgo = di + 3 * H;
    const REAL *pi = r->extra, *pf = pi ? pi + H : NULL, *po = pi ? pi + 2 * H : NULL;
    REAL *dpi = r->d_extra, *dpf = dpi ? dpi + H : NULL, *dpo = dpi ? dpi + 2 * H : NULL;
    if (pi)
        NAME(lstm_bwd_body)(n, gi, gf, gg, go, r->c_prev, r->c, r->dout, r->dh, r->dc, di,
                            df, dgg, dgo, pi, pf, po, dpi, dpf, dpo, 1);
    else
        NAME(lstm_bwd_body)(n, gi, gf, gg, go, r->c_prev, r->c, r->dout, r->dh, r->dc, di,
                            df, dgg, dgo, pi, pf, po, dpi, dpf, dpo, 0);
}

/* keep: the forward's hidden n-part with its bias, which the reset gate multiplied. */
PT_CLONES static void NAME(gru_bwd_row)(const NAME(pt_bwd_row) *rw)
{
    const int n = rw->n, H = rw->H;
    const REAL *gr = rw->g, *gz = gr + H, *gn = gr + 2 * H, *hnb = rw->keep;
    const REAL *h_prev = rw->h_prev, *dout = rw->dout;
    REAL *dh = rw->dh, *dxr = rw->dgx, *dxz = dxr + H, *dxn = dxr + 2 * H;
    REAL *dhr = rw->dgh, *dhz = dhr + H, *dhn = dhr + 2 * H;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        REAL r = gr[j], z = gz[j], nn = gn[j];
        REAL dH = dh[j] + dout[j];
        REAL dn_pre = dH * (1 - z) * (1 - nn * nn);
        REAL dz_pre = dH * (h_prev[j] - nn) * z * (1 - z);
        REAL dr_pre = dn_pre * hnb[j] * r * (1 - r);
        dxr[j] = dr_pre; dxz[j] = dz_pre; dxn[j] = dn_pre;
        dhr[j] = dr_pre; dhz[j] = dz_pre; dhn[j] = dn_pre * r;
        dh[j] = dH * z;
    }
}

/* ---- the cell table (cells.h) with this type's row kernels ---- */

typedef struct {
    void (*forward)(const NAME(pt_fwd_row) *);
    void (*backward)(const NAME(pt_bwd_row) *);
    void (*step)(const NAME(pt_fwd_row) *);
} NAME(pt_cell_rows);

#define PT_CELL_ROWS(code, name, gates, extra_rows, flags, fwd, bwd, step) \
    [code] = {NAME(fwd), NAME(bwd), NAME(step)},
static const NAME(pt_cell_rows) NAME(pt_rows)[PT_NCELLS] = {PT_CELLS(PT_CELL_ROWS)};
#undef PT_CELL_ROWS

/* Recurrent dropout: dst = mask * src (added to dst with add) on this thread's units
 * [j0, j0 + n) of each of the B rows of H; no mask is a mask of ones. */
static void NAME(mask_units)(int B, int H, int j0, int n, const REAL *mask, const REAL *src,
                             REAL *dst, int add)
{
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * H + j0;
#pragma omp simd
        for (int j = 0; j < n; j++)
            dst[o + j] = (add ? dst[o + j] : 0) + (mask ? mask[o + j] * src[o + j] : src[o + j]);
    }
}

/* ---- the per-step products on weights packed once per sequence ---- */

/* Where OpenBLAS has no unpacked small-matrix kernels (its AVX2 and older targets), every
 * per-step product packs the weights again, and a step's product ran at half the sgemm
 * rate.  A sequence multiplies by the same W_hh T times, so pt_forward and pt_backward pack
 * it once into columns of PT_VL units, each column PT_VL-wide and K deep, contiguous, and
 * multiply with the register-blocked tile below (two columns by six batch rows: 12
 * accumulators, the most a 16-register AVX2 file holds beside the operands). */
#define PT_VL (32 / (int)sizeof(REAL))
#define PT_TILE_ROWS 6
typedef REAL NAME(vec) __attribute__((vector_size(32)));

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")

/* C rows [0, R), ldc apart, columns c0 (and c1 when nv == 2) += A (R x K, lda apart)
 * times the packed columns b0 (b1), each K vectors.  nv and R are constants after
 * inlining, so the accumulators stay in registers. */
PT_BODY void NAME(tile)(int K, const REAL *a, int lda, const REAL *b0, const REAL *b1,
                        REAL *c0, REAL *c1, int ldc, const int nv, const int R)
{
    NAME(vec) acc0[PT_TILE_ROWS], acc1[PT_TILE_ROWS];
    const REAL *ar[PT_TILE_ROWS];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        ar[r] = a + (size_t)r * lda;
        memcpy(&acc0[r], c0 + (size_t)r * ldc, sizeof acc0[r]);
        if (nv == 2) memcpy(&acc1[r], c1 + (size_t)r * ldc, sizeof acc1[r]);
    }
    for (int k = 0; k < K; k++) {
        const NAME(vec) w0 = *(const NAME(vec) *)(b0 + (size_t)k * PT_VL);
        const NAME(vec) w1 = nv == 2 ? *(const NAME(vec) *)(b1 + (size_t)k * PT_VL) : w0;
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const REAL x = ar[r][k];
            acc0[r] += w0 * x;
            if (nv == 2) acc1[r] += w1 * x;
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        memcpy(c0 + (size_t)r * ldc, &acc0[r], sizeof acc0[r]);
        if (nv == 2) memcpy(c1 + (size_t)r * ldc, &acc1[r], sizeof acc1[r]);
    }
}

/* All B rows of C through the tile, R a constant in each case. */
PT_BODY void NAME(tile_rows)(int B, int K, const REAL *a, int lda, const REAL *b0,
                             const REAL *b1, REAL *c0, REAL *c1, int ldc, const int nv)
{
    /* A tile of one to three rows is bound by its loads; such a remainder is merged with
     * the last full tile and split evenly (32 rows: 6 6 6 6 4 4, not 6 6 6 6 6 2). */
    int full = B / PT_TILE_ROWS, rest = B % PT_TILE_ROWS;
    if (full > 0 && rest > 0 && rest < 4) full--, rest += PT_TILE_ROWS;
    int b = 0;
    for (int t = 0; t < full; t++, b += PT_TILE_ROWS)
        NAME(tile)(K, a + (size_t)b * lda, lda, b0, b1, c0 + (size_t)b * ldc,
                   c1 + (size_t)b * ldc, ldc, nv, PT_TILE_ROWS);
    while (rest > 0) {
        const int R = rest > PT_TILE_ROWS ? rest - rest / 2 : rest;
        const REAL *ab = a + (size_t)b * lda;
        REAL *cb0 = c0 + (size_t)b * ldc, *cb1 = c1 + (size_t)b * ldc;
        switch (R) {
        case 6: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 6); break;
        case 5: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 5); break;
        case 4: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 4); break;
        case 3: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 3); break;
        case 2: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 2); break;
        default: NAME(tile)(K, ab, lda, b0, b1, cb0, cb1, ldc, nv, 1); break;
        }
        b += R;
        rest -= R;
    }
}

/* C (B rows, ldc apart) += A (B x K, lda apart) times packed columns [q0, q1) of bp.
 * Column q holds units [p VL, p VL + VL) of gate block g, p = q / G and g = q % G; its
 * place in a row of C is g * H + p VL.  The last column of a gate block may hold fewer
 * than PT_VL units (H not a multiple of PT_VL): it goes through a scratch tile. */
PT_CLONES static void NAME(packed_product)(int B, int K, int G, int H, const REAL *a,
                                           int lda, const REAL *bp, int q0, int q1, REAL *c,
                                           int ldc)
{
    for (int q = q0; q < q1;) {
        const int p = q / G, g = q % G, n = H - p * PT_VL < PT_VL ? H - p * PT_VL : PT_VL;
        const REAL *b0 = bp + (size_t)q * K * PT_VL;
        REAL *c0 = c + (size_t)g * H + (size_t)p * PT_VL;
        if (n < PT_VL) {
            REAL scratch[PT_TILE_ROWS * 8];
            for (int b = 0; b < B; b += PT_TILE_ROWS) {
                const int R = B - b < PT_TILE_ROWS ? B - b : PT_TILE_ROWS;
                memset(scratch, 0, sizeof scratch);
                for (int r = 0; r < R; r++)
                    memcpy(scratch + r * PT_VL, c0 + (size_t)(b + r) * ldc, n * sizeof(REAL));
                NAME(tile_rows)(R, K, a + (size_t)b * lda, lda, b0, b0, scratch, scratch,
                                PT_VL, 1);
                for (int r = 0; r < R; r++)
                    memcpy(c0 + (size_t)(b + r) * ldc, scratch + r * PT_VL, n * sizeof(REAL));
            }
            q++;
            continue;
        }
        const int p1 = (q + 1) / G, g1 = (q + 1) % G;
        if (q + 1 < q1 && H - p1 * PT_VL >= PT_VL) {
            NAME(tile_rows)(B, K, a, lda, b0, b0 + (size_t)K * PT_VL, c0,
                            c + (size_t)g1 * H + (size_t)p1 * PT_VL, ldc, 2);
            q += 2;
        } else {
            NAME(tile_rows)(B, K, a, lda, b0, b0, c0, c0, ldc, 1);
            q++;
        }
    }
}

#pragma GCC pop_options

/* The forward's packing of W_hh (G H x H): for the columns of units [j0, j1) (j0 a multiple
 * of PT_VL), column q = p G + g holds rows g H + p VL + l of W_hh, k running over H. */
static void NAME(pack_forward)(int G, int H, const REAL *w_hh, int j0, int j1, REAL *bp)
{
    for (int p = j0 / PT_VL; p * PT_VL < j1; p++)
        for (int g = 0; g < G; g++) {
            REAL *col = bp + (size_t)(p * G + g) * H * PT_VL;
            for (int l = 0; l < PT_VL; l++) {
                const int u = p * PT_VL + l;
                const REAL *row = w_hh + ((size_t)g * H + u) * H;
                for (int k = 0; k < H; k++) col[(size_t)k * PT_VL + l] = u < H ? row[k] : 0;
            }
        }
}

/* The backward's: dh = dG W_hh, so column p holds columns p VL + l of W_hh, k running over
 * its G H rows. */
static void NAME(pack_backward)(int GH, int H, const REAL *w_hh, int j0, int j1, REAL *bp)
{
    for (int p = j0 / PT_VL; p * PT_VL < j1; p++) {
        REAL *col = bp + (size_t)p * GH * PT_VL;
        for (int k = 0; k < GH; k++)
            for (int l = 0; l < PT_VL; l++) {
                const int u = p * PT_VL + l;
                col[(size_t)k * PT_VL + l] = u < H ? w_hh[(size_t)k * H + u] : 0;
            }
    }
}

/* Room for either packing: the units rounded up to whole columns, 32-byte aligned.  NULL
 * when the per-step products stay with BLAS: where it has small-matrix kernels (see
 * gemm_rows), or when the memory is not there. */
static REAL *NAME(packed_alloc)(int G, int H, int which)
{
    if (pt_step_rows[which] > 0) return NULL;
    size_t cols = (size_t)(H + PT_VL - 1) / PT_VL * G;
    size_t bytes = (cols * H * PT_VL * sizeof(REAL) + 31) / 32 * 32;
    return aligned_alloc(32, bytes);
}

/* ---- whole-sequence forward ---- */

void NAME(pt_forward)(const pt_dims *d, int training, const REAL *x, const REAL *w_ih,
                      const REAL *w_hh, const REAL *b_ih, const REAL *b_hh, const REAL *peep,
                      const REAL *h0, const REAL *c0, REAL *xg, REAL *hs, REAL *cs,
                      REAL *hn_cache, REAL *hh_work, REAL *out, REAL *h_n, REAL *c_n)
{
    const int T = d->T, B = d->B, I = d->n_in, H = d->H, GH = d->G * d->H;
    const int TB = d->T * d->B, flags = pt_cell(d->cell)->flags;
    const int has_c = flags & PT_CELL_STATE, apart = flags & PT_HIDDEN_APART;
    void (*const row_kernel)(const NAME(pt_fwd_row) *) = NAME(pt_rows)[d->cell].forward;
    const size_t BH = (size_t)B * H, BGH = (size_t)B * GH;
    const REAL *hmask = d->hmask;
    REAL *hm = d->hmasked;
    REAL *const packed = NAME(packed_alloc)(d->G, H, 1);
    /* Inference keeps one masked copy of h, rewritten for the next step after the gate
     * math: no thread may do that while another still reads it, hence a barrier between. */
    const int product_barrier = !packed || (hmask && !training);

#pragma omp parallel num_threads(d->nthreads)
    {
        pt_share s;
        pt_thread_share(H, TB, GH, &s);
        const int j0 = s.j0, j1 = s.j1, r0 = s.r0, r1 = s.r1, m0 = s.m0, m1 = s.m1;
        const int hp = j1 - j0;
        /* With packed weights a thread multiplies the gate rows of its own units, so its
         * gate math needs no other thread's product: one barrier a step, not two.  A
         * thread with no units (more threads than blocks of 8) has no columns: its j0 = H
         * is no multiple of PT_VL, and rounding would give it its neighbour's last. */
        const int q0 = j0 / PT_VL * d->G, q1 = hp > 0 ? (j1 + PT_VL - 1) / PT_VL * d->G : q0;
        if (packed && hp > 0) NAME(pack_forward)(d->G, H, w_hh, j0, j1, packed);

        /* Input projection of every time step at once; the biases that are plain sums
         * (all but a hidden bias kept apart, as GRU's inside the reset product) go in
         * first. */
        for (int r = r0; r < r1; r++) {
            REAL *row = xg + (size_t)r * GH;
            for (int k = 0; k < GH; k++)
                row[k] = (b_ih ? b_ih[k] : 0) + (b_hh && !apart ? b_hh[k] : 0);
        }
        NAME(gemm)('T', 'N', GH, r1 - r0, I, 1, w_ih, I, x + (size_t)r0 * I, I, 1,
                   xg + (size_t)r0 * GH, GH);
        for (int b = 0; b < B; b++) {
            memcpy(hs + (size_t)b * H + j0, h0 + (size_t)b * H + j0, hp * sizeof(REAL));
            if (has_c)
                memcpy(cs + (size_t)b * H + j0, c0 + (size_t)b * H + j0, hp * sizeof(REAL));
        }
        if (hmask) NAME(mask_units)(B, H, j0, hp, hmask, h0, hm, 0);
#pragma omp barrier

        for (int t = 0; t < T; t++) {
            /* Training keeps every state; inference ping-pongs two h slots and updates
             * c in place (a thread only touches its own units of c). */
            const REAL *h_prev = hs + (training ? (size_t)t : (size_t)(t & 1)) * BH;
            REAL *h_next = hs + (training ? (size_t)(t + 1) : (size_t)((t + 1) & 1)) * BH;
            const REAL *c_prev = has_c ? cs + (training ? (size_t)t * BH : 0) : NULL;
            REAL *c_next = has_c ? cs + (training ? (size_t)(t + 1) * BH : 0) : NULL;
            REAL *xg_t = xg + (size_t)t * BGH;
            REAL *out_t = out + (size_t)t * BH;
            REAL *keep_t = training && hn_cache ? hn_cache + (size_t)t * BH : NULL;

            /* Recurrent term: one GEMM per thread over a contiguous block of gate rows
             * (fewer, larger BLAS calls than one per gate), added into the gates or kept
             * apart; the gate math below then needs every block, hence the barrier. */
            const REAL *h_in = hmask ? hm + (training ? (size_t)t * BH : 0) : h_prev;
            if (packed) {
                if (apart)
                    for (int b = 0; b < B; b++)
                        for (int g = 0; g < d->G; g++)
                            memset(hh_work + (size_t)b * GH + (size_t)g * H + j0, 0,
                                   hp * sizeof(REAL));
                NAME(packed_product)(B, H, d->G, H, h_in, H, packed, q0, q1,
                                     apart ? hh_work : xg_t, GH);
            } else {
                NAME(gemm_rows)('T', 'N', m1 - m0, B, H, 1, w_hh + (size_t)m0 * H, H, h_in,
                                H, apart ? 0 : 1, (apart ? hh_work : xg_t) + m0, GH);
            }
            if (product_barrier) {
#pragma omp barrier
            }
            for (int b = 0; b < B; b++) {
                const size_t sb = (size_t)b * H + j0, gb = (size_t)b * GH + j0;
                int active = !d->lengths || t < d->lengths[b];
                if (!active) {
                    memcpy(h_next + sb, h_prev + sb, hp * sizeof(REAL));
                    if (has_c && training)
                        memcpy(c_next + sb, c_prev + sb, hp * sizeof(REAL));
                    memset(out_t + sb, 0, hp * sizeof(REAL));
                    continue;
                }
                NAME(pt_fwd_row) row = {
                    .n = hp, .H = H, .g = xg_t + gb,
                    .hh = apart ? hh_work + gb : NULL,
                    .b_hh = apart && b_hh ? b_hh + j0 : NULL,
                    .extra = peep ? peep + j0 : NULL,
                    .h_prev = h_prev + sb, .c_prev = has_c ? c_prev + sb : NULL,
                    .h_new = h_next + sb, .c_new = has_c ? c_next + sb : NULL,
                    .out = out_t + sb, .keep = keep_t ? keep_t + sb : NULL,
                };
                row_kernel(&row);
            }
            /* The next product's operand; this step's was read before the barrier above. */
            if (hmask && t + 1 < T)
                NAME(mask_units)(B, H, j0, hp, hmask, h_next,
                                 hm + (training ? (size_t)(t + 1) * BH : 0), 0);
#pragma omp barrier
        }
        const REAL *h_last = hs + (training ? (size_t)T : (size_t)(T & 1)) * BH;
        for (int b = 0; b < B; b++) {
            memcpy(h_n + (size_t)b * H + j0, h_last + (size_t)b * H + j0, hp * sizeof(REAL));
            if (has_c)
                memcpy(c_n + (size_t)b * H + j0, cs + (training ? (size_t)T * BH : 0) +
                       (size_t)b * H + j0, hp * sizeof(REAL));
        }
    }
    free(packed);
}

/* ---- backpropagation through time ---- */

void NAME(pt_backward)(const pt_dims *d, const REAL *x, const REAL *w_ih, const REAL *w_hh,
                       const REAL *peep, const REAL *xg, const REAL *hs, const REAL *cs,
                       const REAL *hn_cache, const REAL *d_out, const REAL *d_hn,
                       const REAL *d_cn, REAL *dgx, REAL *dgh, REAL *dh, REAL *dc, REAL *dx,
                       REAL *dh0, REAL *dc0, REAL *dw_ih, REAL *dw_hh, REAL *db_ih,
                       REAL *db_hh, REAL *dpeep)
{
    const int T = d->T, B = d->B, I = d->n_in, H = d->H, G = d->G, GH = d->G * d->H;
    const int TB = d->T * d->B, has_c = pt_cell(d->cell)->flags & PT_CELL_STATE;
    void (*const row_kernel)(const NAME(pt_bwd_row) *) = NAME(pt_rows)[d->cell].backward;
    const size_t BH = (size_t)B * H, BGH = (size_t)B * GH;
    const REAL *hmask = d->hmask, *hm = d->hmasked;
    REAL *const packed = NAME(packed_alloc)(G, H, 0);

#pragma omp parallel num_threads(d->nthreads)
    {
        pt_share s;
        pt_thread_share(H, TB, GH, &s);
        const int j0 = s.j0, j1 = s.j1, r0 = s.r0, r1 = s.r1, m0 = s.m0, m1 = s.m1;
        const int hp = j1 - j0;
        if (packed && hp > 0) NAME(pack_backward)(GH, H, w_hh, j0, j1, packed); /* as in forward */

        for (int b = 0; b < B; b++) {
            const size_t sb = (size_t)b * H + j0;
            for (int j = 0; j < hp; j++) {
                dh[sb + j] = d_hn ? d_hn[sb + j] : 0;
                if (has_c) dc[sb + j] = d_cn ? d_cn[sb + j] : 0;
            }
        }
        for (int t = T - 1; t >= 0; t--) {
            const REAL *xg_t = xg + (size_t)t * BGH;
            const REAL *dout_t = d_out + (size_t)t * BH;
            REAL *dgx_t = dgx + (size_t)t * BGH;
            REAL *dgh_t = dgh + (size_t)t * BGH;
            for (int b = 0; b < B; b++) {
                const size_t sb = (size_t)b * H + j0, gb = (size_t)b * GH + j0;
                int active = !d->lengths || t < d->lengths[b];
                if (!active) {
                    /* Past the end the state is carried unchanged: its gradient passes
                     * straight through and no gate sees any. */
                    for (int g = 0; g < G; g++) {
                        memset(dgx_t + gb + (size_t)g * H, 0, hp * sizeof(REAL));
                        if (dgh != dgx) memset(dgh_t + gb + (size_t)g * H, 0, hp * sizeof(REAL));
                    }
                    continue;
                }
                NAME(pt_bwd_row) row = {
                    .n = hp, .H = H, .g = xg_t + gb,
                    .keep = hn_cache ? hn_cache + (size_t)t * BH + sb : NULL,
                    .h_prev = hs + (size_t)t * BH + sb,
                    .c_prev = has_c ? cs + (size_t)t * BH + sb : NULL,
                    .c = has_c ? cs + (size_t)(t + 1) * BH + sb : NULL,
                    .dout = dout_t + sb, .dh = dh + sb, .dc = has_c ? dc + sb : NULL,
                    .dgx = dgx_t + gb, .dgh = dgh_t + gb,
                    .extra = peep ? peep + j0 : NULL, .d_extra = dpeep ? dpeep + j0 : NULL,
                };
                row_kernel(&row);
            }
#pragma omp barrier
            /* dh_{t-1}[:, own units] += dgates_t @ W_hh[:, own units], times the recurrent
             * dropout mask when there is one.  The product goes to dh0 (free until the end)
             * first with a mask, and on the packed path in any case: its tiles accumulate
             * into their output term by term, so a mask of ones gives the same bits only if
             * both paths add one finished product to dh. */
            const int apart_dh = hmask || packed;
            if (packed) {
                for (int b = 0; b < B; b++) memset(dh0 + (size_t)b * H + j0, 0, hp * sizeof(REAL));
                NAME(packed_product)(B, GH, 1, H, dgh_t, GH, packed, j0 / PT_VL,
                                     hp > 0 ? (j1 + PT_VL - 1) / PT_VL : j0 / PT_VL, dh0, H);
            } else {
                NAME(gemm_rows)('N', 'N', hp, B, GH, 1, w_hh + j0, H, dgh_t, GH, apart_dh ? 0 : 1,
                                (apart_dh ? dh0 : dh) + j0, H);
            }
            if (apart_dh) NAME(mask_units)(B, H, j0, hp, hmask, dh0, dh, 1);
        }
        for (int b = 0; b < B; b++) {
            const size_t sb = (size_t)b * H + j0;
            memcpy(dh0 + sb, dh + sb, hp * sizeof(REAL));
            if (has_c) memcpy(dc0 + sb, dc + sb, hp * sizeof(REAL));
        }
        /* Parameter gradients over all steps at once, one GEMM per weight and thread over
         * a contiguous block of gate rows (one call, so the states are packed once). */
        if (m1 > m0) {
            NAME(gemm)('N', 'T', H, m1 - m0, TB, 1, hmask ? hm : hs, H, dgh + m0, GH, 1,
                       dw_hh + (size_t)m0 * H, H);
            NAME(gemm)('N', 'T', I, m1 - m0, TB, 1, x, I, dgx + m0, GH, 1, dw_ih + (size_t)m0 * I,
                       I);
            for (int r = 0; r < TB; r++) {
                const REAL *gx = dgx + (size_t)r * GH, *gh = dgh + (size_t)r * GH;
                if (db_ih)
                    for (int k = m0; k < m1; k++) db_ih[k] += gx[k];
                if (db_hh)
                    for (int k = m0; k < m1; k++) db_hh[k] += gh[k];
            }
        }
        /* dx rows r0..r1 = dgates @ W_ih; every thread's gate columns are final after the
         * last barrier of the loop. */
        NAME(gemm)('N', 'N', I, r1 - r0, GH, 1, w_ih, I, dgx + (size_t)r0 * GH, GH, 0,
                   dx + (size_t)r0 * I, I);
    }
    free(packed);
}

/* ---- one step for incremental inference: no allocation ---- */

void NAME(pt_step)(int cell, int B, int I, int H, int nthreads, const REAL *x, const REAL *h,
                   const REAL *c, const REAL *w_ih, const REAL *w_hh, const REAL *b_ih,
                   const REAL *b_hh, const REAL *peep, REAL *h_out, REAL *c_out, REAL *work)
{
    const pt_cell_info *info = pt_cell(cell);
    const int GH = info->gates * H, apart = info->flags & PT_HIDDEN_APART;
    REAL *pre = work, *hh = work + (size_t)B * GH; /* hh: a hidden product kept apart */

#pragma omp parallel num_threads(nthreads)
    {
        pt_share s;
        pt_thread_share(H, B, GH, &s);
        const int j0 = s.j0, m0 = s.m0, m1 = s.m1;
        const int mp = m1 - m0;
        for (int b = 0; b < B; b++)
            for (int k = m0; k < m1; k++)
                pre[(size_t)b * GH + k] = (b_ih ? b_ih[k] : 0) + (b_hh && !apart ? b_hh[k] : 0);
        NAME(gemm_rows)('T', 'N', mp, B, I, 1, w_ih + (size_t)m0 * I, I, x, I, 1, pre + m0, GH);
        NAME(gemm_rows)('T', 'N', mp, B, H, 1, w_hh + (size_t)m0 * H, H, h, H, apart ? 0 : 1,
                        (apart ? hh : pre) + m0, GH);
        /* Every thread has read all of h, and the gate math needs every thread's block of
         * gate rows: only now may h_out (possibly h itself) change. */
#pragma omp barrier
        NAME(pt_step_gates)(cell, B, H, j0, s.j1, work, b_hh, peep, h, c, h_out, c_out);
    }
}

/* A step's gate math for hidden units [j0, j1) of every batch row, from the products in
 * work (laid out as pt_step's); the small-batch network step (smallstep.c) shares it. */
void NAME(pt_step_gates)(int cell, int B, int H, int j0, int j1, REAL *work, const REAL *b_hh,
                         const REAL *peep, const REAL *h, const REAL *c, REAL *h_out,
                         REAL *c_out)
{
    const pt_cell_info *info = pt_cell(cell);
    const int GH = info->gates * H, apart = info->flags & PT_HIDDEN_APART;
    const int has_c = info->flags & PT_CELL_STATE;
    void (*const row_kernel)(const NAME(pt_fwd_row) *) = NAME(pt_rows)[cell].step;
    REAL *pre = work, *hh = work + (size_t)B * GH;
    for (int b = 0; b < B; b++) {
        const size_t sb = (size_t)b * H + j0, gb = (size_t)b * GH + j0;
        NAME(pt_fwd_row) row = {
            .n = j1 - j0, .H = H, .g = pre + gb,
            .hh = apart ? hh + gb : NULL,
            .b_hh = apart && b_hh ? b_hh + j0 : NULL,
            .extra = peep ? peep + j0 : NULL,
            .h_prev = h + sb, .c_prev = has_c ? c + sb : NULL,
            .h_new = h_out + sb, .c_new = has_c ? c_out + sb : NULL,
        };
        row_kernel(&row);
    }
}

/* One token per text through a whole network, for incremental inference: the embedding
 * rows of ids, every recurrent layer (h, c: (L, B, H), updated in place), the decoder and
 * a log-softmax into log_probs (B, V).  One call instead of one per layer plus the decoder
 * and softmax in NumPy: a keystroke makes several such steps, and the calls' own costs
 * were a quarter of each step.  Layer l's arrays are w_ih[l], w_hh[l], ...; threads[l] its
 * team size (threads[L] the decoder's). */
void NAME(pt_network_step)(int cell, int B, int E, int H, int V, int L, const long long *ids,
                           const REAL *embedding, const REAL *const *w_ih,
                           const REAL *const *w_hh, const REAL *const *b_ih,
                           const REAL *const *b_hh, const REAL *const *peep,
                           const REAL *dec_w, const REAL *dec_b, REAL *h, REAL *c,
                           REAL *log_probs, REAL *embedded, REAL *work, const int *threads)
{
    for (int b = 0; b < B; b++)
        memcpy(embedded + (size_t)b * E, embedding + (size_t)ids[b] * E, E * sizeof(REAL));
    const REAL *x = embedded;
    int in = E;
    for (int l = 0; l < L; l++) {
        REAL *hl = h + (size_t)l * B * H, *cl = c ? c + (size_t)l * B * H : NULL;
        NAME(pt_step)(cell, B, in, H, threads[l], x, hl, cl, w_ih[l], w_hh[l], b_ih[l],
                      b_hh[l], peep[l], hl, cl, work);
        x = hl;
        in = H;
    }
    NAME(pt_matmul)(0, 1, B, V, H, x, H, dec_w, H, 0, log_probs, V, threads[L]);
    NAME(pt_log_softmax_rows)(0, B, V, dec_b, log_probs);
}

/* Rows [b0, b1) of logits (B, V): the decoder bias (or NULL) added, then a log-softmax. */
void NAME(pt_log_softmax_rows)(int b0, int b1, int V, const REAL *bias, REAL *logits)
{
    for (int b = b0; b < b1; b++) {
        REAL *z = logits + (size_t)b * V, top, sum = 0;
        if (bias)
            for (int v = 0; v < V; v++) z[v] += bias[v];
        top = z[0];
        for (int v = 1; v < V; v++) top = z[v] > top ? z[v] : top;
        for (int v = 0; v < V; v++) sum += EXP(z[v] - top);
        const REAL shift = top + LOG(sum);
        for (int v = 0; v < V; v++) z[v] -= shift;
    }
}

/* Row-major C (M x N) = op(A) op(B) + beta C, op transposing when ta / tb is set.  The
 * rows of C are shared among the team, one BLAS call per thread: a product as big as a
 * word model's output layer runs on every core without BLAS's own threads, which keep
 * spinning after a call and then take cores from the recurrent kernels' team. */
void NAME(pt_matmul)(int ta, int tb, int M, int N, int K, const REAL *a, int lda,
                     const REAL *b, int ldb, REAL beta, REAL *c, int ldc, int nthreads)
{
#pragma omp parallel num_threads(nthreads)
    {
        int r0, r1;
        pt_slice(M, pt_num_threads(), pt_thread_num(), 1, &r0, &r1);
        /* Column-major view: C^T (N x M) = op(B)^T op(A)^T, this thread's columns. */
        if (r1 > r0)
            NAME(gemm)(tb ? 'T' : 'N', ta ? 'T' : 'N', N, r1 - r0, K, 1, b, ldb,
                       ta ? a + r0 : a + (size_t)r0 * lda, lda, beta, c + (size_t)r0 * ldc,
                       ldc);
    }
}

/* dst[t, b] = src[len_b - 1 - t, b] for t < len_b, zero after: the time reversal of each
 * sequence within its own length, which a reverse-direction layer runs forward over. */
void NAME(pt_reverse)(int T, int B, int F, const int *lengths, const REAL *src, REAL *dst)
{
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            int len = lengths ? lengths[b] : T;
            REAL *to = dst + ((size_t)t * B + b) * F;
            if (t < len)
                memcpy(to, src + ((size_t)(len - 1 - t) * B + b) * F, F * sizeof(REAL));
            else
                memset(to, 0, F * sizeof(REAL));
        }
}

#undef NAME
#undef PT_BODY
#undef PT_VL
#undef PT_TILE_ROWS
#undef PT_CAT
#undef PT_CAT2
