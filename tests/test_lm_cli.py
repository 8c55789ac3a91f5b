"""`predtext train`, `eval`, `sample` and `quantize`: results, and one-line errors with exit
status 2."""

import json
import subprocess
import sys

import numpy
import pytest

from predtext.cli import main

SENTENCES = ["the cat sat on the mat.", "a dog ran to the log.", "the bird sang in a tree.",
             "my hat is on the bed.", "we ate the red jam."]
SMALL = ["--hidden", "12", "--embed", "6", "--seq-len", "12", "--batch-size", "4", "--quiet",
         "--no-plot", "--no-ngram"]


@pytest.fixture
def corpus(tmp_path):
    rng = numpy.random.default_rng(1)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(SENTENCES[i] for i in rng.integers(0, 5, 100)) + "\n")
    return path


@pytest.fixture
def trained(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    assert main(["train", str(corpus), "--out", str(out), "--max-steps", "15"] + SMALL) == 0
    return out


def run_main(argv):
    """Exit status of `predtext ARGV`, whether it returns or exits through argparse."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def assert_one_line_error(capsys, status, *fragments):
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0]


def test_eval_json_has_the_documented_keys(trained, corpus, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), str(corpus), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) == {"loss", "perplexity", "bpc", "tokens"}
    assert figures["perplexity"] == pytest.approx(numpy.exp(figures["loss"]))
    assert figures["bpc"] == pytest.approx(figures["loss"] / numpy.log(2))  # char level
    assert figures["tokens"] == len(corpus.read_text()) - 1


def test_sample_is_reproducible_with_a_seed(trained, capsys):
    argv = ["sample", str(trained), "--prompt", "the ", "--length", "30", "--seed", "4",
            "--top-k", "5", "--top-p", "0.9", "--temperature", "0.7"]
    capsys.readouterr()
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first and first.startswith("the ")


@pytest.mark.parametrize("option", [["--seq-len", "0"], ["--batch-size", "-3"], ["--lr", "0"],
                                    ["--dropout", "1.5"], ["--recurrent-dropout", "1"]])
def test_impossible_settings(corpus, tmp_path, capsys, option):
    status = run_main(["train", str(corpus), "--out", str(tmp_path / "m.st")] + option)
    assert_one_line_error(capsys, status, option[0])


def test_bad_training_input(corpus, tmp_path, capsys):
    out = str(tmp_path / "m.st")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short\n")
    assert_one_line_error(capsys, run_main(["train", str(tiny), "--out", out] + SMALL),
                          "too small for one batch")
    assert_one_line_error(capsys, run_main(["train", str(tmp_path / "none.txt"), "--out", out]),
                          "no such file")
    assert_one_line_error(capsys, run_main(["train", str(corpus), "--out", out, "--vocab-limit",
                                            "5"] + SMALL), "over the limit")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text \xff\xfe then garbage" * 50)
    assert_one_line_error(capsys, run_main(["train", str(bad), "--out", out] + SMALL),
                          "invalid UTF-8", "bad.txt")
    assert not (tmp_path / "m.st").exists()


def test_recurrent_dropout_is_kept_in_the_model_and_locked_on_resume(corpus, tmp_path, capsys):
    from predtext.lm.model import LanguageModel

    out = tmp_path / "m.safetensors"
    argv = ["train", str(corpus), "--out", str(out), "--max-steps", "3"] + SMALL
    assert main(argv + ["--recurrent-dropout", "0.3"]) == 0
    model = LanguageModel.load(out)
    assert model.config["recurrent_dropout"] == 0.3 and model.rnn.recurrent_dropout == 0.3
    capsys.readouterr()
    status = run_main(argv + ["--resume", "--recurrent-dropout", "0.2"])
    assert_one_line_error(capsys, status, "recurrent_dropout=0.3")


def test_incompatible_resume_keeps_what_was_saved(trained, corpus, capsys):
    checkpoint = trained.parent / (trained.name + ".ckpt")
    before = trained.read_bytes(), checkpoint.read_bytes()
    status = run_main(["train", str(corpus), "--out", str(trained), "--resume", "--hidden", "20",
                       "--quiet"])
    assert_one_line_error(capsys, status, "hidden_size=12")
    status = run_main(["train", str(corpus), "--out", str(trained), "--resume", str(corpus)])
    assert_one_line_error(capsys, status)
    assert (trained.read_bytes(), checkpoint.read_bytes()) == before


def test_bad_model_files(trained, corpus, tmp_path, capsys, monkeypatch):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(trained.read_bytes()[:-10])
    assert_one_line_error(capsys, run_main(["eval", str(damaged), str(corpus)]),
                          "damaged.safetensors")
    assert_one_line_error(capsys, run_main(["sample", str(tmp_path / "nothing.safetensors")]),
                          "no such file")
    # No model given and no packaged default: a clear message, not a traceback.
    import predtext.lm.model

    monkeypatch.setattr(predtext.lm.model, "default_model_path", lambda: tmp_path / "absent")
    assert_one_line_error(capsys, run_main(["sample", "--length", "5"]), "default model")


def test_quantize_writes_a_smaller_model_that_scores_as_the_float_one(trained, corpus,
                                                                      tmp_path, capsys):
    from predtext.lm.model import LanguageModel

    out = tmp_path / "q.safetensors"
    capsys.readouterr()
    assert main(["quantize", str(trained), str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(trained) in printed and str(out) in printed and "smaller" in printed
    before, after = trained.stat().st_size, out.stat().st_size
    assert f"{before:,} bytes" in printed and f"{after:,} bytes" in printed and after < before
    assert LanguageModel.load(out).quantized == "int8"
    losses = []
    for model in (trained, out):
        assert main(["eval", str(model), str(corpus), "--json"]) == 0
        losses.append(json.loads(capsys.readouterr().out)["loss"])
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], abs=0.02)
    assert_one_line_error(capsys, run_main(["quantize", str(out), str(tmp_path / "again")]),
                          "already int8")


def test_quantize_bad_input(trained, tmp_path, capsys):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(trained.read_bytes()[:-10])
    assert_one_line_error(capsys, run_main(["quantize", str(damaged), str(tmp_path / "o")]),
                          "damaged.safetensors")
    assert_one_line_error(capsys, run_main(["quantize", str(tmp_path / "absent"), "o"]),
                          "absent", "no such file")
    assert_one_line_error(capsys, run_main(["quantize", str(trained), str(tmp_path)]),
                          "is a directory")
    assert_one_line_error(capsys, run_main(["quantize", str(trained)]))
    assert not (tmp_path / "o").exists()


def test_a_real_process_exits_with_status_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "predtext.cli", "train", str(tmp_path / "x"),
                             "--out", str(tmp_path / "m.st"), "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
