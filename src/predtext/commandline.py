"""What every subcommand shares: the exit code for bad input, one-line argument errors, and
argument types. A leaf module: it imports nothing of predtext, so each layer's commands use it
without importing the `predtext` command that dispatches to them."""

import argparse
import sys

EXIT_BAD_INPUT = 2  # bad arguments or input: one line on stderr, no traceback


def one_line_errors(parser, command):
    """argparse prints the whole usage before an error; one line says enough here."""

    def error(message):
        print(f"predtext {command}: error: {message} (see predtext {command} --help)",
              file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)

    parser.error = error


def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
