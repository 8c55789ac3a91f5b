"""The engine's commands: `predtext ksr`, `predtext config`, `predtext forget`,
`predtext ngram build`.

Bad input (a missing or unreadable file, text that is not UTF-8, a broken config, an
impossible option) ends with one line on stderr, ``predtext COMMAND: error: ...``, and exit
status 2; set ``PREDTEXT_DEBUG=1`` for the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from predtext.commandline import EXIT_BAD_INPUT, one_line_errors, positive_int
from predtext.engine.suggestion import MAX_K
from predtext.errors import PredtextError

KSR_EPILOG = """\
The text is typed as a user with a suggestion bar would: before each character of a word
the engine offers k suggestions; when one completes the word it is taken (one keystroke)
and the space after it comes free (a phrase, when it writes the next words of the text too,
takes them all for that one keystroke); every other character is typed. Each finished line is
learned, as in the terminal on Enter (in memory only: your history file is neither read nor
written, and your config is not read unless given with --config).
Two users type it, each with a fresh engine: the reader looks at every list; the glancer
only before a word's first letter and after every third letter (the engine is asked at
every keystroke all the same). With --typos a share of the words is mistyped once (seeded):
a correction offered is taken, else the typo is rubbed out with backspaces and retyped.
KSR = 1 - (typed characters + backspaces + selections) / characters.
"""


def add_arguments(parser, command):
    """Add the options of ``command`` (ksr, config, forget or ngram) to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    one_line_errors(parser, command)
    {"ksr": _ksr_arguments, "config": _config_arguments, "forget": _forget_arguments,
     "ngram": _ngram_arguments}[command](parser)


def run(args) -> int:
    """Run the parsed command; returns the exit status."""
    try:
        return {"ksr": _run_ksr, "config": _run_config, "forget": _run_forget,
                "ngram": _run_ngram}[args.command](args)
    except (PredtextError, ValueError, TypeError, OSError, LookupError) as exc:
        if os.environ.get("PREDTEXT_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"predtext {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _suggestion_count(text: str) -> int:
    """argparse type for -k: what the engine can offer at once."""
    value = positive_int(text)
    if value > MAX_K:
        raise argparse.ArgumentTypeError(f"at most {MAX_K} suggestions, got {text!r}")
    return value


def _read_text(path: str) -> str:
    """The text of ``path`` (``-``: standard input), as UTF-8."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        if os.path.isdir(path):
            raise ValueError(f"{path}: is a directory, not a text file")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except OSError as exc:
            raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
        name = path
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _engine_config(path):
    """The engine config: ``path``, else the defaults (a measurement must not depend on the
    user's own settings), with the history kept in memory only."""
    from predtext.engine.config import default_config, load_config

    config = load_config(path) if path is not None else default_config()
    for spec in config.predictors:
        if spec.type == "history":
            spec.options["persist"] = False
    return config


# ---------------------------------------------------------------- ksr


def _ksr_arguments(parser):
    parser.description = ("Measure keystroke savings: type TEXT with the engine's suggestions "
                          "and count the keystrokes saved.")
    parser.epilog = KSR_EPILOG
    parser.add_argument("text", metavar="TEXT", help="a text file, or - for standard input")
    parser.add_argument("--model", metavar="PATH",
                        help="model file (predtext train) or n-gram file (predtext ngram build); "
                             "default: the configured or packaged model")
    parser.add_argument("-k", type=_suggestion_count, default=6, metavar="K",
                        help=f"suggestions offered per keystroke (1-{MAX_K}, default 6)")
    parser.add_argument("--config", metavar="PATH",
                        help="engine config file (default: the defaults, not yours)")
    parser.add_argument("--case-sensitive", action="store_true",
                        help="a suggestion must match the word's case to count")
    parser.add_argument("--user", choices=("reader", "glancer", "both"), default="both",
                        help="who types: the reader looks at every list, the glancer before "
                             "each word and after every 3rd letter (default: both, one after "
                             "the other)")
    parser.add_argument("--typos", type=_share, default=0.0, metavar="SHARE",
                        help="share of words mistyped once, 0 to 1 (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the typos (default 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (with --user both: one per user, by name)")


def _share(text: str) -> float:
    """argparse type for --typos: a share from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a share from 0 to 1, got {text!r}")
    return value


def _run_ksr(args):
    from predtext.engine.engine import Engine
    from predtext.engine.ksr import simulate

    text = _read_text(args.text)
    if not text:
        source = "standard input" if args.text == "-" else args.text
        raise ValueError(f"{source}: the text is empty")
    users = ("reader", "glancer") if args.user == "both" else (args.user,)
    summaries = {}
    for user in users:
        # A fresh engine for each user: what one learned must not help the other.
        engine = Engine.load(model=args.model, config=_engine_config(args.config))
        try:
            report = simulate(text, engine.suggest, args.k, learn=engine.learn,
                              case_sensitive=args.case_sensitive, user=user,
                              typos=args.typos, seed=args.seed)
        finally:
            engine.close()
        summary = report.summary()
        summary.update(k=args.k, user=user, typos_share=args.typos,
                       predictors=[p.name for p in engine.predictors])
        summaries[user] = summary
        if not args.json:
            _print_ksr(report, summary, args)
    if args.json:
        print(json.dumps(summaries[users[0]] if len(users) == 1 else summaries))
    return 0


def _print_ksr(report, summary, args):
    mistyped = (f"; {report.typos:,} words mistyped ({args.typos:.0%}), "
                f"{report.corrections_taken:,} corrections taken, "
                f"{report.backspaces:,} backspaces" if args.typos else "")
    print(f"{summary['user']}: KSR {report.ksr * 100:.1f}% on {report.characters:,} characters "
          f"(k={args.k}; predictors: {', '.join(summary['predictors']) or 'none'})")
    print(f"  keystrokes {report.keystrokes:,}: typed {report.typed:,}, selections "
          f"{report.selections:,} ({report.phrases_selected:,} of them phrases); free spaces "
          f"{report.free_spaces:,}; words selected {report.words_selected:,} of "
          f"{report.words:,}{mistyped}")
    print(f"  suggest() latency: p50 {report.latency_percentile(50):.2f} ms, "
          f"p90 {report.latency_percentile(90):.2f} ms, p99 {report.latency_percentile(99):.2f} ms "
          f"({len(report.latencies_ms):,} calls)")


# ---------------------------------------------------------------- config


def _config_arguments(parser):
    parser.description = ("Print where the engine config lives and the set-up it gives: "
                          "model, combination, predictors and their weights.")
    parser.add_argument("--default", action="store_true",
                        help="print the default config file instead (a starting point for yours)")


def _run_config(args):
    from predtext.engine.config import DEFAULT_CONFIG_TOML, config_path, load_config, user_data_dir
    from predtext.engine.engine import default_model

    if args.default:
        sys.stdout.write(DEFAULT_CONFIG_TOML)
        return 0
    path = config_path()
    state = "" if path.exists() else " (not found: the defaults apply)"
    config = load_config()
    model = default_model(config)
    if model is None:
        model_line = "none (no packaged default model; give one with --model or engine.model)"
    else:
        origin = "from the config" if config.model else "packaged default"
        model_line = f"{model} ({origin}{'' if model.exists() else ', missing'})"
    print(f"config file: {path}{state}")
    print(f"model: {model_line}")
    print(f"combination: {config.combination}; time budget: "
          f"{'none' if config.time_budget_ms is None else f'{config.time_budget_ms:g} ms'}; "
          f"repeat suggestions: {'yes' if config.repeat_suggestions else 'no'}; "
          f"learning: {'on' if config.learn else 'off'}; "
          f"word list: {'on' if config.word_list else 'off'}")
    print(f"user data: {user_data_dir()}")
    print("predictors:")
    width = max([len(spec.name) for spec in config.predictors] + [4])
    for spec in config.predictors:
        if not spec.enabled:
            status = "off"
        elif spec.type in ("neural", "ngram") and model is None and not spec.options.get("path"):
            status = "on, idle without a model"
        else:
            status = "on"
        options = {k: v for k, v in spec.options.items() if k != "name"}
        extra = f"  {json.dumps(options, default=str)}" if options else ""
        print(f"  {spec.name:<{width}}  type {spec.type:<13} weight {spec.weight:<6g} "
              f"{status}{extra}")
    if not config.predictors:
        print("  (none)")
    return 0


# ---------------------------------------------------------------- forget


def _forget_arguments(parser):
    parser.description = "Erase the typing history the engine has learned from what you wrote."


def _run_forget(args):
    from predtext.engine.config import REPL_HISTORY_FILE, load_config, user_data_dir
    from predtext.engine.history import HISTORY_FILE, forget_history

    directories = {Path(user_data_dir())}
    try:
        config = load_config()
    except PredtextError as exc:     # a broken config must not keep the history from going
        print(f"predtext forget: warning: {exc}", file=sys.stderr)
        config = None
    if config is not None:
        for spec in config.predictors:
            if spec.type == "history" and spec.options.get("data_dir"):
                directories.add(Path(os.path.expanduser(str(spec.options["data_dir"]))))
    for directory in sorted(directories):
        forget_history(directory)
        print(f"typing history erased ({directory / HISTORY_FILE})")
        # The terminal's line history (recalled with the up arrow) holds the same lines.
        lines = directory / REPL_HISTORY_FILE
        if lines.exists():
            lines.unlink()
            print(f"terminal line history erased ({lines})")
    return 0


# ---------------------------------------------------------------- ngram


def _ngram_arguments(parser):
    parser.description = ("Word n-gram models (interpolated Kneser-Ney) for the engine's "
                          "n-gram predictor.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="count the n-grams of text files into a model file",
                           description="Count the word n-grams of FILES (files, directories "
                                       "or globs) into an n-gram model file.")
    one_line_errors(build, "ngram build")
    build.add_argument("files", nargs="+", metavar="FILES",
                       help="text files, directories (read recursively) or glob patterns")
    build.add_argument("--out", required=True, metavar="PATH", help="n-gram file to write")
    build.add_argument("--order", type=positive_int, default=3, metavar="N",
                       help="n-gram order, 1 to 4 (default 3)")


def _run_ngram(args):
    from predtext.lm.corpus import resolve_paths
    from predtext.lm.ngram import MAX_ORDER, NGramModel

    if not 1 <= args.order <= MAX_ORDER:
        raise ValueError(f"--order must be from 1 to {MAX_ORDER}, got {args.order}")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; give a file name")
    documents = [_read_text(str(path)) for path in resolve_paths(args.files)]
    if not any(document.strip() for document in documents):
        raise ValueError("the files hold no text")
    model = NGramModel.from_text(documents, order=args.order)
    model.save(out)
    print(f"{args.order}-gram model of {len(documents)} file(s), "
          f"{model.vocabulary_size - 1:,} words, written to {out}")
    return 0
