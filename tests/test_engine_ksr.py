"""Keystroke-savings simulator: counts on a tiny text checked by hand."""

import pytest

from predtext.engine.ksr import KsrReport, simulate
from predtext.engine.suggestion import Suggestion


def offer(words):
    """A fake suggest(): every word of ``words`` that completes the partial word at the cursor."""
    def suggest(text, k):
        typed = len(text) - len(text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        prefix = text[len(text) - typed:]
        return [Suggestion(w, typed) for w in words if w.lower().startswith(prefix.lower())][:k]
    return suggest


def test_counts_on_a_hand_checked_text():
    learned = []
    report = simulate("the cat sat\nthe cat", offer(["cat"]), k=6, learn=learned.append)
    # "the": 3 typed, " ": 1, "cat": selected before its first letter (+ free space),
    # "sat": 3, "\n": 1, "the": 3, " ": 1, "cat": selected.
    counts = (report.characters, report.typed, report.selections, report.free_spaces)
    assert counts == (19, 12, 2, 1)
    assert report.ksr == pytest.approx(1 - 14 / 19)
    assert (report.words, report.words_selected) == (5, 2)
    assert len(report.latencies_ms) == 3 + 1 + 3 + 3 + 1
    assert learned == ["the cat sat", "the cat"]


def test_selection_mid_word_and_case():
    report = simulate("The Cathedral", offer(["cathedral", "cat"]), k=1)
    # k=1: at "", "C", "Ca" the first offer is "cathedral" -> selected at once (case-insensitive).
    assert (report.typed, report.selections) == (4, 1)
    strict = simulate("The Cathedral", offer(["cathedral"]), k=1, case_sensitive=True)
    assert strict.selections == 0 and strict.typed == 13


def test_only_the_first_k_suggestions_count():
    report = simulate("dog", offer(["dot", "dove", "dog"]), k=2)
    # "": dot, dove; "d": same; "do": same; the word is typed in full.
    assert (report.typed, report.selections) == (3, 0)
    assert simulate("dog", offer(["dot", "dove", "dog"]), k=3).selections == 1


def test_a_suggestion_must_replace_exactly_the_typed_part():
    def wrong_replace(text, k):
        return [Suggestion("cat", 0)] if text.endswith("c") else []
    report = simulate("cat", wrong_replace, k=6)
    assert report.selections == 0        # "c" + "cat" would give "ccat"


def test_latency_percentiles_and_summary():
    report = KsrReport(characters=10, typed=4, selections=1,
                       latencies_ms=[float(i) for i in range(1, 101)])
    assert report.latency_percentile(50) == 50.0
    assert report.latency_percentile(99) == 99.0
    summary = report.summary()
    assert summary["ksr"] == pytest.approx(0.5) and summary["suggest_calls"] == 100


def test_bad_arguments():
    with pytest.raises(ValueError, match="k"):
        simulate("text", offer([]), k=0)
    with pytest.raises(TypeError, match="text"):
        simulate(None, offer([]))
    assert simulate("", offer([])).ksr == 0.0


def test_a_phrase_is_one_selection_for_all_its_words():
    report = simulate("as soon as it can", offer(["as soon as"]), k=6)
    # Selected before the first letter: "as soon as" and the space after it; "it can" typed.
    assert (report.characters, report.typed, report.selections, report.free_spaces) == (17, 6, 1, 1)
    assert (report.words, report.words_selected, report.phrases_selected) == (5, 3, 1)
    assert report.ksr == pytest.approx(1 - 7 / 17)


@pytest.mark.parametrize("phrase", ["as soon it", "as so", "as soon as it c"])
def test_a_phrase_counts_only_when_it_writes_whole_words_of_the_text(phrase):
    report = simulate("as soon as it can", offer([phrase]), k=6)
    assert report.selections == 0 and report.typed == 17



def test_the_glancer_looks_before_a_word_and_after_every_third_letter():
    # "cathedral" is offered once a letter of it is typed: the reader takes it after "c",
    # the glancer only after "cat" (the engine is asked at every keystroke all the same).
    asked = []

    def suggest(text, k):
        asked.append(text)
        typed = text.split(" ")[-1]
        return [Suggestion("cathedral", len(typed))] if typed else []
    reader = simulate("a cathedral", suggest, k=6)
    assert (reader.typed, reader.selections) == (3, 1)        # "a", " ", "c"; then taken
    asked.clear()
    glancer = simulate("a cathedral", suggest, k=6, user="glancer")
    assert (glancer.typed, glancer.selections) == (5, 1)      # "a", " ", "cat"; then taken
    assert asked == ["", "a ", "a c", "a ca", "a cat"]
    with pytest.raises(ValueError, match="user"):
        simulate("a", suggest, user="skimmer")


def test_the_typist_slips_once_a_word_in_the_ways_people_do():
    import random

    from predtext.engine.ksr import mistype

    rng = random.Random(0)
    slips = [mistype("receive", rng) for _ in range(200)]
    assert "receive" not in slips and all(abs(len(s) - 7) <= 1 for s in slips)
    lengths = {len(s) for s in slips}
    assert lengths == {6, 7, 8}                 # dropped, swapped or next key, doubled
    assert any(s == "recieve" for s in slips)   # a swap
    assert mistype("", rng) == ""


def test_a_typo_with_nothing_offered_is_typed_out_rubbed_out_and_retyped():
    report = simulate("the receive", offer([]), k=6, typos=1.0, seed=1)
    assert report.typos == 2 and report.corrections_taken == 0 and report.selections == 0
    assert report.backspaces > 0
    # Every intended letter is typed once, plus the slipped letters rubbed out again.
    assert report.keystrokes == report.typed + report.backspaces > len("the receive")
    again = simulate("the receive", offer([]), k=6, typos=1.0, seed=1)
    assert again.keystrokes == report.keystrokes


def test_a_typo_is_fixed_by_taking_a_correction_of_the_typed_part():
    def correct(text, k):
        typed = text.split(" ")[-1]
        if typed and not "receive".startswith(typed):
            return [Suggestion("receive", len(typed))]
        return []
    report = simulate("receive", correct, k=6, typos=1.0, seed=3)
    assert report.typos == 1 and report.selections == 1 and report.backspaces == 0
    assert report.words_selected == 1 and report.keystrokes < 7
    with pytest.raises(ValueError, match="typos"):
        simulate("a", offer([]), typos=1.5)
