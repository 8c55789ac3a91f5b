"""How much a predictor counts, learned from the user's own text: an online mixture weight.

A predictor whose words suit one kind of text and not another (the modern word pairs know
"thank you very much" but not Shakespeare's next word) is weighed by how well it has foreseen
the words the user went on to write. The engine's proposals at each keystroke of a word (from
the boundary before it on) are kept; once the word is written, at each of those keystrokes
the predictor's probability for it (p) is set against the other predictors' mixture by their
weights (q), and the predictor's share s of that two-part mixture moves toward the word's
mean posterior share (the EM responsibility) over the keystrokes,

    r = s p / (s p + (1 - s) q),     s <- s + rate (mean r - s),

an exponential window of about 1/rate words. Its weight is the configured one times a factor
that starts at 1 and follows the odds s / (1 - s), kept within [low, high]. A word that
neither side's list held (each gets the same floor) leaves s as it was, and a keystroke where
the predictor said nothing (after a sentence end, for the word pairs) says nothing about it.

Measured (README, keystroke savings): each keystroke's evidence rather than the boundary's
alone, and a window of about 20 words rather than 5 or 10, on the tuning texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from predtext.engine.context import Context, iter_words, normalize_word
from predtext.engine.protocol import Candidate

#: The step toward each written word's responsibility (a window of about 1/RATE words).
RATE = 0.05
#: The probability a list gives a word it does not hold.
FLOOR = 1e-3
#: The factor on the configured weight stays within these.
LOW, HIGH = 0.1, 3.0

Proposal = tuple[str, float, Sequence[Candidate]]   # (predictor name, weight, candidates)

# What text before the boundary is kept to tell that the text went on from it.
_TAIL_CHARS = 32
# The keystrokes of one word that are kept (a long word's first ones tell enough).
_MAX_KEYS = 16


class AdaptiveWeights:
    """The weight factors of the predictors named ``adaptive`` (see the module doc).

    ``settle(context)`` before a keystroke's weights are read: learns from the word written
    since the last boundary; ``remember(context, proposals)`` after: keeps the keystroke's
    proposals (with the weights they were combined by) until the word is written.
    """

    def __init__(self, adaptive: Iterable[str], rate: float | None = None,
                 floor: float | None = None, low: float | None = None,
                 high: float | None = None):
        self.rate = RATE if rate is None else rate
        self.floor = FLOOR if floor is None else floor
        self.low = LOW if low is None else low
        self.high = HIGH if high is None else high
        self._factors = {name: 1.0 for name in adaptive}
        # (where the word starts, the text just before it, each keystroke's proposals)
        self._pending: tuple[int, str, list[Sequence[Proposal]]] | None = None

    def factor(self, name: str) -> float:
        """What the configured weight of predictor ``name`` is multiplied by now."""
        return self._factors.get(name, 1.0)

    def reset(self) -> None:
        """Back to the configured weights (the user's text is forgotten)."""
        self._factors = dict.fromkeys(self._factors, 1.0)
        self._pending = None

    def remember(self, context: Context, proposals: Sequence[Proposal]) -> None:
        if not self._factors:
            return
        start = context.offset + len(context.text) - len(context.prefix)
        if not context.prefix:
            self._pending = (start, context.text[-_TAIL_CHARS:], [proposals])
        elif (self._pending is not None and self._pending[0] == start
              and len(self._pending[2]) < _MAX_KEYS):
            self._pending[2].append(proposals)

    def settle(self, context: Context) -> None:
        if self._pending is None:
            return
        where, tail, keystrokes = self._pending
        start = where - context.offset
        if not 0 <= start <= len(context.text) or not context.text[:start].endswith(tail):
            self._pending = None         # the text was changed before the boundary: no word
            return
        before = context.text_before_word
        for first, end in iter_words(before[start:]):
            self._pending = None
            self._learn(normalize_word(before[start + first:start + end]), keystrokes)
            return
        # No word written yet: the boundary waits for it.

    def _learn(self, word: str, keystrokes: Sequence[Sequence[Proposal]]) -> None:
        moves: dict[str, list[tuple[float, float]]] = {}    # name -> (share, responsibility)
        for proposals in keystrokes:
            given = [(name, weight, _probability(word, candidates))
                     for name, weight, candidates in proposals if candidates]
            total = sum(weight for _, weight, _ in given)
            for name, weight, p in given:
                others = total - weight
                if name not in self._factors or weight <= 0 or others <= 0:
                    continue
                q = sum(w * pj for n, w, pj in given if n != name) / others
                share = weight / total
                p, q = max(p, self.floor), max(q, self.floor)
                moves.setdefault(name, []).append(
                    (share, share * p / (share * p + (1.0 - share) * q)))
        for name, pairs in moves.items():
            # (The share differs between keystrokes as other predictors fall silent: each
            # keystroke's pull is measured from its own share, from the first one's.)
            share = pairs[0][0]
            pull = sum(r - s for s, r in pairs) / len(pairs)
            moved = min(0.999, max(0.001, share + self.rate * pull))
            odds = moved / (1.0 - moved) / (share / (1.0 - share))
            self._factors[name] = min(self.high, max(self.low, self._factors[name] * odds))


def _probability(word: str, candidates: Sequence[Candidate]) -> float:
    """What ``candidates`` gave ``word`` (0 when they do not hold it)."""
    # (An ASCII text's key is its lower case: the full normalisation only for the others.)
    return max((c.probability for c in candidates
                if c.text.lower() == word or (not c.text.isascii()
                                              and normalize_word(c.text) == word)),
               default=0.0)
