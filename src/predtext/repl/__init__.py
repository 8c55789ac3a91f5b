"""The interactive terminal (``predtext repl``) and the parts of it you can reuse.

``PredtextCompleter`` and ``PredtextAutoSuggest`` put predtext's suggestions into any
prompt_toolkit application (see :mod:`predtext.repl.completer`); ``Repl`` is the whole terminal.
Names are imported lazily, so ``import predtext.repl`` does not load prompt_toolkit.
"""

import importlib

_EXPORTS = {
    "PredtextCompleter": "predtext.repl.completer",
    "PredtextAutoSuggest": "predtext.repl.completer",
    "Suggester": "predtext.repl.completer",
    "SuggestionCompletion": "predtext.repl.completer",
    "Repl": "predtext.repl.app",
    "EngineHandle": "predtext.repl.engine_handle",
    "PrivateFileHistory": "predtext.repl.history",
    "run_line_mode": "predtext.repl.linemode",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'predtext.repl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
