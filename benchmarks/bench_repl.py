"""Measure the terminal in a real terminal (tmux): start-up time and key-to-screen latency.

    python benchmarks/bench_repl.py [--model PATH] [--config PATH] [--runs 10]

Start-up: the clock starts just before tmux is asked to launch ``predtext repl`` and stops when
``capture-pane`` first shows the prompt with its toolbar (polled every 2 ms); the terminal's own
record of its first drawn frame is printed beside it. The engine's ready time is when the model
finished loading in the background (suggestions start then). The CPU time the process spent up to
its first frame is printed too: on a busy machine it tells what the wall clock would be on an
idle one.

Key-to-screen: keys are sent one at a time, ``--interval`` apart (a fast typist's pace); the
terminal times each from the moment the key is read to the moment the frame showing the
suggestions for the new text has been written (``PREDTEXT_REPL_TRACE``).

It runs in a private tmux server with its own data directory (nothing of the user's history
is read or written); the user's config is used unless ``--config`` names one.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_TEXT = "the quick brown fox jumps over the lazy dog and then the dog sleeps"


class _Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args, check=True) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                              timeout=30, check=check).stdout


def _repl_command(args, trace: str, data_dir: str) -> str:
    command = [sys.executable, "-m", "predtext.cli", "repl"]
    if args.model:
        command += ["--model", args.model]
    if args.config:
        command += ["--config", args.config]
    environment = {"PREDTEXT_REPL_TRACE": trace, "PREDTEXT_DATA_DIR": data_dir,
                   "TERM": "xterm-256color"}
    return " ".join(["env"] + [f"{k}={shlex.quote(v)}" for k, v in environment.items()]
                    + [shlex.quote(c) for c in command])


def _read_trace(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def _prompt_drawn(screen: str) -> bool:
    lines = screen.splitlines()
    return any(line.startswith(">") for line in lines) and any(" · k " in line for line in lines)


def _one_run(args, directory: str, run: int, type_text: str):
    tmux = _Tmux(os.path.join(directory, f"s{run}"))
    trace = os.path.join(directory, f"trace{run}.jsonl")
    data_dir = os.path.join(directory, f"data{run}")
    started = time.time()
    tmux("new-session", "-d", "-s", "bench", "-x", "100", "-y", "24",
         _repl_command(args, trace, data_dir))
    try:
        deadline = started + 30
        while not _prompt_drawn(tmux("capture-pane", "-p", "-t", "bench", check=False)):
            if time.time() > deadline:
                raise RuntimeError("the prompt did not appear within 30 s")
            time.sleep(0.002)
        on_screen = time.time() - started
        deadline = time.time() + 60
        while not any(e["event"].startswith("engine_") for e in _read_trace(trace)):
            if time.time() > deadline:
                raise RuntimeError("the engine did not load within 60 s")
            time.sleep(0.01)
        for character in type_text:
            tmux("send-keys", "-t", "bench", "-l", character)
            time.sleep(args.interval)
        time.sleep(0.3)
        tmux("send-keys", "-t", "bench", "C-c")
        tmux("send-keys", "-t", "bench", "C-d")
        time.sleep(0.2)
    finally:
        tmux("kill-server", check=False)
    events = _read_trace(trace)
    first = next((e["unix_time"] - started for e in events if e["event"] == "first_prompt"), None)
    cpu = next((e.get("cpu_s") for e in events if e["event"] == "first_prompt"), None)
    ready = next((e["unix_time"] - started for e in events if e["event"].startswith("engine_")),
                 None)
    keys = [e["ms"] for e in events if e["event"] == "key_to_screen"]
    suggest = [e["suggest_ms"] for e in events
               if e["event"] == "key_to_screen" and e.get("suggest_ms")]
    return on_screen, first, cpu, ready, keys, suggest


def _percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_repl.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file (default: the embedded default)")
    parser.add_argument("--config", help="engine config (default: the user's)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.08,
                        help="seconds between keys (default 0.08: 150 words a minute)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what to type")
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        print("tmux is not installed", file=sys.stderr)
        return 2
    directory = tempfile.mkdtemp(prefix="pt-bench-")
    starts, firsts, cpus, readies, keys, suggest = [], [], [], [], [], []
    try:
        for run in range(args.runs):
            on_screen, first, cpu, ready, run_keys, run_suggest = _one_run(
                args, directory, run, args.text if run == 0 or args.runs == 1 else args.text[:20])
            starts.append(on_screen)
            firsts.append(first)
            cpus.append(cpu)
            readies.append(ready)
            keys += run_keys
            suggest += run_suggest
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ms = lambda seconds: f"{seconds * 1000:.0f} ms"     # noqa: E731
    print(f"model: {args.model or 'default'}   config: {args.config or 'user/defaults'}   "
          f"runs: {args.runs}   cores: {os.cpu_count()}   "
          f"load average: {os.getloadavg()[0]:.1f}")
    print(f"start-up, launch to prompt on screen : median {ms(statistics.median(starts))}, "
          f"max {ms(max(starts))}")
    if all(f is not None for f in firsts):
        print(f"start-up, launch to first frame     : median {ms(statistics.median(firsts))}")
    if all(c is not None for c in cpus):
        print(f"start-up, CPU time to first frame   : median {ms(statistics.median(cpus))}")
    if all(r is not None for r in readies):
        print(f"engine ready (background load)      : median {ms(statistics.median(readies))}")
    if keys:
        print(f"key to screen ({len(keys)} keys)           : p50 {_percentile(keys, 0.5):.1f} ms, "
              f"p95 {_percentile(keys, 0.95):.1f} ms, max {max(keys):.1f} ms")
    if suggest:
        print(f"engine suggest() per keystroke      : p50 {_percentile(suggest, 0.5):.2f} ms, "
              f"p95 {_percentile(suggest, 0.95):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
