"""Errors that predtext raises on its own account (argument errors stay ValueError/TypeError)."""


class PredtextError(Exception):
    """Base class of predtext's own errors."""


class ModelFileError(PredtextError):
    """A model, checkpoint or data file is missing, truncated, corrupt or foreign.

    The message always names the file.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CorpusError(PredtextError):
    """A training corpus cannot be read (bad encoding, empty, missing)."""
