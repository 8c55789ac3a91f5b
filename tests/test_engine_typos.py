"""Typo corrections, the modern word list, and the keyboard they share."""

import pytest

from predtext.engine.config import EngineConfig
from predtext.engine.context import parse_context
from predtext.engine.dictionary import Dictionary
from predtext.engine.engine import Engine
from predtext.engine.keyboard import NEIGHBOURS, adjacent
from predtext.engine.ngram import NGramModel
from predtext.engine.typos import TypoCorrector

WORDS = {"the": 500.0, "then": 40.0, "they": 60.0, "receive": 5.0, "received": 4.0,
         "recent": 3.0, "cat": 10.0, "cut": 10.0, "tehran": 0.01, "with": 80.0}


def corrections(typed, words=WORDS, k=6):
    corrector = TypoCorrector(Dictionary(words))
    return [c.text for c in corrector.predict(parse_context(typed), k)]


def test_the_keyboard_knows_its_neighbours():
    assert adjacent("g", "h") and adjacent("H", "g") and not adjacent("g", "p")
    assert NEIGHBOURS["q"] == frozenset("wa")


def test_a_swap_a_slip_and_a_dropped_letter_are_corrected():
    assert corrections("teh")[0] == "the"          # swapped, though "tehran" begins so
    assert corrections("recie")[0].startswith("recei")
    assert corrections("wiht") == ["with"]
    assert "receive" in corrections("recive")      # a letter left out


def test_a_neighbouring_key_counts_above_another():
    # "cst": s is beside a, far from u: "cat" before "cut", equally common.
    assert corrections("cst")[0] == "cat"


def test_a_likely_beginning_is_left_alone():
    assert corrections("th") == [] and corrections("rec") == []
    assert corrections("x") == []                  # one letter tells nothing


def test_the_users_own_words_are_not_typos():
    corrector = TypoCorrector(Dictionary(WORDS))
    assert [c.text for c in corrector.predict(parse_context("teh"), 6)][:1] == ["the"]
    corrector.learn("teh is my word")
    assert corrector.predict(parse_context("teh"), 6) == []
    corrector.forget()
    assert corrector.predict(parse_context("teh"), 6) != []


def test_a_correction_replaces_the_typed_part_and_is_never_applied_by_itself():
    # (No time budget: a loaded machine must not make an empty answer.)
    with Engine([TypoCorrector(Dictionary(WORDS))], EngineConfig(time_budget_ms=None)) as engine:
        offered = engine.suggest("I will recie")
        assert offered and offered[0].replace == len("recie")
        assert offered[0].apply("I will recie") == "I will " + offered[0].text
        assert offered[0].text.startswith("recei")
        assert engine.suggest("Teh")[0].text == "The"      # in the user's case


def test_two_slips_are_forgiven_in_a_longer_word():
    words = {"government": 10.0, "go": 100.0}
    assert corrections("gobernmnet", words) == ["government"]


def test_bad_options_are_refused():
    from predtext.engine.predictor import Resources
    from predtext.engine.typos import make_predictor

    with pytest.raises(ValueError, match="min_probability"):
        make_predictor({"min_probability": 2}, Resources(vocabulary=WORDS))
    with pytest.raises(ValueError, match="no words"):
        make_predictor({}, Resources())


def test_the_default_engine_knows_todays_words_and_corrects_typos():
    pytest.importorskip("wordfreq")
    from predtext.engine.wordlist import english_words

    words = english_words()
    assert {"email", "website", "tomorrow"} <= set(words) and "tomour" not in words
    text = "The cat sat on the mat. The dog sat on the log."
    # The default config (a budget an hour long: a loaded machine must not make an empty answer).
    with Engine.load(model=NGramModel.from_text(text),
                     config={"engine": {"time_budget_ms": 3_600_000}}) as engine:
        assert "email" in [s.text for s in engine.suggest("send me an ema")]
        assert "website" in [s.text for s in engine.suggest("the websi")]
        assert "the" in [s.text for s in engine.suggest("on teh")]


def test_the_previous_word_weighs_the_corrections(tmp_path):
    from predtext.engine.bigrams import PairPrior
    from predtext.engine.wordlist import english_bigrams

    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("in half 100\nin all 1\nof all 100\n", encoding="utf-8")
    words = Dictionary({"all": 1000.0, "half": 100.0})
    prior = PairPrior(english_bigrams(pairs_file), words)
    plain, weighed = TypoCorrector(words), TypoCorrector(words, prior=prior)
    assert [c.text for c in plain.predict(parse_context("cut in ahl"), 3)][0] == "all"
    assert [c.text for c in weighed.predict(parse_context("cut in ahl"), 3)][0] == "half"
    assert [c.text for c in weighed.predict(parse_context("most of ahl"), 3)][0] == "all"
    # A previous word no pair begins with: all text, as without the pairs.
    assert [c.text for c in weighed.predict(parse_context("cut on ahl"), 3)][0] == "all"


def test_a_correction_passed_over_stays_offered():
    # Typed on past "said" at "asi", below the best: at "asid" the correction is still
    # offered (a completion passed over would give way).
    from predtext.engine.protocol import Candidate

    class Fixed:
        def __init__(self, name, words):
            self.name, self.words = name, words

        def predict(self, context, k):
            return [Candidate(w, p) for w, p in self.words.get(context.prefix, [])]

    completions = Fixed("completions", {"asi": [("aside", 0.6), ("asia", 0.3)],
                                        "asid": [("aside", 0.9), ("asides", 0.1)]})
    typos = Fixed("typos", {"asi": [("said", 0.5)], "asid": [("said", 0.5)]})
    with Engine([completions, typos], {"engine": {"time_budget_ms": 3_600_000}}) as engine:
        assert [s.text for s in engine.suggest("she asi")] == ["aside", "said", "asia"]
        assert [s.text for s in engine.suggest("she asid")] == ["aside", "said", "asides"]
        assert [s.text for s in engine.suggest("she asides")] == []
