"""The terminal's ``:`` commands. Each takes the terminal and its argument words, returns text
to show.

A line that starts with ``:`` is a command, not text; ``::`` at the start writes one literal ``:``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from predtext.engine.suggestion import MAX_K

MAX_GENERATE = 5000
# How much of the transcript :generate hands the model as the text to continue.
GENERATE_CONTEXT_CHARS = 2000


class Quit(Exception):
    """Raised by ``:quit``: the terminal ends."""


class CommandError(ValueError):
    """A command was misused; the message says how to use it."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Callable


COMMANDS: dict[str, Command] = {}
ALIASES = {"q": "quit", "exit": "quit", "h": "help", "?": "help"}


def command(usage: str, summary: str):
    def register(function):
        name = usage.split()[0].lstrip(":")
        COMMANDS[name] = Command(name, usage, summary, function)
        return function
    return register


def is_command(line: str) -> bool:
    return line.startswith(":") and not line.startswith("::")


def unescape(line: str) -> str:
    """The text a non-command line stands for (``::x`` writes ``:x``)."""
    return line[1:] if line.startswith("::") else line


def run_command(repl, line: str) -> str:
    """Run the command on ``line``; returns what to show. Raises :class:`Quit` for ``:quit``."""
    words = line[1:].split()
    if not words:
        return "type :help for the commands"
    name = ALIASES.get(words[0], words[0])
    found = COMMANDS.get(name)
    if found is None:
        return f"unknown command :{words[0]} (type :help for the commands)"
    try:
        return found.run(repl, words[1:])
    except CommandError as error:
        return f"{error}\nusage: {found.usage}"


def _one_int(args: list[str], lowest: int, highest: int, what: str) -> int:
    if len(args) != 1:
        raise CommandError(f"give one number: {what}")
    try:
        value = int(args[0])
    except ValueError:
        raise CommandError(f"{args[0]!r} is not a whole number") from None
    if not lowest <= value <= highest:
        raise CommandError(f"{what} must be between {lowest} and {highest}, got {value}")
    return value


@command(":help", "show this list and the keys")
def _help(repl, args):
    lines = ["commands:"]
    width = max(len(c.usage) for c in COMMANDS.values())
    lines += [f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values()]
    keys = [("Tab, Shift-Tab", "move through the suggestions"),
            ("Enter", "take the selected one; else commit the line"),
            ("→ or Ctrl-F", "accept the grey suggestion"),
            ("Ctrl-C", "clear the line"),
            ("Ctrl-D", "exit (on an empty line)"),
            ("↑, Ctrl-R", "earlier lines")]
    lines += ["keys:"] + [f"  {key:<{width}}  {what}" for key, what in keys]
    lines += ["a line starting with :: writes a literal ':'"]
    return "\n".join(lines)


@command(":k N", f"show N suggestions (1-{MAX_K})")
def _k(repl, args):
    if not args:
        return f"k = {repl.suggester.k}"
    repl.suggester.k = _one_int(args, 1, MAX_K, "N")
    return f"k = {repl.suggester.k}"


@command(":learn on|off", "learn from the lines you commit, or not")
def _learn(repl, args):
    if args and args[0] in ("on", "off") and len(args) == 1:
        repl.handle.set_learning(args[0] == "on")
        repl.suggester.invalidate()
    elif args:
        raise CommandError("say on or off")
    return f"learning is {'off' if repl.handle.learning is False else 'on'}"


@command(":predictors [enable|disable NAME]", "list the predictors, or switch one")
def _predictors(repl, args):
    handle = repl.handle
    if args and args[0] in ("enable", "disable", "on", "off"):
        if len(args) != 2:
            raise CommandError(f"name one predictor to {args[0]}")
        try:
            handle.set_enabled(args[1], args[0] in ("enable", "on"))
        except LookupError as error:
            raise CommandError(str(error.args[0])) from None
        repl.suggester.invalidate()
    elif args and args[0] != "list":
        raise CommandError(f"unknown action {args[0]!r}")
    rows = handle.predictor_table()
    if not rows:
        return "no predictors yet (the model is still loading)" if handle.status == "loading" \
            else "no predictors are loaded"
    lines = [f"  {'on ' if on else 'off'}  {name:<16} weight {weight:g}"
             for name, weight, on in rows]
    return "predictors:\n" + "\n".join(lines)


@command(":model [PATH]", "load another model (in the background)")
def _model(repl, args):
    if not args:
        loading = f"; loading {repl.handle.loading_name}" if repl.handle.loading_name else ""
        return f"model: {repl.handle.name}{loading}"
    path = os.path.expanduser(" ".join(args))
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    repl.load_model(path)
    return f"loading {path} ..."


@command(":generate N", "continue the text with the model (N steps)")
def _generate(repl, args):
    n = _one_int(args, 1, MAX_GENERATE, "N")
    generate = _generator(repl.handle.language_model)
    if generate is None:
        return ("the loaded model cannot generate text: it has no language model "
                f"(model: {repl.handle.name})")
    prompt = "\n".join(repl.transcript)[-GENERATE_CONTEXT_CHARS:]
    try:
        text = generate(prompt, n)
    except Exception as error:        # a model's failure is reported, never fatal
        return f"generation failed: {type(error).__name__}: {error}"
    text = str(text)
    if prompt and text.startswith(prompt):   # some generators return prompt + continuation
        text = text[len(prompt):]
    return text


def _generator(language_model) -> Callable | None:
    generate = getattr(language_model, "generate", None)
    return generate if callable(generate) else None


@command(":quit", "leave (Ctrl-D does too)")
def _quit(repl, args):
    raise Quit()


def command_names() -> list[tuple[str, str]]:
    """(usage, summary) of every command, in :help order."""
    return [(c.usage, c.summary) for c in COMMANDS.values()]
