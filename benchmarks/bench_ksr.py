"""Keystroke savings and suggest() latency: presage beside predtext, same text, same protocol.

    python benchmarks/bench_ksr.py [--model PATH | --train] [--chars 3000] [-k 6] [--json]
    python benchmarks/bench_ksr.py --english [--model PATH]
    python benchmarks/bench_ksr.py --tune --model PATH_TRAINED_ON_THE_FIRST_80_PERCENT

tinyshakespeare (the default): both engines learn from the first 90% of the corpus and type the
first ``--chars`` characters of the last 10% under the protocol of
``predtext.engine.ksr.simulate``: before each character of a word, k suggestions; a suggestion
that completes the word (case-insensitive) costs one keystroke and the following space comes
free (a phrase counts when it writes the text through the end of a later word: one keystroke for
all of it; presage offers none, and the "single words only" row shows predtext without them);
each finished line goes to the engine's learning (as on Enter). ``--model`` is a model
file from ``predtext train`` on that 90% (``--train`` makes one: ``predtext train CORPUS
--time-budget 300``, whose default split holds out exactly the last 10%); without either, the
predtext rows have no neural model.

``--english``: the third target. The text is ``benchmarks/data/english_original.txt``, written
for this benchmark (no corpus holds it), or ``--text`` another one (``benchmarks/data/README.md``
names them and their sources). presage's n-gram database is built from every shared
corpus; predtext is the default engine: ``Engine.load()`` with the packaged default model (or
``--model``), and, when no model is installed, an n-gram of the same corpora.

``--tune``: the combination (policy and weights) on the tinyshakespeare *training* part: the
3,000 characters from 80% of the corpus on, typed with a model trained on the first 80% only
(``--train --tune`` trains one), so the text tuned on is new to every predictor. Prints the
grid sorted by KSR.

presage (Debian: ``apt-get install presage libpresage-data libpresage-dev``) is driven through
its C API (``libpresage.so``) with ctypes, so it runs in this process under exactly the same
simulator and timer as predtext. (presage's own ``presage_simulator`` counts keystrokes its own
way, so its figures would not be comparable.) Its 3-gram database is built by its own
``text2ngram`` from the same training text (orders 1-3, lower-case, sqlite), and it runs with its
default configuration (``/etc/presage.xml``: smoothed n-gram on that database, the online-learning
user n-gram starting from an empty database, recency, abbreviation expansion; meritocracy
combination; no repeated suggestions). Left to itself presage learns inside its predict calls
as the text it watches grows; here, as predtext does, it learns each finished line through
``presage_learn``, outside the timer (ONLINE_LEARNING=no), so that the two engines' latencies
measure the same work. The learning is the same: 49.70% against 49.67% KSR, with p50/p99
3.35/5.54 ms against 3.53/6.80 ms (measured on the tinyshakespeare test text).

When presage is not installed its rows are left out and predtext still runs.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from predtext.engine.config import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from predtext.engine import Engine, NGramModel, simulate  # noqa: E402
from predtext.engine.config import DEFAULT_CONFIG_TOML  # noqa: E402
from predtext.engine.suggestion import Suggestion  # noqa: E402

DEFAULT_CORPUS = Path("/work/shared/corpora/tinyshakespeare.txt")
PRESAGE_CONFIG = Path("/etc/presage.xml")
ENGLISH_TEXT = ROOT / "benchmarks" / "data" / "english_original.txt"

_PAST_STREAM = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


class Presage:
    """presage through its C API: one instance, its past stream set to the text before the
    cursor."""

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
        lib.presage_learn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.presage_free.argtypes = [ctypes.c_void_p]
        self._past = ctypes.create_string_buffer(b"")
        self._future = ctypes.create_string_buffer(b"")
        # presage calls these to read the text around the cursor; the buffers outlive the calls.
        self._past_cb = _PAST_STREAM(lambda _: ctypes.addressof(self._past))
        self._future_cb = _PAST_STREAM(lambda _: ctypes.addressof(self._future))
        self._handle = ctypes.c_void_p()
        self._check(lib.presage_new_with_config(self._past_cb, None, self._future_cb, None,
                                                str(config_path).encode(),
                                                ctypes.byref(self._handle)),
                    "presage_new_with_config")
        for variable, value in settings.items():
            self._check(lib.presage_config_set(self._handle, variable.encode(),
                                               str(value).encode()),
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
        self._lib.presage_free_string(prefix)
        # presage's words complete the token it sees as current; it replaces that token.
        return [Suggestion(w, typed, 0.0, "presage") for w in found[:k]]

    def learn(self, line: str) -> None:
        """Learn a finished line into the user n-gram (what ONLINE_LEARNING does per word)."""
        self._check(self._lib.presage_learn(self._handle, (line + "\n").encode("utf-8")), "learn")

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
    database = workdir / f"presage_3gram_{len(train)}.db"
    if not database.exists():
        building = database.with_suffix(".part")
        building.unlink(missing_ok=True)
        build_presage_database(train_path, building)
        building.replace(database)
    user_database = workdir / f"presage_user_{predictors or 'default'}.db"
    if user_database.exists():
        user_database.unlink()
    settings = {
        "Presage.Predictors.DefaultSmoothedNgramPredictor.DBFILENAME": database,
        "Presage.Predictors.UserSmoothedNgramPredictor.DBFILENAME": user_database,
        "Presage.Selector.SUGGESTIONS": k,
        "Presage.ContextTracker.ONLINE_LEARNING": "no",     # it learns each line: see above
    }
    if predictors:
        settings["Presage.PredictorRegistry.PREDICTORS"] = predictors
    presage = Presage(PRESAGE_CONFIG, settings)
    try:
        return simulate(test, presage.suggest, k, learn=presage.learn, **SIMULATED)
    finally:
        presage.close()


def run_predtext(test: str, k: int, config: dict, model=None):
    """Type ``test`` with an engine over ``model`` (a model file, an NGramModel or None)."""
    engine = Engine.load(model=model, config=config)
    try:
        return simulate(test, engine.suggest, k, learn=engine.learn, **SIMULATED)
    finally:
        engine.close()


def _config(weights: dict, policy: str = None) -> dict:
    """The default configuration restricted to ``weights`` (name -> weight), history in memory."""
    config = copy.deepcopy(PREDTEXT_DEFAULT)
    for name, table in config["predictors"].items():
        table["enabled"] = name in weights
        table["weight"] = weights.get(name, table["weight"])
    if policy:
        config["engine"]["combination"] = policy
    return config


def _words_only(config: dict) -> dict:
    """``config`` without phrase suggestions: every suggestion is one word, as presage's are."""
    for name in ("ngram", "history"):
        if name in config["predictors"]:
            config["predictors"][name]["phrase_words"] = 1
    return config


# Who types (--user, --typos, --seed): the same simulated user for every row of a run.
SIMULATED = {}

# The default configuration, with the history kept in memory (no file in the user's home).
PREDTEXT_DEFAULT = tomllib.loads(DEFAULT_CONFIG_TOML)
PREDTEXT_DEFAULT["predictors"]["history"]["persist"] = False
DEFAULT_WEIGHTS = {name: table["weight"] for name, table in PREDTEXT_DEFAULT["predictors"].items()}
NO_NEURAL = {name: w for name, w in DEFAULT_WEIGHTS.items() if name != "neural"}


def train_model(corpus: Path, out: Path, seconds: float) -> Path:
    """``predtext train CORPUS --out OUT --time-budget SECONDS`` (its split holds out the last
    10%)."""
    print(f"training {out.name} on the first 90% of {corpus.name} for {seconds:g} s ...",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "predtext.cli", "train", str(corpus), "--out", str(out),
                    "--time-budget", str(seconds), "--quiet", "--no-plot"], check=True)
    return out


def have_presage() -> bool:
    return bool(shutil.which("text2ngram") and ctypes.util.find_library("presage")
                and PRESAGE_CONFIG.exists())


def shakespeare_rows(args, tmp: Path):
    text = args.corpus.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, test = text[:cut], text[cut:cut + args.chars]
    model = args.model
    if args.train:
        model = train_model(args.corpus, args.train_out or tmp / "model.safetensors", args.seconds)
    rows = []
    title = (f"KSR on the first {len(test)} characters of the held-out 10% of {args.corpus.name}, "
             f"k={args.k}, case-insensitive, {_who()}"
             + (f"; model {Path(model).name}" if model else ""))
    if have_presage() and args.only != "predtext":
        rows.append(("presage (default predictors)", run_presage(tmp, train, test, args.k)))
        if args.only != "presage":
            rows.append(("presage (smoothed n-gram alone)",
                         run_presage(tmp, train, test, args.k, "DefaultSmoothedNgramPredictor")))
    elif args.only != "predtext":
        print("presage is not installed (apt-get install presage libpresage-data "
              "libpresage-dev): its rows are left out", file=sys.stderr)
    if args.only == "presage":
        return title, rows
    rows.append(("predtext (n-gram alone)",
                 run_predtext(test, args.k, _config({"ngram": 1.0}), NGramModel.from_text(train))))
    rows.append(("predtext (default config, no neural LM)",
                 run_predtext(test, args.k, _config(NO_NEURAL), NGramModel.from_text(train))))
    if model is not None:
        rows.append(("predtext (neural LM alone)",
                     run_predtext(test, args.k, _config({"neural": 1.0}), model)))
        rows.append(("predtext (default config, model file)",
                     run_predtext(test, args.k, _config(DEFAULT_WEIGHTS), model)))
        rows.append(("predtext (same, single words only)",
                     run_predtext(test, args.k, _words_only(_config(DEFAULT_WEIGHTS)), model)))
    return title, rows


def _who() -> str:
    """The simulated user of this run, in words."""
    who = SIMULATED.get("user", "reader")
    if SIMULATED.get("typos"):
        who += f", {SIMULATED['typos']:.0%} of words mistyped (seed {SIMULATED.get('seed', 0)})"
    return who


def all_corpora() -> list:
    root = DEFAULT_CORPUS.parent
    return [DEFAULT_CORPUS] + sorted((root / "gutenberg").glob("*.txt"))


def english_rows(args, tmp: Path):
    test = args.text.read_text(encoding="utf-8")
    corpora = all_corpora()
    train = "\n\n".join(path.read_text(encoding="utf-8") for path in corpora)
    rows = []
    if have_presage() and args.only != "predtext":
        rows.append(("presage (default predictors)", run_presage(tmp, train, test, args.k)))
    elif args.only != "predtext":
        print("presage is not installed: its rows are left out", file=sys.stderr)
    from predtext.engine.engine import default_model

    model = args.model or default_model()
    if args.only == "presage":
        pass
    elif model is not None:
        rows.append(("predtext (default engine)",
                     run_predtext(test, args.k, PREDTEXT_DEFAULT, model)))
        rows.append(("predtext (same, single words only)",
                     run_predtext(test, args.k, _words_only(copy.deepcopy(PREDTEXT_DEFAULT)),
                                  model)))
    else:
        print("no packaged default model: predtext runs on an n-gram of the same corpora",
              file=sys.stderr)
        ngram = NGramModel.from_text([path.read_text(encoding="utf-8") for path in corpora])
        rows.append(("predtext (default, n-gram of the corpora)",
                     run_predtext(test, args.k, PREDTEXT_DEFAULT, ngram)))
    title = (f"KSR on {args.text.name} ({len(test)} characters, in no corpus), k={args.k}, "
             f"case-insensitive, {_who()}; trained on {len(corpora)} corpora"
             + (f"; model {Path(model).name}" if model else ""))
    return title, rows


TUNING_GRID = [("linear", {"neural": n, "ngram": g, "history": 0.35, "dictionary": 0.02,
                           "abbreviations": 1.0})
               for n in (0.25, 0.5, 0.75, 1.0) for g in (0.35, 0.65, 1.0)] + \
              [("max", {"neural": n, "ngram": 0.65, "history": 0.35, "dictionary": 0.02,
                        "abbreviations": 1.0}) for n in (0.5, 0.65, 0.8, 1.0)]


def tuning_rows(args, tmp: Path):
    text = args.corpus.read_text(encoding="utf-8")
    start = int(len(text) * 0.8)
    tune = text[start:start + args.chars]
    model = args.model
    if args.train:
        first = tmp / "first80.txt"
        first.write_text(text[:start], encoding="utf-8")
        model = train_model(first, args.train_out or tmp / "model80.safetensors", args.seconds)
    if model is None:
        raise SystemExit("--tune needs --model (trained on the first 80%) or --train")
    from predtext.engine.engine import load_models

    language_model, ngram = load_models(model)
    rows = []
    for policy, weights in TUNING_GRID:
        language_model.ngram = copy.deepcopy(ngram)      # each run learns from a fresh copy
        name = f"{policy:6} " + " ".join(f"{k[:4]}={v:g}" for k, v in weights.items()
                                         if k in ("neural", "ngram"))
        rows.append((name, run_predtext(tune, args.k, _config(weights, policy), language_model)))
        print(f"{name:42} {rows[-1][1].ksr * 100:5.1f}", file=sys.stderr)
    rows.sort(key=lambda row: -row[1].ksr)
    title = (f"combination tuned on {len(tune)} characters from 80% of {args.corpus.name} "
             f"(training part), k={args.k}")
    return title, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--chars", type=int, default=3000,
                        help="characters of the held-out part to type")
    parser.add_argument("-k", type=int, default=6, help="suggestions offered per keystroke")
    parser.add_argument("--model", help="model file from predtext train (on the first 90%%)")
    parser.add_argument("--train", action="store_true",
                        help="train the model first (predtext train --time-budget SECONDS)")
    parser.add_argument("--train-out", type=Path,
                        help="where --train writes the model (default: a temporary file)")
    parser.add_argument("--seconds", type=float, default=300,
                        help="training time budget for --train")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--english", action="store_true",
                      help="the original English text, engines trained on all shared corpora")
    mode.add_argument("--tune", action="store_true",
                      help="grid-search the combination on the training part")
    parser.add_argument("--user", choices=("reader", "glancer"), default="reader",
                        help="the simulated user: looks at every list (reader) or before each "
                             "word and after every 3rd letter (glancer)")
    parser.add_argument("--typos", type=float, default=0.0,
                        help="share of words the typist mistypes once (seeded), 0 to 1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the typos")
    parser.add_argument("--only", choices=("presage", "predtext"),
                        help="run only that engine's rows")
    parser.add_argument("--text", type=Path, default=ENGLISH_TEXT,
                        help="with --english: the text typed (default: %(default)s; "
                             "benchmarks/data/README.md lists the others and their sources)")
    parser.add_argument("--config", type=Path,
                        help="a TOML file laid over predtext's default config for every row")
    parser.add_argument("--budget-ms", type=float,
                        help="predtext's per-keystroke time budget (default: the config's); a "
                             "large one keeps the KSR figures deterministic on a loaded machine")
    parser.add_argument("--workdir", type=Path,
                        help="keep presage's databases here between runs (default: a "
                             "temporary folder; the database is rebuilt when the training "
                             "text's size changes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    SIMULATED.update(user=args.user, typos=args.typos, seed=args.seed)
    if args.config is not None:
        over = tomllib.loads(args.config.read_text(encoding="utf-8"))
        for section, table in over.items():
            for name, value in table.items():
                target = PREDTEXT_DEFAULT.setdefault(section, {})
                if isinstance(value, dict):
                    target.setdefault(name, {}).update(value)
                else:
                    target[name] = value
    if args.budget_ms is not None:
        PREDTEXT_DEFAULT["engine"]["time_budget_ms"] = args.budget_ms
    DEFAULT_WEIGHTS.update({name: table.get("weight", 1.0)
                            for name, table in PREDTEXT_DEFAULT["predictors"].items()})
    NO_NEURAL.clear()
    NO_NEURAL.update({name: w for name, w in DEFAULT_WEIGHTS.items() if name != "neural"})
    # Nothing learned reaches the user's own history or config, whatever the rows do.
    os.environ["PREDTEXT_DATA_DIR"] = tempfile.mkdtemp(prefix="bench_ksr_data_")
    os.environ["PREDTEXT_CONFIG"] = os.path.join(os.environ["PREDTEXT_DATA_DIR"], "none.toml")

    with tempfile.TemporaryDirectory(prefix="bench_ksr_") as tmp:
        work = Path(tmp)
        if args.workdir is not None:
            work = args.workdir / ("english" if args.english else "tune" if args.tune
                                   else f"{args.corpus.stem}_{args.chars}")
            work.mkdir(parents=True, exist_ok=True)
        if args.english:
            title, rows = english_rows(args, work)
        elif args.tune:
            title, rows = tuning_rows(args, work)
        else:
            title, rows = shakespeare_rows(args, work)

    if args.json:
        print(json.dumps({name: report.summary() for name, report in rows}, indent=2))
        return 0
    print(title + "\n")
    header = (f"{'engine':42} {'KSR %':>6} {'typed':>6} {'select':>6} {'phrase':>6} {'chars':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7}")
    print(header)
    print("-" * len(header))
    for name, report in rows:
        print(f"{name:42} {report.ksr * 100:6.1f} {report.typed:6d} {report.selections:6d} "
              f"{report.phrases_selected:6d} {report.characters:6d} "
              f"{report.latency_percentile(50):7.2f} {report.latency_percentile(99):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
