"""`predtext repl` end to end in a real terminal: tmux sends the keys and reads the screen.

The terminal runs on a private tmux server (its own socket), with its own data and config
directories and a small n-gram model, so its suggestions are fixed and nothing of the user's
is read or written. Skipped only when tmux is not installed.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from predtext.engine import NGramModel

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

TEXT = ("the apple and the application of the apple pie. the apple tree. an apple a day. "
        "the application form. the cat sat on the mat. the cat ran.")
CONFIG = ("[engine]\ntime_budget_ms = 2000\n[predictors.ngram]\nweight = 1.0\n"
          + "".join(f"[predictors.{name}]\nenabled = false\n"
                    for name in ("neural", "history", "dictionary", "abbreviations", "bigrams")))


class Tmux:
    """One tmux session on a private server; ``close`` kills the server and everything in it."""

    def __init__(self, directory, command, width=100, height=24):
        # A short socket path: unix sockets are limited to about 100 characters.
        self.socket = os.path.join(directory, "tmux.sock")
        self.session = "predtext-test"
        self._tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
                   command)

    def _tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=20, check=check)

    def send(self, *keys, literal=False):
        self._tmux("send-keys", "-t", self.session, *(("-l",) if literal else ()), *keys)

    def screen(self):
        return self._tmux("capture-pane", "-p", "-t", self.session).stdout

    def cursor_x(self):
        return int(self._tmux("display-message", "-p", "-t", self.session,
                              "#{cursor_x}").stdout.strip())

    def wait_for(self, condition, timeout=30.0, what="the screen"):
        """Poll the screen until ``condition(screen)`` holds; fails with the last screen.

        (tmux has no event for a change of the screen; the timeout only bounds a failure.)
        """
        deadline = time.monotonic() + timeout
        while True:
            shown = self._tmux("capture-pane", "-p", "-t", self.session, check=False)
            screen = shown.stdout if shown.returncode == 0 else "(the terminal has ended)"
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; the screen was:\n{screen}")
            time.sleep(0.05)

    def alive(self):
        return self._tmux("has-session", "-t", self.session, check=False).returncode == 0

    def close(self):
        self._tmux("kill-server", check=False)


def start_terminal(text, config_text):
    """The REPL in a fresh tmux server, on an n-gram of ``text`` and the config ``config_text``,
    with its own data and config directories; returns ``(tmux, directory)``."""
    directory = tempfile.mkdtemp(prefix="pt-tmux-")   # short path, for the socket
    model = os.path.join(directory, "model.safetensors")
    NGramModel.from_text(text).save(model)
    config = os.path.join(directory, "config.toml")
    with open(config, "w") as handle:
        handle.write(config_text)
    environment = {"PREDTEXT_DATA_DIR": os.path.join(directory, "data"),
                   "XDG_CONFIG_HOME": os.path.join(directory, "xdg"),
                   "TERM": "xterm-256color"}
    command = " ".join(
        ["env"] + [f"{k}={shlex.quote(v)}" for k, v in environment.items()]
        + [shlex.quote(a) for a in (sys.executable, "-m", "predtext.cli", "repl",
                                    "--model", model, "--config", config)]
        + ["2>" + shlex.quote(os.path.join(directory, "stderr.txt"))])
    return Tmux(directory, command), directory


@pytest.fixture
def terminal():
    tmux, directory = start_terminal(TEXT, CONFIG)
    try:
        yield tmux, directory
    finally:
        tmux.close()
        shutil.rmtree(directory, ignore_errors=True)


def prompt_line(screen):
    """The line holding the prompt (capture-pane drops its trailing space when empty)."""
    return next((line for line in screen.splitlines() if line.startswith(">")), None)


def test_menu_shows_suggestions_and_right_arrow_accepts_the_grey_text(terminal):
    tmux, directory = terminal
    tmux.wait_for(lambda s: prompt_line(s) is not None and "model.safetensors" in s,
                  what="the prompt and toolbar")
    tmux.send("the app", literal=True)
    # The menu and the grey inline suggestion come from threads and may draw in either
    # order: wait for both.
    grey_texts = ("> the application", "> the apple")
    screen = tmux.wait_for(lambda s: "application" in s and "apple" in s and "ngram" in s
                           and "ms suggest" in s
                           and (prompt_line(s) or "").rstrip() in grey_texts,
                           what="the completion menu and the grey suggestion")
    menu = [line for line in screen.splitlines() if "ngram 0." in line]
    assert {line.split()[0] for line in menu} == {"application", "apple"}
    # The best suggestion shows after the cursor as grey text, not typed text.
    assert prompt_line(screen).rstrip() in grey_texts
    grey = prompt_line(screen).rstrip()
    assert tmux.cursor_x() == len("> the app")

    tmux.send("Right")
    tmux.wait_for(lambda s: tmux.cursor_x() == len(grey) + 1,
                  what="→ to accept the grey text, with the space after it")
    tmux.send("Enter")
    screen = tmux.wait_for(lambda s: "saved" in s, what="the committed line and the savings")
    assert f"8 keys → {len(grey) - 2} chars" in screen
    assert grey[2:] in screen.splitlines()     # the transcript line, above the prompt
    assert prompt_line(screen).rstrip() == ">"

    tmux.send("C-d")
    tmux.wait_for(lambda s: not tmux.alive(), timeout=20, what="Ctrl-D to end the terminal")
    with open(os.path.join(directory, "stderr.txt")) as handle:
        assert "Traceback" not in handle.read()


def test_tab_selects_from_the_menu_and_ctrl_c_clears(terminal):
    tmux, _ = terminal
    tmux.wait_for(lambda s: prompt_line(s) is not None, what="the prompt")
    tmux.send("the cat ", literal=True)
    tmux.wait_for(lambda s: "ngram 0." in s, what="next-word suggestions")
    tmux.send("Tab")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() in ("> the cat sat", "> the cat ran"),
                           what="Tab to select the first suggestion")
    tmux.send("C-c")
    tmux.wait_for(lambda s: prompt_line(s).rstrip() == ">", what="Ctrl-C to clear the line")
    assert tmux.alive()
