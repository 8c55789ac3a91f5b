"""The Engine: completion and next word, repeats, case, time budget, config, bad input."""

import logging
import threading

import pytest

from predtext.engine.config import ConfigError, EngineConfig, config_path, default_config, load_config
from predtext.engine.engine import MAX_K, Engine
from predtext.engine.ngram import NGramModel
from predtext.engine.predictor import Candidate

TEXT = ("The cat sat on the mat. The dog sat on the log! A cat and a dog met on the mat. "
        "Then the cat ran. The dog ran after the cat, and the cat sat down.")


class WordList:
    """Offers, in a fixed order, the words of its list that start with the typed prefix."""

    def __init__(self, words, name="words"):
        self.name, self.words = name, words

    def predict(self, context, k):
        prefix = context.prefix.lower()
        found = [w for w in self.words if w.startswith(prefix)]
        return [Candidate(w, 1.0 / (i + 2)) for i, w in enumerate(found)][:k]


@pytest.fixture
def engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))
    engine = Engine.load(model=NGramModel.from_text(TEXT))
    yield engine
    engine.close()


def texts(suggestions):
    return [s.text for s in suggestions]


def test_completion_and_next_word(engine):
    completions = engine.suggest("the dog sat on the m")
    assert completions[0].text == "mat" and completions[0].replace == 1
    assert all(s.text.lower().startswith("m") for s in completions)
    following = engine.suggest("the cat sat on ")
    assert following[0].text == "the" and following[0].replace == 0
    assert following[0].source == ("ngram", "dictionary") or "ngram" in following[0].sources
    assert 0 < following[0].score <= 1


def test_the_typed_word_alone_is_never_offered():
    with Engine([WordList(["cat", "catalogue", "cathedral"])]) as engine:
        assert texts(engine.suggest("a cat")) == ["catalogue", "cathedral"]
        assert "Cat" not in texts(engine.suggest("A Cat"))


def test_passed_over_suggestions_are_not_offered_again_for_that_word():
    words = ["cab", "cad", "cafe", "cage", "cake", "calf"]
    with Engine([WordList(words)]) as engine:
        assert texts(engine.suggest("the c", k=2)) == ["cab", "cad"]
        assert texts(engine.suggest("the ca", k=2)) == ["cafe", "cage"]
        assert texts(engine.suggest("the ca", k=2)) == ["cafe", "cage"]   # asked again: same answer
        assert texts(engine.suggest("the caf", k=2)) == []
        assert texts(engine.suggest("the c", k=2)) == ["cab", "cad"]      # backspace: start over
        assert texts(engine.suggest("the cab c", k=2)) == ["cab", "cad"]  # a new word
    with Engine([WordList(words)], EngineConfig(repeat_suggestions=True)) as engine:
        engine.suggest("the c", k=2)
        assert texts(engine.suggest("the ca", k=2)) == ["cab", "cad"]


def test_boundary_offers_count_as_passed_over_for_the_next_word():
    with Engine([WordList(["cab", "cad", "cafe"])]) as engine:
        assert texts(engine.suggest("the ", k=2)) == ["cab", "cad"]
        assert texts(engine.suggest("the c", k=2)) == ["cafe"]


def test_suggestions_follow_the_users_case():
    with Engine([WordList(["apple", "application"])]) as engine:
        assert texts(engine.suggest("an App"))[0] == "Apple"
        assert texts(engine.suggest("my APP"))[0] == "APPLE"
        assert texts(engine.suggest("the app"))[0] == "apple"
        assert texts(engine.suggest("Done. "))[0] == "Apple"
        assert texts(engine.suggest("I SAID THAT "))[0] == "APPLE"


def test_a_likely_phrase_is_offered_in_the_users_case(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))
    corpus = (" ".join(f"{w}. Thank you kindly." for w in ("Yes", "No", "Fine", "Good", "So", "Well"))
              + " They came. Then we left. That is all.")
    with Engine.load(model=NGramModel.from_text(corpus)) as engine:
        offered = engine.suggest("Done. Th")
        assert "Thank you kindly" in texts(offered)
        phrase = next(s for s in offered if " " in s.text)
        assert phrase.text == "Thank you kindly" and phrase.replace == 2
        assert phrase.source == "ngram"       # seen once, "They came" is no phrase
        # Passed over, it is not offered again for this word.
        assert "Thank you kindly" not in texts(engine.suggest("Done. Tha"))
        assert "THANK YOU KINDLY" in texts(engine.suggest("OK. TH"))


class Fixed:
    """Offers the same (word, probability) pairs whatever the context."""

    def __init__(self, pairs, name="fixed"):
        self.name, self.pairs = name, pairs

    def predict(self, context, k):
        return [Candidate(w, p) for w, p in self.pairs][:k]


def test_a_thousand_times_less_likely_than_the_best_is_left_out():
    with Engine([Fixed([("don't", 0.9), ("done", 0.05), ("donor", 0.001), ("don'e", 0.0008)])]) as engine:
        assert texts(engine.suggest("I don")) == ["don't", "done", "donor"]
    # Relative to the best offered, not to the typed word, and not an absolute floor.
    with Engine([Fixed([("don", 0.99), ("done", 2e-6), ("donor", 1e-6)])]) as engine:
        assert texts(engine.suggest("I don")) == ["done", "donor"]


def test_forget_leaves_nothing_typed_in_memory(engine):
    from predtext.engine import context as context_module
    engine.suggest("my secret password is hunter")
    assert "hunter" in context_module._last_window[0]
    engine.forget()
    assert context_module._last_window == ("", "")
    assert context_module._tokens.cache_info().currsize == 0
    assert context_module.normalize_word.cache_info().currsize == 0
    assert engine.suggest("the cat sat on ")[0].text == "the"      # and it still works


def test_apostrophe_styles_are_one_word():
    with Engine([WordList(["don't", "don\u2019t", "done"])]) as engine:
        assert texts(engine.suggest("I do")) == ["don't", "done"]     # one entry, not two


def test_nothing_is_glued_to_a_closing_mark():
    with Engine([WordList(["apple", "application"])]) as engine:
        for text in ("well,", "the end.", "why?", "(so)", "wait\u2026"):
            assert engine.suggest(text) == []
        assert texts(engine.suggest("well, "))[0] == "apple"          # after the space
        assert texts(engine.suggest('he said "'))[0].lower() == "apple"   # an opening mark is fine
        assert texts(engine.suggest("("))[0].lower() == "apple"


class Slow:
    name = "slow"

    def __init__(self):
        self.release = threading.Event()

    def predict(self, context, k):
        self.release.wait(5)
        return [Candidate("slowpoke", 1.0)]


class Raising:
    name = "raising"

    def predict(self, context, k):
        raise RuntimeError("kaboom")


def test_slow_or_raising_predictors_are_skipped_and_reported_once(caplog):
    slow = Slow()
    engine = Engine([WordList(["sun", "sunny"]), slow, Raising()], EngineConfig(time_budget_ms=50))
    try:
        with caplog.at_level(logging.WARNING, logger="predtext.engine"):
            assert texts(engine.suggest("the s")) == ["sun", "sunny"]
            assert texts(engine.suggest("a su")) == ["sun", "sunny"]
            assert texts(engine.suggest("my s")) == ["sun", "sunny"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("'raising'" in w and "kaboom" in w for w in warnings) == 1
        assert sum("'slow'" in w for w in warnings) == 1
        assert any("'slow'" in w and "overran" in w for w in warnings)
    finally:
        slow.release.set()
        engine.close()


class SlowInline:
    name = "slow-inline"
    inline = True              # runs in the caller's thread: can only be dropped when late

    def predict(self, context, k):
        import time
        time.sleep(0.06)
        return [Candidate("sundial", 1.0)]


def test_a_late_inline_predictor_is_dropped(caplog):
    with Engine([WordList(["sun"]), SlowInline()], EngineConfig(time_budget_ms=20)) as engine:
        with caplog.at_level(logging.WARNING, logger="predtext.engine"):
            assert texts(engine.suggest("the s")) == ["sun"]
    assert "'slow-inline' overran" in caplog.text


def test_learning_changes_suggestions(engine):
    assert "zebra" not in texts(engine.suggest("a zeb"))
    engine.learn("a zebra crossing")
    assert texts(engine.suggest("a zeb"))[0] == "zebra"
    assert texts(engine.suggest("the zebra "))[0] == "crossing"


def test_accept_starts_a_new_word():
    with Engine([WordList(["cab", "cad", "cafe"])]) as engine:
        first = engine.suggest("the c", k=2)
        engine.accept(first[0], "the c")
        assert texts(engine.suggest("the c", k=2)) == ["cab", "cad"]


@pytest.mark.parametrize("k, error", [(0, ValueError), (-3, ValueError), ("6", TypeError),
                                      (2.5, TypeError), (True, TypeError)])
def test_bad_k(engine, k, error):
    with pytest.raises(error, match="k"):
        engine.suggest("the c", k=k)


def test_huge_k_is_capped(engine):
    assert 0 < len(engine.suggest("the ", k=10**9)) <= MAX_K


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "\x00\x01\x02", "bad \ud800 surro", "\udfff",
                                  "tab\tc", "emoji 😀 c", "!!!???"])
def test_odd_input_gives_a_sensible_answer(engine, text):
    suggestions = engine.suggest(text)
    assert isinstance(suggestions, list)
    for suggestion in suggestions:
        suggestion.text.encode("utf-8")          # no lone surrogates offered back
        assert 0 <= suggestion.replace <= len(text)


def test_a_megabyte_of_pasted_text(engine):
    text = "the cat sat on the mat " * 45000 + "the dog sat on the m"
    suggestions = engine.suggest(text)
    assert suggestions[0].text == "mat" and suggestions[0].replace == 1
    engine.learn(text[:20000])                   # learning a long paste works too


def test_learn_rejects_non_text(engine):
    with pytest.raises(TypeError, match="text"):
        engine.learn(None)
    engine.learn("")                            # nothing to learn is fine


def test_several_threads_at_once(engine):
    errors = []

    def work(i):
        try:
            for j in range(15):
                engine.suggest(f"the cat sat on the {'m' * (j % 2)}")
                if j % 5 == 0:
                    engine.learn(f"the cat number {i} sat")
        except Exception as exc:            # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_config_defaults_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "mine.toml"))
    assert config_path() == tmp_path / "mine.toml"
    monkeypatch.delenv("PREDTEXT_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "predtext" / "config.toml"
    config = load_config()                    # no file: the defaults
    assert [p.name for p in config.predictors] == [p.name for p in default_config().predictors]
    assert {"ngram", "history", "dictionary", "abbreviations"} <= {p.type for p in config.predictors}


def test_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")
    corrupt = tmp_path / "corrupt.toml"
    corrupt.write_text("[engine\ncombination = ")
    with pytest.raises(ConfigError, match="corrupt.toml.*TOML"):
        load_config(corrupt)
    bad = tmp_path / "bad.toml"
    bad.write_text('[predictors.ngram]\nweight = "heavy"\n')
    with pytest.raises(ConfigError, match="bad.toml.*weight"):
        load_config(bad)
    bad.write_text('[engine]\ncombination = "average"\n')
    with pytest.raises(ConfigError, match="combination"):
        load_config(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad)


def test_unknown_or_broken_predictors_are_skipped_with_a_log(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path))
    path = tmp_path / "config.toml"
    path.write_text('[predictors.ngram]\nweight = 1.0\n[predictors.mystery]\ntype = "nonesuch"\n'
                    '[predictors.dictionary]\npath = "/nonexistent/words"\n'
                    '[predictors.off]\ntype = "nonesuch"\nenabled = false\n')
    with caplog.at_level(logging.WARNING, logger="predtext.engine"):
        engine = Engine.load(model=NGramModel.from_text(TEXT), config=path)
    try:
        assert [p.name for p in engine.predictors] == ["ngram"]
        assert "mystery" in caplog.text and "nonesuch" in caplog.text
        assert "dictionary" in caplog.text
        assert "'off'" not in caplog.text
        assert engine.suggest("on the m")[0].text == "mat"
    finally:
        engine.close()


def test_load_from_a_saved_model_and_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "shakes.safetensors"
    NGramModel.from_text(TEXT).save(path)
    config = {"predictors": {"ngram": {}}}
    with Engine.load(model=str(path), config=config) as engine:
        assert engine.suggest("on the m")[0].text == "mat"
    with Engine.load(model=None, config={"predictors": {"history": {"persist": False}}}) as engine:
        engine.learn("marvellous")
        assert engine.suggest("how mar")[0].text == "marvellous"
    with pytest.raises(TypeError, match="model"):
        Engine.load(model=42, config=config)
