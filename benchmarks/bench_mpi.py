"""Data-parallel training: per step, the gradient Allreduce against the compute, and the
scaling it projects onto real networks.

    python benchmarks/bench_mpi.py [--steps 3] [--reps 10] [--json]

Two models: the default character model (2x256 GRU, 65 characters, seq_len 128, a per-rank
batch of 32) and a 2x1024 word model (LSTM, 20,000 words, tied 1024-wide embedding,
seq_len 48, a per-rank batch of 64). For each:

* compute: one training step (forward, backward, clipping, Adam) in this process, median
  of ``--steps`` after a warm-up step;
* allreduce: the step's one fused Allreduce (``MPIWorld.reduce_gradients``: pack the
  gradients into the float32 buffer, check them, Allreduce, unpack), median of ``--reps``,
  measured by running this script again under ``mpirun -n 2`` on this machine (loopback:
  shared memory), and, as root, across two network namespaces joined by a veth pair, one
  rank in each (TCP over the veth: tests/netns.py, skipped where namespaces cannot be
  made); the float64 buffer the loop sent before is measured beside it;
* the projection: ring Allreduce over N machines moves 2 (N-1)/N of the buffer in and out
  of each machine and takes 2 (N-1) latency-bound hops:
  ``t_comm(N) = 2 (N-1)/N * bytes / bandwidth + 2 (N-1) * latency + t_pack``, with
  ``latency`` = 20 us a hop, ``bytes`` the float32 buffer's and ``t_pack`` the measured
  time to copy the gradients into the buffer, check them and copy them back (in this
  process). Efficiency is
  ``t_compute / (t_compute + t_comm)``: each machine keeps its per-rank batch (weak
  scaling), and the Allreduce is not overlapped with the backward pass (the loop runs it
  after the whole backward), so the figure is a floor. Assumed: the full link bandwidth
  is reachable (10 Gb/s = 1.25 GB/s, 100 Gb/s = 12.5 GB/s), one rank per machine, and
  compute per step is that of this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))     # netns: the two-namespace "hosts"

import netns  # noqa: E402

from predtext.lm.distributed import MPIWorld, launched_size, world  # noqa: E402
from predtext.lm.model import LanguageModel  # noqa: E402
from predtext.nn import Adam, clip_grad_norm_  # noqa: E402

MODELS = {
    "char 2x256 GRU": dict(config=dict(vocab_size=65, cell="gru", num_layers=2, hidden_size=256,
                                       embed_size=64, dropout=0.1, tie_weights=False),
                           seq_len=128, batch=32),
    "word 2x1024 LSTM": dict(config=dict(vocab_size=20000, cell="lstm", num_layers=2,
                                         hidden_size=1024, embed_size=1024, dropout=0.1,
                                         tie_weights=True),
                             seq_len=48, batch=64),
}
NETWORKS = {"10 Gb/s": 1.25e9, "100 Gb/s": 12.5e9}
MACHINES = (2, 4, 8, 16, 64)
LATENCY = 20e-6
ASSUMPTIONS = ("ring Allreduce: t_comm(N) = 2 (N-1)/N * bytes / bandwidth + 2 (N-1) * 20 us "
               "+ t_pack; efficiency = t_compute / (t_compute + t_comm); weak scaling (each "
               "machine keeps its per-rank batch), one rank per machine, the full link "
               "bandwidth reachable, no overlap with the backward pass, compute as measured "
               "on this machine")


def build(spec):
    return LanguageModel(seed=0, **spec["config"])


def compute_seconds(spec, steps):
    model = build(spec)
    model.train()
    optimizer = Adam(model.parameters(), lr=1e-3)
    rng = numpy.random.default_rng(0)
    vocab, T, B = spec["config"]["vocab_size"], spec["seq_len"], spec["batch"]
    times, state = [], None
    for step in range(steps + 1):
        x = rng.integers(1, vocab, (T, B)).astype(numpy.int64)
        y = rng.integers(1, vocab, (T, B)).astype(numpy.int64)
        began = time.perf_counter()
        (loss, state), backprop = model.begin_update_loss(x, y, state)
        model.zero_grad()
        backprop()
        clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step:            # the first step allocates the buffers
            times.append(time.perf_counter() - began)
    return statistics.median(times), model.num_parameters()


def pack_seconds(spec, reps):
    """The work around the Allreduce: gradients into the flat buffer, the finiteness
    check (one dot product), and back."""
    params = list(build(spec).parameters())
    buffer = numpy.empty(sum(p.grad.size for p in params), dtype=MPIWorld.buffer_dtype)
    times = []
    for _ in range(reps + 1):
        began = time.perf_counter()
        at = 0
        for p in params:
            buffer[at:at + p.grad.size] = p.grad.ravel()
            at += p.grad.size
        numpy.dot(buffer, buffer)
        at = 0
        for p in params:
            p.grad[...] = buffer[at:at + p.grad.size].reshape(p.grad.shape)
            at += p.grad.size
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def allreduce_seconds(reps):
    """Under mpirun: the median time of the fused gradient reduction of each model."""
    group = world()
    results = {}
    for name, spec in MODELS.items():
        model = build(spec)
        for p in model.parameters():
            p.grad[...] = 1.0
        for dtype in ("float32", "float64"):
            group.buffer_dtype, group._buffer = numpy.dtype(dtype), None
            times = []
            for _ in range(reps + 1):
                group.barrier()
                began = time.perf_counter()
                group.reduce_gradients(model.parameters(), 1.0, group.size)
                times.append(time.perf_counter() - began)
            results[f"{name} {dtype}"] = statistics.median(times[1:])
    return results


def run_under_mpirun(reps, hosts=None):
    """The Allreduce times of ``mpirun -n 2``: on this machine, or one rank on each of
    ``hosts`` (a ``netns.NamespacePair``)."""
    mpirun = Path(sys.executable).parent / "mpirun"
    mpirun = str(mpirun) if mpirun.exists() else shutil.which("mpirun")
    if mpirun is None:
        return None
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    job = [sys.executable, __file__, "--allreduce-only", "--reps", str(reps)]
    command = [mpirun, "-n", "2", "--oversubscribe", *job] if hosts is None \
        else hosts.mpirun(mpirun, 2, *job)
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_across_namespaces(reps):
    """``run_under_mpirun`` with one rank in each of two network namespaces (None, and the
    reason on stderr, where they cannot be made)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-mpi-") as workdir:
        try:
            pair = netns.NamespacePair.create(workdir)
        except netns.Unavailable as reason:
            print(f"bench_mpi: no Allreduce across namespaces: {reason}", file=sys.stderr)
            return None
        try:
            return run_under_mpirun(reps, hosts=pair)
        finally:
            pair.close()


def project(compute, n_bytes, pack):
    table = {}
    for network, bandwidth in NETWORKS.items():
        row = {}
        for n in MACHINES:
            comm = 2 * (n - 1) / n * n_bytes / bandwidth + 2 * (n - 1) * LATENCY + pack
            row[n] = compute / (compute + comm)
        table[network] = row
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--allreduce-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce_only:
        results = allreduce_seconds(args.reps)
        if world().is_root:
            print(json.dumps(results))
        return 0
    if launched_size() > 1:
        parser.error("run it without mpirun: it starts mpirun -n 2 itself for the Allreduce")

    loopback = run_under_mpirun(args.reps)
    across = run_across_namespaces(args.reps)
    report = {"cpu": _cpu(), "assumptions": ASSUMPTIONS, "models": {}}
    for name, spec in MODELS.items():
        compute, n_params = compute_seconds(spec, args.steps)
        n_bytes = numpy.dtype(MPIWorld.buffer_dtype).itemsize * n_params   # the fused buffer
        pack = pack_seconds(spec, args.reps)
        report["models"][name] = {
            "parameters": n_params, "buffer_bytes": n_bytes, "per_rank_batch": spec["batch"],
            "compute_s": compute, "pack_s": pack,
            "allreduce_s": {where: None if found is None else
                            {dtype: found[f"{name} {dtype}"] for dtype in ("float32", "float64")}
                            for where, found in (("loopback", loopback),
                                                 ("namespaces", across))},
            "efficiency": project(compute, n_bytes, pack)}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CPU: {report['cpu']}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    for name, row in report["models"].items():
        print(f"{name}: {row['parameters']:,} parameters, a {row['buffer_bytes'] / 1e6:.1f} MB "
              f"float32 buffer; per step (per-rank batch {row['per_rank_batch']}): compute "
              f"{row['compute_s'] * 1e3:.0f} ms, packing and check {row['pack_s'] * 1e3:.1f} ms")
        for where, times in row["allreduce_s"].items():
            print(f"    Allreduce, 2 ranks, {where}: " + (
                "not measured" if times is None else
                ", ".join(f"{dtype} {t * 1e3:.1f} ms" for dtype, t in times.items())))
        for network, efficiencies in row["efficiency"].items():
            cells = "  ".join(f"{n}: {e * 100:.1f}%" for n, e in efficiencies.items())
            print(f"    projected efficiency on {network} (machines: efficiency): {cells}")
    print("assumptions: " + ASSUMPTIONS)
    return 0


def _cpu():
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
