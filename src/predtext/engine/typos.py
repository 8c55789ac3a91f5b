"""Typo corrections: when the typed part of a word is unlikely as typed, the words it was
likely meant to begin.

How it decides. The typed part ``p`` (say "recie") is one hypothesis: the user meant a word
that starts with ``p``, as likely as the word list's words that do (their share of all
words), times the chance of typing a word without a slip. Every string ``q`` one slip away
from ``p`` is another: a word that starts with ``q``, times the chance of that slip. Slips,
from the likeliest: a neighbouring key on the keyboard instead of the right one, two letters
swapped, a letter doubled or a neighbour's key hit beside it (an extra letter), a letter
left out, any other key. Two slips are tried (each second slip a neighbouring key, a swap, a
letter left out or doubled) when one explains nothing. Each hypothesis's share of them
all is its probability; the likeliest words of the corrections that reach
``min_probability`` are offered, each replacing the typed part. Nothing is looked for while
``p`` is a common enough beginning (``check_below``), so an ordinary keystroke costs one
lookup; a rare beginning is checked for the commoner slips only, and one that begins no
word at all for every kind, then for two. The text is never changed without the user taking a
suggestion.

With the modern word pairs installed (:mod:`predtext.engine.bigrams`), "as likely as" is read
after the previous word: the share of the words that follow it (mixed with all words) that
begin so, so that after "to" a typed "te" weighs "the" as today's text follows "to" with it,
and the corrections of a hypothesis are its likeliest words there.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from predtext.engine.bigrams import Following, PairPrior, following, shared_prior
from predtext.engine.context import Context, normalize_word, tokenize
from predtext.engine.dictionary import Dictionary, shared_dictionary
from predtext.engine.keyboard import NEIGHBOURS
from predtext.engine.protocol import Candidate, Resources, fraction_options

# The chance that a word is typed with a slip, and each kind of slip's share of them.
SLIP_RATE = 0.05
_NEIGHBOUR, _SWAP, _EXTRA_NEAR, _EXTRA, _DROPPED, _OTHER_KEY = 0.4, 0.2, 0.12, 0.03, 0.1, 0.01
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MIN_TYPED = 2          # one letter is too little to tell a slip from a word
_TWO_SLIPS_FROM = 4     # letters typed before two slips are considered
_MAX_FIRST_SLIPS = 24   # first slips a second one is tried after (a bound on the work)


def _slips(typed: str, level: int = 0, upto: int = -1) -> dict[str, float]:
    """Each string the user may have meant, one slip away from ``typed``, with the slip's
    chance (given a slip). ``level`` 0: every kind; 1: not any other key; 2: only the
    commoner kinds (for a second slip). ``upto``: only slips at or before this position."""
    meant: dict[str, float] = {}

    def add(text: str, chance: float) -> None:
        if text and text != typed and chance > meant.get(text, 0.0):
            meant[text] = chance

    last = len(typed) - 1 if upto < 0 else min(upto, len(typed) - 1)
    for i in range(last + 1):
        char = typed[i]
        near = NEIGHBOURS.get(char, ())
        for other in near:                          # a neighbour's key instead
            add(typed[:i] + other + typed[i + 1:], _NEIGHBOUR / max(len(near), 1))
        if i + 1 < len(typed) and typed[i + 1] != char:     # two letters swapped
            add(typed[:i] + typed[i + 1] + typed[i] + typed[i + 2:], _SWAP)
        before = typed[i - 1] if i else ""
        after = typed[i + 1] if i + 1 < len(typed) else ""
        # An extra letter: a doubled one or a neighbour's key hit beside the right one.
        extra = (char == before or char in NEIGHBOURS.get(before, ())
                 or char in NEIGHBOURS.get(after, ()))
        if level < 2 or extra:
            add(typed[:i] + typed[i + 1:], _EXTRA_NEAR if extra else _EXTRA)
        if level == 0:
            for other in _LETTERS:                  # any other key
                if other != char and other not in near:
                    add(typed[:i] + other + typed[i + 1:], _OTHER_KEY / 20)
        # A letter left out before this one (one left out at the end is not typed yet); a
        # doubled letter typed once is the commonest.
        if before:
            add(typed[:i] + before + typed[i:], _DROPPED / 3)
        if level < 2:
            for other in _LETTERS:
                add(typed[:i] + other + typed[i:], _DROPPED / 26)
    return meant


def _valid_length(share, typed: str) -> int:
    """How many first letters of ``typed`` begin some word (a slip must be among them)."""
    lo, hi = 0, len(typed)          # typed[:lo] begins a word; typed[:hi + 1] ... search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if share(typed[:mid]) > 0:
            lo = mid
        else:
            hi = mid - 1
    return lo


class TypoCorrector:
    """Offers the likely corrections of an unlikely typed part (see the module doc).

    ``dictionary``: the words and how common they are; ``check_below``: the share of words
    a typed beginning must fall under before corrections are looked for; ``min_probability``:
    the least probability of a correction offered; ``prior``: the word pairs, to weigh
    beginnings after the previous word (None: in all text). Words the user writes
    (:meth:`learn`) are never taken for typos.
    """

    inline = True     # bounded work: run in the caller's thread (see PredictorRunner)

    def __init__(self, dictionary: Dictionary, name: str = "typos", check_below: float = 1e-4,
                 min_probability: float = 0.1, prior: PairPrior | None = None):
        self.name = name
        self.dictionary = dictionary
        self.prior = prior
        self.check_below = float(check_below)
        self.min_probability = float(min_probability)
        self._own: set = set()
        self._hopeless: set = set()     # beginnings no slip explained
        self._lock = threading.Lock()
        self._last: tuple[tuple, list[Candidate]] = ((), [])

    def learn(self, text: str) -> None:
        with self._lock:
            self._own.update(normalize_word(w) for w in tokenize(text))
            self._hopeless = set()
            self._last = ((), [])

    def forget(self) -> None:
        with self._lock:
            self._own = set()
            self._hopeless = set()
            self._last = ((), [])

    def predict(self, context: Context, k: int) -> list[Candidate]:
        typed = normalize_word(context.prefix)
        if len(typed) < _MIN_TYPED or not typed.isalpha() or not typed.isascii():
            return []
        after = following(self.prior, context)
        question = (typed, k, context.words[-1:] if after is not None else ())
        with self._lock:
            if self._last[0] == question:
                return list(self._last[1])
            own = any(word.startswith(typed) for word in self._own)
        found = [] if own else self.corrections(typed, k, after)
        with self._lock:
            self._last = (question, found)
        return list(found)

    def corrections(self, typed: str, k: int, after: Following | None = None) -> list[Candidate]:
        """Up to ``k`` corrections of ``typed`` (lower-case letters), likeliest first; with
        ``after`` (the words that follow the previous one), weighed by how likely each
        beginning is there rather than in all text."""
        share = self.dictionary.prefix_share if after is None else after.share
        complete = self.dictionary.complete if after is None else after.complete
        as_typed = share(typed)
        if as_typed >= self.check_below:
            return []
        # A rare beginning is checked for the commoner slips only; one that begins no word at
        # all for every kind (the leftmost slip is where the letters stop beginning words),
        # then for two, from a bounded number of first slips.
        strange = as_typed == 0
        upto = _valid_length(self.dictionary.prefix_share, typed) if strange else -1
        if strange and any(typed.startswith(h) for h in self._hopeless):
            return []      # a longer beginning of what nothing explained: nothing will
        hypotheses = {}
        for q, chance in _slips(typed, 0 if strange else 1, upto).items():
            s = SLIP_RATE * chance * share(q)
            if s > 0:
                hypotheses[q] = s
        weight_typed = (1.0 - SLIP_RATE) * as_typed
        if strange and len(typed) >= _TWO_SLIPS_FROM and not hypotheses:
            firsts = sorted(_slips(typed, 2, upto).items(), key=lambda item: -item[1])
            for q1, chance1 in firsts[:_MAX_FIRST_SLIPS]:
                for q, chance2 in _slips(q1, 2).items():
                    if q != typed and q not in hypotheses:
                        s = SLIP_RATE * SLIP_RATE * chance1 * chance2 * share(q)
                        if s > 0:
                            hypotheses[q] = s
            if not hypotheses:
                with self._lock:
                    self._hopeless.add(typed)
        total = weight_typed + sum(hypotheses.values())
        if not total:
            return []
        candidates: dict[str, float] = {}
        for q, s in sorted(hypotheses.items(), key=lambda item: -item[1])[:k]:
            probability = s / total
            if probability < self.min_probability:
                break
            for word, within in complete(q, 3):
                if normalize_word(word).startswith(typed):
                    continue       # a completion: the other predictors offer those
                p = probability * within
                if p >= self.min_probability / 2 and p > candidates.get(word, 0.0):
                    candidates[word] = p
        ranked = sorted(candidates.items(), key=lambda item: -item[1])[:k]
        written = self.dictionary.form if after is not None else str
        return [Candidate(written(word), min(p, 1.0)) for word, p in ranked]


def make_predictor(options: Mapping[str, Any], resources: Resources) -> TypoCorrector:
    """Factory for ``type = "typos"``: corrections from the engine's word list and the loaded
    vocabulary (``check_below``, ``min_probability``: see :class:`TypoCorrector`)."""
    dictionary = shared_dictionary(resources)
    if dictionary is None:
        raise ValueError("the typo corrector has no words: no word list and no model vocabulary")
    settings = fraction_options(options, ("check_below", "min_probability"))
    prior = shared_prior(resources) if options.get("context", True) else None
    return TypoCorrector(dictionary, name=str(options.get("name", "typos")), prior=prior,
                         **settings)
