"""The compiled core against torch.nn.RNN/LSTM/GRU (torch 2.13 CPU), and the peephole
LSTM against a direct NumPy transcription of its equations."""

import numpy as np
import pytest
from core_helpers import backward, forward, make_params

from predtext import _core

torch = pytest.importorskip("torch")

T, B, I, H = 9, 6, 33, 40
LENGTHS = [9, 1, 4, 9, 2, 7]


def torch_module(cell, dtype):
    make = {
        "rnn_tanh": lambda: torch.nn.RNN(I, H, nonlinearity="tanh"),
        "rnn_relu": lambda: torch.nn.RNN(I, H, nonlinearity="relu"),
        "lstm": lambda: torch.nn.LSTM(I, H),
        "gru": lambda: torch.nn.GRU(I, H),
    }
    module = make[cell]()
    return module.double() if dtype == np.float64 else module.float()


def assert_close(ours, theirs, tol, name):
    """Max error within tol of the array's scale: relative, yet fair to elements near 0."""
    scale = max(np.abs(theirs).max(), 1e-30)
    err = np.abs(ours - theirs).max()
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} x scale {scale:.3g}"


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_forward_backward_match_torch(cell, lengths, dtype, tol):
    torch.manual_seed(0)
    module = torch_module(cell, dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    x = torch.randn(T, B, I, dtype=tdtype, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=tdtype, requires_grad=True)
    c0 = torch.randn(1, B, H, dtype=tdtype, requires_grad=True)
    state = (h0, c0) if cell == "lstm" else h0
    if lengths is None:
        out, final = module(x, state)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                         enforce_sorted=False)
        out, final = module(packed, state)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    h_n, c_n = final if cell == "lstm" else (final, None)
    g_out, g_h, g_c = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(h_n)
    loss = (out * g_out).sum() + (h_n * g_h).sum()
    if c_n is not None:
        loss = loss + (c_n * g_c).sum()
    loss.backward()

    names = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
             "b_hh": "bias_hh_l0"}
    tparams = dict(module.named_parameters())
    params = {k: tparams[v].detach().numpy().copy() for k, v in names.items()}
    lstm = cell == "lstm"
    o, hn, cn, cache = forward(cell, x.detach().numpy(), params, h0.detach().numpy()[0],
                               c0.detach().numpy()[0] if lstm else None, lengths, True)
    dx, dh0, dc0, grads = backward(cache, params, g_out.numpy(), g_h.numpy()[0],
                                   g_c.numpy()[0] if lstm else None)

    assert_close(o, out.detach().numpy(), tol, "output")
    assert_close(hn, h_n.detach().numpy()[0], tol, "h_n")
    assert_close(dx, x.grad.numpy(), tol, "dx")
    assert_close(dh0, h0.grad.numpy()[0], tol, "dh0")
    if lstm:
        assert_close(cn, c_n.detach().numpy()[0], tol, "c_n")
        assert_close(dc0, c0.grad.numpy()[0], tol, "dc0")
    for ours, theirs in names.items():
        assert_close(grads[ours], tparams[theirs].grad.numpy(), tol, theirs)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_peephole_lstm_follows_its_equations():
    rng = np.random.default_rng(0)
    params = make_params("lstm_peephole", I, H)
    x = rng.standard_normal((T, B, I))
    h = rng.standard_normal((B, H))
    c = rng.standard_normal((B, H))
    out, h_n, c_n, _ = forward("lstm_peephole", x, params, h.copy(), c.copy())
    p_i, p_f, p_o = params["peephole"]
    for t in range(T):
        pre = x[t] @ params["w_ih"].T + h @ params["w_hh"].T + params["b_ih"] + params["b_hh"]
        zi, zf, zg, zo = np.split(pre, 4, axis=1)
        i = sigmoid(zi + p_i * c)
        f = sigmoid(zf + p_f * c)
        c = f * c + i * np.tanh(zg)
        o = sigmoid(zo + p_o * c)
        h = o * np.tanh(c)
        np.testing.assert_allclose(out[t], h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_n, c, rtol=1e-12, atol=1e-14)


def test_float32_gate_functions_are_accurate():
    """The kernels' own float32 sigmoid/tanh stay within a few ulp of the exact values."""
    x = np.linspace(-80, 80, 400_001).astype(np.float32)
    exact_sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    exact_tanh = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(_core.sigmoid_f32(x) - exact_sig) / exact_sig) < 5e-7
    nz = exact_tanh != 0
    assert np.max(np.abs(_core.tanh_f32(x) - exact_tanh)[nz] / np.abs(exact_tanh[nz])) < 5e-7
    tiny = np.float32([1e-30, -1e-20, 1e-8])
    np.testing.assert_allclose(_core.tanh_f32(tiny), tiny, rtol=1e-7)


@pytest.fixture
def blas_step_rows():
    """Restores the core's choice of per-step product path after a test changes it."""
    before = _core._get_step_rows()
    yield
    _core._set_step_rows(*before)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "lstm_peephole", "gru"])
def test_packed_step_products_match_blas(cell, dtype, tol, blas_step_rows):
    """The per-step products on weights packed once per call (where OpenBLAS has no small
    kernels) against BLAS in blocks of rows, at sizes that leave partial columns of units
    (H = 13, 21, 203) and every remainder of the six-row tile; the largest are shared by two
    threads (the second one's units end in the partial column)."""
    threads = _core.get_num_threads()
    rng = np.random.default_rng(5)
    _core.set_num_threads(2)
    try:
        for H_, B_ in [(13, 1), (13, 7), (21, 9), (21, 13), (203, 13), (203, 51)]:
            params = make_params(cell, 7, H_, dtype, seed=B_)
            x = rng.standard_normal((4, B_, 7)).astype(dtype)
            d_out = rng.standard_normal((4, B_, H_)).astype(dtype)
            results = []
            for rows in (0, 16):
                _core._set_step_rows(rows, rows)
                out, h_n, _, cache = forward(cell, x, params, training=True)
                dx, dh0, _, grads = backward(cache, params, d_out)
                results.append([out, h_n, dx, dh0, *grads.values()])
            for k, (ours, blas) in enumerate(zip(*results)):
                assert_close(ours, blas, tol, f"H={H_} B={B_} result {k}")
    finally:
        _core.set_num_threads(threads)
