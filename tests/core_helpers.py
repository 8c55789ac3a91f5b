"""Shared set-up for the compiled-core tests: random parameters in PyTorch's layout."""

import numpy as np

from predtext import _core

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "lstm_peephole", "gru"]


def core_cell(cell):
    """The core's cell name for a test cell ("lstm_peephole" is an LSTM with peepholes)."""
    return "lstm" if cell == "lstm_peephole" else cell


def make_params(cell, I, H, dtype=np.float64, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    G = _core.gate_count(core_cell(cell))
    scale = 1.0 / np.sqrt(H)
    p = {
        "w_ih": rng.uniform(-scale, scale, (G * H, I)),
        "w_hh": rng.uniform(-scale, scale, (G * H, H)),
    }
    if bias:
        p["b_ih"] = rng.uniform(-scale, scale, G * H)
        p["b_hh"] = rng.uniform(-scale, scale, G * H)
    if cell == "lstm_peephole":
        p["peephole"] = rng.uniform(-scale, scale, (3, H))
    return {k: v.astype(dtype) for k, v in p.items()}


def forward(cell, x, params, h0=None, c0=None, lengths=None, training=False,
            recurrent_mask=None):
    return _core.sequence_forward(
        core_cell(cell), x, params["w_ih"], params["w_hh"], params.get("b_ih"),
        params.get("b_hh"), h0, c0, lengths=lengths, peephole=params.get("peephole"),
        training=training, recurrent_mask=recurrent_mask)


def backward(cache, params, d_out, d_hn=None, d_cn=None):
    """Run sequence_backward into fresh zero buffers; return (dx, dh0, dc0, grads)."""
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx, dh0, dc0 = _core.sequence_backward(
        cache, d_out, d_hn, d_cn, grad_w_ih=grads["w_ih"], grad_w_hh=grads["w_hh"],
        grad_b_ih=grads.get("b_ih"), grad_b_hh=grads.get("b_hh"),
        grad_peephole=grads.get("peephole"))
    return dx, dh0, dc0, grads
