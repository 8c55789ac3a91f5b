"""Array operations behind one interface.

Layers never call NumPy or the compiled core directly for their heavy work: they ask
``get_ops()`` for an ops object and go through it, so a CuPy backend slots in without
touching a layer. ``ops.xp`` is the array module (numpy or cupy) for light array code.
"""

from predtext.backend.numpy_ops import NumpyOps

_OPS = {}


def get_ops(name="cpu"):
    """Return the shared ops object for a backend: "cpu" (NumPy + compiled core) or "cupy"."""
    if name not in _OPS:
        if name == "cpu":
            _OPS[name] = NumpyOps()
        elif name == "cupy":
            from predtext.backend.cupy_ops import CupyOps

            _OPS[name] = CupyOps()
        else:
            raise ValueError(f"backend: expected 'cpu' or 'cupy', got {name!r}")
    return _OPS[name]
