"""Central finite differences, shared by the gradient tests."""

import numpy


def numeric_gradient(f, array, eps=1e-6):
    """d f() / d array by central differences, perturbing ``array`` in place (restored)."""
    grad = numpy.zeros_like(array)
    for index in numpy.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        plus = f()
        array[index] = original - eps
        minus = f()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad
