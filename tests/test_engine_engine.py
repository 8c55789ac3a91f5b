"""The Engine: completion and next word, repeats, case, time budget, config, bad input."""

import dataclasses
import logging
import threading

import pytest

from predtext.engine.config import (
    ConfigError,
    EngineConfig,
    config_path,
    default_config,
    load_config,
)
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


# The defaults without the per-keystroke time budget, for the tests that are not about it: on
# a busy machine a predictor can take longer than 40 ms of wall time and be skipped.
def unhurried():
    return dataclasses.replace(default_config(), time_budget_ms=None)


@pytest.fixture
def engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))
    engine = Engine.load(model=NGramModel.from_text(TEXT), config=unhurried())
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
    with Engine([WordList(["cat", "catalogue", "cathedral"])], unhurried()) as engine:
        assert texts(engine.suggest("a cat")) == ["catalogue", "cathedral"]
        assert "Cat" not in texts(engine.suggest("A Cat"))


def test_passed_over_suggestions_give_way_below_the_best():
    words = ["cab", "cad", "cafe", "cage", "cake", "calf"]
    with Engine([WordList(words)], unhurried()) as engine:
        assert texts(engine.suggest("the c", k=3)) == ["cab", "cad", "cafe"]
        # The best stays (a fresh engine offers it first); the others passed over give way.
        assert texts(engine.suggest("the ca", k=3)) == ["cab", "cage", "cake"]
        assert texts(engine.suggest("the ca", k=3)) == ["cab", "cage", "cake"]   # asked again
        assert texts(engine.suggest("the caf", k=3)) == ["cafe"]   # passed over, but the best
        assert texts(engine.suggest("the c", k=3)) == ["cab", "cad", "cafe"]   # backspace: anew
        assert texts(engine.suggest("the cab c", k=3)) == ["cab", "cad", "cafe"]  # a new word
    repeating = dataclasses.replace(unhurried(), repeat_suggestions=True)
    with Engine([WordList(words)], repeating) as engine:
        engine.suggest("the c", k=2)
        assert texts(engine.suggest("the ca", k=2)) == ["cab", "cad"]


def test_boundary_offers_count_as_passed_over_for_the_next_word():
    with Engine([WordList(["cab", "cad", "cafe"])], unhurried()) as engine:
        assert texts(engine.suggest("the ", k=2)) == ["cab", "cad"]
        assert texts(engine.suggest("the c", k=2)) == ["cab", "cafe"]


def test_suggestions_follow_the_users_case():
    with Engine([WordList(["apple", "application"])], unhurried()) as engine:
        assert texts(engine.suggest("an App"))[0] == "Apple"
        assert texts(engine.suggest("my APP"))[0] == "APPLE"
        assert texts(engine.suggest("the app"))[0] == "apple"
        assert texts(engine.suggest("Done. "))[0] == "Apple"
        assert texts(engine.suggest("I SAID THAT "))[0] == "APPLE"


def test_a_likely_phrase_is_offered_in_the_users_case(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))
    corpus = (" ".join(f"{w}. Thank you kindly."
                       for w in ("Yes", "No", "Fine", "Good", "So", "Well"))
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
    offered = [("don't", 0.9), ("done", 0.05), ("donor", 0.001), ("don'e", 0.0008)]
    with Engine([Fixed(offered)], unhurried()) as engine:
        assert texts(engine.suggest("I don")) == ["don't", "done", "donor"]
    # Relative to the best offered, not to the typed word, and not an absolute floor.
    with Engine([Fixed([("don", 0.99), ("done", 2e-6), ("donor", 1e-6)])], unhurried()) as engine:
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
    with Engine([WordList(["don't", "don\u2019t", "done"])], unhurried()) as engine:
        assert texts(engine.suggest("I do")) == ["don't", "done"]     # one entry, not two


def test_suggestions_take_the_apostrophe_the_user_types():
    with Engine([WordList(["don't", "done", "o\u2019clock"])], unhurried()) as engine:
        assert texts(engine.suggest("I do")) == ["don't", "done"]       # straight by default
        assert texts(engine.suggest("at ten o")) == ["o'clock"]
        assert texts(engine.suggest("It\u2019s late. I do")) == ["don\u2019t", "done"]
        assert texts(engine.suggest("It\u2019s ten o")) == ["o\u2019clock"]   # as typed before
        assert texts(engine.suggest("It\u2019s late, isn't it? I do")) == ["don't", "done"]
        # Remembered past the read window: pages without an apostrophe do not reset it.
        engine.suggest("It\u2019s")
        assert texts(engine.suggest("It\u2019s late. " + "so " * 3000 + "I do"))[0] == "don\u2019t"
        engine.forget()
        assert texts(engine.suggest("so " * 3000 + "I do"))[0] == "don't"


def test_a_word_typed_with_a_curly_apostrophe_completes_from_straight_counts(engine):
    engine.learn("I don't know. I don't care. I do not think so.")
    assert texts(engine.suggest("I don\u2019"))[0] == "don\u2019t"
    assert texts(engine.suggest("I don't ")) == texts(engine.suggest("I don\u2019t "))
    assert set(texts(engine.suggest("I don\u2019t "))[:2]) == {"know", "care"}


def test_nothing_is_glued_to_a_closing_mark():
    with Engine([WordList(["apple", "application"])], unhurried()) as engine:
        for text in ("well,", "the end.", "why?", "(so)", "wait\u2026", 'he said "yes"',
                     "I love it \U0001f44d", "it costs 5%", "see item #", "f("):
            assert engine.suggest(text) == [], text
        assert texts(engine.suggest("well, "))[0] == "apple"          # after the space
        assert texts(engine.suggest('he said "'))[0].lower() == "apple"   # an opening mark is fine
        assert texts(engine.suggest("("))[0].lower() == "apple"
        assert texts(engine.suggest('so ("'))[0].lower() == "apple"


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
    with (Engine([WordList(["sun"]), SlowInline()], EngineConfig(time_budget_ms=20)) as engine,
          caplog.at_level(logging.WARNING, logger="predtext.engine")):
        assert texts(engine.suggest("the s")) == ["sun"]
    assert "'slow-inline' overran" in caplog.text


def test_learning_changes_suggestions(engine):
    # (A word no corpus or word list knows.)
    assert "zorbly" not in texts(engine.suggest("a zorb"))
    engine.learn("a zorbly crossing")
    assert texts(engine.suggest("a zorb"))[0] == "zorbly"
    assert texts(engine.suggest("the zorbly "))[0] == "crossing"


def test_accept_starts_a_new_word():
    with Engine([WordList(["cab", "cad", "cafe"])], unhurried()) as engine:
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
    types = {p.type for p in config.predictors}
    assert {"ngram", "history", "dictionary", "abbreviations"} <= types


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
        names = [p.name for p in engine.predictors]
        assert "ngram" in names and not {"mystery", "dictionary", "off"} & set(names)
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


def test_engines_loaded_on_several_threads_at_once_all_get_their_predictors(monkeypatch):
    from predtext.engine import predictor as predictor_module
    monkeypatch.setattr(predictor_module, "_registry", {})
    monkeypatch.setattr(predictor_module, "_builtins_registered", False)
    monkeypatch.setattr(predictor_module, "_entry_points_loaded", False)
    config = {"predictors": {"ngram": {}, "dictionary": {}, "history": {"persist": False},
                             "abbreviations": {"enabled": False}, "bigrams": {"enabled": False}}}
    model = NGramModel.from_text(TEXT)
    start, names = threading.Barrier(4), {}

    def load(i):
        start.wait()
        with Engine.load(model=model, config=config) as engine:
            names[i] = [p.name for p in engine.predictors]

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names == {i: ["ngram", "history", "dictionary", "typos"] for i in range(4)}


def test_a_hung_predictor_does_not_keep_the_program_from_exiting(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "hang.py"
    script.write_text(
        "import time\n"
        "from predtext.engine.engine import Engine, EngineConfig\n"
        "class Hung:\n"
        "    name = 'hung'\n"
        "    def predict(self, context, k):\n"
        "        time.sleep(3600)\n"
        "engine = Engine([Hung()], EngineConfig(time_budget_ms=20))\n"
        "print(engine.suggest('hello wor'))\n"
        "engine.close()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_engines_over_one_model_do_not_learn_from_each_other(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path))
    model = NGramModel.from_text(TEXT)
    config = {"predictors": {"history": {"persist": False}}}
    with Engine.load(model=model, config=config) as alice, \
            Engine.load(model=model, config=config) as bob:
        before = texts(bob.suggest("the launch codename is "))
        for _ in range(3):
            alice.learn("the launch codename is zorbulax")
        assert texts(alice.suggest("the launch codename is "))[0] == "zorbulax"
        assert texts(bob.suggest("the launch codename is ")) == before
        assert model.probability("zorbulax", ["is"]) == 0


def test_forget_erases_what_every_predictor_learned(engine):
    before = texts(engine.suggest("the launch codename is "))
    for _ in range(3):
        engine.learn("the launch codename is zorbulax")
    assert texts(engine.suggest("the launch codename is "))[0] == "zorbulax"
    engine.forget()
    assert texts(engine.suggest("the launch codename is ")) == before
    assert not [w for w in texts(engine.suggest("the launch codename is zor")) if "zorbulax" in w]


def test_asking_again_at_the_same_prefix_hides_nothing(engine):
    best = texts(engine.suggest("the cat sat on the m", k=1))
    assert texts(engine.suggest("the cat sat on the m", k=6))[0] == best[0]
    assert texts(engine.suggest("the cat sat on the m", k=1)) == best
    engine.learn("something else")
    assert texts(engine.suggest("the cat sat on the m", k=6))[0] == best[0]


def test_two_texts_with_the_same_length_and_ending_get_their_own_answers():
    class LastWordEcho:
        name = "echo"

        def predict(self, context, k):
            return [Candidate(w + "s", 0.5) for w in context.words if w.isalpha()][:1]

    a = "cats sit on mats, and then he went quietly home to the "
    b = "dogs run on logs, and then he went quietly home to the "
    assert len(a) == len(b)
    with Engine([LastWordEcho()], unhurried()) as engine:
        assert texts(engine.suggest(a)) == ["catss"]
        assert texts(engine.suggest(b)) == ["dogss"]


class Learner:
    """Learns only when told to go on: a predictor busy learning a long text."""

    def __init__(self, name="learner", inline=False):
        self.name, self.inline = name, inline
        self.learning, self.go = threading.Event(), threading.Event()

    def predict(self, context, k):
        return [Candidate("sunlearned", 0.1)]

    def learn(self, text):
        self.learning.set()
        self.go.wait(30)


@pytest.mark.parametrize("inline", [False, True])
def test_suggestions_from_other_threads_go_on_while_predictors_learn(inline):
    learner = Learner(inline=inline)
    with Engine([WordList(["sun", "sunny"]), learner]) as engine:
        learning = threading.Thread(target=engine.learn, args=("a long text",))
        learning.start()
        assert learner.learning.wait(20)
        answers = []
        asking = threading.Thread(target=lambda: answers.append(texts(engine.suggest("the s"))))
        asking.start()
        asking.join(20)
        learner.go.set()
        learning.join(20)
        assert not asking.is_alive()
        assert answers == [["sun", "sunny"]]        # the learner is skipped while it learns


def test_the_engine_takes_weights_and_configs_as_load_does():
    with pytest.raises(ValueError, match="words"):
        Engine([(WordList(["sun"]), float("nan"))])
    with pytest.raises(ValueError, match="words"):
        Engine([(WordList(["sun"]), -1.0)])
    # (A minute's budget: the word list is not to be skipped on a busy machine.)
    config = {"engine": {"combination": "max", "time_budget_ms": 60_000}}
    with Engine([WordList(["sun", "sunny"])], config=config) as engine:
        assert engine.config.combination == "max"
        assert texts(engine.suggest("the s")) == ["sun", "sunny"]


def test_k_may_be_any_integer_type(engine):
    import numpy as np
    assert engine.suggest("the cat sat on the m", k=np.int64(2))[0].text == "mat"


class Garbage:
    name = "garbage"

    def __init__(self, result):
        self.result = result

    def predict(self, context, k):
        return self.result


@pytest.mark.parametrize("result", [[("sunburn", 10**400)], [("sunburn", float("nan"))],
                                    "sunburn", [("sunburn",)], None])
def test_a_predictor_returning_garbage_is_skipped(result, caplog):
    with (Engine([WordList(["sun", "sunny"]), Garbage(result)], unhurried()) as engine,
          caplog.at_level(logging.WARNING, logger="predtext.engine")):
        assert texts(engine.suggest("the s")) == ["sun", "sunny"]


def test_only_the_candidates_asked_for_are_taken():
    many = [Candidate(f"sun{i:06d}", 1.0 - i * 1e-7) for i in range(200_000)]
    with Engine([Garbage(many)], unhurried()) as engine:
        assert texts(engine.suggest("the s", k=3)) == ["sun000000", "sun000001", "sun000002"]


class SlowLearner(Slow):
    def learn(self, text):
        pass


def test_closing_an_engine_with_calls_waiting_logs_no_error(caplog):
    slow = SlowLearner()
    engine = Engine([slow], EngineConfig(time_budget_ms=20))
    engine.suggest("the s")                       # the lane is now busy
    engine._runner.call("learn", "queued behind it")
    with caplog.at_level(logging.DEBUG):
        engine.close()
        slow.release.set()
        import time
        time.sleep(0.2)
    assert "CancelledError" not in caplog.text and "exception calling callback" not in caplog.text


@pytest.mark.parametrize("setting", ["time_budget_ms = inf", "time_budget_ms = nan",
                                     "time_budget_ms = 1e300", "time_budget_ms = 0"])
def test_time_budgets_that_cannot_be_waited_for_are_refused(tmp_path, setting):
    path = tmp_path / "budget.toml"
    path.write_text(f"[engine]\n{setting}\n")
    with pytest.raises(ConfigError, match="budget.toml.*time_budget_ms"):
        load_config(path)


@pytest.mark.parametrize("weight", ["inf", "nan", "-1"])
def test_weights_that_are_no_finite_number_are_refused(tmp_path, weight):
    path = tmp_path / "weights.toml"
    path.write_text(f"[predictors.ngram]\nweight = {weight}\n")
    with pytest.raises(ConfigError, match="weights.toml.*ngram.weight"):
        load_config(path)


def test_a_config_file_changes_the_defaults_it_names(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[predictors.ngram]\nphrase_words = 1\n"
                    "[predictors.dictionary]\nenabled = false\n"
                    "[predictors.extra]\ntype = \"ngram\"\npath = \"other.ng\"\n")
    config = {p.name: p for p in load_config(path).predictors}
    defaults = {p.name: p for p in default_config().predictors}
    assert list(config) == list(defaults) + ["extra"]
    assert config["ngram"].weight == defaults["ngram"].weight
    assert config["ngram"].options["phrase_words"] == 1
    threshold = defaults["ngram"].options["phrase_threshold"]
    assert config["ngram"].options["phrase_threshold"] == threshold
    assert not config["dictionary"].enabled and config["history"].enabled
    assert config["extra"].options == {"path": "other.ng", "name": "extra"}
    only_engine = EngineConfig.from_dict({"engine": {"learn": False}})
    assert not only_engine.learn
    assert [p.name for p in only_engine.predictors] == list(defaults)


def test_a_table_of_another_type_does_not_take_the_defaults_options():
    config = EngineConfig.from_dict({"predictors": {"ngram": {"type": "mine", "weight": 2}}})
    ngram = next(p for p in config.predictors if p.name == "ngram")
    assert ngram.type == "mine" and ngram.weight == 2 and ngram.options == {"name": "ngram"}


def test_a_dropped_engine_leaves_no_thread_behind():
    import gc
    before = {t for t in threading.enumerate() if t.name.startswith("predtext-")}
    engine = Engine([WordList(["sun"]), SlowLearner()], EngineConfig(time_budget_ms=20))
    engine.learn("a line")          # starts the lanes
    lanes = {t for t in threading.enumerate() if t.name.startswith("predtext-")} - before
    assert lanes
    del engine
    gc.collect()
    for thread in lanes:
        thread.join(10)
    assert not any(thread.is_alive() for thread in lanes)


def test_two_predictors_over_one_model_never_learn_at_once():
    model = NGramModel.from_text("the cat sat on the mat. the dog ran to the cat. " * 20)
    config = {"engine": {"time_budget_ms": 1000},
              "predictors": {"neural": {"enabled": False}, "history": {"enabled": False},
                             "dictionary": {"enabled": False}, "abbreviations": {"enabled": False},
                             "bigrams": {"enabled": False},
                             "ngram": {}, "words": {"type": "ngram", "phrase_words": 1}}}
    active, overlaps, errors = [0], [0], []
    learn = NGramModel.learn

    def watched(self, text):
        active[0] += 1
        overlaps[0] += active[0] > 1
        try:
            return learn(self, text)
        finally:
            active[0] -= 1

    with Engine.load(model=model, config=config) as engine:
        assert [p.name for p in engine.predictors] == ["ngram", "typos", "words"]
        model.learn = watched.__get__(model)

        def type_on():
            for i in range(400):
                try:
                    engine.suggest(f"the w{i % 30}")
                except Exception as error:        # pragma: no cover - reported below
                    errors.append(error)

        typist = threading.Thread(target=type_on)
        typist.start()
        for i in range(60):
            engine.learn(" ".join(f"w{i}x{j} the zz{i}" for j in range(20)))
        typist.join()
    assert overlaps == [0] and errors == []
    assert len(set(model._words)) == len(model._words)
    assert all(model._ids[w] == i for i, w in enumerate(model._words))


def test_a_second_history_on_the_same_file_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path))
    config = {"predictors": {"mine": {"type": "history"}}}
    with (caplog.at_level(logging.WARNING, logger="predtext.engine"),
          Engine.load(model=NGramModel.from_text(TEXT), config=config) as engine):
        assert [p.name for p in engine.predictors].count("mine") == 0
        engine.learn("hello world again")
    assert "'mine' skipped" in caplog.text
    assert (tmp_path / "history.txt").read_text() == "hello world again\n"   # once


def test_the_constructor_weighs_its_own_predictors_by_the_config_given_only():
    words = WordList(["sun"], name="history")
    with Engine([words], config={"engine": {}}) as engine:
        assert engine.weight(words) == 1.0
    with Engine([words], config={"predictors": {"history": {"weight": 0.5}}}) as engine:
        assert engine.weight(words) == 0.5


class SlowAccept:
    name = "slow-accept"

    def __init__(self):
        self.release = threading.Event()

    def predict(self, context, k):
        return []

    def accept(self, suggestion, context):
        self.release.wait(30)


def test_accept_does_not_wait_for_a_slow_plugin():
    slow = SlowAccept()
    with Engine([WordList(["sun"]), slow], EngineConfig(time_budget_ms=20)) as engine:
        taken = engine.suggest("the s")[0]
        accepting = threading.Thread(target=engine.accept, args=(taken, "the s"))
        accepting.start()
        accepting.join(2)                     # it waits a keystroke's budget, not 5 s
        done = not accepting.is_alive()
        slow.release.set()
    assert done


def test_a_closed_engine_says_so():
    engine = Engine([WordList(["sun"]), SlowLearner()])
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.learn("a line")
    with pytest.raises(RuntimeError, match="closed"):
        engine.suggest("the s")


def test_what_was_passed_over_stays_out_as_the_read_window_moves():
    words = ["hello", "help", "helmet", "helium", "helix", "hell"]
    for padding in (10, 4096 + 1024 - 5, 4096 + 1024 - 4, 4096 + 1024 - 3):
        text = "x" * padding + " "
        with Engine([WordList(words)], unhurried()) as engine:
            offered = [texts(engine.suggest(text + typed, k=2)) for typed in ("h", "he", "hel")]
        assert offered == [["hello", "help"], ["hello", "helmet"], ["hello", "helium"]], padding


def test_the_word_typed_toward_stays_offered_whatever_was_shown_before():
    # Key by key, whatever the engine showed on the way: at each keystroke its list holds
    # what a fresh engine puts first for the same text.
    line = "the dog ran after the cat, and the cat sat down"
    model = NGramModel.from_text(TEXT)
    with Engine.load(model=model, config={"engine": {"word_list": False}}) as typing:
        for end in range(1, len(line) + 1):
            shown = texts(typing.suggest(line[:end]))
            with Engine.load(model=model, config={"engine": {"word_list": False}}) as fresh:
                best = texts(fresh.suggest(line[:end]))[:1]
            assert best == shown[:1], line[:end]


def test_history_goes_where_the_application_says(tmp_path, monkeypatch):
    from predtext.engine.history import HISTORY_FILE

    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "user"))
    with Engine.load(model=NGramModel.from_text(TEXT), data_dir=tmp_path / "app") as engine:
        engine.learn("a line the user wrote")
    assert (tmp_path / "app" / HISTORY_FILE).exists()
    assert not (tmp_path / "user").exists()
    with pytest.raises(TypeError, match="data_dir"):
        Engine.load(model=NGramModel.from_text(TEXT), data_dir=3)
