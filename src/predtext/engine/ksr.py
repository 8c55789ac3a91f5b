"""Keystroke-savings simulator: types a text as a user with a suggestion bar would.

Protocol. Before each character of a word, ask ``suggest(text_so_far, k)`` (every keystroke,
as an editor does). When the user looks at the suggestions and one of them completes the word
(applying it -- deleting ``replace`` characters and inserting ``text`` -- gives the text
through the end of the word; case-insensitive by default), it is selected at the cost of one
keystroke, and one space following the word comes free. A phrase ("as soon as") is selected
the same way when it gives the text through the end of a later word. Otherwise the character
is typed. Every character outside words is typed. Each finished line is handed to ``learn``
(as an interactive session does on Enter).

Two users: the ``reader`` looks at every list; the ``glancer`` looks only before a word's
first letter and then after every third letter of it (3, 6, ...), as a person typing ahead
of the screen does -- the engine is still asked at every keystroke.

The mistyping typist (``typos`` > 0): a seeded share of the words is mistyped once (a
neighbouring key, two letters swapped, a letter dropped or doubled, at a random place). The
typist types the slip as if it were right; when a suggestion at some keystroke, or one looked
at once the whole word is typed, writes the intended word, it is taken (one keystroke);
otherwise the typo is fixed with backspaces back to the slip (each a keystroke) and the rest
retyped, with suggestions as before.

KSR = 1 - (typed characters + backspaces + selections) / characters of the intended text.

Any ``suggest(text, k)`` callable that returns objects with ``.text`` and ``.replace`` can be
measured, so other engines can be wrapped and compared under the same protocol.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from predtext.engine.context import iter_words
from predtext.engine.keyboard import NEIGHBOURS


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
    typos: int = 0                # words the typist mistyped
    corrections_taken: int = 0    # ... whose correction was taken once the typo was typed out
    backspaces: int = 0           # keys pressed to rub out typos
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def keystrokes(self) -> int:
        return self.typed + self.backspaces + self.selections

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


USERS = ("reader", "glancer")
GLANCE_EVERY = 3          # the glancer looks after every third letter of a word
_SLIPS = ("neighbour", "swap", "drop", "double")


def looks(user: str, letters: int) -> bool:
    """Whether ``user`` looks at the suggestions with ``letters`` of the word typed."""
    return user == "reader" or letters % GLANCE_EVERY == 0


def mistype(word: str, rng: random.Random) -> str:
    """``word`` with one slip a typist makes (see the module doc); ``word`` when none fits."""
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    if not letters:
        return word
    kinds = [kind for kind in _SLIPS if kind in ("neighbour", "double") or len(word) > 1]
    for _ in range(8):
        kind = rng.choice(kinds)
        i = rng.choice(letters)
        if kind == "neighbour":
            near = sorted(NEIGHBOURS.get(word[i].lower(), ()))
            if not near:
                continue
            slip = rng.choice(near)
            slipped = word[:i] + (slip.upper() if word[i].isupper() else slip) + word[i + 1:]
        elif kind == "swap":
            if i + 1 >= len(word) or word[i].lower() == word[i + 1].lower():
                continue
            slipped = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "drop":
            slipped = word[:i] + word[i + 1:]
        else:
            slipped = word[:i + 1] + word[i] + word[i + 1:]
        if slipped and slipped != word:
            return slipped
    return word


def simulate(text: str, suggest: Callable[[str, int], Sequence], k: int = 6,
             learn: Callable[[str], None] | None = None,
             case_sensitive: bool = False, user: str = "reader",
             typos: float = 0.0, seed: int = 0) -> KsrReport:
    """Type ``text`` with ``suggest`` offering ``k`` suggestions; see the module doc for the rules.

    ``user``: ``"reader"`` or ``"glancer"``; ``typos``: the share of words mistyped (0 to 1),
    chosen by a random generator seeded with ``seed`` and the word's place in the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive int, got k={k!r}")
    if user not in USERS:
        raise ValueError(f"user must be one of {USERS}, got {user!r}")
    if isinstance(typos, bool) or not isinstance(typos, (int, float)) or not 0 <= typos <= 1:
        raise ValueError(f"typos must be a share of words from 0 to 1, got {typos!r}")
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

    def offered_reach(start: int, typed: str, end: int, look: bool) -> int:
        """Ask for suggestions with ``typed`` of the word at ``start`` typed; where taking one
        leaves the text when the user looks and one writes the intended words, else 0."""
        began = time.perf_counter()
        offered = suggest(text[:start] + typed, k)
        report.latencies_ms.append((time.perf_counter() - began) * 1000.0)
        if not look:
            return 0
        right = _common_prefix(typed, text[start:end])
        return max((_reach(s, start, typed, right, text, end, ends, fold)
                    for s in list(offered)[:k]), default=0)

    def type_word(start: int, end: int) -> int:
        """Type the word text[start:end]; where the text stands after it (0: at its end)."""
        intended = text[start:end]
        keys = intended
        # Each word's slip is drawn from its own place in the text, so every user (and
        # engine) gets the same slips whatever it took on the way.
        rng = random.Random(seed * 1_000_003 + start)
        if typos and rng.random() < typos:
            keys = mistype(intended, rng)
            report.typos += keys != intended
        for j in range(len(keys)):
            reach = offered_reach(start, keys[:j], end, looks(user, j))
            if reach:
                return reach
            report.typed += 1
        if keys == intended:
            return 0
        # The typo is all typed: a last look, then back to the slip and on from there.
        reach = offered_reach(start, keys, end, True)
        if reach:
            report.corrections_taken += 1
            return reach
        right = _common_prefix(keys, intended)
        report.backspaces += len(keys) - right
        for j in range(right, len(intended)):
            reach = offered_reach(start, intended[:j], end, looks(user, j))
            if reach:
                return reach
            report.typed += 1
        return 0

    while position < len(text):
        if word_index == len(words) or position < words[word_index][0]:
            type_character(position)
            position += 1
            continue
        start, end = words[word_index]
        word_index += 1
        report.words += 1
        reach = type_word(start, end)
        if not reach:
            position = end
            continue
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
    if learn is not None and line_start < len(text):
        learn(text[line_start:])
    return report


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _reach(suggestion, start: int, typed: str, right: int, text: str, end: int, ends,
           fold) -> int:
    """Where accepting ``suggestion`` leaves the text, with ``typed`` (of which the first
    ``right`` characters are the text's) typed of the word at ``start``, when it writes exactly
    the text up to the end of that word (``end``) or of a later word; else 0."""
    replace = getattr(suggestion, "replace", 0)
    offered = getattr(suggestion, "text", None)
    if not isinstance(offered, str) or not isinstance(replace, int) or not replace >= 0:
        return 0
    keep = start + len(typed) - replace       # what stays of the text before the cursor
    if keep < 0 or keep > start + right:
        return 0                              # it would leave a typo or eat a correct part
    stop = keep + len(offered)
    if stop < end or stop not in ends or fold(offered) != fold(text[keep:stop]):
        return 0
    return stop
