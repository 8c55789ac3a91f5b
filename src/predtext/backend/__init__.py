"""Array operations behind one interface.

Layers never call NumPy or the compiled core directly for their heavy work: they ask
``get_ops()`` for an ops object and go through it, so a CuPy backend slots in without
touching a layer. ``ops.xp`` is the array module (numpy or cupy) for light array code.
"""

from predtext.backend.numpy_ops import NumpyOps

_OPS = {}


def get_ops(name="cpu"):
    """Return the shared ops object for a backend: "cpu" (NumPy + compiled core).

    The seam is for a CuPy backend (cuBLAS) with the same interface; this release has none,
    and asking for it says so instead of failing on a missing module.
    """
    if name not in _OPS:
        if name == "cpu":
            _OPS[name] = NumpyOps()
        elif name == "cupy":
            raise ValueError("backend: 'cupy' is not available in this release of predtext; "
                             "use 'cpu'")
        else:
            raise ValueError(f"backend: expected 'cpu', got {name!r}")
    return _OPS[name]
