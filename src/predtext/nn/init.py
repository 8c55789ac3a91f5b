"""Weight initializers (in place on NumPy arrays) and the shared random source.

Fan computations and gains follow ``torch.nn.init``, so a layer initialised here has the
same distribution as its torch counterpart. Every function takes an optional ``rng``
(a ``numpy.random.Generator``); without one it draws from the module-level generator
that ``manual_seed`` resets, which makes whole runs reproducible from one seed.
"""

import math

import numpy

from predtext.backend import ops_of

_generator = numpy.random.default_rng()


def manual_seed(seed):
    """Reset the shared generator used by initializers and dropout when no ``rng`` is given."""
    global _generator
    _generator = numpy.random.default_rng(seed)
    return _generator


def get_rng(rng=None):
    """Return ``rng`` if one is given, else the shared generator (looked up at call time)."""
    if rng is None:
        return _generator
    if not isinstance(rng, numpy.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_array(array):
    # A device array (CuPy's) is filled too: the values are drawn on the host from the one
    # generator, so a model starts the same on every backend.
    if not isinstance(array, numpy.ndarray) and not hasattr(array, "__cuda_array_interface__"):
        raise TypeError(f"array: expected a numpy.ndarray or a device array, "
                        f"got {type(array).__name__}")
    return array


def _fill(array, values):
    if not isinstance(array, numpy.ndarray):
        values = ops_of(array).asarray(values, dtype=array.dtype)
    array[...] = values
    return array


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity, as ``torch.nn.init.calculate_gain``."""
    unit_gain = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in unit_gain:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"param: expected a number for leaky_relu, got {slope!r}")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"nonlinearity: unsupported value {nonlinearity!r}")


def calculate_fan_in_and_fan_out(array):
    """``(fan_in, fan_out)`` as torch computes them: dim 1 and dim 0 times the receptive field."""
    if array.ndim < 2:
        raise ValueError(
            f"array: fan in and fan out need at least 2 dimensions, got shape {array.shape}"
        )
    receptive_field = int(numpy.prod(array.shape[2:])) if array.ndim > 2 else 1
    return array.shape[1] * receptive_field, array.shape[0] * receptive_field


def _fan(array, mode):
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")


def uniform_(array, a=0.0, b=1.0, rng=None):
    """Fill ``array`` with U(a, b)."""
    _check_array(array)
    return _fill(array, get_rng(rng).uniform(a, b, size=array.shape))


def normal_(array, mean=0.0, std=1.0, rng=None):
    """Fill ``array`` with N(mean, std**2)."""
    _check_array(array)
    return _fill(array, get_rng(rng).normal(mean, std, size=array.shape))


def constant_(array, value):
    _check_array(array)
    return _fill(array, value)


def zeros_(array):
    return constant_(array, 0.0)


def ones_(array):
    return constant_(array, 1.0)


def xavier_uniform_(array, gain=1.0, rng=None):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    _check_array(array)
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, rng=rng)


def xavier_normal_(array, gain=1.0, rng=None):
    """Glorot normal: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check_array(array)
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(array, 0.0, std, rng=rng)


def kaiming_uniform_(array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He uniform: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    _check_array(array)
    fan = _fan(array, mode)
    if fan == 0:
        return array  # torch warns and leaves an empty array alone
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    return uniform_(array, -bound, bound, rng=rng)


def kaiming_normal_(array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He normal: N(0, std**2), std = gain / sqrt(fan)."""
    _check_array(array)
    fan = _fan(array, mode)
    if fan == 0:
        return array
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(array, 0.0, std, rng=rng)


def orthogonal_(array, gain=1.0, rng=None):
    """A (semi-)orthogonal matrix times ``gain``; dimensions past the second are flattened.

    As in torch: QR of a Gaussian matrix, with Q's columns sign-corrected by R's diagonal
    so that the result is uniformly distributed over orthogonal matrices.
    """
    _check_array(array)
    if array.ndim < 2:
        raise ValueError(f"array: orthogonal_ needs at least 2 dimensions, got shape {array.shape}")
    if array.size == 0:
        return array
    rows = array.shape[0]
    cols = array.size // rows
    gaussian = get_rng(rng).normal(0.0, 1.0, size=(rows, cols))
    if rows < cols:
        gaussian = gaussian.T
    q, r = numpy.linalg.qr(gaussian)
    q = q * numpy.sign(numpy.diag(r))
    if rows < cols:
        q = q.T
    return _fill(array, (gain * q).reshape(array.shape))


def lstm_forget_bias_(bias_array, hidden_size, value=1.0):
    """Set the forget-gate block of an LSTM bias (gate order i, f, g, o) to ``value``.

    ``bias_array`` has shape ``(4 * hidden_size,)``. The cell adds ``bias_ih`` and
    ``bias_hh``, so set one of them (and leave the other's f block at zero) to get an
    effective forget bias of ``value``.
    """
    _check_array(bias_array)
    if bias_array.shape != (4 * hidden_size,):
        raise ValueError(
            f"bias_array: expected shape ({4 * hidden_size},) for hidden_size={hidden_size}, "
            f"got {bias_array.shape}"
        )
    bias_array[hidden_size : 2 * hidden_size] = value
    return bias_array
