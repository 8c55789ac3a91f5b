"""The CuPy backend beside PyTorch's cuDNN on the same GPU, measured in one run.

Prints two tables:

1. LSTM and GRU forward (inference) and forward+backward tokens/s for predtext's CuPy
   backend and torch.nn (cuDNN) at (B, T, I, H, layers) = (32, 64, 128, 256, 2),
   (64, 100, 512, 512, 1) and (256, 128, 1024, 1024, 2), float32, timed alternately (so
   machine noise hits both), medians of --repeats runs, and their ratio.
2. With --char: seconds for the default character model (2 x 256 GRU, embedding 64,
   batch 32 x 128, Adam 3e-3, clip 5) to reach validation loss 1.50 nats/char on
   tinyshakespeare (last 10% held out), on the GPU and, for --cpu-budget seconds, on the CPU.

Without CuPy or a CUDA device it prints why and exits with status 0 (nothing to measure).

    python benchmarks/bench_gpu.py [--repeats 7] [--quick] [--char] [--cpu-budget 600]
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from predtext import nn
from predtext.backend import BackendUnavailable, get_ops

SHAPES = [(32, 64, 128, 256, 2), (64, 100, 512, 512, 1), (256, 128, 1024, 1024, 2)]
CORPORA = Path(os.environ.get("PREDTEXT_CORPORA", Path(__file__).resolve().parents[2] /
                              "shared" / "corpora"))
CORPUS = CORPORA / "tinyshakespeare.txt"


def gpu_or_exit():
    try:
        return get_ops("cupy")
    except BackendUnavailable as exc:
        print(f"bench_gpu: skipped, {exc}")
        sys.exit(0)


def alternate(fns, repeats, sync):
    """Time functions round-robin (after a warm-up each); each one's median seconds."""
    for fn in fns:
        fn()
    sync()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def speed_table(gpu, repeats, shapes):
    import cupy
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and not torch.cuda.is_available():
        torch = None
    sync = cupy.cuda.Device().synchronize
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy "
          f"{cupy.__version__}, torch {torch.__version__ if torch else 'absent'}")
    print(f"{'cell':5} {'B,T,I,H,L':>22} {'pass':>9} {'predtext tok/s':>15} "
          f"{'cuDNN tok/s':>13} {'ratio':>6}")
    for name in ("LSTM", "GRU"):
        for shape in shapes:
            times = shape_times(gpu, torch, name, shape, repeats, sync)
            B, T = shape[:2]
            for k, label in enumerate(("fwd", "fwd+bwd")):
                ours_rate = B * T / times[k]
                theirs_rate = B * T / times[k + 2] if torch is not None else math.nan
                print(f"{name:5} {shape!s:>22} {label:>9} {ours_rate:15,.0f} "
                      f"{theirs_rate:13,.0f} {ours_rate / theirs_rate:6.2f}")


def shape_times(gpu, torch, name, shape, repeats, sync):
    """Median seconds of predtext's forward and forward+backward, then torch's."""
    B, T, I, H, L = shape
    rng = np.random.default_rng(0)
    ours = getattr(nn, name)(I, H, L, rng=rng).to(gpu)
    x = gpu.asarray(rng.normal(size=(T, B, I)).astype(np.float32))
    d = gpu.asarray(rng.normal(size=(T, B, H)).astype(np.float32))

    def our_forward():
        ours.eval()
        ours(x)

    def our_train():
        ours.train()
        (_, _), back = ours.begin_update(x)
        back(d)

    fns = [our_forward, our_train]
    if torch is not None:
        theirs = getattr(torch.nn, name)(I, H, L).cuda()
        tx = torch.randn(T, B, I, device="cuda", requires_grad=True)
        td = torch.randn(T, B, H, device="cuda")

        def torch_forward():
            with torch.no_grad():
                theirs(tx)

        def torch_train():
            out, _ = theirs(tx)
            out.backward(td)

        fns += [torch_forward, torch_train]

    def both_sync():
        sync()
        if torch is not None:
            torch.cuda.synchronize()

    return alternate(fns, repeats, both_sync)


def time_to_loss(device, target, budget, seed=0, check_every=50, valid_tokens=200_000):
    """Seconds of training until validation loss <= target (None if not within budget)."""
    from predtext.lm.model import LanguageModel
    from predtext.lm.tokenizers import CharTokenizer

    text = CORPUS.read_text(encoding="utf-8")
    split = int(len(text) * 0.9)
    tokenizer = CharTokenizer.from_text(text[:split])
    train = np.asarray(tokenizer.encode(text[:split]), dtype=np.int64)
    valid = np.asarray(tokenizer.encode(text[split:]), dtype=np.int64)[:valid_tokens]
    model = LanguageModel(tokenizer=tokenizer, cell="gru", num_layers=2, hidden_size=256,
                          embed_size=64, dropout=0.1, seed=seed).to(device)
    optimizer = nn.Adam(model.parameters(), lr=3e-3)
    B, T = 32, 128
    rng = np.random.default_rng(seed)
    clock, step = 0.0, 0
    while clock < budget:
        t0 = time.perf_counter()
        for _ in range(check_every):
            starts = rng.integers(0, len(train) - T - 1, size=B)
            ids = np.stack([train[s:s + T] for s in starts], axis=1)
            targets = np.stack([train[s + 1:s + T + 1] for s in starts], axis=1)
            model.train()
            optimizer.zero_grad()
            (loss, _), back = model.begin_update_loss(ids, targets)
            back()
            nn.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
        clock += time.perf_counter() - t0          # validation is off the clock
        loss = validation_loss(model, valid, T)
        print(f"  {device}: step {step}, {clock:7.1f} s, validation loss {loss:.3f}")
        if loss <= target:
            return clock
    return None


def validation_loss(model, valid, T, B=64):
    model.eval()
    n = (len(valid) - 1) // (T * B) * (T * B)
    ids = valid[:n].reshape(B, -1).T
    targets = valid[1:n + 1].reshape(B, -1).T
    total, count = 0.0, 0
    for t in range(0, ids.shape[0], T):
        (loss, _), _ = model.begin_update_loss(ids[t:t + T], targets[t:t + T])
        total += loss * ids[t:t + T].size
        count += ids[t:t + T].size
    return total / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the two smaller shapes, 3 runs")
    parser.add_argument("--char", action="store_true",
                        help="also time the character model to validation loss 1.50")
    parser.add_argument("--budget", type=float, default=600.0, help="GPU training budget, s")
    parser.add_argument("--cpu-budget", type=float, default=0.0,
                        help="CPU training budget, s (0: skip the CPU run)")
    args = parser.parse_args(argv)
    gpu = gpu_or_exit()
    shapes = SHAPES[:2] if args.quick else SHAPES
    speed_table(gpu, 3 if args.quick else args.repeats, shapes)
    if args.char:
        for device, budget in (("cuda", args.budget), ("cpu", args.cpu_budget)):
            if budget > 0:
                seconds = time_to_loss(device, 1.50, budget)
                reached = (f"not reached in {budget:.0f} s" if seconds is None
                           else f"{seconds:.1f} s")
                print(f"char model to 1.50 on {device}: {reached}")


if __name__ == "__main__":
    main()
