"""Single-step inference and the sequence helpers of the compiled core."""

import numpy as np
import pytest
from core_helpers import CELLS, core_cell, forward, make_params

from predtext import _core

T, B, I, H = 6, 4, 5, 24


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_steps_reproduce_the_sequence(cell, dtype):
    rng = np.random.default_rng(0)
    params = make_params(cell, I, H, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    lstm = core_cell(cell) == "lstm"
    c0 = rng.standard_normal((B, H)).astype(dtype) if lstm else None
    out, h_n, c_n, cache = forward(cell, x, params, h0, c0)
    assert cache is None

    h = h0.copy()
    c = c0.copy() if lstm else None
    work = np.empty(_core.step_workspace_shape(core_cell(cell), B, H), dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for t in range(T):
        # In place: the new state overwrites the old one.
        _core.cell_step(core_cell(cell), x[t], h, c, params["w_ih"], params["w_hh"],
                        params["b_ih"], params["b_hh"], h, c, work,
                        peephole=params.get("peephole"))
        np.testing.assert_allclose(h, out[t], rtol=tol, atol=tol)
    np.testing.assert_allclose(h, h_n, rtol=tol, atol=tol)
    if lstm:
        np.testing.assert_allclose(c, c_n, rtol=tol, atol=tol)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_step_without_bias_and_with_batch_of_one(cell):
    rng = np.random.default_rng(1)
    params = make_params(cell, I, H, bias=False)
    x = rng.standard_normal((1, 1, I))
    out, h_n, c_n, _ = forward(cell, x, params)
    h = np.zeros((1, H))
    c = np.zeros((1, H)) if cell == "lstm" else None
    h_out, c_out = np.empty((1, H)), (np.empty((1, H)) if cell == "lstm" else None)
    work = np.empty(_core.step_workspace_shape(cell, 1, H))
    _core.cell_step(cell, x[0], h, c, params["w_ih"], params["w_hh"], None, None, h_out,
                    c_out, work)
    np.testing.assert_allclose(h_out, h_n, rtol=1e-13)
    assert not h.any()  # the input state is untouched when h_out is another buffer


def test_inference_and_training_forward_agree():
    rng = np.random.default_rng(2)
    params = make_params("lstm", I, H)
    x = rng.standard_normal((T, B, I))
    a = forward("lstm", x, params, lengths=[6, 3, 1, 5])
    b = forward("lstm", x, params, lengths=[6, 3, 1, 5], training=True)
    for u, v in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(u, v)


def test_lengths_freeze_the_state_and_zero_the_output():
    rng = np.random.default_rng(3)
    params = make_params("gru", I, H)
    x = rng.standard_normal((T, B, I))
    lengths = [6, 2, 4, 1]
    out, h_n, _, _ = forward("gru", x, params, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, h_alone, _, _ = forward("gru", x[:n, b:b + 1].copy(), params)
        np.testing.assert_allclose(out[:n, b], alone[:, 0], rtol=1e-13)
        np.testing.assert_allclose(h_n[b], h_alone[0], rtol=1e-13)
        assert not out[n:, b].any()


def test_reverse_sequences_within_lengths():
    x = np.arange(4 * 3 * 2, dtype=np.float64).reshape(4, 3, 2)
    r = _core.reverse_sequences(x, [4, 2, 1])
    np.testing.assert_array_equal(r[:, 0], x[::-1, 0])
    np.testing.assert_array_equal(r[:2, 1], x[1::-1, 1])
    np.testing.assert_array_equal(r[:1, 2], x[:1, 2])
    assert not r[2:, 1].any() and not r[1:, 2].any()
    np.testing.assert_array_equal(_core.reverse_sequences(r, [4, 2, 1])[:2, 1], x[:2, 1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_thread_count(threads):
    # Big enough per step (B * 4H * H multiply-adds) that the core shares it out.
    rng = np.random.default_rng(4)
    params = make_params("lstm", I, 264)
    x = rng.standard_normal((T, 16, I))
    before = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        lengths = [6, 3, 1, 5] * 4
        ref = forward("lstm", x, params, lengths=lengths)[0]
        _core.set_num_threads(threads)
        got = forward("lstm", x, params, lengths=lengths)[0]
    finally:
        _core.set_num_threads(before)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
