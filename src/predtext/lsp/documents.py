"""The open documents: their text, kept in step with the editor's full or incremental changes.

A document is held as a list of lines, so that an edit costs the lines it touches, not the
whole text (a 5 MB document is edited at the speed of a short one), and the text before the
cursor is read from its last lines only.
"""

from __future__ import annotations

import threading
from bisect import bisect_right

from predtext.lsp.positions import UTF16, line_content, split_lines, to_index, to_units

#: Text before the cursor up to this long is handed to the engine whole, exactly as typed.
FULL_CONTEXT_CHARS = 1 << 18
#: Past that, a tail this long at least: the engine reads only the last few thousand characters.
TAIL_CHARS = 1 << 16


class Document:
    """One open document. Positions are ``(line, code-point index)``; :meth:`index` converts an
    LSP position (in the negotiated encoding) to one.

    Edits come from the message loop and reads from the completion thread: both hold ``lock``.
    """

    def __init__(self, uri: str, text: str, version: int | None = None,
                 language_id: str = "plaintext", encoding: str = UTF16):
        self.uri = uri
        self.language_id = language_id
        self.version = version
        self.encoding = encoding
        self.lock = threading.Lock()
        self._set(text)

    def _set(self, text: str) -> None:
        self.lines: list[str] = split_lines(text)
        self._starts = [0]          # start offsets of lines 0.. (a prefix kept valid lazily)

    # ------------------------------------------------------------------ reading

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def index(self, line: int, character: int) -> tuple[int, int]:
        """``(line, code-point index)`` of an LSP position; a position past the last line is
        the end of the document, a column past the line's end is its end."""
        if line < 0 or character < 0:
            raise ValueError(f"position must not be negative, got line {line}, "
                             f"character {character}")
        if line >= len(self.lines):
            last = len(self.lines) - 1
            return last, len(line_content(self.lines[last]))
        return line, to_index(line_content(self.lines[line]), character, self.encoding)

    def units(self, line: int, index: int) -> int:
        """The LSP column of code-point ``index`` on ``line``."""
        return to_units(line_content(self.lines[line]), index, self.encoding)

    def offset(self, line: int) -> int:
        """Characters of the document before ``line``."""
        starts = self._starts
        while len(starts) <= line:
            starts.append(starts[-1] + len(self.lines[len(starts) - 1]))
        return starts[line]

    def text_before(self, line: int, index: int) -> str:
        """The text before ``(line, index)``: whole when short, else a long enough tail.

        A tail starts at a multiple of :data:`TAIL_CHARS` from the document's start, so the
        engine, which reads a window aligned the same way, sees what it would in the whole.
        """
        end = self.offset(line) + index
        if end <= FULL_CONTEXT_CHARS:
            return "".join(self.lines[:line]) + self.lines[line][:index]
        start = (end - TAIL_CHARS) // TAIL_CHARS * TAIL_CHARS
        first = bisect_right(self._starts, start, 0, line + 1) - 1
        text = "".join(self.lines[first:line]) + self.lines[line][:index]
        return text[start - self._starts[first]:]

    def content(self, line: int) -> str:
        return line_content(self.lines[line])

    # ------------------------------------------------------------------ editing

    def replace_all(self, text: str, version: int | None = None) -> None:
        self._set(text)
        self.version = version

    def edit(self, start: tuple[int, int], end: tuple[int, int], text: str,
             version: int | None = None) -> None:
        """Replace the text from ``start`` to ``end`` (LSP positions) with ``text``."""
        (l1, c1), (l2, c2) = sorted((self.index(*start), self.index(*end)))
        lines = self.lines
        lo, hi = l1, l2 + 1
        new = lines[l1][:c1] + text + lines[l2][c2:]
        # "\r" and "\n" that an edit brings together are one line end, as in the editor.
        if new.startswith("\n") and lo > 0 and lines[lo - 1].endswith("\r") \
                and not lines[lo - 1].endswith("\r\n"):
            lo -= 1
            new = lines[lo] + new
        if new.endswith("\r") and hi < len(lines) and lines[hi].startswith("\n"):
            new += lines[hi]
            hi += 1
        pieces = split_lines(new)
        if hi < len(lines):
            pieces.pop()     # the empty piece after the last line end: the next line follows
        lines[lo:hi] = pieces
        del self._starts[lo + 1:]
        self.version = version
