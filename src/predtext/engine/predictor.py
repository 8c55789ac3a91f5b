"""The predictor registry: the built-in kinds, those registered in-process, and those that
installed packages declare in the ``predtext.predictors`` entry-point group.

How to write a predictor is in :mod:`predtext.engine.protocol`; the protocol's names and the
runner (:mod:`predtext.engine.runner`) are re-exported here, where they used to live, so
``from predtext.engine.predictor import Candidate, PredictorRunner`` keeps working.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from predtext.engine.protocol import Candidate, Factory, Predictor, Resources  # noqa: F401
from predtext.engine.runner import PredictorRunner  # noqa: F401

log = logging.getLogger("predtext.engine")

ENTRY_POINT_GROUP = "predtext.predictors"


_registry: dict[str, Factory] = {}
_registry_lock = threading.Lock()
# Held while the built-ins or the entry points are being registered, so that a second thread
# waits for them instead of finding the registry half filled.
_setup_lock = threading.RLock()
_entry_points_loaded = False


def register_predictor(kind: str, factory: Factory) -> None:
    """Make ``kind`` usable as a predictor ``type`` in the config;
    ``factory(options, resources)``."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if not callable(factory):
        raise TypeError(f"factory for {kind!r} must be callable")
    with _registry_lock:
        _registry[kind] = factory


def _load_entry_points() -> None:
    """Register the factories that installed packages declare (once; broken ones are logged)."""
    global _entry_points_loaded
    with _setup_lock:
        if not _entry_points_loaded:
            _register_entry_points()
            _entry_points_loaded = True


def _register_entry_points() -> None:
    from importlib.metadata import entry_points
    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken installed distribution must not stop the engine
        log.warning("could not list %s entry points: %s", ENTRY_POINT_GROUP, exc)
        return
    for entry in found:
        with _registry_lock:
            if entry.name in _registry:
                continue  # registered in-process (or built in) wins
        try:
            factory = entry.load()
        except Exception as exc:
            log.warning("predictor plugin %r (%s) failed to load: %s", entry.name, entry.value, exc)
            continue
        try:
            register_predictor(entry.name, factory)
        except (TypeError, ValueError) as exc:
            log.warning("predictor plugin %r is not usable: %s", entry.name, exc)


def available_predictors() -> list[str]:
    """Names of every predictor kind: built-in, registered in-process, and from entry points."""
    _register_builtins()
    _load_entry_points()
    with _registry_lock:
        return sorted(_registry)


def create_predictor(kind: str, options: Mapping[str, Any], resources: Resources) -> Predictor:
    """Build a predictor of ``kind``. Raises ``LookupError`` for an unknown kind."""
    _register_builtins()
    with _registry_lock:
        factory = _registry.get(kind)
    if factory is None:
        _load_entry_points()
        with _registry_lock:
            factory = _registry.get(kind)
    if factory is None:
        known = ", ".join(available_predictors())
        raise LookupError(f"no predictor of type {kind!r} (known: {known})")
    predictor = factory(options, resources)
    if not isinstance(predictor, Predictor):
        raise TypeError(f"factory for {kind!r} returned {type(predictor).__name__}, "
                        "which has no name/predict()")
    return predictor


_builtins_registered = False


def _register_builtins() -> None:
    """Register the built-in predictor kinds on first use (keeps ``import predtext`` light)."""
    global _builtins_registered
    with _setup_lock:
        if _builtins_registered:
            return
        from predtext.engine import (
            abbreviations,
            bigrams,
            dictionary,
            history,
            neural,
            ngram,
            typos,
        )
        for kind, factory in (("ngram", ngram.make_predictor),
                              ("bigrams", bigrams.make_predictor),
                              ("typos", typos.make_predictor),
                              ("dictionary", dictionary.make_predictor),
                              ("history", history.make_predictor),
                              ("abbreviations", abbreviations.make_predictor),
                              ("neural", neural.make_predictor)):
            with _registry_lock:
                _registry.setdefault(kind, factory)
        _builtins_registered = True
