import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predtext.lm.tokenizers import (
    CharTokenizer,
    WordTokenizer,
    build_tokenizer,
    is_word,
    iter_word_tokens,
    split_words,
    tokenize_words,
    tokenizer_from_json,
)

FAST = settings(max_examples=60, deadline=None)

# Text that exercises the word splitter: letters (ASCII and not), digits,
# underscore, apostrophes, punctuation, and different kinds of whitespace.
wordy_text = st.text(
    alphabet=st.sampled_from(
        list("abcXYZ019_'’.,;!?-\"() \t\n\r") + ["é", "ß", "日", "😀", "\u00a0"]),
    max_size=200,
)


# ---------------------------------------------------------------- characters


@FAST
@given(st.text(max_size=300))
def test_char_round_trip_on_its_own_vocabulary(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert len(ids) == len(text)
    assert (ids > 0).all()
    assert tok.decode(ids) == text


@FAST
@given(st.text(max_size=100), st.text(max_size=200))
def test_char_unknown_characters_map_to_unknown_id(vocab_text, text):
    tok = CharTokenizer.from_text(vocab_text)
    ids = tok.encode(text)
    expected = [tok.token_to_id.get(c, 0) for c in text]
    assert ids.tolist() == expected
    decoded = tok.decode(ids)
    assert decoded == "".join(c if c in tok.token_to_id else tok.unk_token for c in text)


def test_char_lone_surrogate_and_astral_characters_do_not_raise():
    tok = CharTokenizer.from_text("ab😀")
    ids = tok.encode("a\ud800😀z")
    assert ids.tolist() == [tok.token_to_id["a"], 0, tok.token_to_id["😀"], 0]


def test_char_vocabulary_cap_and_min_count():
    counts = {"a": 5, "b": 3, "c": 3, "d": 1}
    tok = CharTokenizer.from_counts(counts, min_count=2)
    assert tok.id_to_token[1:] == ["a", "b", "c"]  # ordered by code point
    capped = CharTokenizer.from_counts(counts, max_size=3)
    # max_size counts the unknown id; ties (b, c) break by the character.
    assert capped.vocab_size == 3
    assert capped.id_to_token[1:] == ["a", "b"]
    assert capped.encode("abcd").tolist() == [1, 2, 0, 0]


def test_char_count_streams_like_whole_text():
    text = "hello, wörld 😀" * 7
    chunks = [text[i:i + 5] for i in range(0, len(text), 5)]
    assert CharTokenizer.count(chunks) == CharTokenizer.count([text])
    assert CharTokenizer.from_text(iter(chunks)) == CharTokenizer.from_text(text)


def test_vocabulary_over_limit_is_a_clear_value_error():
    with pytest.raises(ValueError, match="4 tokens, over the limit of 3"):
        CharTokenizer.from_text("abc", limit=3)
    with pytest.raises(ValueError, match="over the limit"):
        WordTokenizer.from_text("one two", limit=2)
    assert CharTokenizer.from_text("abc", limit=4).vocab_size == 4


@pytest.mark.parametrize("kwargs, name", [
    ({"max_size": 0}, "max_size"), ({"min_count": 0}, "min_count"), ({"limit": -1}, "limit"),
])
def test_bad_vocabulary_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CharTokenizer.from_text("abc", **kwargs)
    with pytest.raises(ValueError, match=name):
        WordTokenizer.from_text("abc", **kwargs)


def test_decode_rejects_ids_outside_the_vocabulary():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([1, 3])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        WordTokenizer.from_text("a b").decode([-1])
    assert tok.decode([]) == ""


def test_char_encode_of_a_megabyte_is_whole_array_work():
    text = ("The quick brown fox — jumps over the lazy dog. " * 25000)[: 1 << 20]
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.shape == (len(text),)
    assert tok.decode(ids) == text


# ---------------------------------------------------------------- words


@FAST
@given(wordy_text)
def test_word_split_loses_nothing(text):
    assert "".join(tokenize_words(text)) == text


@FAST
@given(wordy_text)
def test_word_round_trip_on_its_own_vocabulary(text):
    tok = WordTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int32
    assert (ids > 0).all()
    assert tok.decode(ids) == text


@FAST
@given(wordy_text, st.lists(st.integers(0, 200), max_size=8))
def test_word_stream_tokenizes_like_the_joined_text(text, cuts):
    cuts = sorted({min(c, len(text)) for c in cuts})
    bounds = [0] + cuts + [len(text)]
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    streamed = [t for tokens in iter_word_tokens(chunks) for t in tokens]
    assert streamed == tokenize_words(text)
    tok = WordTokenizer.from_text(text)
    ids = [i for arr in tok.encode_stream(chunks) for i in arr.tolist()]
    assert ids == tok.encode(text).tolist()


def test_word_tokens_are_words_punctuation_and_whitespace_runs():
    assert tokenize_words("Don't stop -- it's 5 o'clock.\n\n  ok") == [
        "Don't", " ", "stop", " ", "-", "-", " ", "it's", " ", "5", " ", "o'clock", ".",
        "\n\n  ", "ok"]


def test_word_unknown_words_decode_as_the_unknown_marker():
    tok = WordTokenizer.from_text("the cat sat on the mat", min_count=2)
    assert set(tok.token_to_id) == {"the", " "}
    ids = tok.encode("the dog")
    assert ids.tolist() == [tok.token_to_id["the"], tok.token_to_id[" "], 0]
    assert tok.decode(ids) == "the <unk>"


def test_word_cap_keeps_the_most_frequent():
    tok = WordTokenizer.from_text("a a a b b c", max_size=3)  # " " x5, a x3, b x2, c x1
    assert tok.id_to_token == ["<unk>", " ", "a"]
    assert tok.decode(tok.encode("a b")) == "a <unk>"


def test_word_tokenizer_rejects_tokens_it_could_never_produce():
    with pytest.raises(ValueError, match="not a single word"):
        WordTokenizer(["two words"])
    with pytest.raises(ValueError, match="more than once"):
        WordTokenizer(["a", "a"])


@pytest.mark.parametrize("text, tokens, partial", [
    ("the quick br", ["the", " ", "quick", " "], "br"),
    ("hi, ", ["hi", ",", " "], ""),
    ("", [], ""),
    ("don'", [], "don'"),
    ("it's", [], "it's"),
    ("say 'x", ["say", " ", "'"], "x"),
    ("end.", ["end", "."], ""),
])
def test_split_words(text, tokens, partial):
    split = split_words(text)
    assert split.tokens == tokens
    assert split.partial == partial
    assert "".join(split.tokens) + split.partial == text


def test_is_word():
    assert is_word("don't") and is_word("x_1") and is_word("日本")
    assert not is_word(" ") and not is_word(".") and not is_word("'")


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize("tok", [
    CharTokenizer.from_text("héllo 😀"),
    WordTokenizer.from_text("Hello, world! Hello again.", max_size=5),
])
def test_json_round_trip(tok):
    d = json.loads(json.dumps(tok.to_json()))
    assert d["kind"] == tok.kind
    again = tokenizer_from_json(d)
    assert type(again) is type(tok)
    assert again.id_to_token == tok.id_to_token
    assert again == tok


@pytest.mark.parametrize("d", [
    None,
    [],
    {"kind": "bpe", "unk_token": "?", "tokens": []},
    {"kind": "char", "unk_token": "?"},
    {"kind": "char", "unk_token": "?", "tokens": "abc"},
    {"kind": "char", "unk_token": "?", "tokens": ["ab"]},
    {"kind": "char", "unk_token": "??", "tokens": ["a"]},
    {"kind": "char", "unk_token": "?", "tokens": ["a", "a"]},
    {"kind": "char", "unk_token": "?", "tokens": [1]},
    {"kind": "word", "unk_token": 0, "tokens": ["a"]},
    {"kind": "word", "unk_token": "<unk>", "tokens": ["a b"]},
    {"kind": "word", "unk_token": "<unk>", "tokens": ["a"], "extra": 1},
])
def test_bad_json_is_a_value_error(d):
    with pytest.raises(ValueError):
        tokenizer_from_json(d)


def test_build_tokenizer_by_level():
    assert isinstance(build_tokenizer("char", ["ab"]), CharTokenizer)
    assert isinstance(build_tokenizer("word", ["a b"]), WordTokenizer)
    with pytest.raises(ValueError, match="level"):
        build_tokenizer("bpe", ["ab"])
