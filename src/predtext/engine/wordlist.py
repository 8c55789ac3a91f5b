"""A modern English word list with frequencies: ``wordfreq``'s (film subtitles, Wikipedia,
news, books, web text, Reddit, Twitter), for words the model's corpora lack ("email",
"website") and for telling a real word from a spelling the character model made up.

``wordfreq`` is a dependency of the package but is imported only here, lazily, so that a
program without it still runs (the engine then knows only its corpora's words).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping

import numpy as np

log = logging.getLogger("predtext.engine")

# Words rarer than this (per word of text) are mostly names, foreign words and misspellings
# (though "recieve" is 6e-7): 1e-7 keeps about 94,000 of wordfreq's 320,000 English entries.
MIN_FREQUENCY = 1e-7
# Letters with inner apostrophes or hyphens: no digits, emoji or marks.
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
# One-letter entries other than these are letters named, not words.
_ONE_LETTER = {"a", "i", "o"}

_lock = threading.Lock()
_cache: dict[str, dict[str, float] | None] = {}


def english_words(min_frequency: float = MIN_FREQUENCY) -> Mapping[str, float] | None:
    """Word -> frequency (a share of all words) of wordfreq's English list, or None when
    wordfreq is not installed. Loaded once per process (about a second), then shared."""
    key = f"en:{min_frequency:g}"
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            import wordfreq
        except ImportError:
            log.info("wordfreq is not installed: no modern word list")
            _cache[key] = None
            return None
        frequencies = wordfreq.get_frequency_dict("en", wordlist="best")
        words = {word: frequency for word, frequency in frequencies.items()
                 if frequency >= min_frequency and _WORD.fullmatch(word)
                 and (len(word) > 1 or word in _ONE_LETTER)}
        _cache[key] = words
        return words


# symspellpy's English word pairs: the 243,342 commonest two-word sequences of Google Books
# Ngrams (their words in the SCOWL word list), lower-case, with counts. symspellpy (MIT code;
# Google Books Ngrams data, free for any use with attribution) ships the file.
BIGRAM_FILE = "frequency_bigramdictionary_en_243_342.txt"


def bigram_path():
    """The installed word-pair file, or None when symspellpy is not installed."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("symspellpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BIGRAM_FILE
        if path.is_file():
            return path
    return None


def english_bigrams(path=None):
    """Modern English word pairs (see :data:`BIGRAM_FILE`) as a
    :class:`~predtext.engine.dictionary.Dictionary` of "first second" keys with their counts
    (so the pairs that begin "very m" are one slice of it), or None when the file is not
    installed. Read once per process (about half a second).

    A malformed file raises :class:`~predtext.errors.ModelFileError` naming it.
    """
    if path is None:
        path = bigram_path()
        if path is None:
            log.info("symspellpy is not installed: no modern word pairs")
            return None
    key = f"bigrams:{path}"
    with _lock:
        if key in _cache:
            return _cache[key]
        from predtext.engine.dictionary import Dictionary
        from predtext.errors import ModelFileError

        try:
            with open(path, encoding="utf-8") as handle:
                fields = handle.read().split()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(path, f"cannot read word pairs ({exc})") from None
        if len(fields) % 3:
            raise ModelFileError(path, "expected lines of two words and a count")
        try:
            counts = np.array(fields[2::3], dtype=np.float64)
        except ValueError as exc:
            raise ModelFileError(path, f"a count is not a number ({exc})") from None
        if not (np.isfinite(counts).all() and (counts > 0).all()):
            raise ModelFileError(path, "a count is not a finite number above 0")
        pairs = [f"{first} {second}".lower() for first, second in zip(fields[0::3],
                                                                      fields[1::3])]
        if len(set(pairs)) != len(pairs):
            raise ModelFileError(path, "a word pair is listed twice")
        _cache[key] = Dictionary.of_keys(pairs, counts)
        return _cache[key]
