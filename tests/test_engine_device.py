"""The neural predictor's `device` option: the engine stays on the CPU unless its config asks
(the CuPy backend's array code with NumPy in place of CuPy stands in for a GPU here), and a
GPU that cannot be used is one clear message."""

import logging

import numpy
import pytest
from test_lm_train_device import _gpu_error

from predtext.backend import get_ops, register_backend
from predtext.backend.cupy_ops import CupyOps
from predtext.engine.context import parse_context
from predtext.engine.engine import Engine
from predtext.engine.neural import make_predictor
from predtext.engine.predictor import Resources
from predtext.lm.model import LanguageModel
from predtext.lm.train import TrainConfig, train

register_backend("cupy-on-numpy", lambda: CupyOps(xp=numpy))

LINES = ["the cat sat on the mat.", "the dog ate the bone.", "the bird sang a song."]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("device")
    corpus = folder / "lines.txt"
    corpus.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    out = folder / "tiny.safetensors"
    train([corpus], out, TrainConfig(hidden_size=24, embed_size=8, num_layers=1, seq_len=24,
                                     batch_size=8, max_steps=60, lr=0.01, plot=False,
                                     ngram=False, progress=False, eval_interval=1e9),
          log=lambda line: None)
    return LanguageModel.load(out)


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "absent.toml"))


def suggestions(predictor, text):
    return [(c.text, c.probability) for c in predictor.predict(parse_context(text), 6)]


def test_the_model_moves_only_when_the_config_asks(model):
    resources = Resources(extra={"language_model": model})
    on_cpu = make_predictor({"weights": "float"}, resources)
    moved = make_predictor({"device": "cupy-on-numpy"}, resources)
    assert on_cpu.lm.model is model and model.ops is get_ops("cpu")
    assert moved.lm.model.ops is get_ops("cupy-on-numpy")
    assert model.ops is get_ops("cpu")           # the loaded model stays for the others
    for text in ("the c", "the dog ate the b", "th"):
        ours, theirs = suggestions(moved, text), suggestions(on_cpu, text)
        assert [t for t, _ in ours] == [t for t, _ in theirs] and ours
        assert [p for _, p in ours] == pytest.approx([p for _, p in theirs], rel=1e-5)


def test_a_bad_device_setting_is_named(model):
    resources = Resources(extra={"language_model": model})
    with pytest.raises(ValueError, match="predictors.neural.device"):
        make_predictor({"device": 1}, resources)
    with pytest.raises(ValueError, match="predictors.neural.device = 'tpu'"):
        make_predictor({"device": "tpu"}, resources)


@pytest.mark.skipif(_gpu_error() is None, reason="CuPy can use a CUDA device here")
def test_without_a_gpu_the_engine_says_so_and_runs_without_the_neural_predictor(
        model, user_dirs, caplog):
    with pytest.raises(ValueError, match="predictors.neural.device = 'cuda': backend 'cupy'"):
        make_predictor({"device": "cuda"}, Resources(extra={"language_model": model}))
    config = {"predictors": {"neural": {"device": "cuda"}}}
    with caplog.at_level(logging.WARNING), Engine.load(model=model, config=config) as engine:
        assert "neural" not in [p.name for p in engine.predictors]
        assert engine.predictors          # the others still suggest
    assert any("device = 'cuda'" in r.getMessage() and "CuPy" in r.getMessage()
               for r in caplog.records)
