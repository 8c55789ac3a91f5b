"""The `predtext` command.

Each subcommand lives beside the code it drives, in a module with two functions:
``add_arguments(parser)`` and ``run(args) -> int``.  They are imported only when their
command runs, so `predtext repl` starts without loading the training code.
"""

import argparse
import sys

# command -> (module, one-line help)
COMMANDS = {
    "repl": ("predtext.repl.commands", "interactive autocomplete terminal (the default)"),
    "train": ("predtext.lm.commands", "train a language model on your own text"),
    "eval": ("predtext.lm.commands", "evaluate a model on text: loss, perplexity, bpc"),
    "sample": ("predtext.lm.commands", "generate text from a model"),
    "quantize": ("predtext.lm.commands", "store a model's weights in 8 bits, for inference"),
    "ksr": ("predtext.engine.commands", "measure keystroke savings on a text"),
    "config": ("predtext.engine.commands", "print the config path and active set-up"),
    "forget": ("predtext.engine.commands", "erase the learned user history"),
    "ngram": ("predtext.engine.commands", "build an n-gram model (predtext ngram build)"),
    "lsp": ("predtext.lsp.commands", "language server for editors (stdio, or --tcp PORT)"),
}


def _load(command):
    import importlib

    module = importlib.import_module(COMMANDS[command][0])
    return module


def build_parser(command=None):
    parser = argparse.ArgumentParser(prog="predtext", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module is imported
            _load(name).add_arguments(p, name)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["repl"] + argv  # plain `predtext` starts the terminal
    command = argv[0] if argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return _load(args.command).run(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
