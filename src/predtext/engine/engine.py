"""The Engine: runs the predictors for each keystroke, combines them, and shapes the suggestions."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from predtext.engine.combiner import combine
from predtext.engine.config import EngineConfig, is_weight, load_config
from predtext.engine.context import (
    DEFAULT_WINDOW_CHARS,
    MARKERS,
    Context,
    apply_case,
    clean,
    forget_recent_text,
    last_apostrophe,
    next_word_can_start,
    normalize_word,
    parse_context,
    with_apostrophe,
)
from predtext.engine.mixture import AdaptiveWeights
from predtext.engine.predictor import create_predictor
from predtext.engine.protocol import Predictor, Resources
from predtext.engine.runner import PredictorRunner
from predtext.engine.suggestion import MAX_K, Suggestion, checked_k  # noqa: F401 (MAX_K: API)

log = logging.getLogger("predtext.engine")

# Predictors are asked for a few more than k, since the engine drops some (the typed word
# itself, words already passed over); this caps that request.
_MAX_REQUEST = 128
_LEARN_WAIT_S = 5.0
# A suggestion this many times less likely than the best one is noise ("don'e" beside "don't"):
# an empty slot is better. (Measured: no keystroke lost at 1e-3; 1e-2 loses 0.6 points.)
_NOISE_RATIO = 1e-3
# How many of the best suggestions stay offered although passed over for the word being
# typed: a person who types on without looking must still find the word typed toward,
# which a fresh engine would rank first; the passed-over rule only frees the slots below.
_KEEP_BEST = 1


class Engine:
    """Predictive text: ``suggest`` for the text before the cursor, ``learn`` from what was written.

    ``predictors`` are :class:`~predtext.engine.protocol.Predictor` objects, or
    ``(predictor, weight)`` pairs; ``config`` an :class:`EngineConfig`, a dict or the path of a
    TOML file, for the combination policy, time budget and repeat suggestions (the predictors
    are the ones given). Most programs use :meth:`Engine.load` instead.

    Safe to call from several threads: calls are serialised by a lock, and each predictor runs
    on its own lane within the per-keystroke time budget (see
    :class:`~predtext.engine.runner.PredictorRunner`).
    """

    def __init__(self, predictors: Sequence[Predictor | tuple[Predictor, float]],
                 config: EngineConfig | Mapping | str | os.PathLike | None = None):
        # The predictors are the ones given: a config's tables only weigh them by name.
        self.config = EngineConfig() if config is None else _as_config(config, over_defaults=False)
        #: The language model and n-gram model the engine was loaded with (None when not).
        self.language_model = None
        self.ngram = None
        self._weights = {}
        chosen = []
        for item in predictors:
            predictor, weight = item if isinstance(item, tuple) else (item, None)
            if not isinstance(predictor, Predictor):
                raise TypeError("predictors must have a name and predict(), "
                                f"got {type(predictor).__name__}")
            if weight is None:
                weight = next((p.weight for p in self.config.predictors
                               if p.name == predictor.name), 1.0)
            if not is_weight(weight):
                raise ValueError(f"the weight of predictor {predictor.name!r} must be a finite "
                                 f"number >= 0, got {weight!r}")
            chosen.append(predictor)
            self._weights[id(predictor)] = float(weight)
        names = {p.name for p in chosen}
        # The predictors whose weight follows the user's text (see predtext.engine.mixture).
        self._adaptive = AdaptiveWeights(spec.name for spec in self.config.predictors
                                         if spec.adapt and spec.name in names)
        budget = self.config.time_budget_ms
        self._runner = PredictorRunner(chosen, None if budget is None else budget / 1000.0)
        self._lock = threading.RLock()
        # The word being typed: where it starts, what was typed, what was offered for it.
        self._word_anchor = None
        self._typed = ""
        self._offered: set = set()          # offered at the typed prefix
        self._offered_before: set = set()   # offered at shorter prefixes of the same word
        self._last: tuple[Any, list[Suggestion]] | None = None
        # Suggestions are written with the apostrophe the user typed last (a user whose
        # keyboard makes curly ones is offered "don\u2019t"), remembered past the read window.
        self._apostrophe = "'"
        self._prepared = self._runner.call("prepare")

    # ------------------------------------------------------------------ building

    @classmethod
    def load(cls, model=None, config=None, data_dir=None) -> Engine:
        """The engine the config describes, over ``model``.

        ``model`` is one of:

        * the path of a model file made by ``predtext train``: the full engine for its corpus
          (the neural predictor on the network; the n-gram and the dictionary on the word
          n-gram counts and vocabulary stored beside it; history and abbreviations);
        * the path of an n-gram file (``predtext ngram build``), or an
          :class:`~predtext.lm.ngram.NGramModel`: everything but the neural predictor;
        * a :class:`~predtext.lm.model.LanguageModel` object;
        * ``None``: the model named by the config's ``engine.model``, else the packaged default
          model when it is installed, else no corpus model (dictionary, history and
          abbreviations only).

        ``config`` is an :class:`EngineConfig`, a path to a TOML file, a dict, or ``None`` for
        the user's config file (or the defaults).

        ``data_dir``: where the history predictors keep what the user wrote (an embedding
        application's own place), instead of the user data directory
        (:func:`~predtext.engine.config.user_data_dir`); a predictor's own ``data_dir``
        option, or ``persist = false``, still wins.

        A predictor that cannot be built (unknown type, broken plugin, missing data) is skipped
        with a warning in the log; a bad config file raises ``ConfigError`` naming it, and a
        missing or unreadable model file ``ModelFileError`` naming it.
        """
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
        config = _as_config(config)
        language_model, ngram = load_models(model if model is not None else default_model(config))
        if ngram is None and language_model is not None:
            ngram = getattr(language_model, "ngram", None)
        extra = {"language_model": language_model}
        if config.word_list:
            from predtext.engine.wordlist import english_words

            extra["word_list"] = english_words()
        resources = Resources(ngram=ngram, vocabulary=_vocabulary(ngram, language_model),
                              extra=extra)
        predictors, stores = [], {}
        for spec in config.predictors:
            if not spec.enabled:
                continue
            if spec.type == "neural" and language_model is None and not spec.options.get("path"):
                log.info("predictor %r: no language model loaded, left out", spec.name)
                continue
            if spec.type == "ngram" and ngram is None and not spec.options.get("path"):
                log.info("predictor %r: no n-gram model loaded, left out", spec.name)
                continue
            options = spec.options
            if data_dir is not None and spec.type == "history" and not options.get("data_dir"):
                options = {**options, "data_dir": str(data_dir)}
            try:
                predictor = create_predictor(spec.type, options, resources)
            except Exception as exc:     # one bad predictor must not take the engine down
                log.warning("predictor %r (type %r) skipped: %s", spec.name, spec.type, exc)
                continue
            store = getattr(getattr(predictor, "store", None), "path", None)
            if store is not None and store in stores:
                # Two history predictors on one file would store every line twice.
                log.warning("predictor %r skipped: it keeps its history in %s, as %r does "
                            "(turn one off with enabled = false)", spec.name, store, stores[store])
                continue
            if store is not None:
                stores[store] = spec.name
            predictors.append((predictor, spec.weight))
        engine = cls(predictors, config)
        engine.language_model = language_model
        engine.ngram = ngram
        return engine

    @property
    def predictors(self) -> list[Predictor]:
        return list(self._runner.predictors)

    def weight(self, predictor: Predictor) -> float:
        return self._weights[id(predictor)]

    # ------------------------------------------------------------------ suggesting

    def suggest(self, text_before_cursor: str, k: int = 6) -> list[Suggestion]:
        """Up to ``k`` suggestions for the cursor position, best first.

        Completions of the word being typed (``replace`` = its typed length), or next words at a
        word boundary (``replace`` = 0), or corrections of a typo (``replace`` = its typed
        length too). The typed word itself is never offered, nor, unless
        ``repeat_suggestions`` is set, what was already offered and passed over for this word
        -- except the best suggestion, which stays first: the list always holds what a fresh
        engine would put first for the same text.
        Suggestions follow the user's case and apostrophes (straight or curly). Right after
        anything but a space or an opening mark ("well,", 'said "yes"') there are none: the
        next word comes after a space.
        """
        k = checked_k(k, cap=True)
        context = parse_context(text_before_cursor, DEFAULT_WINDOW_CHARS)
        if not context.prefix and not next_word_can_start(context.text):
            return []        # right after "well," a next word would be glued to the comma
        with self._lock:
            key = (context.offset, context.text, k)
            if self._last is not None and self._last[0] == key:
                return list(self._last[1])     # the same question twice (a UI refresh)
            excluded = self._passed_over(context)
            request = min(k + len(excluded) + 1, _MAX_REQUEST)
            answers = self._runner.predict(context, request)
            self._adaptive.settle(context)
            proposals = [(p.name, self._weights[id(p)] * self._adaptive.factor(p.name), c)
                         for p, c in answers]
            self._adaptive.remember(context, proposals)
            ranked = combine(proposals, self.config.combination)
            self._apostrophe = last_apostrophe(context.text) or self._apostrophe
            suggestions = self._shape(ranked, context, excluded, k, self._apostrophe,
                                      _KEEP_BEST)
            self._offered.update(normalize_word(s.text) for s in suggestions)
            self._last = (key, suggestions)
            return list(suggestions)

    def _passed_over(self, context: Context) -> set:
        """What the user saw for this word and typed on past: to leave out now.

        The word is known by where it starts and the text before it; what was offered at
        the typed prefix itself is not passed over yet (a second look, with another k, may
        show it again). Resets when a new word starts or the user backspaces.
        """
        # (Not the whole window before the word: its start moves as the text grows.)
        anchor = (context.offset + len(context.text) - len(context.prefix),
                  context.text_before_word[-256:])
        typed = normalize_word(context.prefix)
        if anchor != self._word_anchor or not typed.startswith(self._typed):
            self._offered_before, self._offered = set(), set()
        elif typed != self._typed:
            self._offered_before |= self._offered
            self._offered = set()
        self._word_anchor, self._typed = anchor, typed
        return set() if self.config.repeat_suggestions else set(self._offered_before)

    @staticmethod
    def _shape(ranked: list[Suggestion], context: Context, excluded: set, k: int,
               apostrophe: str, keep_best: int = 0) -> list[Suggestion]:
        """The first ``k`` of ``ranked`` worth offering; the first ``keep_best`` are offered
        even when passed over (``excluded``): what a fresh engine would put first stays."""
        typed = normalize_word(context.prefix)
        shaped, seen = [], set()
        for suggestion in ranked:
            text = clean(suggestion.text).strip()
            key = normalize_word(text)
            if not text or key == typed or key in MARKERS or key in seen:
                continue
            # (A correction of a typo is no completion the user typed past: it stays.)
            if key in excluded and len(shaped) >= keep_best and key.startswith(typed):
                continue
            if shaped and suggestion.score < shaped[0].score * _NOISE_RATIO:
                break          # ranked best first: the rest are noise too
            seen.add(key)
            text = apply_case(with_apostrophe(text, apostrophe), context.prefix,
                              context.sentence_start, context.shouting)
            shaped.append(Suggestion(text, len(context.prefix), suggestion.score,
                                     suggestion.source))
            if len(shaped) == k:
                break
        return shaped

    # ------------------------------------------------------------------ learning

    def learn(self, text: str) -> None:
        """Learn from ``text`` the user wrote (e.g. a line, on Enter), if learning is on.

        Returns once the predictors have learned it (or after a few seconds, if one is slow:
        it then finishes in the background, before that predictor's next prediction).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not self.config.learn or not text.strip():
            return
        self._after(self._runner.call("learn", clean(text)))

    def accept(self, suggestion: Suggestion, text_before_cursor: str = "") -> None:
        """Tell the predictors the user took ``suggestion`` at ``text_before_cursor``."""
        if not isinstance(suggestion, Suggestion):
            raise TypeError(f"suggestion must be a Suggestion, got {type(suggestion).__name__}")
        context = parse_context(text_before_cursor)
        with self._lock:
            self._word_anchor, self._offered, self._offered_before = None, set(), set()
        # The user is typing on: wait only as long as a keystroke may take (a built-in
        # predictor is done by then; a slow plugin takes it in before its next prediction).
        self._after(self._runner.call("accept", suggestion, context), self._runner.budget_s)

    def forget(self) -> None:
        """Erase what the predictors learned about the user (their stored history included)."""
        with self._lock:
            self._word_anchor, self._offered, self._offered_before = None, set(), set()
            self._apostrophe = "'"
            self._adaptive.reset()
            forget_recent_text()
        self._after(self._runner.call("forget"))

    def _after(self, calls, wait_s: float | None = _LEARN_WAIT_S) -> None:
        """Wait (without holding up other threads' suggestions) for the predictors to take in
        a change, then drop the answer kept from before it."""
        self._runner.wait(calls, wait_s)
        with self._lock:
            self._last = None

    def wait_prepared(self, timeout_s: float | None = None) -> None:
        """Wait until every predictor has read its data (the user's history): a new engine
        does that in the background and answers meanwhile without it. For callers that want
        the whole engine from the first request (the language server before it says it is
        ready; a comparison of two engines)."""
        self._runner.wait(self._prepared, timeout_s)

    def close(self) -> None:
        """Stop the predictor lanes (the engine is unusable afterwards)."""
        self._runner.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_config(config, over_defaults: bool = True) -> EngineConfig:
    if config is None:
        return load_config()
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, over_defaults)
    if isinstance(config, Mapping):
        return EngineConfig.from_dict(config, over_defaults=over_defaults)
    if isinstance(config, EngineConfig):
        return config
    raise TypeError(f"config must be an EngineConfig, a path, a dict or None, "
                    f"got {type(config).__name__}")


def default_model(config: EngineConfig | None = None) -> Path | None:
    """The model file ``Engine.load(model=None)`` uses: the config's ``engine.model``, else the
    packaged default model when it is installed, else None."""
    if config is not None and config.model:
        return Path(os.path.expanduser(config.model))
    from predtext.lm.model import default_model_path

    path = default_model_path()
    return path if path.is_file() else None


def load_models(model) -> tuple[Any, Any]:
    """``(language_model, ngram_model)`` from what ``Engine.load`` was given (either may be None).

    A path is read as a language-model file when it is one (its embedded n-gram comes with
    it), else as an n-gram file; a file that is neither raises ``ModelFileError`` naming it.
    """
    from predtext.lm.ngram import NGramModel

    if model is None:
        return None, None
    if isinstance(model, NGramModel):
        return None, model
    if isinstance(model, (str, os.PathLike)):
        from predtext.errors import ModelFileError
        from predtext.lm.modelfile import read_meta

        try:
            document = read_meta(model)
        except ModelFileError as error:
            if error.problem.startswith("not a predtext model file"):
                return None, NGramModel.load(model)      # an n-gram file has its own metadata
            raise
        if document.get("meta", {}).get("model_format") is None:
            raise ModelFileError(model, "holds no language model")
        from predtext.lm.model import LanguageModel

        language_model = LanguageModel.load(model)
        return language_model, language_model.ngram
    if callable(getattr(model, "step", None)) and getattr(model, "tokenizer", None) is not None:
        return model, getattr(model, "ngram", None)
    raise TypeError(f"model must be a model file path, a LanguageModel, an NGramModel or None, "
                    f"got {type(model).__name__}")


def _vocabulary(ngram, language_model) -> Mapping[str, float] | None:
    """Words for the dictionary: the n-gram's counted words, else a word model's vocabulary."""
    if ngram is not None:
        return ngram.word_frequencies()
    tokenizer = getattr(language_model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "kind", "") == "word":
        from predtext.text import iter_words

        # The tokens that running text reads as one whole word (a tokenizer's "x_1" is two).
        return {token: 1.0 for token in tokenizer.id_to_token[1:]
                if list(iter_words(token)) == [(0, len(token))]}
    return None
