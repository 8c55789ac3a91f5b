"""The training loop: learning, exact resume, stopping, evaluation and bad input."""

import math
import shutil
from pathlib import Path

import numpy
import pytest

from predtext.errors import CorpusError, ModelFileError
from predtext.lm import modelfile
from predtext.lm.model import LanguageModel
from predtext.lm.train import (
    CHECKPOINT_VERSION,
    TrainConfig,
    TrainingError,
    evaluate,
    learning_rate,
    train,
)


def small_config(**changes):
    settings = dict(hidden_size=16, embed_size=8, seq_len=16, batch_size=4, max_steps=30,
                    progress=False, ngram=False, plot=False, eval_interval=1e9,
                    checkpoint_interval=1e9, dropout=0.1, lr=1e-2, warmup_steps=3)
    settings.update(changes)
    return TrainConfig(**settings)


def quiet(line):
    pass


def test_a_short_run_reduces_the_loss_and_keeps_the_best_model(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    result = train([corpus], out, small_config(max_steps=150, ngram=True), log=quiet)
    initial = math.log(result.model.vocab_size)
    assert result.best_valid["loss"] < initial - 0.8
    assert result.stopped == "max steps"
    loaded = LanguageModel.load(out)
    assert loaded.training_record["steps"] == 150
    assert loaded.training_record["best"]["loss"] == result.best_valid["loss"]
    assert loaded.ngram is not None and loaded.ngram.probability("cat", ["the"]) > 0
    assert (tmp_path / "m.safetensors.ckpt").exists()


def final_weights(path):
    return modelfile.load_checkpoint(path).model_tensors


@pytest.mark.parametrize("stop_after", ["mid-epoch", "epoch end", "next epoch"])
def test_resume_continues_exactly_like_an_uninterrupted_run(corpus, tmp_path, stop_after):
    # Batches per epoch of the char stream: (tokens // batch - 1) // seq_len.
    per_epoch = (int(len(corpus.read_text()) * 0.9) // 4 - 1) // 16
    stop_at = {"mid-epoch": 11, "epoch end": per_epoch, "next epoch": per_epoch + 3}[stop_after]
    config = small_config(max_steps=per_epoch + 8)
    whole = train([corpus], tmp_path / "a.st", config, log=quiet)
    assert whole.record["epochs"] == 1  # the run crosses an epoch border
    cut = train([corpus], tmp_path / "b.st", config, log=quiet,
                on_step=lambda info: info["step"] == stop_at)
    assert cut.stopped == "interrupted" and cut.record["steps"] == stop_at
    resumed = train([corpus], tmp_path / "b.st", config, resume=True, log=quiet)
    assert resumed.record["steps"] == per_epoch + 8
    expected, got = final_weights(tmp_path / "a.st.ckpt"), final_weights(tmp_path / "b.st.ckpt")
    for name in expected:
        numpy.testing.assert_array_equal(expected[name], got[name], err_msg=name)
    assert resumed.best_valid["loss"] == whole.best_valid["loss"]


def test_resume_with_other_settings_is_refused_and_keeps_the_files(corpus, tmp_path):
    out = tmp_path / "m.st"
    train([corpus], out, small_config(max_steps=5), log=quiet)
    before = (out.read_bytes(), (tmp_path / "m.st.ckpt").read_bytes())
    with pytest.raises(TrainingError, match="hidden_size=16"):
        train([corpus], out, small_config(hidden_size=32), resume=True,
              explicit={"hidden_size"}, log=quiet)
    other = tmp_path / "other.txt"
    other.write_text("a different corpus, longer than the first one? no: shorter.\n" * 40)
    with pytest.raises(TrainingError, match="n_tokens"):
        train([other], out, small_config(), resume=True, log=quiet)
    assert (out.read_bytes(), (tmp_path / "m.st.ckpt").read_bytes()) == before


def test_bad_corpora_and_settings(corpus, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("just a few words here\n" * 2)
    with pytest.raises(CorpusError, match="too small for one batch"):
        train([tiny], tmp_path / "m.st", small_config(), log=quiet)
    with pytest.raises(TrainingError, match="over the limit"):
        train([corpus], tmp_path / "m.st", small_config(vocab_limit=5), log=quiet)
    with pytest.raises(ValueError, match="seq_len"):
        train([corpus], tmp_path / "m.st", small_config(seq_len=0), log=quiet)
    assert not (tmp_path / "m.st").exists()


def test_time_budget_stops_the_run(corpus, tmp_path):
    result = train([corpus], tmp_path / "m.st",
                   small_config(max_steps=None, time_budget=0.5, eval_interval=0.2), log=quiet)
    assert result.stopped == "time budget"
    assert 0.5 <= result.record["seconds"] < 5
    assert len(result.history) >= 2


def test_word_level_training(corpus, tmp_path):
    result = train([corpus], tmp_path / "w.st",
                   small_config(level="word", hidden_size=8, embed_size=8, max_steps=20), log=quiet)
    assert result.model.tokenizer.kind == "word"
    assert result.model.config["tie_weights"]  # the word-level default
    assert result.best_valid["bpc"] < result.best_valid["loss"]  # several characters per token


def test_evaluate_scores_every_token_once():
    from predtext.lm.tokenizers import CharTokenizer

    model = LanguageModel(tokenizer=CharTokenizer.from_text("abcd"), embed_size=3, hidden_size=5,
                          num_layers=1, seed=0, dtype=numpy.float64)
    ids = model.encode("abcdabcdaabbccdd")
    result = evaluate(model, ids, batch_size=1, seq_len=4)
    assert result["tokens"] == len(ids) - 1
    state, total = model.initial_state(1), 0.0
    for current, following in zip(ids[:-1], ids[1:]):
        log_probs, state = model.step([current], state)
        total -= log_probs[0, following]
    assert result["loss"] == pytest.approx(total / (len(ids) - 1), rel=1e-10)
    # several streams score the same number of tokens
    assert evaluate(model, ids, batch_size=3, seq_len=2)["tokens"] == len(ids) - 1


def test_learning_rate_warms_up_then_follows_a_cosine():
    config = small_config(lr=1.0, warmup_steps=4, min_lr_ratio=0.1).resolved()
    assert [learning_rate(config, s, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(config, 10, 0.5) == pytest.approx(0.55)
    assert learning_rate(config, 10, 1.0) == pytest.approx(0.1)


def test_word_level_embedding_follows_the_hidden_size_when_tied():
    config = TrainConfig(level="word", hidden_size=96).resolved()
    assert config.tie_weights and config.embed_size == 96
    with pytest.raises(ValueError, match="tie_weights"):
        TrainConfig(level="word", hidden_size=96, embed_size=32).resolved()


LEGACY = Path(__file__).parent / "data"


def legacy_config(**changes):
    # The settings tests/data/make_legacy_checkpoint.py wrote legacy_v0.ckpt with.
    return small_config(max_steps=20, **changes)


def test_a_checkpoint_of_the_unversioned_format_still_resumes(tmp_path):
    """legacy_v0.ckpt was written by the loop before checkpoints had a version: set for
    20 steps, stopped after 10. Resumed, it must end where an uninterrupted run ends."""
    corpus = LEGACY / "legacy_corpus.txt"
    shutil.copy(LEGACY / "legacy_v0.ckpt", tmp_path / "old.ckpt")
    assert "version" not in modelfile.load_checkpoint(tmp_path / "old.ckpt").state
    resumed = train([corpus], tmp_path / "old.st",
                    legacy_config(checkpoint=str(tmp_path / "old.ckpt")), resume=True, log=quiet)
    assert resumed.record["steps"] == 20 and resumed.stopped == "max steps"
    whole = train([corpus], tmp_path / "new.st", legacy_config(), log=quiet)
    expected = final_weights(tmp_path / "new.st.ckpt")
    got = modelfile.load_checkpoint(tmp_path / "old.ckpt")
    assert got.state["version"] == CHECKPOINT_VERSION       # rewritten in the current format
    # Not bit-identical: the first 10 steps ran on the machine that wrote the file.
    for name in expected:
        numpy.testing.assert_allclose(got.model_tensors[name], expected[name], rtol=1e-4,
                                      atol=1e-6, err_msg=name)
    assert resumed.record["history"][0]["step"] == 10       # the validation before the cut
    assert whole.record["steps"] == 20


def rewrite_state(path, change):
    checkpoint = modelfile.load_checkpoint(path)
    change(checkpoint.state)
    modelfile.save_checkpoint(path, checkpoint.model_tensors, checkpoint.model_meta,
                              checkpoint.optimizer_tensors, checkpoint.state)


def test_a_checkpoint_from_a_newer_version_or_with_other_counters_is_refused(corpus, tmp_path):
    out = tmp_path / "m.st"
    train([corpus], out, small_config(max_steps=3), log=quiet)
    ckpt = tmp_path / "m.st.ckpt"
    rewrite_state(ckpt, lambda state: state.update(version=CHECKPOINT_VERSION + 1))
    with pytest.raises(ModelFileError, match=r"m\.st\.ckpt.*newer predtext"):
        train([corpus], out, small_config(), resume=True, log=quiet)
    rewrite_state(ckpt, lambda state: state.update(version=CHECKPOINT_VERSION))
    rewrite_state(ckpt, lambda state: state["run"].update(surprise=1))
    with pytest.raises(ModelFileError, match="bad run counters.*surprise"):
        train([corpus], out, small_config(), resume=True, log=quiet)
    rewrite_state(ckpt, lambda state: state["run"].pop("surprise"))
    assert train([corpus], out, small_config(max_steps=5), resume=True,
                 log=quiet).record["steps"] == 5


@pytest.mark.parametrize("first", ["from predtext.lm import train, generate",
                                   "import predtext.lm.train, predtext.lm.generate"])
def test_the_package_gives_the_functions_and_the_modules_stay_importable(first):
    """``from predtext.lm import train`` is the function, whichever import came first."""
    import subprocess
    import sys

    code = (f"{first}\n"
            "import importlib, inspect\n"
            "from predtext.lm import train, generate\n"
            "from predtext.lm.train import TrainConfig, train as train_function\n"
            "modules = [importlib.import_module('predtext.lm.' + n)\n"
            "           for n in ('train', 'generate')]\n"
            "assert inspect.isfunction(train) and inspect.isfunction(generate)\n"
            "assert train is train_function is modules[0].train\n"
            "assert generate is modules[1].generate\n"
            "assert inspect.ismodule(modules[0]) and modules[0].TrainConfig is TrainConfig\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
