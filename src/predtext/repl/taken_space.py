"""The space that comes with a word taken, and the keys that give way to it.

A suggestion taken in the terminal (→ for the grey text, Enter on a menu entry) comes with the
space after it, as on a phone keyboard and as ``predtext ksr`` counts it (the space after a
selection is free). That space is owed for exactly the next key: a closing mark takes its
place ("apple ," -> "apple,"), a space does not double it, and Enter commits the line without
it. While a word is only selected in the menu (Tab), a letter goes on with the word itself
(Tab to "appear", then "s": "appears"); looking through the menu and back leaves the space owed.
"""

from __future__ import annotations

from collections.abc import Callable

from prompt_toolkit.application import get_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition, completion_is_selected
from prompt_toolkit.key_binding import KeyBindings

from predtext.repl.completer import SuggestionCompletion
from predtext.text import CLOSING_MARKS, JOINERS


class TakenSpace:
    """Keeps track of the space owed; :meth:`key_bindings` are the keys that give way to it.

    ``line`` gives the prompt's buffer. Call :meth:`key_pressed` before every key is handled
    and :meth:`taken` right after a suggestion was inserted with its space.
    """

    def __init__(self, line: Callable[[], Buffer]):
        self._line = line
        self._keys = 0
        # (text, cursor, key count) right after a suggestion was taken with its space.
        self._owed: tuple | None = None

    def key_pressed(self) -> None:
        self._keys += 1

    def taken(self, buffer: Buffer) -> None:
        if buffer.document.text_before_cursor.endswith(" "):
            self._owed = (buffer.text, buffer.cursor_position, self._keys)

    def _walking(self) -> bool:
        """A menu entry is selected, inserted with its space."""
        state = self._line().complete_state
        return (state is not None and isinstance(state.current_completion, SuggestionCompletion)
                and state.current_completion.text.endswith(" "))

    def _owed_by_last_key(self) -> bool:
        # (Keys are counted before they are handled: taken by the key before this one.)
        buffer = self._line()
        return self._owed == (buffer.text, buffer.cursor_position, self._keys - 1)

    def owed(self) -> bool:
        """The space before the cursor came with a suggestion, taken by the last key."""
        if not self._line().document.text_before_cursor.endswith(" "):
            return False
        return self._walking() or self._owed_by_last_key()

    def key_bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        # Typing into the line itself (not into a Ctrl-R search, say).
        typing = Condition(lambda: get_app().current_buffer is self._line())
        owed = typing & Condition(self.owed)

        def closing(mark):
            def handler(event):
                buffer = event.current_buffer
                buffer.delete_before_cursor(1)
                after = buffer.document.text_after_cursor[:1]
                buffer.insert_text(mark + (" " if after and not after.isspace() else ""))
            handler.__doc__ = f"{mark!r} right after a suggestion taken: in place of its space"
            return handler

        for mark in sorted(CLOSING_MARKS):
            bindings.add(mark, filter=owed)(closing(mark))

        @bindings.add(" ", filter=owed)
        def _space(event):
            """A space right after a suggestion taken: it has one already."""
            buffer = event.current_buffer
            buffer.complete_state = None
            buffer.insert_text("")             # refresh: the next words

        @bindings.add("<any>", filter=typing & Condition(self._walking))
        def _go_on_with_the_word(event):
            """A letter while a menu entry is selected goes on with that word."""
            buffer = event.current_buffer
            if event.data.isalnum() or event.data in JOINERS:
                buffer.delete_before_cursor(1)
            buffer.insert_text(event.data)

        @bindings.add("enter", filter=owed & ~completion_is_selected)
        def _commit(event):
            """Enter right after a suggestion taken at the end of the line commits the line
            without its space."""
            buffer = event.current_buffer
            if not buffer.document.text_after_cursor:
                buffer.delete_before_cursor(1)
            buffer.validate_and_handle()

        def browsing(step, open_on):
            def handler(event):
                # A look through the menu and back leaves the space owed (owed again once the
                # line is back to what it was).
                if self._owed is not None and self._owed[2] == self._keys - 1:
                    self._owed = self._owed[:2] + (self._keys,)
                buffer = event.current_buffer
                if buffer.complete_state:
                    step(buffer)
                else:
                    buffer.start_completion(**{open_on: True})
            handler.__doc__ = f"move through the menu (opening it with the {open_on[7:]} entry)"
            return handler

        bindings.add("tab", filter=typing)(browsing(Buffer.complete_next, "select_first"))
        bindings.add("s-tab", filter=typing)(browsing(Buffer.complete_previous, "select_last"))
        return bindings
