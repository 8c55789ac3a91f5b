"""predtext: a recurrent-network library with a compiled core, and a predictive text engine."""

__version__ = "0.1.0"

from predtext.errors import PredtextError, ModelFileError, CorpusError  # noqa: E402,F401
