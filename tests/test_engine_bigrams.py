"""The modern next-word prior: word pairs mixed with single-word frequencies."""

import pytest

from predtext.engine.bigrams import BigramPredictor, PairPrior, make_predictor
from predtext.engine.context import parse_context
from predtext.engine.dictionary import Dictionary
from predtext.engine.protocol import Resources
from predtext.engine.wordlist import english_bigrams
from predtext.errors import ModelFileError


def _pairs(tmp_path, text):
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_pairs_file_read_into_a_prefix_dictionary(tmp_path):
    path = _pairs(tmp_path, "very much 60\nvery often 10\nvery good 30\nthank you 5\n")
    pairs = english_bigrams(path)
    assert [w for w, _ in pairs.complete("very ", 3)] == ["very much", "very good", "very often"]
    assert pairs.prefix_share("very ") == pytest.approx(100 / 105)
    assert english_bigrams(path) is pairs           # read once


@pytest.mark.parametrize("text", ["very much\n", "very much lots\n", "very much -3\n",
                                  "very much 3\nvery much 4\n"])
def test_a_malformed_pairs_file_is_named(tmp_path, text):
    with pytest.raises(ModelFileError, match="pairs.txt"):
        english_bigrams(_pairs(tmp_path, text))


def test_next_word_follows_the_pairs_and_falls_back_on_word_frequency(tmp_path):
    pairs = english_bigrams(_pairs(tmp_path, "very much 60\nvery often 20\nvery good 20\n"))
    words = Dictionary({"often": 50, "much": 5, "good": 5, "the": 100, "I": 80})
    predictor = BigramPredictor(PairPrior(pairs, words, unigram_share=0.2))
    ranked = predictor.predict(parse_context("Thank you very "), 5)
    assert ranked[0].text == "much"
    # P = 0.8 x pair share + 0.2 x word share, over all words (nothing typed yet).
    expected = {"much": 0.8 * 0.6 + 0.2 * 5 / 240, "often": 0.8 * 0.2 + 0.2 * 50 / 240,
                "the": 0.2 * 100 / 240}
    got = {c.text: c.probability for c in ranked}
    for word, p in expected.items():
        assert got[word] == pytest.approx(p)
    # Typed "o": renormalised over the words that begin so.
    begun = {c.text: c.probability for c in predictor.predict(parse_context("you very o"), 5)}
    assert begun == {"often": pytest.approx(1.0)}
    # A word that no pair after "very" holds keeps its own frequency's share.
    words = Dictionary({"often": 50, "oddly": 50})
    begun = {c.text: c.probability
             for c in BigramPredictor(PairPrior(pairs, words)).predict(parse_context("very o"), 5)}
    pair, word = 0.8 * 0.2, 0.2 * 1.0
    assert begun["oddly"] == pytest.approx(0.2 * 0.5 / (pair + word))
    assert begun["often"] == pytest.approx((pair + 0.2 * 0.5) / (pair + word))


def test_written_as_the_word_list_writes_it_and_silent_without_a_previous_word(tmp_path):
    pairs = english_bigrams(_pairs(tmp_path, "and i 10\nand the 5\n"))
    predictor = BigramPredictor(PairPrior(pairs, Dictionary({"I": 10, "the": 10})))
    assert predictor.predict(parse_context("bread and "), 2)[0].text == "I"
    assert predictor.predict(parse_context(""), 3) == []
    assert predictor.predict(parse_context("The end. "), 3) == []      # a sentence end
    assert predictor.predict(parse_context("zebra "), 3) == []          # no pairs begin so


def test_factory_checks_its_option_and_uses_the_engine_words(tmp_path):
    path = _pairs(tmp_path, "very much 1\n")
    resources = Resources(vocabulary={"much": 3.0})
    built = make_predictor({"path": str(path), "unigram_share": 0.5}, resources)
    assert built.prior.alpha == 0.5 and built.prior.words is resources.extra["dictionary"]
    with pytest.raises(ValueError, match="unigram_share"):
        make_predictor({"path": str(path), "unigram_share": 2}, resources)


def test_the_packaged_pairs_put_much_before_often_after_very():
    pairs = english_bigrams()
    if pairs is None:
        pytest.skip("symspellpy (the packaged word pairs) is not installed")
    ranked = [w for w, _ in pairs.complete("very ", 50)]
    assert ranked.index("very much") < ranked.index("very often")
    assert len(pairs) > 200_000
