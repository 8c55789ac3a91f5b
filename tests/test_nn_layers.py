"""Linear, Embedding, Dropout, LockedDropout, Sequential: values, gradients, randomness."""

import math

import numpy
import pytest
from gradcheck import numeric_gradient

from predtext import nn

# -- Linear ---------------------------------------------------------------------------


def test_linear_shapes_and_init_bounds():
    nn.manual_seed(0)
    layer = nn.Linear(64, 300)
    assert layer.weight.shape == (300, 64) and layer.bias.shape == (300,)
    assert layer.weight.dtype == numpy.float32
    bound = 1 / math.sqrt(64)
    for values in (layer.weight.data, layer.bias.data):
        assert numpy.abs(values).max() <= bound
        # A uniform on [-b, b] has its extremes near b and standard deviation b/sqrt(3).
        assert numpy.abs(values).max() > 0.95 * bound
        assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_linear_without_bias_has_only_weight():
    layer = nn.Linear(3, 2, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    x = numpy.ones((1, 3), dtype=numpy.float32)
    numpy.testing.assert_allclose(layer(x), x @ layer.weight.data.T, rtol=1e-6)


def test_linear_accepts_any_leading_shape():
    layer = nn.Linear(4, 3, dtype=numpy.float64)
    x = numpy.random.default_rng(1).normal(size=(2, 5, 4))
    y = layer(x)
    assert y.shape == (2, 5, 3)
    numpy.testing.assert_allclose(y[1, 2], layer.weight.data @ x[1, 2] + layer.bias.data)
    assert layer(x[0, 0]).shape == (3,)


def test_linear_rejects_wrong_feature_size():
    with pytest.raises(ValueError, match="input"):
        nn.Linear(4, 3)(numpy.zeros((2, 5)))


def test_linear_gradients_match_finite_differences():
    rng = numpy.random.default_rng(2)
    layer = nn.Linear(4, 3, dtype=numpy.float64)
    x = rng.normal(size=(2, 3, 4))
    d_y = rng.normal(size=(2, 3, 3))  # the loss is sum(y * d_y)
    y, backprop = layer.begin_update(x)
    d_x = backprop(d_y)

    def loss():
        return float((layer(x) * d_y).sum())

    numpy.testing.assert_allclose(d_x, numeric_gradient(loss, x), rtol=1e-6, atol=1e-8)
    numpy.testing.assert_allclose(layer.weight.grad, numeric_gradient(loss, layer.weight.data),
                                  rtol=1e-6, atol=1e-8)
    numpy.testing.assert_allclose(layer.bias.grad, numeric_gradient(loss, layer.bias.data),
                                  rtol=1e-6, atol=1e-8)


def test_linear_backprop_accumulates():
    layer = nn.Linear(3, 2, dtype=numpy.float64)
    x = numpy.ones((4, 3))
    _, backprop = layer.begin_update(x)
    backprop(numpy.ones((4, 2)))
    once = layer.weight.grad.copy()
    backprop(numpy.ones((4, 2)))
    numpy.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_linear_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(3)
    ours = nn.Linear(5, 4, dtype=numpy.float64)
    theirs = torch.nn.Linear(5, 4).double()
    ours.load_state_dict(theirs.state_dict())
    x = rng.normal(size=(3, 2, 5))
    d_y = rng.normal(size=(3, 2, 4))
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)
    y_t.backward(torch.tensor(d_y))
    y, backprop = ours.begin_update(x)
    d_x = backprop(d_y)
    numpy.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(d_x, x_t.grad.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-12)


# -- Embedding ------------------------------------------------------------------------


def test_embedding_looks_up_rows_for_any_id_shape():
    layer = nn.Embedding(10, 3)
    ids = numpy.array([[1, 2, 3], [9, 0, 1]])
    out = layer(ids)
    assert out.shape == (2, 3, 3)
    numpy.testing.assert_array_equal(out[1, 0], layer.weight.data[9])
    assert layer(numpy.int64(4)).shape == (3,)


def test_embedding_init_is_standard_normal_with_zero_padding_row():
    nn.manual_seed(1)
    layer = nn.Embedding(2000, 16, padding_idx=3)
    values = numpy.delete(layer.weight.data, 3, axis=0)
    assert values.mean() == pytest.approx(0.0, abs=0.02)
    assert values.std() == pytest.approx(1.0, abs=0.02)
    assert not layer.weight.data[3].any()


def test_embedding_negative_padding_idx_counts_from_the_end():
    assert nn.Embedding(10, 2, padding_idx=-1).padding_idx == 9
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(10, 2, padding_idx=10)


@pytest.mark.parametrize("ids", [[0, 10], [-1, 2]])
def test_embedding_out_of_range_ids_raise_naming_input(ids):
    with pytest.raises(ValueError, match="input"):
        nn.Embedding(10, 2)(numpy.array(ids))
    with pytest.raises(ValueError, match="input"):
        nn.Embedding(10, 2).begin_update(numpy.array(ids))


def test_embedding_rejects_float_ids():
    with pytest.raises(TypeError, match="input"):
        nn.Embedding(10, 2)(numpy.array([1.0, 2.0]))


def test_embedding_gradient_sums_repeated_ids_and_skips_padding():
    layer = nn.Embedding(6, 2, padding_idx=0, dtype=numpy.float64)
    ids = numpy.array([[1, 1, 0], [4, 1, 0]])
    d_out = numpy.arange(12, dtype=numpy.float64).reshape(2, 3, 2)
    _, backprop = layer.begin_update(ids)
    assert backprop(d_out) is None
    expected = numpy.zeros((6, 2))
    expected[1] = d_out[0, 0] + d_out[0, 1] + d_out[1, 1]
    expected[4] = d_out[1, 0]
    numpy.testing.assert_array_equal(layer.weight.grad, expected)


def test_embedding_matches_torch_gradient():
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(4)
    theirs = torch.nn.Embedding(7, 3, padding_idx=2).double()
    ours = nn.Embedding(7, 3, padding_idx=2, dtype=numpy.float64)
    ours.load_state_dict(theirs.state_dict())
    ids = rng.integers(0, 7, size=(4, 5))
    d_out = rng.normal(size=(4, 5, 3))
    out_t = theirs(torch.from_numpy(ids))
    out_t.backward(torch.from_numpy(d_out))
    out, backprop = ours.begin_update(ids)
    backprop(d_out)
    numpy.testing.assert_allclose(out, out_t.detach().numpy())
    numpy.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


# -- Dropout --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5"])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(p)


def test_dropout_statistics():
    nn.manual_seed(5)
    x = numpy.ones((400, 500), dtype=numpy.float32)
    y = nn.Dropout(0.3)(x)
    dropped = (y == 0).mean()
    assert dropped == pytest.approx(0.3, abs=0.01)
    numpy.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    assert y.mean() == pytest.approx(1.0, abs=0.01)  # inverted dropout keeps the expectation
    assert y.dtype == numpy.float32


def test_dropout_is_identity_in_eval_mode():
    layer = nn.Dropout(0.5).eval()
    x = numpy.random.default_rng(6).normal(size=(10, 10))
    numpy.testing.assert_array_equal(layer(x), x)
    y, backprop = layer.begin_update(x)
    numpy.testing.assert_array_equal(y, x)
    numpy.testing.assert_array_equal(backprop(x), x)


def test_dropout_backprop_uses_the_forward_mask():
    layer = nn.Dropout(0.5, rng=numpy.random.default_rng(7))
    x = numpy.ones((50, 20))
    y, backprop = layer.begin_update(x)
    d_x = backprop(numpy.full_like(x, 3.0))
    numpy.testing.assert_array_equal(d_x, 3.0 * y)


def test_dropout_is_deterministic_under_a_seed():
    x = numpy.ones((30, 30))
    nn.manual_seed(11)
    first = nn.Dropout(0.5)(x)
    nn.manual_seed(11)
    second = nn.Dropout(0.5)(x)
    third = nn.Dropout(0.5)(x)
    numpy.testing.assert_array_equal(first, second)
    assert not numpy.array_equal(second, third)
    own_a = nn.Dropout(0.5, rng=numpy.random.default_rng(3))(x)
    own_b = nn.Dropout(0.5, rng=numpy.random.default_rng(3))(x)
    numpy.testing.assert_array_equal(own_a, own_b)


@pytest.mark.parametrize("batch_first", [False, True])
def test_locked_dropout_shares_one_mask_across_time(batch_first):
    nn.manual_seed(8)
    layer = nn.LockedDropout(0.5, batch_first=batch_first)
    x = numpy.ones((40, 6, 30) if batch_first else (6, 40, 30))  # 6 steps, 40 sequences
    y, backprop = layer.begin_update(x)
    time_axis = 1 if batch_first else 0
    steps = numpy.moveaxis(y, time_axis, 0)
    for step in steps[1:]:
        numpy.testing.assert_array_equal(step, steps[0])
    # Across sequences and features the masks differ, at about rate p.
    assert (steps[0] == 0).mean() == pytest.approx(0.5, abs=0.05)
    numpy.testing.assert_array_equal(backprop(numpy.ones_like(x)), y)


def test_locked_dropout_eval_identity_and_shape_check():
    layer = nn.LockedDropout(0.5).eval()
    x = numpy.ones((3, 2, 4))
    numpy.testing.assert_array_equal(layer(x), x)
    with pytest.raises(ValueError, match="input"):
        layer(numpy.ones((3, 4)))


# -- Sequential -----------------------------------------------------------------------


def test_sequential_gradients_match_finite_differences():
    rng = numpy.random.default_rng(9)
    model = nn.Sequential(nn.Linear(3, 5, dtype=numpy.float64),
                          nn.Linear(5, 2, dtype=numpy.float64))
    x = rng.normal(size=(4, 3))
    d_y = rng.normal(size=(4, 2))
    _, backprop = model.begin_update(x)
    d_x = backprop(d_y)

    def loss():
        return float((model(x) * d_y).sum())

    numpy.testing.assert_allclose(d_x, numeric_gradient(loss, x), rtol=1e-6, atol=1e-8)
    numpy.testing.assert_allclose(model[0].weight.grad,
                                  numeric_gradient(loss, model[0].weight.data),
                                  rtol=1e-6, atol=1e-8)


def test_sequential_with_embedding_and_dropout_matches_torch_in_eval():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Embedding(9, 4), torch.nn.Dropout(0.2),
                                 torch.nn.Linear(4, 3)).double().eval()
    ours = nn.Sequential(nn.Embedding(9, 4, dtype=numpy.float64), nn.Dropout(0.2),
                         nn.Linear(4, 3, dtype=numpy.float64)).eval()
    ours.load_state_dict(theirs.state_dict())
    ids = numpy.array([[0, 8, 3], [2, 2, 1]])
    numpy.testing.assert_allclose(ours(ids), theirs(torch.from_numpy(ids)).detach().numpy(),
                                  rtol=1e-12)


def test_sequential_indexing_and_type_check():
    first, second = nn.Linear(2, 2), nn.Linear(2, 1)
    model = nn.Sequential(first, second)
    assert len(model) == 2 and model[0] is first and model[-1] is second
    assert list(model) == [first, second]
    assert model[1:][0] is second
    with pytest.raises(TypeError, match="modules"):
        nn.Sequential(first, lambda x: x)
