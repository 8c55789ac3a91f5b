"""The terminal's line history (↑ and Ctrl-R), kept where only the user can read it."""

from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit.history import FileHistory


def history_path() -> Path:
    """``repl_history`` under the user data directory (``$PREDTEXT_DATA_DIR`` or XDG)."""
    from predtext.engine.config import REPL_HISTORY_FILE, user_data_dir

    return user_data_dir() / REPL_HISTORY_FILE


class PrivateFileHistory(FileHistory):
    """A FileHistory whose file is created with mode 0600 in a 0700 directory.

    What a user types is as private as their typing history, so it gets the same protection;
    a file left readable by others (made by hand, or by an older version) is fixed on write.
    """

    def __init__(self, filename) -> None:
        super().__init__(os.fspath(filename))

    def store_string(self, string: str) -> None:
        path = Path(self.filename)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        super().store_string(string)
