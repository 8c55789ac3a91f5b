"""The n-gram predictor: next words and completions from a word n-gram model
(:class:`~predtext.lm.ngram.NGramModel`), and short phrases where the words after one are likely.

The model's names are re-exported here for the code that imported them from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from predtext.engine.context import Context
from predtext.engine.protocol import Candidate, Resources
from predtext.lm.ngram import DEFAULT_DISCOUNTS, FORMAT, FORMAT_VERSION, MAX_ORDER, NGramModel  # noqa: F401

# A phrase is offered when each word after the first has at least this probability given the
# words before it, and holds at most this many words.
PHRASE_THRESHOLD = 0.5
PHRASE_WORDS = 3
# Only the likeliest two words are tried as the start of a phrase (each try is a lookup), and
# only when at least this likely: a phrase must be likely as a whole to be worth a slot.
_PHRASE_STARTS = 2
_PHRASE_MIN_START = 0.1


def checked_phrase_options(threshold, words) -> tuple[float, int]:
    """``phrase_threshold`` and ``phrase_words`` as given to a predictor, or ValueError."""
    if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
            or not 0 < threshold <= 1):
        raise ValueError(f"phrase_threshold must be a number in (0, 1], got {threshold!r}")
    if isinstance(words, bool) or not isinstance(words, int) or words < 1:
        raise ValueError(f"phrase_words must be an int >= 1, got {words!r}")
    return float(threshold), words


def with_phrases(model: NGramModel, previous: Sequence[str], words: Sequence[tuple[str, float]],
                 k: int, threshold: float = PHRASE_THRESHOLD,
                 max_words: int = PHRASE_WORDS) -> list[Candidate]:
    """``words`` (word, P) as candidates, plus "word next..." where what follows is likely.

    A phrase's probability is the word's times those of the words added; the ``k`` likeliest
    candidates of both kinds are returned.
    """
    candidates = [Candidate(w, p) for w, p in words]
    if max_words > 1:
        for word, p in words[:_PHRASE_STARTS]:
            if p < _PHRASE_MIN_START:
                break
            rest, p_rest = model.phrase(previous, word, threshold, max_words)
            if rest:
                candidates.append(Candidate(" ".join([word] + rest), p * p_rest))
        candidates.sort(key=lambda c: -c.probability)
    return candidates[:k]


class NGramPredictor:
    """Predictor over an :class:`NGramModel`: next words and completions of the typed word,
    and a short phrase where the words after one are likely (``phrase_words`` = 1: never).

    ``learn=True`` lets it add what the user writes to the counts (in memory only), in a
    :meth:`~NGramModel.fork` of ``model``: other engines over the same model never see it,
    and :meth:`forget` goes back to ``model``'s counts.
    """

    inline = True     # bounded work: run in the caller's thread (see PredictorRunner)

    def __init__(self, model: NGramModel, name: str = "ngram", learn: bool = True,
                 phrase_threshold: float = PHRASE_THRESHOLD, phrase_words: int = PHRASE_WORDS):
        self.name = name
        self._corpus = model
        self.model = model.fork() if learn else model
        self._learns = learn
        self.phrase_threshold, self.phrase_words = checked_phrase_options(phrase_threshold,
                                                                          phrase_words)

    def predict(self, context: Context, k: int) -> list[Candidate]:
        words = self.model.predict(context.words, context.prefix, k)
        return with_phrases(self.model, context.words, words, k,
                            self.phrase_threshold, self.phrase_words)

    def learn(self, text: str) -> None:
        if self._learns:
            self.model.learn(text)

    def forget(self) -> None:
        if self._learns:
            self.model = self._corpus.fork()


def make_predictor(options: Mapping[str, Any], resources: Resources) -> NGramPredictor:
    """Factory for ``type = "ngram"``: the model from ``resources``, or ``path`` to an n-gram
    file."""
    path = options.get("path")
    model = NGramModel.load(path) if path else resources.ngram
    if model is None:
        raise ValueError("the ngram predictor needs a model: load one, or give it a `path`")
    return NGramPredictor(model, name=str(options.get("name", "ngram")),
                          learn=bool(options.get("learn", True)),
                          phrase_threshold=options.get("phrase_threshold", PHRASE_THRESHOLD),
                          phrase_words=options.get("phrase_words", PHRASE_WORDS))
