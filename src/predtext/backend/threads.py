"""How many threads the compiled core's kernels use, where the work runs.

Running compiled-core work on a thread of its own:

The core's kernels run OpenMP teams, and GNU OpenMP gives every thread that starts one a pool
of workers that lives as long as that thread. While there are more such threads than cores,
it stops spin-waiting between parallel regions, and every small kernel then pays to wake its
workers: the engine's suggestions (a few dozen tiny regions per keystroke, on their own lane)
went from p50 1.7 to 3.6 ms once the main thread had run a few model steps. Work that runs
kernels from a thread that lives on (text generation in the terminal, a script's main
thread) but is not on a hot path is therefore run on a short-lived thread: its pool goes
with it.

Choosing a thread count (:class:`ThreadCountChoice`): on an idle machine two threads step the
engine's model faster than one, but when other work keeps every core busy a two-thread step
waits for a descheduled partner; and a team that has had no work for a few milliseconds has
gone to sleep, and waking it can cost more than the whole keystroke's steps on one thread.
"""

from __future__ import annotations

import collections
import contextlib
import statistics
import threading
import time


def on_own_thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` run on a new thread; its result, or its exception."""
    outcome = {}

    def run():
        try:
            outcome["result"] = function(*args, **kwargs)
        except BaseException as error:      # handed to the caller, whatever it is
            outcome["error"] = error

    worker = threading.Thread(target=run, name="predtext-core-work", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@contextlib.contextmanager
def thread_limit(n: int):
    """Kernels called from this thread inside the block use at most ``n`` threads (0: as
    many as ``set_num_threads`` allows)."""
    from predtext import _core

    before = _core.get_thread_limit()
    _core.set_thread_limit(n)
    try:
        yield
    finally:
        _core.set_thread_limit(before)


class ThreadCountChoice:
    """The thread count for recurring work: one thread for a call that comes more than
    ``cold_after`` seconds after the previous one ended; otherwise the core's own (0), until
    calls keep running many times slower per unit of work than such calls usually do, then
    one thread for a while.

    Cold calls: GNU OpenMP's workers spin for a few milliseconds after a parallel region and
    then sleep, and the master spins at the region's barrier while a sleeping worker wakes. On
    the 2-core AMD EPYC (a Firecracker VM) the first region after 20 ms or more without one
    took 7.7 ms, empty, and the next one 3.5 ms, against 7 us with the workers still spinning
    (``OMP_WAIT_POLICY=passive`` makes it 23 us, but costs every back-to-back region 60 us).
    So keystrokes at a person's pace (80 ms apart at 150 words a minute) step on one thread:
    the 2x256 default model's suggest() went from p50 5.2 / p99 20 ms to 4.8 / 11 ms, a
    2x512 model's from 14 / 45 to 6.7 / 13 ms; keystrokes back to back (the KSR simulator, a
    paste) keep the team warm and use it.

    Measured on the 2-core machine, the engine's default config: idle, two threads give
    p50 1.75 ms against 2.6 with one; beside one busy process, two threads give p99 43 ms
    (a team of two waits for a descheduled partner, and the neural predictor overruns its
    budget) against 4.2 with one. A call ``slow_factor`` times slower per unit than the
    median of the last ``window`` usual calls is slow; ``slow_calls`` of them among the last
    ``recent`` show that load (an idle machine has one or two now and then: with two, one
    idle run in four switched), and the next ``hold`` calls then run on one thread before
    the core's count is tried again.
    (Trying counts against each other call by call does not work: a team that has been idle
    for a while is slow to wake, so the rare try of two threads always looks worse.)
    """

    def __init__(self, window: int = 32, slow_factor: float = 8.0, slow_calls: int = 3,
                 recent: int = 16, hold: int = 500, cold_after: float = 0.005,
                 clock=time.monotonic):
        self.cold_after = cold_after
        self._clock = clock
        self._last_end = -float("inf")
        self._times = collections.deque(maxlen=window)
        self._slow_factor = slow_factor
        self._slow_calls = slow_calls
        self._recent = collections.deque(maxlen=recent)     # True where a call was slow
        self._hold = hold
        self._held = 0

    def choose(self) -> int:
        """The thread limit for the next call (0: the core's own count)."""
        if self._held > 0:
            self._held -= 1
            return 1
        if self._clock() - self._last_end > self.cold_after:
            return 1
        return 0

    def record(self, n: int, seconds: float, work: int) -> None:
        """The call run with limit ``n`` took ``seconds`` for ``work`` units (none: ignored)."""
        self._last_end = self._clock()
        if n != 0 or work <= 0:
            return
        per_unit = seconds / work
        times = self._times
        slow = (len(times) >= max(1, times.maxlen // 4)
                and per_unit > self._slow_factor * statistics.median(times))
        self._recent.append(slow)
        if not slow:
            times.append(per_unit)
        elif sum(self._recent) >= self._slow_calls:
            self._held = self._hold
            self._recent.clear()
