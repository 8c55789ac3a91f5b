"""The interactive terminal: a prompt that offers words as you type.

:class:`Repl` wires an :class:`~predtext.repl.engine_handle.EngineHandle` into a prompt_toolkit
``PromptSession``: a completion menu refreshed on every keystroke, the best suggestion as grey
text, a toolbar, ``:`` commands, and a transcript of the committed lines printed above the
prompt. The engine is asked off the UI thread (``ThreadedCompleter``/``ThreadedAutoSuggest``),
so a slow prediction never holds up a keystroke.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app, run_in_terminal
from prompt_toolkit.auto_suggest import ThreadedAutoSuggest
from prompt_toolkit.completion import Completer, ThreadedCompleter
from prompt_toolkit.filters import Condition, completion_is_selected, has_completions
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, merge_key_bindings
from prompt_toolkit.key_binding.bindings.named_commands import get_by_name
from prompt_toolkit.shortcuts import CompleteStyle, print_formatted_text
from prompt_toolkit.styles import Style

from predtext.repl.colon_commands import Quit, is_command, run_command, unescape
from predtext.repl.completer import (
    DEFAULT_K,
    InlineEngineSuggestion,
    PredtextAutoSuggest,
    PredtextCompleter,
    Suggester,
    SuggestionCompletion,
)
from predtext.repl.engine_handle import EngineHandle, engine_loader
from predtext.repl.stats import KeystrokeSavings, KeyToScreen
from predtext.repl.taken_space import TakenSpace

PROMPT = "> "
#: Set to a file path to have the terminal append timing events to it as JSON lines
#: (first prompt drawn, key-to-screen latency); ``python benchmarks/bench_repl.py`` reads it.
TRACE_ENV = "PREDTEXT_REPL_TRACE"

STYLE = Style.from_dict({
    "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
    "bottom-toolbar.dim": "#8a8a8a",
    "output": "#8a8a8a",
    "error": "#d75f5f",
    "completion-menu.meta.completion": "bg:#444444 #bcbcbc",
    "completion-menu.meta.completion.current": "bg:#00aaaa #000000",
})


class Repl:
    """The terminal over an engine ``handle`` (which may still be loading).

    ``history`` is where ↑ and Ctrl-R find earlier lines (in memory when None); ``input`` and
    ``output`` are prompt_toolkit's (the real terminal when None; tests pass a pipe input and
    ``DummyOutput``). ``after_first_frame()`` is called once the prompt is first on screen (the
    terminal command starts loading the engine then); ``engine_config`` is the config ``:model``
    loads other models with (by default, the loaded engine's). :meth:`run` (or
    ``await run_async()``) reads lines until ``:quit`` or Ctrl-D. Committed lines are in
    :attr:`transcript`, and everything shown above the prompt in :attr:`shown`.
    """

    def __init__(self, handle: EngineHandle, k: int = DEFAULT_K, history: History | None = None,
                 input=None, output=None, after_first_frame=None, engine_config=None):
        self.handle = handle
        self.engine_config = engine_config
        self._after_first_frame = after_first_frame
        self.transcript: list[str] = []
        self.taken_space = TakenSpace(lambda: self.session.default_buffer)
        self.shown: list[str] = []
        self.savings = KeystrokeSavings()
        self.key_to_screen = KeyToScreen()
        self._answered_nothing_for: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_render_done = False
        self._trace_path = os.environ.get(TRACE_ENV) or None
        self.suggester = Suggester(handle, k, on_answer=self._answered)
        completer = AskingAgain(ThreadedCompleter(PredtextCompleter(self.suggester)))
        self.session = PromptSession(
            PROMPT,
            completer=completer,
            auto_suggest=ThreadedAutoSuggest(PredtextAutoSuggest(self.suggester)),
            complete_while_typing=True,
            complete_style=CompleteStyle.COLUMN,
            history=history if history is not None else InMemoryHistory(),
            bottom_toolbar=self._toolbar,
            key_bindings=merge_key_bindings([self._key_bindings(),
                                             self.taken_space.key_bindings()]),
            style=STYLE,
            erase_when_done=True,     # the committed line is printed again, as transcript
            input=input,
            output=output,
        )
        completer.watch(self.session.default_buffer)
        app = self.session.app
        app.key_processor.before_key_press += self._key_pressed
        app.after_render += self._after_render
        handle.listen(self._engine_changed)

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        return asyncio.run(self.run_async())

    async def run_async(self) -> int:
        """Read and handle lines until ``:quit`` or Ctrl-D. Returns the exit status (0)."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                self.savings.discard_line()
                try:
                    line = await self.session.prompt_async()
                except EOFError:
                    return 0
                except KeyboardInterrupt:       # Ctrl-C is bound to clear; this is a fallback
                    continue
                if is_command(line):
                    try:
                        self._show(line, "class:output")
                        self._show(run_command(self, line), "class:output")
                    except Quit:
                        return 0
                else:
                    await self.commit(unescape(line))
        finally:
            self._loop = None

    async def commit(self, line: str) -> None:
        """A line the user wrote: into the transcript, the savings count, and the engine."""
        self.savings.commit(line)
        self.transcript.append(line)
        self._show(line)
        try:
            if self._loop is not None:
                # The engine's learn waits for its predictors; the prompt comes back right after.
                await self._loop.run_in_executor(None, self.handle.learn, line)
            else:
                self.handle.learn(line)
        except Exception as error:       # the line is kept either way; say why it was not learned
            self.announce(f"error: could not learn the line: {type(error).__name__}: {error}")
        self.suggester.invalidate()

    def load_model(self, path: str) -> None:
        """Load another model in the background; the current one serves until it is ready."""
        config = self.engine_config
        if config is None:
            config = getattr(self.handle.full_engine, "config", None)
        self.handle.start(engine_loader(path, config), os.path.basename(path))

    # ------------------------------------------------------------------ what is shown

    def _show(self, text: str, style: str = "") -> None:
        """Print ``text`` above the prompt (from any thread)."""
        if not text:
            return
        self.shown.append(text)
        output = self.session.app.output

        def write():
            print_formatted_text(FormattedText([(style, text)]), style=STYLE, output=output)

        loop = self._loop
        if loop is not None and self.session.app.is_running:
            loop.call_soon_threadsafe(lambda: run_in_terminal(write))
        else:
            write()

    def announce(self, text: str) -> None:
        """A message for the user (a warning, a model that finished loading)."""
        self._show(text, "class:error" if text.startswith("error") else "class:output")

    def _toolbar(self):
        handle = self.handle
        if handle.status == "loading" and handle.engine is None:
            model = f"loading {handle.loading_name or 'model'}…"
        elif handle.status == "failed":
            model = f"{handle.loading_name or handle.name}: failed"
        else:
            loading = f" (loading {handle.loading_name}…)" if handle.loading_name else ""
            model = handle.name + loading
        parts = [f" {model}", f"k {self.suggester.k}"]
        if handle.learning is False:
            parts.append("learning off")
        suggest_ms = self.suggester.last_latency_ms
        screen_ms = self.key_to_screen.last_ms
        if suggest_ms is not None:
            timing = f"{suggest_ms:.1f} ms suggest"
            if screen_ms is not None:
                timing += f", {screen_ms:.0f} ms to screen"
            parts.append(timing)
        savings = self.savings.savings
        if savings is not None:
            parts.append(f"{self.savings.keys} keys → {self.savings.characters} chars, "
                         f"{savings:.0%} saved")
        else:
            parts.append(":help")
        return FormattedText([("class:bottom-toolbar", " · ".join(parts))])

    # ------------------------------------------------------------------ keys

    def _key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        buffer_of = lambda event: event.current_buffer   # noqa: E731

        @bindings.add("c-c")
        def _clear(event):
            """Ctrl-C clears the line (and keeps the prompt)."""
            buffer_of(event).reset()
            self.savings.discard_line()

        @bindings.add("enter", filter=has_completions & completion_is_selected)
        def _take_selected(event):
            """Enter on a selected suggestion takes it, rather than committing the line."""
            buffer = buffer_of(event)
            state = buffer.complete_state
            completion = state.current_completion
            buffer.complete_state = None
            if isinstance(completion, SuggestionCompletion):
                self._took(buffer, completion.suggestion,
                           state.original_document.text_before_cursor)
                buffer.insert_text("")         # refresh: prompt_toolkit asks after insertions

        @Condition
        def grey_text_shown() -> bool:
            buffer = self.session.default_buffer
            return bool(buffer.suggestion and buffer.suggestion.text
                        and buffer.document.is_cursor_at_the_end)

        @bindings.add("right", filter=grey_text_shown)
        @bindings.add("c-f", filter=grey_text_shown)
        def _take_grey_text(event):
            """→ or Ctrl-F accepts the grey suggestion."""
            buffer = buffer_of(event)
            suggestion = buffer.suggestion
            before = buffer.document.text_before_cursor
            buffer.insert_text(suggestion.text)
            if isinstance(suggestion, InlineEngineSuggestion):
                self._took(buffer, suggestion.suggestion, before)

        def refreshing(command_name):
            command = get_by_name(command_name)

            def handler(event):
                command.handler(event)
                # prompt_toolkit asks the completer after insertions only; an insertion of
                # nothing (fire_event stays on) asks it, and the auto-suggest, after deletions too.
                buffer_of(event).insert_text("")
            handler.__doc__ = f"{command_name}, then refresh the suggestions"
            return handler

        bindings.add("backspace")(refreshing("backward-delete-char"))
        bindings.add("c-w")(refreshing("unix-word-rubout"))
        bindings.add("delete")(refreshing("delete-char"))
        return bindings

    def _took(self, buffer, suggestion, text_before_cursor: str) -> None:
        """``suggestion`` was taken at ``text_before_cursor``: its space is owed until the next
        key, and the engine hears of it."""
        self.taken_space.taken(buffer)
        self._accepted(suggestion, text_before_cursor)

    def _accepted(self, suggestion, text_before_cursor: str) -> None:
        try:
            self.handle.accept(suggestion, text_before_cursor)
        except Exception:          # a hint to the engine; never worth losing the keystroke
            logging.getLogger("predtext.repl").debug("accept failed", exc_info=True)

    def _key_pressed(self, _key_processor) -> None:
        self.taken_space.key_pressed()
        self.savings.key_pressed()
        self.key_to_screen.key_pressed()

    # ------------------------------------------------------------------ timing and refresh

    def _answered(self, text: str, suggestions) -> None:
        # Called from the completer's thread when the engine answered for `text`.
        self._answered_nothing_for = text if not suggestions else None
        self.key_to_screen.answered(text)

    def _after_render(self, _app) -> None:
        if not self._first_render_done:
            self._first_render_done = True
            # CPU time too: on a busy machine the wall clock says more about the neighbours.
            self._trace("first_prompt", unix_time=time.time(), cpu_s=time.process_time())
            if self._after_first_frame is not None:
                self._after_first_frame()
        buffer = self.session.default_buffer
        text = buffer.document.text_before_cursor
        state = buffer.complete_state
        menu_shows_text = state is not None and state.original_document.text_before_cursor == text
        if menu_shows_text or self._answered_nothing_for == text:
            latency = self.key_to_screen.rendered(text)
            if latency is not None:
                self._trace("key_to_screen", ms=round(latency, 3), text=text,
                            suggest_ms=self.suggester.last_latency_ms)

    def _engine_changed(self) -> None:
        # Called from the loading thread.
        handle = self.handle
        self.suggester.invalidate()
        if handle.error:
            self.announce(f"error: {handle.error}")
        self._trace("engine_" + handle.status, unix_time=time.time())
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._refresh)

    def _refresh(self, attempts: int = 50, text: str | None = None) -> None:
        """Ask for suggestions again for the text as it stands (the engine changed).

        prompt_toolkit runs one completion at a time and drops a request made while one is
        in flight, and it does not ask again while a menu is up; an answer the old engine
        was giving at that moment would stay on screen. So: drop a menu the user is not
        using, ask, and look again shortly until the menu shows the current engine's answer
        -- or until the user edits the text, which asks anew by itself.
        """
        app = self.session.app
        buffer = self.session.default_buffer
        current = buffer.document.text_before_cursor
        if not app.is_running or (text is not None and current != text):
            return
        answer = self.suggester.answered(current)
        menu = buffer.complete_state
        if answer is not None and (not answer and menu is None
                                   or _menu_shows(menu, current, answer)):
            return
        if menu is not None:
            if menu.complete_index is not None:
                return                     # the user is choosing from it: leave it be
            buffer.complete_state = None
        buffer.insert_text("")
        app.invalidate()
        if attempts > 1 and self._loop is not None:
            self._loop.call_later(0.1, self._refresh, attempts - 1, current)

    def _trace(self, event: str, **fields) -> None:
        if not self._trace_path:
            return
        try:
            with open(self._trace_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"event": event, **fields}) + "\n")
        except OSError:
            self._trace_path = None     # tracing is a measurement aid; never disturb the user


def _menu_shows(menu, text: str, answer) -> bool:
    """Whether the completion menu shows ``answer`` for ``text``."""
    return (menu is not None and menu.original_document.text_before_cursor == text
            and [c.display_text for c in menu.completions] == [s.text for s in answer])


class AskingAgain(Completer):
    """The prompt's completer, asked again when prompt_toolkit dropped a request for it.

    prompt_toolkit runs one completion request at a time and drops those made meanwhile (a
    key typed while the engine answers); when the running one ends on text that is not a
    longer version of what it asked about (after a deletion, Ctrl-C, or typing then deleting
    back), it does not ask again, and the menu for what the user typed never came until the
    next key. So this notes a request made while one runs (an insertion into the buffer, which
    is what asks while typing) and, once the running one is over, makes it again.
    """

    def __init__(self, completer: Completer):
        self.completer = completer
        self._buffer = None
        self._running = False
        self._dropped = False

    def watch(self, buffer) -> None:
        """Ask again for ``buffer``, the one this completes (made after its completer)."""
        self._buffer = buffer
        buffer.on_text_insert += self._text_inserted

    def _text_inserted(self, _buffer) -> None:
        if self._running:
            self._dropped = True

    def get_completions(self, document, complete_event):
        return self.completer.get_completions(document, complete_event)

    async def get_completions_async(self, document, complete_event):
        self._running, self._dropped = True, False
        try:
            async for completion in self.completer.get_completions_async(document, complete_event):
                yield completion
        finally:
            self._running = False
            if self._dropped and self._buffer is not None:
                # prompt_toolkit takes the next request once this one's coroutine has
                # returned, which it does without waiting from here: ask on the next turn.
                asyncio.get_running_loop().call_soon(self._ask_again)

    def _ask_again(self) -> None:
        # When prompt_toolkit retried by itself (the text grew), that request is running; and
        # a prompt that has ended (its requests are cancelled) has nothing to ask for.
        if not self._running and self._buffer is not None and get_app().is_running:
            self._buffer.insert_text("")   # an insertion of nothing asks, as typing does
