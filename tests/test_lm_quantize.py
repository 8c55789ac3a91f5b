"""Per-row symmetric 8-bit weights: known values, the scale/2 error bound, bad input."""

import numpy
import pytest

from predtext.lm.quantize import dequantize_rows, quantize_rows


def test_known_rows():
    weight = numpy.array([[0.0, 1.27, -0.64, 0.3],     # peak 1.27: scale 0.01
                          [0.0, 0.0, 0.0, 0.0],        # zero row: scale 1, q 0
                          [-2.54, 0.0, 0.02, 2.54]], numpy.float32)
    q, scale = quantize_rows(weight)
    assert q.dtype == numpy.int8 and scale.dtype == numpy.float32
    numpy.testing.assert_allclose(scale, [0.01, 1.0, 0.02], rtol=1e-6)
    numpy.testing.assert_array_equal(q, [[0, 127, -64, 30], [0, 0, 0, 0], [-127, 0, 1, 127]])


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_every_element_is_within_half_a_step(dtype):
    rng = numpy.random.default_rng(3)
    weight = (rng.standard_normal((37, 19)) * rng.uniform(0.01, 5, (37, 1))).astype(dtype)
    q, scale = quantize_rows(weight)
    assert q.min() >= -127 and q.max() <= 127
    # The row's largest magnitude maps to +-127 exactly: the whole range is used.
    numpy.testing.assert_array_equal(numpy.abs(q).max(axis=1), 127)
    back = dequantize_rows(q, scale, dtype)
    assert back.dtype == dtype
    error = numpy.abs(back.astype(numpy.float64) - weight) / scale[:, None]
    assert error.max() <= 0.5 + 1e-5     # half a step, plus float32 rounding of scale * q


@pytest.mark.parametrize("weight", [numpy.zeros(4, numpy.float32),
                                    numpy.zeros((2, 2), numpy.int32),
                                    numpy.array([[1.0, numpy.nan]], numpy.float32),
                                    numpy.array([[numpy.inf, 1.0]], numpy.float32)])
def test_bad_weights_are_refused_naming_the_argument(weight):
    with pytest.raises(ValueError, match="weight"):
        quantize_rows(weight)
