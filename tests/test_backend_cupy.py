"""The CuPy backend's array code, run with NumPy in place of CuPy, against the compiled core
(float64, 1e-10); its kernels' CUDA source compiled by nvcc where nvcc is installed; and, on a
machine with a CUDA device, the real thing against the CPU core (skipped elsewhere)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from core_helpers import CELLS, backward, core_cell, forward, make_params

from predtext import nn
from predtext.backend import BackendUnavailable, gate_kernels, get_ops
from predtext.backend.cupy_ops import CupyOps

ON_CPU = CupyOps(xp=np)


def close(ours, theirs, name, tol=1e-10):
    ours, theirs = get_ops().to_numpy(ours), np.asarray(theirs)
    scale = max(np.abs(theirs).max(), 1e-30)
    err = np.abs(ours - theirs).max()
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} x scale {scale:.3g}"


def run_ops(ops, cell, x, params, h0, c0, lengths, d_out, d_hn, d_cn, recurrent_mask=None):
    out, h_n, c_n, cache = ops.rnn_forward(core_cell(cell), x, params["w_ih"], params["w_hh"],
                                           params.get("b_ih"), params.get("b_hh"), h0, c0,
                                           lengths, params.get("peephole"), training=True,
                                           recurrent_mask=recurrent_mask)
    grads = {k: ops.xp.zeros_like(v) for k, v in params.items()}
    dx, dh0, dc0 = ops.rnn_backward(cache, d_out, d_hn, d_cn, grad_w_ih=grads["w_ih"],
                                    grad_w_hh=grads["w_hh"], grad_b_ih=grads.get("b_ih"),
                                    grad_b_hh=grads.get("b_hh"),
                                    grad_peephole=grads.get("peephole"))
    return (out, h_n, c_n), (dx, dh0, dc0), grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("seed", range(4))
def test_the_cupy_path_on_numpy_matches_the_core_on_random_configurations(cell, seed):
    rng = np.random.default_rng(100 + seed)
    T, B, I, H = (int(v) for v in rng.integers(1, 9, size=4))
    bias = bool(seed % 2 == 0)
    params = make_params(cell, I, H, seed=seed, bias=bias)
    x = rng.normal(size=(T, B, I))
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32) if seed != 0 else None
    lstm = core_cell(cell) == "lstm"
    h0 = rng.normal(size=(B, H)) if seed >= 2 else None
    c0 = rng.normal(size=(B, H)) if seed >= 2 and lstm else None
    d_out = rng.normal(size=(T, B, H))
    d_hn = rng.normal(size=(B, H)) if seed != 1 else None
    d_cn = rng.normal(size=(B, H)) if lstm and seed != 1 else None
    # Recurrent dropout on half the configurations.
    mask = (rng.random((B, H)) >= 0.4) / 0.6 if seed % 2 else None

    out, h_n, c_n, cache = forward(cell, x, params, h0, c0, lengths, training=True,
                                   recurrent_mask=mask)
    dx, dh0, dc0, grads = backward(cache, params, d_out, d_hn, d_cn)
    ours, d_ours, our_grads = run_ops(ON_CPU, cell, x, params, h0, c0, lengths, d_out, d_hn,
                                      d_cn, mask)
    for name, a, b in (("out", ours[0], out), ("h_n", ours[1], h_n), ("dx", d_ours[0], dx),
                       ("dh0", d_ours[1], dh0)):
        close(a, b, name)
    if lstm:
        close(ours[2], c_n, "c_n")
        close(d_ours[2], dc0, "dc0")
    for name in grads:
        close(our_grads[name], grads[name], name)


def layers():
    def rng():
        return np.random.default_rng(9)
    return [
        lambda: nn.LSTM(3, 5, num_layers=3, bidirectional=True, dropout=0.3, dtype=np.float64,
                        rng=rng()),
        lambda: nn.LSTM(3, 5, num_layers=2, peephole=True, dropout=0.2, dtype=np.float64,
                        rng=rng()),
        lambda: nn.GRU(3, 5, num_layers=2, bidirectional=True, dropout=0.4, dtype=np.float64,
                       rng=rng()),
        lambda: nn.RNN(3, 5, num_layers=2, nonlinearity="relu", bidirectional=True,
                       dropout=0.1, dtype=np.float64, rng=rng()),
        lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True, peephole=True, dropout=0.2,
                        recurrent_dropout=0.3, dtype=np.float64, rng=rng()),
        lambda: nn.GRU(3, 5, num_layers=2, bidirectional=True, recurrent_dropout=0.4,
                       dtype=np.float64, rng=rng()),
        lambda: nn.RNN(3, 5, num_layers=2, recurrent_dropout=0.25, dtype=np.float64, rng=rng()),
    ]


@pytest.mark.parametrize("make", layers(), ids=["lstm-bi", "lstm-peephole", "gru-bi", "relu-bi",
                                                "lstm-recurrent-dropout",
                                                "gru-recurrent-dropout",
                                                "tanh-recurrent-dropout"])
def test_stacked_bidirectional_layers_with_dropout_masks_match_the_cpu_ones(make):
    rng = np.random.default_rng(4)
    cpu, ours = make(), make().to(ON_CPU)
    assert ours.ops is ON_CPU
    x = rng.normal(size=(7, 4, 3))
    lengths = [7, 2, 5, 1]
    D, L = cpu.num_directions, cpu.num_layers
    h0 = rng.normal(size=(L * D, 4, 5))
    state0 = (h0, rng.normal(size=h0.shape)) if cpu.cell == "lstm" else h0
    (out, state), back = cpu.begin_update(x, state0, lengths)       # same masks: same rng
    (o_out, o_state), o_back = ours.begin_update(x, state0, lengths)
    close(o_out, out, "output")
    for a, b in zip(np.atleast_1d(o_state) if cpu.cell != "lstm" else o_state,
                    np.atleast_1d(state) if cpu.cell != "lstm" else state):
        close(a, b, "state")
    d = rng.normal(size=out.shape)
    dx, _ = back(d)
    o_dx, _ = o_back(d)
    close(o_dx, dx, "dx")
    for (name, p), (_, q) in zip(cpu.named_parameters(), ours.named_parameters()):
        close(q.grad, p.grad, name)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_single_steps_through_the_whole_network_match_the_core(cell):
    from predtext.lm.model import LanguageModel

    model = LanguageModel(vocab_size=13, embed_size=4, hidden_size=6, num_layers=2, cell=cell,
                          peephole=cell == "lstm", dtype=np.float64, seed=5)
    tokens = [[1, 4, 0], [3, 12, 7], [2, 2, 9]]
    state = model.initial_state(3)
    expected = [model.step(ids, state)[0].copy() for ids in tokens]
    model.to(ON_CPU)
    state = model.initial_state(3)
    for ids, theirs in zip(tokens, expected):
        close(model.step(ids, state)[0], theirs, "log_probs")


def test_kernel_sources_are_one_text_for_numpy_and_cuda():
    for name, spec in gate_kernels.KERNELS.items():
        source = gate_kernels.cuda_source(spec)
        assert source.count(";") == len(spec.lines()), name
        for target, _ in spec.lines():
            assert (f"T {target} =" in source) != (target in spec.outputs), (name, target)
        in_params, out_params = gate_kernels.cuda_parameters(spec)
        assert in_params.count("T ") == len(spec.inputs)
        assert out_params.count("T ") == len(spec.outputs)


def test_every_kernel_is_a_valid_cupy_elementwise_kernel():
    cupy = pytest.importorskip("cupy")      # imports without a GPU; builds without one
    for name, spec in gate_kernels.KERNELS.items():
        kernel = gate_kernels.cupy_kernel(spec, cupy)
        assert (kernel.nin, kernel.nout) == (len(spec.inputs), len(spec.outputs)), name


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_every_kernel_compiles_with_nvcc(tmp_path, dtype):
    source = tmp_path / "kernels.cu"
    source.write_text(gate_kernels.standalone_cuda(gate_kernels.KERNELS.values(), dtype))
    result = subprocess.run(["nvcc", "-c", str(source), "-o", str(tmp_path / "kernels.o")],
                            capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"{dtype}:\n{result.stderr}"


def test_importing_the_cupy_backend_module_imports_no_cupy():
    code = ("import sys, predtext.backend.cupy_ops, predtext.backend.gate_kernels; "
            "print('cupy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def _cupy_error():
    try:
        get_ops("cupy")
    except BackendUnavailable as exc:
        return str(exc)
    return None


CUPY_ERROR = _cupy_error()
needs_gpu = pytest.mark.skipif(CUPY_ERROR is not None, reason=f"no CUDA device: {CUPY_ERROR}")


@pytest.mark.skipif(CUPY_ERROR is None, reason="CuPy and a CUDA device are present")
def test_without_cupy_or_a_device_asking_for_the_gpu_says_what_is_missing():
    with pytest.raises(BackendUnavailable, match="backend 'cupy': CuPy") as caught:
        get_ops("cupy")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(BackendUnavailable, match="CuPy"):
        nn.Linear(2, 3).to("cuda")
    if "not installed" in str(caught.value):
        assert "predtext[gpu]" in str(caught.value)


@needs_gpu
@pytest.mark.parametrize("recurrent_dropout", [False, True], ids=["plain", "recurrent-dropout"])
@pytest.mark.parametrize("cell", CELLS)
def test_on_the_gpu_outputs_states_and_gradients_match_the_core_in_float32(cell,
                                                                           recurrent_dropout):
    gpu = get_ops("cupy")
    rng = np.random.default_rng(1)
    T, B, I, H = 12, 8, 16, 32
    params = make_params(cell, I, H, dtype=np.float32, seed=3)
    x = rng.normal(size=(T, B, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B).astype(np.int32)
    lstm = core_cell(cell) == "lstm"
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32) if lstm else None
    d_out = rng.normal(size=(T, B, H)).astype(np.float32)
    d_hn = rng.normal(size=(B, H)).astype(np.float32)
    d_cn = d_hn.copy() if lstm else None
    mask = ((rng.random((B, H)) >= 0.3) / np.float32(0.7)).astype(np.float32)
    mask = mask if recurrent_dropout else None
    out, h_n, _, cache = forward(cell, x, params, h0, c0, lengths, training=True,
                                 recurrent_mask=mask)
    dx, dh0, _, grads = backward(cache, params, d_out, d_hn, d_cn)
    up = gpu.asarray
    g_params = {k: up(v) for k, v in params.items()}
    ours, d_ours, our_grads = run_ops(gpu, cell, up(x), g_params, up(h0),
                                      None if c0 is None else up(c0), lengths, up(d_out),
                                      up(d_hn), None if d_cn is None else up(d_cn),
                                      None if mask is None else up(mask))
    close(ours[0], out, "out", 1e-5)
    close(ours[1], h_n, "h_n", 1e-5)
    close(d_ours[0], dx, "dx", 1e-5)
    close(d_ours[1], dh0, "dh0", 1e-5)
    for name in grads:
        close(our_grads[name], grads[name], name, 1e-5)


@needs_gpu
def test_on_the_gpu_a_model_moves_steps_and_comes_back_as_numpy():
    from predtext.lm.model import LanguageModel

    model = LanguageModel(vocab_size=11, embed_size=8, hidden_size=16, num_layers=2, seed=1)
    state = model.initial_state(2)
    expected = model.step([1, 2], state)[0].copy()
    before = model.state_dict()
    model.to("cuda")
    assert model.device == "cuda"
    with pytest.raises(TypeError, match="is on the CPU"):
        model.decoder(np.zeros((2, 16), np.float32))
    state = model.initial_state(2)
    close(model.step([1, 2], state)[0], expected, "log_probs", 1e-5)
    after = model.state_dict()
    assert all(type(v) is np.ndarray for v in after.values())
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


@needs_gpu
def test_on_the_gpu_torch_cuda_tensors_come_in_without_a_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    layer = nn.Linear(4, 3).to("cuda")
    x = torch.randn(5, 4, device="cuda")
    accepted = layer.ops.accept("input", x)
    assert accepted.data.ptr == x.data_ptr()
    y = layer(x)
    close(y, x.cpu().numpy() @ layer.weight.data.get().T + layer.bias.data.get(), "y", 1e-5)


def test_training_steps_through_the_cupy_path_match_the_cpu_ones():
    """Embedding, dropout, recurrent layers, decoder, loss, clipping and Adam: a few steps of
    a language model moved to the CuPy backend (NumPy in place of CuPy) and one on the CPU."""
    from predtext.lm.model import LanguageModel

    def make():
        return LanguageModel(vocab_size=17, embed_size=6, hidden_size=8, num_layers=2,
                             cell="lstm", dropout=0.2, dtype=np.float64, seed=11)

    rng = np.random.default_rng(2)
    ids = rng.integers(0, 17, size=(9, 3))
    targets = rng.integers(0, 17, size=(9, 3))
    runs = []
    for model in (make(), make().to(ON_CPU)):
        optimizer = nn.Adam(model.parameters(), lr=1e-2)
        losses, norms = [], []
        for _ in range(3):
            model.train()
            optimizer.zero_grad()
            (loss, _), back = model.begin_update_loss(ids, targets)
            back()
            norms.append(nn.clip_grad_norm_(model.parameters(), 0.5))
            optimizer.step()
            losses.append(loss)
        runs.append((losses, norms, model.state_dict()))
    (cpu_losses, cpu_norms, cpu_state), (losses, norms, state) = runs
    np.testing.assert_allclose(losses, cpu_losses, rtol=1e-10)
    np.testing.assert_allclose(norms, cpu_norms, rtol=1e-10)
    for name in cpu_state:
        close(state[name], cpu_state[name], name)
