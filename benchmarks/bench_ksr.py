"""Keystroke savings and suggest() latency: presage beside predtext, same text, same protocol.

    python benchmarks/bench_ksr.py [--corpus PATH] [--chars 3000] [-k 6] [--json]

Both engines are trained on the first 90% of the corpus (tinyshakespeare by default) and type the
first ``--chars`` characters of the last 10% under the protocol of
``predtext.engine.ksr.simulate``: before each character of a word, k suggestions; a suggestion
that completes the word (case-insensitive) costs one keystroke and the following space comes
free; each finished line goes to the engine's learning (as on Enter).

presage (Debian: ``apt-get install presage libpresage-data libpresage-dev``) is driven through
its C API (``libpresage.so``) with ctypes, so it runs in this process under exactly the same
simulator and timer as predtext. (presage's own ``presage_simulator`` counts keystrokes its own
way, so its figures would not be comparable.) Its 3-gram database is built by its own
``text2ngram`` from the same training text (orders 1-3, lower-case, sqlite), and it runs with its
default configuration (``/etc/presage.xml``: smoothed n-gram on that database, the online-learning
user n-gram starting from an empty database, recency, abbreviation expansion; meritocracy
combination; no repeated suggestions). presage learns online by itself as the text it watches
grows (ONLINE_LEARNING=yes), so its per-line learn hook does nothing.

When presage is not installed its rows are left out and predtext still runs.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from predtext.engine import Engine, NGramModel, simulate  # noqa: E402
from predtext.engine.config import DEFAULT_CONFIG_TOML  # noqa: E402
from predtext.engine.suggestion import Suggestion  # noqa: E402

DEFAULT_CORPUS = Path("/work/shared/corpora/tinyshakespeare.txt")
PRESAGE_CONFIG = Path("/etc/presage.xml")

_PAST_STREAM = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


class Presage:
    """presage through its C API: one instance, its past stream set to the text before the cursor."""

    def __init__(self, config_path: Path, settings: dict):
        library = ctypes.util.find_library("presage")
        if library is None:
            raise OSError("libpresage not found")
        lib = self._lib = ctypes.CDLL(library)
        lib.presage_new_with_config.argtypes = [_PAST_STREAM, ctypes.c_void_p, _PAST_STREAM,
                                                ctypes.c_void_p, ctypes.c_char_p,
                                                ctypes.POINTER(ctypes.c_void_p)]
        lib.presage_predict.argtypes = [ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p))]
        lib.presage_prefix.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
        lib.presage_config_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.presage_free_string_array.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.presage_free_string.argtypes = [ctypes.c_char_p]
        lib.presage_free.argtypes = [ctypes.c_void_p]
        self._past = ctypes.create_string_buffer(b"")
        self._future = ctypes.create_string_buffer(b"")
        # presage calls these to read the text around the cursor; the buffers outlive the calls.
        self._past_cb = _PAST_STREAM(lambda _: ctypes.addressof(self._past))
        self._future_cb = _PAST_STREAM(lambda _: ctypes.addressof(self._future))
        self._handle = ctypes.c_void_p()
        self._check(lib.presage_new_with_config(self._past_cb, None, self._future_cb, None,
                                                str(config_path).encode(), ctypes.byref(self._handle)),
                    "presage_new_with_config")
        for variable, value in settings.items():
            self._check(lib.presage_config_set(self._handle, variable.encode(), str(value).encode()),
                        f"config {variable}")

    @staticmethod
    def _check(code: int, what: str) -> None:
        if code != 0:
            raise RuntimeError(f"presage: {what} failed (error {code})")

    def suggest(self, text: str, k: int):
        self._past = ctypes.create_string_buffer(text.encode("utf-8"))
        words = ctypes.POINTER(ctypes.c_char_p)()
        self._check(self._lib.presage_predict(self._handle, ctypes.byref(words)), "predict")
        found = []
        i = 0
        while words[i] is not None:
            found.append(words[i].decode("utf-8", "replace"))
            i += 1
        self._lib.presage_free_string_array(words)
        prefix = ctypes.c_char_p()
        self._check(self._lib.presage_prefix(self._handle, ctypes.byref(prefix)), "prefix")
        typed = len(prefix.value.decode("utf-8", "replace")) if prefix.value else 0
        # presage's words complete the token it sees as current; it replaces that token.
        return [Suggestion(w, typed, 0.0, "presage") for w in found[:k]]

    def close(self) -> None:
        if self._handle:
            self._lib.presage_free(self._handle)
            self._handle = ctypes.c_void_p()


def build_presage_database(train_path: Path, database: Path) -> None:
    """3-gram sqlite database by presage's own text2ngram (orders 1, 2, 3; lower-case)."""
    for n in (1, 2, 3):
        command = ["text2ngram", "-n", str(n), "-l", "-f", "sqlite", "-o", str(database)]
        if n > 1:
            command.append("-a")
        subprocess.run(command + [str(train_path)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_presage(workdir: Path, train: str, test: str, k: int, predictors: str = None):
    train_path = workdir / "train.txt"
    train_path.write_text(train, encoding="utf-8")
    database = workdir / "presage_3gram.db"
    if not database.exists():
        build_presage_database(train_path, database)
    user_database = workdir / f"presage_user_{predictors or 'default'}.db"
    if user_database.exists():
        user_database.unlink()
    settings = {
        "Presage.Predictors.DefaultSmoothedNgramPredictor.DBFILENAME": database,
        "Presage.Predictors.UserSmoothedNgramPredictor.DBFILENAME": user_database,
        "Presage.Selector.SUGGESTIONS": k,
    }
    if predictors:
        settings["Presage.PredictorRegistry.PREDICTORS"] = predictors
    presage = Presage(PRESAGE_CONFIG, settings)
    try:
        return simulate(test, presage.suggest, k, learn=lambda line: None)
    finally:
        presage.close()


def run_predtext(train: str, test: str, k: int, config: dict):
    model = NGramModel.from_text(train)
    engine = Engine.load(model=model, config=config)
    try:
        return simulate(test, engine.suggest, k, learn=engine.learn)
    finally:
        engine.close()


PREDTEXT_NGRAM_ONLY = {"predictors": {"ngram": {"weight": 1.0}}}
# The default configuration, with the history kept in memory (no file in the user's home).
PREDTEXT_DEFAULT = tomllib.loads(DEFAULT_CONFIG_TOML)
PREDTEXT_DEFAULT["predictors"]["history"]["persist"] = False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--chars", type=int, default=3000, help="characters of the held-out part to type")
    parser.add_argument("-k", type=int, default=6, help="suggestions offered per keystroke")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    text = args.corpus.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, test = text[:cut], text[cut:cut + args.chars]

    rows = []
    have_presage = (shutil.which("text2ngram") and ctypes.util.find_library("presage")
                    and PRESAGE_CONFIG.exists())
    with tempfile.TemporaryDirectory(prefix="bench_ksr_") as tmp:
        if have_presage:
            rows.append(("presage (default predictors)", run_presage(Path(tmp), train, test, args.k)))
            rows.append(("presage (smoothed n-gram alone)",
                         run_presage(Path(tmp), train, test, args.k, "DefaultSmoothedNgramPredictor")))
        else:
            print("presage is not installed (apt-get install presage libpresage-data "
                  "libpresage-dev): its rows are left out", file=sys.stderr)
        rows.append(("predtext (n-gram alone)", run_predtext(train, test, args.k, PREDTEXT_NGRAM_ONLY)))
        rows.append(("predtext (default config, no neural LM)",
                     run_predtext(train, test, args.k, PREDTEXT_DEFAULT)))

    if args.json:
        print(json.dumps({name: report.summary() for name, report in rows}, indent=2))
        return 0
    print(f"KSR on the first {len(test)} characters of the held-out 10% of {args.corpus.name}, "
          f"k={args.k}, case-insensitive\n")
    header = f"{'engine':42} {'KSR %':>6} {'typed':>6} {'select':>6} {'chars':>6} {'p50 ms':>7} {'p99 ms':>7}"
    print(header)
    print("-" * len(header))
    for name, report in rows:
        print(f"{name:42} {report.ksr * 100:6.1f} {report.typed:6d} {report.selections:6d} "
              f"{report.characters:6d} {report.latency_percentile(50):7.2f} "
              f"{report.latency_percentile(99):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
