/* The recurrent cells the core knows, one row each.  A new cell is a row here plus its
 * row kernels in kernels_impl.h (and a row in predtext/backend/cells.py, which a test
 * checks against this table).
 *
 *   X(code, name, gates, extra_rows, flags, forward row, backward row, step row)
 *
 * code:       the cell's value in enum pt_cell (rows are numbered in order);
 * name:       what the Python shim calls it;
 * gates:      blocks of H rows in w_ih and w_hh, in torch's order;
 * extra_rows: rows of the optional (extra_rows, H) per-unit weights the cell takes beside
 *             torch's four (the LSTM's peepholes on i, f, o), 0 for none;
 * flags:      PT_CELL_STATE   the cell carries c beside h (an LSTM);
 *             PT_HIDDEN_APART the recurrent product and its bias stay out of the gate
 *                             pre-activations until the row kernel (a GRU's reset gate
 *                             multiplies them), so backward has separate hidden-side gate
 *                             gradients;
 *             PT_KEEPS        a training forward keeps one more (T, B, H) array for
 *                             backward (a GRU's hidden n-part with its bias);
 * rows:       the row kernels' base names (kernels_impl.h adds the type suffix).  A step
 *             runs the step row kernel with no output and nothing kept; every cell so far
 *             uses its forward row there.
 */
#ifndef PREDTEXT_CELLS_H
#define PREDTEXT_CELLS_H

#define PT_CELL_STATE 1
#define PT_HIDDEN_APART 2
#define PT_KEEPS 4

#define PT_CELLS(X)                                                                         \
    X(PT_RNN_TANH, "rnn_tanh", 1, 0, 0, rnn_tanh_fwd_row, rnn_tanh_bwd_row, rnn_tanh_fwd_row) \
    X(PT_RNN_RELU, "rnn_relu", 1, 0, 0, rnn_relu_fwd_row, rnn_relu_bwd_row, rnn_relu_fwd_row) \
    X(PT_LSTM, "lstm", 4, 3, PT_CELL_STATE, lstm_fwd_row, lstm_bwd_row, lstm_fwd_row)       \
    X(PT_GRU, "gru", 3, 0, PT_HIDDEN_APART | PT_KEEPS, gru_fwd_row, gru_bwd_row, gru_fwd_row)

#endif
