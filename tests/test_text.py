"""predtext.text: one definition of a word, shared by the model tokenizers and the engine."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predtext.lm.tokenizers import _WORD, tokenize_words
from predtext.text import is_word, iter_words, tokenize

# Letters of several scripts, digits, combining marks, joiners, underscores, spaces, marks.
TRICKY = st.text(
    alphabet=st.sampled_from(list("ab Z\u00e99_'\u2019-\u2010.,;\n\t\u0301\u093f\u65e5")),
    max_size=16)


@pytest.mark.parametrize("text", ["don't", "o\u2019er", "dog-food", "cafe\u0301",
                                  "Stra\u00dfe", "\u0928\u092e\u0938\u094d\u0924\u0947", "x_1",
                                  "42", "\u65e5\u672c"])
def test_words(text):
    assert is_word(text)


@pytest.mark.parametrize("text", ["", " ", ".", "'", "-", "don'", "-x", "a b", "\u0301", "a.",
                                  "rock--roll"])
def test_not_words(text):
    assert not is_word(text)


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_a_tokenizer_token_is_a_word_exactly_when_it_is_a_word_token(text):
    import re

    word_token = re.compile(_WORD)
    for token in tokenize_words(text):
        assert is_word(token) == (word_token.fullmatch(token) is not None), token


@settings(max_examples=300, deadline=None)
@given(TRICKY)
def test_every_word_of_running_text_is_a_word_but_for_the_underscore(text):
    """tokenize cuts at "_" (snake_case is typed as two words); what it reads is otherwise one
    word to is_word, unless it starts with a combining mark."""
    for start, end in iter_words(text):
        word = text[start:end]
        assert "_" not in word
        assert is_word(word) or word[0] in "\u0301\u093f", word
    assert [text[s:e] for s, e in iter_words(text)] == [t for t in tokenize(text)
                                                        if t not in ("<s>", ",", ";", ":")]


def test_the_leaf_module_loads_nothing_of_predtext_or_numpy():
    code = ("import sys, predtext.text; "
            "loaded = [m for m in sys.modules if m.startswith(('predtext.', 'numpy'))]; "
            "print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['predtext.errors', 'predtext.text']"
