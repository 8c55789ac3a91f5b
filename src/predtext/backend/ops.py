"""The interface every backend implements: what the layers ask of an array backend.

Layers in ``nn`` and ``lm`` hold an ``Ops`` object (``module.ops``) and never call NumPy, CuPy
or the compiled core directly where an array may live on a device: light array code goes
through ``ops.xp`` (the array module, numpy or cupy), heavy work through the methods here.

Conventions for every method: arrays are time-major ``(T, B, F)`` and C-contiguous, every
float array of one call shares one dtype (float32, or float64 for checks), and ``cell`` is a
name from ``predtext.backend.cells.CELLS``.

A subclass sets ``name`` (what ``get_ops`` calls it), ``device`` ("cpu", "cuda") and ``xp``,
and implements the recurrent methods (``rnn_forward``, ``rnn_backward``, ``cell_step``,
``network_step``). The rest has array-API defaults written with ``xp`` that a backend may
replace with something faster.
"""

from __future__ import annotations

import numpy

from predtext.backend.cells import get_cell


class BackendUnavailable(ValueError):
    """A backend that exists but cannot run here; the message names what is missing."""


class Ops:
    """Base class of the backends; see the module docstring for the conventions."""

    name = "abstract"
    device = "cpu"
    xp = numpy
    #: Whether ``network_step`` takes an 8-bit weight as ``(q int8 (N, K), scale (N,))`` in
    #: place of a float matrix (and reads it as such); others are given the float weights.
    int8_step = False

    # -- arrays: creation, conversion, ownership -------------------------------------------

    def zeros(self, shape, dtype=numpy.float32):
        return self.xp.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype=numpy.float32):
        return self.xp.empty(shape, dtype=dtype)

    def asarray(self, a, dtype=None):
        """``a`` as a C-contiguous array of this backend (no copy when it already is one)."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a):
        """A NumPy array with the values of ``a`` (a device array is copied to the host)."""
        return numpy.asarray(a)

    def owns(self, a):
        """Whether ``a`` is an array of this backend (on its device)."""
        return isinstance(a, self.xp.ndarray)

    def accept(self, argument, value, dtype=None):
        """A value a caller hands to a module, as an array of this backend.

        Arrays this backend owns come back as they are; lists and numbers become arrays;
        an array on another device is a TypeError naming both (no silent copy between a
        GPU and the host). ``dtype`` applies to values that are converted (host arrays of
        other libraries, lists, numbers), as ``asarray`` would.
        """
        if self.owns(value):
            return value
        if self.foreign(value):
            self.check_device(argument, value)
        return self.xp.asarray(value, dtype=dtype)

    def indices(self, argument, value):
        """Integer index data (token ids, class ids) as an array of this backend. Unlike
        values, host indices are copied to the device: tokenizers make them on the host.
        Indices on another device are an error naming both."""
        if self.owns(value):
            return value
        if (hasattr(value, "__cuda_array_interface__")
                or _dlpack_device_code(value) not in (None, 1)):
            return self.accept(argument, value)
        return self.xp.asarray(numpy.asarray(value))

    def foreign(self, value):
        """Whether ``value`` is an array on a device other than this backend's."""
        return (hasattr(value, "__cuda_array_interface__")
                or _dlpack_device_code(value) not in (None, 1))

    def check_device(self, argument, a):
        """``a`` itself when this backend owns it; a TypeError naming both devices otherwise.

        Called on arrays a caller hands to a module, so that a NumPy array given to a GPU
        module (or the reverse) says what happened instead of failing deep inside a kernel.
        """
        if a is None or self.owns(a):
            return a
        raise TypeError(f"{argument}: is on {device_of(a)}, but this module's parameters are "
                        f"on {self.device} (backend {self.name!r}); move one of them "
                        f"(module.to(...) or the array library's own copy)")

    # -- linear algebra and scatter ---------------------------------------------------------

    def matmul(self, a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
        """``op(a) @ op(b)`` for 2-D arrays (into ``out``; added to it with ``accumulate``)."""
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if out is None:
            return product
        if accumulate:
            out += product
        else:
            out[...] = product
        return out

    def scatter_add(self, table, indices, values):
        """``table[indices[n]] += values[n]``, repeated indices summed (embedding grads)."""
        self.xp.add.at(table, indices, values)
        return table

    def reverse_sequences(self, x_tbf, lengths=None, out=None):
        """Each sequence reversed in time within its own length; zeros past its end.

        Its own inverse on the valid steps, so a reverse-direction layer applies it to its
        input before the forward kernel and to the kernel's output after.
        """
        xp = self.xp
        T = x_tbf.shape[0]
        if lengths is None:
            result = x_tbf[::-1]
        else:
            t = xp.arange(T)[:, None]
            n = self.asarray(numpy.asarray(lengths).astype(numpy.int64))[None, :]
            valid = t < n
            index = xp.where(valid, n - 1 - t, t)
            result = xp.take_along_axis(x_tbf, index[:, :, None], axis=0)
            result = result * valid[:, :, None].astype(x_tbf.dtype)
        if out is None:
            return xp.ascontiguousarray(result)
        out[...] = result
        return out

    # -- threads (a no-op where the backend has no thread pool) --------------------------------

    def set_num_threads(self, n):
        """How many CPU threads the backend's kernels use."""

    def get_num_threads(self):
        return 1

    # -- recurrent kernels --------------------------------------------------------------------

    def rnn_forward(self, cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None,
                    c0_bh=None, lengths=None, peephole=None, training=False,
                    recurrent_mask=None):
        """One layer, one direction, over whole sequences.

        Returns ``(out_tbh, h_n_bh, c_n_bh or None, cache or None)``; the cache (training only)
        is what ``rnn_backward`` needs. Steps past a sequence's length give zero output and
        leave its state unchanged. ``recurrent_mask`` ``(B, H)`` (recurrent dropout, None
        for none) multiplies ``h_{t-1}`` where it enters the recurrent product ``W_hh
        h_{t-1}``, the same at every step, and nowhere else (not in the state, the output,
        or a GRU's carry ``z * h_{t-1}``); ``rnn_backward`` uses it again.
        """
        raise NotImplementedError(f"backend {self.name!r} has no rnn_forward")

    def rnn_backward(self, cache, d_out_tbh, d_hn_bh=None, d_cn_bh=None, *, grad_w_ih,
                     grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
        """Backpropagation through time for one ``rnn_forward(training=True)`` call.

        Adds the parameter gradients into the ``grad_*`` buffers and returns
        ``(dx_tbi, dh0_bh, dc0_bh or None)``. ``d_out`` past a sequence's length is ignored.
        """
        raise NotImplementedError(f"backend {self.name!r} has no rnn_backward")

    def cell_step(self, cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work,
                  peephole=None):
        """One step for a batch into caller-given buffers (``h_out`` may be ``h``);
        ``work`` is ``step_workspace_shape(cell, B, H)``."""
        raise NotImplementedError(f"backend {self.name!r} has no cell_step")

    def step_workspace_shape(self, cell, batch, hidden):
        """The shape of ``cell_step``'s ``work`` buffer."""
        gates = get_cell(cell).gates * hidden
        return (batch, 2 * gates if cell == "gru" else gates)

    def network_step(self, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        """A callable ``(token_ids, h, c, log_probs)`` that reads one token per text through
        the whole network (embedding, ``layers`` of ``(w_ih, w_hh, b_ih, b_hh, peephole)``,
        decoder, log-softmax), writing ``h``, ``c`` and ``log_probs`` in place. It has
        ``arrays`` (the parameter arrays it reads, in order) and ``batch``."""
        raise NotImplementedError(f"backend {self.name!r} has no network_step")

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r} on {self.device}>"


def _dlpack_device_code(value):
    """The DLPack device type of ``value`` (1 the CPU, 2 CUDA), None for none or unknown."""
    method = getattr(value, "__dlpack_device__", None)
    if method is None:
        return None
    try:
        return int(method()[0])
    except Exception:  # noqa: BLE001 (a library's own failure: the device is unknown)
        return None


def device_of(a):
    """Where an array lives, in words, without importing the library that made it."""
    if isinstance(a, numpy.ndarray):
        return "the CPU (a NumPy array)"
    interface = getattr(a, "__cuda_array_interface__", None)
    kind = type(a).__module__.split(".")[0] + "." + type(a).__name__
    if interface is not None:
        device = getattr(a, "device", None)
        return f"a CUDA device ({kind}{'' if device is None else f', {device}'})"
    if hasattr(a, "__dlpack_device__"):
        try:
            code, number = a.__dlpack_device__()
        except Exception:  # noqa: BLE001 (a library's own error: say what we can)
            return f"an unknown device ({kind})"
        place = _DLPACK_DEVICES.get(int(code), f"DLPack device type {int(code)}")
        return f"{place} ({kind}, device {number})"
    return f"the CPU ({kind})"


# DLPack's device type codes (dlpack.h: kDLCPU, kDLCUDA, kDLCUDAHost, kDLROCM).
_DLPACK_DEVICES = {1: "the CPU", 2: "a CUDA device", 3: "CUDA host memory", 10: "a ROCm device"}


class NetworkStep:
    """``Ops.network_step`` for a backend without a compiled whole-network step: one
    ``cell_step`` per layer, the decoder's product and a log-softmax, all through ``ops``.

    Scratch arrays are made once, here; weights are read in place, as the core's are.
    """

    def __init__(self, ops, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        self.ops, self.cell, self.batch = ops, get_cell(cell).name, int(batch)
        self.embedding = embedding
        self.layers = [tuple(layer) for layer in layers]
        self.decoder_weight, self.decoder_bias = decoder_weight, decoder_bias
        self.arrays = tuple([embedding] + [a for layer in self.layers for a in layer
                                           if a is not None]
                            + [a for a in (decoder_weight, decoder_bias) if a is not None])
        H = self.layers[0][1].shape[1]
        self.work = ops.zeros(ops.step_workspace_shape(cell, self.batch, H), embedding.dtype)
        self.scratch = ops.zeros((self.batch, decoder_weight.shape[0]), embedding.dtype)

    def __call__(self, token_ids, h, c, log_probs):
        ops, xp = self.ops, self.ops.xp
        ids = numpy.asarray(ops.to_numpy(token_ids)).reshape(-1)
        if ids.dtype.kind not in "iu" or ids.shape != (self.batch,):
            raise ValueError(f"token_ids: expected {self.batch} integer ids (one per text), "
                             f"got {ids.dtype} of shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.embedding.shape[0]):
            raise ValueError(f"token_ids: ids must lie in [0, {self.embedding.shape[0]})")
        x = self.embedding[ops.asarray(ids)]
        for k, (w_ih, w_hh, b_ih, b_hh, peephole) in enumerate(self.layers):
            ops.cell_step(self.cell, x, h[k], None if c is None else c[k], w_ih, w_hh, b_ih,
                          b_hh, h[k], None if c is None else c[k], self.work, peephole)
            x = h[k]
        ops.matmul(x, self.decoder_weight, out=log_probs, trans_b=True)
        if self.decoder_bias is not None:
            log_probs += self.decoder_bias
        log_probs -= log_probs.max(axis=1, keepdims=True)
        xp.exp(log_probs, out=self.scratch)
        log_probs -= xp.log(self.scratch.sum(axis=1, keepdims=True))
        return log_probs
