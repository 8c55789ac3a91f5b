"""Neural language-model predictor: what a recurrent network expects the user to write next.

Two kinds of model, one predictor:

character level
    The network reads the text before the cursor one character at a time. A beam search over
    characters then completes the word being typed (each hypothesis stops at a space or
    punctuation) or, at a word boundary, spells out the likeliest next words. A candidate's
    probability is the product of its characters' probabilities, the stop character included.
word level
    The network reads the finished tokens; its next-token distribution, restricted to the
    words that start with the typed prefix, is the answer.

Why it is fast enough for every keystroke
-----------------------------------------
:class:`TextReader` keeps the recurrent state of the text typed so far. A keystroke that
extends the text costs one batched cell step; a backspace or an edit rewinds to a saved
checkpoint and steps forward from there; only a jump elsewhere reads the text again, and
then only a bounded tail of it (see :class:`TextReader` for how that tail is chosen so that
the state is a function of the text alone, whatever way it was typed).

:class:`CompletionSearch` memoises the nodes of its search tree (the state after each
explored continuation). The search for the next keystroke starts one character further down
the same tree, so most of the nodes it needs were computed for the previous keystroke; the
rest are stepped together, the whole beam in one ``step`` call per character position,
into buffers allocated once.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predtext.backend.threads import ThreadCountChoice, thread_limit
from predtext.engine.context import (
    MARKERS,
    Context,
    is_word_character,
    normalize_word,
    with_apostrophe,
)
from predtext.engine.protocol import Candidate, Resources, fraction_options
from predtext.lm.generate import beam_steps
from predtext.text import APOSTROPHES, JOINERS


class ModelAdapter:
    """What the predictor needs of a language model, in one place.

    Wraps a :class:`predtext.lm.model.LanguageModel` (anything with ``tokenizer``,
    ``initial_state(batch)``, ``step(ids, state) -> (log_probs, state)`` and ``start_id``)
    and counts the cell steps it performs: ``steps`` (calls, each one cell step per layer for
    the whole batch) and ``step_rows`` (rows stepped), and the seconds they took
    (``step_seconds``). Tests use the counts to check that a keystroke costs a bounded amount
    of work; the predictor uses the time to choose its thread count.
    """

    def __init__(self, model):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("the language model has no tokenizer, so it cannot read text")
        for method in ("initial_state", "step"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"the language model has no {method}()")
        self.model = model
        self.tokenizer = tokenizer
        self.level = getattr(tokenizer, "kind", "char")
        if self.level not in ("char", "word"):
            raise ValueError(f"unsupported tokenizer kind {self.level!r} (expected char or word)")
        self.vocab_size = int(tokenizer.vocab_size)
        self.start_id = int(getattr(model, "start_id", 0))
        self.tokens: list[str] = list(tokenizer.id_to_token)
        self.token_ids: dict[str, int] = dict(tokenizer.token_to_id)
        # The apostrophe of the model's text when it knows only one ("don't" in Shakespeare):
        # text typed with the other is read with this one, which the model understands.
        styles = {a for a in APOSTROPHES if any(a in token for token in self.tokens)}
        self.apostrophe: str | None = styles.pop() if len(styles) == 1 else None
        self.steps = 0
        self.step_rows = 0
        self.step_seconds = 0.0

    def initial_state(self, batch: int):
        return self.model.initial_state(batch)

    def step(self, ids: np.ndarray, state) -> np.ndarray:
        """One cell step of every row of ``state`` (in place); the (B, V) log-probabilities."""
        self.steps += 1
        self.step_rows += len(ids)
        began = time.perf_counter()
        log_probs, _ = self.model.step(ids, state)
        ops = getattr(self.model, "ops", None)
        if ops is not None and ops.device != "cpu":   # the search runs on the host
            log_probs = ops.to_numpy(log_probs)
        self.step_seconds += time.perf_counter() - began
        return log_probs

    def read_as_trained(self, text: str) -> str:
        """``text`` with its apostrophes in the model's style (when the model knows one only)."""
        return with_apostrophe(text, self.apostrophe) if self.apostrophe else text

    def encode(self, text: str) -> list[int]:
        return np.asarray(self.tokenizer.encode(text)).tolist()


# ---------------------------------------------------------------------------- the text state


def _zero_rows(state, rows) -> None:
    state.h[:, rows] = 0
    if state.c is not None:
        state.c[:, rows] = 0


class TextReader:
    """The recurrent state after a token stream, kept up to date as the stream changes.

    Positions are absolute (the index of a token in the user's whole text), so a caller that
    only sees a tail window of the text still gets the same answers.

    Bounded context, chosen so that the state depends on the text alone: tokens are read
    from an *anchor*, a multiple of ``span``, between ``span`` and ``2 * span`` tokens back
    (or from the start of the text when it is shorter). Two rows are stepped together: the
    current anchor's, used for prediction, and the next anchor's, which takes over when the
    text has grown by ``span``. A fresh reader given the whole text does exactly that: it
    steps the same two rows over the same tokens. So typing a text one character at a time,
    jumping into the middle of it, or pasting it all give the same state.

    Each row starts by reading the model's start token (a newline for character models):
    texts begin after a line break.

    Costs of ``read(tokens, offset)``: one batched step per token appended; for an edit, a
    rewind to the nearest checkpoint (each of the last ``recent`` positions, and every
    ``checkpoint_every``-th one) and a step per token after it; at most ``2 * span + 1``
    steps whatever happened.

    ``generation`` changes whenever the state stops being a plain continuation of the
    previous one (a rewind, a fresh read, or the switch to a new anchor), which tells
    :class:`CompletionSearch` when its memo no longer applies.

    A keystroke the search already looked at costs no step of its own: ``read(..., follow=)``
    takes the predicting row's next state from the search's memo, and the second row, which
    only matters once it takes over, falls behind by that token. It catches up one token
    per batch of the next search (:meth:`lend_row_one`: a row more in a batch the search
    steps anyway), or by itself when it must be current (before it takes over, or when it
    falls ``recent`` tokens behind).
    """

    def __init__(self, lm: ModelAdapter, span: int = 128, checkpoint_every: int = 16,
                 recent: int = 8):
        if span < 1 or checkpoint_every < 1 or recent < 0:
            raise ValueError("span and checkpoint_every must be positive, recent >= 0")
        self.lm = lm
        self.span = int(span)
        self.checkpoint_every = int(checkpoint_every)
        self.recent = int(recent)
        self.generation = 0
        self._rows = lm.initial_state(2)     # row 0: current anchor; row 1: the next one
        self._ids = np.empty(2, dtype=np.int64)
        self._length = -1                    # tokens read (absolute); -1: nothing yet
        self._tokens: list[int] = []         # the tokens read, from absolute position _start
        self._start = 0
        self._checkpoints: dict[int, tuple] = {}
        self._behind: list[int] = []         # tokens row 1 has yet to read, oldest first
        self._single = None                  # a batch of one, for row 1 catching up alone

    def anchor(self, length: int) -> int:
        """Where the predicting row starts reading, for a text of ``length`` tokens."""
        return self.span * max(0, length // self.span - 1)

    @property
    def length(self) -> int:
        """Tokens read (the absolute position of the end), -1 before the first read."""
        return self._length

    @property
    def log_probs(self) -> np.ndarray:
        """(V,) log-probabilities of the next token after the text read."""
        return self._rows.log_probs[0]

    @property
    def state(self):
        """The batch-of-two state; row 0 is the one that predicts."""
        return self._rows

    def last_tokens(self, count: int) -> list[int]:
        """The last ``count`` tokens read (fewer near the anchor)."""
        return self._tokens[-count:] if count > 0 else []

    def clear(self) -> None:
        """Forget everything read (the next ``read`` starts afresh)."""
        self._length = -1
        self._tokens, self._checkpoints, self._behind = [], {}, []
        self.generation += 1

    # -- reading

    def read(self, tokens: Sequence[int], offset: int = 0, follow=None) -> np.ndarray:
        """Bring the state to the stream whose tokens from ``offset`` on are ``tokens``.

        ``tokens`` must reach back ``2 * span`` tokens before its end (or to the start of
        the stream): a fresh read needs that much. Returns ``log_probs``.

        ``follow(token)``, when given, is the predicting row's state after ``token`` read
        from its present state, ``(h, c, log_probs)``, when known without a step (else
        None); it is asked for the tokens that extend the text, in order, until it says None.
        """
        if isinstance(tokens, np.ndarray):
            tokens = tokens.tolist()
        length = offset + len(tokens)
        if self._length < 0:
            self._reset(tokens, offset, length)
            return self.log_probs
        same = self._common_length(tokens, offset)
        if same == self._length and length >= self._length:
            if length - self._length <= 2 * self.span + 1:
                self._extend(tokens[self._length - offset:], follow)
            else:
                self._reset(tokens, offset, length)
            return self.log_probs
        # The text changed before our end (a backspace, an edit): rewind, then step forward.
        usable = [p for p in self._checkpoints if p <= same]
        rewind = max(usable) if usable else -1
        if rewind >= 0 and length - rewind <= length - self.anchor(length) + 1:
            self._restore(rewind)
            self._extend(tokens[rewind - offset:])
        else:
            self._reset(tokens, offset, length)
        return self.log_probs

    def _common_length(self, tokens: list[int], offset: int) -> int:
        """The absolute length up to which ``tokens`` agrees with what was read."""
        begin = max(self._start, offset)
        end = min(self._length, offset + len(tokens))
        if begin >= end:
            return end
        old = self._tokens[begin - self._start:end - self._start]
        new = tokens[begin - offset:end - offset]
        if old == new:
            return end
        lo, hi = 0, len(old)          # old[:lo] == new[:lo] and old[:hi] != new[:hi]
        while hi - lo > 1:
            middle = (lo + hi) // 2
            if old[:middle] == new[:middle]:
                lo = middle
            else:
                hi = middle
        return begin + lo

    def _reset(self, tokens: list[int], offset: int, length: int) -> None:
        """Read the bounded tail afresh, stepping both rows as the incremental path would."""
        anchor = self.anchor(length)
        if anchor < offset:
            raise ValueError(f"tokens from position {offset} do not reach back to the anchor "
                             f"at {anchor}; pass more of the text")
        self.generation += 1
        rows = self._rows
        _zero_rows(rows, slice(None))
        self._length = self._start = anchor
        self._tokens, self._checkpoints, self._behind = [], {}, []
        self._ids[:] = self.lm.start_id
        rows.log_probs = self.lm.step(self._ids, rows)
        self._extend(tokens[anchor - offset:])

    def _extend(self, tokens: Sequence[int], follow=None) -> None:
        rows, ids, span, behind = self._rows, self._ids, self.span, self._behind
        for token in tokens:
            after = self._length + 1
            ids[0] = token
            if after % span == 0:
                # A new anchor begins: the second row becomes the predicting one (except at
                # the first anchor, where row 0 keeps reading from the start of the text),
                # and a fresh second row reads the start token.
                follow = None          # row 0 changes: the memo's path ends here
                if after // span >= 2:
                    self._catch_up()
                    rows.h[:, 0] = rows.h[:, 1]
                    if rows.c is not None:
                        rows.c[:, 0] = rows.c[:, 1]
                    self.generation += 1
                behind.clear()
                _zero_rows(rows, 1)
                ids[1] = self.lm.start_id
                rows.log_probs = self.lm.step(ids, rows)
            else:
                known = follow(token) if follow is not None else None
                if known is None:
                    follow = None
                    # Row 1 reads along (its anchor may not have begun yet), where it is.
                    behind.append(token)
                    ids[1] = behind.pop(0)
                    rows.log_probs = self.lm.step(ids, rows)
                else:
                    h, c, log_probs = known
                    rows.h[:, 0] = h
                    if rows.c is not None:
                        rows.c[:, 0] = c
                    rows.log_probs = rows.log_probs.copy()     # checkpoints hold the old one
                    rows.log_probs[0] = log_probs
                    behind.append(token)
                    if len(behind) > self.recent:
                        self._catch_up()
            self._length = after
            self._tokens.append(token)
            self._checkpoint()

    def lend_row_one(self):
        """``(token, h, c)``: the next token row 1 has to read and its state (views, ``c``
        None for cells without one), for a caller that steps it in a batch of its own and
        then calls :meth:`row_one_read`; None when row 1 is current."""
        if not self._behind:
            return None
        rows = self._rows
        return self._behind[0], rows.h[:, 1], None if rows.c is None else rows.c[:, 1]

    def row_one_read(self) -> None:
        """Row 1's state, written by the borrower, now includes its next token."""
        self._behind.pop(0)

    def _catch_up(self) -> None:
        """Step row 1 alone through the tokens it is behind."""
        if not self._behind:
            return
        rows = self._rows
        if self._single is None:
            self._single = self.lm.initial_state(1)
        single = self._single
        single.h[:, 0] = rows.h[:, 1]
        if rows.c is not None:
            single.c[:, 0] = rows.c[:, 1]
        for token in self._behind:
            self.lm.step(np.array([token], dtype=np.int64), single)
        rows.h[:, 1] = single.h[:, 0]
        if rows.c is not None:
            rows.c[:, 1] = single.c[:, 0]
        self._behind.clear()

    def _checkpoint(self) -> None:
        position, rows, checkpoints = self._length, self._rows, self._checkpoints
        checkpoints[position] = (rows.h.copy(), None if rows.c is None else rows.c.copy(),
                                 rows.log_probs.copy(), tuple(self._behind))
        # Keep the last few positions (backspaces) and a sparse trail (edits further back),
        # and nothing from before the predicting row's anchor.
        stale = position - self.recent - 1
        if stale in checkpoints and stale % self.checkpoint_every:
            del checkpoints[stale]
        floor = self.anchor(position)
        if floor > self._start:
            for old in [p for p in checkpoints if p < floor]:
                del checkpoints[old]
            del self._tokens[:floor - self._start]
            self._start = floor

    def _restore(self, position: int) -> None:
        h, c, log_probs, behind = self._checkpoints[position]
        self._behind = list(behind)
        rows = self._rows
        rows.h[...] = h
        if c is not None:
            rows.c[...] = c
        rows.log_probs = log_probs.copy()
        for later in [p for p in self._checkpoints if p > position]:
            del self._checkpoints[later]
        del self._tokens[position - self._start:]
        self._length = position
        self.generation += 1


# ---------------------------------------------------------------------------- the search


class _NodePool:
    """Preallocated recurrent states of search-tree nodes, and the batches they are stepped in.

    Node 0 is the root. ``log_probs[i]`` is the distribution of the token after node i.
    """

    def __init__(self, lm: ModelAdapter, capacity: int):
        template = lm.initial_state(1)
        layers, _, hidden = template.h.shape
        dtype = template.h.dtype
        self.capacity = capacity
        self.h = np.zeros((layers, capacity, hidden), dtype=dtype)
        self.c = None if template.c is None else np.zeros((layers, capacity, hidden), dtype=dtype)
        self.log_probs = np.zeros((capacity, lm.vocab_size), dtype=np.float64)
        self._lm = lm
        self._batches: dict[int, Any] = {}    # one working state per batch size, reused
        self.free: list[int] = []
        self.clear()

    def clear(self) -> None:
        self.free = list(range(self.capacity - 1, 0, -1))

    def free_all_but(self, used) -> None:
        """Every node but the root and ``used`` is free (lowest first out, as ``clear``)."""
        free = np.ones(self.capacity, dtype=bool)
        free[0] = False
        free[np.fromiter(used, dtype=np.intp)] = False
        self.free = np.flatnonzero(free)[::-1].tolist()

    def set_root(self, rows, row: int, log_probs: np.ndarray) -> None:
        self.h[:, 0] = rows.h[:, row]
        if self.c is not None:
            self.c[:, 0] = rows.c[:, row]
        self.log_probs[0] = log_probs

    def expand(self, parents: list[int], tokens: list[int], reader=None) -> list[int]:
        """Step each parent node by its token, all in one call; the new nodes' indices.

        ``reader``: a :class:`TextReader` whose second row is behind rides along as one
        more row of the batch (a row costs far less than a step call).
        """
        size = len(parents)
        lent = reader.lend_row_one() if reader is not None else None
        rows = size + (lent is not None)
        state = self._batches.get(rows)
        if state is None:
            state = self._batches[rows] = self._lm.initial_state(rows)
        index = np.asarray(parents, dtype=np.intp)
        ids = np.empty(rows, dtype=np.int64)
        ids[:size] = tokens
        if lent is None:
            np.take(self.h, index, axis=1, out=state.h)
            if self.c is not None:
                np.take(self.c, index, axis=1, out=state.c)
        else:
            ids[size], h, c = lent
            state.h[:, :size] = self.h[:, index]
            state.h[:, size] = h
            if self.c is not None:
                state.c[:, :size] = self.c[:, index]
                state.c[:, size] = c
        log_probs = self._lm.step(ids, state)
        nodes = [self.free.pop() for _ in range(size)]
        where = np.asarray(nodes, dtype=np.intp)
        if lent is not None:
            h[...] = state.h[:, size]
            if c is not None:
                c[...] = state.c[:, size]
            reader.row_one_read()
        self.h[:, where] = state.h[:, :size]
        if self.c is not None:
            self.c[:, where] = state.c[:, :size]
        self.log_probs[where] = log_probs[:size]
        return nodes


class CompletionSearch:
    """Beam search over characters from a :class:`TextReader`'s state, memoised.

    :meth:`search` gives the likeliest ways to finish the word being typed, as
    ``(continuation, log_probability)`` pairs: the continuation stops before its stop
    character (a space or punctuation), and the probability includes that stop, summed over
    the stop characters that end the same word.

    The tree of explored continuations is kept between calls. When the next search starts
    one or a few characters further down (the user typed them), the subtree below them is
    kept and hung from the new root, so only the nodes the earlier searches did not reach are
    stepped. Memoised or not, the search explores the same hypotheses.
    """

    def __init__(self, lm: ModelAdapter, beam_width: int = 6, max_length: int = 12,
                 n_best: int = 12, capacity: int = 1024):
        if beam_width < 1 or max_length < 1 or n_best < 1:
            raise ValueError("beam_width, max_length and n_best must be positive")
        self.lm = lm
        self.beam_width = int(beam_width)
        self.max_length = int(max_length)
        self.n_best = int(n_best)
        self._pool = _NodePool(lm, max(int(capacity), 4 * beam_width * max_length + 2))
        self._children: dict[int, dict[int, int]] = {}   # node -> {token: child node}
        self._root: tuple[int, int] | None = None     # (reader generation, length)
        vocab = lm.vocab_size
        self.stop = np.zeros(vocab, dtype=bool)
        for token_id, token in enumerate(lm.tokens):
            self.stop[token_id] = token_id > 0 and not is_word_character(token)
        # The unknown token has no text: never part of a completion, nor a stop.
        self.stop[0] = False
        self._banned = np.zeros(vocab, dtype=bool)
        self._banned[0] = True
        self._at_word_start = self._banned | self.stop

    # -- the memo

    def _hang_from(self, reader: TextReader) -> None:
        """Root the tree at the reader's state, keeping the subtree already explored there."""
        root = (reader.generation, reader.length)
        kept = None
        if self._root is not None and self._root[0] == root[0]:
            moved = root[1] - self._root[1]
            if moved == 0:
                kept = 0
            elif 0 < moved <= self.max_length:
                kept = 0
                for token in reader.last_tokens(moved):
                    kept = self._children.get(kept, {}).get(token, -1)
                    if kept < 0:
                        kept = None
                        break
        pool = self._pool
        if kept is None:
            self._children = {}
            pool.clear()
        elif kept > 0:
            # The kept node becomes the root; everything outside its subtree is freed.
            children = {}
            frontier = [kept]
            while frontier:
                node = frontier.pop()
                below = self._children.get(node)
                if below:
                    children[0 if node == kept else node] = below
                    frontier.extend(below.values())
            self._children = children
            pool.free_all_but(child for below in children.values() for child in below.values())
        pool.set_root(reader.state, 0, reader.log_probs)
        self._root = root

    def follower(self, reader: TextReader):
        """For ``reader.read(..., follow=)``: the states the memo holds below the reader's
        present state, token by token (None when the tree is rooted elsewhere)."""
        if self._root != (reader.generation, reader.length):
            return None
        pool, children, node = self._pool, self._children, 0

        def follow(token):
            nonlocal node
            child = children.get(node, {}).get(token, -1)
            if child < 0:
                return None
            node = child
            return pool.h[:, child], None if pool.c is None else pool.c[:, child], \
                pool.log_probs[child]
        return follow

    # -- searching

    def search(self, reader: TextReader, word_start: bool,
               n_best: int | None = None) -> list[tuple[str, float]]:
        """Continuations of the text ``reader`` holds, best first, with log-probabilities.

        ``word_start``: nothing of the word is typed yet, so the first character must be a
        word character (next-word prediction); otherwise a hypothesis may stop at once.
        ``n_best``: how many finished words are wanted (at most the search's own
        ``n_best``); the search stops as soon as no open hypothesis can beat the last of them.
        """
        n_best = self.n_best if n_best is None else max(1, min(int(n_best), self.n_best))
        self._hang_from(reader)
        pool, tokens = self._pool, self.lm.tokens
        open_nodes = [0]
        ended: dict[str, float] = {}

        def expand(rows, next_tokens):
            nonlocal open_nodes
            open_nodes = self._nodes_for([open_nodes[row] for row in rows], next_tokens, reader)
            return pool.log_probs[open_nodes]

        words: dict[tuple, str | None] = {}    # a hypothesis ends at several stop characters

        def on_stop(ids, token, score):
            word = words.get(ids, "")
            if word == "":
                word = "".join(tokens[i] for i in ids)
                # A word ends in a letter: "don'" or "rock-" before a space is no word.
                word = words[ids] = word if word and word[-1] not in JOINERS else None
            if word is None:
                return False
            previous = ended.get(word)
            ended[word] = score if previous is None else _logaddexp(previous, score)
            return True

        beam_steps(pool.log_probs[open_nodes], expand, beam_width=self.beam_width,
                   max_length=self.max_length, n_best=n_best, stop=self.stop,
                   banned=self._banned, first_banned=self._at_word_start if word_start else None,
                   on_stop=on_stop)
        return sorted(ended.items(), key=lambda item: -item[1])

    def _nodes_for(self, parents: list[int], tokens: list[int], reader=None) -> list[int]:
        """The child nodes, from the memo where known; the others stepped in one batch (with
        ``reader``'s lagging row, see :meth:`_NodePool.expand`)."""
        children = self._children
        nodes = [children.get(p, {}).get(t, -1) for p, t in zip(parents, tokens)]
        missing = [i for i, node in enumerate(nodes) if node < 0]
        if missing:
            if len(self._pool.free) < len(missing):
                self._forget_all_but(set(parents))
            new = self._pool.expand([parents[i] for i in missing], [tokens[i] for i in missing],
                                    reader)
            for i, node in zip(missing, new):
                nodes[i] = node
                self._children.setdefault(parents[i], {})[tokens[i]] = node
        return nodes

    def _forget_all_but(self, keep: set) -> None:
        """The memo is full: keep only the nodes this search still stands on."""
        self._children = {}
        self._pool.free_all_but(keep)


# ---------------------------------------------------------------------------- the predictor


def _logaddexp(x: float, y: float) -> float:
    """``numpy.logaddexp`` of two floats, to the bit (its formula), without a NumPy scalar."""
    if x == y:
        return x + _LOG2
    if x > y:
        return x + math.log1p(math.exp(y - x))
    return y + math.log1p(math.exp(x - y))


_LOG2 = math.log(2.0)


def _joined_twice(word: str) -> bool:
    """Whether ``word`` has two joiners in a row ("rock--and", "dogs''")."""
    return any(a in JOINERS and b in JOINERS for a, b in zip(word, word[1:]))


class NeuralPredictor:
    """Predictor over a character- or word-level :class:`~predtext.lm.model.LanguageModel`.

    Character level: the memoised beam search of :class:`CompletionSearch` from the state of
    the text before the cursor (kept by :class:`TextReader`). Word level: the model's next-word
    distribution over the words that start with the typed prefix.

    Options: ``beam_width`` (hypotheses kept per character position), ``max_length``
    (characters looked ahead), ``span`` (context: ``span`` to ``2 * span`` tokens are read),
    ``normalize`` (renormalise the probabilities over the candidates found, instead of the
    probability of each completion given everything typed).

    ``known_words`` (words of the corpus, e.g. the n-gram vocabulary) and ``unknown_weight``:
    a character model also spells words that do not exist ("tomour", "acknowed"). A
    completion that is neither a known word nor one the user has written (see :meth:`learn`)
    is not offered, unless ``invented_words`` is set: then it is left out when the model gives
    it less than ``unknown_min`` ("soonly" after "soon"), and otherwise has its probability
    multiplied by ``unknown_weight``.
    """

    # Not ``inline``: on its own lane a keystroke waits for it no longer than the budget.
    # (Inline, on the loaded 2-core AVX2 machine, p50 went down 10-15% with no thread
    # hand-offs, but p99 went from 54 to 78 ms: an overrunning search was awaited in full.)

    def __init__(self, model, name: str = "neural", beam_width: int = 6, max_length: int = 12,
                 span: int = 128, normalize: bool = False, n_best: int = 12,
                 known_words=None, unknown_weight: float = 1.0, unknown_min: float = 0.0,
                 invented_words: bool = True):
        self.name = name
        self.lm = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self.level = self.lm.level
        self.normalize = bool(normalize)
        if not 0.0 <= unknown_weight <= 1.0:
            raise ValueError(f"unknown_weight must be in [0, 1], got {unknown_weight!r}")
        self.unknown_weight = float(unknown_weight)
        if not 0.0 <= unknown_min <= 1.0:
            raise ValueError(f"unknown_min must be in [0, 1], got {unknown_min!r}")
        self.unknown_min = float(unknown_min)
        self.invented_words = bool(invented_words)
        self._vocabulary = frozenset(normalize_word(w) for w in known_words or ())
        self.known_words = set(self._vocabulary)
        self.reader = TextReader(self.lm, span=span)
        self._lock = threading.Lock()
        # Two threads step the model faster on an idle machine, one on a busy one.
        self._threads = ThreadCountChoice()
        if self.level == "char":
            self.search = CompletionSearch(self.lm, beam_width=beam_width, max_length=max_length,
                                           n_best=max(n_best, beam_width))
        else:
            self._words = _WordIndex(self.lm.tokens)
            self._window: tuple[int, str, list[int]] = (-1, "", [])

    @property
    def language_model(self):
        """The wrapped language model."""
        return self.lm.model

    @property
    def steps(self) -> int:
        """Cell-step calls made so far (each steps one batch through every layer)."""
        return self.lm.steps

    def learn(self, text: str) -> None:
        """Words the user wrote count as known words from now on."""
        from predtext.engine.context import tokenize

        with self._lock:
            self.known_words.update(normalize_word(w) for w in tokenize(text) if w not in MARKERS)

    def forget(self) -> None:
        """Only the vocabulary's words are known again."""
        with self._lock:
            self.known_words = set(self._vocabulary)

    def predict(self, context: Context, k: int) -> list[Candidate]:
        with self._lock:
            threads = self._threads.choose()
            steps, seconds = self.lm.steps, self.lm.step_seconds
            with thread_limit(threads):
                if self.level == "char":
                    found = self._predict_characters(context, k)
                else:
                    found = self._predict_words(context, k)
            self._threads.record(threads, self.lm.step_seconds - seconds, self.lm.steps - steps)
            return found

    # -- character level

    def _predict_characters(self, context: Context, k: int) -> list[Candidate]:
        text = self.lm.read_as_trained(context.text)
        prefix = text[len(text) - len(context.prefix):]     # the word being typed ends the text
        if not prefix and text and not text[-1].isspace():
            # Just after punctuation ("lord,"): the next word comes after a space not yet
            # typed, and a suggestion now would be glued to the mark.
            return []
        if any(char not in self.lm.token_ids for char in prefix):
            # A word in letters the model never saw (another script): it could only append
            # its own letters to a prefix it cannot read.
            return []
        tail = text[-(2 * self.reader.span + 1):]
        self.reader.read(self.lm.encode(tail), context.offset + len(text) - len(tail),
                         self.search.follower(self.reader))
        found = self.search.search(self.reader, word_start=not prefix, n_best=k)
        candidates = []
        for continuation, log_prob in found:
            word = prefix + continuation
            if _joined_twice(word):
                continue        # "rock--and": no word by the tokenizer's rules
            probability = math.exp(log_prob)
            if self.known_words and normalize_word(word) not in self.known_words:
                if not self.invented_words or probability < self.unknown_min:
                    continue
                probability *= self.unknown_weight
            candidates.append((word, probability))
        if self.invented_words and self.unknown_weight < 1.0:
            candidates.sort(key=lambda item: -item[1])
        candidates = candidates[:k]
        total = sum(p for _, p in candidates)
        if self.normalize and total > 0:
            candidates = [(w, p / total) for w, p in candidates]
        return [Candidate(w, min(p, 1.0)) for w, p in candidates]

    # -- word level

    def _predict_words(self, context: Context, k: int) -> list[Candidate]:
        before = self.lm.read_as_trained(context.text_before_word)
        offset, cached_before, tokens = self._window
        if (offset, cached_before) != (context.offset, before):
            if offset != context.offset:
                # The window moved: token positions changed, so read afresh.
                self.reader.clear()
            tokens = self.lm.encode(before) if before else []
            self._window = (context.offset, before, tokens)
        start = max(0, len(tokens) - (2 * self.reader.span + 1))
        log_probs = self.reader.read(tokens[start:], start)
        ids = self._words.matching(context.prefix)
        if not len(ids):
            return []
        scores = np.exp(log_probs[ids].astype(np.float64))
        mass = scores.sum()
        if not mass > 0:
            return []
        top = np.argsort(-scores, kind="stable")[:k]
        # Given a typed prefix, the distribution is over the words that match it.
        scale = mass if (self.normalize or context.prefix) else 1.0
        return [Candidate(self.lm.tokens[int(ids[i])], float(scores[i] / scale))
                for i in top if scores[i] > 0]


class _WordIndex:
    """Word tokens of a vocabulary in sorted (lower-case) order: the ids for a typed prefix."""

    def __init__(self, tokens: Sequence[str]):
        words = sorted((normalize_word(t), i) for i, t in enumerate(tokens)
                       if i > 0 and t not in MARKERS and any(is_word_character(c) for c in t))
        self._keys = [w for w, _ in words]
        self._ids = np.array([i for _, i in words], dtype=np.intp)

    def matching(self, prefix: str) -> np.ndarray:
        """Ids of the words that start with ``prefix`` and are longer than it."""
        key = normalize_word(prefix)
        lo = bisect.bisect_left(self._keys, key)
        if key and lo < len(self._keys) and self._keys[lo] == key:
            lo += 1          # the typed word itself is no suggestion
        hi = bisect.bisect_left(self._keys, key + "\U0010ffff", lo)
        return self._ids[lo:hi]


def _on_device(model, device, name):
    """A copy of ``model`` on ``device`` (the loaded model stays on the CPU for the others)."""
    from predtext.backend import ops_for_device

    try:
        ops = ops_for_device(device)
    except ValueError as exc:     # BackendUnavailable: what is missing
        raise ValueError(f"predictors.{name}.device = {device!r}: {exc}") from None
    copy = type(model).from_tensors(model.tensors(), model.file_meta(), dtype=model.dtype)
    return copy.to(ops)


def _float_on_cpu(model) -> bool:
    """Whether ``model`` is a float LanguageModel on the CPU (what ``quantize`` takes)."""
    ops = getattr(model, "ops", None)
    return (callable(getattr(model, "quantize", None)) and not getattr(model, "quantized", True)
            and getattr(ops, "device", None) == "cpu")


# Far above any useful setting, low enough that a typo cannot take gigabytes or seconds a keystroke.
_OPTION_LIMITS = {"beam_width": 256, "max_length": 64, "span": 4096, "n_best": 256}


def make_predictor(options: Mapping[str, Any], resources: Resources) -> NeuralPredictor:
    """Factory for ``type = "neural"``: the loaded language model, or ``path`` to a model file.

    Options: ``beam_width``, ``max_length``, ``span``, ``normalize``, ``n_best``,
    ``invented_words``, ``unknown_weight``, ``unknown_min`` (see :class:`NeuralPredictor`);
    the known words are the loaded vocabulary and, when the engine loaded one, the word list.
    ``device``: "cpu" (the default) or "cuda". A keystroke is a few single-token steps, where
    a GPU's launch latency outweighs its speed, so the model stays on the CPU unless this
    asks; without CuPy, a driver or a device the predictor is not made, and the message says
    what is missing.
    ``weights``: "int8" (the default) steps an 8-bit copy of a float model on the CPU
    (``LanguageModel.quantize``, made once here); "float" the model as it is, which is what
    a model you keep training while the engine runs needs (the copy would not follow it).
    """
    path = options.get("path")
    if path:
        from predtext.lm.model import LanguageModel
        model = LanguageModel.load(os.path.expanduser(str(path)))
    else:
        model = resources.extra.get("language_model")
    if model is None:
        raise ValueError("the neural predictor needs a language model: load one, "
                         "or give it a `path`")
    device = options.get("device", "cpu")
    if not isinstance(device, str) or not device:
        raise ValueError(f"predictors.{options.get('name', 'neural')}.device must be \"cpu\" "
                         f"or \"cuda\", got {device!r}")
    weights = options.get("weights", "int8")
    if weights not in ("int8", "float"):
        raise ValueError(f"predictors.{options.get('name', 'neural')}.weights must be \"int8\" "
                         f"or \"float\", got {weights!r}")
    if device != "cpu":
        model = _on_device(model, device, options.get("name", "neural"))
    elif weights == "int8" and _float_on_cpu(model):
        # A keystroke's steps read every weight, mostly from memory after the pause between
        # keys: a quarter of the bytes made them 1.5x faster at a person's pace, for the
        # same keystroke savings (README, "8-bit weights").
        model = model.quantize("int8")
    settings: dict[str, Any] = {}
    for option, most in _OPTION_LIMITS.items():
        if option in options:
            value = options[option]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ValueError(f"predictors.{options.get('name', 'neural')}.{option} must be "
                                 f"an integer from 1 to {most}, got {value!r}")
            settings[option] = value
    settings.update(fraction_options(options, ("unknown_weight", "unknown_min")))
    for option in ("normalize", "invented_words"):
        if option in options:
            if not isinstance(options[option], bool):
                raise ValueError(f"{option} must be true or false, got {options[option]!r}")
            settings[option] = options[option]
    known = resources.vocabulary
    word_list = resources.extra.get("word_list")
    if word_list:
        # Known words: the corpus's and the modern list's (the user's come with learn()).
        known = list(known or ()) + list(word_list)
    return NeuralPredictor(model, name=str(options.get("name", "neural")),
                           known_words=known, **settings)
