"""CPU operations: NumPy for light array code, the compiled core for recurrent kernels."""

import numpy

from predtext import _core
from predtext.backend.ops import Ops


class NumpyOps(Ops):
    """The CPU backend. Recurrent methods are thin pass-throughs to ``predtext._core``."""

    name = "cpu"
    device = "cpu"
    xp = numpy
    int8_step = True     # _core.NetworkStep's small-batch kernels read int8 rows directly

    def asarray(self, a, dtype=None):
        return numpy.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a):
        return numpy.asarray(a)

    def set_num_threads(self, n):
        """How many threads the recurrent kernels use (BLAS stays single-threaded inside).

        One thread is faster for small batches and hidden sizes, where a step is too short
        to share, and on machines where other processes hold the cores.
        """
        _core.set_num_threads(n)

    def get_num_threads(self):
        return _core.get_num_threads()

    def matmul(self, a, b, out=None, trans_a=False, trans_b=False, accumulate=False):
        """``op(a) @ op(b)`` for 2-D arrays (into ``out``; added to it with ``accumulate``).

        Float arrays that are C-contiguous run on the core's threads (see
        ``predtext._core.matmul``); anything else goes to NumPy.
        """
        if (a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype
                and a.dtype in (numpy.float32, numpy.float64)
                and a.flags.c_contiguous and b.flags.c_contiguous
                and (out is None or (out.dtype == a.dtype and out.flags.c_contiguous))):
            return _core.matmul(a, b, out, trans_a, trans_b, accumulate)
        return super().matmul(a, b, out, trans_a, trans_b, accumulate)

    # -- recurrent kernels -------------------------------------------------------------

    def rnn_forward(self, cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None,
                    c0_bh=None, lengths=None, peephole=None, training=False,
                    recurrent_mask=None):
        return _core.sequence_forward(cell, x_tbi, w_ih, w_hh, b_ih, b_hh, h0_bh, c0_bh,
                                      lengths, peephole, training, recurrent_mask)

    def rnn_backward(self, cache, d_out_tbh, d_hn_bh=None, d_cn_bh=None, *, grad_w_ih,
                     grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
        return _core.sequence_backward(cache, d_out_tbh, d_hn_bh, d_cn_bh,
                                       grad_w_ih=grad_w_ih, grad_w_hh=grad_w_hh,
                                       grad_b_ih=grad_b_ih, grad_b_hh=grad_b_hh,
                                       grad_peephole=grad_peephole)

    def cell_step(self, cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work,
                  peephole=None):
        _core.cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, work, peephole)

    def step_workspace_shape(self, cell, batch, hidden):
        return _core.step_workspace_shape(cell, batch, hidden)

    def network_step(self, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        """One compiled call per token for the whole network; see ``_core.NetworkStep``."""
        return _core.NetworkStep(cell, embedding, layers, decoder_weight, decoder_bias, batch)

    def reverse_sequences(self, x_tbf, lengths=None, out=None):
        return _core.reverse_sequences(x_tbf, lengths, out)
