"""predtext suggestions for any prompt_toolkit application: a Completer and an AutoSuggest.

    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import ThreadedAutoSuggest
    from prompt_toolkit.completion import ThreadedCompleter
    from predtext import Engine
    from predtext.repl import PredtextAutoSuggest, PredtextCompleter, Suggester

    suggester = Suggester(Engine.load(), k=6)       # one engine query per keystroke, shared
    session = PromptSession(completer=ThreadedCompleter(PredtextCompleter(suggester)),
                            auto_suggest=ThreadedAutoSuggest(PredtextAutoSuggest(suggester)),
                            complete_while_typing=True)
    text = session.prompt("> ")

The completion menu lists the engine's suggestions for the text before the cursor, with their
source and score in the meta column; accepting one replaces the typed part of the word. The
auto-suggestion shows the best suggestion that continues what was typed as grey text after the
cursor (→ or Ctrl-F accepts it). Either way the word comes with the space after it, as on a
phone keyboard (and as ``predtext ksr`` counts it: the space after a selection is free),
unless a space or a closing mark already follows the cursor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prompt_toolkit.auto_suggest import AutoSuggest
from prompt_toolkit.auto_suggest import Suggestion as InlineSuggestion
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from predtext.engine.suggestion import MAX_K, checked_k  # noqa: F401 (MAX_K: API)
from predtext.text import CLOSING_MARKS

__all__ = ["Suggester", "PredtextCompleter", "PredtextAutoSuggest", "SuggestionCompletion",
           "InlineEngineSuggestion", "describe_source"]

DEFAULT_K = 6


class Suggester:
    """Asks an engine for ``k`` suggestions, once per distinct text, and times the answer.

    The completer and the auto-suggestion of one prompt ask about the same text on every
    keystroke; sharing a Suggester makes that one engine call. ``engine`` is anything with
    ``suggest(text_before_cursor, k)`` (an :class:`~predtext.engine.Engine`). Safe to call from
    several threads (prompt_toolkit's threaded completer and auto-suggest run in a pool).

    ``on_answer(text, suggestions)`` is called after each answer (the terminal uses it to time
    key-to-screen latency).
    """

    def __init__(self, engine, k: int = DEFAULT_K,
                 on_answer: Callable[[str, list], None] | None = None):
        if not callable(getattr(engine, "suggest", None)):
            raise TypeError(f"engine must have suggest(text, k), got {type(engine).__name__}")
        self.engine = engine
        self._k = checked_k(k)
        self.on_answer = on_answer
        self.last_latency_ms: float | None = None
        self._lock = threading.Lock()
        self._cached_key = None
        self._cached: list = []

    @property
    def k(self) -> int:
        """How many suggestions to ask for (1 to ``MAX_K``)."""
        return self._k

    @k.setter
    def k(self, value: int) -> None:
        self._k = checked_k(value)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the cached answer (after the engine learned, or was replaced)."""
        with self._lock:
            self._cached_key = None

    def answered(self, text_before_cursor: str) -> list | None:
        """The answer for ``text_before_cursor`` since the last ``invalidate``, or None if
        the engine was not asked about it since."""
        with self._lock:
            if self._cached_key == (text_before_cursor, self._k):
                return list(self._cached)
            return None

    def suggest(self, text_before_cursor: str) -> list:
        """The engine's suggestions for ``text_before_cursor`` (best first)."""
        with self._lock:
            key = (text_before_cursor, self._k)
            if key == self._cached_key:
                return list(self._cached)
            started = time.perf_counter()
            suggestions = list(self.engine.suggest(text_before_cursor, self._k))
            self.last_latency_ms = (time.perf_counter() - started) * 1000.0
            self._cached_key, self._cached = key, suggestions
        if self.on_answer is not None:
            self.on_answer(text_before_cursor, suggestions)
        return list(suggestions)


def _as_suggester(engine_or_suggester, k: int) -> Suggester:
    if isinstance(engine_or_suggester, Suggester):
        return engine_or_suggester
    return Suggester(engine_or_suggester, k)


def describe_source(suggestion) -> str:
    """The meta-column text: the predictors that proposed it and its score, e.g.
    ``ngram+history 0.41``."""
    sources = getattr(suggestion, "sources", None)
    if sources is None:
        source = getattr(suggestion, "source", "")
        sources = (source,) if isinstance(source, str) else tuple(source)
    return f"{'+'.join(sources) or '?'} {suggestion.score:.2f}"


def space_after(text_after_cursor: str) -> bool:
    """Whether a word taken here comes with a space: not when a space or a closing mark follows."""
    following = text_after_cursor[:1]
    return not (following.isspace() or (following and following in CLOSING_MARKS))


class SuggestionCompletion(Completion):
    """A menu entry that remembers the engine suggestion it shows (``.suggestion``); it
    inserts the word with a space after it unless ``space`` is false."""

    def __init__(self, suggestion, space: bool = True):
        super().__init__(suggestion.text + (" " if space else ""),
                         start_position=-suggestion.replace, display=suggestion.text,
                         display_meta=describe_source(suggestion))
        self.suggestion = suggestion


class PredtextCompleter(Completer):
    """Completes with the engine's suggestions for the text before the cursor.

    ``engine`` is an :class:`~predtext.engine.Engine` (asked for ``k`` suggestions) or a
    :class:`Suggester` shared with a :class:`PredtextAutoSuggest`. Each completion replaces the
    typed part of the current word (``start_position = -suggestion.replace``) and carries the
    suggestion's source and score in its meta column. The engine does real work per keystroke:
    wrap this in ``ThreadedCompleter`` so typing never waits for it.
    """

    def __init__(self, engine, k: int = DEFAULT_K):
        self.suggester = _as_suggester(engine, k)

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterable[Completion]:
        space = space_after(document.text_after_cursor)
        for suggestion in self.suggester.suggest(document.text_before_cursor):
            if suggestion.replace <= len(document.text_before_cursor):
                yield SuggestionCompletion(suggestion, space)


class InlineEngineSuggestion(InlineSuggestion):
    """Grey inline text that remembers the engine suggestion it continues (``.suggestion``)."""

    def __init__(self, text: str, suggestion):
        super().__init__(text)
        self.suggestion = suggestion


def continuation(text_before_cursor: str, suggestions: Sequence) -> InlineEngineSuggestion | None:
    """The best suggestion that extends exactly what was typed, as the text still to insert
    (with the space after it).

    Grey text can only be appended after the cursor, so a suggestion that rewrites the typed
    part (an abbreviation's expansion, a different case) stays in the menu only.
    """
    for suggestion in suggestions:
        if suggestion.replace > len(text_before_cursor):
            continue
        typed = text_before_cursor[len(text_before_cursor) - suggestion.replace:]
        if suggestion.text.startswith(typed) and len(suggestion.text) > len(typed):
            return InlineEngineSuggestion(suggestion.text[len(typed):] + " ", suggestion)
    return None


class PredtextAutoSuggest(AutoSuggest):
    """Shows the best suggestion as grey text after the cursor; → or Ctrl-F accepts it.

    ``engine`` is an :class:`~predtext.engine.Engine` or a :class:`Suggester` (share one with
    the :class:`PredtextCompleter` so both cost one engine call). Wrap it in
    ``ThreadedAutoSuggest`` to keep the engine off the UI thread.
    """

    def __init__(self, engine, k: int = DEFAULT_K):
        self.suggester = _as_suggester(engine, k)

    def get_suggestion(self, buffer, document: Document) -> InlineSuggestion | None:
        if not document.is_cursor_at_the_end:
            return None
        text = document.text_before_cursor
        return continuation(text, self.suggester.suggest(text))
