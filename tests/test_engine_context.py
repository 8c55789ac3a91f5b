"""Reading the text before the cursor: words, the partial word, sentence starts, case, bad input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predtext.engine import context as context_module
from predtext.engine.context import (
    BOUNDARY,
    DEFAULT_WINDOW_CHARS,
    apply_case,
    last_apostrophe,
    normalize_word,
    parse_context,
    tokenize,
    with_apostrophe,
)

# Letters of several scripts, digits, combining marks, joiners, underscores, spaces, marks,
# controls and lone surrogates: what the shortcuts in parse_context must not get wrong.
TRICKY = st.text(alphabet=st.sampled_from(list("ab Zé9_'\u2019-\u2010.,;\n\t\u0301\u093f"
                                               "\u0928\u00df\x00\x7f\ud800")), max_size=80)


def test_words_and_partial_word():
    context = parse_context("the quick brown fo")
    assert context.prefix == "fo"
    assert context.words[-3:] == ("the", "quick", "brown")
    assert parse_context("the quick ").prefix == ""


@pytest.mark.parametrize("text, prefix", [
    ("I don't", "don't"), ("I don'", "don'"), ("a dog-fo", "dog-fo"), ("o\u2019er", "o\u2019er"),
    ("café", "café"), ("cafe\u0301", "cafe\u0301"), ("Straße", "Straße"), ("नमस्ते", "नमस्ते"),
    ("(hello", "hello"), ("end.", ""), ("well,", ""), ("x--", ""), ("", ""), ("snake_ca", "ca"),
])
def test_partial_word_is_unicode_aware(text, prefix):
    assert parse_context(text).prefix == prefix


@settings(max_examples=400, deadline=None)
@given(TRICKY)
def test_partial_word_shortcut_agrees_with_the_pattern(tail):
    _, partial = context_module._patterns()
    assert context_module._partial_word(tail) == partial.search(tail).group(0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["type", "backspace"]), TRICKY), max_size=12))
def test_reading_keystroke_by_keystroke_gives_what_a_fresh_read_gives(edits):
    """parse_context cleans only what a keystroke added; the answer must not show it."""
    text = ""
    for action, chunk in edits:
        text = text + chunk if action == "type" else text[:len(text) // 2]
        incremental = parse_context(text)
        context_module._last_window = ("", "")
        context_module._tokens.cache_clear()
        assert parse_context(text) == incremental


def test_tokenize_marks_sentence_ends_once():
    assert tokenize("Hi there. How are you?! Fine\n\nNext") == [
        "Hi", "there", BOUNDARY, "How", "are", "you", BOUNDARY, "Fine", BOUNDARY, "Next"]
    assert tokenize("rock-and-roll isn't dead") == ["rock-and-roll", "isn't", "dead"]
    # Clause marks are tokens; a sentence end absorbs one before it; nothing repeats.
    assert tokenize(", Well, my lord;, he said: no,. Yes") == [
        "Well", ",", "my", "lord", ";", "he", "said", ":", "no", BOUNDARY, "Yes"]


def test_sentence_start():
    assert parse_context("").sentence_start
    assert parse_context("Hello. ").sentence_start
    assert parse_context("Really? Yes").sentence_start
    assert not parse_context("Hello there ").sentence_start
    assert not parse_context("Hello, ").sentence_start
    assert parse_context("my lord, h").words[-2:] == ("lord", ",")
    assert parse_context("").words == (BOUNDARY,)


@pytest.mark.parametrize("word, typed, start, shouting, expected", [
    ("apple", "App", False, False, "Apple"),
    ("apple", "APP", False, False, "APPLE"),
    ("apple", "app", False, False, "apple"),
    ("apple", "", True, False, "Apple"),
    ("apple", "app", True, False, "apple"),     # the user chose lower case
    ("Romeo", "rom", False, False, "Romeo"),    # a name keeps its capital
    ("I", "", False, False, "I"),
    ("be right back", "BRB", False, False, "BE RIGHT BACK"),
    ("next", "", False, True, "NEXT"),
    ("apple", "A", False, False, "Apple"),      # one capital letter is not ALL CAPS
])
def test_apply_case(word, typed, start, shouting, expected):
    assert apply_case(word, typed, start, shouting) == expected


def test_shouting_needs_two_all_caps_words():
    assert parse_context("STOP THAT ").shouting
    assert not parse_context("I am ").shouting
    assert not parse_context("NASA said ").shouting


@pytest.mark.parametrize("text, apostrophe", [
    ("", None), ("no apostrophe here", None), ("I don't", "'"), ("I don\u2019t", "\u2019"),
    ("it\u2019s mine, isn't it", "'"), ("isn't it \u2018yours\u2019", "\u2019")])
def test_the_last_apostrophe_typed(text, apostrophe):
    assert last_apostrophe(text) == apostrophe


def test_words_are_keyed_apart_from_their_apostrophe_style():
    assert normalize_word("Don\u2019t") == normalize_word("don't") == "don't"
    assert with_apostrophe("rock'n'roll", "\u2019") == "rock\u2019n\u2019roll"
    assert with_apostrophe("o\u2019er 'tis", "'") == "o'er 'tis"


def test_control_characters_and_lone_surrogates_are_neutralised():
    context = parse_context("bad\x00 input\ud800 he\x1bllo wor")
    assert context.prefix == "wor"
    assert "\x00" not in context.text and "\ud800" not in context.text
    assert len(context.text) == len("bad\x00 input\ud800 he\x1bllo wor")   # lengths kept
    assert parse_context("ab\udc00cd").prefix == "cd"


def test_a_megabyte_of_text_is_read_through_a_bounded_window():
    text = ("lorem ipsum dolor sit amet " * 40000) + "consec"
    context = parse_context(text)
    assert len(context.text) <= DEFAULT_WINDOW_CHARS
    assert context.offset + len(context.text) == len(text)
    assert context.prefix == "consec" and context.words[-2:] == ("sit", "amet")
    # The window start moves in steps, so it stays put while the user types on.
    assert parse_context(text + "tetur").offset == context.offset


def test_wrong_type():
    with pytest.raises(TypeError, match="text_before_cursor"):
        parse_context(b"bytes")
