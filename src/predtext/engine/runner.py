"""Running predictors for one keystroke within a time budget, each on its own thread.

A predictor that raises, or does not answer within the budget, is skipped for that keystroke
and reported once in the log; the other predictors' suggestions still come.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait

from predtext.engine.context import Context
from predtext.engine.protocol import Candidate, Predictor

log = logging.getLogger("predtext.engine")


class _OnceLog:
    """Logs a predictor's trouble as a warning the first time, then only at debug level."""

    def __init__(self):
        self._seen = set()
        self._lock = threading.Lock()

    def report(self, name: str, what: str, detail: str = "") -> None:
        with self._lock:
            first = (name, what) not in self._seen
            self._seen.add((name, what))
        if first:
            log.warning("predictor %r %s; skipped where it happens (reported once): %s",
                        name, what, detail)
        else:
            log.debug("predictor %r %s: %s", name, what, detail)


class _Lane:
    """One daemon thread running calls in order: a predictor's own thread.

    Daemon, unlike a ThreadPoolExecutor's workers, so that a predictor that never returns
    cannot keep the program from exiting. Started by the first call; it ends when the lane
    is closed or dropped (the thread holds the queue, not the lane).
    """

    def __init__(self, name: str):
        self._name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._closed = False
        weakref.finalize(self, self._calls.put, None)

    def submit(self, function: Callable, *args) -> Future:
        if self._closed:
            raise RuntimeError("the engine is closed")
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(target=_serve, args=(self._calls,),
                                                    name=self._name, daemon=True)
                    self._thread.start()
        future: Future = Future()
        self._calls.put((future, function, args))
        return future

    def close(self) -> None:
        """Cancel the calls not yet started and let the thread end after the current one."""
        self._closed = True
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None:
                call[0].cancel()
        self._calls.put(None)


def _serve(calls: queue.SimpleQueue) -> None:
    """A lane's thread: run each call, hand its result or error to its future; None ends it."""
    while True:
        call = calls.get()
        if call is None:
            return
        future, function, args = call
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(function(*args))
        except BaseException as error:     # handed to whoever waits on the future
            future.set_exception(error)
        # Hold nothing while waiting: the future's callbacks refer to the runner, which must
        # be free to go (and close this thread) when its engine is dropped.
        del call, future, function, args


class PredictorRunner:
    """Runs predictors for one keystroke within a time budget.

    Each predictor has its own lane (a thread), so calls to one predictor never overlap
    (a predictor need not be thread-safe) and ``learn`` is ordered with ``predict``. A predictor
    still busy with an earlier keystroke is skipped rather than queued, so a hung predictor
    costs nothing after its first overrun.

    A predictor whose class sets ``inline = True`` (the built-in ones: bounded NumPy work)
    predicts in the calling thread instead, which saves a thread hand-off per keystroke; its
    answer is still dropped when it comes in over the budget. The inline predictors' other
    calls all run on one lane; ``learn``, ``accept`` and ``forget`` hold one lock there (the
    predictors may share data: two n-gram predictors over one model), and a keystroke that
    finds it taken (one of them is learning a long text) goes on without them. ``prepare``,
    which must be safe beside ``predict``, runs without it.
    """

    def __init__(self, predictors: Sequence[Predictor], budget_s: float | None = 0.04):
        self.predictors = list(predictors)
        self.budget_s = budget_s
        self._inline = {id(p) for p in self.predictors if getattr(p, "inline", False)}
        self._inline_lock = threading.Lock()
        inline_lane = _Lane("predtext-inline")
        self._lanes = {id(p): inline_lane if id(p) in self._inline else _Lane(f"predtext-{p.name}")
                       for p in self.predictors}
        self._busy: dict[int, Future] = {}
        self._trouble = _OnceLog()

    def predict(self, context: Context, k: int) -> list[tuple]:
        """``[(predictor, candidates), ...]`` from the predictors that answered in time."""
        started = time.perf_counter()
        pending = {}
        for predictor in self.predictors:
            if id(predictor) in self._inline:
                continue
            previous = self._busy.get(id(predictor))
            if previous is not None and not previous.done():
                self._trouble.report(predictor.name, "overran its time budget",
                                     "still busy with an earlier keystroke")
                continue
            future = self._lanes[id(predictor)].submit(predictor.predict, context, k)
            self._busy[id(predictor)] = future
            pending[future] = predictor
        answers = {}
        inline = [p for p in self.predictors if id(p) in self._inline]
        if inline and not self._inline_lock.acquire(blocking=False):
            log.debug("the inline predictors are busy learning; skipped for this keystroke")
            inline = []
        try:
            for predictor in inline:
                began = time.perf_counter()
                try:
                    result = predictor.predict(context, k)
                except Exception as error:
                    self._trouble.report(predictor.name, "raised",
                                         f"{type(error).__name__}: {error}")
                    continue
                if self.budget_s is not None and time.perf_counter() - began > self.budget_s:
                    self._trouble.report(predictor.name, "overran its time budget",
                                         f"{self.budget_s * 1000:.0f} ms")
                    continue
                answers[id(predictor)] = result
        finally:
            if inline:
                self._inline_lock.release()
        timeout = None
        if self.budget_s is not None:
            timeout = max(0.0, self.budget_s - (time.perf_counter() - started))
        _, late = wait(pending, timeout=timeout)
        for future, predictor in pending.items():
            if future in late:
                self._trouble.report(predictor.name, "overran its time budget",
                                     f"{self.budget_s * 1000:.0f} ms")
                continue
            error = future.exception()
            if error is not None:
                self._trouble.report(predictor.name, "raised", f"{type(error).__name__}: {error}")
                continue
            answers[id(predictor)] = future.result()
        results = []
        for predictor in self.predictors:        # in configuration order
            if id(predictor) not in answers:
                continue
            candidates = _valid_candidates(answers[id(predictor)], k)
            if candidates is None:
                self._trouble.report(predictor.name, "returned something that is not candidates",
                                     type(answers[id(predictor)]).__name__)
                continue
            results.append((predictor, candidates))
        return results

    def call(self, method: str, *args) -> list[Future]:
        """Call ``method`` on every predictor that has it, each on its lane; errors are logged.

        Returns the calls' futures: :meth:`wait` for them so that the next ``predict`` sees
        their effect (lane predictors would anyway: a lane runs its calls in order).
        """
        futures = []
        for predictor in self.predictors:
            function = getattr(predictor, method, None)
            if not callable(function):
                continue
            if id(predictor) in self._inline and method != "prepare":
                # prepare() loads data while the predictor already answers (history: nothing
                # until loaded); holding the lock would keep every inline predictor out.
                function = _holding(self._inline_lock, function)
            future = self._lanes[id(predictor)].submit(function, *args)
            future.add_done_callback(lambda f, p=predictor: self._report_failure(p, method, f))
            futures.append(future)
        return futures

    @staticmethod
    def wait(futures: Sequence[Future], timeout_s: float | None) -> None:
        """Wait up to ``timeout_s`` for calls made by :meth:`call` to finish."""
        if futures:
            wait(futures, timeout=timeout_s)

    def _report_failure(self, predictor: Predictor, method: str, future: Future) -> None:
        if future.cancelled():
            return          # the engine closed before the call started
        error = future.exception()
        if error is not None:
            self._trouble.report(predictor.name, f"failed in {method}()",
                                 f"{type(error).__name__}: {error}")

    def close(self) -> None:
        for lane in set(self._lanes.values()):
            lane.close()


def _holding(lock: threading.Lock, function: Callable) -> Callable:
    def call(*args):
        with lock:
            return function(*args)
    return call


def _valid_candidates(result, k: int) -> list[Candidate] | None:
    """The first ``k`` candidates with a text and a positive probability (more were not asked
    for); None when ``result`` is not a list of them."""
    if not isinstance(result, (list, tuple)):
        return None
    valid = []
    for item in result[:k]:
        try:
            text, probability = item
            probability = float(probability)
        except (TypeError, ValueError, OverflowError):
            return None
        if isinstance(text, str) and text and probability == probability and probability > 0:
            valid.append(Candidate(text, min(probability, 1.0)))
    return valid
