"""RNN, LSTM, GRU: gradients, parity with torch.nn, state dicts, bad input, learning."""

import numpy
import pytest

from predtext import nn
from predtext.backend import get_ops

CLASSES = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}


@pytest.fixture
def single_thread():
    """Many tiny kernel calls: one thread avoids barrier stalls on a busy machine."""
    ops = get_ops()
    before = ops.get_num_threads()
    ops.set_num_threads(1)
    yield
    ops.set_num_threads(before)


def flat_state(state):
    """h_n, or (h_n, c_n), as a list of arrays (empty for None)."""
    if state is None:
        return []
    return list(state) if isinstance(state, tuple) else [state]


def pack_state(arrays, cell_name):
    return tuple(arrays) if cell_name == "LSTM" else arrays[0]


# -- construction ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_parameter_names_shapes_and_order_follow_torch(name):
    layer = CLASSES[name](3, 5, num_layers=2, bidirectional=True)
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[name]
    expected = []
    for k in range(2):
        for suffix in ("", "_reverse"):
            width = 3 if k == 0 else 10
            expected += [(f"weight_ih_l{k}{suffix}", (gates * 5, width)),
                         (f"weight_hh_l{k}{suffix}", (gates * 5, 5)),
                         (f"bias_ih_l{k}{suffix}", (gates * 5,)),
                         (f"bias_hh_l{k}{suffix}", (gates * 5,))]
    assert [(n, p.shape) for n, p in layer.named_parameters()] == expected
    assert all(p.dtype == numpy.float32 for p in layer.parameters())
    assert len(layer.all_weights) == 4 and len(layer.all_weights[0]) == 4


def test_without_bias_there_are_no_bias_parameters():
    layer = nn.GRU(3, 4, bias=False)
    assert list(layer.state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_peephole_weights_are_named_and_shaped():
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, peephole=True)
    names = dict((n, p.shape) for n, p in layer.named_parameters())
    assert names["weight_ch_l0"] == (3, 4) and names["weight_ch_l1_reverse"] == (3, 4)


def test_init_is_uniform_within_torch_bound_and_seeded():
    layer = nn.LSTM(20, 64, num_layers=2, rng=numpy.random.default_rng(3))
    again = nn.LSTM(20, 64, num_layers=2, rng=numpy.random.default_rng(3))
    values = numpy.concatenate([p.data.ravel() for p in layer.parameters()])
    assert numpy.abs(values).max() <= 1 / 8
    assert numpy.abs(values).max() > 0.99 / 8
    for (name, a), b in zip(layer.state_dict().items(), again.state_dict().values()):
        numpy.testing.assert_array_equal(a, b, err_msg=name)
    nn.manual_seed(5)
    first = nn.GRU(2, 3).state_dict()
    nn.manual_seed(5)
    numpy.testing.assert_array_equal(nn.GRU(2, 3).state_dict()["weight_hh_l0"],
                                     first["weight_hh_l0"])


def test_repr_shows_options():
    text = repr(nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True))
    assert text == "RNN(3, 4, num_layers=2, nonlinearity='relu', bidirectional=True)"


# -- finite-difference gradients through whole stacks -------------------------------------


def check_gradients(layer, x, state0, lengths, rng, samples=8, before_each_call=None):
    """Compare backprop with central differences on sampled entries of every array."""
    prepare = before_each_call or (lambda: None)
    prepare()
    out, state = layer(x, state0, lengths)
    d_out = rng.normal(size=out.shape)
    d_state = [rng.normal(size=s.shape) for s in flat_state(state)]

    def loss():
        prepare()
        out, state = layer(x, state0, lengths)
        return (out * d_out).sum() + sum((s * d).sum() for s, d in zip(flat_state(state), d_state))

    prepare()
    (out_train, _), backprop = layer.begin_update(x, state0, lengths)
    numpy.testing.assert_allclose(out_train, out, rtol=0, atol=1e-14)
    layer.zero_grad()
    name = type(layer).__name__
    dx, dstate0 = backprop(d_out, pack_state(d_state, name))

    checks = [("x", x, dx)]
    for i, (s, d) in enumerate(zip(flat_state(state0), flat_state(dstate0))):
        checks.append((f"state0[{i}]", s, d))
    checks += [(n, p.data, p.grad) for n, p in layer.named_parameters()]
    for label, array, analytic in checks:
        flat_indices = rng.choice(array.size, size=min(samples, array.size), replace=False)
        for flat_index in flat_indices:
            index = numpy.unravel_index(flat_index, array.shape)
            original = array[index]
            array[index] = original + 1e-6
            plus = loss()
            array[index] = original - 1e-6
            minus = loss()
            array[index] = original
            numeric = (plus - minus) / 2e-6
            assert analytic[index] == pytest.approx(numeric, rel=1e-6, abs=1e-7), (label, index)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_gradients_of_deep_bidirectional_stack_with_lengths(name, single_thread):
    rng = numpy.random.default_rng(11)
    layer = CLASSES[name](3, 4, num_layers=3, bidirectional=True, dtype=numpy.float64, rng=rng)
    T, B = 5, 3
    x = rng.normal(size=(T, B, 3))
    h0 = rng.normal(size=(6, B, 4))
    state0 = (h0, rng.normal(size=(6, B, 4))) if name == "LSTM" else h0
    check_gradients(layer, x, state0, [5, 2, 4], rng)


def test_gradients_of_peephole_lstm_batch_first(single_thread):
    rng = numpy.random.default_rng(12)
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, peephole=True,
                    dtype=numpy.float64, rng=rng)
    x = rng.normal(size=(3, 5, 3))
    state0 = (rng.normal(size=(4, 3, 4)), rng.normal(size=(4, 3, 4)))
    check_gradients(layer, x, state0, [3, 5, 1], rng)


def test_gradients_with_dropout_between_layers(single_thread):
    rng = numpy.random.default_rng(13)
    layer = nn.GRU(3, 4, num_layers=3, dropout=0.4, dtype=numpy.float64, rng=rng)

    def same_masks():
        layer.rng = numpy.random.default_rng(99)

    check_gradients(layer, rng.normal(size=(4, 2, 3)), None, None, rng,
                    before_each_call=same_masks)


# -- parity with torch.nn ------------------------------------------------------------------

OPTIONS = {
    "default": dict(),
    "two_layers": dict(num_layers=2),
    "bidirectional": dict(bidirectional=True),
    "batch_first": dict(batch_first=True),
    "no_bias": dict(bias=False),
    "lengths": dict(lengths=[5, 2, 4, 1]),
    "state0": dict(state0=True),
    "everything": dict(num_layers=3, bidirectional=True, batch_first=True, bias=False,
                       lengths=[3, 5, 1, 4], state0=True),
}
PARITY_CASES = [(cell, option) for cell in ("RNN", "LSTM", "GRU") for option in OPTIONS]
PARITY_CASES += [("RNN_relu", "default"), ("RNN_relu", "everything")]


def build_pair(cell, options, dtype):
    """A torch layer and ours holding the same weights."""
    torch = pytest.importorskip("torch")
    kwargs = {k: v for k, v in options.items() if k not in ("lengths", "state0")}
    name = cell.split("_")[0]
    if cell == "RNN_relu":
        kwargs["nonlinearity"] = "relu"
    torch.manual_seed(0)
    theirs = getattr(torch.nn, name)(6, 7, **kwargs).to(
        torch.float64 if dtype == numpy.float64 else torch.float32)
    ours = CLASSES[name](6, 7, dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def run_torch(layer, x, state0, lengths, batch_first):
    """Outputs (padded back to T), final state, and gradients of a fixed linear loss."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    x_t = torch.tensor(x, requires_grad=True)
    state_t = None
    if state0 is not None:
        state_t = tuple(torch.tensor(s, requires_grad=True) for s in flat_state(state0))
    inputs = x_t
    if lengths is not None:
        inputs = pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
    hx = None if state_t is None else (state_t if len(state_t) == 2 else state_t[0])
    out, state = layer(inputs, hx)
    if lengths is not None:
        steps = x.shape[1] if batch_first else x.shape[0]
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=steps)
    return x_t, state_t, out, (list(state) if isinstance(state, tuple) else [state])


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,option", PARITY_CASES)
def test_parity_with_torch(cell, option, dtype):
    options = OPTIONS[option]
    theirs, ours = build_pair(cell, options, dtype)
    rng = numpy.random.default_rng(1)
    T, B = 5, 4
    batch_first = options.get("batch_first", False)
    x = rng.normal(size=(B, T, 6) if batch_first else (T, B, 6)).astype(dtype)
    lengths = options.get("lengths")
    stacked = ours.num_layers * ours.num_directions
    state0 = None
    if options.get("state0"):
        h0 = rng.normal(size=(stacked, B, 7)).astype(dtype)
        state0 = (h0, rng.normal(size=h0.shape).astype(dtype)) if cell == "LSTM" else h0

    (out, state), backprop = ours.begin_update(x, state0, lengths)
    x_t, state0_t, out_t, state_t = run_torch(theirs, x, state0, lengths, batch_first)

    close = dict(rtol=1e-8, atol=1e-10) if dtype == numpy.float64 else dict(rtol=1e-5, atol=2e-6)
    assert out.dtype == dtype and out.shape == tuple(out_t.shape)
    numpy.testing.assert_allclose(out, out_t.detach().numpy(), **close)
    for ours_s, theirs_s in zip(flat_state(state), state_t):
        assert ours_s.shape == (stacked, B, 7)
        numpy.testing.assert_allclose(ours_s, theirs_s.detach().numpy(), **close)

    d_out = rng.normal(size=out.shape).astype(dtype)
    d_state = [rng.normal(size=s.shape).astype(dtype) for s in flat_state(state)]
    loss_t = (out_t * _tensor(d_out)).sum()
    loss_t = loss_t + sum((s * _tensor(d)).sum() for s, d in zip(state_t, d_state))
    loss_t.backward()
    dx, dstate0 = backprop(d_out, pack_state(d_state, cell.split("_")[0]))

    if dtype == numpy.float32:
        close = dict(rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(dx, x_t.grad.numpy(), **close)
    if state0 is not None:
        for ours_d, theirs_s in zip(flat_state(dstate0), state0_t):
            numpy.testing.assert_allclose(ours_d, theirs_s.grad.numpy(), **close)
    theirs_params = dict(theirs.named_parameters())
    assert list(theirs_params) == [n for n, _ in ours.named_parameters()]
    for name, param in ours.named_parameters():
        numpy.testing.assert_allclose(param.grad, theirs_params[name].grad.numpy(),
                                      err_msg=name, **close)


def _tensor(array):
    import torch

    return torch.tensor(array)


def test_unbatched_input_matches_torch():
    torch = pytest.importorskip("torch")
    theirs, ours = build_pair("LSTM", dict(num_layers=2, bidirectional=True), numpy.float64)
    x = numpy.random.default_rng(2).normal(size=(5, 6))
    out, (h_n, c_n) = ours(x)
    out_t, (h_t, c_t) = theirs(torch.tensor(x))
    assert out.shape == (5, 14) and h_n.shape == (4, 7)
    numpy.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(c_n, c_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    (_, _), backprop = ours.begin_update(x)
    dx, (dh0, dc0) = backprop(numpy.ones_like(out))
    assert dx.shape == x.shape and dh0.shape == dc0.shape == (4, 7)


# -- state dicts ----------------------------------------------------------------------------


def test_torch_state_dict_as_numpy_and_safetensors_gives_torch_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors.numpy import load_file

    torch.manual_seed(3)
    theirs = torch.nn.GRU(6, 7, num_layers=2, bidirectional=True, batch_first=True)
    x = numpy.random.default_rng(4).normal(size=(3, 5, 6)).astype(numpy.float32)
    expected_out, expected_h = (t.detach().numpy() for t in theirs(torch.tensor(x)))

    as_numpy = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    path = tmp_path / "gru.safetensors"
    safetensors_torch.save_file(theirs.state_dict(), str(path))
    for source in (as_numpy, load_file(str(path))):
        ours = nn.GRU(6, 7, num_layers=2, bidirectional=True, batch_first=True)
        ours.load_state_dict(source)
        out, h_n = ours(x)
        numpy.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(h_n, expected_h, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip():
    first = nn.LSTM(3, 4, num_layers=2, peephole=True, rng=numpy.random.default_rng(0))
    second = nn.LSTM(3, 4, num_layers=2, peephole=True, rng=numpy.random.default_rng(1))
    second.load_state_dict(first.state_dict())
    x = numpy.random.default_rng(2).normal(size=(4, 2, 3)).astype(numpy.float32)
    numpy.testing.assert_array_equal(first(x)[0], second(x)[0])


@pytest.mark.parametrize("problem,key", [
    ("missing", "bias_hh_l1"), ("extra", "weight_ih_l2"), ("shape", "weight_hh_l0_reverse")])
def test_bad_state_dict_names_the_key(problem, key):
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    state = layer.state_dict()
    if problem == "missing":
        del state[key]
    elif problem == "extra":
        state[key] = numpy.zeros((16, 8), dtype=numpy.float32)
    else:
        state[key] = numpy.zeros((16, 5), dtype=numpy.float32)
    before = layer.state_dict()
    with pytest.raises(ValueError, match=key):
        layer.load_state_dict(state)
    for name, value in layer.state_dict().items():
        numpy.testing.assert_array_equal(value, before[name])


# -- behaviour not covered by parity ---------------------------------------------------------


def test_outputs_past_each_length_are_zero_and_float32_by_default():
    layer = nn.LSTM(3, 4, bidirectional=True)
    x = numpy.ones((6, 3, 3), dtype=numpy.float32)
    out, (h_n, c_n) = layer(x, lengths=numpy.array([6, 2, 4]))
    assert out.dtype == numpy.float32 and out.shape == (6, 3, 8)
    assert not out[2:, 1].any() and not out[4:, 2].any() and out[:2, 1].all()


def test_dropout_only_in_training_mode_and_only_between_layers():
    layer = nn.GRU(3, 8, num_layers=2, dropout=0.5, rng=numpy.random.default_rng(0))
    x = numpy.random.default_rng(1).normal(size=(4, 2, 3)).astype(numpy.float32)
    train_a, _ = layer(x)
    train_b, _ = layer(x)
    assert not numpy.allclose(train_a, train_b)
    layer.eval()
    eval_a, _ = layer(x)
    (eval_b, _), _ = layer.begin_update(x)
    numpy.testing.assert_array_equal(eval_a, eval_b)
    with pytest.warns(UserWarning, match="dropout"):
        single = nn.GRU(3, 8, dropout=0.5)
    single.load_state_dict({k: v for k, v in layer.state_dict().items() if k.endswith("l0")})
    first, _ = single(x)
    numpy.testing.assert_array_equal(first, single(x)[0])


def test_batch_first_and_time_major_agree():
    time_major = nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=numpy.float64)
    batch_first = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True,
                          dtype=numpy.float64)
    batch_first.load_state_dict(time_major.state_dict())
    x = numpy.random.default_rng(0).normal(size=(6, 2, 3))
    out_tm, (h_tm, _) = time_major(x, lengths=[6, 3])
    out_bf, (h_bf, _) = batch_first(x.transpose(1, 0, 2), lengths=[6, 3])
    numpy.testing.assert_allclose(out_bf, out_tm.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)
    numpy.testing.assert_allclose(h_bf, h_tm, rtol=1e-12, atol=1e-14)


def test_layer_composes_in_sequential_as_first_element_output():
    # A recurrent layer returns (output, state); users pick what they need.
    layer = nn.RNN(2, 3)
    (out, h_n), backprop = layer.begin_update(numpy.ones((4, 1, 2), dtype=numpy.float32))
    dx, dh0 = backprop(numpy.ones_like(out))
    assert dx.shape == (4, 1, 2) and dh0.shape == (1, 1, 3)
    assert layer.weight_ih_l0.grad.any()


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,pattern", [
    (lambda m: m(numpy.zeros((4, 2, 5), numpy.float32)), ValueError,
     r"input.*\(T, B, 3\).*\(4, 2, 5\)"),
    (lambda m: m(numpy.zeros((4, 2, 3, 1), numpy.float32)), ValueError, "input"),
    (lambda m: m(numpy.zeros((0, 2, 3), numpy.float32)), ValueError, "input"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float64)), TypeError, "input.*float32.*float64"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.int64)), TypeError, "input"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32), numpy.zeros((4, 2, 5), numpy.float32)),
     TypeError, "state0.*pair"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32),
                 (numpy.zeros((2, 2, 5), numpy.float32), None)), ValueError,
     r"state0 \(h\).*\(4, 2, 5\).*\(2, 2, 5\)"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32),
                 (None, numpy.zeros((4, 2, 5), numpy.float64))), TypeError,
     r"state0 \(c\).*float64"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32), lengths=[0, 4]), ValueError,
     r"lengths.*\[1, 4\]"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32), lengths=[5, 4]), ValueError,
     r"lengths.*\[1, 4\]"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32), lengths=[4]), ValueError,
     r"lengths.*\(2,\)"),
    (lambda m: m(numpy.zeros((4, 2, 3), numpy.float32), lengths=[4.0, 2.0]), TypeError,
     "lengths"),
], ids=["input_size", "input_ndim", "no_steps", "input_dtype", "input_int", "lstm_state_not_pair",
        "state_shape", "state_dtype", "length_zero", "length_past_T", "lengths_count",
        "lengths_float"])
def test_bad_input_names_the_argument(call, error, pattern):
    layer = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    with pytest.raises(error, match=pattern):
        call(layer)


def test_bad_state_for_gru_and_bad_gradients():
    layer = nn.GRU(3, 5)
    x = numpy.zeros((4, 2, 3), numpy.float32)
    with pytest.raises(TypeError, match="state0"):
        layer(x, (numpy.zeros((1, 2, 5), numpy.float32),))
    (out, _), backprop = layer.begin_update(x)
    with pytest.raises(ValueError, match=r"d_output.*\(4, 2, 5\).*\(4, 2, 6\)"):
        backprop(numpy.zeros((4, 2, 6), numpy.float32))
    with pytest.raises(ValueError, match=r"d_state.*\(1, 2, 5\)"):
        backprop(numpy.zeros_like(out), numpy.zeros((2, 2, 5), numpy.float32))


@pytest.mark.parametrize("make,pattern", [
    (lambda: nn.RNN(3, 4, nonlinearity="sigmoid"), "nonlinearity"),
    (lambda: nn.LSTM(3, 0), "hidden_size"),
    (lambda: nn.GRU(0, 4), "input_size"),
    (lambda: nn.GRU(3, 4, num_layers=0), "num_layers"),
    (lambda: nn.GRU(3, 4, num_layers=2, dropout=1.0), "dropout"),
    (lambda: nn.GRU(3, 4, dtype=numpy.int32), "dtype"),
])
def test_bad_constructor_arguments(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


# -- learning ---------------------------------------------------------------------------------


def learn_to_reverse(seed, max_steps=3000):
    """Train a bidirectional LSTM to output its input sequence reversed (the first half of the
    answer is only in the reverse direction, the second only in the forward one); returns
    the steps taken and the accuracy on fresh sequences.

    At a constant rate of 2e-2 it learns the task in about 1,000 steps and then keeps jumping
    out of it (held-out accuracy 0.998, then 0.974 200 steps later): the rate decays so that
    it settles, and training goes on until a held-out batch shows the task learnt (at most 2
    tokens wrong in 2,048), however many steps that takes on this machine's arithmetic.
    """
    rng = numpy.random.default_rng(seed)
    vocab, steps, batch, hidden = 6, 8, 32, 32
    embed = nn.Embedding(vocab, 16, rng=rng)
    lstm = nn.LSTM(16, hidden, bidirectional=True, rng=rng)
    head = nn.Linear(2 * hidden, vocab, rng=rng)
    params = [p for module in (embed, lstm, head) for p in module.parameters()]
    optimizer = nn.Adam(params, lr=2e-2)
    schedule = nn.StepLR(optimizer, step_size=300, gamma=0.6)

    def accuracy(ids):
        return float((head(lstm(embed(ids))[0]).argmax(axis=-1) == ids[::-1]).mean())

    held_out = rng.integers(0, vocab, size=(steps, 256))
    for step in range(1, max_steps + 1):
        ids = rng.integers(0, vocab, size=(steps, batch))
        x, backprop_embed = embed.begin_update(ids)
        (features, _), backprop_lstm = lstm.begin_update(x)
        logits, backprop_head = head.begin_update(features)
        loss, d_logits = nn.softmax_cross_entropy(logits, ids[::-1])
        optimizer.zero_grad()
        dx, _ = backprop_lstm(backprop_head(d_logits))
        backprop_embed(dx)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 and accuracy(held_out) >= 0.999:
            break
    return step, accuracy(rng.integers(0, vocab, size=(steps, 1000)))


def test_bidirectional_lstm_learns_to_reverse_sequences(single_thread):
    _, fresh = learn_to_reverse(seed=0)
    assert fresh > 0.99


def test_many_to_one_gru_learns_the_adding_problem(single_thread):
    rng = numpy.random.default_rng(0)
    steps, hidden = 20, 32

    def batch(size):
        values = rng.random((steps, size))
        # Two distinct marked steps per sequence: the first two of a random permutation.
        first_two = rng.random((steps, size)).argsort(axis=0)[:2]
        marks = numpy.zeros((steps, size))
        marks[first_two, numpy.arange(size)] = 1
        x = numpy.stack([values, marks], axis=-1).astype(numpy.float32)
        return x, (values * marks).sum(axis=0)[:, None].astype(numpy.float32)

    gru = nn.GRU(2, hidden, rng=rng)
    head = nn.Linear(hidden, 1, rng=rng)
    optimizer = nn.Adam(list(gru.parameters()) + list(head.parameters()), lr=1e-2)
    for _ in range(400):
        x, target = batch(64)
        (out, h_n), backprop_gru = gru.begin_update(x)
        prediction, backprop_head = head.begin_update(h_n[-1])
        _, d_prediction = nn.mse_loss(prediction, target)
        optimizer.zero_grad()
        d_h_n = numpy.zeros_like(h_n)
        d_h_n[-1] = backprop_head(d_prediction)
        backprop_gru(numpy.zeros_like(out), d_h_n)
        optimizer.step()
    x, target = batch(1000)
    mse = float(((head(gru(x)[1][-1]) - target) ** 2).mean())
    assert mse < 0.01  # predicting 1 always scores 1/6


# -- recurrent dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("name,options", [
    ("RNN", dict(nonlinearity="relu")), ("RNN", dict()), ("LSTM", dict(peephole=True)),
    ("LSTM", dict()), ("GRU", dict())])
def test_gradients_with_recurrent_dropout(name, options, single_thread):
    """Stacked, bidirectional, with lengths and inter-layer dropout: the masks of each
    call come from the same generator state, so the loss is a fixed smooth function."""
    rng = numpy.random.default_rng(14)
    layer = CLASSES[name](3, 4, num_layers=2, bidirectional=True, dropout=0.2,
                          recurrent_dropout=0.4, dtype=numpy.float64, rng=rng, **options)

    def same_masks():
        layer.rng = numpy.random.default_rng(98)

    x = rng.normal(size=(5, 3, 3))
    h0 = rng.normal(size=(4, 3, 4))
    state0 = (h0, rng.normal(size=h0.shape)) if name == "LSTM" else h0
    check_gradients(layer, x, state0, [5, 2, 4], rng, before_each_call=same_masks)


def identity_relu_rnn(H, p, seed=0):
    """h_t = relu(x_t + m * h_{t-1}): with positive inputs the mask m each step applied can
    be read back from the outputs."""
    layer = nn.RNN(H, H, nonlinearity="relu", recurrent_dropout=p, dtype=numpy.float64,
                   rng=numpy.random.default_rng(seed))
    layer.load_state_dict({"weight_ih_l0": numpy.eye(H), "weight_hh_l0": numpy.eye(H),
                           "bias_ih_l0": numpy.zeros(H), "bias_hh_l0": numpy.zeros(H)})
    return layer


def masks_applied(out, x):
    """(T - 1, B, H): the mask on h_{t-1} at steps 1..T-1, from h_t = x_t + m * h_{t-1}."""
    return (out[1:] - x[1:]) / out[:-1]


def test_recurrent_dropout_is_one_mask_per_sequence_and_unit_fixed_across_time():
    T, B, H, p = 6, 32, 48, 0.25
    layer = identity_relu_rnn(H, p)
    x = numpy.random.default_rng(1).uniform(0.5, 1.5, size=(T, B, H))
    first = masks_applied(layer(x)[0], x)
    # The same mask at every step ...
    numpy.testing.assert_allclose(first, numpy.broadcast_to(first[0], first.shape), atol=1e-12)
    # ... of zeros and 1/(1-p) (inverted dropout), about a fraction p of zeros ...
    mask = first[0]
    assert numpy.all(numpy.isclose(mask, 0) | numpy.isclose(mask, 1 / (1 - p)))
    assert abs((mask == 0).mean() - p) < 0.05
    # ... differing between sequences of a batch ...
    assert not numpy.array_equal(mask[0], mask[1])
    # ... and drawn anew at each call; begin_update's mask is also one per sequence.
    second = masks_applied(layer(x)[0], x)
    assert not numpy.allclose(second[0], mask)
    (out, _), _ = layer.begin_update(x)
    third = masks_applied(out, x)
    numpy.testing.assert_allclose(third, numpy.broadcast_to(third[0], third.shape), atol=1e-12)


def test_recurrent_dropout_acts_in_training_mode_only_and_p_zero_is_none():
    rng = numpy.random.default_rng(2)
    x = rng.normal(size=(5, 3, 4))
    for cls in (nn.LSTM, nn.GRU, nn.RNN):
        plain = cls(4, 6, num_layers=2, bidirectional=True, dtype=numpy.float64,
                    rng=numpy.random.default_rng(3))
        zero = cls(4, 6, num_layers=2, bidirectional=True, recurrent_dropout=0.0,
                   dtype=numpy.float64, rng=numpy.random.default_rng(3))
        dropped = cls(4, 6, num_layers=2, bidirectional=True, recurrent_dropout=0.5,
                      dtype=numpy.float64, rng=numpy.random.default_rng(3))
        d_out = rng.normal(size=(5, 3, 12))
        results = []
        for layer in (plain, zero, dropped):
            (out, _), backprop = layer.begin_update(x)
            layer.zero_grad()
            dx, _ = backprop(d_out)
            results.append([out, dx] + [p.grad.copy() for p in layer.parameters()])
        for a, b in zip(results[0], results[1]):      # p = 0: bit for bit no dropout
            numpy.testing.assert_array_equal(a, b)
        assert not numpy.allclose(results[2][0], results[0][0])   # training: it acts
        dropped.eval()                                             # eval: it does not
        numpy.testing.assert_array_equal(dropped(x)[0], plain(x)[0])
        numpy.testing.assert_array_equal(dropped.begin_update(x)[0][0], plain(x)[0])


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, True, "0.2", None])
def test_bad_recurrent_dropout_names_the_argument(value):
    for cls in (nn.LSTM, nn.GRU, nn.RNN):
        with pytest.raises(ValueError, match="recurrent_dropout: expected a probability"):
            cls(3, 4, recurrent_dropout=value)


def test_repr_shows_recurrent_dropout():
    assert repr(nn.GRU(3, 4, recurrent_dropout=0.25)) == "GRU(3, 4, recurrent_dropout=0.25)"


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_recurrent_dropout_reaches_h_only_through_the_recurrent_weights(name):
    """With W_hh = 0 the mask has nothing left to act on: the state, the outputs and the
    GRU's carry z * h_{t-1} are unmasked (Keras's choice)."""
    rng = numpy.random.default_rng(4)
    x = rng.normal(size=(6, 5, 3))
    layers = [CLASSES[name](3, 4, recurrent_dropout=p, dtype=numpy.float64,
                            rng=numpy.random.default_rng(5)) for p in (0.0, 0.6)]
    outputs = []
    for layer in layers:
        layer.weight_hh_l0.data[...] = 0
        outputs.append(layer(x)[0])
    numpy.testing.assert_array_equal(outputs[0], outputs[1])
    for layer in layers:                            # the control: with weights, it acts
        layer.weight_hh_l0.data[...] = 0.3
    assert not numpy.allclose(layers[1](x)[0], layers[0](x)[0])
