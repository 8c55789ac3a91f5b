"""The engine behind the terminal: loaded in the background, replaceable, predictors switchable.

Loading a model takes longer than drawing a prompt, so the terminal starts with an
:class:`EngineHandle` whose engine is still loading; ``suggest`` answers nothing until it is
ready, and ``on_change`` tells the terminal to refresh when it is.

Switching predictors off is done here, not in the Engine (which has no such switch): the handle
keeps the fully loaded engine and, when some predictors are off, a second Engine over the same
predictor objects minus those, with their weights unchanged. Nothing is reloaded either way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("predtext.repl")

Loader = Callable[[], object]     # returns an Engine


def engine_loader(model, config=None):
    """A function that builds the engine: imported and run only when called (off the UI thread).

    ``config`` None reads the user's config file (or the defaults) at that time.
    """
    def load():
        from predtext.engine import Engine, parse_context
        from predtext.engine.config import load_config

        engine = Engine.load(model=model, config=config if config is not None else load_config())
        # The first reading of a context builds the word patterns (tens of ms): do it here,
        # off the UI thread, rather than on the user's first keystroke.
        parse_context("warm up")
        return engine
    return load


class EngineHandle:
    """Holds the terminal's engine. ``start(loader, name)`` loads one in a background thread.

    ``status`` is ``"loading"``, ``"ready"`` or ``"failed"``; ``error`` says why the last load
    failed (a failed replacement leaves the previous engine working, and ``status`` ready).
    ``name`` is the model in use, ``loading_name`` the one being loaded.
    ``on_change()`` is called from the loading thread when an engine becomes ready or fails.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None):
        self.on_change = on_change
        self.name = "no model"
        self.loading_name: str | None = None
        self.status = "loading"
        self.error: str | None = None
        self.learning: bool | None = None     # None: as the loaded engine's config says
        self._full = None          # the engine as loaded, all predictors
        self._active = None        # what suggestions come from (the full one, or a subset view)
        self._disabled: set = set()
        self._lock = threading.RLock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ loading

    def start(self, loader: Loader, name: str) -> None:
        """Load an engine with ``loader()`` in the background; it replaces the current one when
        ready."""
        with self._lock:
            self.loading_name = name
            self.status, self.error = "loading", None
            self._ready.clear()
        self._thread = threading.Thread(target=self._load, args=(loader, name),
                                        name="predtext-engine-load", daemon=True)
        self._thread.start()

    def _load(self, loader: Loader, name: str) -> None:
        try:
            engine = loader()
        except Exception as exc:         # shown to the user; the previous engine keeps working
            with self._lock:
                self.status = "failed" if self._full is None else "ready"
                self.error = str(exc) or type(exc).__name__
                self.loading_name = None
            log.debug("engine load failed", exc_info=True)
        else:
            with self._lock:
                old = (self._full, self._active)
                self.name, self.loading_name = name, None
                self._full = engine
                if self.learning is None:
                    self.learning = bool(getattr(getattr(engine, "config", None), "learn", True))
                self._apply_learning(engine)
                self._active = self._view(engine)
                self.status, self.error = "ready", None
            for previous in {id(e): e for e in old if e is not None}.values():
                _close(previous)
        finally:
            with self._lock:
                self._ready.set()
                listener = self.on_change
        listener()

    def listen(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` whenever a load ends; at once if one already has."""
        with self._lock:
            self.on_change = on_change
            finished = self._ready.is_set() and self._thread is not None
        if finished:
            on_change()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine being loaded is ready or failed; False on timeout."""
        return self._ready.wait(timeout)

    @property
    def engine(self):
        """The engine suggestions come from (None while the first one loads)."""
        return self._active

    @property
    def full_engine(self):
        """The engine as loaded, every predictor on (None while the first one loads)."""
        return self._full

    # ------------------------------------------------------------------ the Engine surface

    def suggest(self, text_before_cursor: str, k: int = 6) -> list:
        engine = self._active
        return [] if engine is None else engine.suggest(text_before_cursor, k)

    def learn(self, text: str) -> bool:
        """Hand a committed line to the engine; False when learning is off or no engine is ready."""
        engine = self._active
        if engine is None or not self.learning:
            return False
        engine.learn(text)
        return True

    def accept(self, suggestion, text_before_cursor: str = "") -> None:
        engine = self._active
        if engine is not None:
            engine.accept(suggestion, text_before_cursor)

    def set_learning(self, on: bool) -> None:
        with self._lock:
            self.learning = bool(on)
            for engine in {id(e): e for e in (self._full, self._active) if e is not None}.values():
                self._apply_learning(engine)

    def _apply_learning(self, engine) -> None:
        # Engine.learn also checks its config's switch: keep the two in step.
        config = getattr(engine, "config", None)
        if self.learning is not None and config is not None and hasattr(config, "learn"):
            config.learn = self.learning

    @property
    def language_model(self):
        """The loaded engine's language model, if it exposes one (for ``:generate``)."""
        return getattr(self._full, "language_model", None)

    # ------------------------------------------------------------------ predictors on and off

    def predictor_table(self) -> list[tuple[str, float, bool]]:
        """``(name, weight, enabled)`` for each predictor of the loaded engine, in order."""
        engine = self._full
        if engine is None:
            return []
        rows = []
        for predictor in engine.predictors:
            try:
                weight = engine.weight(predictor)
            except (AttributeError, KeyError):
                weight = float("nan")
            rows.append((predictor.name, weight, predictor.name not in self._disabled))
        return rows

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Switch predictor ``name`` on or off. Raises ``LookupError`` for an unknown name."""
        with self._lock:
            names = [row[0] for row in self.predictor_table()]
            if name not in names:
                raise LookupError(f"no predictor {name!r} (loaded: {', '.join(names) or 'none'})")
            changed = set(self._disabled)
            (changed.discard if enabled else changed.add)(name)
            if changed == self._disabled:
                return
            self._disabled = changed
            old = self._active
            self._active = self._view(self._full)
            if old is not self._full and old is not self._active:
                _close(old)

    def _view(self, engine):
        """``engine`` itself, or an Engine over its predictors that are still on."""
        if not self._disabled:
            return engine
        from predtext.engine.engine import Engine

        kept = [(p, engine.weight(p)) for p in engine.predictors if p.name not in self._disabled]
        return Engine(kept, engine.config)

    def close(self) -> None:
        with self._lock:
            engines = {id(e): e for e in (self._full, self._active) if e is not None}
            self._full = self._active = None
        for engine in engines.values():
            _close(engine)


def _close(engine) -> None:
    close = getattr(engine, "close", None)
    if callable(close):
        try:
            close()
        except Exception:            # closing is best effort; never take the terminal down
            log.debug("closing an engine failed", exc_info=True)
