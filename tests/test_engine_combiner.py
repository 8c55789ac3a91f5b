"""Combination policies: linear interpolation, max (meritocracy), merging duplicates."""

import pytest

from predtext.engine.combiner import combine
from predtext.engine.predictor import Candidate


def proposals():
    return [
        ("ngram", 0.75, [Candidate("apple", 0.6), Candidate("apply", 0.4)]),
        ("history", 0.25, [Candidate("Apple", 0.2), Candidate("applesauce", 0.8)]),
    ]


def test_linear_interpolation_merges_duplicates_with_their_sources():
    ranked = combine(proposals(), "linear")
    scores = {s.text: s.score for s in ranked}
    assert scores == pytest.approx({"apple": 0.75 * 0.6 + 0.25 * 0.2, "apply": 0.75 * 0.4,
                                    "applesauce": 0.25 * 0.8})
    apple = next(s for s in ranked if s.text == "apple")
    assert apple.source == ("ngram", "history")     # strongest contribution first
    assert next(s for s in ranked if s.text == "apply").source == "ngram"
    assert [s.text for s in ranked] == ["apple", "apply", "applesauce"]
    assert all(s.replace == 0 for s in ranked)


def test_apostrophe_styles_merge_into_one_suggestion():
    ranked = combine([("ngram", 1.0, [Candidate("don't", 0.5)]),
                      ("neural", 1.0, [Candidate("don\u2019t", 0.3)])], "linear")
    assert [(s.text, s.source) for s in ranked] == [("don't", ("ngram", "neural"))]
    assert ranked[0].score == pytest.approx(0.4)


def test_max_takes_the_best_weighted_probability():
    ranked = combine(proposals(), "max")
    scores = {s.text: s.score for s in ranked}
    assert scores == pytest.approx({"apple": 0.45, "apply": 0.3, "applesauce": 0.2})
    assert len(ranked) == 3


def test_a_silent_predictor_does_not_dilute_linear_scores():
    ranked = combine([("ngram", 0.5, [Candidate("cat", 0.8)]), ("dictionary", 0.5, [])], "linear")
    assert ranked[0].score == pytest.approx(0.8)


def test_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        combine(proposals(), "average")
