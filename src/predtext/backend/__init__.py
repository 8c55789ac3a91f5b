"""Array backends behind one interface (:class:`~predtext.backend.ops.Ops`).

Layers never call NumPy, CuPy or the compiled core directly for their heavy work: they hold
an ops object (``module.ops``) and go through it, so a backend slots in without touching a
layer. Backends are registered by name: the built-ins ("cpu": NumPy and the compiled core;
"cupy": CuPy and cuBLAS on a CUDA device; "reference": the slow array-API oracle of
``backend/reference.py``), any registered in-process with :func:`register_backend`, and
those an installed package declares in the ``predtext.backends`` entry-point group::

    [project.entry-points."predtext.backends"]
    mybackend = "mypackage.ops:MyOps"      # a class (or factory) taking no arguments

Importing this package imports no GPU library: a backend's module is imported the first
time it is asked for.
"""

from __future__ import annotations

import logging
import threading

from predtext.backend.numpy_ops import NumpyOps
from predtext.backend.ops import BackendUnavailable, Ops, device_of

__all__ = ["BackendUnavailable", "NumpyOps", "Ops", "available_backends", "device_of",
           "get_ops", "ops_for_device", "ops_of", "register_backend"]

log = logging.getLogger("predtext.backend")

ENTRY_POINT_GROUP = "predtext.backends"

#: Devices a module can be moved to (``Module.to``), and the backend that serves each.
DEVICES = {"cpu": "cpu", "cuda": "cupy", "gpu": "cupy"}


def _make_cupy():
    from predtext.backend.cupy_ops import CupyOps

    return CupyOps()


def _make_reference():
    from predtext.backend.reference import ReferenceOps

    return ReferenceOps()


# name -> factory (called once, on first use).
_factories = {"cpu": NumpyOps, "cupy": _make_cupy, "reference": _make_reference}
_instances = {}
_lock = threading.RLock()
_entry_points_loaded = False


def register_backend(name, factory):
    """Make ``get_ops(name)`` return ``factory()`` (made once, then shared)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable for backend {name!r}, "
                        f"got {type(factory).__name__}")
    with _lock:
        _factories[name] = factory
        _instances.pop(name, None)


def _load_entry_points():
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        from importlib.metadata import entry_points
        try:
            found = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # noqa: BLE001 (a broken installed distribution must not stop us)
            log.warning("could not list %s entry points: %s", ENTRY_POINT_GROUP, exc)
            return
        for entry in found:
            if entry.name not in _factories:
                # Loaded on first use: listing backends must not import their libraries.
                _factories[entry.name] = _entry_point_factory(entry)


def _entry_point_factory(entry):
    def make():
        try:
            return entry.load()()
        except ImportError as exc:
            raise BackendUnavailable(f"backend {entry.name!r} ({entry.value}) cannot be "
                                     f"imported: {exc}") from None
    return make


def available_backends():
    """Names of every registered backend (built-in, in-process, entry points), whether or
    not it can run on this machine (``get_ops`` says why one cannot)."""
    _load_entry_points()
    with _lock:
        return sorted(_factories)


def get_ops(name="cpu"):
    """The shared ops object of the backend called ``name``.

    ValueError for a name no backend has; :class:`BackendUnavailable` (a ValueError) naming
    what is missing (a library, a driver, a device) for one that cannot run here.
    """
    if not isinstance(name, str):
        # A ValueError like any other name no backend has (torch's device errors are too).
        raise ValueError(  # noqa: TRY004
            f"backend: expected a backend name (one of {available_backends()}), got {name!r}")
    with _lock:
        ops = _instances.get(name)
        if ops is not None:
            return ops
        if name not in _factories:
            _load_entry_points()
        factory = _factories.get(name)
        if factory is None:
            raise ValueError(f"backend: expected one of {available_backends()}, got {name!r}")
        ops = factory()
        if not isinstance(ops, Ops):
            raise TypeError(f"backend {name!r}: its factory returned a "
                            f"{type(ops).__name__}, not a predtext.backend.Ops")
        _instances[name] = ops
        return ops


def ops_for_device(device):
    """The ops of a device ("cpu", "cuda"), a backend name, or an ``Ops`` itself."""
    if isinstance(device, Ops):
        return device
    if isinstance(device, str):
        name = DEVICES.get(device.split(":")[0].lower(), device)
        if name not in available_backends():
            raise ValueError(f"device: expected 'cpu', 'cuda' or a backend name (one of "
                             f"{available_backends()}), got {device!r}")
        return get_ops(name)
    raise ValueError(f"device: expected 'cpu', 'cuda', a backend name or an Ops, got {device!r}")


def ops_of(array):
    """The ops of the backend whose arrays ``array`` is one of: the CPU's for a NumPy array
    (or anything that is not on a device), a created backend's when it owns the array."""
    if type(array).__module__ == "numpy" or not (
            hasattr(array, "__cuda_array_interface__") or hasattr(array, "__dlpack__")):
        return get_ops("cpu")
    with _lock:
        for ops in _instances.values():
            if ops.owns(array):
                return ops
    return get_ops("cpu")

