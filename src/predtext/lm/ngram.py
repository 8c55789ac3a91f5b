"""Word n-gram model with interpolated modified Kneser-Ney smoothing.

A model of text beside the recurrent one: a model file carries its counts, and the engine's
n-gram predictor (:mod:`predtext.engine.ngram`) wraps it.

Layout (why it is fast)
-----------------------
Word ids of the counted vocabulary are assigned in sorted order of the (lower-case) words, so
the words starting with a typed prefix are one contiguous id range, found by bisection. For
every order n the n-grams are stored CSR-style: the contexts (n-1 word ids packed into one int64
key, sorted), an offset array, and the next-word ids (sorted by id within each context) with
their counts. The next-word distribution over a prefix's id range is then a few NumPy
operations: start from the uniform floor, and for each order scale by that context's backoff
weight and add the discounted counts of the continuations that fall in the range (found by
binary search, since they are sorted by id). The result is exact, sums to one over the
vocabulary, and costs O(size of the range) -- a prefix of one letter already narrows it to a few
hundred words.

Counts ("effective counts" below) are what Kneser-Ney uses at each order: raw counts at the
highest order, continuation counts (how many distinct words precede the n-gram) below it.

Online learning adds to a small overlay of dictionaries (new words get ids after the sorted
ones); when the overlay grows large it is folded back into the arrays (:meth:`compact`).
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from predtext.errors import ModelFileError
from predtext.text import (
    BOUNDARY,
    CURLY_APOSTROPHE,
    MARKERS,
    normalize_word,
    tokenize,
    with_apostrophe,
)

FORMAT = "predtext.ngram"
FORMAT_VERSION = 1

_BOUNDARY_ID = 0
_KEY_BITS = 21                      # ids up to 2M; three context words fill 63 bits
_MAX_ID = (1 << _KEY_BITS) - 1
MAX_ORDER = 4
DEFAULT_DISCOUNTS = (0.5, 1.0, 1.5)
# Overlay size at which online learning folds itself into the arrays: queries loop over the
# overlay entries of the contexts they visit, so it is kept small.
_COMPACT_CONTEXT_ENTRIES = 2000
_COMPACT_TOTAL_ENTRIES = 200_000
# Answers of likely_next kept between keystrokes (the same words come up letter after letter).
_NEXT_CACHE_SIZE = 4096
_UNKNOWN = object()
# A phrase goes on only to a word with this much evidence after the longest part of its
# context ever seen: one sighting after a rare context makes any word look likely. At the
# highest order the evidence is how often the word followed; below it, Kneser-Ney's count of
# how many different words came before the pair. So after "back soon" (never seen) "as" is
# refused, though "soon as" is common: it is always "as soon as", and nothing says "as"
# follows "back soon".
_PHRASE_MIN_COUNT = 2


def _pack(rows: np.ndarray) -> np.ndarray:
    """One int64 key per row of context ids; numeric order equals lexicographic order of rows."""
    keys = np.zeros(len(rows), dtype=np.int64)
    for column in range(rows.shape[1]):
        keys = (keys << _KEY_BITS) | rows[:, column].astype(np.int64)
    return keys


def _unpack(keys: np.ndarray, width: int) -> np.ndarray:
    rows = np.empty((len(keys), width), dtype=np.int64)
    for column in range(width - 1, -1, -1):
        rows[:, column] = keys & _MAX_ID
        keys = keys >> _KEY_BITS
    return rows


def _unique_rows(rows: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in lexicographic order, each with the sum of its counts."""
    if len(rows) == 0:
        return rows.reshape(0, rows.shape[1]), counts[:0]
    order = np.lexsort(rows.T[::-1])
    rows, counts = rows[order], counts[order]
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    index = np.flatnonzero(starts)
    return rows[index], np.add.reduceat(counts, index)


def _estimate_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts (Chen & Goodman).

    Falls back to defaults where the counts are too few to estimate, and keeps 0 < D_c <= c so
    that discounted counts stay non-negative (which keeps the distribution normalised).
    """
    n = [int(np.count_nonzero(counts == c)) for c in (1, 2, 3, 4)]
    estimated = list(DEFAULT_DISCOUNTS)
    if n[0] > 0 and n[1] > 0:
        y = n[0] / (n[0] + 2 * n[1])
        candidates = [1 - 2 * y * n[1] / n[0],
                      2 - 3 * y * n[2] / n[1],
                      3 - 4 * y * n[3] / n[2] if n[2] > 0 else None]
        for i, value in enumerate(candidates):
            if value is not None and 0 < value <= i + 1:
                estimated[i] = value
    return tuple(float(d) for d in estimated)


def _form_and_key(token: str) -> tuple[str, str]:
    """A counted word's written form (its case; apostrophes straight, as suggestions take the
    user's style) and its key."""
    return with_apostrophe(token, "'"), normalize_word(token)


def _usual_form(word: str, forms: Mapping[str, int], frequency: int) -> str | None:
    """The capitalised form of ``word`` to show, when it is written so more often than lower case.

    ALL-CAPS forms (headings, speaker names) are not candidates: "ROMEO" in a play's speaker
    labels should still be offered as "Romeo". Single letters count ("I").
    """
    lower_uses = frequency - sum(forms.values())
    usable = [(uses, form) for form, uses in forms.items()
              if len(form) < 2 or not form.isupper()]
    if not usable:
        return None
    uses, form = max(usable)
    return form if uses > lower_uses else None


class _Order:
    """The arrays of one n-gram order (CSR over sorted context keys), plus the online overlay."""

    def __init__(self, n: int, keys, starts, next_ids, counts, stats):
        self.n = n
        self.keys = keys            # (C,) int64 packed contexts, sorted
        self.starts = starts        # (C+1,) int64 offsets into next_ids/counts
        self.next_ids = next_ids    # (M,) int32, sorted within each context
        self.counts = counts        # (M,) int32 effective counts
        self.stats = stats          # (C, 4) int64: total, number with count 1, 2, 3+
        # (C,) the largest count of each context (bounds its words' probabilities)
        self.largest = (np.maximum.reduceat(counts, starts[:-1]) if len(counts)
                        else np.zeros(len(keys), dtype=counts.dtype))
        # context -> {word id: added count}
        self.extra_counts: dict[tuple, dict[int, int]] = {}
        # context -> added (total, n1, n2, n3+)
        self.extra_stats: dict[tuple, list[int]] = {}
        self.extra_entries = 0

    @classmethod
    def from_rows(cls, n: int, rows: np.ndarray, counts: np.ndarray) -> _Order:
        """From distinct n-gram rows in lexicographic order and their effective counts."""
        contexts = rows[:, :-1]
        if len(rows):
            first = np.ones(len(rows), dtype=bool)
            if n > 1:
                first[1:] = np.any(contexts[1:] != contexts[:-1], axis=1)
            else:
                first[1:] = False
            starts = np.append(np.flatnonzero(first), len(rows)).astype(np.int64)
        else:
            starts = np.zeros(1, dtype=np.int64)
        keys = _pack(contexts[starts[:-1]]) if n > 1 else np.zeros(len(starts) - 1, dtype=np.int64)
        stats = np.zeros((len(starts) - 1, 4), dtype=np.int64)
        if len(rows):
            index = starts[:-1]
            stats[:, 0] = np.add.reduceat(counts.astype(np.int64), index)
            for column, test in ((1, counts == 1), (2, counts == 2), (3, counts >= 3)):
                stats[:, column] = np.add.reduceat(test.astype(np.int64), index)
        return cls(n, keys, starts, rows[:, -1].astype(np.int32), counts.astype(np.int32), stats)

    def find(self, context: tuple) -> int:
        """Index of ``context`` among the stored contexts, or -1."""
        if self.n == 1:
            return 0 if len(self.keys) else -1
        key = 0
        for word in context:
            if word < 0:
                return -1
            key = (key << _KEY_BITS) | word
        i = int(np.searchsorted(self.keys, key))
        return i if i < len(self.keys) and self.keys[i] == key else -1

    def context_stats(self, context: tuple, index: int) -> tuple[int, int, int, int]:
        total = n1 = n2 = n3 = 0
        if index >= 0:
            total, n1, n2, n3 = (int(v) for v in self.stats[index])
        extra = self.extra_stats.get(context)
        if extra is not None:
            total, n1, n2, n3 = total + extra[0], n1 + extra[1], n2 + extra[2], n3 + extra[3]
        return total, n1, n2, n3

    def base_count(self, index: int, word: int) -> int:
        if index < 0:
            return 0
        lo, hi = self.starts[index], self.starts[index + 1]
        i = lo + int(np.searchsorted(self.next_ids[lo:hi], word))
        return int(self.counts[i]) if i < hi and self.next_ids[i] == word else 0

    def count(self, context: tuple, index: int, word: int) -> int:
        added = self.extra_counts.get(context)
        return self.base_count(index, word) + (added.get(word, 0) if added else 0)

    def fork(self) -> _Order:
        """The same arrays (never changed in place) under a copy of the online overlay."""
        twin = copy.copy(self)
        twin.extra_counts = {context: dict(words) for context, words in self.extra_counts.items()}
        twin.extra_stats = {context: list(stats) for context, stats in self.extra_stats.items()}
        return twin


class NGramModel:
    """Word-level interpolated modified Kneser-Ney n-gram model (order 1 to 4, default 3).

    Build with :meth:`from_text`; query with :meth:`predict` (next words given the previous
    words, filtered by a typed prefix), :meth:`probability` and :meth:`perplexity`; keep
    learning with :meth:`learn`; store with :meth:`to_arrays` / :meth:`from_arrays` (NumPy arrays
    plus JSON-able metadata, so a model file can carry it) or :meth:`save` / :meth:`load`.
    Words are matched lower-case; each remembers its most frequent written form ("I", "Romeo").
    """

    def __init__(self, order: int = 3, discounts: Sequence[Sequence[float]] | None = None):
        if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
        self.order = order
        self._fixed_discounts = discounts is not None
        if discounts is not None:
            discounts = [tuple(float(d) for d in level) for level in discounts]
            if len(discounts) != order or any(len(level) != 3 for level in discounts):
                raise ValueError(f"discounts must be {order} triples (D1, D2, D3+), one per order")
            for level in discounts:
                if not all(0 <= d <= c for c, d in zip((1, 2, 3), level)):
                    raise ValueError(f"discounts must satisfy 0 <= D_c <= c, got {level}")
        self._discounts: list[tuple[float, float, float]] = (
            list(discounts) if discounts is not None else [DEFAULT_DISCOUNTS] * order)
        self._words: list[str] = [BOUNDARY]
        self._ids: dict[str, int] = {BOUNDARY: _BOUNDARY_ID}
        self._sorted_end = 1           # ids [1, _sorted_end) are in sorted order of their words
        self._word_counts: list[int] = [0]
        self._surface: dict[int, str] = {}
        self._orders: list[_Order] = []
        self._learn_tail: list[int] = [_BOUNDARY_ID] * (order - 1)
        self._unigram_cache: np.ndarray | None = None
        self._unigram_max = 0.0
        # likely_next answers, (context ids, threshold) -> answer; emptied by any change of counts.
        self._next_cache: dict[tuple, tuple[str, float] | None] = {}
        self._set_rows(np.zeros((0, order), dtype=np.int64), np.zeros(0, dtype=np.int64))

    # ----------------------------------------------------------------- building

    @classmethod
    def from_text(cls, text, order: int = 3,
                  discounts: Sequence[Sequence[float]] | None = None) -> NGramModel:
        """Count ``text`` (a string, or an iterable of strings counted as separate documents)."""
        documents = [text] if isinstance(text, str) else list(text)
        for document in documents:
            if not isinstance(document, str):
                raise TypeError("text must be str or an iterable of str, "
                                f"got {type(document).__name__}")
        model = cls(order, discounts)
        token_lists = [tokenize(unicodedata.normalize("NFC", d)) for d in documents]
        surfaces: dict[str, dict[str, int]] = {}
        frequency: dict[str, int] = {}
        for tokens in token_lists:
            for token in tokens:
                if token == BOUNDARY:
                    continue
                form, key = _form_and_key(token)
                frequency[key] = frequency.get(key, 0) + 1
                if form != key:
                    forms = surfaces.setdefault(key, {})
                    forms[form] = forms.get(form, 0) + 1
        words = sorted(frequency)
        if len(words) + 1 > _MAX_ID:
            raise ValueError(f"vocabulary of {len(words)} words exceeds {_MAX_ID}")
        model._words = [BOUNDARY] + words
        model._ids = {w: i for i, w in enumerate(model._words)}
        model._sorted_end = len(model._words)
        model._word_counts = [0] + [frequency[w] for w in words]
        for key, forms in surfaces.items():
            form = _usual_form(key, forms, frequency[key])
            if form is not None:
                model._surface[model._ids[key]] = form
        windows = []
        pad = [_BOUNDARY_ID] * (order - 1)
        for tokens in token_lists:
            ids = np.array(pad + [model._ids[normalize_word(t)] if t != BOUNDARY else _BOUNDARY_ID
                                  for t in tokens], dtype=np.int64)
            if len(ids) >= order:
                windows.append(np.lib.stride_tricks.sliding_window_view(ids, order))
        rows = np.concatenate(windows) if windows else np.zeros((0, order), dtype=np.int64)
        model._set_rows(rows, np.ones(len(rows), dtype=np.int64))
        return model

    def _set_rows(self, rows: np.ndarray, counts: np.ndarray) -> None:
        """Rebuild every order from highest-order n-gram rows (repeats allowed) and raw counts."""
        rows, counts = _unique_rows(rows.astype(np.int64), counts.astype(np.int64))
        levels = [(rows, counts)]
        for _ in range(self.order - 1):
            higher_rows, _ = levels[0]
            suffixes = higher_rows[:, 1:]
            levels.insert(0, _unique_rows(suffixes, np.ones(len(suffixes), dtype=np.int64)))
        self._orders = [_Order.from_rows(n + 1, r, c) for n, (r, c) in enumerate(levels)]
        self._unigram_cache = None
        self._next_cache = {}
        if not self._fixed_discounts:
            self._discounts = [_estimate_discounts(c) for _, c in levels]

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocabulary_size(self) -> int:
        """Number of word types, the sentence boundary included."""
        return len(self._words)

    def words(self) -> list[str]:
        """The counted words (lower case), without markers (boundary, clause marks)."""
        return [w for w in self._words if w not in MARKERS]

    def word_frequencies(self) -> dict[str, int]:
        """Written form of each word -> how often it was seen (for a dictionary predictor)."""
        return {self.surface(i): self._word_counts[i] for i in range(1, len(self._words))
                if self._words[i] not in MARKERS}

    def surface(self, word_id: int) -> str:
        """The usual written form of a word ("I" for "i")."""
        return self._surface.get(word_id, self._words[word_id])

    def written_form(self, word: str) -> str:
        """How ``word`` is usually written ("I" for "i"); unknown words come back unchanged."""
        word_id = self._id(word)
        return self.surface(word_id) if word_id > 0 else word

    def _id(self, word: str) -> int:
        return _BOUNDARY_ID if word == BOUNDARY else self._ids.get(normalize_word(word), -1)

    def _context_ids(self, words: Sequence[str]) -> tuple:
        """The last order-1 words as ids, unknown words as -1, padded with boundaries."""
        need = self.order - 1
        ids = [self._id(w) for w in list(words)[-need:]] if need else []
        return tuple([_BOUNDARY_ID] * (need - len(ids)) + ids)

    def _prefix_ids(self, prefix: str) -> np.ndarray:
        """Ids of the words that start with ``prefix`` (normalised), boundary excluded,
        ascending."""
        prefix = normalize_word(prefix)
        sorted_words = self._words
        lo = bisect.bisect_left(sorted_words, prefix, 1, self._sorted_end)
        hi = bisect.bisect_left(sorted_words, prefix + "\U0010ffff", lo, self._sorted_end)
        ids = np.arange(lo, hi, dtype=np.int64)
        extra = [i for i in range(self._sorted_end, len(self._words))
                 if self._words[i].startswith(prefix)]
        return np.concatenate([ids, np.array(extra, dtype=np.int64)]) if extra else ids

    # ----------------------------------------------------------------- probabilities

    def _discounted(self, n: int, count):
        d1, d2, d3 = self._discounts[n - 1]
        return np.where(count >= 3, count - d3, np.where(count == 2, count - d2,
                        np.where(count == 1, count - d1, 0.0)))

    def _scores(self, context: tuple, candidates: np.ndarray) -> np.ndarray:
        """P(w | context) for each id in ``candidates`` (ascending ids)."""
        scores = self._unigram_scores()[candidates]
        for order in self._orders[1:]:
            n = order.n
            scores = self._interpolate(order, context[len(context) - (n - 1):], candidates, scores)
        return scores

    def _unigram_scores(self) -> np.ndarray:
        """P(w) at the unigram level for every id.

        It does not depend on the context, so it is computed once over the whole vocabulary and
        reused until learning changes it.
        """
        if self._unigram_cache is None or len(self._unigram_cache) != len(self._words):
            everything = np.arange(len(self._words), dtype=np.int64)
            uniform = np.full(len(everything), 1.0 / len(self._words))
            self._unigram_cache = self._interpolate(self._orders[0], (), everything, uniform)
            self._unigram_max = float(self._unigram_cache.max())
        return self._unigram_cache

    def _backoff(self, n: int, total: int, n1: int, n2: int, n3: int) -> float:
        """The weight of order n-1 after a context of order n seen ``total`` times, with
        ``n1``, ``n2``, ``n3`` next words seen once, twice, three times or more: the mass
        the discounts took."""
        d1, d2, d3 = self._discounts[n - 1]
        return (d1 * n1 + d2 * n2 + d3 * n3) / total

    def _interpolate(self, order: _Order, context: tuple, candidates: np.ndarray,
                     lower: np.ndarray) -> np.ndarray:
        """One Kneser-Ney level: discounted counts of ``context`` plus backoff weight x
        ``lower``."""
        n = order.n
        index = order.find(context)
        total, n1, n2, n3 = order.context_stats(context, index)
        if total == 0 or not len(candidates):
            return lower            # unseen context: this order adds nothing
        scores = lower * self._backoff(n, total, n1, n2, n3)
        first, last = int(candidates[0]), int(candidates[-1])
        contiguous = last - first + 1 == len(candidates)
        if index >= 0:
            lo, hi = order.starts[index], order.starts[index + 1]
            ids = order.next_ids[lo:hi]
            a, b = np.searchsorted(ids, [first, last + 1])
            ids, counts = ids[a:b], order.counts[lo + a:lo + b]
            if contiguous:
                scores[ids - first] += self._discounted(n, counts) / total
            else:
                where = np.searchsorted(candidates, ids)
                hit = candidates[np.minimum(where, len(candidates) - 1)] == ids
                scores[where[hit]] += self._discounted(n, counts[hit]) / total
        added = order.extra_counts.get(context)
        if added:
            # Online additions: replace each word's discounted base count by the discounted sum.
            words = np.fromiter(added.keys(), dtype=np.int64, count=len(added))
            extra = np.fromiter(added.values(), dtype=np.int64, count=len(added))
            keep = (words >= first) & (words <= last)
            words, extra = words[keep], extra[keep]
            at = np.searchsorted(candidates, words)
            hit = candidates[np.minimum(at, len(candidates) - 1)] == words
            words, extra, at = words[hit], extra[hit], at[hit]
            base = self._base_counts(order, index, words)
            scores[at] += (self._discounted(n, base + extra) - self._discounted(n, base)) / total
        return scores

    @staticmethod
    def _base_counts(order: _Order, index: int, words: np.ndarray) -> np.ndarray:
        """Counts in the arrays (not the overlay) of ``words`` after context ``index``."""
        if index < 0 or not len(words):
            return np.zeros(len(words), dtype=np.int64)
        lo, hi = order.starts[index], order.starts[index + 1]
        ids = order.next_ids[lo:hi]
        at = np.minimum(np.searchsorted(ids, words), max(len(ids) - 1, 0))
        if not len(ids):
            return np.zeros(len(words), dtype=np.int64)
        found = ids[at] == words
        return np.where(found, order.counts[lo:hi][at], 0).astype(np.int64)

    def probability(self, word: str, previous: Sequence[str] = ()) -> float:
        """P(word | previous words); 0 for a word never seen."""
        word_id = self._id(word)
        if word_id < 0:
            return 0.0
        return float(self._scores(self._context_ids(previous), np.array([word_id]))[0])

    def distribution(self, previous: Sequence[str] = ()) -> dict[str, float]:
        """P(w | previous words) for every word of the vocabulary, boundary included."""
        ids = np.arange(len(self._words), dtype=np.int64)
        scores = self._scores(self._context_ids(previous), ids)
        return {self._words[i]: float(s) for i, s in zip(ids, scores)}

    def predict(self, previous: Sequence[str], prefix: str = "",
                k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` likeliest next words starting with ``prefix``, with P(w | previous, prefix).

        Probabilities are renormalised over the words that match the prefix (the typed letters
        are known), so they are comparable with any predictor that conditions on them too.
        Words are returned in their usual written form.
        """
        candidates = self._prefix_ids(prefix)
        if not len(candidates) or k <= 0:
            return []
        scores = self._scores(self._context_ids(previous), candidates)
        if not prefix:
            # Clause marks sit in the sorted vocabulary; the user is typing a word, so the
            # distribution is over words only.
            for mark in MARKERS:
                at = np.searchsorted(candidates, self._ids.get(mark, -1))
                if at < len(candidates) and candidates[at] == self._ids.get(mark, -1):
                    scores[at] = 0.0
        mass = scores.sum()
        if mass <= 0:
            return []
        top = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.surface(int(candidates[i])), float(scores[i] / mass)) for i in top
                if scores[i] > 0]

    def knows_context(self, previous: Sequence[str]) -> bool:
        """Whether anything was ever seen after the last of ``previous`` (the sentence start
        when it is empty): whether the next-word distribution says more than word frequency."""
        if self.order < 2:
            return False
        context = self._context_ids(previous)[-1:]
        order = self._orders[1]
        return order.find(context) >= 0 or context in order.extra_counts

    def likely_next(self, previous: Sequence[str], threshold: float) -> tuple[str, float] | None:
        """The next word and its probability when one word is that likely (P >= ``threshold``)
        and has the evidence a phrase needs (see ``_PHRASE_MIN_COUNT``).

        None when no word reaches it, or when the likeliest next token is a mark or a sentence
        end (a phrase stops there).
        """
        context = self._context_ids(previous)
        key = (context, threshold)
        cache = self._next_cache          # one dict throughout: learn() may swap in a new one
        answer = cache.get(key, _UNKNOWN)
        if answer is _UNKNOWN:
            answer = self._likely_next(context, threshold)
            if len(cache) >= _NEXT_CACHE_SIZE:
                cache.clear()
            cache[key] = answer
        return answer

    def _likely_next(self, context: tuple, threshold: float) -> tuple[str, float] | None:
        candidates = self._possible_followers(context, threshold, _PHRASE_MIN_COUNT)
        if not len(candidates):
            return None
        scores = self._scores(context, candidates)
        best = int(np.argmax(scores))
        word_id = int(candidates[best])
        if (scores[best] < threshold or self._words[word_id] in MARKERS
                or self._seen_after(context, word_id) < _PHRASE_MIN_COUNT):
            return None
        return self.surface(word_id), float(scores[best])

    def _seen_after(self, context: tuple, word_id: int) -> int:
        """The count of ``word_id`` after the longest suffix of ``context`` ever seen (times
        seen at the highest order, different words before the pair below it)."""
        for order in reversed(self._orders[1:]):
            suffix = context[len(context) - (order.n - 1):]
            index = order.find(suffix)
            if index >= 0 or suffix in order.extra_counts:
                return order.count(suffix, index, word_id)
        return 0

    def _possible_followers(self, context: tuple, threshold: float,
                            min_count: int = 0) -> np.ndarray:
        """Ids that may have P(w | context) >= ``threshold`` (ascending); most contexts: none.
        None at all unless some word was seen ``min_count`` times after the longest suffix of
        ``context`` ever seen.

        P at order n is (discounted count) / total + backoff x P at order n-1, so a word never
        seen after the order-n context gets at most backoff x (the largest P at order n-1).
        Bounding that largest P by each order's largest raw count tells which orders' followers
        can matter; usually only the longest context's, and often no word at all.
        """
        self._unigram_scores()
        bounds, levels, largest = [self._unigram_max], [], 0
        for order in self._orders[1:]:
            suffix = context[len(context) - (order.n - 1):]
            index = order.find(suffix)
            total, n1, n2, n3 = order.context_stats(suffix, index)
            if total == 0:
                continue
            seen = (order.next_ids[order.starts[index]:order.starts[index + 1]] if index >= 0
                    else None)
            added = order.extra_counts.get(suffix) or {}
            largest = ((int(order.largest[index]) if index >= 0 else 0)
                       + max(added.values(), default=0))
            backoff = self._backoff(order.n, total, n1, n2, n3)
            # c - D_c <= largest - min(D) for every count c <= largest
            smallest_discount = min(self._discounts[order.n - 1])
            bounds.append((largest - smallest_discount) / total + backoff * bounds[-1])
            levels.append((backoff, seen, added))
        if bounds[-1] < threshold or largest < min_count:
            return np.zeros(0, dtype=np.int64)
        found, reach = [], 1.0       # reach: product of the backoffs above this order
        sorted_alone = True
        for (backoff, seen, added), lower_bound in zip(reversed(levels), reversed(bounds[:-1])):
            if seen is not None:
                found.append(seen.astype(np.int64))
            if added:
                found.append(np.fromiter(added.keys(), dtype=np.int64, count=len(added)))
                sorted_alone = False
            reach *= backoff
            if reach * lower_bound < threshold:
                break            # words not seen at this order or above cannot reach it
        else:
            return np.arange(len(self._words), dtype=np.int64)   # backoff alone could reach it
        # One stored context's next ids are sorted already; learned ones come in any order.
        return found[0] if len(found) == 1 and sorted_alone else np.unique(np.concatenate(found))

    def phrase(self, previous: Sequence[str], first: str, threshold: float,
               max_words: int) -> tuple[list[str], float]:
        """The words likely to follow ``first`` (each with P >= ``threshold`` given what precedes
        it), at most ``max_words - 1`` of them, and the product of their probabilities."""
        context = list(previous[-(self.order - 1):]) if self.order > 1 else []
        context.append(first)
        words, probability = [], 1.0
        while len(words) < max_words - 1:
            step = self.likely_next(context, threshold)
            if step is None:
                break
            words.append(step[0])
            probability *= step[1]
            context.append(step[0])
        return words, probability

    def perplexity(self, text: str) -> float:
        """Per-token perplexity of ``text`` (sentence boundaries count as tokens).

        Words never seen are left out of the average (and break the context), as SRILM does
        by default; a text with no known token gives ``inf``.
        """
        tokens = tokenize(unicodedata.normalize("NFC", text))
        ids = [_BOUNDARY_ID] * (self.order - 1) + [self._id(t) for t in tokens]
        log_sum, scored = 0.0, 0
        for i in range(self.order - 1, len(ids)):
            if ids[i] < 0:
                continue
            context = tuple(ids[i - self.order + 1:i])
            p = float(self._scores(context, np.array([ids[i]]))[0])
            log_sum += math.log(p)
            scored += 1
        return math.exp(-log_sum / scored) if scored else math.inf

    # ------------------------------------------------------------------ online learning

    def learn(self, text: str) -> None:
        """Add ``text`` to the counts, continuing from the end of the previous learned text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        ids = list(self._learn_tail)
        for token in tokenize(unicodedata.normalize("NFC", text)):
            ids.append(self._learn_word(token, sentence_start=not ids or ids[-1] == _BOUNDARY_ID))
        for end in range(self.order, len(ids) + 1):
            self._add(self.order, tuple(ids[end - self.order:end]))
        if self.order > 1:
            self._learn_tail = ids[-(self.order - 1):]
        if (self._orders[0].extra_entries > _COMPACT_CONTEXT_ENTRIES
                or sum(o.extra_entries for o in self._orders) > _COMPACT_TOTAL_ENTRIES):
            self.compact()
        self._unigram_scores()      # rebuild now, not in the next keystroke
        self._next_cache = {}       # answers from before (or during) this learning are stale

    def fork(self) -> NGramModel:
        """A model with these counts that learns on its own: what one learns, the other does
        not see. The count arrays are shared (learning and compact() replace them, never write
        into them); the vocabulary and the online overlay are copied (about a millisecond)."""
        twin = copy.copy(self)
        twin._words, twin._ids = list(self._words), dict(self._ids)
        twin._word_counts, twin._surface = list(self._word_counts), dict(self._surface)
        twin._learn_tail, twin._discounts = list(self._learn_tail), list(self._discounts)
        twin._orders = [order.fork() for order in self._orders]
        twin._next_cache = {}
        return twin

    def _learn_word(self, token: str, sentence_start: bool) -> int:
        if token == BOUNDARY:
            return _BOUNDARY_ID
        token, key = _form_and_key(token)
        word_id = self._ids.get(key)
        if word_id is None:
            if len(self._words) >= _MAX_ID:
                return -1
            word_id = len(self._words)
            self._words.append(key)
            self._ids[key] = word_id
            self._word_counts.append(0)
        # A learned word is shown capitalised once it is seen so inside a sentence ("Paris");
        # a capital at a sentence start says nothing ("Soon we go.").
        if (token != key and not sentence_start and word_id >= self._sorted_end
                and word_id not in self._surface):
            self._surface[word_id] = token
        self._word_counts[word_id] += 1
        return word_id

    def _add(self, n: int, gram: tuple) -> None:
        """One more occurrence of ``gram`` at order n (its effective count goes up by one)."""
        if min(gram) < 0:
            return
        order = self._orders[n - 1]
        context, word = gram[:-1], gram[-1]
        index = order.find(context)
        old = order.count(context, index, word)
        added = order.extra_counts.setdefault(context, {})
        if word not in added:
            order.extra_entries += 1
        added[word] = added.get(word, 0) + 1
        stats = order.extra_stats.setdefault(context, [0, 0, 0, 0])
        stats[0] += 1
        if old > 0:
            stats[min(old, 3)] -= 1
        stats[min(old + 1, 3)] += 1
        if n == 1:
            self._unigram_cache = None
        if n > 1 and old == 0:
            # A new left neighbour for the shorter n-gram: its continuation count goes up.
            self._add(n - 1, gram[1:])

    def _top_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every highest-order n-gram (as id rows) and its count, online learning included:
        what :meth:`_set_rows` rebuilds the model from."""
        top = self._orders[-1]
        width = self.order - 1
        contexts = (_unpack(top.keys, width) if width else np.zeros((len(top.keys), 0), np.int64))
        lengths = np.diff(top.starts)
        rows = [np.column_stack([np.repeat(contexts, lengths, axis=0),
                                 top.next_ids]).astype(np.int64)]
        counts = [top.counts.astype(np.int64)]
        for context, added in top.extra_counts.items():
            for word, extra in added.items():
                rows.append(np.array([list(context) + [word]], dtype=np.int64))
                counts.append(np.array([extra], dtype=np.int64))
        return np.concatenate(rows).reshape(-1, self.order), np.concatenate(counts)

    def compact(self) -> None:
        """Fold online learning into the arrays (ids are renumbered into sorted order)."""
        rows, counts = self._top_rows()
        # Renumber so that ids follow the sorted order of the words again.
        order = sorted(range(1, len(self._words)), key=self._words.__getitem__)
        remap = np.zeros(len(self._words), dtype=np.int64)
        remap[order] = np.arange(1, len(order) + 1)
        self._words = [BOUNDARY] + [self._words[i] for i in order]
        self._ids = {w: i for i, w in enumerate(self._words)}
        self._word_counts = [0] + [self._word_counts[i] for i in order]
        self._surface = {int(remap[i]): form for i, form in self._surface.items()}
        self._learn_tail = [int(remap[i]) if i >= 0 else i for i in self._learn_tail]
        self._sorted_end = len(self._words)
        self._set_rows(remap[rows], counts)

    # ----------------------------------------------------------------- storage

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: NumPy arrays and JSON-serialisable metadata describing the model."""
        self.compact()
        arrays = {"ngram.word_counts": np.asarray(self._word_counts, dtype=np.int64)}
        for order in self._orders:
            prefix = f"ngram.order{order.n}."
            arrays[prefix + "context_keys"] = order.keys
            arrays[prefix + "context_starts"] = order.starts
            arrays[prefix + "next_ids"] = order.next_ids
            arrays[prefix + "counts"] = order.counts
            arrays[prefix + "context_stats"] = order.stats
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "order": self.order,
                "discounts": [list(d) for d in self._discounts],
                "fixed_discounts": self._fixed_discounts,
                "vocabulary": self._words[1:],
                "surface": {str(i): form for i, form in sorted(self._surface.items())}}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> NGramModel:
        """The model that :meth:`to_arrays` described. Raises ``ValueError`` on inconsistent
        data."""
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} description "
                             f"(format={meta.get('format')!r}, version={meta.get('version')!r})")
        try:
            order = int(meta["order"])
            model = cls(order, meta["discounts"] if meta.get("fixed_discounts") else None)
            model._discounts = [tuple(float(d) for d in level) for level in meta["discounts"]]
            vocabulary = [str(w) for w in meta["vocabulary"]]
            model._words = [BOUNDARY] + vocabulary
            model._ids = {w: i for i, w in enumerate(model._words)}
            model._sorted_end = len(model._words)
            model._surface = {int(i): str(f) for i, f in meta.get("surface", {}).items()}
            model._word_counts = [int(c) for c in np.asarray(arrays["ngram.word_counts"])]
            levels = []
            for n in range(1, order + 1):
                prefix = f"ngram.order{n}."
                keys, starts, next_ids, counts, stats = (
                    np.asarray(arrays[prefix + name]) for name in
                    ("context_keys", "context_starts", "next_ids", "counts", "context_stats"))
                levels.append((keys.astype(np.int64), starts.astype(np.int64),
                               next_ids.astype(np.int32), counts.astype(np.int32),
                               stats.astype(np.int64).reshape(-1, 4)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"incomplete n-gram description: {exc!r}") from None
        vocabulary_size = len(model._words)
        if len(model._word_counts) != vocabulary_size or model._words[1:] != sorted(vocabulary):
            raise ValueError("vocabulary and word counts disagree or are not sorted")
        for n, (keys, starts, next_ids, counts, stats) in enumerate(levels, 1):
            # Every stored context has at least one next word (as from_rows builds them).
            if (len(starts) != len(keys) + 1 or len(stats) != len(keys) or starts[0] != 0
                    or starts[-1] != len(next_ids) or len(counts) != len(next_ids)
                    or np.any(np.diff(starts) <= 0) or np.any(np.diff(keys) <= 0)
                    or (len(next_ids) and (next_ids.min() < 0
                                           or next_ids.max() >= vocabulary_size))):
                raise ValueError(f"order {n} arrays are inconsistent")
        model._orders = [_Order(n, *level) for n, level in enumerate(levels, 1)]
        model._unigram_cache = None
        if CURLY_APOSTROPHE in "".join(vocabulary):
            model._merge_apostrophe_styles()
        return model

    def _merge_apostrophe_styles(self) -> None:
        """Count as one word what a file stored apart by its apostrophe ("don't", "don\u2019t"):
        files written before word keys left the apostrophe's style aside. The counts come out
        as if the text had been counted with today's keys. The written form (its capitals) is
        as close as such a file allows: it kept each style's usual form, not how often each
        form was written, so the merged word takes the form of its most frequent style."""
        keys = [normalize_word(word) for word in self._words[1:]]
        words = [BOUNDARY] + sorted(set(keys))
        ids = {word: i for i, word in enumerate(words)}
        remap = np.array([_BOUNDARY_ID] + [ids[key] for key in keys], dtype=np.int64)
        word_counts = [0] * len(words)
        for old_id, count in enumerate(self._word_counts):
            word_counts[remap[old_id]] += count
        # The written form of the most frequent of the merged words stands for them all.
        most_frequent: dict[int, int] = {}
        for old_id in range(1, len(self._words)):
            new_id = int(remap[old_id])
            if self._word_counts[old_id] > self._word_counts[most_frequent.get(new_id, 0)]:
                most_frequent[new_id] = old_id
        surface: dict[int, str] = {}
        for new_id, old_id in most_frequent.items():
            form = with_apostrophe(self._surface.get(old_id, words[new_id]), "'")
            if form != words[new_id]:
                surface[new_id] = form
        rows, counts = self._top_rows()
        self._words, self._ids, self._word_counts, self._surface = words, ids, word_counts, surface
        self._sorted_end = len(words)
        self._set_rows(remap[rows], counts)

    def save(self, path) -> None:
        """Write the model as a safetensors file (arrays, with the metadata as JSON), whole
        or not at all. Raises ``ModelFileError`` naming the file when it cannot be written."""
        from safetensors.numpy import save

        from predtext.lm.modelfile import atomic_write  # with safetensors: only when saving
        arrays, meta = self.to_arrays()
        data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                    metadata={FORMAT: json.dumps(meta)})
        try:
            atomic_write(Path(path), data)
        except OSError as exc:
            raise ModelFileError(path, f"cannot write ({exc.strerror or exc})") from None

    @classmethod
    def load(cls, path) -> NGramModel:
        """Read a file written by :meth:`save` (or a model file that carries n-gram arrays)."""
        try:
            from safetensors import safe_open
            with safe_open(str(path), framework="numpy") as handle:
                meta_text = (handle.metadata() or {}).get(FORMAT)
                if meta_text is None:
                    raise ModelFileError(path, "holds no n-gram model")
                # keys(), not iteration: safe_open handles are not iterable.
                names = [k for k in handle.keys() if k.startswith("ngram.")]  # noqa: SIM118
                arrays = {k: handle.get_tensor(k) for k in names}
            return cls.from_arrays(arrays, json.loads(meta_text))
        except ModelFileError:
            raise
        except FileNotFoundError:
            raise ModelFileError(path, "no such file") from None
        except Exception as exc:   # safetensors raises its own error types; all mean a bad file
            raise ModelFileError(path, f"not a readable n-gram model ({exc})") from None
