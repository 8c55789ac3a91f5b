"""What every layer shares about text: what a word is, apostrophes, opening and closing marks,
and the normal form words are counted and matched under.

A leaf module: it imports nothing of predtext (nor NumPy), so the tokenizers, the n-gram model,
the engine and the terminal all read text the same way, and the terminal can use it before the
engine is loaded.

A word is a run of letters and digits of any script, with the combining marks typed with them
(accents typed as separate code points, Indic vowel signs), and apostrophes and hyphens allowed
*inside* it: ``don't``, ``o'er``, ``dog-food``, ``cafe\u0301``. :func:`is_word` says whether a
string is one.

Two readings of running text are built on it, and each is fixed by files already written:

- :func:`tokenize` (the engine, the n-gram model and its counts) cuts words at an underscore,
  as a user types ``snake_case``: two words. Sentence ends (``. ! ?`` and blank lines) become a
  :data:`BOUNDARY` marker, and clause punctuation (``, ; :``) stays as tokens of its own: what
  follows "my lord," is not what follows "my lord". Markers are context, never suggestions.
- The model tokenizers (:mod:`predtext.lm.tokenizers`) split on Python's ``\\w``, where ``_``
  is a letter and a hyphen or a combining mark is a token of its own; their split is stored in
  every word model's vocabulary. Every word token they make is a word to :func:`is_word`.
"""

from __future__ import annotations

import functools
import re
import unicodedata

CURLY_APOSTROPHE = "\u2019"
APOSTROPHES = "'" + CURLY_APOSTROPHE
HYPHENS = "-\u2010\u2011"
#: Characters that may sit inside a word besides letters, digits and combining marks.
JOINERS = APOSTROPHES + HYPHENS

#: Marks a word may follow directly: "(the", "\u201cthe", and a straight quote that opens
#: ('said "the').
OPENING_MARKS = frozenset("([{\u201c\u2018\u00ab\"'")
#: Marks that close what comes before them: no space goes between a word and one of them.
CLOSING_MARKS = frozenset(".,;:!?)]}\u201d\u00bb\u2026")

BOUNDARY = "<s>"
"""Marker token for a sentence boundary (also the start of a text). Never offered to a user."""

CLAUSE_MARKS = ",;:"
MARKERS = frozenset((BOUNDARY,) + tuple(CLAUSE_MARKS))
"""Tokens that are not words: the boundary and clause punctuation."""

SENTENCE_END = ".!?\u2026"


def _combining_marks_class() -> str:
    """Character-class body of the combining marks of the Basic Multilingual Plane.

    Python's ``\\w`` leaves out combining marks, which would cut words in two. Scanning the BMP
    takes ~15 ms, so it is done once, on first use, not at import.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(0x300, 0x10000):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


@functools.lru_cache(maxsize=1)
def word_patterns():
    """``(token, partial, word)``, compiled on first use.

    ``token`` finds the tokens of :func:`tokenize` (groups ``word``, ``end``, ``mark``);
    ``partial`` matches the word being typed at the end of a text, which may end in a joiner
    ("don'", "rock-": the user is mid-word); ``word`` is :func:`is_word`'s rule.
    """
    marks = _combining_marks_class()
    joiner = f"[{re.escape(JOINERS)}]"
    # Running text: letters and digits without "_" (see the module docstring).
    letter = f"(?:[^\\W_]|[{marks}])"
    word = f"{letter}+(?:{joiner}{letter}+)*"
    token = re.compile(f"(?P<word>{word})|(?P<end>[{re.escape(SENTENCE_END)}]+|\\n[^\\S\\n]*\\n)"
                       f"|(?P<mark>[{re.escape(CLAUSE_MARKS)}])")
    partial = re.compile(f"(?:{letter}+{joiner})*{letter}*\\Z")
    # One word: "_" counts as a letter, and a word starts with a letter or digit (a combining
    # mark goes with the character before it), so every word token of the model tokenizers is
    # one and none of their other tokens is (a lone mark is one of those).
    one_word = re.compile(f"\\w[\\w{marks}]*(?:{joiner}[\\w{marks}]+)*")
    return token, partial, one_word


def is_word(text: str) -> bool:
    """True when ``text`` is exactly one word: letters, digits (and ``_``) with the combining
    marks after them, and apostrophes or hyphens only inside ("don't", "x_1", "\u65e5\u672c";
    not " ", ".", "'", "-")."""
    return word_patterns()[2].fullmatch(text) is not None


def is_word_character(char: str) -> bool:
    """Whether ``char`` can be part of a word of running text: a letter, digit, combining mark
    or joiner (the word pattern's letters and digits are exactly the ``isalnum`` ones)."""
    return len(char) == 1 and (char.isalnum() or char in JOINERS
                               or unicodedata.category(char)[0] == "M")


def tokenize(text: str) -> list[str]:
    """Words of ``text`` (case kept), clause marks, and :data:`BOUNDARY` at sentence ends.

    Markers never repeat, and a sentence end absorbs the clause mark before it.
    """
    token_re = word_patterns()[0]
    tokens: list[str] = []
    for match in token_re.finditer(text):
        word = match.group("word")
        if word is not None:
            tokens.append(word)
        elif not tokens or tokens[-1] == BOUNDARY:
            continue
        elif match.group("mark") is not None:
            if tokens[-1] not in MARKERS:
                tokens.append(match.group("mark"))
        elif tokens[-1] in MARKERS:
            tokens[-1] = BOUNDARY
        else:
            tokens.append(BOUNDARY)
    return tokens


def is_marker(token: str) -> bool:
    """True for tokens that are not words (:data:`MARKERS`)."""
    return token in MARKERS


def iter_words(text: str):
    """(start, end) spans of the words of ``text`` as :func:`tokenize` reads them, in order."""
    for match in word_patterns()[0].finditer(text):
        if match.group("word") is not None:
            yield match.span()


_SURROGATES = re.compile("[\ud800-\udfff]")
# C0/C1 controls and DEL, except tab and newline which are ordinary typing.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` with lone surrogates and control characters neutralised, length unchanged.

    Length is kept so that character counts (``Suggestion.replace``) still refer to the
    user's own text.
    """
    text = _SURROGATES.sub("\ufffd", text)
    return _CONTROLS.sub(" ", text)


@functools.lru_cache(maxsize=1 << 14)     # pure, and asked for the same words every keystroke
def normalize_word(word: str) -> str:
    """The key words are counted, matched and told apart under: NFC, lower case, and the
    apostrophe's style aside ("Don't" and "don\u2019t" are one word: a text mixes the two when
    some of it was typed with smart quotes and some without)."""
    return unicodedata.normalize("NFC", word).lower().replace(CURLY_APOSTROPHE, "'")


def last_apostrophe(text: str) -> str | None:
    """The apostrophe last used in ``text`` (straight or curly), None when it has none."""
    curly, straight = text.rfind(CURLY_APOSTROPHE), text.rfind("'")
    return None if curly == straight else CURLY_APOSTROPHE if curly > straight else "'"


def with_apostrophe(word: str, apostrophe: str) -> str:
    """``word`` with every apostrophe written as ``apostrophe``."""
    return word.replace(CURLY_APOSTROPHE if apostrophe == "'" else "'", apostrophe)
