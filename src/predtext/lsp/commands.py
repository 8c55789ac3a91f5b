"""``predtext lsp``: the language server, over standard input and output or ``--tcp PORT``."""

from __future__ import annotations

import logging
import sys

from predtext.commandline import EXIT_BAD_INPUT, one_line_errors, positive_int

#: How long a thread may hold the GIL while another waits for it, in this process.
SWITCH_INTERVAL_S = 0.0005


def add_arguments(parser, command: str = "lsp") -> None:
    one_line_errors(parser, command)
    parser.description = ("A language server that completes prose in editors (Neovim, Helix, "
                          "VS Code, Emacs): over standard input and output, or --tcp PORT.")
    parser.add_argument("--tcp", type=positive_int, metavar="PORT",
                        help="listen on 127.0.0.1:PORT for one editor instead of stdio")
    parser.add_argument("--log-level", choices=("error", "warning", "info", "debug"),
                        default="warning", help="what is logged on standard error")


def run(args) -> int:
    try:
        from predtext.lsp.server import build_server
    except ImportError as error:
        print(f"predtext lsp: error: the language server needs pygls ({error}); "
              "install it with: pip install 'predtext[lsp]'", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.tcp is not None and args.tcp > 65535:
        print(f"predtext lsp: error: --tcp must be a port from 1 to 65535, got {args.tcp}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("predtext lsp: %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, args.log_level.upper()))
    if args.log_level != "debug":
        # pygls logs a traceback for each bad message, which the editor is answered about.
        logging.getLogger("pygls").setLevel(logging.CRITICAL)
    # The model's own thread holds the GIL for long stretches (and overruns its budget on
    # a busy machine, running on in the background); at Python's default 5 ms switch
    # interval the threads that read, queue and answer each request waited that long for
    # it, several times a keystroke.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = build_server()
    if args.tcp is not None:
        return server.run_tcp(args.tcp)
    return server.run_stdio()
