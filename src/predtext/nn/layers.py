"""Feed-forward layers: Linear, Embedding, Dropout, LockedDropout, Sequential.

Each layer has ``forward`` (inference, no cache) and ``begin_update`` returning
``(output, backprop)``; ``backprop(d_output)`` adds into the parameters' ``.grad`` and
returns the gradient with respect to the input.
"""

import math

import numpy

from predtext.nn import init
from predtext.nn.module import Module, Parameter, check_dtype


class Linear(Module):
    """``y = x @ weight.T + bias`` over the last axis; inputs may have any leading shape.

    ``weight`` has shape ``(out_features, in_features)`` and both it and ``bias`` start
    as U(-1/sqrt(in_features), 1/sqrt(in_features)), which is what torch's
    kaiming-uniform with a=sqrt(5) works out to.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=numpy.float32, rng=None):
        super().__init__()
        _check_positive_int("in_features", in_features, allow_zero=True)
        _check_positive_int("out_features", out_features, allow_zero=True)
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = check_dtype(dtype)
        xp = self.ops.xp
        self.weight = Parameter(xp.zeros((out_features, in_features), dtype=self.dtype))
        self.bias = Parameter(xp.zeros((out_features,), dtype=self.dtype)) if bias else None
        self.reset_parameters(rng=rng)

    def reset_parameters(self, rng=None):
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        init.uniform_(self.weight.data, -bound, bound, rng=rng)
        if self.bias is not None:
            init.uniform_(self.bias.data, -bound, bound, rng=rng)

    def _check_input(self, x):
        x = self.ops.xp.ascontiguousarray(self.ops.accept("input", x, self.dtype), dtype=self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"input: expected shape (..., {self.in_features}), got {tuple(x.shape)}"
            )
        return x

    def _affine(self, x):
        y = self.ops.matmul(x.reshape(-1, self.in_features), self.weight.data, trans_b=True)
        y = y.reshape(x.shape[:-1] + (self.out_features,))
        if self.bias is not None:
            y += self.bias.data
        return y

    def forward(self, x):
        return self._affine(self._check_input(x))

    def begin_update(self, x):
        x = self._check_input(x)
        y = self._affine(x)

        def backprop(d_y):
            d_y = self.ops.accept("d_output", d_y, self.dtype)
            if d_y.shape != y.shape:
                raise ValueError(f"d_output: expected shape {y.shape}, got {d_y.shape}")
            # Collapse leading axes so the weight gradient is one GEMM.
            d_y_no = d_y.reshape(-1, self.out_features)
            x_ni = x.reshape(-1, self.in_features)
            self.ops.matmul(d_y_no, x_ni, out=self.weight.grad, trans_a=True, accumulate=True)
            if self.bias is not None:
                self.bias.grad += d_y_no.sum(axis=0)
            d_x = self.ops.matmul(d_y_no, self.weight.data)
            return d_x.reshape(d_y.shape[:-1] + (self.in_features,))

        return y, backprop

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """A lookup table ``weight[ids]`` of shape ``(num_embeddings, embedding_dim)``.

    Rows start as N(0, 1), except the ``padding_idx`` row, which starts at zero and never
    receives a gradient. Ids may have any integer shape; the output adds an axis of
    size ``embedding_dim``. The backprop returns None: ids have no gradient.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=numpy.float32,
                 rng=None):
        super().__init__()
        _check_positive_int("num_embeddings", num_embeddings)
        _check_positive_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if not _is_int(padding_idx) or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"padding_idx: expected an int in [{-num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx!r}"
                )
            padding_idx = int(padding_idx) % num_embeddings  # torch normalises negatives
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.dtype = check_dtype(dtype)
        self.weight = Parameter(self.ops.xp.zeros((num_embeddings, embedding_dim),
                                                  dtype=self.dtype))
        self.reset_parameters(rng=rng)

    def reset_parameters(self, rng=None):
        init.normal_(self.weight.data, 0.0, 1.0, rng=rng)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def _check_ids(self, ids):
        # Host ids (what tokenizers make) are checked on the host, before the copy to a
        # device: reading the range back from a GPU would wait for it every batch.
        on_host = not self.ops.owns(ids) and isinstance(ids, (numpy.ndarray, list, tuple))
        checked = numpy.asarray(ids) if on_host else self.ops.indices("input", ids)
        if checked.dtype.kind not in "iu":
            raise TypeError(f"input: expected integer ids, got dtype {checked.dtype}")
        if checked.size and (int(checked.min()) < 0 or int(checked.max()) >= self.num_embeddings):
            raise ValueError(
                f"input: ids must lie in [0, {self.num_embeddings}), "
                f"got values from {int(checked.min())} to {int(checked.max())}"
            )
        return self.ops.indices("input", checked) if on_host else checked

    def forward(self, ids):
        ids = self._check_ids(ids)
        return self.weight.data[ids]

    def begin_update(self, ids):
        ids = self._check_ids(ids)
        output = self.weight.data[ids]

        def backprop(d_output):
            d_output = self.ops.accept("d_output", d_output, self.dtype)
            if d_output.shape != output.shape:
                raise ValueError(
                    f"d_output: expected shape {output.shape}, got {d_output.shape}"
                )
            flat_ids = ids.reshape(-1)
            rows = d_output.reshape(-1, self.embedding_dim)
            if self.padding_idx is not None:
                keep = flat_ids != self.padding_idx
                flat_ids, rows = flat_ids[keep], rows[keep]
            # Scatter-add: a repeated id must receive the sum of its rows' gradients.
            self.ops.scatter_add(self.weight.grad, flat_ids, rows)
            return None

        return output, backprop

    def extra_repr(self):
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p).

    Active only in training mode (``forward`` and ``begin_update`` alike); in eval mode
    it returns its input unchanged. Masks come from ``rng`` if given, else from the shared
    generator that ``predtext.nn.manual_seed`` resets.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = _check_probability(p)
        self.rng = rng if rng is None else init.get_rng(rng)

    def _mask_shape(self, x):
        return x.shape

    def _make_mask(self, x):
        keep = init.get_rng(self.rng).random(self._mask_shape(x)) >= self.p
        mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        return self.ops.asarray(mask)

    def _as_float(self, x):
        x = self.ops.accept("input", x)
        if x.dtype.kind != "f":
            raise TypeError(f"input: expected a floating-point array, got dtype {x.dtype}")
        return x

    def forward(self, x):
        x = self._as_float(x)
        if not self.training or self.p == 0:
            return x
        return x * self._make_mask(x)

    def begin_update(self, x):
        x = self._as_float(x)
        if not self.training or self.p == 0:
            return x, _identity_backprop
        mask = self._make_mask(x)

        def backprop(d_output):
            return d_output * mask

        return x * mask, backprop

    def extra_repr(self):
        return f"p={self.p}"


class LockedDropout(Dropout):
    """Variational dropout: one mask per sequence, shared across every time step.

    Input is ``(T, B, F)``, or ``(B, T, F)`` with ``batch_first=True``. Dropping the same
    features at every step regularises recurrent models without destroying the signal
    that a fresh per-step mask would.
    """

    def __init__(self, p=0.5, batch_first=False, rng=None):
        super().__init__(p, rng=rng)
        self.batch_first = bool(batch_first)

    def _mask_shape(self, x):
        if x.ndim != 3:
            layout = "(B, T, F)" if self.batch_first else "(T, B, F)"
            raise ValueError(f"input: expected a 3-d array {layout}, got shape {tuple(x.shape)}")
        batch, features = (x.shape[0], x.shape[2]) if self.batch_first else x.shape[1:]
        # The time axis has size 1 and broadcasts.
        return (batch, 1, features) if self.batch_first else (1, batch, features)

    def forward(self, x):
        x = self._as_float(x)
        self._mask_shape(x)  # validate the layout in eval mode too
        return super().forward(x)

    def begin_update(self, x):
        x = self._as_float(x)
        self._mask_shape(x)
        return super().begin_update(x)

    def extra_repr(self):
        return f"p={self.p}, batch_first={self.batch_first}"


class Sequential(Module):
    """Modules applied in order; parameters are named ``0.weight``, ``1.bias``... as in torch."""

    def __init__(self, *modules):
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"modules: argument {index} is a {type(module).__name__}, not a Module"
                )
            self.add_module(str(index), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for module in self:
            x = module.forward(x)
        return x

    def begin_update(self, x):
        backprops = []
        for module in self:
            x, backprop = module.begin_update(x)
            backprops.append(backprop)

        def backprop_all(d_output):
            for backprop in reversed(backprops):
                d_output = backprop(d_output)
            return d_output

        return x, backprop_all


def _identity_backprop(d_output):
    return d_output


def _is_int(value):
    return isinstance(value, (int, numpy.integer)) and not isinstance(value, bool)


def _check_positive_int(name, value, allow_zero=False):
    low = 0 if allow_zero else 1
    if not _is_int(value) or value < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: expected a {kind} int, got {value!r}")


def _check_probability(p):
    if isinstance(p, bool) or not isinstance(p, (int, float, numpy.floating)) or not 0 <= p < 1:
        raise ValueError(f"p: expected a dropout probability in [0, 1), got {p!r}")
    return float(p)
