"""Data-parallel training: the share of a batch each rank takes, and real runs under mpirun
(parity with one process, resuming on another world size, a failing rank). The mpirun tests
skip without an MPI launcher or mpi4py."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import netns
import numpy
import pytest

import predtext
from predtext.lm import modelfile
from predtext.lm.corpus import TokenStream
from predtext.lm.distributed import Solo, shares, world
from predtext.lm.train import TrainConfig, train

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "legacy_corpus.txt"
WORKER = Path(__file__).parent / "mpi_worker.py"


def test_the_batch_is_shared_in_contiguous_ranges_the_first_ranks_taking_the_rest():
    assert shares(4, 2) == [range(0, 2), range(2, 4)]
    assert shares(5, 2) == [range(0, 3), range(3, 5)]
    assert shares(7, 3) == [range(0, 3), range(3, 5), range(5, 7)]
    assert shares(3, 3) == [range(0, 1), range(1, 2), range(2, 3)]
    with pytest.raises(ValueError, match="batch_size.*at least 4"):
        shares(3, 4)


def test_a_share_of_the_streams_reads_those_columns_of_the_whole_batch():
    ids = numpy.arange(1000, dtype=numpy.int32)
    whole = TokenStream(ids, 7, 5)
    part = TokenStream(ids, 7, 5, streams=range(3, 5))
    assert len(part) == len(whole) and part.n_tokens == whole.n_tokens
    for (x, y), (px, py) in zip(list(whole), list(part), strict=True):
        numpy.testing.assert_array_equal(x[:, 3:5], px)
        numpy.testing.assert_array_equal(y[:, 3:5], py)
    assert part.state_dict() == whole.state_dict()
    with pytest.raises(ValueError, match="streams"):
        TokenStream(ids, 7, 5, streams=range(4, 6))


def test_one_process_without_a_launcher_is_solo(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(world(), Solo)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert isinstance(world(), Solo)     # mpirun -n 1 trains exactly as one process


# ---------------------------------------------------------------- under mpirun


def _mpirun():
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


needs_mpi = pytest.mark.skipif(
    _mpirun() is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs an MPI launcher (mpirun) and mpi4py: pip install 'predtext[mpi]'")


def config(**changes):
    settings = dict(hidden_size=16, embed_size=8, seq_len=16, batch_size=4, max_steps=50,
                    progress=False, ngram=False, plot=False, eval_interval=1e9,
                    checkpoint_interval=1e9, dropout=0.0, lr=1e-2, warmup_steps=3)
    settings.update(changes)
    return settings


def mpirun(n, tmp_path, timeout=240, hosts=None, **args):
    """``mpirun -n N`` of tests/mpi_worker.py on this machine, or over ``hosts`` (a
    ``netns.NamespacePair``), one rank in each."""
    args.setdefault("files", [str(CORPUS)])
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PREDTEXT_DATA_DIR=str(tmp_path / "data"),
               PREDTEXT_CONFIG=str(tmp_path / "config.toml"),
               PYTHONPATH=os.pathsep.join([str(Path(predtext.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    job = [sys.executable, str(WORKER), json.dumps(args)]
    command = [_mpirun(), "-n", str(n), "--oversubscribe", *job] if hosts is None \
        else hosts.mpirun(_mpirun(), n, *job)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path):
    return modelfile.load_checkpoint(path).model_tensors


def assert_same_model(expected, got, rtol=1e-6):
    for name, array in expected.items():
        scale = float(numpy.abs(array).max())
        error = float(numpy.abs(got[name] - array).max())
        assert error <= rtol * scale, f"{name}: max difference {error:g}, largest value {scale:g}"


def quiet(line):
    pass


@needs_mpi
@pytest.mark.parametrize("batch_size", [4, 5])     # 5: the ranks take 3 and 2 streams
def test_two_ranks_train_the_model_one_process_trains(tmp_path, batch_size):
    run = mpirun(2, tmp_path, out=str(tmp_path / "two.st"), config=config(batch_size=batch_size))
    assert run.returncode == 0, run.stderr
    assert sorted(json.loads(line)["rank"] for line in run.stdout.splitlines()) == [0, 1]
    train([CORPUS], tmp_path / "one.st", TrainConfig(**config(batch_size=batch_size)), log=quiet)
    assert_same_model(weights(tmp_path / "one.st.ckpt"), weights(tmp_path / "two.st.ckpt"))
    assert modelfile.load_checkpoint(tmp_path / "two.st.ckpt").state["run"]["step"] == 50
    assert (tmp_path / "two.st").exists()


@needs_mpi
def test_a_run_of_two_ranks_resumes_on_one(tmp_path):
    run = mpirun(2, tmp_path, out=str(tmp_path / "m.st"), config=config(max_steps=40), stop_at=20)
    assert run.returncode == 0, run.stderr
    assert modelfile.load_checkpoint(tmp_path / "m.st.ckpt").state["run"]["step"] == 20
    resumed = train([CORPUS], tmp_path / "m.st", TrainConfig(**config(max_steps=40)), resume=True,
                    log=quiet)
    assert resumed.record["steps"] == 40
    train([CORPUS], tmp_path / "one.st", TrainConfig(**config(max_steps=40)), log=quiet)
    assert_same_model(weights(tmp_path / "one.st.ckpt"), weights(tmp_path / "m.st.ckpt"))


@needs_mpi
def test_a_failing_rank_ends_the_job_naming_itself_and_the_checkpoint_survives(tmp_path):
    out = str(tmp_path / "m.st")
    first = mpirun(2, tmp_path, out=out, config=config(max_steps=40), stop_at=10)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "m.st.ckpt").read_bytes()
    failed = mpirun(2, tmp_path, out=out, config=config(max_steps=40), resume=True,
                    fail_rank=1, fail_at=15)
    assert failed.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: injected fault at step 15" in failed.stderr
    assert (tmp_path / "m.st.ckpt").read_bytes() == before
    missing = mpirun(2, tmp_path, out=out, config=config(max_steps=40), resume=True,
                     missing_on_rank=1)
    assert missing.returncode != 0
    assert "rank 1 of 2 failed" in missing.stderr and "no-such-file" in missing.stderr
    resumed = train([CORPUS], out, TrainConfig(**config(max_steps=12)), resume=True, log=quiet)
    assert resumed.record["steps"] == 12


@needs_mpi
def test_predtext_train_under_mpirun_writes_one_model_and_prints_once(tmp_path):
    out = tmp_path / "cli.st"
    code = "import sys; from predtext.cli import main; sys.exit(main())"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PREDTEXT_DATA_DIR=str(tmp_path / "data"),
               PREDTEXT_CONFIG=str(tmp_path / "config.toml"),
               PYTHONPATH=os.pathsep.join([str(Path(predtext.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([_mpirun(), "-n", "2", "--oversubscribe", sys.executable, "-c", code,
                          "train", str(CORPUS), "--out", str(out), "--max-steps", "10",
                          "--hidden", "16", "--batch-size", "3", "--no-plot", "--quiet"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("model written to") == 1
    assert modelfile.read_meta(out)["kind"] == "model"


@needs_mpi
def test_ctrl_c_on_mpirun_writes_one_checkpoint(tmp_path):
    import signal

    out = tmp_path / "m.st"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PREDTEXT_DATA_DIR=str(tmp_path / "data"),
               PYTHONPATH=os.pathsep.join([str(Path(predtext.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    args = dict(files=[str(CORPUS)], out=str(out), config=config(max_steps=10**7), announce=True)
    job = subprocess.Popen([_mpirun(), "-n", "2", "--oversubscribe", sys.executable, str(WORKER),
                            json.dumps(args)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           text=True, env=env)
    try:
        for line in job.stderr:              # the loop is running
            if "first step trained" in line:
                break
        job.send_signal(signal.SIGINT)
        job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    saved = modelfile.load_checkpoint(tmp_path / "m.st.ckpt")
    assert saved.state["stopped"] == "interrupted" and saved.state["run"]["step"] >= 1


def start(tmp_path, **args):
    """mpirun -n 2 of the worker in the background; stderr is a pipe."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PREDTEXT_DATA_DIR=str(tmp_path / "data"),
               PREDTEXT_CONFIG=str(tmp_path / "config.toml"),
               PYTHONPATH=os.pathsep.join([str(Path(predtext.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    args.setdefault("files", [str(CORPUS)])
    return subprocess.Popen([_mpirun(), "-n", "2", "--oversubscribe", sys.executable, str(WORKER),
                             json.dumps(args)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env)


@needs_mpi
def test_a_killed_rank_ends_the_job_naming_it_and_the_checkpoint_survives(tmp_path):
    import signal

    out = tmp_path / "m.st"
    first = mpirun(2, tmp_path, out=str(out), config=config(max_steps=40), stop_at=10)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "m.st.ckpt").read_bytes()
    job = start(tmp_path, out=str(out), config=config(max_steps=10**7), resume=True, announce=True)
    watchdog = threading.Timer(180, job.kill)     # whatever happens, the test ends
    watchdog.start()
    try:
        for line in job.stderr:              # rank 1 is in the loop
            if line.startswith("first step trained by rank 1 pid "):
                os.kill(int(line.split()[-1]), signal.SIGKILL)
                break
        # The guard against a hang: the job must end by itself, not wait on the dead rank.
        rest = job.communicate(timeout=60)[1]
    finally:
        watchdog.cancel()
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "rank 1" in rest and "signal 9" in rest, rest
    assert (tmp_path / "m.st.ckpt").read_bytes() == before
    resumed = train([CORPUS], out, TrainConfig(**config(max_steps=12)), resume=True, log=quiet)
    assert resumed.record["steps"] == 12


@needs_mpi
def test_a_nan_loss_on_one_rank_ends_the_job_naming_the_rank_and_the_cause(tmp_path):
    out = str(tmp_path / "m.st")
    first = mpirun(2, tmp_path, out=out, config=config(max_steps=40), stop_at=10)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "m.st.ckpt").read_bytes()
    failed = mpirun(2, tmp_path, out=out, config=config(max_steps=40), resume=True,
                    nan_rank=1, nan_at=3)
    assert failed.returncode != 0
    assert "rank 1 of 2 failed: FloatingPointError: non-finite loss (nan)" in failed.stderr
    assert "rank 0 of 2 failed" not in failed.stderr
    assert (tmp_path / "m.st.ckpt").read_bytes() == before
    resumed = train([CORPUS], out, TrainConfig(**config(max_steps=12)), resume=True, log=quiet)
    assert resumed.record["steps"] == 12


# ---------------------------------------------------------------- across two hosts


@pytest.fixture
def two_hosts(tmp_path):
    """Two network namespaces joined by a veth pair (tests/netns.py), deleted afterwards
    whatever the test did."""
    try:
        pair = netns.NamespacePair.create(tmp_path)
    except netns.Unavailable as reason:
        pytest.skip(f"two hosts need network namespaces: {reason}")
    try:
        yield pair
    finally:
        pair.close()


@needs_mpi
def test_two_ranks_on_two_hosts_train_the_model_one_process_trains(tmp_path, two_hosts):
    before = two_hosts.received_bytes()
    run = mpirun(2, tmp_path, hosts=two_hosts, out=str(tmp_path / "two.st"), config=config())
    assert run.returncode == 0, run.stderr
    ranks = sorted((row["rank"], row["host"]) for row in map(json.loads, run.stdout.splitlines()))
    assert ranks == [(0, two_hosts.names[0]), (1, two_hosts.names[1])]
    train([CORPUS], tmp_path / "one.st", TrainConfig(**config()), log=quiet)
    one, two = weights(tmp_path / "one.st.ckpt"), weights(tmp_path / "two.st.ckpt")
    assert_same_model(one, two)
    # The gradients went over the veth: each of the 50 steps' Allreduces brings the other
    # rank's half of the buffer at least (4 bytes a parameter at the least).
    n_parameters = sum(array.size for array in one.values())
    assert two_hosts.received_bytes() - before >= 50 * 4 * n_parameters // 2
