"""`train(..., device=...)` and `--device`: the whole training path on a backend other than
the CPU's (the reference oracle, and the CuPy backend's array code with NumPy in place of
CuPy) against the CPU run; the CPU run itself unchanged; files that load on either device;
and one clear error for `--device cuda` where no GPU can be used."""

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from test_lm_train import quiet, small_config

import predtext
from predtext import nn
from predtext.backend import BackendUnavailable, get_ops, register_backend
from predtext.backend.cupy_ops import CupyOps
from predtext.cli import main
from predtext.lm import modelfile
from predtext.lm.corpus import TokenStream, iter_token_ids, resolve_paths
from predtext.lm.model import LanguageModel
from predtext.lm.train import TrainConfig, evaluate, learning_rate, train
from predtext.nn.clip import total_grad_norm

# The CuPy backend's whole array code, run by NumPy: the GPU path as far as a CPU checks it.
register_backend("cupy-on-numpy", lambda: CupyOps(xp=numpy))


def config(**changes):
    return small_config(**{"max_steps": 12, **changes})


def saved_arrays(out):
    """Weights, optimizer moments and the carried state, as the checkpoint holds them."""
    checkpoint = modelfile.load_checkpoint(str(out) + ".ckpt")
    arrays = dict(checkpoint.model_tensors)
    arrays.update(checkpoint.optimizer_tensors)
    return arrays


def assert_close(ours, theirs, tol):
    assert sorted(ours) == sorted(theirs)
    for name, a in ours.items():
        b = theirs[name]
        assert type(a) is numpy.ndarray and a.dtype == b.dtype, name
        scale = max(float(numpy.abs(b).max()), 1e-30)
        err = float(numpy.abs(a.astype(numpy.float64) - b).max())
        assert err <= tol * scale, f"{name}: error {err:.3g} > {tol} x {scale:.3g}"


@pytest.mark.parametrize("device", ["reference", "cupy-on-numpy"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_on_another_backend_matches_the_cpu_run(corpus, tmp_path, device, cell):
    # Float32 weights through different kernels: rounding differs, a few steps stay close.
    runs, losses = {}, {"cpu": [], device: []}
    for where in ("cpu", device):
        out = tmp_path / f"{where}.safetensors"
        result = train([corpus], out, config(cell=cell, device=where), log=quiet,
                       on_step=lambda info, where=where: losses[where].append(info["loss"]))
        runs[where] = (result, saved_arrays(out))
    (cpu, cpu_arrays), (ours, our_arrays) = runs["cpu"], runs[device]
    # Off the CPU the loop hands on the loss as an array of the backend, unread.
    assert all(type(loss) is float for loss in losses["cpu"])
    assert all(type(loss) is not float and numpy.ndim(loss) == 0 for loss in losses[device])
    assert [float(v) for v in losses[device]] == pytest.approx(losses["cpu"], rel=1e-5)
    assert ours.record["steps"] == cpu.record["steps"] == 12
    assert_close(our_arrays, cpu_arrays, 1e-5)
    assert math.isclose(ours.best_valid["loss"], cpu.best_valid["loss"], rel_tol=1e-5)
    assert [p[2] for p in ours.record["train_curve"]] == pytest.approx(
        [p[2] for p in cpu.record["train_curve"]], rel=1e-4)


def test_the_cpu_run_is_the_plain_loop_bit_for_bit(corpus, tmp_path):
    """The default device runs what training always ran: the same steps by hand (model,
    batches, schedule, clipping, Adam) give the very same bits."""
    cfg = config(max_steps=20).resolved()
    out = tmp_path / "m.safetensors"
    result = train([corpus], out, cfg, log=quiet)
    tokenizer = result.model.tokenizer
    model = LanguageModel(tokenizer=tokenizer, seed=cfg.seed,
                          **cfg.model_config(tokenizer.vocab_size))
    model.train()
    optimizer = nn.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    paths = resolve_paths([corpus])
    batches = TokenStream(iter_token_ids(paths, tokenizer, split="train",
                                         valid_fraction=cfg.valid_fraction),
                          cfg.seq_len, cfg.batch_size)
    step, carried = 0, None
    while step < cfg.max_steps:
        for x, y in batches:
            if batches.batch_index == 1:
                carried = None
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step, step / cfg.max_steps)
            (loss, carried), backprop = model.begin_update_loss(x, y, carried)
            model.zero_grad()
            backprop()
            norm = nn.clip_grad_norm_(model.parameters(), cfg.clip)
            if math.isfinite(norm) and math.isfinite(loss):
                optimizer.step()
            step += 1
            if step == cfg.max_steps:
                break
    batches.close()
    saved = modelfile.load_checkpoint(str(out) + ".ckpt").model_tensors
    for name, array in model.state_dict().items():
        numpy.testing.assert_array_equal(saved[name], array, err_msg=name)


def test_device_side_clipping_and_masked_adam_are_the_host_ones_bit_for_bit():
    rng = numpy.random.default_rng(3)

    def params():
        made = [nn.Parameter(rng.normal(size=s).astype(numpy.float32)) for s in ((4, 3), (5,))]
        for p in made:
            p.grad[...] = rng.normal(size=p.shape) * 3
        return made

    host = params()
    rng = numpy.random.default_rng(3)
    device = params()
    for max_norm in (0.5, 1e6):         # clipped, and left alone
        norm = nn.clip_grad_norm_(host, max_norm)
        ours = nn.clip_grad_norm_(device, max_norm, as_array=True)
        assert isinstance(ours, numpy.ndarray) and ours.shape == () and float(ours) == norm
        for a, b in zip(host, device):
            numpy.testing.assert_array_equal(a.grad, b.grad)
    a_opt, b_opt = nn.Adam(host, lr=1e-2), nn.Adam(device, lr=1e-2, amsgrad=False)
    for _ in range(3):
        a_opt.step()
        b_opt.step(apply=numpy.asarray(True))
    for a, b in zip(host, device):
        numpy.testing.assert_array_equal(a.data, b.data)
    before = [p.data.copy() for p in device]
    moments = [b_opt.state[p]["exp_avg"].copy() for p in device]
    device[0].grad[0, 0] = numpy.nan
    ok = numpy.isfinite(total_grad_norm(device, as_array=True))
    b_opt.step(apply=ok)                # a non-finite batch changes nothing
    for p, old, m in zip(device, before, moments):
        numpy.testing.assert_array_equal(p.data, old)
        numpy.testing.assert_array_equal(b_opt.state[p]["exp_avg"], m)
    with pytest.raises(TypeError, match="apply"):
        nn.SGD(device, lr=0.1).step(apply=ok)


def test_the_loss_as_an_array_is_the_float_one():
    rng = numpy.random.default_rng(1)
    logits = rng.normal(size=(6, 5)).astype(numpy.float32)
    targets = numpy.array([0, 4, -100, 2, 2, 1])
    for reduction in ("mean", "sum"):
        loss, grad = nn.softmax_cross_entropy(logits, targets, reduction=reduction)
        ours, our_grad = nn.softmax_cross_entropy(logits, targets, reduction=reduction,
                                                  as_array=True)
        assert numpy.ndim(ours) == 0 and float(ours) == pytest.approx(loss, rel=1e-12)
        numpy.testing.assert_array_equal(grad, our_grad)
    with pytest.raises(ValueError, match="targets_n"):
        nn.softmax_cross_entropy(logits, [0, 5, 0, 0, 0, 0], as_array=True)


@pytest.mark.parametrize("device", ["reference", "cupy-on-numpy"])
def test_a_model_trained_on_one_backend_loads_and_runs_on_the_other(corpus, tmp_path, device):
    on_device = tmp_path / "device.safetensors"
    on_cpu = tmp_path / "cpu.safetensors"
    train([corpus], on_device, config(device=device), log=quiet)
    train([corpus], on_cpu, config(), log=quiet)
    ids = LanguageModel.load(on_cpu).encode("the cat sat on the log. " * 6)
    for path in (on_device, on_cpu):
        cpu_model = LanguageModel.load(path)
        assert cpu_model.device == "cpu" and cpu_model.ops is get_ops("cpu")
        moved = LanguageModel.load(path).to(device)
        assert moved.ops is get_ops(device)
        expected = evaluate(cpu_model, ids)["loss"]
        assert evaluate(moved, ids)["loss"] == pytest.approx(expected, rel=1e-5)
        # Generation steps on the device and draws on the host: the same text, same seed.
        assert moved.generate("the ", 20, seed=4) == cpu_model.generate("the ", 20, seed=4)
        back = moved.to("cpu").state_dict()
        for name, array in LanguageModel.load(path).state_dict().items():
            numpy.testing.assert_array_equal(back[name], array)


def test_eval_and_sample_take_a_device(corpus, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    train([corpus], out, config(), log=quiet)
    printed = {}
    for device in (None, "reference"):
        extra = [] if device is None else ["--device", device]
        assert main(["eval", str(out), str(corpus), "--json"] + extra) == 0
        assert main(["sample", str(out), "--length", "30", "--seed", "3"] + extra) == 0
        eval_line, sample = capsys.readouterr().out.split("\n", 1)
        printed[device] = (json.loads(eval_line), sample)
    assert printed["reference"][0]["loss"] == pytest.approx(printed[None][0]["loss"], rel=1e-5)
    assert printed["reference"][1] == printed[None][1]


def test_a_cpu_checkpoint_resumes_on_another_backend(corpus, tmp_path):
    out = tmp_path / "m.safetensors"
    whole = tmp_path / "whole.safetensors"
    train([corpus], whole, config(max_steps=16), log=quiet)
    stopped = train([corpus], out, config(max_steps=16), log=quiet,
                    on_step=lambda info: info["step"] == 8)       # as on Ctrl-C
    assert stopped.stopped == "interrupted"
    train([corpus], out, config(max_steps=16, device="reference"), resume=True, log=quiet)
    assert_close(saved_arrays(out), saved_arrays(whole), 1e-5)


def _gpu_error():
    try:
        get_ops("cupy")
    except BackendUnavailable as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_gpu_error() is None, reason="CuPy can use a CUDA device here")
def test_device_cuda_without_a_gpu_is_one_clear_error(corpus, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    status = main(["train", str(corpus), "--out", str(out), "--device", "cuda",
                   "--max-steps", "2", "--quiet", "--no-plot", "--no-ngram"])
    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("predtext train: error: backend 'cupy': CuPy")
    assert not out.exists() and not (tmp_path / "m.safetensors.ckpt").exists()
    with pytest.raises(BackendUnavailable, match="CuPy"):
        train([corpus], out, config(device="cuda"), log=quiet)
    with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda'"):
        train([corpus], out, config(device="tpu"), log=quiet)


# ---------------------------------------------------------------- under mpirun

WORKER = Path(__file__).with_name("mpi_worker.py")


def _mpirun():
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


@pytest.mark.skipif(_mpirun() is None or importlib.util.find_spec("mpi4py") is None,
                    reason="needs an MPI launcher (mpirun) and mpi4py: pip install 'predtext[mpi]'")
def test_two_ranks_on_another_backend_reduce_through_the_host_as_one_process_on_the_cpu(
        corpus, tmp_path):
    # Off the CPU backend the loop keeps the loss as an array and steps with the device-side
    # clipping and masked Adam; the ranks reduce through host memory, as on a GPU without a
    # CUDA-aware MPI (the reference backend's arrays are NumPy ones, so no copy is made).
    settings = dict(hidden_size=16, embed_size=8, seq_len=16, batch_size=4, max_steps=20,
                    progress=False, ngram=False, plot=False, eval_interval=1e9,
                    checkpoint_interval=1e9, dropout=0.0, lr=1e-2, warmup_steps=3)
    args = dict(files=[str(corpus)], out=str(tmp_path / "two.st"),
                config=dict(settings, device="reference"))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PREDTEXT_DATA_DIR=str(tmp_path / "data"),
               PREDTEXT_CONFIG=str(tmp_path / "config.toml"),
               PYTHONPATH=os.pathsep.join([str(Path(predtext.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([_mpirun(), "-n", "2", "--oversubscribe", sys.executable, str(WORKER),
                          json.dumps(args)], capture_output=True, text=True, timeout=240,
                         env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert sorted(json.loads(line)["rank"] for line in run.stdout.splitlines()) == [0, 1]
    train([corpus], tmp_path / "one.st", TrainConfig(**settings), log=quiet)
    assert_close(saved_arrays(tmp_path / "two.st"), saved_arrays(tmp_path / "one.st"), 1e-5)
