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
