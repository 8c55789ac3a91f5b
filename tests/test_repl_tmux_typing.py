"""Typing in the terminal as a person does, key by key: the word typed toward is offered at
the end, and a typo is corrected by taking the suggestion offered for it. tmux sends the keys
and reads the screen (skipped when tmux is not installed)."""

import shutil
import time

import pytest
from test_repl_tmux import prompt_line, start_terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

TEXT = ("the apple and the application of the apple pie. the apple tree. an apple a day. "
        "the application form. the cat sat on the mat. the cat ran. the dog sat on the log.")
# The n-gram of TEXT and the typo corrector over its words: fixed suggestions.
CONFIG = ("[engine]\ntime_budget_ms = 2000\nword_list = false\n"
          "[predictors.ngram]\nweight = 1.0\n[predictors.typos]\nweight = 1.0\n"
          + "".join(f"[predictors.{name}]\nenabled = false\n"
                    for name in ("neural", "history", "dictionary", "abbreviations")))


@pytest.fixture
def terminal():
    tmux, directory = start_terminal(TEXT, CONFIG)
    try:
        tmux.wait_for(lambda s: prompt_line(s) is not None and "model.safetensors" in s,
                      what="the prompt and toolbar")
        yield tmux
    finally:
        tmux.close()
        shutil.rmtree(directory, ignore_errors=True)


def type_keys(tmux, text):
    """One key at a time, each seen on the prompt line before the next (as a person types)."""
    typed = "> "
    for char in text:
        tmux.send(char, literal=True)
        typed += char
        tmux.wait_for(lambda s, typed=typed: (prompt_line(s) or "").startswith(typed.rstrip()),
                      what=f"{typed!r} on the prompt line")
        time.sleep(0.02)


def menu_words(screen, source):
    """The words of the menu that ``source`` proposed (a menu line: word, sources, score)."""
    words = []
    for line in screen.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith(">") and source in parts[-2]:
            words.append(parts[0])
    return words


def test_typed_key_by_key_the_intended_word_is_offered_at_the_end(terminal):
    # Words shown and passed over on the way ("mat" is offered after "the ") must not keep
    # the word from the menu at the last keystroke.
    type_keys(terminal, "the dog sat on the ma")
    screen = terminal.wait_for(lambda s: "mat" in menu_words(s, "ngram"),
                               what="mat in the menu at the last keystroke")
    assert prompt_line(screen).startswith("> the dog sat on the ma")


def test_a_typo_is_corrected_by_taking_the_suggestion_offered(terminal):
    type_keys(terminal, "the cat sat on the aplpe")
    screen = terminal.wait_for(lambda s: "apple" in menu_words(s, "typos"),
                               what="the correction in the menu")
    assert menu_words(screen, "typos")[0] == "apple"
    terminal.send("Tab")          # the menu, on its first suggestion
    terminal.send("Enter")        # take it: it replaces the typed word
    # The word taken comes with the space after it (the next word may show in grey beyond).
    corrected = "> the cat sat on the apple "
    terminal.wait_for(lambda s: (prompt_line(s) or "").startswith(corrected)
                      and terminal.cursor_x() == len(corrected), what="the corrected line")
    terminal.send("Enter")        # commit the line: it goes to the transcript
    screen = terminal.wait_for(lambda s: "the cat sat on the apple" in s.splitlines(),
                               what="the corrected line in the transcript")
    assert "aplpe" not in screen
