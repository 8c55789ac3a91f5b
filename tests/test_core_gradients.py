"""Backpropagation through time against central finite differences, in float64."""

import numpy as np
import pytest
from core_helpers import CELLS, backward, core_cell, forward, make_params
from gradcheck import numeric_gradient

T, B, I, H = 5, 3, 3, 4
LENGTHS = [5, 2, 4]


def weighted_loss(cell, x, params, h0, c0, lengths, r_out, r_h, r_c):
    """A scalar that depends on every output and final state with random weights."""
    out, h_n, c_n, _ = forward(cell, x, params, h0, c0, lengths)
    loss = np.sum(out * r_out) + np.sum(h_n * r_h)
    if c_n is not None:
        loss += np.sum(c_n * r_c)
    return loss



@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, lengths):
    rng = np.random.default_rng(1)
    params = make_params(cell, I, H)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5 if core_cell(cell) == "lstm" else None
    r_out, r_h, r_c = (rng.standard_normal(s) for s in [(T, B, H), (B, H), (B, H)])

    out, h_n, c_n, cache = forward(cell, x, params, h0, c0, lengths, training=True)
    dx, dh0, dc0, grads = backward(cache, params, r_out, r_h,
                                   r_c if c0 is not None else None)

    def f():
        return weighted_loss(cell, x, params, h0, c0, lengths, r_out, r_h, r_c)

    checks = {"x": (x, dx), "h0": (h0, dh0)}
    if c0 is not None:
        checks["c0"] = (c0, dc0)
    for name in params:
        checks[name] = (params[name], grads[name])
    for name, (array, analytic) in checks.items():
        numeric = numeric_gradient(f, array)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_steps_get_no_gradient_and_pass_state_through(cell):
    """Output gradients past a sequence's end are ignored: the output there is constant."""
    rng = np.random.default_rng(2)
    params = make_params(cell, I, H)
    x = rng.standard_normal((T, B, I))
    _, _, _, cache = forward(cell, x, params, lengths=LENGTHS, training=True)
    d_out = rng.standard_normal((T, B, H))
    dx_a, dh0_a, _, grads_a = backward(cache, params, d_out)
    for b, n in enumerate(LENGTHS):
        d_out[n:, b] = 1e6
    dx_b, dh0_b, _, grads_b = backward(cache, params, d_out)
    np.testing.assert_array_equal(dx_a, dx_b)
    np.testing.assert_array_equal(dh0_a, dh0_b)
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name])
    for b, n in enumerate(LENGTHS):
        assert not dx_a[n:, b].any()


@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_across_chunks_matches_whole_sequence(cell):
    """Truncated BPTT plumbing: two chunks with the state carried equal one long sequence,
    forward and backward, when the second chunk's initial-state gradient is fed back."""
    rng = np.random.default_rng(3)
    params = make_params(cell, I, H)
    x = rng.standard_normal((2 * T, B, I))
    d_out = rng.standard_normal((2 * T, B, H))
    lstm = core_cell(cell) == "lstm"

    out, h_n, c_n, cache = forward(cell, x, params, training=True)
    dx, dh0, dc0, grads = backward(cache, params, d_out)

    out1, h1, c1, cache1 = forward(cell, x[:T].copy(), params, training=True)
    out2, h2, c2, cache2 = forward(cell, x[T:].copy(), params, h1, c1, training=True)
    np.testing.assert_allclose(np.concatenate([out1, out2]), out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h2, h_n, rtol=1e-12, atol=1e-14)
    dx2, dh_mid, dc_mid, grads2 = backward(cache2, params, d_out[T:].copy())
    dx1, dh0_1, dc0_1, grads1 = backward(cache1, params, d_out[:T].copy(), dh_mid,
                                         dc_mid if lstm else None)
    np.testing.assert_allclose(np.concatenate([dx1, dx2]), dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0_1, dh0, rtol=1e-10, atol=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads1[name] + grads2[name], grads[name], rtol=1e-10,
                                   atol=1e-12, err_msg=name)


def test_gradients_accumulate_into_buffers():
    rng = np.random.default_rng(4)
    params = make_params("gru", I, H)
    x = rng.standard_normal((T, B, I))
    _, _, _, cache = forward("gru", x, params, training=True)
    d_out = rng.standard_normal((T, B, H))
    _, _, _, once = backward(cache, params, d_out)
    twice = {k: np.full_like(v, 0.5) for k, v in params.items()}
    from predtext import _core

    _core.sequence_backward(cache, d_out, grad_w_ih=twice["w_ih"], grad_w_hh=twice["w_hh"],
                            grad_b_ih=twice["b_ih"], grad_b_hh=twice["b_hh"])
    for name in once:
        np.testing.assert_allclose(twice[name], once[name] + 0.5, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_with_a_recurrent_dropout_mask_match_finite_differences(cell):
    """The mask is fixed, so the loss is a smooth function of everything else; real-valued
    mask entries (not only 0 and 1/(1-p)) check that it multiplies the right things."""
    rng = np.random.default_rng(5)
    params = make_params(cell, I, H)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H)) * 0.5
    c0 = rng.standard_normal((B, H)) * 0.5 if core_cell(cell) == "lstm" else None
    mask = rng.uniform(0, 2, (B, H))
    mask[0, 1] = mask[2, 3] = 0.0
    r_out, r_h, r_c = (rng.standard_normal(s) for s in [(T, B, H), (B, H), (B, H)])

    def run(training=False):
        return forward(cell, x, params, h0, c0, LENGTHS, training, recurrent_mask=mask)

    def f():
        out, h_n, c_n, _ = run()
        return np.sum(out * r_out) + np.sum(h_n * r_h) + (0 if c_n is None else np.sum(c_n * r_c))

    out, h_n, c_n, cache = run(training=True)
    dx, dh0, dc0, grads = backward(cache, params, r_out, r_h, r_c if c0 is not None else None)
    checks = {"x": (x, dx), "h0": (h0, dh0), **{n: (params[n], grads[n]) for n in params}}
    if c0 is not None:
        checks["c0"] = (c0, dc0)
    for name, (array, analytic) in checks.items():
        np.testing.assert_allclose(analytic, numeric_gradient(f, array), rtol=1e-6, atol=1e-8,
                                   err_msg=name)
    # Gradients of a function that ignored the mask would pass too: it must matter.
    before = f()
    mask[1] += 0.5
    assert abs(f() - before) > 1e-6


@pytest.mark.parametrize("cell", CELLS)
def test_a_mask_of_ones_is_bit_for_bit_no_mask(cell):
    rng = np.random.default_rng(6)
    params = make_params(cell, I, H)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, H))
    results = []
    for mask in (None, np.ones((B, H))):
        out, h_n, _, cache = forward(cell, x, params, lengths=LENGTHS, training=True,
                                     recurrent_mask=mask)
        dx, dh0, _, grads = backward(cache, params, d_out)
        results.append([out, h_n, dx, dh0, *grads.values()])
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)
