"""predtext._core.NetworkStep: a whole network's step in one call, against the layer-by-layer
composition (cell_step per layer, then the decoder and a log-softmax in NumPy)."""

import numpy as np
import pytest

from predtext import _core

GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def network(cell, dtype, vocab=11, embed=5, hidden=7, layers=2, bias=True, peephole=False,
            decoder_bias=True, seed=0):
    rng = np.random.default_rng(seed)
    G = GATES[cell]

    def array(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(dtype)

    stack, inputs = [], embed
    for _ in range(layers):
        stack.append((array(G * hidden, inputs), array(G * hidden, hidden),
                      array(G * hidden) if bias else None, array(G * hidden) if bias else None,
                      array(3, hidden) if peephole else None))
        inputs = hidden
    return (array(vocab, embed), stack, array(vocab, hidden),
            array(vocab) if decoder_bias else None)


def reference_step(cell, net, ids, h, c):
    """The same step from the per-layer kernel and NumPy: new (h, c, log_probs)."""
    embedding, layers, decoder_weight, decoder_bias = net
    h, c = h.copy(), None if c is None else c.copy()
    x = embedding[ids]
    for k, (w_ih, w_hh, b_ih, b_hh, peephole) in enumerate(layers):
        work = np.empty(_core.step_workspace_shape(cell, len(ids), h.shape[2]), h.dtype)
        ck = None if c is None else c[k]
        _core.cell_step(cell, np.ascontiguousarray(x), h[k], ck, w_ih, w_hh, b_ih, b_hh,
                        h[k], ck, work, peephole)
        x = h[k]
    logits = x.astype(np.float64) @ decoder_weight.T.astype(np.float64)
    if decoder_bias is not None:
        logits += decoder_bias
    logits -= logits.max(axis=1, keepdims=True)
    return h, c, logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell,options", [
    ("gru", {}), ("lstm", {}), ("lstm", {"peephole": True}), ("rnn_tanh", {"layers": 1}),
    ("rnn_relu", {"layers": 3}), ("gru", {"bias": False, "decoder_bias": False}),
])
@pytest.mark.parametrize("batch", [1, 6])
def test_matches_the_layer_by_layer_step(dtype, cell, options, batch):
    net = network(cell, dtype, **options)
    L = len(net[1])
    step = _core.NetworkStep(cell, *net, batch)
    rng = np.random.default_rng(batch)
    h = rng.standard_normal((L, batch, 7)).astype(dtype)
    c = rng.standard_normal((L, batch, 7)).astype(dtype) if cell == "lstm" else None
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for ids in ([3] * batch, list(range(batch)), [10] * batch):   # several steps in a row
        ids = np.array(ids, dtype=np.int64)
        want_h, want_c, want = reference_step(cell, net, ids, h, c)
        log_probs = np.empty((batch, 11), dtype)
        assert step(ids, h, c, log_probs) is log_probs
        np.testing.assert_allclose(h, want_h, rtol=tolerance, atol=tolerance)
        if c is not None:
            np.testing.assert_allclose(c, want_c, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(log_probs, want, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(axis=1), 1.0,
                                   rtol=1e-5)


def test_same_result_on_one_thread_and_on_all():
    net = network("gru", np.float64, hidden=300, embed=64, vocab=66)
    h0 = np.random.default_rng(1).standard_normal((2, 4, 300))
    ids = np.array([1, 5, 9, 65])
    results = []
    threads = _core.get_num_threads()
    try:
        for n in (1, threads):
            _core.set_num_threads(n)
            h, out = h0.copy(), np.empty((4, 66))
            _core.NetworkStep("gru", *net, 4)(ids, h, None, out)
            results.append((h, out))
    finally:
        _core.set_num_threads(threads)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def test_any_integer_ids_are_accepted():
    net = network("gru", np.float64)
    step = _core.NetworkStep("gru", *net, 2)
    outputs = []
    for ids in (np.array([4, 2], np.int32), [4, 2], np.array([4, 2], np.uint8)):
        h, out = np.zeros((2, 2, 7)), np.empty((2, 11))
        step(ids, h, None, out)
        outputs.append(out)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_bad_calls_name_the_argument():
    net = network("lstm", np.float32)
    step = _core.NetworkStep("lstm", *net, 2)
    h, c, out = (np.zeros((2, 2, 7), np.float32), np.zeros((2, 2, 7), np.float32),
                 np.empty((2, 11), np.float32))
    with pytest.raises(ValueError, match="token_ids"):
        step([0, 11], h, c, out)                      # past the embedding's rows
    with pytest.raises(ValueError, match="token_ids"):
        step([-1, 0], h, c, out)
    with pytest.raises(ValueError, match="token_ids"):
        step([0, 1, 2], h, c, out)                    # one id per text of the batch
    with pytest.raises(TypeError, match="token_ids"):
        step([0.5, 1.0], h, c, out)
    with pytest.raises(ValueError, match="c"):
        step([0, 1], h, None, out)                    # an LSTM needs its cell state
    with pytest.raises(ValueError, match="h"):
        step([0, 1], np.zeros((2, 3, 7), np.float32), c, out)
    with pytest.raises(TypeError, match="log_probs"):
        step([0, 1], h, c, np.empty((2, 11)))         # float64 output for a float32 network
    with pytest.raises(ValueError, match="overlap"):
        step([0, 1], h, h, out)
    assert np.all(h == 0) and np.all(c == 0)          # nothing was written by a refused call


def test_bad_networks_are_refused_when_built():
    embedding, layers, decoder_weight, decoder_bias = network("gru", np.float32)
    with pytest.raises(ValueError, match="layers"):
        _core.NetworkStep("gru", embedding, [], decoder_weight, decoder_bias, 1)
    for junk in (None, 3, [None], [layers[0][:4]]):
        with pytest.raises(TypeError, match="layers"):
            _core.NetworkStep("gru", embedding, junk, decoder_weight, decoder_bias, 1)
    with pytest.raises(ValueError, match=r"layers\[1\]\.w_ih"):
        bad = list(layers)
        bad[1] = (np.zeros((21, 5), np.float32),) + layers[1][1:]
        _core.NetworkStep("gru", embedding, bad, decoder_weight, decoder_bias, 1)
    with pytest.raises(ValueError, match="decoder_weight"):
        _core.NetworkStep("gru", embedding, layers, decoder_weight[:, :3].copy(), None, 1)
    with pytest.raises(TypeError, match="decoder_bias"):
        _core.NetworkStep("gru", embedding, layers, decoder_weight,
                          decoder_bias.astype(np.float64), 1)
    with pytest.raises(ValueError, match="peephole"):
        bad = [layer[:4] + (np.zeros((3, 7), np.float32),) for layer in layers]
        _core.NetworkStep("gru", embedding, bad, decoder_weight, decoder_bias, 1)
    with pytest.raises(ValueError, match="batch"):
        _core.NetworkStep("gru", embedding, layers, decoder_weight, decoder_bias, 0)


def test_reallocated_weights_are_refused_not_read():
    embedding, layers, decoder_weight, decoder_bias = network("gru", np.float64)
    step = _core.NetworkStep("gru", embedding, layers, decoder_weight, decoder_bias, 1)
    decoder_weight.resize((40, 7), refcheck=False)    # moves the data elsewhere
    with pytest.raises(ValueError, match="reallocated"):
        step([1], np.zeros((2, 1, 7)), None, np.empty((1, 11)))


def test_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(_core.NetworkStep("gru", *network("gru", np.float32), 1))


def test_a_thread_limit_applies_to_the_calling_thread_only():
    import threading

    net = network("gru", np.float64, hidden=300, embed=64, vocab=66)
    step = _core.NetworkStep("gru", *net, 4)
    threads = _core.get_num_threads()
    full = step.teams()
    assert 1 <= max(full) <= threads and _core.get_thread_limit() == 0
    h0, ids = np.random.default_rng(2).standard_normal((2, 4, 300)), np.array([1, 5, 9, 65])
    seen = {}

    def limited():
        _core.set_thread_limit(1)
        h, out = h0.copy(), np.empty((4, 66))
        step(ids, h, None, out)
        seen.update(teams=step.teams(), limit=_core.get_thread_limit(), h=h, out=out)

    worker = threading.Thread(target=limited)
    worker.start()
    worker.join()
    assert seen["teams"] == [1] * len(full) and seen["limit"] == 1
    assert step.teams() == full and _core.get_thread_limit() == 0     # this thread: unchanged
    h, out = h0.copy(), np.empty((4, 66))
    step(ids, h, None, out)
    np.testing.assert_allclose(seen["h"], h, rtol=1e-12, atol=1e-12)   # the same result
    np.testing.assert_allclose(seen["out"], out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (1025, ValueError), (1.5, TypeError),
                                        ("2", TypeError)])
def test_bad_thread_limits_are_refused(bad, error):
    with pytest.raises(error, match="n:"):
        _core.set_thread_limit(bad)
    assert _core.get_thread_limit() == 0
