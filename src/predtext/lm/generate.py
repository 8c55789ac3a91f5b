"""Reading a language model's predictions: sampling, and beam search over continuations.

Both work on the incremental interface of ``LanguageModel`` (``feed`` for the prompt, then
one ``step`` per token), so generating N tokens costs N cell steps per layer.

* ``generate(model, prompt, length, temperature, top_k, top_p, seed)``: sampled text.
* ``beam_search(model, state, ...)``: the likeliest continuations of the text a state has
  read, each ending at a stop token (e.g. the end of the word being typed) or at
  ``max_length``; ``stop_ids=word_boundary_ids(tokenizer)`` completes the word being typed.
* ``beam_steps(log_probs, expand, ...)``: the search itself, over any tree of states. Both
  ``beam_search`` and the engine's memoised word completion (``engine.neural``, which keeps
  the explored tree between keystrokes) run it; they differ in how they step the states
  (``expand``) and in what they keep of an ended hypothesis (``on_stop``).
"""

from __future__ import annotations

import heapq
import math
from typing import NamedTuple

import numpy

from predtext.lm.tokenizers import UNKNOWN_ID, is_word


class Continuation(NamedTuple):
    """One result of ``beam_search``.

    ``ids``: the continuation's tokens (without the stop token); ``text``: their text;
    ``log_prob``: natural-log probability of ``ids`` and, when ``stop_id`` is set, of the
    stop token after them; ``stop_id``: the stop token that ended it, or None when it was
    cut at ``max_length``.
    """

    ids: tuple
    text: str
    log_prob: float
    stop_id: int | None

    @property
    def probability(self):
        return math.exp(self.log_prob)


def _check_sampling(temperature, top_k, top_p):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature >= 0:
        raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k: expected a non-negative int (0 or None: no limit), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")


def sampling_distribution(log_probs_v, temperature=1.0, top_k=None, top_p=None,
                          banned_ids=(UNKNOWN_ID,)):
    """The probabilities (float64, summing to 1) that sampling draws the next id from.

    ``temperature`` divides the log-probabilities (0 means greedy: all mass on the best
    id); ``top_k`` keeps the k likeliest ids; ``top_p`` keeps the smallest set of likeliest
    ids whose probability reaches ``top_p`` (nucleus sampling). ``banned_ids`` (by default
    the unknown token, which has no text of its own) never come out.
    """
    _check_sampling(temperature, top_k, top_p)
    scores = numpy.array(log_probs_v, dtype=numpy.float64)
    for banned in banned_ids:
        if 0 <= banned < len(scores) and len(scores) > 1:
            scores[banned] = -numpy.inf
    if temperature == 0:
        probs = numpy.zeros_like(scores)
        probs[int(numpy.argmax(scores))] = 1.0
        return probs
    scores = scores / temperature
    if top_k and top_k < len(scores):
        threshold = numpy.partition(scores, -top_k)[-top_k]
        scores[scores < threshold] = -numpy.inf
    probs = numpy.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p is not None and top_p < 1:
        order = numpy.argsort(-probs, kind="stable")
        cumulative = numpy.cumsum(probs[order])
        # Keep every id up to and including the one that reaches top_p.
        keep = int(numpy.searchsorted(cumulative, top_p)) + 1
        mask = numpy.zeros(len(probs), dtype=bool)
        mask[order[:keep]] = True
        probs[~mask] = 0.0
        probs /= probs.sum()
    return probs


def generate(model, prompt="", length=200, temperature=1.0, top_k=None, top_p=None,
             seed=None, stop=None):
    """Sample ``length`` tokens after ``prompt`` and return their text (prompt excluded).

    ``temperature``, ``top_k`` and ``top_p`` shape the distribution (see
    ``sampling_distribution``); ``seed`` makes the result reproducible. ``stop``: a string
    at which to end early (the text returned ends with it).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length: expected a non-negative int, got {length!r}")
    _check_sampling(temperature, top_k, top_p)
    rng = numpy.random.default_rng(seed)
    log_probs, state = model.feed_text(prompt)
    pieces = []
    text_so_far = ""
    for _ in range(length):
        # The network steps where the model is; the draw is on the host (one row back).
        probs = sampling_distribution(_host(model, log_probs[0]), temperature, top_k, top_p)
        token_id = int(rng.choice(len(probs), p=probs))
        piece = model.decode([token_id])
        pieces.append(piece)
        if stop:
            text_so_far += piece
            if text_so_far.endswith(stop):
                break
        log_probs, state = model.step([token_id], state)
    return "".join(pieces)


def word_boundary_ids(tokenizer):
    """Ids of the character tokens that end a word (whitespace, punctuation other than an
    apostrophe, and the unknown token): the ``stop_ids`` that make ``beam_search``
    complete the word being typed."""
    ids = {UNKNOWN_ID}
    for token, token_id in tokenizer.token_to_id.items():
        if not (is_word(token) or token in ("'", "\u2019")):
            ids.add(token_id)
    return frozenset(ids)


def beam_search(model, state, beam_width=8, max_length=20, stop_ids=(), n_best=None,
                banned_ids=(UNKNOWN_ID,)):
    """The likeliest continuations of the text that ``state`` has read, best first.

    ``state``: an ``LMState`` of one text whose ``log_probs`` are set (from ``feed``,
    ``feed_text`` or ``step``); it is not modified. A hypothesis ends when it emits one of
    ``stop_ids`` or reaches ``max_length`` tokens; ``beam_width`` hypotheses are kept per
    length. Returns up to ``n_best`` (default ``beam_width``) ``Continuation`` objects:
    ended ones sorted by probability, then, if fewer ended, the best cut ones.

    Search ends as soon as no open hypothesis can beat the ``n_best``-th ended one (every
    extra token only lowers a probability), so a short word costs a few batched steps.
    """
    if state is None or state.log_probs is None:
        raise ValueError("state: expected a state that has read some text (its log_probs "
                         "are set); use model.feed_text(text) to make one")
    if state.batch_size != 1:
        raise ValueError("state: expected the state of one text, "
                         f"got a batch of {state.batch_size}")
    for name, value in (("beam_width", beam_width), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    n_best = beam_width if n_best is None else n_best
    stop = numpy.zeros(model.vocab_size, dtype=bool)
    stop[[i for i in stop_ids if 0 <= i < model.vocab_size]] = True
    banned = numpy.zeros(model.vocab_size, dtype=bool)
    banned[[i for i in banned_ids if 0 <= i < model.vocab_size and not stop[i]]] = True

    beams = state                         # batched state of the open hypotheses
    ended = []                            # (log_prob, ids, stop_id), a min-heap of size n_best

    def expand(rows, tokens):
        nonlocal beams
        beams = beams.select(rows)
        log_probs, beams = model.step(numpy.array(tokens), beams)
        return _host(model, log_probs).astype(numpy.float64)

    def on_stop(ids, token, score):
        _push(ended, n_best, (score, ids, token))
        return True

    open_ids, open_scores = beam_steps(_host(model, state.log_probs).astype(numpy.float64), expand,
                                       beam_width=beam_width, max_length=max_length,
                                       n_best=n_best, stop=stop, banned=banned, on_stop=on_stop)
    results = sorted(ended, key=lambda item: -item[0])
    if len(results) < n_best:
        cut = sorted(zip(open_scores.tolist(), open_ids), key=lambda item: -item[0])
        results += [(score, ids, None) for score, ids in cut[:n_best - len(results)]]
    return [Continuation(tuple(ids), _decode(model, ids), float(score), stop_id)
            for score, ids, stop_id in results]


def beam_steps(log_probs, expand, *, beam_width, max_length, n_best, stop, banned,
               on_stop, first_banned=None):
    """Beam search from one state: the loop ``beam_search`` and the engine share.

    ``log_probs``: the (1, V) float64 distribution of the first token. Each length, the
    ``beam_width`` best extensions of the open hypotheses stay open; one that emits a
    ``stop`` token calls ``on_stop(ids, stop_token, log_prob)`` instead, which returns
    whether it counts as ended (the search stops once no open hypothesis can beat the
    ``n_best``-th counted one: every further token only lowers a probability).
    ``expand(rows, tokens)`` steps open hypothesis ``rows[i]`` by ``tokens[i]`` and returns
    the new hypotheses' (n, V) float64 distributions. ``banned`` (a (V,) bool mask) tokens
    are never taken; ``first_banned``, when given, replaces it for the first token.
    Returns the open hypotheses at the end, ``(ids, log_probs)``: tuples of ids and an array.
    """
    open_ids = [()]
    open_scores = numpy.zeros(1)
    counted = []                          # the n_best best counted ended scores, a min-heap
    vocab = log_probs.shape[-1]
    # The bans as terms to add (0 or -inf): one add of the (n, V) scores, not a masked store.
    ban = numpy.where(banned, -math.inf, 0.0)
    first_ban = ban if first_banned is None else numpy.where(first_banned, -math.inf, 0.0)
    for length in range(1, max_length + 1):
        scores = open_scores[:, None] + log_probs
        scores += first_ban if length == 1 else ban
        flat_scores = scores.ravel()
        # Enough candidates to refill the beam even if many of them end here.
        n_candidates = min(flat_scores.size, 2 * beam_width + n_best)
        top = numpy.argpartition(-flat_scores, n_candidates - 1)[:n_candidates]
        top = top[numpy.argsort(-flat_scores[top], kind="stable")]
        top_scores = flat_scores[top]
        top = top[:int(numpy.count_nonzero(top_scores > -math.inf))]   # best first: -inf last
        rows, tokens = numpy.divmod(top, vocab)
        ends = stop[tokens]
        top_scores = top_scores[:len(top)].tolist()
        rows_list, tokens_list = rows.tolist(), tokens.tolist()
        for i in numpy.flatnonzero(ends).tolist():       # in score order, as they end
            if on_stop(open_ids[rows_list[i]], tokens_list[i], top_scores[i]):
                _push(counted, n_best, (top_scores[i],))
        kept = numpy.flatnonzero(~ends)[:beam_width].tolist()
        if not kept:
            break
        next_rows = [rows_list[i] for i in kept]
        next_tokens = [tokens_list[i] for i in kept]
        next_scores = [top_scores[i] for i in kept]
        open_ids = [open_ids[row] + (token,) for row, token in zip(next_rows, next_tokens)]
        open_scores = numpy.array(next_scores)
        worst_kept = counted[0][0] if len(counted) >= n_best else -math.inf
        if length == max_length or next_scores[0] <= worst_kept:
            break
        log_probs = expand(next_rows, next_tokens)
    return open_ids, open_scores


def _push(heap, size, item):
    """Keep the ``size`` best items of a min-heap keyed on the first element."""
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif item[0] > heap[0][0]:
        heapq.heapreplace(heap, item)


def _decode(model, ids):
    return model.decode(list(ids)) if model.tokenizer is not None else ""


def _host(model, array):
    """``array`` as NumPy: the search and the draws run on the host, wherever the model is."""
    ops = getattr(model, "ops", None)
    return numpy.asarray(array if ops is None else ops.to_numpy(array))
