"""The engine's commands: predtext ksr, config, forget and ngram build -- output and exit codes."""

import io
import json

import pytest

from predtext.cli import main
from predtext.engine.config import DEFAULT_CONFIG_TOML, tomllib
from predtext.engine.history import HISTORY_FILE
from predtext.engine.ngram import NGramModel

TEXT = ("The cat sat on the mat. The dog sat on the log.\n"
        "A cat and a dog met on the mat. Then the cat ran.\n") * 5


@pytest.fixture
def home(tmp_path, monkeypatch):
    """User config and data under tmp_path, so nothing of the real user's is read or written."""
    monkeypatch.setenv("PREDTEXT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PREDTEXT_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("PREDTEXT_DEBUG", raising=False)
    return tmp_path


@pytest.fixture
def ngram_file(home):
    path = home / "cats.ngram"
    NGramModel.from_text(TEXT).save(path)
    return path


@pytest.fixture
def text_file(home):
    path = home / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def one_line_error(capsys, command):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"predtext {command}: error:")
    assert "Traceback" not in captured.err
    return lines[0]


# ---------------------------------------------------------------- ksr


def test_ksr_prints_savings_counts_and_latency(home, ngram_file, text_file, capsys):
    assert main(["ksr", str(text_file), "--model", str(ngram_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reader: KSR ") and f"on {len(TEXT):,} characters (k=6" in out
    assert "\nglancer: KSR " in out            # both simulated users, one after the other
    assert "typed" in out and "selections" in out and "of them phrases" in out
    assert "p50" in out and "p90" in out and "p99" in out
    # Learning stayed in memory: no history file was written.
    assert not (home / "data" / HISTORY_FILE).exists()


def test_ksr_json_is_one_object(home, ngram_file, text_file, capsys):
    assert main(["ksr", str(text_file), "--model", str(ngram_file), "-k", "3", "--json",
                 "--user", "reader"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["user"] == "reader"
    assert report["characters"] == len(TEXT) and report["k"] == 3
    assert report["keystrokes"] == report["typed"] + report["selections"]
    assert report["ksr"] == pytest.approx(1 - report["keystrokes"] / len(TEXT))
    assert 0.3 < report["ksr"] < 1
    for key in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "suggest_calls",
                "phrases_selected"):
        assert report[key] >= 0
    assert "ngram" in report["predictors"]


def test_ksr_both_users_and_a_mistyping_typist(home, ngram_file, tmp_path, capsys):
    # Words the model never saw: each is typed, with a slip (then corrected or rubbed out).
    strange = tmp_path / "strange.txt"
    strange.write_text("zebra quokka wombat\n", encoding="utf-8")
    assert main(["ksr", str(strange), "--model", str(ngram_file), "--json",
                 "--typos", "1", "--seed", "4"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert set(reports) == {"reader", "glancer"}
    for user, report in reports.items():
        assert report["user"] == user and report["typos_share"] == 1.0
        assert report["typos"] == 3 and report["backspaces"] > 0
        assert report["keystrokes"] == report["typed"] + report["backspaces"] + report["selections"]


def test_ksr_reads_neither_the_users_config_nor_history(home, ngram_file, text_file, capsys):
    from predtext.engine.history import HISTORY_FILE

    (home / "config.toml").write_text("[engine\nbroken", encoding="utf-8")
    (home / "data").mkdir()
    (home / "data" / HISTORY_FILE).write_text("zorbly zorbly zorbly\n", encoding="utf-8")
    before = (home / "data" / HISTORY_FILE).read_bytes()
    assert main(["ksr", str(text_file), "--model", str(ngram_file), "--user", "reader"]) == 0
    assert (home / "data" / HISTORY_FILE).read_bytes() == before
    assert "zorbly" not in capsys.readouterr().out


def test_ksr_reads_standard_input(home, ngram_file, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode("utf-8"))))
    assert main(["ksr", "-", "--model", str(ngram_file), "--json", "--user", "reader"]) == 0
    assert json.loads(capsys.readouterr().out)["characters"] == len(TEXT)


def test_ksr_with_a_language_model_file(home, text_file, tmp_path, capsys):
    from predtext.lm.train import TrainConfig, train

    model = tmp_path / "tiny.safetensors"
    train([text_file], model, TrainConfig(hidden_size=16, embed_size=8, num_layers=1, seq_len=16,
                                          batch_size=4, max_steps=20, plot=False, progress=False),
          log=lambda line: None)
    short = tmp_path / "short.txt"
    short.write_text(TEXT[:120], encoding="utf-8")
    assert main(["ksr", str(short), "--model", str(model), "--json", "--user", "reader"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predictors"][:2] == ["neural", "ngram"]


def test_ksr_whitespace_only_text_saves_nothing(home, ngram_file, tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\t \n", encoding="utf-8")
    assert main(["ksr", str(blank), "--model", str(ngram_file), "--json", "--user", "reader"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ksr"] == 0 and report["typed"] == 6


@pytest.mark.parametrize("problem", ["missing", "empty", "not utf-8", "directory", "k=0",
                                     "k=abc", "k=51", "bad model", "missing model", "bad config"])
def test_ksr_bad_input_is_one_line_and_exit_2(problem, home, ngram_file, text_file, tmp_path,
                                             capsys):
    args = ["ksr", str(text_file), "--model", str(ngram_file)]
    if problem == "missing":
        args[1] = str(tmp_path / "nowhere.txt")
    elif problem == "empty":
        (tmp_path / "empty.txt").write_bytes(b"")
        args[1] = str(tmp_path / "empty.txt")
    elif problem == "not utf-8":
        (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
        args[1] = str(tmp_path / "latin1.txt")
    elif problem == "directory":
        args[1] = str(tmp_path)
    elif problem == "k=0":
        args += ["-k", "0"]
    elif problem == "k=abc":
        args += ["-k", "abc"]
    elif problem == "k=51":              # more than the engine offers at once
        args += ["-k", "51"]
    elif problem == "bad model":
        (tmp_path / "bad.safetensors").write_bytes(b"garbage, not a model")
        args[3] = str(tmp_path / "bad.safetensors")
    elif problem == "missing model":
        args[3] = str(tmp_path / "none.safetensors")
    elif problem == "bad config":         # given with --config (the user's is never read)
        (home / "config.toml").write_text("[engine\ncombination = 3", encoding="utf-8")
        args += ["--config", str(home / "config.toml")]
    if problem.startswith("k="):          # argparse rejects it before the command runs
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        status = exit_info.value.code
    else:
        status = main(args)
    assert status == 2
    message = one_line_error(capsys, "ksr")
    if problem == "bad config":
        assert "config.toml" in message


def test_argument_errors_exit_2(home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ksr", "x.txt", "-k", "-3"])
    assert exit_info.value.code == 2
    one_line_error(capsys, "ksr")


# ---------------------------------------------------------------- config


def test_config_prints_path_model_and_predictors(home, capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert f"config file: {home / 'config.toml'} (not found: the defaults apply)" in out
    assert "model:" in out and "combination: linear" in out
    for name in ("neural", "ngram", "history", "dictionary", "abbreviations"):
        assert f"  {name} " in out
    assert "weight 0.65" in out


def test_config_follows_the_user_file(home, tmp_path, capsys):
    model = tmp_path / "mine.safetensors"
    (home / "config.toml").write_text(
        f'[engine]\ncombination = "max"\nmodel = "{model}"\n'
        '[predictors.ngram]\nweight = 0.9\n[predictors.history]\nenabled = false\n',
        encoding="utf-8")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "combination: max" in out
    assert f"model: {model} (from the config, missing)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    # The file changes the defaults; what it does not mention runs as by default.
    assert "weight 0.9" in lines["ngram"] and '"phrase_words": 3' in lines["ngram"]
    assert lines["history"].split()[-1] == "off"
    assert "weight 1 " in lines["neural"] and " on " in lines["neural"]


def test_config_default_prints_a_valid_config(home, capsys):
    assert main(["config", "--default"]) == 0
    out = capsys.readouterr().out
    assert out == DEFAULT_CONFIG_TOML
    assert "neural" in tomllib.loads(out)["predictors"]


def test_config_with_a_broken_file_is_one_line_and_exit_2(home, capsys):
    (home / "config.toml").write_text('[engine]\ncombination = "sum"\n', encoding="utf-8")
    assert main(["config"]) == 2
    assert "combination" in one_line_error(capsys, "config")


# ---------------------------------------------------------------- forget


def test_forget_erases_the_history(home, capsys):
    history = home / "data" / HISTORY_FILE
    history.parent.mkdir(parents=True)
    history.write_text("what I wrote\n", encoding="utf-8")
    lines = home / "data" / "repl_history"          # the terminal's up-arrow history
    lines.write_text("+what I wrote\n", encoding="utf-8")
    assert main(["forget"]) == 0
    assert not history.exists() and not lines.exists()
    assert "erased" in capsys.readouterr().out
    assert main(["forget"]) == 0          # nothing to erase is fine too


# ---------------------------------------------------------------- ngram build


def test_ngram_build_writes_a_loadable_model(home, text_file, tmp_path, capsys):
    out = tmp_path / "built.ngram"
    assert main(["ngram", "build", str(text_file), "--out", str(out), "--order", "2"]) == 0
    assert "2-gram model of 1 file(s)" in capsys.readouterr().out
    model = NGramModel.load(out)
    assert model.order == 2 and model.probability("sat", ["cat"]) > 0.1


def test_ngram_build_takes_a_directory(home, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the cat sat", encoding="utf-8")
    (corpus / "b.txt").write_text("the dog ran", encoding="utf-8")
    out = tmp_path / "dir.ngram"
    assert main(["ngram", "build", str(corpus), "--out", str(out)]) == 0
    assert "of 2 file(s)" in capsys.readouterr().out
    assert NGramModel.load(out).probability("dog", ["the"]) > 0


@pytest.mark.parametrize("problem", ["missing", "empty", "order", "out is a directory",
                                     "out cannot be written"])
def test_ngram_build_bad_input_is_one_line_and_exit_2(problem, home, text_file, tmp_path, capsys):
    args = ["ngram", "build", str(text_file), "--out", str(tmp_path / "x.ngram")]
    if problem == "missing":
        args[2] = str(tmp_path / "nowhere.txt")
    elif problem == "empty":
        (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
        args[2] = str(tmp_path / "empty.txt")
    elif problem == "order":
        args += ["--order", "7"]
    elif problem == "out is a directory":
        args[4] = str(tmp_path)
    elif problem == "out cannot be written":
        args[4] = str(text_file / "x.ngram")      # under a file
    assert main(args) == 2
    one_line_error(capsys, "ngram")


def test_ngram_without_an_action_is_an_argument_error(home, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ngram"])
    assert exit_info.value.code == 2
