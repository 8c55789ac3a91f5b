/* A whole float32 network's step for a small batch on the products of smallgemm.c (see
 * pt_small_network_step in smallgemm.h).  The gate math and the log-softmax are the
 * core's own (kernels_impl.h), so both steps compute the same thing. */
#include <string.h>

#include "kernels.h"
#include "parallel.h"
#include "smallgemm.h"

void pt_small_network_step(int cell, int B, int E, int H, int V, int L, const long long *ids,
                           const float *embedding, const pt_weights *w_ih,
                           const pt_weights *w_hh, const float *const *b_ih,
                           const float *const *b_hh, const float *const *peep,
                           const pt_weights *dec, const float *dec_b, float *h, float *c,
                           float *log_probs, float *embedded, float *work, int nthreads)
{
    const pt_cell_info *info = pt_cell(cell);
    const int GH = info->gates * H, apart = info->flags & PT_HIDDEN_APART;
    /* hh: the recurrent product where the cell keeps it apart (a GRU's reset gate) */
    float *pre = work, *hh = work + (size_t)B * GH;

#pragma omp parallel num_threads(nthreads)
    {
        const int p = pt_thread_num(), np = pt_num_threads();
        int m0, m1, j0, j1, v0, v1, b0, b1;
        pt_slice(GH, np, p, 8, &m0, &m1);
        pt_slice(H, np, p, 8, &j0, &j1);
        pt_slice(V, np, p, 8, &v0, &v1);
        pt_slice(B, np, p, 1, &b0, &b1);
        for (int b = b0; b < b1; b++)
            memcpy(embedded + (size_t)b * E, embedding + (size_t)ids[b] * E, E * sizeof(float));
#pragma omp barrier
        const float *x = embedded;
        int in = E;
        for (int l = 0; l < L; l++) {
            float *hl = h + (size_t)l * B * H, *cl = c ? c + (size_t)l * B * H : NULL;
            const float *bi = b_ih[l], *bh = b_hh[l];
            for (int b = 0; b < B; b++)
                for (int k = m0; k < m1; k++)
                    pre[(size_t)b * GH + k] = (bi ? bi[k] : 0) + (bh && !apart ? bh[k] : 0);
            pt_small_gemm(&w_ih[l], B, in, m0, m1, x, in, pre, GH, 1);
            pt_small_gemm(&w_hh[l], B, H, m0, m1, hl, H, apart ? hh : pre, GH, !apart);
            /* Every thread has read all of h_l and written its gate rows: now h_l may
             * change, and the gate math has every row it needs. */
#pragma omp barrier
            pt_step_gates_f(cell, B, H, j0, j1, work, bh, peep[l], hl, cl, hl, cl);
            /* The next product reads every unit of h_l, and overwrites work. */
#pragma omp barrier
            x = hl;
            in = H;
        }
        pt_small_gemm(dec, B, H, v0, v1, x, H, log_probs, V, 0);
#pragma omp barrier
        pt_log_softmax_rows_f(b0, b1, V, dec_b, log_probs);
    }
}
