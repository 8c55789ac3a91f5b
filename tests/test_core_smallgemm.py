"""The small-batch products (smallgemm.c) and the network step built on them: against NumPy
in float64 (and the BLAS step), float32 and 8-bit weights, every batch size from 1 to 16."""

import numpy as np
import pytest
from test_core_network_step import network

from predtext import _core
from predtext.lm.quantize import quantize_rows as quantize  # what a quantised model holds


def dequantized(q, scales):
    return q.astype(np.float64) * scales[:, None].astype(np.float64)


# Sizes around the block edges: 4 weight rows per group, 8 (float32) and 32 (int8) columns
# per vector step, batch chunks of 6.
SHAPES = [(1, 1), (3, 5), (7, 13), (31, 33), (64, 768), (96, 256), (257, 19), (1000, 6)]


@pytest.mark.parametrize("K,N", SHAPES)
def test_float32_products_match_numpy_for_every_batch_size(K, N):
    rng = np.random.default_rng(K * 1000 + N)
    w = rng.standard_normal((N, K)).astype(np.float32)
    for B in range(1, 17):
        x = rng.standard_normal((B, K)).astype(np.float32)
        want = x.astype(np.float64) @ w.T.astype(np.float64)
        got = _core.small_matmul(x, w)
        scale = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)  # error bound
        assert np.all(np.abs(got - want) <= 1e-6 * (scale + 1)), B


@pytest.mark.parametrize("K,N", SHAPES + [(1030, 9)])   # int8: more than one column pass
def test_int8_products_match_the_dequantized_weights(K, N):
    rng = np.random.default_rng(K + N)
    q, scales = quantize(rng.standard_normal((N, K)).astype(np.float32))
    for B in list(range(1, 17)) + [17, 40]:             # past one pass of batch rows too
        x = rng.standard_normal((B, K)).astype(np.float32)
        want = x.astype(np.float64) @ dequantized(q, scales).T
        got = _core.small_matmul(x, (q, scales))
        scale = np.abs(x).astype(np.float64) @ np.abs(dequantized(q, scales)).T
        assert np.all(np.abs(got - want) <= 1e-6 * (scale + 1)), B


def test_accumulate_adds_into_the_output():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    w = rng.standard_normal((11, 37)).astype(np.float32)
    out = rng.standard_normal((5, 11)).astype(np.float32)
    want = out + x @ w.T
    _core.small_matmul(x, w, out, accumulate=True)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    q, s = quantize(w)
    start = out.copy()
    _core.small_matmul(x, (q, s), out, accumulate=True)
    np.testing.assert_allclose(out, start + x @ dequantized(q, s).T, rtol=1e-5, atol=1e-5)


def test_bad_products_name_the_argument():
    x, w = np.zeros((2, 8), np.float32), np.zeros((3, 8), np.float32)
    q = np.zeros((3, 8), np.int8)
    with pytest.raises(TypeError, match="x"):
        _core.small_matmul(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="weight"):
        _core.small_matmul(x, np.zeros((3, 7), np.float32))
    with pytest.raises(TypeError, match="weight"):
        _core.small_matmul(x, (q.astype(np.int16), np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="weight scales"):
        _core.small_matmul(x, (q, np.ones(4, np.float32)))
    with pytest.raises(TypeError, match="weight"):
        _core.small_matmul(x, (q,))
    with pytest.raises(ValueError, match="out"):
        _core.small_matmul(x, w, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        square = np.zeros((3, 3), np.float32)
        _core.small_matmul(square, np.zeros((3, 3), np.float32), square)


# ---- the whole network's step ---------------------------------------------------------

def run(step, ids_per_step, h, c, vocab):
    """A few steps in a row from h, c (copied): the final h, c and each step's log-probs."""
    h, c = h.copy(), None if c is None else c.copy()
    outputs = []
    for ids in ids_per_step:
        out = np.empty((len(ids), vocab), np.float32)
        step(np.array(ids), h, c, out)
        outputs.append(out)
    return h, c, outputs


def states(cell, layers, batch, hidden, seed):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((layers, batch, hidden)).astype(np.float32)
    c = rng.standard_normal((layers, batch, hidden)).astype(np.float32) if cell == "lstm" else None
    return h, c


@pytest.mark.parametrize("cell,options", [
    ("gru", {}), ("lstm", {"peephole": True}), ("rnn_tanh", {"layers": 1}),
    ("gru", {"bias": False, "decoder_bias": False, "layers": 3}),
])
def test_the_step_matches_the_blas_step_for_every_batch_size(cell, options, monkeypatch):
    net = network(cell, np.float32, vocab=37, embed=9, hidden=21, **options)
    L = len(net[1])
    for B in range(1, 17):
        monkeypatch.setattr(_core, "SMALL_BATCH", 16)
        small = _core.NetworkStep(cell, *net, B)
        monkeypatch.setattr(_core, "SMALL_BATCH", 0)
        blas = _core.NetworkStep(cell, *net, B)
        assert small.small_batch and not blas.small_batch
        h, c = states(cell, L, B, 21, B)
        ids = [[(3 * b + t) % 37 for b in range(B)] for t in range(3)]
        for got, want in zip(run(small, ids, h, c, 37), run(blas, ids, h, c, 37)):
            if want is not None:
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_int8_weights_step_like_their_dequantized_floats(cell):
    embedding, layers, dec_w, dec_b = network(cell, np.float32, vocab=40, embed=33, hidden=70)
    quant_layers, float_layers = [], []
    for w_ih, w_hh, b_ih, b_hh, peep in layers:
        qi, qh = quantize(w_ih), quantize(w_hh)
        quant_layers.append((qi, qh, b_ih, b_hh, peep))
        float_layers.append((dequantized(*qi).astype(np.float32),
                             dequantized(*qh).astype(np.float32), b_ih, b_hh, peep))
    qd = quantize(dec_w)
    for B in (1, 6, 16, 23):
        quant = _core.NetworkStep(cell, embedding, quant_layers, qd, dec_b, B)
        plain = _core.NetworkStep(cell, embedding, float_layers,
                                  dequantized(*qd).astype(np.float32), dec_b, B)
        assert quant.quantized and quant.small_batch and not plain.quantized
        h, c = states(cell, 2, B, 70, B)
        ids = [[(5 * b + t) % 40 for b in range(B)] for t in range(3)]
        for got, want in zip(run(quant, ids, h, c, 40), run(plain, ids, h, c, 40)):
            if want is not None:
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_some_weights_int8_others_float():
    embedding, layers, dec_w, dec_b = network("gru", np.float32, hidden=16)
    mixed = [(quantize(layers[0][0]),) + layers[0][1:], layers[1]]
    step = _core.NetworkStep("gru", embedding, mixed, dec_w, dec_b, 2)
    reference = [(dequantized(*quantize(layers[0][0])).astype(np.float32),) + layers[0][1:],
                 layers[1]]
    plain = _core.NetworkStep("gru", embedding, reference, dec_w, dec_b, 2)
    h = np.zeros((2, 2, 16), np.float32)
    got, want = run(step, [[1, 2]], h, None, 11), run(plain, [[1, 2]], h, None, 11)
    np.testing.assert_allclose(got[0], want[0], rtol=2e-5, atol=2e-5)
    # the arrays a caller compares against its parameters: q and scales among them
    assert any(a is mixed[0][0][0] for a in step.arrays)
    assert any(a is mixed[0][0][1] for a in step.arrays)


def test_the_step_gives_the_same_result_on_one_thread_and_on_all():
    net = network("gru", np.float32, hidden=300, embed=64, vocab=66)
    threads = _core.get_num_threads()
    results = []
    try:
        for n in (1, max(threads, 2)):
            _core.set_num_threads(n)
            step = _core.NetworkStep("gru", *net, 6)
            results.append(run(step, [[1, 5, 9, 65, 0, 3]] * 2, *states("gru", 2, 6, 300, 0), 66))
    finally:
        _core.set_num_threads(threads)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results[0][2][1], results[1][2][1], rtol=1e-6, atol=1e-6)


def test_bad_int8_weights_name_the_argument():
    embedding, layers, dec_w, dec_b = network("gru", np.float32)
    q, s = quantize(layers[0][0])

    def build(w_ih=None, decoder=None, dtype=np.float32):
        stack = [((q, s) if w_ih is None else w_ih,) + layers[0][1:], layers[1]]
        if dtype != np.float32:
            stack = [tuple(a if a is None or isinstance(a, tuple) else a.astype(dtype)
                           for a in layer) for layer in stack]
        return _core.NetworkStep("gru", embedding.astype(dtype), stack,
                                 dec_w.astype(dtype) if decoder is None else decoder,
                                 dec_b.astype(dtype), 1)

    with pytest.raises(TypeError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q.astype(np.uint8), s))
    with pytest.raises(ValueError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q[:, :3].copy(), s))
    with pytest.raises(ValueError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q[:, ::2], s))                       # not contiguous
    with pytest.raises(TypeError, match=r"layers\[0\]\.w_ih scales"):
        build(w_ih=(q, s.astype(np.float64)))
    with pytest.raises(ValueError, match=r"layers\[0\]\.w_ih scales"):
        build(w_ih=(q, s[:4].copy()))
    with pytest.raises(ValueError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q, np.full_like(s, np.nan)))
    with pytest.raises(TypeError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q, s, s))
    with pytest.raises(TypeError, match=r"layers\[0\]\.w_ih"):
        build(w_ih=(q, list(s)))
    with pytest.raises(TypeError, match=r"layers\[0\]\.w_ih"):
        build(dtype=np.float64)                          # int8 needs a float32 network
    with pytest.raises(ValueError, match="decoder_weight"):
        build(decoder=quantize(dec_w[:, :4].copy()))


def test_in_place_weight_updates_are_seen_by_the_next_step(monkeypatch):
    """The products read the weights where they are: no copy to go stale after an optimizer
    step or load_state_dict."""
    from predtext.lm.model import LanguageModel

    monkeypatch.setattr(_core, "SMALL_BATCH", 16)   # on BLAS where it has small kernels

    model = LanguageModel(30, embed_size=8, hidden_size=24, num_layers=2, cell="gru", seed=0)
    other = LanguageModel(30, embed_size=8, hidden_size=24, num_layers=2, cell="gru", seed=1)
    state = model.initial_state(6)
    ids = np.arange(6)
    model.step(ids, state.copy())
    assert state._buffers.network.small_batch
    for param in model.parameters():                     # what an optimizer step does
        param.data[...] -= 0.1 * np.sign(param.data)
    after, _ = model.step(ids, state.copy())
    fresh, _ = model.step(ids, model.initial_state(6))
    np.testing.assert_array_equal(after, fresh)
    model.load_state_dict(other.state_dict())            # copies into the same arrays
    loaded, _ = model.step(ids, state.copy())
    want, _ = other.step(ids, other.initial_state(6))
    np.testing.assert_allclose(loaded, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(loaded, after)
