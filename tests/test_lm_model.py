"""LanguageModel: gradients, files, incremental inference, sampling and beam search."""

import numpy
import pytest
import safetensors.numpy
from gradcheck import numeric_derivative

from predtext.errors import ModelFileError
from predtext.lm.generate import (
    Continuation,
    beam_search,
    generate,
    sampling_distribution,
    word_boundary_ids,
)
from predtext.lm.model import LanguageModel, LMState, check_config
from predtext.lm.tokenizers import CharTokenizer

TEXT = "the cat sat on the mat. the dog sat on the log.\n"


def tiny_model(cell="lstm", dtype=numpy.float32, **options):
    tokenizer = CharTokenizer.from_text(TEXT)
    config = dict(embed_size=3, hidden_size=4, num_layers=2, cell=cell)
    config.update(options)
    return LanguageModel(tokenizer=tokenizer, dtype=dtype, seed=7, **config)


# ---------------------------------------------------------------- gradients



@pytest.mark.parametrize("cell,options", [
    ("lstm", {}),
    ("gru", {}),
    ("rnn", {"nonlinearity": "tanh"}),
    ("lstm", {"tie_weights": True, "embed_size": 4, "peephole": True}),
    ("gru", {"dropout": 0.2, "recurrent_dropout": 0.3}),
])
def test_gradients_match_finite_differences(cell, options):
    model = tiny_model(cell, numpy.float64, **options)
    rng = numpy.random.default_rng(0)
    ids = rng.integers(0, model.vocab_size, (5, 2))
    targets = rng.integers(0, model.vocab_size, (5, 2))
    targets[2, 1] = -100  # an ignored target takes no part
    h0 = rng.normal(size=(2, 2, 4)) * 0.5
    c0 = rng.normal(size=(2, 2, 4)) * 0.5 if cell == "lstm" else None
    state0 = LMState(h0, c0)
    masks = model.rng.bit_generator.state   # every call draws the same dropout masks

    def loss():
        model.rng.bit_generator.state = masks
        (value, _), _ = model.begin_update_loss(ids, targets, state0)
        return value

    model.zero_grad()
    model.rng.bit_generator.state = masks
    (_, _), backprop = model.begin_update_loss(ids, targets, state0)
    dh0, dc0 = backprop()
    for name, param in model.named_parameters():
        for _ in range(3):
            index = tuple(rng.integers(0, n) for n in param.shape)
            if name == "embedding.weight" and not options.get("tie_weights"):
                index = (int(ids[rng.integers(0, 5), rng.integers(0, 2)]),) + index[1:]
            expected = numeric_derivative(loss, param.data, index)
            assert param.grad[index] == pytest.approx(expected, rel=1e-5, abs=1e-8), name
    for index in [(0, 0, 1), (1, 1, 3)]:
        assert dh0[index] == pytest.approx(numeric_derivative(loss, h0, index), rel=1e-5, abs=1e-8)
        if c0 is not None:
            assert dc0[index] == pytest.approx(numeric_derivative(loss, c0, index), rel=1e-5,
                                               abs=1e-8)


def test_tied_weights_share_one_parameter():
    model = tiny_model(embed_size=4, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    assert "decoder.weight" not in dict(model.named_parameters())
    with pytest.raises(ValueError, match="embed_size == hidden_size"):
        tiny_model(embed_size=3, tie_weights=True)


def test_config_is_checked():
    with pytest.raises(ValueError, match="hidden_size"):
        check_config({"vocab_size": 5, "hidden_size": 0})
    with pytest.raises(ValueError, match="unknown keys"):
        check_config({"vocab_size": 5, "bidirectional": True})
    with pytest.raises(ValueError, match="peephole"):
        check_config({"vocab_size": 5, "cell": "gru", "peephole": True})
    with pytest.raises(ValueError, match="recurrent_dropout: expected a probability"):
        check_config({"vocab_size": 5, "recurrent_dropout": 1.0})


# ---------------------------------------------------------------- files


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    from predtext.engine.ngram import NGramModel

    model = tiny_model("gru", dropout=0.2, recurrent_dropout=0.1)
    model.eval()
    ngram = NGramModel.from_text(TEXT * 3)
    path = tmp_path / "m.safetensors"
    model.save(path, ngram=ngram, training={"steps": 3})
    loaded = LanguageModel.load(path)
    ids = model.encode("the cat sat")
    numpy.testing.assert_array_equal(model.forward(ids)[0], loaded.forward(ids)[0])
    assert loaded.config == model.config
    assert loaded.tokenizer == model.tokenizer
    assert loaded.training_record == {"steps": 3}
    assert loaded.ngram.probability("sat", ["cat"]) == ngram.probability("sat", ["cat"])
    # float16 storage: half the bytes, the same model to float16 precision
    small = tmp_path / "half.safetensors"
    model.save(small, weights_dtype=numpy.float16)
    numpy.testing.assert_allclose(LanguageModel.load(small).forward(ids)[0],
                                  model.forward(ids)[0], atol=1e-2)
    assert LanguageModel.load(small).ngram is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "missing"])
def test_bad_files_raise_model_file_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    tiny_model().save(path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "foreign":
        path.write_bytes(safetensors.numpy.save({"w": numpy.zeros(3, numpy.float32)}))
    else:
        path.unlink()
    with pytest.raises(ModelFileError, match="m.safetensors"):
        LanguageModel.load(path)


def test_a_damaged_n_gram_inside_a_model_file_is_reported_naming_the_file(tmp_path):
    from predtext.engine.engine import Engine
    from predtext.engine.ngram import NGramModel
    from predtext.lm.modelfile import load_model, save_model

    path = tmp_path / "m.safetensors"
    tiny_model().save(path, ngram=NGramModel.from_text(TEXT))
    tensors, meta = load_model(path)
    dropped = next(name for name in tensors if name.startswith("ngram.") and "keys" in name)
    del tensors[dropped]
    save_model(path, tensors, meta)             # a consistent file, with an n-gram part missing
    with pytest.raises(ModelFileError, match="m.safetensors.*n-gram"):
        _ = LanguageModel.load(path).ngram         # the n-gram part is read when asked for
    with pytest.raises(ModelFileError, match="m.safetensors"):
        Engine.load(model=str(path), config={"predictors": {"history": {"persist": False}}})


def test_a_file_of_another_kind_is_refused(tmp_path):
    from predtext.lm.modelfile import save_model

    path = tmp_path / "other.safetensors"
    save_model(path, {"x": numpy.zeros(2, numpy.float32)}, {"config": {}})
    with pytest.raises(ModelFileError, match="holds no language model"):
        LanguageModel.load(path)


# ---------------------------------------------------------------- incremental inference


@pytest.mark.parametrize("cell,options", [("lstm", {}), ("lstm", {"peephole": True}),
                                          ("gru", {}), ("rnn", {"nonlinearity": "relu"})])
def test_steps_equal_the_full_forward(cell, options):
    model = tiny_model(cell, numpy.float64, **options)
    model.eval()
    ids = numpy.array([model.encode("the cat"), model.encode("on the ")]).T  # (T, 2)
    logits, final = model.forward(ids)
    expected = logits - numpy.log(numpy.exp(logits).sum(-1, keepdims=True))
    state = model.initial_state(2)
    for t in range(ids.shape[0]):
        log_probs, state = model.step(ids[t], state)
        numpy.testing.assert_allclose(log_probs, expected[t], atol=1e-12)
    numpy.testing.assert_allclose(state.h, final.h, atol=1e-12)
    # feed() reads a whole prompt with the sequence kernel and agrees too
    fed, fed_state = model.feed(ids)
    numpy.testing.assert_allclose(fed, expected[-1], atol=1e-12)
    numpy.testing.assert_allclose(fed_state.h, state.h, atol=1e-12)


def test_step_reuses_the_state_buffers():
    model = tiny_model()
    state = model.initial_state(1)
    h_buffer = state.h
    kept = state.copy()
    model.step([1], state)
    assert state.h is h_buffer                       # advanced in place
    assert not numpy.array_equal(kept.h, state.h)    # the copy kept the old state
    with pytest.raises(ValueError, match="token_ids"):
        model.step([model.vocab_size], state)
    with pytest.raises(ValueError, match="token_ids"):
        model.step([1, 2], state)


def test_step_sees_a_parameter_replaced_after_the_state_was_made():
    model = tiny_model()
    state = model.initial_state(1)
    before, _ = model.step([1], state.copy())
    model.decoder.bias.data = model.decoder.bias.data + 1.0     # a new array, not in place
    model.decoder.weight.data[...] *= 2.0                       # in place
    after, _ = model.step([1], state)
    fed, _ = model.feed([1], model.initial_state(1))
    numpy.testing.assert_allclose(after, fed, atol=1e-6)
    assert not numpy.allclose(before, after)


@pytest.mark.parametrize("options", [dict(cell="lstm", peephole=True), dict(cell="gru", bias=False),
                                     dict(cell="rnn", embed_size=4, tie_weights=True)])
def test_a_state_builds_its_compiled_step_once(options):
    model = tiny_model(**options)
    state = model.initial_state(2)
    model.step([1, 2], state)
    network = state._buffers.network
    for token in (3, 4, 5):
        model.step([token, token], state)
    assert state._buffers.network is network


def test_next_token_distribution_sums_to_one():
    model = tiny_model()
    probs = model.next_token_distribution("the c")
    assert probs.shape == (model.vocab_size,)
    assert probs.sum() == pytest.approx(1.0)
    assert model.next_token_distribution("").sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- sampling and beam search


def test_sampling_distribution_filters():
    log_probs = numpy.log(numpy.array([0.05, 0.5, 0.3, 0.1, 0.05]))
    greedy = sampling_distribution(log_probs, temperature=0)
    assert greedy.argmax() == 1 and greedy.max() == 1.0
    top2 = sampling_distribution(log_probs, top_k=2)
    assert set(numpy.flatnonzero(top2)) == {1, 2}
    nucleus = sampling_distribution(log_probs, top_p=0.85)
    assert set(numpy.flatnonzero(nucleus)) == {1, 2, 3}  # 0.5 + 0.3 < 0.85 <= 0.9
    assert nucleus.sum() == pytest.approx(1.0)
    assert sampling_distribution(log_probs)[0] == 0.0    # the unknown token never comes out
    with pytest.raises(ValueError, match="top_p"):
        sampling_distribution(log_probs, top_p=0)


def test_generate_is_reproducible_and_greedy_is_top_k_one():
    model = tiny_model()
    first = generate(model, "the ", 20, seed=3)
    assert len(first) == 20 and first == generate(model, "the ", 20, seed=3)
    assert generate(model, "the ", 15, temperature=0) == generate(model, "the ", 15, top_k=1,
                                                                   seed=9)


def test_the_generate_method_runs_on_a_thread_of_its_own(monkeypatch):
    """So the caller's thread keeps no compiled-core thread team (see backend.threads)."""
    import importlib
    import threading

    # The module: ``import predtext.lm.generate as m`` gives the function (see predtext.lm).
    generate_module = importlib.import_module("predtext.lm.generate")

    model = tiny_model()
    seen = []
    real = generate_module.generate
    monkeypatch.setattr(generate_module, "generate",
                        lambda *a, **k: seen.append(threading.get_ident()) or real(*a, **k))
    assert model.generate("the ", 12, seed=3) == real(model, "the ", 12, seed=3)
    assert seen and seen[0] != threading.get_ident()
    with pytest.raises(ValueError, match="top_p"):            # errors reach the caller
        model.generate("the ", 5, top_p=0)


def test_beam_search_finds_the_exact_best_continuations():
    model = tiny_model("lstm", numpy.float64)
    model.eval()
    log_probs, state = model.feed_text("the c")
    stops = {model.tokenizer.token_to_id[" "], model.tokenizer.token_to_id["."]}
    found = beam_search(model, state, beam_width=400, max_length=2, stop_ids=stops, n_best=5)
    # Brute force over every continuation of up to two tokens.
    scores = []
    candidates = [i for i in range(1, model.vocab_size)]
    for first in candidates:
        lp1 = log_probs[0, first]
        if first in stops:
            scores.append((lp1, (), first))
            continue
        lp2, _ = model.feed([first], state)
        for second in candidates:
            if second in stops:
                scores.append((lp1 + lp2[0, second], (first,), second))
            else:
                scores.append((lp1 + lp2[0, second], (first, second), None))
    scores.sort(key=lambda item: -item[0])
    ended = [s for s in scores if s[2] is not None]
    expected = ended[:5] if len(ended) >= 5 else scores[:5]
    assert [c.ids for c in found] == [ids for _, ids, _ in expected]
    for continuation, (score, _, _) in zip(found, expected):
        assert isinstance(continuation, Continuation)
        assert continuation.log_prob == pytest.approx(score, abs=1e-9)


def test_beam_search_completes_words_at_char_level():
    model = tiny_model()
    _, state = model.feed_text("the d")
    results = model.beam_search(state, beam_width=4, max_length=6,
                                stop_ids=word_boundary_ids(model.tokenizer))
    assert results and all(r.stop_id is None or r.stop_id in word_boundary_ids(model.tokenizer)
                           for r in results)
    assert all(" " not in r.text for r in results)
    probs = [r.probability for r in results]
    assert probs == sorted(probs, reverse=True) or any(r.stop_id is None for r in results)
    with pytest.raises(ValueError, match="log_probs"):
        beam_search(model, model.initial_state(1))


def test_in_place_loss_equals_the_general_softmax_cross_entropy():
    from predtext.lm.model import softmax_cross_entropy_
    from predtext.nn import softmax_cross_entropy

    rng = numpy.random.default_rng(2)
    logits = rng.normal(size=(4, 3, 9)) * 3
    targets = rng.integers(0, 9, (4, 3))
    targets[0, 1] = -100
    expected_loss, expected_grad = softmax_cross_entropy(logits, targets)
    loss, grad = softmax_cross_entropy_(logits.copy(), targets)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    numpy.testing.assert_allclose(grad, expected_grad, atol=1e-15)


# ---------------------------------------------------------------- 8-bit weights


def quantized_tiny_model(**options):
    model = tiny_model("gru", **dict(dict(hidden_size=6, num_layers=2), **options))
    model.eval()
    model.rnn.weight_hh_l1.data[2] = 0.0     # a zero row must not divide by zero
    return model, model.quantize("int8")


def test_quantize_rounds_each_weight_within_half_its_row_scale():
    model, quantized = quantized_tiny_model()
    assert quantized is not model and model.quantized is None and quantized.quantized == "int8"
    float_params = dict(model.named_parameters())
    pairs = quantized._int8_pairs()
    assert sorted(pairs) == ["decoder.weight", "rnn.weight_hh_l0", "rnn.weight_hh_l1",
                             "rnn.weight_ih_l0", "rnn.weight_ih_l1"]
    for name, param in quantized.named_parameters():
        original = float_params[name].data
        if name not in pairs:       # embedding and biases: float, unchanged
            numpy.testing.assert_array_equal(param.data, original)
            continue
        q, scale = pairs[name]
        assert q.dtype == numpy.int8 and q.shape == original.shape and q.min() >= -127
        peak = numpy.abs(original).max(axis=1)
        numpy.testing.assert_allclose(scale, numpy.where(peak > 0, peak / 127, 1.0), rtol=1e-6)
        # what the model computes with is scale * q, within half a step of the float weight
        numpy.testing.assert_array_equal(param.data, q * scale[:, None])
        assert (numpy.abs(param.data - original) <= scale[:, None] * (0.5 + 1e-5)).all()
        assert quantized._int8_pair(param)[0] is q and not param.requires_grad
    assert pairs["rnn.weight_hh_l1"][1][2] == 1.0 and not pairs["rnn.weight_hh_l1"][0][2].any()
    assert quantized._int8_pair(quantized.embedding.weight) is None


def test_a_quantized_model_infers_with_its_8_bit_weights():
    model, quantized = quantized_tiny_model()
    # The float model holding exactly the values the 8-bit weights stand for...
    reference = tiny_model("gru", hidden_size=6, num_layers=2)
    reference.load_state_dict(quantized.state_dict())
    reference.eval()
    ids = numpy.array([model.encode("the cat"), model.encode("on the ")]).T
    # ...gives the same figures on every inference path.
    numpy.testing.assert_array_equal(quantized.forward(ids)[0], reference.forward(ids)[0])
    numpy.testing.assert_array_equal(quantized.feed(ids)[0], reference.feed(ids)[0])
    # The step reads the int8 rows and scales themselves (the core's kernels), which sums
    # scale * (x . q) where the float path sums x . (scale * q): equal to float rounding.
    got, want = quantized.initial_state(2), reference.initial_state(2)
    for t in range(ids.shape[0]):
        numpy.testing.assert_allclose(quantized.step(ids[t], got)[0],
                                      reference.step(ids[t], want)[0], rtol=1e-5, atol=1e-5)
    assert got._buffers.network.quantized and not want._buffers.network.quantized
    assert quantized.generate("the ", 20, seed=3) == reference.generate("the ", 20, seed=3)
    # and they are close to, not equal to, the float model's
    assert not numpy.array_equal(quantized.forward(ids)[0], model.forward(ids)[0])
    numpy.testing.assert_allclose(quantized.forward(ids)[0], model.forward(ids)[0], atol=0.05)


def test_a_quantized_model_round_trips_through_its_file(tmp_path):
    from predtext.engine.ngram import NGramModel
    from predtext.lm import modelfile

    model, quantized = quantized_tiny_model()
    path = tmp_path / "q.safetensors"
    quantized.save(path, ngram=NGramModel.from_text(TEXT * 3), training={"steps": 3})
    tensors, meta = modelfile.load_model(path)
    assert tensors["rnn.weight_ih_l0"].dtype == numpy.int8
    assert tensors["rnn.weight_ih_l0.scale"].dtype == numpy.float32
    assert tensors["embedding.weight"].dtype == numpy.float32
    assert meta["quantization"]["scheme"] == "int8" and meta["model_format_version"] == 2
    loaded = LanguageModel.load(path)
    assert loaded.quantized == "int8" and loaded.ngram is not None
    for name, (q, scale) in quantized._int8_pairs().items():
        numpy.testing.assert_array_equal(loaded._int8_pairs()[name][0], q)
        numpy.testing.assert_array_equal(loaded._int8_pairs()[name][1], scale)
    ids = model.encode("the cat sat")
    numpy.testing.assert_array_equal(loaded.forward(ids)[0], quantized.forward(ids)[0])
    numpy.testing.assert_array_equal(loaded.step(ids[:1], loaded.initial_state())[0],
                                     quantized.step(ids[:1], quantized.initial_state())[0])
    # The copy the engine makes for another device goes through the same tensors and meta.
    copy = LanguageModel.from_tensors(quantized.tensors(), quantized.file_meta())
    numpy.testing.assert_array_equal(copy.forward(ids)[0], quantized.forward(ids)[0])
    # float16 storage halves what stays float; the 8-bit weights are stored as they are
    half = tmp_path / "half.safetensors"
    quantized.save(half, weights_dtype=numpy.float16)
    assert modelfile.load_model(half)[0]["rnn.weight_ih_l0"].dtype == numpy.int8
    numpy.testing.assert_allclose(LanguageModel.load(half).forward(ids)[0],
                                  quantized.forward(ids)[0], atol=1e-2)
    # a float model's file is as before: version 1, no quantisation entry
    model.save(tmp_path / "f.safetensors")
    _, float_meta = modelfile.load_model(tmp_path / "f.safetensors")
    assert float_meta["model_format_version"] == 1 and "quantization" not in float_meta


def test_a_quantized_model_is_for_inference_only():
    model, quantized = quantized_tiny_model()
    ids = numpy.array([[1], [2]])
    with pytest.raises(ValueError, match="8-bit"):
        quantized.begin_update(ids)
    with pytest.raises(ValueError, match="8-bit"):
        quantized.begin_update_loss(ids, ids)
    with pytest.raises(ValueError, match="load_state_dict"):
        quantized.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="scheme"):
        model.quantize("int4")
    model.begin_update(ids)         # the float model still trains


def test_a_file_whose_8_bit_weights_are_not_the_models_is_refused(tmp_path):
    from predtext.lm import modelfile
    from predtext.lm.quantize import quantize_rows

    _, quantized = quantized_tiny_model()
    tensors, meta = quantized.tensors(), quantized.file_meta()
    # the embedding made 8-bit, and the decoder left float
    q, scale = tensors.pop("decoder.weight"), tensors.pop("decoder.weight.scale")
    tensors["decoder.weight"] = q * scale[:, None]
    pairs = {"embedding.weight": quantize_rows(tensors.pop("embedding.weight"))}
    tensors = modelfile.pack_int8(tensors, pairs)
    names = sorted(set(meta["quantization"]["tensors"]) - {"decoder.weight"} | set(pairs))
    meta["quantization"] = modelfile.int8_meta(names)
    path = tmp_path / "odd.safetensors"
    modelfile.save_model(path, tensors, meta)
    with pytest.raises(ModelFileError, match="odd.safetensors.*8-bit weights"):
        LanguageModel.load(path)


def test_a_tied_decoder_weight_stays_float_with_the_embedding(tmp_path):
    model = tiny_model("lstm", embed_size=4, tie_weights=True, peephole=True)
    quantized = model.quantize("int8")
    assert sorted(quantized._int8_pairs()) == ["rnn.weight_hh_l0", "rnn.weight_hh_l1",
                                               "rnn.weight_ih_l0", "rnn.weight_ih_l1"]
    assert quantized.decoder.weight is quantized.embedding.weight
    numpy.testing.assert_array_equal(quantized.decoder.weight.data, model.decoder.weight.data)
    quantized.save(tmp_path / "tied.safetensors")
    loaded = LanguageModel.load(tmp_path / "tied.safetensors")
    ids = model.encode("the mat")
    numpy.testing.assert_array_equal(loaded.forward(ids)[0], quantized.forward(ids)[0])
