"""Tokenizers: text <-> int32 token ids, at the level of characters or words.

Both tokenizers reserve id 0 for the unknown token, so any text can be encoded:
a character or word outside the vocabulary becomes id 0 instead of an error.
Decoding id 0 gives the tokenizer's ``unk_token`` string, so text with unknown
tokens does not round-trip; text made only of vocabulary tokens always does.

A tokenizer is stored inside the model file as the plain dict of ``to_json()``;
``tokenizer_from_json`` rebuilds it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from predtext.text import APOSTROPHES, is_word  # noqa: F401  (is_word: part of this API)

UNKNOWN_ID = 0

#: One word token: letters/digits/underscore, with inner apostrophes kept so that
#: contractions ("don't", "o'clock") are single words. Every other character is
#: either part of a whitespace run or a one-character punctuation token, so the
#: three alternatives together cover every character exactly once (nothing is lost).
#: Each word token is a word to ``predtext.text.is_word``, and no other token is.
_WORD = f"\\w+(?:[{APOSTROPHES}]\\w+)*"
_TOKEN_RE = re.compile(_WORD + r"|\s+|[^\w\s]")
_APOSTROPHES = tuple(APOSTROPHES)

# How many tokens at the end of a chunk may still change when more text follows:
# the last token can grow ("wor" + "d"), and a trailing apostrophe can join the
# word before it with the word after it ("don" "'" + "t" -> "don't").
_UNSETTLED_TOKENS = 2


def _check_limits(max_size, min_count, limit):
    if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
        raise ValueError(f"max_size must be a positive integer or None, got {max_size!r}")
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _select_vocabulary(counts: Mapping[str, int], max_size, min_count) -> list[str]:
    """The tokens kept from ``counts``: count >= min_count, the most frequent
    ``max_size - 1`` of them (one id goes to the unknown token), in a stable order
    (by count descending, then by the token itself, so ties break the same way on
    every machine)."""
    kept = [(tok, n) for tok, n in counts.items() if n >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        kept = kept[: max_size - 1]
    return [tok for tok, _ in kept]


def _enforce_limit(vocab_size: int, limit, what: str):
    if limit is not None and vocab_size > limit:
        raise ValueError(
            f"{what} vocabulary has {vocab_size} tokens, over the limit of {limit}; "
            f"raise the limit, or cap the vocabulary with max_size / min_count"
        )


class _Tokenizer:
    """What both tokenizers share: the id <-> token tables and validation."""

    kind = ""

    def __init__(self, tokens: Sequence[str], unk_token: str, limit):
        if not isinstance(unk_token, str):
            raise TypeError(f"unk_token must be a str, got {type(unk_token).__name__}")
        tokens = list(tokens)
        for tok in tokens:
            self._check_token(tok)
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"tokens contain {dup!r} more than once")
        self.unk_token = unk_token
        #: id -> token; id 0 is the unknown token.
        self.id_to_token: list[str] = [unk_token] + tokens
        #: token -> id (the unknown token itself is not a key: it is not a real token).
        self.token_to_id: dict[str, int] = {tok: i for i, tok in enumerate(tokens, start=1)}
        _enforce_limit(self.vocab_size, limit, self.kind)

    def _check_token(self, tok):
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Number of ids, the unknown token included."""
        return len(self.id_to_token)

    @property
    def unk_id(self) -> int:
        return UNKNOWN_ID

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1:
            ids = ids.reshape(-1)
        if ids.size == 0:
            return ids.astype(np.int32)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise ValueError(f"ids contain {int(bad)}, outside the vocabulary of {self.vocab_size}")
        return ids

    def to_json(self) -> dict:
        """A plain JSON-able dict from which ``tokenizer_from_json`` rebuilds this tokenizer."""
        return {"kind": self.kind, "unk_token": self.unk_token, "tokens": self.id_to_token[1:]}

    def __eq__(self, other):
        return type(other) is type(self) and other.to_json() == self.to_json()

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # Streaming helpers, specialised below.
    def encode_stream(self, chunks: Iterable[str]) -> Iterator[np.ndarray]:
        raise NotImplementedError


class CharTokenizer(_Tokenizer):
    """One token per Unicode code point.

    Encoding works on whole arrays of code points (the text as UTF-32) and a
    lookup table, so megabytes encode in milliseconds.
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], unk_token: str = "\ufffd", limit: int | None = None):
        """``chars``: the vocabulary in id order (ids 1, 2, ...; id 0 is unknown)."""
        _check_limits(None, 1, limit)
        super().__init__(list(chars), unk_token, limit)
        # The unknown token is a character too (its id decodes to it); a single
        # character keeps decode() a pure array operation.
        if len(unk_token) != 1:
            raise ValueError("unk_token of a CharTokenizer must be one character, "
                             f"got {unk_token!r}")
        codes = np.array([ord(c) for c in self.id_to_token], dtype=np.uint32)
        self._id_to_code = codes
        # Dense table code point -> id up to the largest code point in the
        # vocabulary; its last slot (id 0) catches every larger code point.
        top = int(codes[1:].max()) + 1 if len(codes) > 1 else 0
        table = np.zeros(top + 1, dtype=np.int32)
        table[codes[1:]] = np.arange(1, len(codes), dtype=np.int32)
        self._code_to_id = table

    def _check_token(self, tok):
        if not isinstance(tok, str) or len(tok) != 1:
            raise ValueError(f"a CharTokenizer token must be one character, got {tok!r}")

    @staticmethod
    def count(chunks: Iterable[str]) -> Counter:
        """Character counts over a stream of text chunks."""
        total = Counter()
        for chunk in chunks:
            codes = _code_points(chunk)
            if codes.size:
                uniq, n = np.unique(codes, return_counts=True)
                total.update({chr(c): int(k) for c, k in zip(uniq.tolist(), n.tolist())})
        return total

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int | None = None,
                    min_count: int = 1, limit: int | None = None, unk_token: str = "\ufffd"):
        """Vocabulary of the characters counted at least ``min_count`` times, at most
        ``max_size`` ids in all (the most frequent kept), ordered by code point.
        A vocabulary larger than ``limit`` raises ValueError."""
        _check_limits(max_size, min_count, limit)
        chars = sorted(_select_vocabulary(counts, max_size, min_count))
        return cls(chars, unk_token=unk_token, limit=limit)

    @classmethod
    def from_text(cls, text: str | Iterable[str], max_size: int | None = None,
                  min_count: int = 1, limit: int | None = None, unk_token: str = "\ufffd"):
        """Build from a text, or from an iterable of text chunks (streamed)."""
        chunks = [text] if isinstance(text, str) else text
        return cls.from_counts(cls.count(chunks), max_size, min_count, limit, unk_token)

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of ``text`` (unknown characters -> 0), int32."""
        codes = _code_points(text)
        table = self._code_to_id
        return table[np.minimum(codes, len(table) - 1)]

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode a stream of chunks; characters never span chunks, so chunk by chunk."""
        for chunk in chunks:
            yield self.encode(chunk)

    def decode(self, ids) -> str:
        """The text of ``ids``; id 0 decodes to ``unk_token``."""
        ids = self._check_ids(ids)
        return self._id_to_code[ids].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: a str may hold lone surrogates (e.g. from os.fsdecode);
    # they are just code points that are probably not in the vocabulary.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class WordSplit(NamedTuple):
    """A text split for word prediction: the complete tokens, and the word being typed."""

    tokens: list[str]
    partial: str


def tokenize_words(text: str) -> list[str]:
    """Words, single punctuation characters and whitespace runs, in order.
    ``"".join(tokenize_words(text)) == text`` for every text."""
    return _TOKEN_RE.findall(text)


def split_words(text: str) -> WordSplit:
    """Split ``text`` as typed so far into complete tokens and the partial word at its end.

    ``"the quick br"`` -> ``(["the", " ", "quick", " "], "br")``; a text ending in
    whitespace or punctuation has ``partial == ""``. A trailing apostrophe after a
    word stays in the partial word (``"don'"``), since a contraction may follow.
    ``"".join(tokens) + partial == text`` always.
    """
    tokens = tokenize_words(text)
    n_partial = 0
    if tokens and is_word(tokens[-1]):
        n_partial = 1
    elif len(tokens) >= 2 and tokens[-1] in _APOSTROPHES and is_word(tokens[-2]):
        n_partial = 2
    partial = "".join(tokens[len(tokens) - n_partial:])
    return WordSplit(tokens[: len(tokens) - n_partial], partial)


def iter_word_tokens(chunks: Iterable[str]) -> Iterator[list[str]]:
    """Tokenize a stream of text chunks exactly as the joined text would be.

    A chunk border may cut a word (or a whitespace run) in two, so the last
    tokens of each chunk are held back and re-read with the next chunk.
    Yields lists of tokens; memory stays that of one chunk.
    """
    carry = ""
    for chunk in chunks:
        tokens = _TOKEN_RE.findall(carry + chunk)
        # Keep only the unsettled tail as the carry; it is short unless a single
        # token spans the whole chunk.
        held = tokens[-_UNSETTLED_TOKENS:]
        carry = "".join(held)
        settled = tokens[: len(tokens) - len(held)]
        if settled:
            yield settled
    if carry:
        yield _TOKEN_RE.findall(carry)


class WordTokenizer(_Tokenizer):
    """Words, punctuation characters and whitespace runs as tokens.

    The split loses nothing, so ``decode(encode(text)) == text`` whenever every
    token of ``text`` is in the vocabulary. A word outside the vocabulary encodes
    as id 0 and decodes as ``unk_token`` (default ``"<unk>"``): such text does not
    round-trip. Words keep their case.
    """

    kind = "word"

    def __init__(self, tokens: Iterable[str], unk_token: str = "<unk>", limit: int | None = None):
        """``tokens``: the vocabulary in id order (ids 1, 2, ...; id 0 is unknown)."""
        _check_limits(None, 1, limit)
        super().__init__(list(tokens), unk_token, limit)

    def _check_token(self, tok):
        # Each vocabulary entry must be something the splitter can produce,
        # or it could never be encoded.
        if not isinstance(tok, str) or not tok or _TOKEN_RE.fullmatch(tok) is None:
            raise ValueError(f"{tok!r} is not a single word, punctuation or whitespace token")

    @staticmethod
    def count(chunks: Iterable[str]) -> Counter:
        """Token counts over a stream of text chunks."""
        total = Counter()
        for tokens in iter_word_tokens(chunks):
            total.update(tokens)
        return total

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], max_size: int | None = None,
                    min_count: int = 1, limit: int | None = None, unk_token: str = "<unk>"):
        """Vocabulary of the tokens counted at least ``min_count`` times, at most
        ``max_size`` ids in all (the most frequent kept, most frequent first).
        A vocabulary larger than ``limit`` raises ValueError."""
        _check_limits(max_size, min_count, limit)
        return cls(_select_vocabulary(counts, max_size, min_count), unk_token=unk_token,
                   limit=limit)

    @classmethod
    def from_text(cls, text: str | Iterable[str], max_size: int | None = None,
                  min_count: int = 1, limit: int | None = None, unk_token: str = "<unk>"):
        """Build from a text, or from an iterable of text chunks (streamed)."""
        chunks = [text] if isinstance(text, str) else text
        return cls.from_counts(cls.count(chunks), max_size, min_count, limit, unk_token)

    def _ids(self, tokens: list[str]) -> np.ndarray:
        get = self.token_to_id.get
        return np.fromiter((get(t, UNKNOWN_ID) for t in tokens), dtype=np.int32, count=len(tokens))

    def encode(self, text: str) -> np.ndarray:
        """Ids of the tokens of ``text`` (unknown tokens -> 0), int32."""
        return self._ids(tokenize_words(text))

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[np.ndarray]:
        """Encode a stream of chunks as if they were one text (words cut by a
        chunk border are joined again)."""
        for tokens in iter_word_tokens(chunks):
            yield self._ids(tokens)

    def decode(self, ids) -> str:
        """The text of ``ids``; id 0 decodes to ``unk_token``."""
        ids = self._check_ids(ids)
        table = self.id_to_token
        return "".join([table[i] for i in ids.tolist()])


_KINDS = {"char": CharTokenizer, "word": WordTokenizer}

Tokenizer = CharTokenizer | WordTokenizer


def tokenizer_from_json(d) -> Tokenizer:
    """Rebuild a tokenizer from the dict of its ``to_json()``; a malformed dict raises
    ValueError."""
    if not isinstance(d, dict):
        raise ValueError(f"tokenizer description must be a dict, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"tokenizer kind must be one of {sorted(_KINDS)}, got {kind!r}")
    unknown_keys = set(d) - {"kind", "unk_token", "tokens"}
    if unknown_keys:
        raise ValueError(f"tokenizer description has unknown keys {sorted(unknown_keys)}")
    tokens = d.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("tokenizer description needs 'tokens', a list of strings")
    unk = d.get("unk_token")
    if not isinstance(unk, str):
        raise ValueError("tokenizer description needs 'unk_token', a string")
    try:
        return _KINDS[kind](tokens, unk_token=unk)
    except TypeError as exc:
        raise ValueError(f"bad tokenizer description: {exc}") from None


def build_tokenizer(level: str, chunks: Iterable[str], max_size: int | None = None,
                    min_count: int = 1, limit: int | None = None) -> Tokenizer:
    """A tokenizer of ``level`` ("char" or "word") built from a stream of text chunks."""
    if level not in _KINDS:
        raise ValueError(f"level must be one of {sorted(_KINDS)}, got {level!r}")
    return _KINDS[level].from_text(chunks, max_size=max_size, min_count=min_count, limit=limit)
