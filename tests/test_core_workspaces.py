"""The training workspaces the core keeps between calls: a reused buffer's old contents
never reach a result, and two live caches never share one."""

import numpy as np
import pytest
from core_helpers import CELLS, backward, core_cell, forward, make_params

from predtext import _core

T, B, I, H = 7, 5, 4, 6


@pytest.fixture
def keep_everything():
    """Keep buffers of any size, so this test's small shapes go through the pool."""
    previous = _core._set_workspace_limits(0, 1 << 30, 64)
    yield
    _core._set_workspace_limits(*previous)


def inputs(cell, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype) if core_cell(cell) == "lstm" else None
    d_out = rng.standard_normal((T, B, H)).astype(dtype)
    mask = (rng.random((B, H)) > 0.3).astype(dtype) / 0.7
    return x, h0, c0, d_out, mask


def run(cell, params, x, h0, c0, d_out, mask, lengths):
    out, h_n, c_n, cache = forward(cell, x, params, h0, c0, lengths, training=True,
                                   recurrent_mask=mask)
    dx, dh0, dc0, grads = backward(cache, params, d_out)
    return [out, h_n, c_n, dx, dh0, dc0, *grads.values()]


def assert_same(a, b):
    for u, v in zip(a, b):
        if u is None:
            assert v is None
        else:
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_poisoned_reused_buffers_change_nothing(cell, dtype, keep_everything):
    params = make_params(cell, I, H, dtype)
    args = inputs(cell, dtype, 1)
    lengths = np.array([7, 3, 1, 7, 5])
    fresh = run(cell, params, *args, lengths)
    assert _core._fill_workspaces(np.nan) > 0  # the first run's buffers are kept
    assert_same(run(cell, params, *args, lengths), fresh)
    _core._fill_workspaces(np.nan)
    assert_same(run(cell, params, *args, None), run(cell, params, *args, None))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_two_live_caches_keep_their_own_buffers(cell, keep_everything):
    params = make_params(cell, I, H)
    a, b = inputs(cell, np.float64, 2), inputs(cell, np.float64, 3)
    alone_a = run(cell, params, *a, None)
    alone_b = run(cell, params, *b, None)
    fa = forward(cell, a[0], params, a[1], a[2], training=True, recurrent_mask=a[4])
    fb = forward(cell, b[0], params, b[1], b[2], training=True, recurrent_mask=b[4])
    back_b = backward(fb[3], params, b[3])
    back_a = backward(fa[3], params, a[3])
    again_a = backward(fa[3], params, a[3])  # a cache may be backpropagated twice
    assert_same(list(fa[:3]) + list(back_a[:3]) + list(back_a[3].values()), alone_a)
    assert_same(list(fb[:3]) + list(back_b[:3]) + list(back_b[3].values()), alone_b)
    assert_same(list(again_a[:3]) + list(again_a[3].values()),
                list(back_a[:3]) + list(back_a[3].values()))


def test_only_training_keeps_memory_and_release_frees_it(keep_everything):
    params = make_params("lstm", I, H)
    x, h0, c0, d_out, mask = inputs("lstm", np.float64, 4)
    forward("lstm", x, params, h0, c0)
    assert _core.release_workspaces() == 0
    run("lstm", params, x, h0, c0, d_out, mask, None)
    # xg and the backward's gate gradient (T, B, 4H), hs and cs (T + 1, B, H), the masked
    # states (T, B, H), all float64
    kept = 8 * (2 * T * B * 4 * H + 2 * (T + 1) * B * H + T * B * H)
    assert _core.release_workspaces() == kept
    assert _core.release_workspaces() == 0


def test_kept_bytes_stay_within_the_limits():
    previous = _core._set_workspace_limits(0, 8 * T * B * 4 * H + 1, 64)
    try:
        params = make_params("lstm", I, H)
        args = inputs("lstm", np.float64, 5)
        for _ in range(3):
            run("lstm", params, *args, None)
            assert _core.release_workspaces() <= 8 * T * B * 4 * H + 1
        _core._set_workspace_limits(0, 1 << 30, 2)
        run("lstm", params, *args, None)
        assert _core._fill_workspaces(0) == 2
    finally:
        _core._set_workspace_limits(*previous)
