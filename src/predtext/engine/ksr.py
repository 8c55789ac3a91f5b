"""Keystroke-savings simulator: types a text as a user with a suggestion bar would.

Protocol. Before each character of a word, ask ``suggest(text_so_far, k)``. When one of the
suggestions completes the word (applying it -- deleting ``replace`` characters and inserting
``text`` -- gives the text through the end of the word; case-insensitive by default), it is
selected at the cost of one keystroke, and one space following the word comes free. A phrase
("as soon as") is selected the same way when it gives the text through the end of a later word.
Otherwise the character is typed. Every character outside words is typed. Each finished line
is handed to ``learn`` (as an interactive session does on Enter).

KSR = 1 - (typed characters + selections) / characters of the text.

Any ``suggest(text, k)`` callable that returns objects with ``.text`` and ``.replace`` can be
measured, so other engines can be wrapped and compared under the same protocol.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

from predtext.engine.context import iter_words


@dataclass
class KsrReport:
    """Counts and timings of one simulated typing run."""

    characters: int = 0
    typed: int = 0
    selections: int = 0
    free_spaces: int = 0
    words: int = 0
    words_selected: int = 0
    phrases_selected: int = 0
    latencies_ms: List[float] = field(default_factory=list, repr=False)

    @property
    def keystrokes(self) -> int:
        return self.typed + self.selections

    @property
    def ksr(self) -> float:
        return 1.0 - self.keystrokes / self.characters if self.characters else 0.0

    def latency_percentile(self, q: float) -> float:
        """The q-th percentile (0-100) of suggest() latency in milliseconds (nearest rank)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
        return ordered[rank]

    def summary(self) -> dict:
        """Everything as plain values (for JSON output)."""
        data = asdict(self)
        del data["latencies_ms"]
        data.update(keystrokes=self.keystrokes, ksr=self.ksr, suggest_calls=len(self.latencies_ms),
                    latency_p50_ms=self.latency_percentile(50),
                    latency_p90_ms=self.latency_percentile(90),
                    latency_p99_ms=self.latency_percentile(99))
        return data


def simulate(text: str, suggest: Callable[[str, int], Sequence], k: int = 6,
             learn: Optional[Callable[[str], None]] = None,
             case_sensitive: bool = False) -> KsrReport:
    """Type ``text`` with ``suggest`` offering ``k`` suggestions; see the module doc for the rules."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive int, got k={k!r}")
    fold = (lambda s: s) if case_sensitive else str.casefold
    report = KsrReport(characters=len(text))
    words = list(iter_words(text))
    ends = {end: i for i, (_, end) in enumerate(words)}
    word_index = position = line_start = 0

    def type_character(index: int) -> None:
        nonlocal line_start
        report.typed += 1
        if text[index] == "\n":
            if learn is not None:
                learn(text[line_start:index])
            line_start = index + 1

    while position < len(text):
        if word_index == len(words) or position < words[word_index][0]:
            type_character(position)
            position += 1
            continue
        start, end = words[word_index]
        word_index += 1
        report.words += 1
        for cursor in range(start, end):
            before = text[:cursor]
            began = time.perf_counter()
            offered = suggest(before, k)
            report.latencies_ms.append((time.perf_counter() - began) * 1000.0)
            reach = max((_reach(s, text, cursor, end, ends, fold) for s in list(offered)[:k]),
                        default=0)
            if reach:
                report.selections += 1
                report.words_selected += 1
                # A phrase takes the words after this one with it (its spaces included).
                taken = ends[reach] + 1 - word_index
                report.phrases_selected += taken > 0
                report.words += taken
                report.words_selected += taken
                word_index += taken
                position = reach
                if position < len(text) and text[position] == " ":
                    report.free_spaces += 1
                    position += 1
                break
            type_character(cursor)
        else:
            position = end
    if learn is not None and line_start < len(text):
        learn(text[line_start:])
    return report


def _reach(suggestion, text: str, cursor: int, end: int, ends, fold) -> int:
    """Where accepting ``suggestion`` at ``cursor`` leaves the text, when it writes exactly the
    text up to the end of the word being typed (``end``) or of a later word; else 0."""
    replace = getattr(suggestion, "replace", 0)
    offered = getattr(suggestion, "text", None)
    if not isinstance(offered, str) or not isinstance(replace, int) or not 0 <= replace <= cursor:
        return 0
    start = cursor - replace
    stop = start + len(offered)
    if stop < end or stop not in ends or fold(offered) != fold(text[start:stop]):
        return 0
    return stop
