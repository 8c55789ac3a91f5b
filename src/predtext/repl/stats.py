"""What the toolbar reports: keystroke savings of the session, and key-to-screen latency."""

from __future__ import annotations

import time


class KeystrokeSavings:
    """Keys pressed against characters produced, over the lines committed this session.

    Keys are counted as they are pressed; a line's count is banked when it is committed (its
    Enter excluded, as its newline is not counted as produced) and dropped when the line is
    cleared or turns out to be a command.
    """

    def __init__(self):
        self.keys = 0          # banked: keys that produced committed lines
        self.characters = 0    # banked: characters of those lines
        self.line_keys = 0     # keys pressed for the line being edited

    def key_pressed(self) -> None:
        self.line_keys += 1

    def commit(self, line: str) -> None:
        self.keys += max(self.line_keys - 1, 0)     # the Enter that committed it is not counted
        self.characters += len(line)
        self.line_keys = 0

    def discard_line(self) -> None:
        self.line_keys = 0

    @property
    def savings(self) -> float | None:
        """1 - keys / characters, or None before any character was produced."""
        if self.characters == 0:
            return None
        return 1.0 - self.keys / self.characters


class KeyToScreen:
    """Times each keystroke until the suggestions for the text it made are drawn.

    ``key_pressed`` starts the clock; ``answered(text)`` marks that the suggestions for
    ``text`` are in; ``rendered(text)`` stops the clock when the screen drawn shows the
    answered text. Only the latest key is timed: a key typed before the previous one was
    answered restarts the clock, as that is when the user looks again.
    """

    def __init__(self, keep: int = 10_000):
        self._pressed_at: float | None = None
        self._answered_text: str | None = None
        self.samples_ms: list[float] = []
        self.last_ms: float | None = None
        self._keep = keep

    def key_pressed(self) -> None:
        self._pressed_at = time.perf_counter()
        self._answered_text = None

    def answered(self, text: str) -> None:
        self._answered_text = text

    def rendered(self, text: str) -> float | None:
        """Record and return the latency if ``text``'s suggestions are on screen now."""
        if self._pressed_at is None or self._answered_text != text:
            return None
        latency = (time.perf_counter() - self._pressed_at) * 1000.0
        self._pressed_at = None
        self.last_ms = latency
        if len(self.samples_ms) < self._keep:
            self.samples_ms.append(latency)
        return latency
