"""The CuPy backend: recurrent layers on a CUDA device through cuBLAS and fused kernels.

Per layer and direction, a sequence costs:

* forward: one GEMM for the input projection of every time step; then per step one GEMM
  for the recurrent term (weights resident on the device) and one fused elementwise
  kernel for the gate math, state update and masking;
* backward: per step one fused kernel for the gate gradients and one GEMM carrying the
  state gradient back through the recurrent weights; then one GEMM each for the input
  gradient and the two weight gradients, and one reduction per bias (and peephole row).

Nothing in the time loop reads a value back to the host, so the loop only queues work on
the stream; lengths become a device mask once per call.

The gate math is written once (``gate_kernels.py``) and compiled either into CuPy
``ElementwiseKernel`` s or into NumPy functions. ``CupyOps(xp=numpy)`` runs this module's
whole array code on the CPU with the NumPy forms: the tests check it against the compiled
core that way, so the GPU path is checked even on machines without a GPU.

Importing this module imports no CuPy; ``CupyOps()`` does, and raises
``BackendUnavailable`` naming what is missing (CuPy, a driver, a device).
"""

from __future__ import annotations

import numpy

from predtext.backend.cells import get_cell
from predtext.backend.gate_kernels import KERNELS, cupy_kernel, numpy_kernel
from predtext.backend.ops import BackendUnavailable, NetworkStep, Ops, _dlpack_device_code

INSTALL_HINT = ("pip install 'predtext[gpu]' (brings cupy-cuda12x, for CUDA 12; "
                "for CUDA 13 install cupy-cuda13x)")


def load_cupy():
    """The cupy module, once it can reach a CUDA device; BackendUnavailable otherwise."""

    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'cupy': CuPy is not installed ({exc}); "
                                 f"{INSTALL_HINT}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 (CUDARuntimeError: no driver, or one too old)
        raise BackendUnavailable(f"backend 'cupy': CuPy is installed but cannot use CUDA: "
                                 f"{type(exc).__name__}: {exc} (is an NVIDIA driver "
                                 f"installed?)") from None
    if count < 1:
        raise BackendUnavailable("backend 'cupy': CuPy and CUDA are installed, but no CUDA "
                                 "device is visible (check CUDA_VISIBLE_DEVICES)")
    return cupy


class CupyCache:
    """What a training-mode ``rnn_forward`` keeps for ``rnn_backward``."""

    def __init__(self, **values):
        self.__dict__.update(values)


class CupyOps(Ops):
    """The CuPy/cuBLAS backend (``xp=numpy``: the same array code on the CPU, for tests)."""

    name = "cupy"

    def __init__(self, xp=None):
        if xp is None:
            xp = load_cupy()
            self.device = "cuda"
            self._gpu = True
            self._kernels = {name: cupy_kernel(spec, xp) for name, spec in KERNELS.items()}
        else:
            if xp is not numpy:
                raise ValueError(f"xp: expected None (CuPy) or numpy, got {xp!r}")
            self.device = "cpu"
            self._gpu = False
            self._kernels = {name: numpy_kernel(spec) for name, spec in KERNELS.items()}
        self.xp = xp

    def __repr__(self):
        return f"<CupyOps on {self.device}{'' if self._gpu else ' (NumPy in place of CuPy)'}>"

    # -- arrays ------------------------------------------------------------------------------

    def to_numpy(self, a):
        if self._gpu and isinstance(a, self.xp.ndarray):
            return self.xp.asnumpy(a)
        return numpy.asarray(a)

    def foreign(self, value):
        if not self._gpu:
            return super().foreign(value)
        if isinstance(value, self.xp.ndarray):
            return False
        # On a GPU backend the host is the other device.
        return (isinstance(value, numpy.ndarray) or hasattr(value, "__array__")
                or _dlpack_device_code(value) == 1)

    def accept(self, argument, value, dtype=None):
        """Device arrays of any library come in without a copy: ``__cuda_array_interface__``
        (PyTorch CUDA tensors, Numba, JAX) or DLPack; host arrays are refused, naming both
        devices. Results are CuPy arrays (hand them back to the library by DLPack)."""
        if not self._gpu or self.owns(value):
            return super().accept(argument, value, dtype)
        cupy = self.xp
        if hasattr(value, "__cuda_array_interface__"):
            return cupy.asarray(value)
        if _dlpack_device_code(value) == 2:
            return cupy.from_dlpack(value)
        if self.foreign(value):
            self.check_device(argument, value)
        return cupy.asarray(value, dtype=dtype)

    def scatter_add(self, table, indices, values):
        if self._gpu:
            import cupyx

            cupyx.scatter_add(table, indices, values)
            return table
        return super().scatter_add(table, indices, values)

    def _gemm(self, a, b, out, trans_a=False, trans_b=False, beta=0.0):
        """``out = op(a) @ op(b) + beta * out`` (cuBLAS on a GPU, no temporary)."""
        if self._gpu:
            self.xp.cublas.gemm("T" if trans_a else "N", "T" if trans_b else "N", a, b,
                                out=out, alpha=1.0, beta=beta)
            return out
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if beta:
            out += product
        else:
            out[...] = product
        return out

    def matmul(self, a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
        if (out is not None and a.ndim == 2 and b.ndim == 2 and out.flags.c_contiguous
                and a.dtype == b.dtype == out.dtype):
            return self._gemm(a, b, out, trans_a, trans_b, 1.0 if accumulate else 0.0)
        return super().matmul(a, b, out, trans_a, trans_b, accumulate)

    def _masks(self, T, B, lengths, dtype):
        """``(T, B, 1)`` ones on valid steps, zeros past each length: one upload per call."""
        if lengths is None:
            return self.xp.ones((T, B, 1), dtype=dtype)
        valid = numpy.arange(T)[:, None] < numpy.asarray(lengths)[None, :]
        return self.xp.asarray(valid.astype(dtype)[:, :, None])

    def _check_arrays(self, **arrays):
        for argument, array in arrays.items():
            self.check_device(argument, array)

    # -- sequences ---------------------------------------------------------------------------

    def rnn_forward(self, cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None,
                    c0_bh=None, lengths=None, peephole=None, training=False,
                    recurrent_mask=None):
        spec = get_cell(cell)
        self._check_arrays(x=x_tbi, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, h0=h0_bh,
                           c0=c0_bh, peephole=peephole, recurrent_mask=recurrent_mask)
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih, b_hh: pass both biases or neither")
        if peephole is not None and not spec.has_cell_state:
            raise ValueError(f"peephole: only an LSTM has peephole weights (cell={cell!r})")
        xp, dtype = self.xp, x_tbi.dtype
        T, B, I = x_tbi.shape
        H = w_hh.shape[1]
        G = spec.gates
        GH = G * H
        # The input projection of every step: one GEMM. Both biases go in here, except the
        # GRU's hidden bias, which sits inside the reset product.
        xg = self._gemm(x_tbi.reshape(T * B, I), w_ih, xp.empty((T * B, GH), dtype),
                        trans_b=True).reshape(T, B, GH)
        zeros_gh = xp.zeros((GH,), dtype)
        if b_ih is not None:
            xg += b_ih if spec.name == "gru" else b_ih + b_hh
        hidden_bias = b_hh if (spec.name == "gru" and b_hh is not None) else zeros_gh
        masks = self._masks(T, B, lengths, dtype)
        hs = xp.empty((T + 1, B, H), dtype)
        hs[0] = 0 if h0_bh is None else h0_bh
        cs = None
        if spec.has_cell_state:
            cs = xp.empty((T + 1, B, H), dtype)
            cs[0] = 0 if c0_bh is None else c0_bh
        out = xp.empty((T, B, H), dtype)
        acts = xp.empty((T, B, H if G == 1 else 4 * H), dtype)
        rh = xp.empty((B, GH), dtype)
        peep = xp.zeros((3, H), dtype) if peephole is None else peephole
        kernel = self._kernels[f"{spec.name}_forward"]
        # Recurrent dropout: the recurrent products' operands, h_{t-1} times the mask
        # (kept for the weight gradient; the state itself stays unmasked).
        hm = None
        if recurrent_mask is not None:
            if tuple(recurrent_mask.shape) != (B, H):
                raise ValueError(f"recurrent_mask: expected shape {(B, H)} (batch, hidden), "
                                 f"got {tuple(recurrent_mask.shape)}")
            hm = xp.empty((T, B, H), dtype)

        def blocks(a, n):
            return [a[:, k * H:(k + 1) * H] for k in range(n)]

        for t in range(T):
            h_in = hs[t] if hm is None else xp.multiply(hs[t], recurrent_mask, out=hm[t])
            self._gemm(h_in, w_hh, rh, trans_b=True)         # the recurrent term
            m = masks[t]
            if G == 1:
                kernel(xg[t], rh, hs[t], m, hs[t + 1], out[t], acts[t])
            elif spec.name == "lstm":
                kernel(*blocks(xg[t], 4), *blocks(rh, 4), hs[t], cs[t], peep[0], peep[1],
                       peep[2], m, hs[t + 1], cs[t + 1], out[t], *blocks(acts[t], 4))
            else:
                kernel(*blocks(xg[t], 3), *blocks(rh, 3), *blocks(hidden_bias[None], 3),
                       hs[t], m, hs[t + 1], out[t], *blocks(acts[t], 4))
        h_n = hs[T].copy()
        c_n = None if cs is None else cs[T].copy()
        cache = None
        if training:
            cache = CupyCache(cell=spec.name, G=G, H=H, x=x_tbi, w_ih=w_ih, w_hh=w_hh,
                              has_bias=b_ih is not None, peephole=peephole, peep=peep,
                              masks=masks, hs=hs, cs=cs, acts=acts,
                              recurrent_mask=recurrent_mask, hm=hm)
        return out, h_n, c_n, cache

    def rnn_backward(self, cache, d_out_tbh, d_hn_bh=None, d_cn_bh=None, *, grad_w_ih,
                     grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
        if not isinstance(cache, CupyCache):
            raise TypeError("cache: expected the cache of a training-mode rnn_forward of "
                            "this backend")
        self._check_arrays(d_out=d_out_tbh, d_hn=d_hn_bh, d_cn=d_cn_bh, grad_w_ih=grad_w_ih,
                           grad_w_hh=grad_w_hh, grad_b_ih=grad_b_ih, grad_b_hh=grad_b_hh,
                           grad_peephole=grad_peephole)
        if cache.has_bias and (grad_b_ih is None or grad_b_hh is None):
            raise ValueError("grad_b_ih, grad_b_hh: the layer has biases; pass both buffers")
        if cache.peephole is not None and grad_peephole is None:
            raise ValueError("grad_peephole: the layer has peephole weights; pass a buffer")
        xp = self.xp
        x, hs, cs, acts, masks = cache.x, cache.hs, cache.cs, cache.acts, cache.masks
        T, B, I = x.shape
        H, G = cache.H, cache.G
        GH = G * H
        dtype = x.dtype
        lstm, gru = cache.cell == "lstm", cache.cell == "gru"
        dgx = xp.empty((T, B, GH), dtype)
        dgh = xp.empty((T, B, GH), dtype) if gru else dgx
        dh = xp.zeros((B, H), dtype) if d_hn_bh is None else d_hn_bh.copy()
        dh_prev = xp.empty((B, H), dtype)
        dc = dc_prev = None
        if lstm:
            dc = xp.zeros((B, H), dtype) if d_cn_bh is None else d_cn_bh.copy()
            dc_prev = xp.empty((B, H), dtype)
        peep = cache.peep
        kernel = self._kernels[f"{cache.cell}_backward"]
        mask = cache.recurrent_mask
        dh_in = None if mask is None else xp.empty((B, H), dtype)

        def blocks(a, n):
            return [a[:, k * H:(k + 1) * H] for k in range(n)]

        for t in range(T - 1, -1, -1):
            m = masks[t]
            if G == 1:
                kernel(dh, d_out_tbh[t], acts[t], m, dgx[t], dh_prev)
            elif lstm:
                kernel(dh, dc, d_out_tbh[t], *blocks(acts[t], 4), cs[t], cs[t + 1], peep[0],
                       peep[1], peep[2], m, *blocks(dgx[t], 4), dh_prev, dc_prev)
                dc, dc_prev = dc_prev, dc
            else:
                r, z, n, hb = blocks(acts[t], 4)
                kernel(dh, d_out_tbh[t], r, z, n, hb, hs[t], m, *blocks(dgx[t], 3),
                       *blocks(dgh[t], 3), dh_prev)
            if mask is None:
                self._gemm(dgh[t], cache.w_hh, dh_prev, beta=1.0)   # back through W_hh
            else:
                dh_prev += mask * self._gemm(dgh[t], cache.w_hh, dh_in)
            dh, dh_prev = dh_prev, dh
        # The whole sequence's products at once: one GEMM each.
        dgx_n = dgx.reshape(T * B, GH)
        dgh_n = dgh.reshape(T * B, GH)
        dx = self._gemm(dgx_n, cache.w_ih, xp.empty((T * B, I), dtype)).reshape(T, B, I)
        self._gemm(dgx_n, x.reshape(T * B, I), grad_w_ih, trans_a=True, beta=1.0)
        h_in = hs[:T] if mask is None else cache.hm
        self._gemm(dgh_n, h_in.reshape(T * B, H), grad_w_hh, trans_a=True, beta=1.0)
        if cache.has_bias:
            grad_b_ih += dgx_n.sum(axis=0)
            grad_b_hh += dgh_n.sum(axis=0)
        if grad_peephole is not None:
            grad_peephole[0] += (dgx[:, :, 0:H] * cs[:T]).sum(axis=(0, 1))
            grad_peephole[1] += (dgx[:, :, H:2 * H] * cs[:T]).sum(axis=(0, 1))
            grad_peephole[2] += (dgx[:, :, 3 * H:4 * H] * cs[1:]).sum(axis=(0, 1))
        return dx, dh, dc

    # -- single steps ------------------------------------------------------------------------

    def step_workspace_shape(self, cell, batch, hidden):
        # The gate values the kernel writes (the two products come from the memory pool).
        return (batch, 4 * hidden)

    def cell_step(self, cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work,
                  peephole=None):
        spec = get_cell(cell)
        if spec.has_cell_state and (c is None or c_out is None):
            raise ValueError("c, c_out: an LSTM step needs the cell state and its output buffer")
        H = w_hh.shape[1]
        GH = spec.gates * H
        dtype = x.dtype
        acts = work
        xg = self._gemm(x, w_ih, self.xp.empty((x.shape[0], GH), dtype), trans_b=True)
        rh = self._gemm(h, w_hh, self.xp.empty((x.shape[0], GH), dtype), trans_b=True)
        if b_ih is not None:
            xg += b_ih if spec.name == "gru" else b_ih + b_hh
        one = self.xp.ones((1, 1), dtype)
        kernel = self._kernels[f"{spec.name}_forward"]

        def blocks(a, n):
            return [a[:, k * H:(k + 1) * H] for k in range(n)]

        out = acts[:, 3 * H:]       # the output copy is not needed: scratch
        if spec.gates == 1:
            kernel(xg, rh, h, one, h_out, out, acts[:, :H])
        elif spec.name == "lstm":
            peep = self.xp.zeros((3, H), dtype) if peephole is None else peephole
            i, f, g, o = blocks(acts, 4)
            kernel(*blocks(xg, 4), *blocks(rh, 4), h, c, peep[0], peep[1], peep[2], one,
                   h_out, c_out, self.xp.empty_like(h), i, f, g, o)
        else:
            bias = self.xp.zeros((GH,), dtype) if b_hh is None else b_hh
            kernel(*blocks(xg, 3), *blocks(rh, 3), *blocks(bias[None], 3), h, one, h_out,
                   out, *blocks(acts, 4)[:3], self.xp.empty_like(h))

    def network_step(self, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        return NetworkStep(self, cell, embedding, layers, decoder_weight, decoder_bias, batch)
