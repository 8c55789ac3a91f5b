"""The one thing the engine hands back: a suggestion for the text before the cursor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union


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
    source: Union[str, Tuple[str, ...]] = ""

    @property
    def sources(self) -> Tuple[str, ...]:
        """``source`` as a tuple, whether one predictor or several proposed the suggestion."""
        if isinstance(self.source, str):
            return (self.source,) if self.source else ()
        return tuple(self.source)

    def apply(self, text_before_cursor: str) -> str:
        """The text before the cursor after accepting this suggestion."""
        keep = len(text_before_cursor) - self.replace
        return text_before_cursor[:max(keep, 0)] + self.text
