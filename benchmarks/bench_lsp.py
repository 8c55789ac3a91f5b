"""The language server under a real client: completion round trip while typing, and keystroke
savings through the server against the engine's own on the same text.

    python benchmarks/bench_lsp.py [--model PATH] [--config PATH] [--text PATH] [--wpm 150]
                                   [--chars 600] [-k 6] [--json]

Typing. ``predtext lsp`` runs as a subprocess; a plain JSON-RPC client (reading answers with
``json.loads`` as an editor does, not mapping them to objects) opens a document and types the
text key by key at ``--wpm`` words a minute (five characters a word: 80 ms a key at 150 wpm).
Each key is an incremental ``didChange`` followed by a ``completion`` request at the cursor, as
an editor sends them; the round trip is timed from sending the request to reading its answer.
Beside it, the same keystrokes go straight to an Engine in this process (``suggest`` timed
alone): the difference is what the protocol, the JSON and the second process cost.

Keystroke savings. ``predtext.engine.ksr.simulate`` types the whole text twice: once asking the
engine, once asking the server (each question becomes an edit of the document and a completion
request at its end; each answer's items become suggestions again, with ``replace`` read back
from the edit's range). The savings must be equal and the suggestions identical, call by call:
nothing lost in translation. Both run with a time budget long enough that no predictor is ever
skipped for being slow, so that the comparison does not hang on the machine's load.

The server and the engine use a temporary data directory (no history of yours is read or
written) and your config unless ``--config`` names one; the model is the packaged default one
unless ``--model`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from predtext.engine import Engine, simulate  # noqa: E402
from predtext.engine.config import load_config  # noqa: E402
from predtext.lsp.positions import UTF16, line_content, split_lines, to_index, to_units  # noqa: E402

DEFAULT_TEXT = ROOT / "benchmarks" / "data" / "english_original.txt"
URI = "file:///bench/typing.txt"
CODE_URI = "file:///bench/code.py"


def percentile(values, q):
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def position(text: str) -> dict:
    """The LSP (UTF-16) position of the end of ``text``."""
    lines = split_lines(text)
    return {"line": len(lines) - 1, "character": to_units(lines[-1], len(lines[-1]))}


class Session:
    """A server process and a plain JSON-RPC client, as an editor is: it writes each message
    and reads the answers with ``json.loads`` (no object mapping), with one open document kept
    equal to ``self.text``."""

    def __init__(self, env, settings):
        self.env, self.settings = env, settings
        self.text, self.version, self.next_id = "", 1, 0
        self.pending = {}

    async def start(self):
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "predtext.cli", "lsp", env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        self.reader = asyncio.create_task(self._read())
        await self.request("initialize", {"processId": os.getpid(), "capabilities": {},
                                          "initializationOptions": self.settings})
        self.notify("initialized", {})
        self.open(URI, "plaintext")

    def open(self, uri, language):
        self.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": language, "version": 1, "text": ""}})

    async def _read(self):
        stream = self.process.stdout
        while True:
            length = None
            while (line := await stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:
                return
            message = json.loads(await stream.readexactly(length))
            future = self.pending.pop(message.get("id"), None) if "method" not in message else None
            if future is not None:
                future.set_result(message)

    def _write(self, message):
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def notify(self, method, params):
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method, params):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def set_text(self, new: str) -> None:
        """One incremental edit taking the document from ``self.text`` to ``new``."""
        old = self.text
        common = 0
        limit = min(len(old), len(new))
        while common < limit and old[common] == new[common]:
            common += 1
        if common and old[common - 1:common + 1] == "\r\n":
            common -= 1
        self.version += 1
        self.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": self.version},
            "contentChanges": [{"range": {"start": position(old[:common]), "end": position(old)},
                                "text": new[common:]}]})
        self.text = new

    async def complete(self, uri=URI):
        """The completion list at the end of the document, and the round trip in ms."""
        started = time.perf_counter()
        result = await self.request("textDocument/completion", {
            "textDocument": {"uri": uri},
            "position": position(self.text) if uri == URI else {"line": 0, "character": 0}})
        return result, (time.perf_counter() - started) * 1000.0

    async def stop(self):
        await self.request("shutdown", None)
        self.notify("exit", None)
        await self.process.wait()
        self.reader.cancel()


class Offered:
    """A completion item read back as a suggestion: ``text`` and ``replace``."""

    def __init__(self, text, replace):
        self.text, self.replace = text, replace

    def key(self):
        return (self.text, self.replace)


def as_suggestions(result, text: str):
    """The items of a completion at the end of ``text``, as the suggestions they came from."""
    line = line_content(split_lines(text)[-1])
    end = len(line)
    out = []
    for item in result["items"]:
        start = to_index(line, item["textEdit"]["range"]["start"]["character"], UTF16)
        out.append(Offered(item["label"], end - start))
    return out


async def typing_run(env, settings, text, wpm):
    """Type ``text`` key by key at ``wpm``; the round trip of each completion, in ms."""
    session = Session(env, settings)
    await session.start()
    await session.complete()            # waits for the model to load: not timed
    interval = 60.0 / (wpm * 5)
    round_trips = []
    next_key = time.perf_counter()
    for i in range(1, len(text) + 1):
        delay = next_key - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        next_key += interval
        session.set_text(text[:i])
        _, ms = await session.complete()
        round_trips.append(ms)
    # The floor: the same request on a code file, which the server answers (empty) on its
    # message loop without the engine -- the protocol, the JSON and the two processes alone.
    session.open(CODE_URI, "python")
    floor = []
    for _ in range(len(text)):
        await asyncio.sleep(interval)
        floor.append((await session.complete(CODE_URI))[1])
    await session.stop()
    return round_trips, floor


async def ksr_run(env, settings, text, k):
    """``simulate`` through the server; the report and every answer."""
    session = Session(env, settings)
    await session.start()
    await session.complete()
    loop = asyncio.get_running_loop()
    answers = []

    # simulate() calls suggest() and waits for the answer: it runs in a thread, handing each
    # question to the client's loop.
    def threaded_suggest(before, k_):
        future = asyncio.run_coroutine_threadsafe(ask(before), loop)
        offered = future.result()
        answers.append([s.key() for s in offered])
        return offered

    async def ask(before):
        session.set_text(before)
        result, _ = await session.complete()
        return as_suggestions(result, before)

    report = await asyncio.to_thread(simulate, text, threaded_suggest, k)
    await session.stop()
    return report, answers


def engine_run(model, config, text, k):
    """``simulate`` straight on an engine; the report and every answer."""
    engine = Engine.load(model=model, config=config)
    answers = []

    def suggest(before, k_):
        offered = engine.suggest(before, k_)
        answers.append([(s.text, s.replace) for s in offered])
        return offered

    try:
        return simulate(text, suggest, k), answers
    finally:
        engine.close()


def engine_latency(model, config, text, k, wpm):
    """The same keystrokes as the typing run, at the same pace, straight to an engine:
    suggest() alone, in ms. (Unpaced, a slow predictor would still be busy with the previous
    key and be skipped: faster, but not the same work.)"""
    engine = Engine.load(model=model, config=config)
    engine.suggest("", k)
    interval = 60.0 / (wpm * 5)
    times = []
    next_key = time.perf_counter()
    try:
        for i in range(1, len(text) + 1):
            time.sleep(max(0.0, next_key - time.perf_counter()))
            next_key += interval
            started = time.perf_counter()
            engine.suggest(text[:i], k)
            times.append((time.perf_counter() - started) * 1000.0)
    finally:
        engine.close()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file (default: the packaged default model)")
    parser.add_argument("--config", help="engine config (default: yours, or the defaults)")
    parser.add_argument("--text", default=str(DEFAULT_TEXT), help="the text to type")
    parser.add_argument("--chars", type=int, default=600,
                        help="characters typed at --wpm for the latency (default 600)")
    parser.add_argument("--ksr-chars", type=int, default=None,
                        help="characters typed for the keystroke savings (default: the whole text)")
    parser.add_argument("--wpm", type=float, default=150.0, help="typing speed (default 150)")
    parser.add_argument("-k", type=int, default=6, help="suggestions per completion (default 6)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    text = Path(args.text).read_text(encoding="utf-8")
    ksr_text = text[:args.ksr_chars] if args.ksr_chars else text
    config_file = args.config or os.environ.get("PREDTEXT_CONFIG")
    with tempfile.TemporaryDirectory(prefix="bench-lsp-") as tmp:
        os.environ["PREDTEXT_DATA_DIR"] = str(Path(tmp) / "data")   # here and in the server
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        if config_file:
            env["PREDTEXT_CONFIG"] = str(config_file)
        settings = {"k": args.k, "model": args.model}
        typed = text[:args.chars]
        round_trips, floor = asyncio.run(typing_run(env, settings, typed, args.wpm))
        alone = engine_latency(args.model, load_config(config_file), typed, args.k, args.wpm)

        # The savings: a config that lets every predictor take its time (over the defaults,
        # unless a config was named: then that one, as it is, on both sides).
        fair = config_file
        if fair is None:
            fair = Path(tmp) / "fair.toml"
            fair.write_text("[engine]\ntime_budget_ms = 600000\n")
        engine_report, engine_answers = engine_run(args.model, load_config(fair), ksr_text, args.k)
        server_report, server_answers = asyncio.run(
            ksr_run(dict(env, PREDTEXT_CONFIG=str(fair)), settings, ksr_text, args.k))

    differing = sum(a != b for a, b in zip(engine_answers, server_answers, strict=False))
    differing += abs(len(engine_answers) - len(server_answers))
    result = {
        "cpu": cpu_name(), "keys_typed": len(round_trips), "wpm": args.wpm, "k": args.k,
        "round_trip_p50_ms": percentile(round_trips, 50),
        "round_trip_p90_ms": percentile(round_trips, 90),
        "round_trip_p99_ms": percentile(round_trips, 99),
        "protocol_floor_p50_ms": percentile(floor, 50),
        "protocol_floor_p99_ms": percentile(floor, 99),
        "load_average": os.getloadavg()[0],
        "suggest_alone_p50_ms": percentile(alone, 50),
        "suggest_alone_p99_ms": percentile(alone, 99),
        "ksr_engine": engine_report.ksr, "ksr_server": server_report.ksr,
        "ksr_characters": engine_report.characters,
        "suggest_calls": len(engine_answers), "calls_with_different_answers": differing,
        "median_overhead_ms": statistics.median(round_trips) - statistics.median(alone),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"predtext lsp, {result['cpu']}")
    print(f"typing {result['keys_typed']} keys at {args.wpm:g} wpm, k={args.k}: completion round "
          f"trip p50 {result['round_trip_p50_ms']:.2f} ms, p90 {result['round_trip_p90_ms']:.2f} "
          f"ms, p99 {result['round_trip_p99_ms']:.2f} ms (targets: p50 <= 5, p99 <= 15)")
    print(f"  the same keys to the engine alone: suggest() p50 {result['suggest_alone_p50_ms']:.2f}"
          f" ms, p99 {result['suggest_alone_p99_ms']:.2f} ms")
    print(f"  a request answered without the engine (the protocol floor): p50 "
          f"{result['protocol_floor_p50_ms']:.2f} ms, p99 {result['protocol_floor_p99_ms']:.2f} ms"
          f" (load average {result['load_average']:.1f})")
    print(f"keystroke savings on {result['ksr_characters']:,} characters: engine "
          f"{engine_report.ksr * 100:.2f}%, through the server {server_report.ksr * 100:.2f}%; "
          f"{differing} of {len(engine_answers):,} suggest calls answered differently")
    return 0 if differing == 0 and engine_report.ksr == server_report.ksr else 1


if __name__ == "__main__":
    sys.exit(main())
