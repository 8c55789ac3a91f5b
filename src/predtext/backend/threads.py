"""Running compiled-core work on a thread of its own.

The core's kernels run OpenMP teams, and GNU OpenMP gives every thread that starts one a pool
of workers that lives as long as that thread. While there are more such threads than cores,
it stops spin-waiting between parallel regions, and every small kernel then pays to wake its
workers: the engine's suggestions (a few dozen tiny regions per keystroke, on their own lane)
went from p50 1.7 to 3.6 ms once the main thread had run a few model steps. Work that runs
kernels from a thread that lives on (text generation in the terminal, a script's main
thread) but is not on a hot path is therefore run on a short-lived thread: its pool goes
with it.
"""

from __future__ import annotations

import threading


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
