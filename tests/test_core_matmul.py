"""predtext._core.matmul: the threaded product behind Linear, against NumPy."""

import numpy as np
import pytest

from predtext import _core
from predtext.backend import get_ops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (1, 300, 64), (600, 70, 256),
                                   (257, 33, 1)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matches_numpy_with_every_transpose(dtype, shape, trans_a, trans_b):
    M, N, K = shape
    rng = np.random.default_rng(M * 31 + N)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    got = _core.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    assert got.dtype == dtype and got.shape == (M, N)
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.sqrt(K))
    out = np.full((M, N), 2.0, dtype)
    assert _core.matmul(a, b, out, trans_a, trans_b, accumulate=True) is out
    np.testing.assert_allclose(out, expected + 2.0, rtol=tolerance, atol=tolerance * np.sqrt(K))


def test_same_result_on_one_thread_and_on_all():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((512, 200)), rng.standard_normal((300, 200))
    threads = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        one = _core.matmul(a, b, trans_b=True)
    finally:
        _core.set_num_threads(threads)
    np.testing.assert_allclose(_core.matmul(a, b, trans_b=True), one, rtol=1e-12, atol=1e-12)


def test_empty_inner_size_gives_zeros_or_leaves_the_sum():
    a, b = np.zeros((3, 0)), np.zeros((0, 4))
    np.testing.assert_array_equal(_core.matmul(a, b), np.zeros((3, 4)))
    out = np.ones((3, 4))
    _core.matmul(a, b, out, accumulate=True)
    np.testing.assert_array_equal(out, np.ones((3, 4)))


def test_bad_arguments_are_named():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner sizes"):
        _core.matmul(a, np.zeros((5, 2), np.float32))
    with pytest.raises(TypeError, match="b: expected dtype float32"):
        _core.matmul(a, np.zeros((4, 2)))
    with pytest.raises(TypeError, match="a: expected dtype float32 or float64"):
        _core.matmul(a.astype(np.int32), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="out: expected shape"):
        _core.matmul(a, np.zeros((4, 2), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="out: must not overlap"):
        square = np.zeros((4, 4), np.float32)
        _core.matmul(square, square, square)
    with pytest.raises(ValueError, match="a: expected 2 dimensions"):
        _core.matmul(np.zeros(3, np.float32), a)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.matmul(np.zeros((4, 3), np.float32).T, np.zeros((4, 2), np.float32))


def test_the_cpu_backend_falls_back_to_numpy_for_other_layouts():
    ops = get_ops()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = np.asfortranarray(rng.standard_normal((4, 5)).astype(np.float32))
    np.testing.assert_allclose(ops.matmul(a, b), a @ b, rtol=1e-6)
    out = np.ones((5, 6), np.float32)
    ops.matmul(b, a, out=out, trans_a=True, trans_b=True, accumulate=True)
    np.testing.assert_allclose(out, 1 + b.T @ a.T, rtol=1e-5)
