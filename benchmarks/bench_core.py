"""Speed of the compiled core beside PyTorch's CPU kernels, measured in one run.

Prints one table: for each cell and shape, forward (inference) and forward+backward
tokens/s and GFLOP/s for predtext and torch with the same thread count, measured
alternately (so machine noise hits both), their ratio, the machine's sgemm rate measured
in the same run, single-step latency of a 2-layer LSTM beside torch's fastest way, and
the latency of a whole character model's step (what the engine makes per keystroke).

The machine is named first: CPU model, SIMD level, the BLAS's kernel target (threadpoolctl)
and the memory bandwidth measured in the same run (a copy of 256 MB arrays, bytes read plus
written per second).  Each model step row gives the weight bytes it reads per second as a
share of that bandwidth, and whether the weights fit in the last-level cache (then a step
should take less than one pass over them from memory, which the row also gives).  The
small-batch products (smallgemm.c) are timed beside OpenBLAS's and BLIS's (the ``blis``
package, when installed) at the model steps' shapes.

FLOPs count only the matrix products: forward 2*T*B*G*H*(I+H) per layer, backward twice
that (input, state and weight gradients).  Medians of --repeats runs.

    python benchmarks/bench_core.py [--repeats 7] [--threads N] [--quick]
"""

import argparse
import functools
import platform
import statistics
import time

import numpy as np

from predtext import _core
from predtext.lm.quantize import quantize_rows

SHAPES = [(32, 64, 128, 256, 2), (64, 100, 512, 512, 1)]  # B, T, I, H, layers
CELLS = [("LSTM", "lstm"), ("GRU", "gru"), ("RNN", "rnn_tanh")]


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternate(fns, repeats, best=False):
    """Time several functions round-robin and return each one's median (with ``best``:
    (median, fastest), the fastest being the figure a busy machine disturbs least)."""
    for fn in fns:
        fn()  # warm-up: page in weights, start thread pools
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    if best:
        return [(statistics.median(s), min(s)) for s in samples]
    return [statistics.median(s) for s in samples]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Processor")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_level():
    """The widest vector level NumPy's CPU dispatch found: what the core's clones pick from."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return "unknown"
    if features.get("AVX512_SKX") or features.get("AVX512F"):
        return "AVX-512"
    if features.get("AVX2") and features.get("FMA3"):
        return "AVX2"
    if features.get("ASIMD") or features.get("NEON"):
        return "NEON"
    return "baseline"


def blas_targets():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    import scipy.linalg  # noqa: F401  (loads the BLAS the core calls)

    return ", ".join(sorted({f"{i.get('internal_api')} {i.get('architecture', '?')}"
                             for i in threadpool_info() if i.get("user_api") == "blas"}))


def last_level_cache():
    """Bytes of the last-level cache (Linux sysfs), or None."""
    import glob

    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        unit = {"K": 1024, "M": 1024**2}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * unit)
    return max(sizes) if sizes else None


def memory_bandwidth(repeats, megabytes=256):
    """Bytes read plus written per second by a copy of two large arrays (best of repeats)."""
    n = megabytes * 2**20 // 4
    src, dst = np.ones(n, np.float32), np.zeros(n, np.float32)
    np.copyto(dst, src)
    best = min(_timed(np.copyto, dst, src) for _ in range(max(repeats, 3)))
    return 2 * src.nbytes / best


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def sgemm_rate(repeats):
    """GFLOP/s of the BLAS the core calls (SciPy's) and of NumPy's, on a large sgemm."""
    from scipy.linalg import blas

    n = 2048
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    flops = 2 * n**3
    scipy_t = alternate([lambda: blas.sgemm(1.0, a, b)], repeats)[0]
    numpy_t = alternate([lambda: a @ b], repeats)[0]
    return flops / scipy_t / 1e9, flops / numpy_t / 1e9


class CoreStack:
    """A stack of layers run directly on the core (the figure the nn layer must keep)."""

    def __init__(self, cell, I, H, layers, rng):
        G = _core.gate_count(cell)
        self.cell = cell
        self.params = []
        for k in range(layers):
            fan = I if k == 0 else H
            s = 1 / np.sqrt(H)
            p = [rng.uniform(-s, s, shape).astype(np.float32)
                 for shape in [(G * H, fan), (G * H, H), (G * H,), (G * H,)]]
            self.params.append(p)
        self.grads = [[np.zeros_like(a) for a in p] for p in self.params]

    def forward(self, x, training=False):
        caches = []
        for p in self.params:
            x, _, _, cache = _core.sequence_forward(self.cell, x, *p, training=training)
            caches.append(cache)
        return x, caches

    def forward_backward(self, x):
        out, caches = self.forward(x, training=True)
        d = np.ones_like(out)
        for cache, g in zip(reversed(caches), reversed(self.grads)):
            d, _, _ = _core.sequence_backward(cache, d, grad_w_ih=g[0], grad_w_hh=g[1],
                                              grad_b_ih=g[2], grad_b_hh=g[3])
        return d


def torch_stack(torch, name, I, H, layers):
    module = getattr(torch.nn, name)(I, H, num_layers=layers)
    return module.float()


def nn_stack(name, I, H, layers):
    """predtext.nn's layer, when it is there (it must keep the core's speed)."""
    try:
        from predtext import nn
    except ImportError:
        return None
    cls = getattr(nn, name, None)
    return cls(I, H, num_layers=layers) if cls is not None else None


def _layer_fb(layer, x):
    (out, _), backprop = layer.begin_update(x)
    backprop(np.ones_like(out))


def _torch_fwd(torch, tm, xt):
    with torch.no_grad():
        tm(xt)


def _torch_fb(torch, tm, xg):
    out, _ = tm(xg)
    out.backward(torch.ones_like(out))


def _rate_row(rows, times, name, shape, tokens, what, ours_key, theirs_key, flops):
    """Append one row: tokens/s and GFLOP/s of ours, of theirs, and theirs/ours time."""
    t_ours = times[ours_key]
    t_theirs = times.get(theirs_key)
    rows.append([name, shape, what, tokens / t_ours, flops / t_ours / 1e9,
                 None if t_theirs is None else tokens / t_theirs,
                 None if t_theirs is None else flops / t_theirs / 1e9,
                 None if t_theirs is None else t_theirs / t_ours])


def bench_sequences(torch, repeats, quick):
    rows = []
    shapes = SHAPES[:1] if quick else SHAPES
    for name, cell in CELLS:
        for B, T, I, H, layers in shapes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((T, B, I)).astype(np.float32)
            G = _core.gate_count(cell)
            flops_fwd = sum(2 * T * B * G * H * ((I if k == 0 else H) + H)
                            for k in range(layers))
            ours = CoreStack(cell, I, H, layers, rng)
            # Each timed function gets this shape's objects bound now, not looked up
            # in the loop's variables when it runs.
            fns = {"core fwd": functools.partial(ours.forward, x),
                   "core fwd+bwd": functools.partial(ours.forward_backward, x)}
            layer = nn_stack(name, I, H, layers)
            if layer is not None:
                fns["nn fwd+bwd"] = functools.partial(_layer_fb, layer, x)
            if torch is not None:
                tm = torch_stack(torch, name, I, H, layers)
                xt = torch.from_numpy(x)
                xg = xt.clone().requires_grad_(True)
                fns["torch fwd"] = functools.partial(_torch_fwd, torch, tm, xt)
                fns["torch fwd+bwd"] = functools.partial(_torch_fb, torch, tm, xg)
            times = dict(zip(fns, alternate(list(fns.values()), repeats)))
            shape = f"B{B} T{T} I{I} H{H} L{layers}"
            row = functools.partial(_rate_row, rows, times, name, shape, T * B)
            row("fwd", "core fwd", "torch fwd", flops_fwd)
            row("fwd+bwd", "core fwd+bwd", "torch fwd+bwd", 3 * flops_fwd)
            if "nn fwd+bwd" in times:
                row("nn layer fwd+bwd", "nn fwd+bwd", "torch fwd+bwd", 3 * flops_fwd)
                rows[-1].append(times["core fwd+bwd"] / times["nn fwd+bwd"])
    return rows


def bench_step(torch, repeats):
    """2-layer LSTM, B=1, I=64, H=512: one token through both layers."""
    B, I, H = 1, 64, 512
    rng = np.random.default_rng(0)
    s = 1 / np.sqrt(H)
    params = [[rng.uniform(-s, s, shape).astype(np.float32)
               for shape in [(4 * H, fan), (4 * H, H), (4 * H,), (4 * H,)]] for fan in (I, H)]
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = [np.zeros((B, H), np.float32) for _ in range(2)]
    c = [np.zeros((B, H), np.float32) for _ in range(2)]
    work = np.empty(_core.step_workspace_shape("lstm", B, H), np.float32)

    def ours():
        inp = x
        for k in range(2):
            _core.cell_step("lstm", inp, h[k], c[k], *params[k], h[k], c[k], work)
            inp = h[k]

    fns = [lambda: [ours() for _ in range(100)]]
    if torch is not None:
        cells = [torch.nn.LSTMCell(I, H), torch.nn.LSTMCell(H, H)]
        xt = torch.from_numpy(x)
        state = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(2)]

        def theirs():
            with torch.no_grad():
                inp = xt
                for k in range(2):
                    state[k] = cells[k](inp, state[k])
                    inp = state[k][0]
        fns.append(lambda: [theirs() for _ in range(100)])
    times = alternate(fns, repeats)
    return [t / 100 * 1e6 for t in times]


STEP_VOCAB, STEP_EMBED = 96, 64   # the default character model's vocabulary and embedding


def step_network(hidden, int8, seed=0):
    """A GRU 2 x hidden character model's weights for _core.NetworkStep, float32 or 8-bit
    (symmetric per-row int8), and the bytes of weight matrices one step reads."""
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(hidden)

    def matrix(rows, cols):
        w = rng.uniform(-s, s, (rows, cols)).astype(np.float32)
        if not int8:
            return w, w.nbytes
        q, scales = quantize_rows(w)
        return (q, scales), q.nbytes + scales.nbytes

    layers, total, inputs = [], 0, STEP_EMBED
    for _ in range(2):
        (w_ih, n_ih), (w_hh, n_hh) = matrix(3 * hidden, inputs), matrix(3 * hidden, hidden)
        b = [rng.uniform(-s, s, 3 * hidden).astype(np.float32) for _ in range(2)]
        layers.append((w_ih, w_hh, b[0], b[1], None))
        total += n_ih + n_hh
        inputs = hidden
    decoder, n_dec = matrix(STEP_VOCAB, hidden)
    embedding = rng.standard_normal((STEP_VOCAB, STEP_EMBED)).astype(np.float32)
    return (embedding, layers, decoder, np.zeros(STEP_VOCAB, np.float32)), total + n_dec


def _steps(step, ids, h, out, n=100):
    for _ in range(n):
        step(ids, h, None, out)


def bench_model_steps(repeats, hidden, batch):
    """_core.NetworkStep of a GRU 2 x hidden model (embedding, both layers, decoder,
    log-softmax): float32 on the small-batch products, the same on BLAS (the step before
    them), and 8-bit weights.  Returns {kind: (median us per step, fastest, weight bytes)}."""
    kinds = {}
    for kind, int8, small in (("float32 small", False, True), ("float32 BLAS", False, False),
                              ("int8", True, True)):
        net, nbytes = step_network(hidden, int8)
        before = _core.SMALL_BATCH
        _core.SMALL_BATCH = 16 if small else 0
        try:
            step = _core.NetworkStep("gru", *net, batch)
        finally:
            _core.SMALL_BATCH = before
        h = np.zeros((2, batch, hidden), np.float32)
        out = np.empty((batch, STEP_VOCAB), np.float32)
        kinds[kind] = (functools.partial(_steps, step, np.arange(batch) % STEP_VOCAB, h, out),
                       nbytes)
    times = alternate([fn for fn, _ in kinds.values()], repeats, best=True)
    return {kind: (t / 100 * 1e6, fast / 100 * 1e6, kinds[kind][1])
            for kind, (t, fast) in zip(kinds, times)}


def bench_model_step(torch, repeats, batch):
    """The engine's unit of work: LanguageModel.step of the default character model's shape
    (GRU 2x256, embedding 64, 96 tokens) -- embedding, both layers, decoder, log-softmax --
    beside the same in torch (nn.Embedding, 2 GRUCell, nn.Linear, log_softmax)."""
    from predtext.lm.model import LanguageModel

    V, E, H = STEP_VOCAB, STEP_EMBED, 256
    model = LanguageModel(V, embed_size=E, hidden_size=H, num_layers=2, cell="gru", seed=0)
    state = model.initial_state(batch)
    ids = np.arange(batch) % V

    fns = [lambda: [model.step(ids, state) for _ in range(100)]]
    if torch is not None:
        embedding, decoder = torch.nn.Embedding(V, E), torch.nn.Linear(H, V)
        cells = [torch.nn.GRUCell(E, H), torch.nn.GRUCell(H, H)]
        ids_t = torch.from_numpy(ids)
        h = [torch.zeros(batch, H) for _ in range(2)]

        def theirs():
            with torch.no_grad():
                inp = embedding(ids_t)
                for k in range(2):
                    h[k] = cells[k](inp, h[k])
                    inp = h[k]
                return torch.log_softmax(decoder(inp), dim=1)
        fns.append(lambda: [theirs() for _ in range(100)])
    times = alternate(fns, repeats)
    return [t / 100 * 1e6 for t in times]


def bench_products(repeats, quick):
    """One step's largest product, (B, K) by (N, K) transposed, on one thread: the small-batch
    products (float32 and int8), OpenBLAS (SciPy's sgemm, NumPy's matmul) and BLIS.
    Returns rows (shape, B, {name: us})."""
    from scipy.linalg import blas as scipy_blas
    try:
        from blis.py import gemm as blis_gemm
    except ImportError:
        blis_gemm = None
    rows = []
    rng = np.random.default_rng(0)
    for N, K in ((768, 256),) if quick else ((768, 256), (1536, 512)):
        w = rng.standard_normal((N, K)).astype(np.float32)
        q, scales = quantize_rows(w)
        wf = np.asfortranarray(w.T)
        for B in (1, 6, 16):
            x = rng.standard_normal((B, K)).astype(np.float32)
            out = np.empty((B, N), np.float32)
            p = functools.partial
            fns = {"small f32": p(_core.small_matmul, x, w, out),
                   "small int8": p(_core.small_matmul, x, (q, scales), out),
                   "OpenBLAS sgemm": p(scipy_blas.sgemm, 1.0, x, wf),
                   "NumPy matmul": p(np.matmul, x, w.T, out=out)}
            if blis_gemm is not None:
                fns["BLIS gemm"] = p(blis_gemm, x, w, out=out, trans2=True, beta=0.0)
            reps = [functools.partial(_repeat, fn, 20) for fn in fns.values()]
            times = alternate(reps, repeats, best=True)
            rows.append((f"N{N} K{K}", B, {k: (t / 20 * 1e6, fast / 20 * 1e6)
                                             for k, (t, fast) in zip(fns, times)}))
    return rows


def _repeat(fn, n):
    for _ in range(n):
        fn()


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=_core.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="first shape only, 3 repeats")
    ap.add_argument("--steps", action="store_true",
                    help="the model steps and their products only (no sequence table)")
    args = ap.parse_args()
    repeats = 3 if args.quick else args.repeats
    _core.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, "not installed"

    scipy_peak, numpy_peak = sgemm_rate(repeats)
    bandwidth = memory_bandwidth(repeats)
    cache = last_level_cache()
    print(f"machine: {cpu_model()}, SIMD {simd_level()}, BLAS {blas_targets()}, "
          f"{args.threads} threads, OpenMP {'on' if _core.has_openmp() else 'off'}, "
          f"torch {torch_version}")
    print(f"sgemm 2048^3: SciPy's BLAS (used by the core) {scipy_peak:.0f} GFLOP/s, "
          f"NumPy's {numpy_peak:.0f} GFLOP/s; memory bandwidth (256 MB copy, read + "
          f"written) {bandwidth / 1e9:.1f} GB/s; last-level cache "
          f"{'unknown' if cache is None else f'{cache / 2**20:.0f} MiB'}")
    if not args.steps:
        bench_tables(torch, repeats, args.quick, max(scipy_peak, numpy_peak))
    bench_step_tables(torch, repeats, args.quick, bandwidth, cache)


def bench_tables(torch, repeats, quick, peak):
    """The sequence kernels beside torch, and a 2-layer LSTM's single step."""
    print()
    header = (f"{'cell':5} {'shape':24} {'pass':17} {'predtext tok/s':>14} {'GFLOP/s':>8} "
              f"{'%sgemm':>7} {'torch tok/s':>12} {'GFLOP/s':>8} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for r in bench_sequences(torch, repeats, quick):
        name, shape, what, tok, gf, ttok, tgf, ratio = r[:8]
        extra = f"  (layer/core {r[8]:.2f})" if len(r) > 8 else ""
        print(f"{name:5} {shape:24} {what:17} {tok:14,.0f} {gf:8.1f} {100 * gf / peak:6.0f}% "
              f"{fmt(ttok, '12,.0f')} {fmt(tgf, '8.1f')} {fmt(ratio, '6.2f')}{extra}")
    ours_us, *theirs = bench_step(torch, repeats)
    print()
    print(f"single step, 2-layer LSTM B=1 I=64 H=512: predtext cell_step {ours_us:.0f} us, "
          f"torch 2x LSTMCell {fmt(theirs[0] if theirs else None, '.0f')} us")


def bench_step_tables(torch, repeats, quick, bandwidth, cache):
    """The model steps (LanguageModel.step beside torch, then the compiled step's kinds with
    their share of the bandwidth) and their largest product beside OpenBLAS and BLIS."""
    print()
    for batch in (1, 6):
        ours_us, *theirs = bench_model_step(torch, repeats, batch)
        their_us = fmt(theirs[0] if theirs else None, ".0f")
        print(f"model step, GRU 2x256 + decoder ({STEP_VOCAB} tokens) B={batch}: predtext "
              f"LanguageModel.step {ours_us:.0f} us, torch {their_us} us")
    print()
    print(f"model step (_core.NetworkStep), GRU 2 x H, embedding {STEP_EMBED}, {STEP_VOCAB} "
          f"tokens; weights/s as a share of the {bandwidth / 1e9:.1f} GB/s measured:")
    header = (f"{'model':8} {'weights':13} {'B':>3} {'us/step':>8} {'x B=1':>6} {'GB/s':>6} "
              f"{'%bw':>5} {'fastest':>8} {'GB/s':>6} {'%bw':>5} {'1 pass from memory':>19}")
    print(header)
    print("-" * len(header))
    for hidden in (256, 512):
        by_batch = {batch: bench_model_steps(repeats, hidden, batch) for batch in (1, 6)}
        for kind in by_batch[1]:
            for batch, kinds in by_batch.items():
                us, fast, nbytes = kinds[kind]
                rate, fast_rate = nbytes / (us * 1e-6), nbytes / (fast * 1e-6)
                fits = cache is not None and nbytes <= cache
                print(f"2x{hidden:<6} {kind:13} {batch:>3} {us:8.1f} "
                      f"{us / by_batch[1][kind][0]:6.2f} {rate / 1e9:6.1f} "
                      f"{100 * rate / bandwidth:4.0f}% {fast:8.1f} {fast_rate / 1e9:6.1f} "
                      f"{100 * fast_rate / bandwidth:4.0f}% {nbytes / bandwidth * 1e6:9.1f} us"
                      f"{' (in cache)' if fits else ''}  [{nbytes / 2**20:.2f} MiB]")
    path = ("the small-batch products" if _core.SMALL_BATCH else
            "BLAS (this OpenBLAS has small-matrix kernels)")
    print(f"float32 steps of a small batch run on {path}; int8 always on the small-batch "
          "products")
    print()
    print("one product (B, K) x (N, K)^T on one thread, median / fastest us:")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        rows = bench_products(repeats, quick)
    else:
        with threadpool_limits(1):
            rows = bench_products(repeats, quick)
    names = list(rows[0][2])
    print(f"{'shape':12} {'B':>3} " + " ".join(f"{n:>15}" for n in names))
    for shape, batch, times in rows:
        cells = (f"{times[n][0]:.0f} / {times[n][1]:.0f}" for n in names)
        print(f"{shape:12} {batch:>3} " + " ".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
