"""Built-in predictors: dictionary, abbreviations, user history (file mode, forget), registry."""

import os
import stat

import pytest

from predtext.engine import predictor as predictor_module
from predtext.engine.abbreviations import AbbreviationPredictor, load_table
from predtext.engine.abbreviations import make_predictor as make_abbreviations
from predtext.engine.config import ConfigError
from predtext.engine.context import parse_context
from predtext.engine.dictionary import Dictionary, DictionaryPredictor
from predtext.engine.history import HISTORY_FILE, RECENCY_PRIOR, HistoryPredictor, HistoryStore
from predtext.engine.history import make_predictor as make_history
from predtext.engine.predictor import (
    Candidate,
    Resources,
    available_predictors,
    create_predictor,
    register_predictor,
)


def test_dictionary_completes_by_frequency():
    dictionary = Dictionary({"apple": 5, "Apply": 3, "application": 10, "banana": 50, "ape": 1})
    assert [w for w, _ in dictionary.complete("app", 2)] == ["application", "apple"]
    completions = dictionary.complete("AP", 10)
    assert [w for w, _ in completions] == ["application", "apple", "Apply", "ape"]
    assert sum(p for _, p in completions) == pytest.approx(1.0)
    assert dictionary.complete("q", 3) == []
    predictor = DictionaryPredictor(dictionary)
    assert predictor.predict(parse_context("an "), 3) == []        # nothing typed: nothing to say
    assert predictor.predict(parse_context("a ban"), 3) == [Candidate("banana", 1.0)]


def test_dictionary_from_word_list_file(tmp_path):
    path = tmp_path / "words"
    path.write_text("zebra\nzeal 4\nZealand\n", encoding="utf-8")
    assert Dictionary.from_file(path).complete("ze", 1)[0][0] == "zeal"


def test_a_word_list_with_a_byte_order_mark_or_bad_frequencies(tmp_path):
    path = tmp_path / "words"
    path.write_bytes("\ufeffapple 3\napricot\n".encode("utf-8"))
    assert [w for w, _ in Dictionary.from_file(path).complete("ap", 5)] == ["apple", "apricot"]
    from predtext.errors import ModelFileError
    for bad in ("inf", "1e400", "nan", "-2", "lots"):
        path.write_text(f"apple {bad}\napricot 5\n", encoding="utf-8")
        with pytest.raises(ModelFileError, match="words.*line 1"):
            Dictionary.from_file(path)


def test_abbreviations_from_toml(tmp_path):
    path = tmp_path / "abbreviations.toml"
    path.write_text('[abbreviations]\nbrb = "be right back"\nafaik = "as far as I know"\n')
    predictor = AbbreviationPredictor(load_table(path))
    assert predictor.predict(parse_context("ok brb"), 3) == [Candidate("be right back", 1.0)]
    assert predictor.predict(parse_context("ok br"), 3) == []
    built = make_abbreviations({"path": str(path), "table": {"ty": "thank you"}}, Resources())
    assert built.predict(parse_context("ty"), 1)[0].text == "thank you"
    path.write_text("brb = ")
    with pytest.raises(ConfigError, match="abbreviations.toml"):
        load_table(path)
    with pytest.raises(ConfigError, match="no such"):
        load_table(tmp_path / "missing.toml")


def test_abbreviation_keys_that_could_never_fire_are_left_out_with_a_warning(tmp_path, caplog):
    # The key is matched against the word before the cursor; "omw!" or "c u" never is one.
    path = tmp_path / "abbreviations.toml"
    bad = ("omw!", "c u", "c/u", "-ish", "'tis'", "rock--roll", "x" * 65)
    path.write_text("brb = \"be right back\"\n" + "".join(f'"{key}" = "x"\n' for key in bad))
    with caplog.at_level("WARNING", logger="predtext.engine"):
        table = load_table(path)
    assert table == {"brb": "be right back"}                  # the rest of the table is kept
    assert "abbreviations.toml" in caplog.text and all(repr(key) in caplog.text for key in bad)
    assert AbbreviationPredictor({"omw!": "on my way"}).table == {}
    # Words with joiners and digits inside are fine, and fire.
    predictor = AbbreviationPredictor({"l8r": "later", "o'c": "o'clock", "x-mas": "Christmas",
                                       "goin'": "going", "rock-": "rock-and-roll"})
    assert predictor.predict(parse_context("I am goin'"), 1) == [Candidate("going", 1.0)]
    assert predictor.predict(parse_context("some rock-"), 1) == [Candidate("rock-and-roll", 1.0)]
    assert predictor.predict(parse_context("see you l8r"), 1) == [Candidate("later", 1.0)]
    assert predictor.predict(parse_context("at five o'c"), 1) == [Candidate("o'clock", 1.0)]
    assert predictor.predict(parse_context("happy X-mas"), 1) == [Candidate("Christmas", 1.0)]


def test_history_learns_and_stores_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    predictor = make_history({}, Resources())
    assert predictor.predict(parse_context("the zy"), 3) == []
    predictor.learn("the zymurgy of ale")
    path = tmp_path / "data" / HISTORY_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert predictor.predict(parse_context("the zy"), 3)[0].text == "zymurgy"
    # A new predictor reads what the first stored.
    again = make_history({}, Resources())
    assert again.predict(parse_context("the zy"), 3)[0].text == "zymurgy"
    again.forget()
    assert not path.exists()
    assert again.predict(parse_context("the zy"), 3) == []


def test_history_recency_weighs_each_occurrence_by_how_far_back_it_is(tmp_path):
    # recency 1: the recency cache alone, so the probabilities are its own.
    predictor = HistoryPredictor(None, recency=1.0, decay=0.5)
    predictor.learn("Paris pasta paris")
    found = {c.text.lower(): c.probability for c in predictor.predict(parse_context("we pa"), 5)}
    # Words back from the cursor: we (1), paris (0.5), pasta (0.25), paris (0.125).
    paris, pasta = 0.5 + 0.125, 0.25
    assert found == pytest.approx({"paris": paris / (paris + pasta),
                                   "pasta": pasta / (paris + pasta)})
    predictor.learn("pasta")            # now the newest: it takes the lead
    ranked = [c.text.lower() for c in predictor.predict(parse_context("pa"), 5)]
    assert ranked == ["pasta", "paris"]
    # The typed word itself is no suggestion, and words before the cursor count too, except
    # the one right before it (a word rarely follows itself).
    assert [c.text for c in predictor.predict(parse_context("papaya and pa"), 5)][0] == "papaya"
    assert "papaya" not in [c.text for c in predictor.predict(parse_context("papaya pa"), 5)]
    assert "pasta" not in [c.text for c in predictor.predict(parse_context("pasta"), 5)]


def test_history_recency_alone_is_trusted_by_how_many_words_it_holds():
    # A fresh user: no n-gram of theirs yet, only the words of the line being typed.
    predictor = HistoryPredictor(None, recency=0.3, decay=1.0)
    found = {c.text: c.probability for c in predictor.predict(parse_context("red and rose r"), 5)}
    # "rose" is right before the cursor: left out. Two words of evidence: 2 / (2 + prior).
    assert found == pytest.approx({"red": 2 / (2 + RECENCY_PRIOR)})
    # Before the first letter the cache says nothing: recent is not the same as fitting.
    assert predictor.predict(parse_context("red and rose "), 5) == []


def test_history_offers_the_users_own_phrases_once_written_twice():
    predictor = HistoryPredictor(None)
    predictor.learn("Soon we go.")          # "soon" learned before "see", "you": ids not sorted
    predictor.learn("Then I will see you soon.")
    assert all(" " not in c.text for c in predictor.predict(parse_context("Bye, see y"), 5))
    predictor.learn("Fine, see you soon.")
    offered = {c.text: c.probability for c in predictor.predict(parse_context("Bye, see y"), 5)}
    assert "you soon" in offered
    assert offered["you soon"] < offered["you"]
    words_only = make_history({"persist": False, "phrase_words": 1}, Resources())
    for line in ("See you soon.", "See you soon."):
        words_only.learn(line)
    assert all(" " not in c.text for c in words_only.predict(parse_context("Bye, see y"), 5))
    with pytest.raises(ValueError, match="phrase_threshold"):
        make_history({"persist": False, "phrase_threshold": 2}, Resources())


def test_history_once_read_answers_while_another_engine_prepares_it_again():
    # An engine made over loaded predictors (the language server's per-document one) calls
    # prepare() again on its lane; a keystroke meanwhile still gets the history.
    predictor = HistoryPredictor(None)
    predictor.learn("please buy bananas")
    context = parse_context("I said please ")
    with predictor._lock:             # what a prepare() in progress holds
        assert [c.text for c in predictor.predict(context, 6)][:1] == ["buy"]
    unread = HistoryPredictor(None)
    with unread._lock:                # not read yet: the keystroke does not wait for it
        assert unread.predict(context, 6) == []


def test_history_says_nothing_after_a_word_the_user_never_followed_with_another():
    predictor = HistoryPredictor()
    predictor.learn("please buy bananas")
    assert predictor.predict(parse_context("She opened the "), 6) == []
    assert predictor.predict(parse_context("I said please "), 6)[0].text == "buy"
    assert predictor.predict(parse_context("She opened the ba"), 6)[0].text == "bananas"


@pytest.mark.parametrize("option, value", [("max_bytes", 0), ("max_bytes", -1), ("order", 9),
                                           ("order", 0), ("decay", float("nan")), ("decay", -3),
                                           ("decay", 1.5), ("window", 0), ("recency", 2)])
def test_history_options_are_checked(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        make_history({option: value, "data_dir": str(tmp_path)}, Resources())


def test_history_fixes_a_too_open_file_mode(tmp_path):
    path = tmp_path / HISTORY_FILE
    path.write_text("old words\n")
    os.chmod(path, 0o644)
    HistoryStore(path).append("new words")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert HistoryStore(path).read() == "old words\nnew words\n"


def test_history_can_be_switched_off(tmp_path):
    store = HistoryStore(tmp_path / HISTORY_FILE)
    predictor = HistoryPredictor(store, enabled=False)
    predictor.learn("secret words")
    assert not store.path.exists()
    assert predictor.predict(parse_context("sec"), 3) == []


def test_history_keeps_only_the_newest_text(tmp_path):
    store = HistoryStore(tmp_path / HISTORY_FILE, max_bytes=30)
    for i in range(10):
        store.append(f"line number {i}")
    text = store.read()
    assert text.endswith("line number 9\n") and "line number 0" not in text
    assert os.path.getsize(store.path) <= 30


def test_registry_in_process_and_unknown(monkeypatch):
    # Load the real registry (built-ins come as entry points) before working on a copy of it:
    # loading it into the copy would leave the real one marked loaded but empty.
    available_predictors()
    monkeypatch.setattr(predictor_module, "_registry", dict(predictor_module._registry))

    class Echo:
        name = "echo"

        def predict(self, context, k):
            return [Candidate(context.prefix + "o", 1.0)]

    register_predictor("echo", lambda options, resources: Echo())
    assert "echo" in available_predictors()
    echo = create_predictor("echo", {}, Resources())
    assert echo.predict(parse_context("ech"), 1)[0].text == "echo"
    with pytest.raises(LookupError, match="nonesuch"):
        create_predictor("nonesuch", {}, Resources())
    register_predictor("notapredictor", lambda options, resources: object())
    with pytest.raises(TypeError, match="notapredictor"):
        create_predictor("notapredictor", {}, Resources())


def test_registry_discovers_entry_points_and_survives_broken_ones(monkeypatch, caplog):
    available_predictors()
    monkeypatch.setattr(predictor_module, "_registry", dict(predictor_module._registry))
    monkeypatch.setattr(predictor_module, "_entry_points_loaded", False)

    class FakeEntryPoint:
        def __init__(self, name, target):
            self.name, self.value, self._target = name, f"pkg:{name}", target

        def load(self):
            if isinstance(self._target, Exception):
                raise self._target
            return self._target

    def fake_entry_points(group):
        assert group == "predtext.predictors"
        return [FakeEntryPoint("plugged", lambda options, resources: DictionaryPredictor(
                    Dictionary(["plugin"]), name="plugged")),
                FakeEntryPoint("broken", ImportError("no module named nowhere"))]

    import importlib.metadata
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    names = available_predictors()
    assert "plugged" in names and "broken" not in names
    assert "broken" in caplog.text and "no module named nowhere" in caplog.text
    plugged = create_predictor("plugged", {}, Resources())
    assert plugged.predict(parse_context("plu"), 1)[0].text == "plugin"


def test_a_unigram_history_still_offers_next_words():
    predictor = HistoryPredictor(order=1)
    predictor.learn("please buy bananas")
    assert {c.text for c in predictor.predict(parse_context("She opened the "), 6)} == {
        "please", "buy", "bananas"}


def test_a_modern_word_keeps_the_corpus_capitals():
    from predtext.engine.dictionary import mix_frequencies

    mixed = mix_frequencies({"Monday": 3, "the": 7}, {"monday": 1, "the": 8, "email": 1})
    assert mixed == pytest.approx({"Monday": 0.5 * 0.3 + 0.5 * 0.1, "the": 0.5 * 0.7 + 0.5 * 0.8,
                                   "email": 0.5 * 0.1})
    assert Dictionary(mixed).form("monday") == "Monday"
    assert Dictionary(mixed).form("zebra") == "zebra"
