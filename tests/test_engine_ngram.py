"""The n-gram predictor: next words and completions, and phrases where the next words are likely.

The model it wraps is tested in test_lm_ngram.py."""

import pytest

from predtext.engine.context import parse_context
from predtext.engine.ngram import NGramModel, NGramPredictor, make_predictor
from predtext.engine.predictor import Resources

TEXT = ("The cat sat on the mat. The dog sat on the log! A cat and a dog met on the mat. "
        "Then the cat ran. The dog ran after the cat, and the cat sat down.")


def test_predictor_uses_context_words_and_prefix():
    predictor = NGramPredictor(NGramModel.from_text(TEXT))
    candidates = predictor.predict(parse_context("the dog sat on the m"), 3)
    assert candidates[0].text == "mat"
    assert 0 < candidates[0].probability <= 1


def test_predictor_offers_a_phrase_when_the_next_words_are_likely():
    model = NGramModel.from_text("I will come as soon as possible. " * 5
                                 + "As a rule, no. As I said, no.")
    predictor = NGramPredictor(model)
    offered = {c.text: c.probability for c in predictor.predict(parse_context("Come as so"), 6)}
    assert "soon as possible" in offered and "soon" in offered
    assert offered["soon as possible"] == pytest.approx(
        offered["soon"] * model.probability("as", ["as", "soon"])
        * model.probability("possible", ["soon", "as"]))
    two = NGramPredictor(model, phrase_words=2).predict(parse_context("Come as so"), 6)
    assert "soon as" in {c.text for c in two}
    single = NGramPredictor(model, phrase_words=1).predict(parse_context("Come as so"), 6)
    assert all(" " not in c.text for c in single)
    assert len(predictor.predict(parse_context("Come as "), 2)) <= 2


@pytest.mark.parametrize("options, message", [({"phrase_threshold": 0}, "phrase_threshold"),
                                              ({"phrase_threshold": 1.5}, "phrase_threshold"),
                                              ({"phrase_threshold": "0.5"}, "phrase_threshold"),
                                              ({"phrase_words": 0}, "phrase_words"),
                                              ({"phrase_words": 2.5}, "phrase_words")])
def test_predictor_refuses_bad_phrase_options(options, message):
    with pytest.raises(ValueError, match=message):
        NGramPredictor(NGramModel.from_text(TEXT), **options)
    with pytest.raises(ValueError, match=message):        # from a config file too
        make_predictor(options, Resources(ngram=NGramModel.from_text(TEXT)))
