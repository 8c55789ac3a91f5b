"""Kneser-Ney n-gram model: normalisation, a hand-computed example, prefixes, learning, storage.

The n-gram predictor that wraps it is tested in test_engine_ngram.py."""

import math

import numpy as np
import pytest

from predtext.errors import ModelFileError
from predtext.lm.ngram import NGramModel
from predtext.text import BOUNDARY, normalize_word

FIXED = [(0.5, 1.0, 1.5), (0.5, 1.0, 1.5)]

TEXT = ("The cat sat on the mat. The dog sat on the log! A cat and a dog met on the mat. "
        "Then the cat ran. The dog ran after the cat, and the cat sat down.")


def test_hand_computed_bigram_example():
    # Stream: <s> a b a b c.  Bigrams: (<s> a) (a b) x2 (b a) (b c).
    # Continuation counts: a 2 (after <s>, b), b 1, c 1; V = 4 with the boundary.
    model = NGramModel.from_text("a b a b c", order=2, discounts=FIXED)
    # gamma = (0.5 * 2 + 1.0 * 1) / 4 = 0.5; P1(a) = (2 - 1) / 4 + 0.5 / 4
    unigram = {"a": 0.375, "b": 0.25, "c": 0.25, BOUNDARY: 0.125}
    assert model.distribution(["zzz"]) == pytest.approx(unigram)
    # Context a: c(a b) = 2, gamma = 1.0 * 1 / 2.
    assert model.distribution(["a"]) == pytest.approx(
        {"b": 0.5 + 0.5 * 0.25, "a": 0.5 * 0.375, "c": 0.5 * 0.25, BOUNDARY: 0.5 * 0.125})
    # Context b: c(b a) = c(b c) = 1, gamma = 0.5 * 2 / 2.
    assert model.probability("a", ["b"]) == pytest.approx(0.25 + 0.5 * 0.375)
    assert model.probability("c", ["b"]) == pytest.approx(0.25 + 0.5 * 0.25)


@pytest.mark.parametrize("previous", [[], ["the"], ["on", "the"], ["sat", "on"],
                                      ["unseen", "words"], ["the", "unseen"], [BOUNDARY]])
def test_distribution_sums_to_one(previous):
    model = NGramModel.from_text(TEXT)
    assert sum(model.distribution(previous).values()) == pytest.approx(1.0, abs=1e-9)


def test_distribution_sums_to_one_after_online_learning():
    model = NGramModel.from_text(TEXT)
    model.learn("The bird sat on the fence. A bird and a cat.")
    for previous in (["the"], ["on", "the"], ["a", "bird"], ["zz"]):
        distribution = model.distribution(previous)
        assert sum(distribution.values()) == pytest.approx(1.0, abs=1e-9)
        assert distribution["bird"] > 0


def test_online_learning_matches_counting_both_texts():
    """Learning B after building on A gives the model built on A and B as two documents."""
    extra = "The bird sat on the cat. The dog and the bird ran on the log."
    learned = NGramModel.from_text(TEXT, discounts=[(0.6, 1.1, 1.4)] * 3)
    learned.learn(extra)
    built = NGramModel.from_text([TEXT, extra], discounts=[(0.6, 1.1, 1.4)] * 3)
    for previous in (["on", "the"], ["the"], ["bird"], [], ["and", "the"]):
        a, b = learned.distribution(previous), built.distribution(previous)
        assert a.keys() == b.keys()
        for word in a:
            assert a[word] == pytest.approx(b[word], abs=1e-12), (previous, word)
    learned.compact()                       # folding the overlay in changes nothing
    assert learned.distribution(["on", "the"]) == pytest.approx(built.distribution(["on", "the"]))


def test_predict_filters_by_prefix_and_renormalises():
    model = NGramModel.from_text(TEXT)
    completions = model.predict(["on", "the"], "m", k=5)
    assert [w for w, _ in completions][0] == "mat"
    assert all(w.lower().startswith("m") for w, _ in completions)
    everything = model.predict(["on", "the"], "m", k=100)
    assert sum(p for _, p in everything) == pytest.approx(1.0)
    # Ranked like the unfiltered distribution.
    distribution = model.distribution(["on", "the"])
    expected = sorted((w for w in distribution if w.startswith("m")),
                      key=lambda w: -distribution[w])
    assert [w for w, _ in everything] == expected
    assert model.predict(["on", "the"], "xyz", k=5) == []


def test_predict_next_word_and_written_form():
    model = NGramModel.from_text("I think I can. I know I will. Romeo came. "
                                 "Then Romeo went, and i left.")
    words = [w for w, _ in model.predict([BOUNDARY], "", k=3)]
    assert "I" in words and BOUNDARY not in words
    assert model.predict(["came"], "rom", k=1)[0][0] == "Romeo"


def test_clause_marks_are_context_but_never_predicted():
    model = NGramModel.from_text("yes, sir. yes, sir. yes madam. yes, sir, yes.")
    assert model.predict(["yes", ","], "", k=1)[0][0] == "sir"
    assert model.predict(["yes"], "", k=1)[0][0] == "madam"
    everything = model.predict(["sir"], "", k=100)
    assert {w for w, _ in everything}.isdisjoint({",", BOUNDARY})
    assert sum(p for _, p in everything) == pytest.approx(1.0)
    assert "," not in model.words()


def test_a_fork_learns_on_its_own_even_through_compaction():
    model = NGramModel.from_text(TEXT)
    contexts = (["on", "the"], ["the"], [], ["a", "dog"])
    before = [model.distribution(c) for c in contexts]
    twin = model.fork()
    assert [twin.distribution(c) for c in contexts] == before
    twin.learn("The zebra sat on the zebra. A dog and a zebra.")
    twin.compact()                        # renumbers ids and folds the learning in
    twin.learn("the zebra ran")
    assert twin.probability("zebra", ["the"]) > 0
    assert [model.distribution(c) for c in contexts] == before
    assert model.predict(["the"], "ze") == []
    model.learn("the yak")                # and the other way round
    assert model.predict(["the"], "y")[0][0] == "yak"
    assert "yak" not in [w for w, _ in twin.predict(["the"], "y")]
    assert twin.predict(["the"], "ze")[0][0] == "zebra"


def test_knows_context_says_whether_a_word_was_ever_followed():
    model = NGramModel.from_text("please buy bananas")
    assert model.knows_context(["please"]) and model.knows_context([])
    assert not model.knows_context(["bananas"]) and not model.knows_context(["opened", "the"])
    model.learn("bananas are ripe")
    assert model.knows_context(["bananas"])


def test_prefix_range_includes_words_learned_online():
    model = NGramModel.from_text(TEXT)
    model.learn("zebras zigzag")
    assert {w for w, _ in model.predict([], "z", k=5)} == {"zebras", "zigzag"}


def test_perplexity_is_finite_and_lower_on_training_text():
    model = NGramModel.from_text(TEXT)
    seen = model.perplexity(TEXT)
    unseen = model.perplexity("The mat ran on a dog and the log sat.")
    assert 1.0 < seen < unseen < math.inf
    assert model.perplexity("qwerty uiop") == math.inf


def test_arrays_round_trip_and_file(tmp_path):
    model = NGramModel.from_text(TEXT)
    model.learn("A bird.")
    arrays, meta = model.to_arrays()
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    import json
    restored = NGramModel.from_arrays(arrays, json.loads(json.dumps(meta)))
    assert restored.distribution(["on", "the"]) == pytest.approx(model.distribution(["on", "the"]))
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = NGramModel.load(path)
    got, want = loaded.predict(["the"], "c", 3), model.predict(["the"], "c", 3)
    assert [w for w, _ in got] == [w for w, _ in want]
    assert [p for _, p in got] == pytest.approx([p for _, p in want])


STRAIGHT = ("I don't know. You don't say! Don't go, I can't stay. "
            "We can't, we won't. I don't mind.")
# The same text, some of it typed with smart quotes.
MIXED = ("I don\u2019t know. You don't say! Don\u2019t go, I can\u2019t stay. "
         "We can't, we won\u2019t. I don't mind.")


def assert_same_model(model, expected):
    assert model.words() == expected.words()
    assert model.word_frequencies() == expected.word_frequencies()
    for previous in ([], ["i"], ["i", "don't"], ["i", "don\u2019t"], ["we", "can\u2019t"], ["<s>"]):
        got, want = model.distribution(previous), expected.distribution(previous)
        assert got.keys() == want.keys()
        for word in want:
            assert got[word] == pytest.approx(want[word], abs=1e-12), (previous, word)


def test_apostrophe_styles_are_counted_as_one_word():
    assert normalize_word("Don\u2019t") == "don't"
    assert_same_model(NGramModel.from_text(MIXED), NGramModel.from_text(STRAIGHT))
    learned = NGramModel.from_text("I can't stay.")
    learned.learn("Don\u2019t go, I can\u2019t.")
    assert learned.words().count("can't") == 1 and "can\u2019t" not in learned.words()
    assert learned.predict(["i"], "ca", 1)[0][0] == "can't"      # written straight: the user's
    assert learned.predict(["<s>"], "do", 1)[0][0] == "don't"    # style is the engine's to give


def test_a_file_that_stored_apostrophe_styles_apart_loads_them_as_one_word():
    """Files written before keys folded the apostrophe hold "don't" and "don\u2019t" apart."""
    # Such a file, made by counting with a stand-in letter for the curly apostrophe (U+02BC
    # is a letter, so "don\u02bct" is a word of its own; both sort after every ASCII word).
    arrays, meta = NGramModel.from_text(MIXED.replace("\u2019", "\u02bc")).to_arrays()
    meta["vocabulary"] = [w.replace("\u02bc", "\u2019") for w in meta["vocabulary"]]
    meta["surface"] = {i: f.replace("\u02bc", "\u2019") for i, f in meta["surface"].items()}
    assert "don\u2019t" in meta["vocabulary"] and "don't" in meta["vocabulary"]
    old = NGramModel.from_arrays(arrays, meta)
    # Fixed discounts aside, counting the text afresh gives the same model.
    assert_same_model(old, NGramModel.from_text(STRAIGHT))
    assert old.written_form("don\u2019t") == "don't"


def test_bad_arrays_and_files_are_reported(tmp_path):
    arrays, meta = NGramModel.from_text(TEXT).to_arrays()
    broken = dict(arrays)
    broken["ngram.order2.next_ids"] = broken["ngram.order2.next_ids"][:-1]
    with pytest.raises(ValueError, match="order 2"):
        NGramModel.from_arrays(broken, meta)
    empty_context = dict(arrays)        # a context with no next word: never written, refused
    starts = arrays["ngram.order2.context_starts"].copy()
    starts[-2] = starts[-1]
    empty_context["ngram.order2.context_starts"] = starts
    with pytest.raises(ValueError, match="order 2"):
        NGramModel.from_arrays(empty_context, meta)
    with pytest.raises(ValueError, match="format"):
        NGramModel.from_arrays(arrays, {**meta, "format": "other"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a model")
    with pytest.raises(ModelFileError, match="garbage.safetensors"):
        NGramModel.load(garbage)
    with pytest.raises(ModelFileError, match="no such file"):
        NGramModel.load(tmp_path / "missing.safetensors")


def test_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        NGramModel(order=9)
    with pytest.raises(ValueError, match="discounts"):
        NGramModel(order=2, discounts=[(0.5, 1.0, 1.5)])
    with pytest.raises(TypeError, match="text"):
        NGramModel.from_text([b"bytes"])
    empty = NGramModel.from_text("")
    assert empty.predict([], "", 5) == []
    assert sum(empty.distribution([]).values()) == pytest.approx(1.0)


def _models_to_probe():
    """A corpus model with learned text on top, and models that only ever learned (all their
    counts in the online overlay, as a new user's history), of every order."""
    built = NGramModel.from_text(TEXT)
    built.learn("The bird sat on the fence. A bird and a cat sat on the fence.")
    yield built
    for order in (1, 2, 3, 4):
        learned = NGramModel(order=order)
        learned.learn(TEXT)
        learned.learn("w. x y. x w. x w. x w. c a c c b c b a.")
        yield learned


@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.4, 0.6])
def test_no_word_that_reaches_the_threshold_is_left_unscored(threshold):
    """likely_next scores only some followers of a context, in ascending id order; none it
    skips may reach the threshold."""
    reached = 0
    for model in _models_to_probe():
        words = model.words() + [BOUNDARY, "unseen"]
        contexts = [[a, b] for a in words[:40] for b in words] + [[w] for w in words] + [[]]
        for previous in contexts:
            scored = model._possible_followers(model._context_ids(previous), threshold)
            assert np.all(np.diff(scored) > 0), previous
            for word, p in model.distribution(previous).items():
                if p >= threshold:
                    reached += 1
                    assert model._id(word) in set(scored.tolist()), (previous, word, p)
    assert reached > 0


def test_likely_next_is_the_likeliest_word_with_its_probability():
    answered = 0
    for model in _models_to_probe():
        words = model.words() + [BOUNDARY]
        for previous in [[a, b] for a in words[:30] for b in words] + [[w] for w in words]:
            answer = model.likely_next(previous, 0.2)
            if answer is not None:
                answered += 1
                distribution = model.distribution(previous)
                assert answer[1] == pytest.approx(distribution[normalize_word(answer[0])])
                assert answer[1] == pytest.approx(max(distribution.values())), previous
    assert answered > 10
    learned = NGramModel(order=2)
    learned.learn("w. x y. x w. x w. x w.")
    assert learned.likely_next(["x"], 0.5) == ("w", pytest.approx(learned.probability("w", ["x"])))


def test_cached_answers_do_not_outlive_a_renumbering():
    model = NGramModel.from_text(TEXT)
    model.learn("best regards. best regards. apple pie. apple pie. zebra crossing. zebra crossing.")
    words = model.words()
    for word in words:
        model.likely_next([word], 0.3)            # fill the cache
    model.compact()                               # new words move among the sorted ids
    for word in words:
        assert model.likely_next([word], 0.3) == model._likely_next(
            model._context_ids([word]), 0.3), word


def test_likely_next_is_the_likeliest_word_seen_twice_in_that_context():
    model = NGramModel.from_text(TEXT)
    for previous in (["on", "the"], ["sat", "on"], ["the", "cat"], ["the"], ["a", "dog"]):
        distribution = {w: p for w, p in model.distribution(previous).items()}
        best = max(distribution, key=distribution.get)
        answer = model.likely_next(previous, 0.01)
        if (best in (BOUNDARY, ",")
                or model._seen_after(model._context_ids(previous), model._id(best)) < 2):
            assert answer is None, previous
        else:
            assert answer == (model.written_form(best), pytest.approx(distribution[best])), previous
    assert model.likely_next(["sat", "on"], 0.01)[0] == "the"      # seen three times
    assert model.likely_next(["a", "dog"], 0.01) is None            # "met" seen once
    assert model.likely_next(["sat", "on"], 0.99) is None


def test_a_learned_word_is_capitalised_only_when_seen_so_inside_a_sentence():
    model = NGramModel.from_text(TEXT)
    model.learn("Soon we go to Paris. Paris is far, and soon we rest. Zebras run.")
    assert model.written_form("soon") == "soon"        # its capital only began a sentence
    assert model.written_form("paris") == "Paris"
    assert model.written_form("zebras") == "zebras"
    assert model.written_form("the") == "the"          # corpus words keep their form


def test_a_phrase_needs_evidence_after_its_own_context():
    model = NGramModel.from_text("I will come as soon as possible. " * 5 + "As a rule, no.",
                                 discounts=[(0.5, 1.0, 1.5)] * 3)
    assert model.likely_next(["as", "soon"], 0.5)[0] == "as"       # seen five times
    # "back soon" was never seen: the estimate backs off to "soon", whose "as" only ever came
    # after one word ("as soon as"): no evidence that "as" follows "back soon".
    assert model.probability("as", ["back", "soon"]) > 0.5
    assert model.likely_next(["back", "soon"], 0.5) is None


def test_phrase_follows_likely_words_and_stops_at_marks():
    model = NGramModel.from_text("as soon as possible, said he. " * 4 + "as well. as good.")
    words, probability = model.phrase(["as"], "soon", 0.5, 4)
    assert words == ["as", "possible"]        # then a comma: the phrase ends
    assert probability == pytest.approx(model.probability("as", ["as", "soon"])
                                        * model.probability("possible", ["soon", "as"]))
    assert model.phrase(["as"], "soon", 0.5, 2)[0] == ["as"]
    assert model.phrase(["as"], "soon", 0.999, 4) == ([], 1.0)
    assert model.phrase([BOUNDARY], "as", 0.5, 4) == ([], 1.0)   # soon, well, good: none likely
    assert model.phrase([","], "said", 0.5, 1) == ([], 1.0)


def test_likely_next_sees_what_was_learned():
    model = NGramModel.from_text(TEXT, discounts=[(0.5, 1.0, 1.5)] * 3)
    assert model.likely_next(["best"], 0.5) is None
    model.learn("best regards. best regards. best regards.")
    assert model.likely_next(["best"], 0.5)[0] == "regards"
    before = model.likely_next(["best"], 0.5)
    model.compact()                  # ids are renumbered: no stale answer may survive
    assert model.likely_next(["best"], 0.5) == before
