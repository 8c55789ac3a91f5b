"""CPU operations: NumPy for light array code, the compiled core for recurrent kernels."""

import numpy

from predtext import _core


class NumpyOps:
    """The CPU backend. Recurrent methods are thin pass-throughs to ``predtext._core``.

    A GPU backend implements the same methods with the same arguments and return values,
    so recurrent layers run unchanged on either. Arrays are time-major ``(T, B, F)`` and
    C-contiguous, and every array of one call shares the dtype (float32 or float64).
    """

    name = "cpu"
    xp = numpy

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
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if out is None:
            return product
        if accumulate:
            out += product
        else:
            out[...] = product
        return out

    # -- recurrent kernels -------------------------------------------------------------

    def rnn_forward(self, cell, x_tbi, w_ih, w_hh, b_ih=None, b_hh=None, h0_bh=None,
                    c0_bh=None, lengths=None, peephole=None, training=False):
        """One layer, one direction, over whole sequences.

        ``cell`` is "rnn_tanh", "rnn_relu", "lstm" or "gru". Returns
        ``(out_tbh, h_n_bh, c_n_bh or None, cache or None)``; the cache (training only) is
        what ``rnn_backward`` needs. Steps past a sequence's length give zero output and
        leave its state unchanged.
        """
        return _core.sequence_forward(cell, x_tbi, w_ih, w_hh, b_ih, b_hh, h0_bh, c0_bh,
                                      lengths, peephole, training)

    def rnn_backward(self, cache, d_out_tbh, d_hn_bh=None, d_cn_bh=None, *, grad_w_ih,
                     grad_w_hh, grad_b_ih=None, grad_b_hh=None, grad_peephole=None):
        """Backpropagation through time for one ``rnn_forward(training=True)`` call.

        Adds the parameter gradients into the ``grad_*`` buffers and returns
        ``(dx_tbi, dh0_bh, dc0_bh or None)``.
        """
        return _core.sequence_backward(cache, d_out_tbh, d_hn_bh, d_cn_bh,
                                       grad_w_ih=grad_w_ih, grad_w_hh=grad_w_hh,
                                       grad_b_ih=grad_b_ih, grad_b_hh=grad_b_hh,
                                       grad_peephole=grad_peephole)

    def network_step(self, cell, embedding, layers, decoder_weight, decoder_bias, batch):
        """A callable ``(token_ids, h, c, log_probs)`` that reads one token per text through
        the whole network (embedding, ``layers`` of ``(w_ih, w_hh, b_ih, b_hh, peephole)``,
        decoder, log-softmax) in one compiled call; see ``_core.NetworkStep``."""
        return _core.NetworkStep(cell, embedding, layers, decoder_weight, decoder_bias, batch)

    def reverse_sequences(self, x_tbf, lengths=None, out=None):
        """Reverse each sequence in time within its own length; zeros past the end.

        Its own inverse on the valid steps, so a reverse-direction layer applies it to its
        input before the forward kernel and to the kernel's output after.
        """
        return _core.reverse_sequences(x_tbf, lengths, out)
