"""Dictionary predictor: completes the typed word from a word list with frequencies.

The words are kept as a sorted array, so the words starting with a prefix are one slice found
by bisection; the most frequent of them are picked with a partial sort of that slice.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from predtext.engine.context import MARKERS, Context, normalize_word
from predtext.engine.protocol import Candidate, Resources

SYSTEM_WORD_LISTS = ("/usr/share/dict/words", "/usr/dict/words")


class Dictionary:
    """Sorted words with frequencies; :meth:`complete` gives the likeliest words for a prefix.

    Words are matched lower-case; each keeps its most frequent written form for display.
    """

    def __init__(self, words: Mapping[str, float] | Iterable[str]):
        if isinstance(words, Mapping):
            items = list(words.items())
        else:
            items = [(word, 1.0) for word in words]
        merged: dict[str, tuple[float, float, str]] = {}   # key -> (total, best, written form)
        for word, frequency in items:
            if not isinstance(word, str):
                raise TypeError(f"words must be str, got {type(word).__name__}")
            word = word.strip()
            frequency = float(frequency)
            if not word or word in MARKERS or not frequency > 0:
                continue
            key = normalize_word(word)
            total, best, form = merged.get(key, (0.0, 0.0, word))
            if frequency > best:
                best, form = frequency, word
            merged[key] = (total + frequency, best, form)
        keys = sorted(merged)
        self._build(keys, [merged[key][2] for key in keys],
                    np.array([merged[key][0] for key in keys], dtype=np.float64))

    @classmethod
    def of_keys(cls, keys: list[str], frequencies) -> Dictionary:
        """A dictionary of ``keys`` that are already distinct and as :func:`normalize_word`
        makes them, with ``frequencies`` (> 0) beside them: no per-word work in Python, for
        a list of hundreds of thousands read at start-up."""
        frequencies = np.asarray(frequencies, dtype=np.float64)
        if len(keys) != len(frequencies):
            raise ValueError(f"keys and frequencies differ in length: "
                             f"{len(keys)} and {len(frequencies)}")
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        self = cls.__new__(cls)
        self._build(keys, keys, frequencies[order])
        return self

    def _build(self, keys: list[str], forms: list[str], frequencies: np.ndarray) -> None:
        self._keys = keys
        self._forms = forms
        self._frequencies = frequencies
        # Running shares (a plain list: read thousands of times a keystroke by the typo
        # corrector, faster than NumPy scalars): a prefix's mass is one subtraction.
        total = float(self._frequencies.sum())
        self._cumulative = (np.concatenate([[0.0], np.cumsum(self._frequencies)])
                            / (total if total > 0 else 1.0)).tolist()

    def prefix_share(self, key: str) -> float:
        """The share of the word list's frequency held by the words that start with ``key``
        (already lower-case, as :func:`normalize_word` makes it): how likely a word begun so is."""
        keys = self._keys
        lo = bisect.bisect_left(keys, key)
        if lo == len(keys) or not keys[lo].startswith(key):
            return 0.0
        hi = bisect.bisect_left(keys, key + "\U0010ffff", lo)
        return self._cumulative[hi] - self._cumulative[lo]

    def form(self, key: str) -> str:
        """How the list writes ``key`` (lower-case, as :func:`normalize_word` makes it): its
        most frequent written form ("I"), or ``key`` itself when the list lacks it."""
        i = bisect.bisect_left(self._keys, key)
        return self._forms[i] if i < len(self._keys) and self._keys[i] == key else key

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def from_file(cls, path) -> Dictionary:
        """One word per line, optionally followed by whitespace and a frequency."""
        from predtext.errors import ModelFileError
        words: dict[str, float] = {}
        try:
            # (utf-8-sig: a byte-order mark would otherwise stick to the first word.)
            with open(path, encoding="utf-8-sig", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    frequency = 1.0
                    if len(parts) > 1:
                        try:
                            frequency = float(parts[1])
                        except ValueError:
                            frequency = math.nan
                        if not (math.isfinite(frequency) and frequency >= 0):
                            raise ModelFileError(path, f"line {number}: frequency {parts[1]!r} "
                                                       "is not a finite number >= 0")
                    words[parts[0]] = words.get(parts[0], 0.0) + frequency
        except OSError as exc:
            raise ModelFileError(path, f"cannot read word list ({exc.strerror or exc})") from None
        return cls(words)

    def complete(self, prefix: str, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` words starting with ``prefix``, with P(word | prefix) by frequency."""
        key = normalize_word(prefix)
        lo = bisect.bisect_left(self._keys, key)
        hi = bisect.bisect_left(self._keys, key + "\U0010ffff", lo)
        if hi <= lo or k <= 0:
            return []
        frequencies = self._frequencies[lo:hi]
        if k < len(frequencies):
            top = np.argpartition(-frequencies, k)[:k]
        else:
            top = np.arange(len(frequencies))
        top = top[np.argsort(-frequencies[top], kind="stable")]
        total = frequencies.sum()
        return [(self._forms[lo + i], float(frequencies[i] / total)) for i in top]


class DictionaryPredictor:
    """Completes the word being typed from a :class:`Dictionary` (nothing at a word boundary).

    ``min_prefix`` letters must be typed first: with none, a word list knows nothing useful.
    """

    inline = True     # bounded work: run in the caller's thread (see PredictorRunner)

    def __init__(self, dictionary: Dictionary, name: str = "dictionary", min_prefix: int = 1):
        self.name = name
        self.dictionary = dictionary
        self.min_prefix = max(1, int(min_prefix))

    def predict(self, context: Context, k: int) -> list[Candidate]:
        if len(context.prefix) < self.min_prefix:
            return []
        return [Candidate(w, p) for w, p in self.dictionary.complete(context.prefix, k)]


def mix_frequencies(corpus: Mapping[str, float], modern: Mapping[str, float],
                    corpus_share: float = 0.5) -> dict[str, float]:
    """Each word's share of ``corpus`` (counts) and of ``modern`` (a frequency list), mixed:
    ``corpus_share`` x the one + the rest x the other. A word either source knows is ranked
    by how common it is in both (the model's corpora are old books; the list, today's text)."""
    # The list is lower-case: a word the corpus knows keeps the corpus's capitals ("Monday").
    written: dict[str, tuple[float, str]] = {}
    for word, frequency in corpus.items():
        key = normalize_word(word)
        if frequency > written.get(key, (0.0, ""))[0]:
            written[key] = (frequency, word)
    mixed: dict[str, float] = {}
    for words, share in ((corpus, corpus_share), (modern, 1.0 - corpus_share)):
        total = float(sum(f for f in words.values() if f > 0))
        if total > 0:
            for word, frequency in words.items():
                if frequency > 0:
                    if words is modern:
                        word = written.get(normalize_word(word), (0.0, word))[1]
                    mixed[word] = mixed.get(word, 0.0) + share * frequency / total
    return mixed


def shared_dictionary(resources: Resources) -> Dictionary | None:
    """The loaded vocabulary mixed with the engine's word list (when it loaded one), made
    once for all the predictors built from ``resources`` (the typo corrector uses it too)."""
    if "dictionary" not in resources.extra:
        word_list = resources.extra.get("word_list")
        if resources.vocabulary and word_list:
            words = mix_frequencies(resources.vocabulary, word_list)
        else:
            words = resources.vocabulary or word_list
        resources.extra["dictionary"] = Dictionary(words) if words else None
    return resources.extra["dictionary"]


def system_word_list() -> Path | None:
    """The system's word list (``/usr/share/dict/words``) when there is one."""
    for candidate in SYSTEM_WORD_LISTS:
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def make_predictor(options: Mapping[str, Any], resources: Resources) -> DictionaryPredictor:
    """Factory for ``type = "dictionary"``.

    Word source, first found: ``path`` in the options; the loaded model's vocabulary, mixed
    with the engine's word list when it loaded one (``engine.word_list``); the word list;
    the system word list. Raises ``ValueError`` when there is none.
    """
    path = options.get("path")
    if path:
        dictionary = Dictionary.from_file(os.path.expanduser(str(path)))
    elif resources.vocabulary or resources.extra.get("word_list"):
        dictionary = shared_dictionary(resources)
    elif system_word_list() is not None:
        dictionary = Dictionary.from_file(system_word_list())
    else:
        raise ValueError("the dictionary predictor has no words: no model vocabulary, "
                         "no `path`, and no system word list")
    return DictionaryPredictor(dictionary, name=str(options.get("name", "dictionary")),
                               min_prefix=int(options.get("min_prefix", 1)))
