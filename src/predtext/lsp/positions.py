"""LSP positions: lines split as the protocol splits them, columns in the negotiated code units.

The protocol counts lines at ``\\n``, ``\\r\\n`` and ``\\r`` only (not at the other characters
``str.splitlines`` breaks on), and columns in UTF-16 code units unless the client and server
agreed on UTF-8 or UTF-32 (``positionEncoding``). Python strings index code points, which is
UTF-32: an emoji is 1 here, 2 in UTF-16 and 4 in UTF-8.
"""

from __future__ import annotations

import re

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)

_EOL = re.compile(r"(\r\n|\r|\n)")


def split_lines(text: str) -> list[str]:
    """``text`` cut into lines, each with its line end; the last one has none (it may be empty).

    So a text has one more line than it has line ends, as an editor counts them.
    """
    parts = _EOL.split(text)
    lines = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    lines.append(parts[-1])
    return lines


def line_content(line: str) -> str:
    """``line`` without its line end."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def _width(char: str, encoding: str) -> int:
    code = ord(char)
    if encoding == UTF16:
        return 2 if code > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    return 1


def _counts_code_points(line: str, encoding: str) -> bool:
    """Whether a column in ``encoding`` is the code-point index on ``line`` (the fast case)."""
    return encoding == UTF32 or line.isascii() or (encoding == UTF16 and max(line) <= "\uffff")


def to_index(line: str, units: int, encoding: str = UTF16) -> int:
    """The code-point index on ``line`` (without its line end) of column ``units``.

    A column past the end means the end (as the protocol says); one that falls inside a
    character (between the two halves of a surrogate pair) means that character's start.
    """
    if units <= 0 or not line:
        return 0
    if _counts_code_points(line, encoding):
        return min(units, len(line))
    count = 0
    for index, char in enumerate(line):
        count += _width(char, encoding)
        if count > units:
            return index
        if count == units:
            return index + 1
    return len(line)


def to_units(line: str, index: int, encoding: str = UTF16) -> int:
    """Column of code-point ``index`` on ``line``, in ``encoding``'s code units."""
    head = line[:max(index, 0)]
    if _counts_code_points(head, encoding):
        return len(head)
    if encoding == UTF8:
        return len(head.encode("utf-8", "surrogatepass"))
    return len(head.encode("utf-16-le", "surrogatepass")) // 2
