"""Recurrent layers: RNN, LSTM and GRU, stacked and bidirectional, with torch.nn's API.

Arguments, return values, shapes, parameter names and gate order are PyTorch's, so a
torch state dict loads unchanged and gives the same numbers. The work of each layer and
direction is one call into the backend's compiled kernels; the Python here only checks
arguments, routes arrays between layers and directions, and applies inter-layer dropout.

Recurrent dropout (``recurrent_dropout=p``, Keras's name; torch has no such argument) is
the variational dropout of Gal and Ghahramani on the recurrent connection: in training
mode each forward call draws one mask per layer and direction, per sequence and hidden
unit (zero with probability p, else 1/(1-p)), and it multiplies h_{t-1} where it enters
the recurrent product W_hh h_{t-1} at every step of that call. The state itself, the
outputs and a GRU's carry z * h_{t-1} are not masked (as in Keras, which applies the mask
to the matrix products' input only): dropping units of the carried state would erase the
GRU's memory, which is what its update gate is there to keep. The kernels take the mask
(``Ops.rnn_forward(recurrent_mask=...)``); the random numbers are drawn here.

Two things torch spells differently:

* Variable-length batches take a ``lengths`` argument (one int per sequence) instead of a
  ``PackedSequence``. Outputs past a sequence's end are zero and its final state is the
  one at its last valid step, as with a packed sequence in torch.
* Training goes through ``begin_update`` (see ``RNNBase.begin_update``); calling the layer
  is inference and keeps no cache.
"""

import math
import warnings

import numpy

from predtext.backend.cells import get_cell
from predtext.nn import init
from predtext.nn.module import Module, Parameter, check_dtype

# Torch's four parameters of a layer; the kernels take one more array, a cell's extra
# weights (an LSTM's peepholes).
_TORCH_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RNNBase(Module):
    """What RNN, LSTM and GRU share: parameters, argument checks, the stacked run.

    ``cell`` names a cell of ``predtext.backend.cells`` ("rnn_tanh", "rnn_relu", "lstm",
    "gru"). Parameters of layer k are ``weight_ih_l{k}`` (G*H, in), ``weight_hh_l{k}``
    (G*H, H) and, with ``bias``, ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (G*H,), where G is
    the cell's number of gate blocks (1, 4 or 3); with ``peephole``, the cell's extra
    parameter (an LSTM's ``weight_ch_l{k}``). The reverse direction adds ``_reverse``.
    Every parameter starts as U(-1/sqrt(H), 1/sqrt(H)), drawn from ``rng`` or the shared
    generator. ``RNNBase.for_cell`` makes a layer of any cell.
    """

    #: The cells a subclass runs (``for_cell`` picks the subclass by them).
    cells = ()

    @classmethod
    def for_cell(cls, cell, input_size, hidden_size, num_layers=1, **options):
        """A layer of ``cell``: the torch-named subclass that runs it (RNN, LSTM, GRU), told
        the cell's nonlinearity where it takes one, or an RNNBase for a cell torch has no
        class for. ``options`` are the other arguments of that class."""
        spec = get_cell(cell)
        for layer in RNNBase.__subclasses__():
            if cell in layer.cells:
                if spec.nonlinearity is not None:
                    options["nonlinearity"] = spec.nonlinearity
                return layer(input_size, hidden_size, num_layers, **options)
        return RNNBase(cell, input_size, hidden_size, num_layers, **options)

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, peephole=False,
                 dtype=numpy.float32, rng=None, recurrent_dropout=0.0):
        super().__init__()
        spec = get_cell(cell)
        if peephole and not spec.extra_parameters:
            raise ValueError(f"peephole: only an LSTM has peephole weights (cell={cell!r})")
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("num_layers", num_layers)
        _check_probability("dropout", dropout)
        _check_probability("recurrent_dropout", recurrent_dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout acts between recurrent layers only, so it has no effect "
                          f"with num_layers=1 (got dropout={dropout})", stacklevel=3)
        self.cell = cell
        self._has_cell_state = spec.has_cell_state
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.peephole = bool(peephole)
        self.dtype = check_dtype(dtype)
        self.rng = rng if rng is None else init.get_rng(rng)

        xp = self.ops.xp
        gates_h = spec.gates * hidden_size
        extra = spec.extra_parameters[0] if spec.extra_parameters else (None, 0)
        # Names of (w_ih, w_hh, b_ih, b_hh, extra) per layer and direction, in torch's
        # registration order, so state dicts list them as torch does.
        self._names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {"weight_ih": (gates_h, layer_input),
                          "weight_hh": (gates_h, hidden_size)}
                if self.bias:
                    shapes["bias_ih"] = shapes["bias_hh"] = (gates_h,)
                if self.peephole:
                    shapes[extra[0]] = (extra[1], hidden_size)
                for base, shape in shapes.items():
                    setattr(self, base + suffix, Parameter(xp.zeros(shape, dtype=self.dtype)))
                self._names.append(tuple(
                    base + suffix if base in shapes else None
                    for base in _TORCH_PARAMETERS + (extra[0],)))
        self.reset_parameters()

    def reset_parameters(self, rng=None):
        """Redraw every parameter from U(-1/sqrt(H), 1/sqrt(H)), as torch does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            init.uniform_(param.data, -bound, bound, rng=rng if rng is not None else self.rng)

    @property
    def all_weights(self):
        """The parameters grouped per layer and direction, like torch's ``all_weights``."""
        return [[self._parameters[name] for name in names if name is not None]
                for names in self._names]

    def flatten_parameters(self):
        """Does nothing: present so code written for torch runs unchanged."""

    # -- running ---------------------------------------------------------------------------

    def forward(self, x, state0=None, lengths=None):
        """Inference: returns ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM.

        x is ``(T, B, input_size)`` (``(B, T, input_size)`` with ``batch_first``) or an
        unbatched ``(T, input_size)``. ``state0`` is ``h0`` (``(h0, c0)`` for an LSTM) of
        shape ``(num_layers * num_directions, B, hidden_size)``, zeros when None.
        ``lengths`` gives each sequence's number of valid steps (1..T). The output has
        ``num_directions * hidden_size`` features, forward then reverse. Inter-layer
        dropout applies in training mode, as in torch; nothing is cached.
        """
        x_tbi, h0, c0, lengths, unbatched = self._prepare(x, state0, lengths)
        out_tbh, h_n, c_n, _, _ = self._run(x_tbi, h0, c0, lengths, keep_cache=False)
        return self._returns(out_tbh, h_n, c_n, unbatched)

    def begin_update(self, x, state0=None, lengths=None):
        """Training forward: returns ``((output, state), backprop)``.

        Arguments and ``(output, state)`` are those of ``forward``.
        ``backprop(d_output, d_state=None)`` takes the gradients of the output and of the
        final state (``d_h_n``, or ``(d_h_n, d_c_n)`` for an LSTM, either may be None)
        and returns ``(dx, dstate0)`` shaped like ``x`` and ``state0`` (``dstate0`` is
        the gradient of the zero state when ``state0`` was None). It adds the parameter
        gradients into each ``Parameter.grad``, again on every call.
        """
        x_tbi, h0, c0, lengths, unbatched = self._prepare(x, state0, lengths)
        out_tbh, h_n, c_n, caches, masks = self._run(x_tbi, h0, c0, lengths, keep_cache=True)
        output, state = self._returns(out_tbh, h_n, c_n, unbatched)
        batch = x_tbi.shape[1]

        def backprop(d_output, d_state=None):
            d_out_tbh = self._check_d_output(d_output, output.shape, unbatched)
            d_hn, d_cn = self._check_state(d_state, batch, unbatched, "d_state")
            dx_tbi, dh0, dc0 = self._backward(d_out_tbh, d_hn, d_cn, caches, masks, lengths)
            return self._returns(dx_tbi, dh0, dc0, unbatched)

        return (output, state), backprop

    def _run(self, x_tbi, h0_lbh, c0_lbh, lengths, keep_cache):
        """The stacked, bidirectional forward over time-major contiguous input."""
        ops, xp = self.ops, self.ops.xp
        H, D = self.hidden_size, self.num_directions
        drop = self.dropout if self.training else 0.0
        recurrent_drop = self.recurrent_dropout if self.training else 0.0
        h_n, c_n, caches, masks = [], [], [], []
        layer_input = x_tbi
        for layer in range(self.num_layers):
            if D == 2:
                layer_output = xp.empty(layer_input.shape[:2] + (2 * H,), dtype=self.dtype)
            for direction in range(D):
                k = layer * D + direction
                w_ih, w_hh, b_ih, b_hh, peep = (
                    None if p is None else p.data for p in self._params(k))
                h0 = None if h0_lbh is None else h0_lbh[k]
                c0 = None if c0_lbh is None else c0_lbh[k]
                # The reverse direction runs the forward kernel over each sequence
                # reversed within its own length, then reverses the result back.
                inp = layer_input
                if direction == 1:
                    inp = ops.reverse_sequences(layer_input, lengths)
                # The cache keeps the recurrent mask for backward. Passed only when there
                # is one, so a backend written before the argument still runs the rest.
                masking = {}
                if recurrent_drop:
                    masking["recurrent_mask"] = self._dropout_mask((inp.shape[1], H),
                                                                   recurrent_drop)
                out, h, c, cache = ops.rnn_forward(self.cell, inp, w_ih, w_hh, b_ih, b_hh, h0,
                                                   c0, lengths, peep, keep_cache, **masking)
                if direction == 1:
                    out = ops.reverse_sequences(out, lengths)
                if D == 2:
                    layer_output[:, :, direction * H:(direction + 1) * H] = out
                else:
                    layer_output = out
                h_n.append(h)
                c_n.append(c)
                caches.append(cache)
            if drop and layer < self.num_layers - 1:
                mask = self._dropout_mask(layer_output.shape, drop)
                layer_output = layer_output * mask
                masks.append(mask)
            layer_input = layer_output
        h_n = xp.stack(h_n)
        c_n = xp.stack(c_n) if self._has_cell_state else None
        return layer_input, h_n, c_n, caches, masks

    def _backward(self, d_out_tbh, d_hn, d_cn, caches, masks, lengths):
        """Backpropagation through the stack, top layer first; returns time-major grads."""
        ops, xp = self.ops, self.ops.xp
        H, D = self.hidden_size, self.num_directions
        batch = d_out_tbh.shape[1]
        dh0 = xp.empty((self.num_layers * D, batch, H), dtype=self.dtype)
        dc0 = xp.empty_like(dh0) if self._has_cell_state else None
        d_layer_output = d_out_tbh
        for layer in reversed(range(self.num_layers)):
            d_input = None
            for direction in range(D):
                k = layer * D + direction
                p_ih, p_hh, p_bih, p_bhh, p_peep = self._params(k)
                d_out = d_layer_output
                if D == 2:
                    features = slice(direction * H, (direction + 1) * H)
                    d_out = xp.ascontiguousarray(d_layer_output[:, :, features])
                if direction == 1:
                    d_out = ops.reverse_sequences(d_out, lengths)
                dx, dh0[k], dc0_k = ops.rnn_backward(
                    caches[k], d_out,
                    None if d_hn is None else d_hn[k], None if d_cn is None else d_cn[k],
                    grad_w_ih=p_ih.grad, grad_w_hh=p_hh.grad,
                    grad_b_ih=None if p_bih is None else p_bih.grad,
                    grad_b_hh=None if p_bhh is None else p_bhh.grad,
                    grad_peephole=None if p_peep is None else p_peep.grad)
                if dc0 is not None:
                    dc0[k] = dc0_k
                if direction == 1:
                    dx = ops.reverse_sequences(dx, lengths)
                if d_input is None:
                    d_input = dx
                else:
                    d_input += dx
            if layer > 0 and masks:
                d_input *= masks[layer - 1]
            d_layer_output = d_input
        return d_layer_output, dh0, dc0

    def layer_parameters(self, index):
        """(w_ih, w_hh, b_ih, b_hh, extra) Parameters of layer and direction ``index``
        (``layer * num_directions + direction``), None for those the layer has not; extra
        is the cell's extra weights (an LSTM's peepholes), what the kernels take.

        Looked up by name on every call, so a parameter replaced by assignment is used.
        """
        params = self._parameters
        return tuple(None if name is None else params[name] for name in self._names[index])

    _params = layer_parameters

    def _dropout_mask(self, shape, p):
        keep = init.get_rng(self.rng).random(shape) >= p
        return self.ops.asarray(keep.astype(self.dtype) / self.dtype.type(1.0 - p))

    # -- shapes and checks -------------------------------------------------------------------

    def _layout(self, unbatched):
        if unbatched:
            return f"(T, {self.input_size})"
        if self.batch_first:
            return f"(B, T, {self.input_size})"
        return f"(T, B, {self.input_size})"

    def _prepare(self, x, state0, lengths):
        """Check the arguments; return time-major contiguous x, states and int32 lengths."""
        xp = self.ops.xp
        x = self._as_float_array("input", x)
        unbatched = x.ndim == 2
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape {self._layout(False)} or unbatched "
                             f"{self._layout(True)}, got {tuple(x.shape)}")
        if unbatched:
            x_tbi = x[:, None, :]
        elif self.batch_first:
            x_tbi = x.transpose(1, 0, 2)
        else:
            x_tbi = x
        if x_tbi.shape[0] < 1 or x_tbi.shape[1] < 1:
            raise ValueError(f"input: expected at least one step and one sequence, got shape "
                             f"{tuple(x.shape)} for layout {self._layout(unbatched)}")
        # The only copy of the input, and only when its memory is not time-major already.
        x_tbi = xp.ascontiguousarray(x_tbi)
        T, B = x_tbi.shape[:2]
        h0, c0 = self._check_state(state0, B, unbatched, "state0")
        return x_tbi, h0, c0, _check_lengths(lengths, T, B), unbatched

    def _check_state(self, state, batch, unbatched, argument):
        """Return ``(h, c)`` as contiguous ``(L*D, B, H)`` arrays (None where not given)."""
        if state is None:
            return None, None
        if self._has_cell_state:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{argument}: expected a pair (h, c) for an LSTM, "
                                f"got {type(state).__name__}")
            h, c = state
        else:
            if isinstance(state, (tuple, list)):
                raise TypeError(f"{argument}: expected one array h for a {type(self).__name__}, "
                                f"got a {type(state).__name__}")
            h, c = state, None
        return (self._check_state_array(argument, "h", h, batch, unbatched),
                self._check_state_array(argument, "c", c, batch, unbatched))

    def _check_state_array(self, argument, part, value, batch, unbatched):
        if value is None:
            return None
        name = f"{argument} ({part})"
        value = self._as_float_array(name, value)
        stacked = self.num_layers * self.num_directions
        expected = (stacked, self.hidden_size) if unbatched else (stacked, batch, self.hidden_size)
        if tuple(value.shape) != expected:
            raise ValueError(f"{name}: expected shape {expected} (num_layers * num_directions, "
                             f"{'' if unbatched else 'B, '}hidden_size), got {tuple(value.shape)}")
        if unbatched:
            value = value[:, None, :]
        return self.ops.xp.ascontiguousarray(value)

    def _check_d_output(self, d_output, expected, unbatched):
        d_output = self._as_float_array("d_output", d_output)
        if tuple(d_output.shape) != tuple(expected):
            raise ValueError(f"d_output: expected the output's shape {tuple(expected)}, "
                             f"got {tuple(d_output.shape)}")
        if unbatched:
            d_output = d_output[:, None, :]
        elif self.batch_first:
            d_output = d_output.transpose(1, 0, 2)
        return self.ops.xp.ascontiguousarray(d_output)

    def _as_float_array(self, name, value):
        """An array of the layer's dtype; a float array of another dtype is an error, as in
        torch, rather than a silent copy at another precision."""
        value = self.ops.accept(name, value, self.dtype)
        if value.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (the layer's dtype), "
                            f"got {value.dtype}")
        return value

    def _returns(self, out_tbh, h, c, unbatched):
        """Time-major results in the caller's layout: ``(output, state)``."""
        if unbatched:
            out = out_tbh[:, 0, :]
            h = h[:, 0, :]
            c = None if c is None else c[:, 0, :]
        elif self.batch_first:
            out = out_tbh.transpose(1, 0, 2)  # a view, as in torch
        else:
            out = out_tbh
        return out, ((h, c) if self._has_cell_state else h)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        nonlinearity = get_cell(self.cell).nonlinearity
        if nonlinearity not in (None, "tanh"):  # torch's default
            text += f", nonlinearity={nonlinearity!r}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("peephole", False),
                              ("recurrent_dropout", 0.0)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.dtype != numpy.float32:
            text += f", dtype={self.dtype}"
        return text


class RNN(RNNBase):
    """Elman RNN: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, act tanh or relu.

    Same arguments as ``torch.nn.RNN`` (plus ``dtype``, a seedable ``rng`` for the
    initial weights and dropout masks, and ``recurrent_dropout``: see the module doc).
    Returns ``(output, h_n)``; see ``RNNBase.forward`` and ``RNNBase.begin_update``.
    """

    cells = ("rnn_tanh", "rnn_relu")

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=numpy.float32,
                 rng=None, recurrent_dropout=0.0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, dtype=dtype, rng=rng,
                         recurrent_dropout=recurrent_dropout)


class LSTM(RNNBase):
    """Long short-term memory, gates i, f, g, o stacked in that order as in torch.

    Same arguments as ``torch.nn.LSTM`` (no ``proj_size``), plus ``dtype``, a seedable
    ``rng``, ``recurrent_dropout`` (see the module doc) and ``peephole``: with it each layer
    and direction has a ``weight_ch_l{k}`` of shape ``(3, hidden_size)`` whose rows weight
    the cell state into the input, forget and output gates (c_{t-1} for i and f, c_t for
    o). Torch has no peephole weights, so such a model has no torch counterpart. Returns
    ``(output, (h_n, c_n))``.
    """

    cells = ("lstm",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, peephole=False, dtype=numpy.float32,
                 rng=None, recurrent_dropout=0.0):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, peephole=peephole, dtype=dtype, rng=rng,
                         recurrent_dropout=recurrent_dropout)


class GRU(RNNBase):
    """Gated recurrent unit, gates r, z, n as in torch (``b_hn`` inside the reset product).

    Same arguments as ``torch.nn.GRU`` plus ``dtype``, a seedable ``rng`` and
    ``recurrent_dropout`` (see the module doc; the carry z * h_{t-1} is not masked).
    Returns ``(output, h_n)``.
    """

    cells = ("gru",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=numpy.float32, rng=None,
                 recurrent_dropout=0.0):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, dtype=dtype, rng=rng,
                         recurrent_dropout=recurrent_dropout)


def _check_probability(name, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float, numpy.floating))
            or not 0 <= value < 1):
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_lengths(lengths, steps, batch):
    """Per-sequence lengths as a contiguous int32 array, or None when not given."""
    if lengths is None:
        return None
    array = numpy.asarray(lengths)
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {array.dtype}")
    if array.shape != (batch,):
        raise ValueError(f"lengths: expected one length per sequence, shape ({batch},), "
                         f"got {array.shape}")
    low, high = int(array.min()), int(array.max())
    if low < 1 or high > steps:
        raise ValueError(f"lengths: expected values in [1, {steps}] (the input has {steps} "
                         f"steps), got values from {low} to {high}")
    return numpy.ascontiguousarray(array, dtype=numpy.int32)
