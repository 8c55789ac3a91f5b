"""The neural predictor: completions from a trained model, the incremental text state, the
memoised search, word-level models, and Engine.load from a model file."""

import math

import numpy as np
import pytest

from predtext.engine.context import parse_context
from predtext.engine.engine import Engine
from predtext.engine.neural import (
    CompletionSearch,
    ModelAdapter,
    NeuralPredictor,
    TextReader,
    make_predictor,
)
from predtext.engine.predictor import Resources
from predtext.errors import ModelFileError
from predtext.lm.model import LanguageModel
from predtext.lm.train import TrainConfig, train

LINES = ["the cat sat on the mat.", "the dog ate the bone.", "a cat and a dog met on the mat.",
         "the bird sang a song.", "the dog sat on the log."]


def quiet(_line):
    pass


def tiny_config(**overrides):
    settings = dict(hidden_size=32, embed_size=16, num_layers=1, seq_len=32, batch_size=8,
                    max_steps=200, lr=0.01, eval_interval=1000.0, patience=0, plot=False,
                    progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "lines.txt"
    path.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_file(corpus, tmp_path_factory):
    """A character model trained for a fraction of a second: it knows the five lines."""
    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train([corpus], out, tiny_config(), log=quiet)
    return out


@pytest.fixture(scope="module")
def model(model_file):
    return LanguageModel.load(model_file)


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))
    return tmp_path


def words(candidates):
    return [c.text for c in candidates]


def suggest(predictor, text, k=6):
    return predictor.predict(parse_context(text), k)


# ---------------------------------------------------------------- completions


def test_completes_the_word_being_typed(model):
    predictor = NeuralPredictor(model)
    assert words(suggest(predictor, "the c"))[0] == "cat"
    assert "sat" in words(suggest(predictor, "the cat s"))[:2]
    assert words(suggest(predictor, "the bird sang a s"))[0] == "song"


def test_proposes_next_words_after_a_space(model):
    predictor = NeuralPredictor(model)
    found = words(suggest(predictor, "a cat and a dog met on the "))
    assert found[0] == "mat"
    assert all(w and w[0].isalpha() for w in found)      # whole words, never a bare stop


def test_probabilities_are_products_of_character_probabilities(model):
    predictor = NeuralPredictor(model)
    found = suggest(predictor, "the c", k=6)
    probabilities = [c.probability for c in found]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-6
    # The best completion's probability is P("a") P("t") P(stop | "cat") summed over stops.
    state = model.feed_text("\nthe c")[1]
    total = 0.0
    log_probs = state.log_probs[0]
    for char in "at":
        total += float(log_probs[model.encode(char)[0]])
        log_probs, state = model.step(model.encode(char), state)
        log_probs = log_probs[0]
    stops = [i for i, token in enumerate(model.tokenizer.id_to_token)
             if i > 0 and not (token.isalnum() or token in "'-")]
    expected = math.exp(total) * float(np.exp(log_probs[stops].astype(np.float64)).sum())
    assert found[0].text == "cat"
    assert found[0].probability == pytest.approx(expected, rel=0.02)


def test_normalize_rescales_over_the_candidates(model):
    predictor = NeuralPredictor(model, normalize=True)
    found = suggest(predictor, "the c", k=4)
    assert sum(c.probability for c in found) == pytest.approx(1.0)


def test_words_the_vocabulary_does_not_know_count_less_or_not_at_all(model):
    plain = {c.text: c.probability for c in suggest(NeuralPredictor(model), "the c", k=12)}
    known = {"cat"}
    unknown = sorted((p, w) for w, p in plain.items() if w not in known)
    assert "cat" in plain and len(unknown) >= 2
    weighted = NeuralPredictor(model, known_words=known, unknown_weight=0.5)
    found = {c.text: c.probability for c in suggest(weighted, "the c", k=12)}
    assert found["cat"] == pytest.approx(plain["cat"])
    for p, word in unknown:
        assert found[word] == pytest.approx(0.5 * p)
    # unknown_min between two unknown words' probabilities: the lower one goes.
    cut = (unknown[0][0] + unknown[1][0]) / 2
    floored = NeuralPredictor(model, known_words=known, unknown_weight=0.5, unknown_min=cut)
    kept = {c.text for c in suggest(floored, "the c", k=12)}
    assert unknown[0][1] not in kept and unknown[1][1] in kept and "cat" in kept
    # What the user wrote is known from then on.
    floored.learn(f"a {unknown[0][1]} here")
    assert unknown[0][1] in {c.text for c in suggest(floored, "the c", k=12)}


def test_without_invented_words_only_known_and_written_words_are_offered(model):
    plain = [c.text for c in suggest(NeuralPredictor(model), "the c", k=12)]
    invented = [w for w in plain if w != "cat"]
    assert "cat" in plain and invented
    strict = NeuralPredictor(model, known_words={"cat"}, invented_words=False)
    assert [c.text for c in suggest(strict, "the c", k=12)] == ["cat"]
    strict.learn(f"a {invented[0]} here")          # the user's own writing is known
    assert invented[0] in {c.text for c in suggest(strict, "the c", k=12)}
    # The factory: the word list the engine loaded counts as known, and the option is checked.
    made = make_predictor({"invented_words": False},
                          Resources(vocabulary={"cat": 1.0},
                                    extra={"language_model": model,
                                           "word_list": {invented[0]: 1e-4}}))
    assert {c.text for c in suggest(made, "the c", k=12)} == {"cat", invented[0]}
    with pytest.raises(ValueError, match="invented_words"):
        make_predictor({"invented_words": "no"}, Resources(extra={"language_model": model}))


@pytest.mark.parametrize("option", ["unknown_weight", "unknown_min"])
@pytest.mark.parametrize("value", [-0.1, 1.5, "0.2", True])
def test_unknown_word_options_are_checked(model, option, value):
    with pytest.raises(ValueError, match=option):
        make_predictor({option: value}, Resources(extra={"language_model": model}))


def test_nothing_is_offered_right_after_punctuation(model):
    predictor = NeuralPredictor(model)
    assert suggest(predictor, "the cat sat on the mat.") == []


def test_odd_text_does_not_break_it(model):
    predictor = NeuralPredictor(model)
    for text in ["", " ", "\x00\x01", "\ud800 the c", "Ω≈ç√ the c", "x" * 70, "the c" * 2000]:
        for candidate in suggest(predictor, text):
            assert isinstance(candidate.text, str) and 0 < candidate.probability <= 1


def test_no_completion_of_a_word_in_letters_the_model_never_saw(model):
    predictor = NeuralPredictor(model)
    assert suggest(predictor, "the cat and שלום עו") == []
    assert suggest(predictor, "the cat and the c")            # its own letters still complete
    assert suggest(predictor, "שלום the c")                   # and so do they after others


def test_a_completion_never_ends_in_an_apostrophe_or_hyphen(tmp_path):
    """A model that learned "th' king" and "well- met" still offers only whole words."""
    path = tmp_path / "elided.txt"
    path.write_text("th' king sat. th' dog ran. well- met, th' man. rock--and roll.\n" * 60,
                    encoding="utf-8")
    train([path], tmp_path / "elided.safetensors", tiny_config(), log=quiet)
    predictor = NeuralPredictor(LanguageModel.load(tmp_path / "elided.safetensors"), n_best=20)
    offered = [c.text for text in ("th", "the king sat. th", "we", "a ", "rock-")
               for c in suggest(predictor, text, 20)]
    assert offered
    assert not [w for w in offered if w[-1] in "'\u2019-"], offered
    assert not [w for w in offered if "--" in w], offered       # nor two joiners in a row


def test_a_curly_apostrophe_is_read_as_the_straight_one_the_model_knows(tmp_path, model):
    path = tmp_path / "straight.txt"
    path.write_text("i don't know. you don't say. we can't stay.\n" * 60, encoding="utf-8")
    train([path], tmp_path / "straight.safetensors", tiny_config(), log=quiet)
    straight = LanguageModel.load(tmp_path / "straight.safetensors")
    assert ModelAdapter(straight).apostrophe == "'" and ModelAdapter(model).apostrophe is None
    for typed in ("i don", "you don't s", "we can't "):
        curly = typed.replace("'", "\u2019")
        want = suggest(NeuralPredictor(straight), typed)
        got = suggest(NeuralPredictor(straight), curly)
        assert want and [(c.text, c.probability) for c in got] == \
            [(c.text, pytest.approx(c.probability)) for c in want], typed
    assert words(suggest(NeuralPredictor(straight), "i don\u2019"))[0] == "don't"


# ---------------------------------------------------------------- the text state


def test_reader_state_does_not_depend_on_how_the_text_arrived(model):
    lm = ModelAdapter(model)
    ids = lm.encode("\n".join(LINES * 6))          # ~600 tokens: several anchors
    incremental = TextReader(lm, span=64)
    for end in range(1, len(ids) + 1):
        incremental.read(ids[:end], 0)
    fresh = TextReader(lm, span=64)
    fresh.read(ids, 0)
    np.testing.assert_allclose(incremental.log_probs, fresh.log_probs, atol=1e-5)
    np.testing.assert_allclose(incremental.state.h[:, 0], fresh.state.h[:, 0], atol=1e-5)
    # Only a bounded tail is ever needed: the same from a window of the text.
    windowed = TextReader(lm, span=64)
    windowed.read(ids[-200:], len(ids) - 200)
    np.testing.assert_allclose(windowed.log_probs, fresh.log_probs, atol=1e-5)


def test_reader_rewinds_to_a_checkpoint_on_backspace_and_edits(model):
    lm = ModelAdapter(model)
    ids = lm.encode("\n".join(LINES * 3))
    reader = TextReader(lm, span=64)
    reader.read(ids, 0)
    before = lm.steps
    reader.read(ids[:-3], 0)                   # three backspaces: a saved position
    assert lm.steps == before
    fresh = TextReader(lm, span=64)
    fresh.read(ids[:-3], 0)
    np.testing.assert_allclose(reader.log_probs, fresh.log_probs, atol=1e-5)
    edited = ids[:-20] + lm.encode("the bird sang")
    before = lm.steps
    reader.read(edited, 0)
    assert lm.steps - before <= 16 + len("the bird sang")   # from a sparse checkpoint
    fresh = TextReader(lm, span=64)
    fresh.read(edited, 0)
    np.testing.assert_allclose(reader.log_probs, fresh.log_probs, atol=1e-5)


def test_a_keystroke_the_memo_knows_costs_no_step_and_the_state_still_follows_the_text(model):
    lm = ModelAdapter(model)
    ids = lm.encode("\n".join(LINES * 3))          # ~350 tokens: many anchors of 32
    truth, reader = TextReader(lm, span=32), TextReader(lm, span=32)
    free = 0
    for end in range(1, len(ids) + 1):
        truth.read(ids[:end], 0)
        state = truth.state
        known = (state.h[:, 0].copy(), None if state.c is None else state.c[:, 0].copy(),
                 truth.log_probs.copy())
        before = lm.steps
        # Two keystrokes in three come with their state known (as from the search's memo).
        reader.read(ids[:end], 0, (lambda token, known=known: known) if end % 3 else None)
        free += end % 3 != 0 and lm.steps == before
        np.testing.assert_allclose(reader.log_probs, truth.log_probs, atol=1e-5)
    assert free > len(ids) // 2      # all but anchor switches and the lagging row's catch-ups
    fresh = TextReader(lm, span=32)
    fresh.read(ids, 0)
    np.testing.assert_allclose(reader.state.h[:, 0], fresh.state.h[:, 0], atol=1e-5)
    # Backspaces restore a checkpoint with the second row behind; typing on and crossing
    # the next anchor (where that row takes over) still gives the fresh reader's state.
    reader.read(ids[:-2], 0)
    more = ids[:-2] + lm.encode("\n" + LINES[1] * 3)
    for end in range(len(ids) - 1, len(more) + 1):
        reader.read(more[:end], 0)
        truth.read(more[:end], 0)
        np.testing.assert_allclose(reader.log_probs, truth.log_probs, atol=1e-5)


def test_the_search_steps_the_readers_lagging_row_in_its_own_batches(model):
    lm = ModelAdapter(model)
    predictor = NeuralPredictor(lm)
    text = "the cat sat on the mat.\nthe d"
    suggest(predictor, text)
    explored = predictor.search.follower(predictor.reader)
    reader = predictor.reader
    token = next(t for t in range(lm.vocab_size) if t and explored(t) is not None)
    before = lm.steps
    reader.read(lm.encode(text + lm.tokens[token]), 0, predictor.search.follower(reader))
    assert lm.steps == before and reader.lend_row_one() is not None
    predictor.search.search(reader, word_start=False)
    assert lm.steps > before and reader.lend_row_one() is None     # caught up in a batch
    cold = NeuralPredictor(model)
    assert words(suggest(cold, text + lm.tokens[token])) == \
        words(suggest(predictor, text + lm.tokens[token]))


def test_typing_char_by_char_gives_what_a_fresh_predictor_gives(model):
    text = "\n".join(LINES[::-1] * 3) + "\nthe dog sat on the l"
    typed = NeuralPredictor(model, span=64)
    for end in range(len(text) - 40, len(text) + 1):
        got = suggest(typed, text[:end])
        expected = suggest(NeuralPredictor(model, span=64), text[:end])
        assert words(got) == words(expected), text[:end][-20:]
        for a, b in zip(got, expected):
            assert a.probability == pytest.approx(b.probability, rel=1e-3, abs=1e-6)


def test_a_keystroke_costs_the_same_after_100000_characters_as_after_10(model):
    def keystroke_cost(history):
        predictor = NeuralPredictor(model)
        suggest(predictor, history + "the d")
        before = predictor.steps, predictor.lm.step_rows
        suggest(predictor, history + "the do")
        return predictor.steps - before[0], predictor.lm.step_rows - before[1]

    short = "the cat s."                                     # 10 characters
    long = ("\n".join(LINES) + "\n") * (100_000 // 117 + 1)
    long = long[-100_000 + len(short):] + short
    assert len(long) == 100_000
    short_steps, short_rows = keystroke_cost(short + " ")
    long_steps, long_rows = keystroke_cost(long + " ")
    # One step to read the typed character, then at most one batched step per character of
    # look-ahead that the previous search did not already take.
    assert long_steps <= 1 + NeuralPredictor(model).search.max_length
    assert abs(long_steps - short_steps) <= 2
    assert long_rows <= 2 + 6 * 12


def test_the_search_reuses_what_the_previous_keystroke_explored(model):
    predictor = NeuralPredictor(model)
    suggest(predictor, "the cat sat on the mat.\nthe b")
    steps, rows = predictor.steps, predictor.lm.step_rows
    suggest(predictor, "the cat sat on the mat.\nthe bi")
    # The text step plus the few nodes the last search did not reach.
    assert predictor.lm.step_rows - rows < (predictor.steps - steps) * 6
    cold = NeuralPredictor(model)
    assert words(suggest(cold, "the cat sat on the mat.\nthe bi")) == \
        words(suggest(predictor, "the cat sat on the mat.\nthe bi"))


def test_asking_for_fewer_words_stops_the_search_early_with_the_same_best_ones(model):
    lm = ModelAdapter(model)
    reader = TextReader(lm)
    reader.read(lm.encode("\na cat and a dog met on the "))
    full = CompletionSearch(lm, n_best=12).search(reader, word_start=True)
    before = lm.steps
    bounded = CompletionSearch(lm, n_best=12).search(reader, word_start=True, n_best=2)
    bounded_steps = lm.steps - before
    before = lm.steps
    CompletionSearch(lm, n_best=12).search(reader, word_start=True)
    assert bounded[:2] == full[:2]
    assert bounded_steps < lm.steps - before


def test_the_predictor_steps_8_bit_weights_unless_asked_for_float(model):
    resources = Resources(extra={"language_model": model})
    quick = make_predictor({}, resources)
    plain = make_predictor({"weights": "float"}, resources)
    assert quick.lm.model.quantized == "int8" and plain.lm.model is model
    assert model.quantized is None                  # the loaded model is left as it was
    for text in ("the c", "the dog ate the b", "a cat and a d"):
        ours = {c.text: c.probability for c in suggest(quick, text)}
        theirs = {c.text: c.probability for c in suggest(plain, text)}
        assert next(iter(ours)) == next(iter(theirs))
        for word in set(ours) & set(theirs):
            assert ours[word] == pytest.approx(theirs[word], rel=0.05, abs=1e-3)
    already = model.quantize("int8")
    assert make_predictor({}, Resources(extra={"language_model": already})).lm.model is already
    with pytest.raises(ValueError, match="weights"):
        make_predictor({"weights": "int4"}, resources)


def test_search_options_are_checked(model):
    with pytest.raises(ValueError):
        CompletionSearch(ModelAdapter(model), beam_width=0)
    with pytest.raises(ValueError):
        make_predictor({"beam_width": -1}, Resources(extra={"language_model": model}))
    with pytest.raises(ValueError):
        make_predictor({}, Resources())
    for option in ("beam_width", "max_length", "span", "n_best"):
        with pytest.raises(ValueError, match=option):   # a typo must not take gigabytes
            make_predictor({option: 100_000}, Resources(extra={"language_model": model}))


# ---------------------------------------------------------------- word level


def test_word_level_model_filters_its_next_word_distribution_by_the_prefix(corpus, tmp_path):
    out = tmp_path / "words.safetensors"
    train([corpus], out, tiny_config(level="word", hidden_size=32, embed_size=32,
                                     tie_weights=True, max_steps=300, seq_len=16), log=quiet)
    predictor = NeuralPredictor(LanguageModel.load(out))
    found = suggest(predictor, "the bird sang a s")
    assert found and all(w.lower().startswith("s") and w.lower() != "s" for w in words(found))
    assert words(found)[0] == "song"
    assert sum(c.probability for c in found) <= 1.0 + 1e-6
    after_space = suggest(predictor, "the cat sat on the ")
    assert after_space and all(w.strip() and w[0].isalpha() for w in words(after_space))


# ---------------------------------------------------------------- Engine.load


def test_engine_load_from_a_model_file_is_the_full_engine(model_file, user_dirs):
    with Engine.load(model=model_file) as engine:
        names = [p.name for p in engine.predictors]
        assert names[:2] == ["neural", "ngram"] and "dictionary" in names
        assert engine.language_model is not None and engine.ngram is not None
        found = engine.suggest("the bird sang a s")
        assert found[0].text == "song" and found[0].replace == 1
        assert "neural" in found[0].sources
        assert engine.suggest("the C")[0].text == "Cat"       # the user's case


def test_engine_load_takes_a_language_model_object(model, user_dirs):
    with Engine.load(model=model) as engine:
        assert "neural" in [p.name for p in engine.predictors]
        assert engine.suggest("the c")[0].text == "cat"


def test_engine_without_a_model_leaves_the_neural_predictor_out(user_dirs, monkeypatch):
    import predtext.engine.engine as engine_module
    monkeypatch.setattr(engine_module, "default_model", lambda config=None: None)
    with Engine.load() as engine:
        assert "neural" not in [p.name for p in engine.predictors]


def test_engine_load_rejects_a_corrupt_model_file(tmp_path, user_dirs):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelFileError) as error:
        Engine.load(model=bad)
    assert str(bad) in str(error.value)
    with pytest.raises(ModelFileError):
        Engine.load(model=tmp_path / "missing.safetensors")


def test_config_names_the_model_file(model_file, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f'[engine]\nmodel = "{model_file}"\n[predictors.neural]\nbeam_width = 4\n'
                      '[predictors.ngram]\n', encoding="utf-8")
    monkeypatch.setenv("PREDTEXT_CONFIG", str(config))
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    with Engine.load() as engine:
        neural = engine.predictors[0]
        assert neural.name == "neural" and neural.search.beam_width == 4
        assert engine.suggest("the c")[0].text == "cat"


def test_the_model_steps_on_one_thread_while_calls_keep_coming_in_slow(model):
    from predtext import _core
    from predtext.backend.threads import ThreadCountChoice

    choice = ThreadCountChoice(window=8, slow_factor=8.0, slow_calls=2, recent=4, hold=3,
                               cold_after=float("inf"))
    for _ in range(8):
        assert choice.choose() == 0
        choice.record(0, 1e-3, 10)
    choice.record(0, 1.0, 10)                  # one slow call: an idle machine's hiccup
    assert choice.choose() == 0
    for _ in range(4):
        choice.record(0, 1e-3, 10)
    choice.record(0, 1.0, 10)                  # lone again: the first one has aged out
    assert choice.choose() == 0
    choice.record(0, 1e-3, 0)                  # no work: says nothing
    choice.record(0, 2.0, 10)                  # a second slow call close by: load
    assert [choice.choose() for _ in range(4)] == [1, 1, 1, 0]

    class LimitSpy:
        """The model, noting the calling thread's core limit at each step."""

        def __init__(self):
            self.limits = []

        def step(self, ids, state):
            self.limits.append(_core.get_thread_limit())
            return model.step(ids, state)

        def __getattr__(self, name):
            return getattr(model, name)

    predictor = NeuralPredictor(model)
    predictor.lm.model = spy = LimitSpy()
    predictor._threads.cold_after = float("inf")   # keystrokes back to back, however slow
    predictor._threads._held = 1              # as after calls that came in slow
    _core.set_thread_limit(3)                  # the caller's own limit
    try:
        suggest(predictor, "the cat sat on the ")
        assert spy.limits and set(spy.limits) == {1}
        assert _core.get_thread_limit() == 3   # given back
        spy.limits.clear()
        suggest(predictor, "the dog sat on the ")
        assert spy.limits and set(spy.limits) == {0}
    finally:
        _core.set_thread_limit(0)


def test_a_call_after_a_pause_steps_on_one_thread():
    """A team idle for longer than ``cold_after`` has gone to sleep: the next call runs on one
    thread rather than wait for it to wake; calls close behind another use the team."""
    from predtext.backend.threads import ThreadCountChoice

    now = [100.0]
    choice = ThreadCountChoice(cold_after=0.005, clock=lambda: now[0])
    assert choice.choose() == 1                # the first call: no team has run yet
    choice.record(1, 1e-3, 10)
    now[0] += 0.001
    assert choice.choose() == 0                # 1 ms after the last call ended
    choice.record(0, 1e-3, 10)
    now[0] += 0.080                            # a keystroke at 150 words a minute
    assert choice.choose() == 1
    choice.record(1, 1e-3, 10)
    now[0] += 0.004
    assert choice.choose() == 0
    choice.record(0, 1e-3, 0)                  # a call without steps still ends at its time
    now[0] += 0.004
    assert choice.choose() == 0


def test_a_short_memory_of_step_times_still_works():
    from predtext.backend.threads import ThreadCountChoice

    choice = ThreadCountChoice(window=2, slow_calls=1, hold=1, cold_after=float("inf"))
    choice.record(0, 1e-3, 1)
    choice.record(0, 1.0, 1)
    assert choice.choose() == 1 and choice.choose() == 0
