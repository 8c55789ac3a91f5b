"""Central finite differences, shared by the gradient tests."""

import numpy


def numeric_derivative(f, array, index, eps=1e-6):
    """d f() / d array[index] by central differences (array perturbed in place, restored)."""
    original = array[index]
    array[index] = original + eps
    plus = f()
    array[index] = original - eps
    minus = f()
    array[index] = original
    return (plus - minus) / (2 * eps)


def numeric_gradient(f, array, eps=1e-6):
    """d f() / d array for every element."""
    grad = numpy.zeros_like(array)
    for index in numpy.ndindex(array.shape):
        grad[index] = numeric_derivative(f, array, index, eps)
    return grad
