"""User history predictor: learns what the user writes, and favours what they wrote recently.

Two signals, mixed: a Kneser-Ney n-gram over everything the user has written (their phrases),
and a recency cache over their last few hundred words (names and topics of the moment, which
come back within a page). What the user writes is kept in ``history.txt`` under the user data
directory (see :func:`predtext.engine.config.user_data_dir`), readable by the user alone (mode
0600), so learning survives restarts. ``enabled = false`` stops both learning and storing;
:meth:`HistoryPredictor.forget` (``predtext forget``) erases it all.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from predtext.engine.config import user_data_dir
from predtext.engine.context import MARKERS, Context, normalize_word, tokenize
from predtext.engine.ngram import (
    PHRASE_THRESHOLD,
    PHRASE_WORDS,
    checked_phrase_options,
    with_phrases,
)
from predtext.engine.protocol import Candidate, Resources
from predtext.lm.ngram import MAX_ORDER, NGramModel

HISTORY_FILE = "history.txt"
DEFAULT_MAX_BYTES = 4_000_000
# Words of recent text at which the recency cache, standing alone (no n-gram of the user's
# matches), gets half the mass: a fresh user's first words say little about the next one.
RECENCY_PRIOR = 20.0


class HistoryStore:
    """The user's written text on disk: append-only, owner-only, trimmed to its newest part."""

    def __init__(self, path, max_bytes: int = DEFAULT_MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes

    def read(self) -> str:
        """The stored text ('' when there is none). Only the newest ``max_bytes`` are kept."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - self.max_bytes))
                data = handle.read()
        except FileNotFoundError:
            return ""
        text = data.decode("utf-8", errors="replace")
        if size > self.max_bytes:
            text = text[text.find("\n") + 1:]      # drop the line the cut went through
            self._write(text)
        return text

    def append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)      # a file made by hand, or by an older version, gets fixed
            os.write(fd, (text.rstrip("\n") + "\n").encode("utf-8", errors="replace"))
        finally:
            os.close(fd)

    def _write(self, text: str) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode("utf-8", errors="replace"))
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def erase(self) -> None:
        for path in (self.path, self.path.with_name(self.path.name + ".tmp")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def forget_history(data_dir=None) -> None:
    """Erase the stored typing history (what ``predtext forget`` does)."""
    HistoryStore(Path(data_dir or user_data_dir()) / HISTORY_FILE).erase()


class HistoryPredictor:
    """Predicts from the user's own writing: their n-gram, mixed with a recency cache.

    ``store=None`` keeps the history in memory only. ``enabled = False`` switches the predictor
    off (no suggestions, nothing learned or stored); ``learning = False`` keeps suggesting from
    the stored history without adding to it. ``recency`` is the recency cache's share
    of the mix, ``window`` how many recent words it holds and ``decay`` how fast they fade.
    ``phrase_words`` and ``phrase_threshold``: the user's own phrases, as for the n-gram
    predictor (``phrase_words = 1``: single words only).
    """

    inline = True     # bounded work: run in the caller's thread (see PredictorRunner)

    def __init__(self, store: HistoryStore | None = None, name: str = "history",
                 enabled: bool = True, learning: bool = True, order: int = 3, recency: float = 0.3,
                 window: int = 500, decay: float = 0.995,
                 phrase_threshold: float = PHRASE_THRESHOLD, phrase_words: int = PHRASE_WORDS):
        if not 0.0 <= recency <= 1.0:
            raise ValueError(f"recency must be in [0, 1], got {recency!r}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay!r}")
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive number of words, got {window!r}")
        self.phrase_threshold, self.phrase_words = checked_phrase_options(phrase_threshold,
                                                                          phrase_words)
        self.name = name
        self.enabled = enabled
        self.learning = learning
        self.store = store
        self.recency = recency
        self.decay = decay
        self._order = order
        self._recent = collections.deque(maxlen=window)
        self._recency: tuple | None = None     # the recent words' weights, sorted by word
        self._model: NGramModel | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Read the stored history (the engine calls this in the background at start)."""
        self._ensure_model()

    def _ensure_model(self, blocking: bool = True) -> NGramModel | None:
        """The history model, read from the store on first use.

        With ``blocking=False`` it answers None while the store is still being read (in the
        background), so a keystroke never waits for the history to load.
        """
        model = self._model
        if model is not None:
            # Loaded once for good: an engine made over these predictors (the language
            # server's per-document one) calls prepare() again, which must not hide it.
            return model
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            if self._model is None:
                text = self.store.read() if (self.store is not None and self.enabled) else ""
                self._model = NGramModel.from_text(text, order=self._order)
                self._remember(text[-20_000:])
            return self._model
        finally:
            self._lock.release()

    def _remember(self, text: str) -> None:
        self._recent.extend(normalize_word(w) for w in tokenize(text) if w not in MARKERS)
        self._recency = None

    def _recency_table(self) -> tuple:
        """``(words, weights, written, total)``: each recent word (sorted) with its decayed
        count, the newest occurrence weighing 1, and its usual written form; and the sum of
        the weights.

        Rebuilt only after learning, so a keystroke looks up its prefix by bisection instead
        of walking the whole window.
        """
        if self._recency is None:
            weights: dict = {}
            weight = 1.0
            for word in reversed(self._recent):
                weights[word] = weights.get(word, 0.0) + weight
                weight *= self.decay
            words = sorted(weights)
            self._recency = (words, [weights[w] for w in words],
                             [self._written_form(w) for w in words], sum(weights.values()))
        return self._recency

    def _written_form(self, word: str) -> str:
        """How the user usually writes ``word`` (as their n-gram counted it)."""
        return self._model.written_form(word) if self._model is not None else word

    def predict(self, context: Context, k: int) -> list[Candidate]:
        if not self.enabled:
            return []
        model = self._ensure_model(blocking=False)
        if model is None:
            return []
        if not context.prefix and model.order > 1 and not model.knows_context(context.words):
            # The user's n-gram has never seen this word followed by anything: its guess is
            # just their most frequent words, which a fresh user's one line would push to the
            # top everywhere ("please buy bananas" after "She opened the").
            return []
        from_model = model.predict(context.words, context.prefix, max(k, 10))
        # The cache knows which words are recent, not which fit here: it completes a typed
        # prefix, and before the first letter only the n-gram speaks ("about the " -> you).
        from_recent, evidence = self._recent_words(context) if context.prefix else ({}, 0.0)
        # Both are distributions over the words matching the prefix; mix them, or take the
        # cache alone when the n-gram has nothing to say, trusted as far as it holds enough
        # words (a fresh user's first few words say little about the next one).
        share = self.recency if from_model else evidence / (evidence + RECENCY_PRIOR)
        mixed = {}
        for word, p in from_model:
            mixed[normalize_word(word)] = [word, (1.0 - share) * p]
        for key, (written, p) in from_recent.items():
            entry = mixed.setdefault(key, [written, 0.0])
            entry[1] += share * p
        ranked = sorted(mixed.values(), key=lambda entry: -entry[1])[:k]
        # The user's own phrases ("see you soon"), as the n-gram predictor offers the corpus's.
        return with_phrases(model, context.words, [(word, p) for word, p in ranked if p > 0], k,
                            self.phrase_threshold, self.phrase_words)

    def _recent_words(self, context: Context) -> tuple:
        """Recency distribution over recent words that start with the prefix,
        ``{word: (written form, probability)}``, and the window's weight in words.

        The window is what was learned followed by the words before the cursor; each
        occurrence weighs ``decay`` to the power of how many words came after it. The word
        just before the cursor is left out: a word rarely follows itself.
        """
        prefix = normalize_word(context.prefix)
        words, weights, written, learned = self._recency_table()
        line = [normalize_word(w) for w in context.words if w not in MARKERS]
        found: dict = {}
        scale = self.decay ** len(line)       # the learned words are that much further back
        lo = bisect.bisect_left(words, prefix)
        hi = bisect.bisect_left(words, prefix + "\U0010ffff", lo)
        for i in range(lo, hi):
            if words[i] != prefix:
                found[words[i]] = [written[i], weights[i] * scale]
        evidence = learned * scale
        weight = self.decay
        for word in reversed(line[:-1]):
            evidence += weight
            if word.startswith(prefix) and word != prefix:
                if word not in found:
                    found[word] = [self._written_form(word), 0.0]
                found[word][1] += weight
            weight *= self.decay
        total = sum(p for _, p in found.values())
        if not total:
            return {}, evidence
        return {w: (form, p / total) for w, (form, p) in found.items()}, evidence

    def learn(self, text: str) -> None:
        if not (self.enabled and self.learning) or not text.strip():
            return
        model = self._ensure_model()
        if self.store is not None:
            self.store.append(text)
        model.learn(text)
        self._remember(text)

    def forget(self) -> None:
        """Erase the stored history and everything learned from it."""
        with self._lock:
            if self.store is not None:
                self.store.erase()
            self._model = None
            self._recent.clear()
            self._recency = None


def make_predictor(options: Mapping[str, Any], resources: Resources) -> HistoryPredictor:
    """Factory for ``type = "history"``.

    Options: ``persist = false`` keeps the history in memory only; ``learn = false`` stops
    adding to it; ``data_dir``, ``max_bytes``, ``order``, ``recency``, ``window``, ``decay``,
    ``phrase_words``, ``phrase_threshold``.
    """
    store = None
    if options.get("persist", True):
        directory = Path(os.path.expanduser(str(options.get("data_dir") or user_data_dir())))
        store = HistoryStore(directory / HISTORY_FILE, options.get("max_bytes", DEFAULT_MAX_BYTES))
    return HistoryPredictor(store, name=str(options.get("name", "history")),
                            learning=bool(options.get("learn", True)),
                            order=options.get("order", 3),
                            recency=float(options.get("recency", 0.3)),
                            window=options.get("window", 500),
                            decay=float(options.get("decay", 0.995)),
                            phrase_threshold=options.get("phrase_threshold", PHRASE_THRESHOLD),
                            phrase_words=options.get("phrase_words", PHRASE_WORDS))
