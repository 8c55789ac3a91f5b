"""Line mode: suggestions for each line of standard input, for scripts and pipes.

Each input line is taken as the text before the cursor (its line ending removed, everything
else kept: a trailing space asks for the next word). For each input line exactly one output
line is written, and flushed, so a program can drive ``predtext repl`` as a co-process:

* plain: the suggestions' texts, best first, separated by tabs (an empty line when there are
  none);
* ``--json``: one JSON object per line,
  ``{"input": "...", "suggestions": [{"text", "replace", "score", "source"}, ...]}``, where
  ``replace`` is how many characters before the cursor a suggestion replaces and ``source`` a
  list of predictor names.

Lines are answered independently: what was offered for one line is not held back from the
next, so the same input always gives the same output (unless learning is switched on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO


def format_plain(suggestions) -> str:
    return "\t".join(s.text for s in suggestions)


def format_json(line: str, suggestions) -> str:
    return json.dumps({
        "input": line,
        "suggestions": [{"text": s.text, "replace": s.replace, "score": round(float(s.score), 6),
                         "source": list(s.sources)} for s in suggestions],
    }, ensure_ascii=False)


def run_line_mode(engine, lines: Iterable[str], out: TextIO, k: int = 6, as_json: bool = False,
                  learn: bool = False) -> int:
    """Answer each of ``lines`` on ``out``; with ``learn``, each line is learned after its
    answer."""
    config = getattr(engine, "config", None)
    if config is not None and hasattr(config, "repeat_suggestions"):
        # Each line is a question of its own, not the next keystroke of the previous one.
        config.repeat_suggestions = True
    for raw in lines:
        line = raw.rstrip("\r\n")
        suggestions = engine.suggest(line, k)
        out.write((format_json(line, suggestions) if as_json else format_plain(suggestions)) + "\n")
        out.flush()
        if learn and line.strip():
            engine.learn(line)
    return 0
