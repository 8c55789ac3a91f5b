"""``predtext repl``: the interactive terminal, or line mode when standard input is not a terminal.

Start-up is kept short by importing little before the prompt is drawn: the engine (NumPy, the
model) loads in a background thread while the prompt is already up.
"""

from __future__ import annotations

import logging
import os
import sys

from predtext.engine.suggestion import MAX_K, checked_k


def add_arguments(parser, command: str = "repl") -> None:
    parser.add_argument("--model", metavar="PATH",
                        help="model file to suggest from (default: the embedded default model)")
    parser.add_argument("--config", metavar="PATH",
                        help="engine config (TOML; default: the file `predtext config` names)")
    parser.add_argument("-k", type=int, default=6, metavar="N",
                        help=f"how many suggestions to show (1-{MAX_K}, default 6)")
    parser.add_argument("--learn", choices=("on", "off"), default=None,
                        help="learn from committed lines (default: on in the terminal, as the "
                             "config says; off in line mode)")
    parser.add_argument("--lines", action="store_true",
                        help="line mode even on a terminal: read lines, print their suggestions")
    parser.add_argument("--json", action="store_true",
                        help="line mode: print one JSON object per input line")


def _fail(message: str) -> int:
    print(f"predtext repl: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    try:
        checked_k(args.k)
    except ValueError:
        return _fail(f"-k must be between 1 and {MAX_K}, got {args.k}")
    if args.model is not None and not os.path.exists(args.model):
        return _fail(f"{args.model}: no such model file")
    config = None
    if args.config is not None:
        # A config the user named is read now, so a bad one stops us before the terminal starts.
        # The user's own config file is read with the engine, in the background: a newcomer's
        # first prompt does not wait for the TOML parser (a broken one is reported above it).
        from predtext.engine.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as error:
            return _fail(str(error))
    if args.lines or args.json or not sys.stdin.isatty():
        return _run_line_mode(args, config)
    return _run_terminal(args, config)


def _run_line_mode(args, config) -> int:
    from predtext.errors import PredtextError
    from predtext.repl.engine_handle import engine_loader
    from predtext.repl.linemode import run_line_mode

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("predtext: %(message)s"))
    logging.getLogger("predtext").addHandler(handler)
    try:
        engine = engine_loader(args.model, config)()
    except (PredtextError, OSError, ValueError) as error:   # ConfigError is a PredtextError
        return _fail(str(error))
    try:
        return run_line_mode(engine, sys.stdin, sys.stdout, k=args.k, as_json=args.json,
                             learn=args.learn == "on")
    except BrokenPipeError:         # the reader went away (`| head`): not an error
        return 0
    finally:
        engine.close()


class _AboveThePrompt(logging.Handler):
    """Shows the engine's warnings above the prompt instead of scribbling over the screen."""

    def __init__(self, repl):
        super().__init__(logging.WARNING)
        self.repl = repl

    def emit(self, record):
        try:
            self.repl.announce(f"predtext: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def _run_terminal(args, config) -> int:
    from predtext.repl.engine_handle import EngineHandle, engine_loader

    handle = EngineHandle()
    if args.learn is not None:          # otherwise the engine's config says
        handle.set_learning(args.learn == "on")
    name = os.path.basename(args.model) if args.model else "default"

    from predtext.repl.app import Repl
    from predtext.repl.history import PrivateFileHistory, history_path

    # The engine loads once the prompt is on screen: loading it alongside would compete with
    # drawing the prompt for the interpreter (both are mostly Python), and the prompt comes first.
    repl = Repl(handle, k=args.k, history=PrivateFileHistory(history_path()), engine_config=config,
                after_first_frame=lambda: handle.start(engine_loader(args.model, config), name))
    logger = logging.getLogger("predtext")
    above = _AboveThePrompt(repl)
    logger.addHandler(above)
    try:
        return repl.run()
    finally:
        logger.removeHandler(above)
        handle.close()
