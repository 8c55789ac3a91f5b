"""What the text before the cursor says: previous words, the word being typed, and its case.

What a word is, and how running text splits into words and markers, is :mod:`predtext.text`
(shared with the n-gram model, so that the counts built from a corpus and the words read back
from the text before the cursor are cut the same way); this module reads the text before the
cursor with it. Its names are re-exported here for the code that imported them from here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from predtext.text import (  # noqa: F401
    BOUNDARY,
    CLAUSE_MARKS,
    MARKERS,
    OPENING_MARKS,
    SENTENCE_END,
    clean,
    is_marker,
    is_word,
    is_word_character,
    iter_words,
    last_apostrophe,
    normalize_word,
    tokenize,
    with_apostrophe,
    word_patterns,
)

#: Only this much of the text before the cursor is read (a pasted megabyte costs the same as
#: a line).
DEFAULT_WINDOW_CHARS = 4096
#: The window's start moves in steps this long, so a predictor that keeps incremental state keyed
#: on ``Context.text`` sees the same prefix between steps instead of a new string every keystroke.
DEFAULT_WINDOW_STEP = 1024
#: Characters scanned for the previous words (far more than any n-gram order needs).
_WORDS_SCAN_CHARS = 400
#: Longest partial word recognised; longer runs of letters are cut (bounded work per keystroke).
_MAX_PARTIAL_CHARS = 64
#: How many previous tokens a Context carries.
_MAX_CONTEXT_WORDS = 16


def _patterns():
    """The token and partial-word patterns of :mod:`predtext.text`."""
    token, partial, _ = word_patterns()
    return token, partial


@functools.lru_cache(maxsize=8)
def _tokens(text: str) -> tuple[str, ...]:
    """``tokenize`` for parse_context: while a word is typed, the text before it stays the same
    from keystroke to keystroke, so it is read once, not once per letter."""
    return tuple(tokenize(text))


@dataclass(frozen=True)
class Context:
    """The text before the cursor, read for prediction.

    ``text`` is a cleaned tail window of the text before the cursor (see
    :data:`DEFAULT_WINDOW_CHARS`); ``offset`` is how many characters of the original text come
    before it. ``words`` are the last tokens before the word being typed (case kept), with
    :data:`BOUNDARY` for sentence ends and for the start of the text, and clause marks
    (see :data:`MARKERS`). ``prefix`` is the typed part
    of the current word, exactly as typed ('' at a word boundary).
    """

    text: str
    offset: int
    words: tuple[str, ...]
    prefix: str
    sentence_start: bool
    shouting: bool

    @property
    def text_before_word(self) -> str:
        """``text`` without the typed part of the current word."""
        return self.text[: len(self.text) - len(self.prefix)]


def window_start(length: int, window_chars: int = DEFAULT_WINDOW_CHARS,
                 step: int = DEFAULT_WINDOW_STEP) -> int:
    """Where the read window of a text of ``length`` characters starts (a multiple of ``step``)."""
    excess = length - window_chars
    if excess <= 0:
        return 0
    return (excess // step + 1) * step


def parse_context(text_before_cursor: str, window_chars: int = DEFAULT_WINDOW_CHARS,
                  step: int = DEFAULT_WINDOW_STEP) -> Context:
    """Read ``text_before_cursor`` into a :class:`Context`. Work is bounded by ``window_chars``."""
    if not isinstance(text_before_cursor, str):
        raise TypeError(f"text_before_cursor must be str, not {type(text_before_cursor).__name__}")
    offset = window_start(len(text_before_cursor), window_chars, step)
    text = _clean_window(text_before_cursor[offset:])
    prefix = _partial_word(text[-_MAX_PARTIAL_CHARS:])
    before = text[: len(text) - len(prefix)]

    scan_from = max(0, len(before) - _WORDS_SCAN_CHARS)
    words = list(_tokens(before[scan_from:]))
    if scan_from > 0 or offset > 0:
        # The scan may have started inside a word: drop what may be a fragment.
        words = words[1:]
    else:
        words = [BOUNDARY] + words if (not words or words[0] != BOUNDARY) else words
    words = words[-_MAX_CONTEXT_WORDS:]

    sentence_start = not words or words[-1] == BOUNDARY
    recent = [w for w in words if w not in MARKERS][-2:]
    shouting = len(recent) == 2 and all(_is_all_caps(w) for w in recent)
    return Context(text=text, offset=offset, words=tuple(words), prefix=prefix,
                   sentence_start=sentence_start, shouting=shouting)


# The last window cleaned, and its cleaned form: a keystroke adds a character to the window,
# so only that character needs cleaning (clean() works character by character).
_last_window = ("", "")


def _clean_window(window: str) -> str:
    global _last_window
    last, last_cleaned = _last_window
    if last and window.startswith(last):
        cleaned = last_cleaned + clean(window[len(last):])
    else:
        cleaned = clean(window)
    _last_window = (window, cleaned)
    return cleaned


def forget_recent_text() -> None:
    """Drop what the reading shortcuts keep of recently typed text (the last window, the words
    before the cursor, memoised word keys): after ``Engine.forget`` nothing typed stays."""
    global _last_window
    _last_window = ("", "")
    for cached in (_tokens, normalize_word):
        cached.cache_clear()


def _partial_word(tail: str) -> str:
    """The word being typed at the end of ``tail``: the partial-word pattern, searched from the
    start of the run of characters that may be in a word (a search over the whole tail tries
    every position in it; this is a tenth of the time)."""
    _, partial_re = _patterns()
    start = len(tail)
    while start > 0 and is_word_character(tail[start - 1]):
        start -= 1
    return partial_re.search(tail, start).group(0)


def is_partial_word(text: str) -> bool:
    """Whether ``text`` at the end of the text before the cursor is read, whole, as the word
    being typed (a word, which may end in a joiner: "don't", "goin'", "rock-")."""
    return 0 < len(text) <= _MAX_PARTIAL_CHARS and _partial_word(text) == text


def _is_all_caps(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return len(letters) >= 2 and all(c.isupper() for c in letters)


def _capitalise(text: str) -> str:
    for i, char in enumerate(text):
        if char.isalpha():
            return text[:i] + char.upper() + text[i + 1:]
    return text


def apply_case(text: str, typed: str, sentence_start: bool = False, shouting: bool = False) -> str:
    """``text`` in the case the user is typing in.

    ALL CAPS typed (two letters or more, or caps on the previous words with nothing typed yet)
    gives ALL CAPS; a capital first letter, or nothing typed at a sentence start, gives a capital
    first letter; otherwise the word keeps its usual form ("i" -> "I", "rom" -> "Romeo").
    """
    if _is_all_caps(typed) or (not typed and shouting):
        return text.upper()
    first = next((c for c in typed if c.isalpha()), "")
    if first.isupper() or (not typed and sentence_start):
        return _capitalise(text)
    return text


def next_word_can_start(text: str) -> bool:
    """Whether a next word can be written right at the end of ``text``: at its start, after a
    space, or after opening marks that follow one. After anything else ("well,", 'said "yes"',
    "5%") a word offered now would be glued to it: the space comes first.
    """
    end = len(text)
    while end and text[end - 1] in OPENING_MARKS:
        end -= 1
    if end == len(text):
        return not text or text[-1].isspace()
    return end == 0 or text[end - 1].isspace()
