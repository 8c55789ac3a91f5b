"""Initializers: torch's fans and gains, the right distributions, seeding."""

import math

import numpy
import pytest

from predtext import nn
from predtext.nn import init

SHAPES = [(30, 20), (8, 3, 5), (4, 6, 2, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.calculate_fan_in_and_fan_out(numpy.empty(shape)) == expected


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="2 dimensions"):
        init.calculate_fan_in_and_fan_out(numpy.empty(5))


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("selu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)),
])
def test_gains_match_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


def test_unknown_nonlinearity_raises():
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")


def uniform_bound_and_normal_std(shape, kind):
    """The textbook bound (uniform) or std (normal) for each scheme, from the fan formulas."""
    receptive = int(numpy.prod(shape[2:]))
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    return {
        "xavier_uniform_": math.sqrt(6 / (fan_in + fan_out)),
        "xavier_normal_": math.sqrt(2 / (fan_in + fan_out)),
        "kaiming_uniform_": math.sqrt(6 / fan_in),  # leaky_relu with a=0 has gain sqrt(2)
        "kaiming_normal_": math.sqrt(2 / fan_in),
    }[kind]


@pytest.mark.parametrize("kind", ["xavier_uniform_", "kaiming_uniform_"])
@pytest.mark.parametrize("shape", [(300, 200), (60, 40, 5)])
def test_uniform_schemes_fill_up_to_the_bound(kind, shape):
    array = numpy.zeros(shape)
    result = getattr(init, kind)(array, rng=numpy.random.default_rng(0))
    assert result is array
    bound = uniform_bound_and_normal_std(shape, kind)
    assert numpy.abs(array).max() <= bound
    assert numpy.abs(array).max() > 0.99 * bound
    assert array.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize("kind", ["xavier_normal_", "kaiming_normal_"])
@pytest.mark.parametrize("shape", [(300, 200), (60, 40, 5)])
def test_normal_schemes_have_the_right_spread(kind, shape):
    array = numpy.zeros(shape, dtype=numpy.float32)
    getattr(init, kind)(array, rng=numpy.random.default_rng(1))
    assert array.dtype == numpy.float32
    assert array.mean() == pytest.approx(0.0, abs=0.01)
    assert array.std() == pytest.approx(uniform_bound_and_normal_std(shape, kind), rel=0.02)


def test_kaiming_fan_out_mode_and_gain_options():
    array = numpy.zeros((400, 100))
    init.kaiming_normal_(array, mode="fan_out", nonlinearity="relu",
                         rng=numpy.random.default_rng(2))
    assert array.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(array, mode="fan_both")


@pytest.mark.parametrize("shape", [(6, 6), (10, 4), (4, 10), (6, 2, 3)])
def test_orthogonal_rows_or_columns_are_orthonormal(shape):
    array = numpy.zeros(shape)
    init.orthogonal_(array, gain=2.0, rng=numpy.random.default_rng(3))
    flat = array.reshape(shape[0], -1) / 2.0
    small = min(flat.shape)
    product = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    numpy.testing.assert_allclose(product, numpy.eye(small), atol=1e-12)


def test_uniform_and_zeros():
    array = numpy.ones((50, 50))
    init.uniform_(array, -0.1, 0.3, rng=numpy.random.default_rng(4))
    assert array.min() >= -0.1 and array.max() < 0.3
    assert array.mean() == pytest.approx(0.1, abs=0.01)
    assert init.zeros_(array) is array and not array.any()


def test_lstm_forget_bias_sets_only_the_f_block():
    hidden = 5
    bias = numpy.zeros(4 * hidden)
    init.lstm_forget_bias_(bias, hidden, value=2.0)
    numpy.testing.assert_array_equal(bias[hidden:2 * hidden], 2.0)
    assert not bias[:hidden].any() and not bias[2 * hidden:].any()
    with pytest.raises(ValueError, match="bias_array"):
        init.lstm_forget_bias_(numpy.zeros(12), hidden)


def test_initializers_only_take_numpy_arrays():
    with pytest.raises(TypeError, match="array"):
        init.zeros_([1.0, 2.0])
    with pytest.raises(TypeError, match="rng"):
        init.uniform_(numpy.zeros(3), rng=42)


def test_manual_seed_makes_layers_reproducible():
    nn.manual_seed(123)
    first = nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 2)).state_dict()
    nn.manual_seed(123)
    second = nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 2)).state_dict()
    third = nn.Sequential(nn.Linear(4, 3), nn.Embedding(5, 2)).state_dict()
    for name in first:
        numpy.testing.assert_array_equal(first[name], second[name])
    assert not numpy.array_equal(second["0.weight"], third["0.weight"])


def test_layers_take_their_own_generator():
    a = nn.Linear(4, 3, rng=numpy.random.default_rng(9))
    nn.manual_seed(0)  # the shared generator does not matter when rng is given
    b = nn.Linear(4, 3, rng=numpy.random.default_rng(9))
    numpy.testing.assert_array_equal(a.weight.data, b.weight.data)
