"""The modern next-word prior: which word follows the last one in today's English, from a
packaged list of word pairs (:func:`~predtext.engine.wordlist.english_bigrams`), for phrases
the model's old books never hold ("thank you very much", "the email").

P(word | previous word, typed prefix) interpolates the pair's share of the previous word's
pairs with the word's share of all words (the engine's word list), both restricted to the
words the prefix begins and renormalised, so a pair the list lacks still has the word's own
frequency. After a sentence end, a mark or nothing, it offers nothing: the pairs know only
words that follow words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from predtext.engine.context import Context, normalize_word
from predtext.engine.dictionary import Dictionary, shared_dictionary
from predtext.engine.protocol import Candidate, Resources, fraction_options
from predtext.text import is_word

# The share of the word's own frequency in the mixture (the pairs list is the commonest pairs
# only: a rarer pair is not impossible).
UNIGRAM_SHARE = 0.2


class Following:
    """The words after one previous word: P(a word begins ``q`` | previous) and the likeliest
    words that begin ``q`` (see the module doc); made by :meth:`PairPrior.after`."""

    __slots__ = ("_prior", "_head", "_followers")

    def __init__(self, prior: PairPrior, head: str, followers: float):
        self._prior, self._head, self._followers = prior, head, followers

    def _masses(self, typed: str) -> tuple[float, float, float]:
        prior = self._prior
        pair_mass = prior.pairs.prefix_share(self._head + typed) / self._followers
        word_mass = prior.words.prefix_share(typed) if prior.alpha else 0.0
        return pair_mass, word_mass, (1.0 - prior.alpha) * pair_mass + prior.alpha * word_mass

    def share(self, typed: str) -> float:
        """P(the next word begins ``typed``), ``typed`` lower-case."""
        return self._masses(typed)[2]

    def complete(self, typed: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` words (lower-case) that begin ``typed``, with P(word | previous,
        typed), likeliest first."""
        prior, head = self._prior, self._head
        pair_mass, word_mass, total = self._masses(typed)
        if total <= 0:
            return []
        scores: dict[str, float] = {}
        if pair_mass > 0:
            for pair, within in prior.pairs.complete(head + typed, k):
                scores[pair[len(head):]] = (1.0 - prior.alpha) * pair_mass * within
        if word_mass > 0:
            for word, within in prior.commonest(typed, k):
                if is_word(word):
                    key = normalize_word(word)
                    # A word in both keeps its pair share and gains its own.
                    scores[key] = scores.get(key, 0.0) + prior.alpha * word_mass * within
        ranked = sorted(scores.items(), key=lambda item: -item[1])[:k]
        return [(word, p / total) for word, p in ranked]


class PairPrior:
    """Word pairs (``pairs``: a :class:`Dictionary` of "first second" keys) mixed with
    single-word frequencies (``words``), ``unigram_share`` of the latter."""

    def __init__(self, pairs: Dictionary, words: Dictionary | None,
                 unigram_share: float = UNIGRAM_SHARE):
        self.pairs = pairs
        self.words = words
        self.alpha = float(unigram_share) if words is not None else 0.0
        self._commonest: dict[int, list[tuple[str, float]]] = {}

    def after(self, previous: str) -> Following | None:
        """What follows the word ``previous`` (as typed), or None when no pair begins with it."""
        head = normalize_word(previous) + " "
        followers = self.pairs.prefix_share(head)
        return Following(self, head, followers) if followers > 0 else None

    def commonest(self, typed: str, k: int) -> list[tuple[str, float]]:
        """The word list's likeliest words that begin ``typed``; at a word boundary (every
        word: a partial sort of the whole list) computed once per ``k``."""
        if typed:
            return self.words.complete(typed, k)
        if k not in self._commonest:
            self._commonest[k] = self.words.complete("", k)
        return self._commonest[k]

    def written(self, key: str) -> str:
        """``key`` as the word list writes it ("I", "English"), else as it is."""
        return self.words.form(key) if self.words is not None else key


def following(prior: PairPrior | None, context: Context) -> Following | None:
    """What follows the word before the one being typed in ``context``, when ``prior`` knows
    it (not after a sentence end, a mark or nothing)."""
    if prior is None or not context.words or not is_word(context.words[-1]):
        return None
    return prior.after(context.words[-1])


class BigramPredictor:
    """Next words and completions from a :class:`PairPrior`."""

    inline = True     # a few slices of sorted lists: run in the caller's thread

    def __init__(self, prior: PairPrior, name: str = "bigrams"):
        self.name = name
        self.prior = prior

    def predict(self, context: Context, k: int) -> list[Candidate]:
        after = following(self.prior, context)
        if after is None:
            return []
        return [Candidate(self.prior.written(word), p)
                for word, p in after.complete(normalize_word(context.prefix), k)]


def shared_prior(resources: Resources, path=None,
                 unigram_share: float = UNIGRAM_SHARE) -> PairPrior | None:
    """The packaged word pairs (or those at ``path``) over the engine's words, made once for
    the predictors built from ``resources`` (the typo corrector weighs slips by it too); None
    when no pairs are installed."""
    from predtext.engine.wordlist import english_bigrams

    key = ("pair_prior", path, unigram_share)
    if key not in resources.extra:
        pairs = english_bigrams(os.path.expanduser(str(path)) if path else None)
        resources.extra[key] = (None if pairs is None else
                                PairPrior(pairs, shared_dictionary(resources), unigram_share))
    return resources.extra[key]


def make_predictor(options: Mapping[str, Any], resources: Resources) -> BigramPredictor:
    """Factory for ``type = "bigrams"``: the packaged word pairs (or ``path`` to a file of
    "first second count" lines) over the engine's words (``unigram_share``: see the module
    doc). Raises ``ValueError`` when no pairs are installed."""
    settings = fraction_options(options, ("unigram_share",))
    prior = shared_prior(resources, options.get("path"),
                         settings.get("unigram_share", UNIGRAM_SHARE))
    if prior is None:
        raise ValueError("no word pairs: install symspellpy, or give the predictor a `path`")
    return BigramPredictor(prior, name=str(options.get("name", "bigrams")))
