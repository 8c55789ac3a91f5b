"""The Predictor protocol: what a predictor is, what it proposes, and what its factory is given.

A predictor module imports only this (and the text it reads); the registry
(:mod:`predtext.engine.predictor`) finds the factories, the runner
(:mod:`predtext.engine.runner`) calls the predictors within the time budget.

Writing a predictor
-------------------
A predictor is any object with

``name: str``
    shown to the user as the suggestion's source;
``predict(context: Context, k: int) -> Sequence[Candidate]``
    up to ``k`` candidate words or phrases for the cursor position, each with a probability in
    [0, 1]. ``context.prefix`` is the typed part of the current word: a candidate completes it
    (or, like an abbreviation, replaces it). ``context.text`` is the text before the cursor
    (a bounded tail window; a predictor that keeps incremental state, such as a recurrent
    network, keys it on this text); ``context.words`` are the previous words.

and, optionally,

``learn(text: str) -> None``
    what the user actually wrote (a finished line), for online learning;
``accept(suggestion: Suggestion, context: Context) -> None``
    the user took ``suggestion`` in ``context``.

Predictors are made by factories: ``factory(options: dict, resources: Resources) -> Predictor``,
where ``options`` is the predictor's table from the TOML config and ``resources`` what the engine
has loaded (the n-gram model, the vocabulary). Register a factory in-process with
:func:`register_predictor`, or from an installed package through the ``predtext.predictors``
entry-point group::

    [project.entry-points."predtext.predictors"]
    mypredictor = "mypackage.predict:make_predictor"

A predictor that raises, or does not answer within the engine's per-keystroke budget, is skipped
for that keystroke and reported once in the log; the other predictors' suggestions still come.
Predictors run on their own threads, so even one that hangs cannot stall typing; a predictor
whose work is bounded and quick may set the class attribute ``inline = True`` to predict in the
caller's thread instead (saving a thread hand-off per keystroke), and an optional ``prepare()``
is called once in the background when the engine starts (to load data without blocking).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    Any,
    NamedTuple,
    Protocol,
    runtime_checkable,
)

from predtext.engine.context import Context


class Candidate(NamedTuple):
    """One proposal of a predictor: a word or phrase and its probability in [0, 1]."""

    text: str
    probability: float


@runtime_checkable
class Predictor(Protocol):
    """What the engine needs of a predictor (``learn`` and ``accept`` are optional extras)."""

    name: str

    def predict(self, context: Context, k: int) -> Sequence[Candidate]:
        ...


@dataclass
class Resources:
    """What the engine hands to predictor factories: the corpus model and where user data lives."""

    ngram: Any = None                  # predtext.lm.ngram.NGramModel, when a model is loaded
    vocabulary: Mapping[str, float] | None = None   # word -> frequency (model vocabulary)
    extra: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[Mapping[str, Any], Resources], Predictor]


def fraction_options(options: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    """The options among ``names`` that are set, each checked to be a number in [0, 1]."""
    settings = {}
    for option in names:
        if option in options:
            value = options[option]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 <= value <= 1):
                raise ValueError(f"{option} must be a number in [0, 1], got {value!r}")
            settings[option] = float(value)
    return settings
