"""Symmetric 8-bit weights with one float32 scale per output row, for inference.

A weight matrix ``w`` of shape ``(N, K)`` is stored as ``q`` (int8, ``(N, K)``) and ``scale``
(float32, ``(N,)``) with ``w[n, k] ~ scale[n] * q[n, k]``, where ``scale[n] = max|w[n, :]| /
127`` and ``q = round(w / scale)``. Each element is then within ``scale[n] / 2`` of the
original. One scale per row rather than one per matrix: a row is one gate unit's weights,
and the units' ranges differ, so a shared scale would spend most rows' bits on nothing.
-128 is never used, so the range is symmetric around zero (``-q`` always exists) and a
kernel may accumulate ``q * x`` with no offset term.
"""

from __future__ import annotations

import numpy

#: The schemes ``LanguageModel.quantize`` knows.
SCHEMES = ("int8",)
QMAX = 127


def quantize_rows(weight):
    """``(q, scale)`` of a 2-D float array: int8 ``(N, K)`` and float32 ``(N,)``.

    An all-zero row gets scale 1 (its q is zero whatever the scale). Raises ValueError
    naming ``weight`` for a non-2-D or non-finite array.
    """
    weight = numpy.asarray(weight)
    if weight.ndim != 2 or weight.dtype.kind != "f":
        raise ValueError(f"weight: expected a 2-D float array, got {weight.dtype} of shape "
                         f"{weight.shape}")
    if not numpy.isfinite(weight).all():
        raise ValueError("weight: holds values that are not finite (inf or nan)")
    peak = numpy.abs(weight).max(axis=1) if weight.shape[1] else numpy.zeros(weight.shape[0])
    scale = (peak / QMAX).astype(numpy.float32)
    scale[scale == 0] = 1.0
    # Divided in float64 so that the float32 scale's own rounding is all the error added.
    q = numpy.rint(weight.astype(numpy.float64) / scale.astype(numpy.float64)[:, None])
    return numpy.clip(q, -QMAX, QMAX).astype(numpy.int8), scale


def dequantize_rows(q, scale, dtype=numpy.float32):
    """``scale[:, None] * q`` as a ``dtype`` array: the float weights the 8-bit ones stand for."""
    return (q.astype(dtype) * scale.astype(dtype)[:, None]).astype(dtype, copy=False)
