"""CPU operations: NumPy for light array code, the compiled core for recurrent kernels."""

import numpy


class NumpyOps:
    name = "cpu"
    xp = numpy

    def asarray(self, a, dtype=None):
        return numpy.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a):
        return numpy.asarray(a)
