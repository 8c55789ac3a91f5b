"""The one thing the engine hands back: a suggestion for the text before the cursor, and how
many it offers at once.

Light (no NumPy), so that the terminal checks ``k`` before the engine is loaded.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

#: The most suggestions the engine offers at once.
MAX_K = 50


def checked_k(k, cap: bool = False) -> int:
    """``k``, a number of suggestions, as an int from 1 to :data:`MAX_K`.

    TypeError when ``k`` is not an int, ValueError when it is below 1. Above :data:`MAX_K` it is
    capped when ``cap`` is set (asking the engine for more than it offers is no error), and a
    ValueError otherwise (a setting that cannot hold, such as the terminal's ``-k``).
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    k = int(k)
    if cap:
        if k <= 0:
            raise ValueError(f"k must be a positive number of suggestions, got k={k}")
        return min(k, MAX_K)
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got k={k}")
    return k


@dataclass(frozen=True)
class Suggestion:
    """A word or phrase offered to the user.

    Accepting it means: delete ``replace`` characters before the cursor (the typed part of the
    current word; 0 at a word boundary) and insert ``text``.

    ``score`` is comparable across predictors and suggestions: a probability in [0, 1].
    ``source`` names the predictor that proposed it, or, when several proposed the same word and
    the combiner merged them, a tuple of their names (strongest contribution first).
    """

    text: str
    replace: int = 0
    score: float = 0.0
    source: str | tuple[str, ...] = ""

    @property
    def sources(self) -> tuple[str, ...]:
        """``source`` as a tuple, whether one predictor or several proposed the suggestion."""
        if isinstance(self.source, str):
            return (self.source,) if self.source else ()
        return tuple(self.source)

    def apply(self, text_before_cursor: str) -> str:
        """The text before the cursor after accepting this suggestion."""
        keep = len(text_before_cursor) - self.replace
        return text_before_cursor[:max(keep, 0)] + self.text
