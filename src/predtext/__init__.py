"""predtext: a recurrent-network library with a compiled core, and a predictive text engine."""

__version__ = "0.1.0"

from predtext.errors import CorpusError, ModelFileError, PredtextError  # noqa: E402,F401

__all__ = ["Engine", "Suggestion", "PredtextError", "ModelFileError", "CorpusError"]


def __getattr__(name):
    # Lazy, so `import predtext` stays cheap for the terminal's start-up.
    if name in ("Engine", "Suggestion"):
        from predtext import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'predtext' has no attribute {name!r}")
