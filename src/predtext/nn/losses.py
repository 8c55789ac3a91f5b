"""Loss functions that return the loss and its gradient together.

Each function returns ``(loss, d_input)``; the Module forms (``CrossEntropyLoss``,
``MSELoss``) wrap them in the usual ``forward`` / ``begin_update`` pair. Reductions follow
torch: ``"mean"``, ``"sum"`` or ``"none"``.
"""

import numpy

from predtext.backend import ops_of
from predtext.nn.module import Module

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def softmax_cross_entropy(logits_nv, targets_n, ignore_index=-100, reduction="mean",
                          overwrite=False, as_array=False):
    """Fused, numerically stable softmax cross-entropy and its gradient.

    ``logits_nv`` has the class axis last, ``(..., V)``; ``targets_n`` holds class ids
    with the leading shape ``(...)``. (torch puts the class axis second; here it is last
    because time-major model outputs are ``(T, B, V)``.) Targets equal to
    ``ignore_index`` contribute no loss and no gradient.

    Returns ``(loss, d_logits)``:

    * ``"mean"``: loss averaged over non-ignored targets, as torch does; ``d_logits`` is
      its gradient. With every target ignored the loss is nan (as in torch) and
      ``d_logits`` is zero, so such a batch changes nothing.
    * ``"sum"``: summed loss and its gradient.
    * ``"none"``: per-target losses with shape ``(...)`` (zero where ignored), and
      ``d_logits`` the gradient of their sum.

    ``overwrite=True``: ``d_logits`` *is* ``logits_nv`` (a C-contiguous array), overwritten
    with the gradient. A word model's logits are (T*B, V) with V in the tens of thousands;
    doing the max, exp, normalisation and gradient in the one array, without temporaries,
    makes the loss a few times cheaper there. The per-target losses are summed in float64.

    ``as_array=True``: a "mean" or "sum" loss comes back as a 0-d float64 array of the
    logits' backend instead of a float, so that on a GPU nothing is read back to the host
    (a training loop accumulates it there and reads it once per logging interval). Host
    targets are checked on the host, before they are copied to the device, for the same
    reason.
    """
    _check_reduction(reduction)
    ops = ops_of(logits_nv)
    xp = ops.xp
    logits_nv = ops.accept("logits_nv", logits_nv)
    host_targets = None
    if not ops.owns(targets_n) and isinstance(targets_n, (numpy.ndarray, list, tuple)):
        host_targets = numpy.asarray(targets_n)
    targets_n = ops.indices("targets_n", targets_n)
    if logits_nv.dtype.kind != "f":
        raise TypeError(f"logits_nv: expected a floating-point array, got dtype {logits_nv.dtype}")
    if targets_n.dtype.kind not in "iu":
        raise TypeError(f"targets_n: expected integer class ids, got dtype {targets_n.dtype}")
    if logits_nv.ndim < 1 or targets_n.shape != logits_nv.shape[:-1]:
        raise ValueError(
            f"targets_n: expected shape {tuple(logits_nv.shape[:-1])} to match logits_nv "
            f"{tuple(logits_nv.shape)}, got {tuple(targets_n.shape)}"
        )
    if overwrite and not logits_nv.flags.c_contiguous:
        raise ValueError("logits_nv: overwrite=True needs a C-contiguous array")
    n_classes = logits_nv.shape[-1]
    leading_shape = targets_n.shape
    scores_nv = logits_nv.reshape(-1, n_classes)
    if not overwrite:
        scores_nv = scores_nv.copy()
    targets = targets_n.reshape(-1)

    kept = targets != ignore_index
    # The range check and the count read the targets: on the host when they came from
    # there (the device array is the same values), so that a GPU is not waited for.
    checked = targets if host_targets is None else host_targets.reshape(-1)
    kept_on_host = kept if host_targets is None else checked != ignore_index
    kept_targets = checked[kept_on_host]
    if kept_targets.size and (int(kept_targets.min()) < 0 or int(kept_targets.max()) >= n_classes):
        raise ValueError(
            f"targets_n: class ids must lie in [0, {n_classes}) or equal ignore_index="
            f"{ignore_index}, got values from {int(kept_targets.min())} "
            f"to {int(kept_targets.max())}"
        )
    n_kept = int(kept_on_host.sum())
    rows = xp.arange(targets.shape[0])
    safe_targets = xp.where(kept, targets, 0)  # ignored rows index class 0, then get masked

    # Subtracting the row maximum keeps exp() from overflowing; it cancels in the softmax.
    scores_nv -= scores_nv.max(axis=1, keepdims=True)
    target_scores_n = scores_nv[rows, safe_targets].astype(xp.float64)
    xp.exp(scores_nv, out=scores_nv)
    sum_n = scores_nv.sum(axis=1, keepdims=True)
    # where(), not multiplication, so that odd values in ignored rows cannot leak in.
    losses_n = xp.where(kept, xp.log(sum_n[:, 0].astype(xp.float64)) - target_scores_n, 0.0)
    if reduction == "mean" and n_kept == 0:
        scores_nv[...] = 0
        nan = xp.asarray(float("nan")) if as_array else float("nan")
        return nan, scores_nv.reshape(logits_nv.shape)

    # softmax / n, minus 1 / n at each target: the gradient of the loss summed over targets
    # (n = 1) or of their mean (n = n_kept).
    n = n_kept if reduction == "mean" else 1
    scores_nv *= (1.0 / (sum_n * n)).astype(scores_nv.dtype)
    scores_nv[rows, safe_targets] -= scores_nv.dtype.type(1.0 / n)
    if n_kept != scores_nv.shape[0]:
        scores_nv[~kept] = 0
    d_logits = scores_nv.reshape(logits_nv.shape)
    if reduction == "none":
        return losses_n.astype(logits_nv.dtype).reshape(leading_shape), d_logits
    if as_array:
        # where() above zeroed the ignored rows: a plain sum, with no boolean indexing
        # (whose result size a GPU would have to report back to the host).
        loss = losses_n.sum()
        return (loss / n_kept if reduction == "mean" else loss), d_logits
    loss = float(losses_n[kept].sum())
    return (loss / n_kept if reduction == "mean" else loss), d_logits


def softmax_cross_entropy_(logits, targets, ignore_index=-100, as_array=False):
    """``softmax_cross_entropy`` with the mean reduction, in place: ``(mean_loss, d_logits)``
    where ``d_logits`` *is* ``logits``, overwritten with the gradient."""
    return softmax_cross_entropy(logits, targets, ignore_index, "mean", overwrite=True,
                                 as_array=as_array)


def mse_loss(input, target, reduction="mean"):
    """Squared error ``(input - target)**2`` with torch's reductions; returns ``(loss, d_input)``.

    For ``"none"`` the loss is elementwise and ``d_input`` is the gradient of its sum.
    Shapes must match exactly (no broadcasting, which in torch only produces a warning).
    """
    _check_reduction(reduction)
    ops = ops_of(input)
    input = ops.accept("input", input)
    target = ops.accept("target", target, input.dtype).astype(input.dtype, copy=False)
    if input.dtype.kind != "f":
        raise TypeError(f"input: expected a floating-point array, got dtype {input.dtype}")
    if input.shape != target.shape:
        raise ValueError(
            f"target: expected shape {tuple(input.shape)} to match input, got {tuple(target.shape)}"
        )
    diff = input - target
    d_input = 2 * diff
    if reduction == "none":
        return diff * diff, d_input
    if reduction == "sum":
        return float((diff * diff).sum()), d_input
    count = diff.size
    if count == 0:
        return float("nan"), d_input
    return float((diff * diff).sum() / count), d_input / d_input.dtype.type(count)


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def _compute(self, input, target):
        raise NotImplementedError

    def forward(self, input, target):
        return self._compute(input, target)[0]

    def begin_update(self, input, target):
        """``(loss, backprop)``; ``backprop(d_loss=1.0)`` returns the gradient for ``input``.

        ``d_loss`` scales the gradient: a number for "mean"/"sum", an array shaped like
        the loss for "none".
        """
        loss, d_input = self._compute(input, target)

        def backprop(d_loss=1.0):
            if self.reduction == "none":
                d_loss = self.ops.xp.asarray(d_loss, dtype=d_input.dtype)
                # Per-element weights broadcast over the class axis when there is one.
                extra_axes = d_input.ndim - d_loss.ndim
                return d_input * d_loss.reshape(d_loss.shape + (1,) * extra_axes)
            return d_input * d_input.dtype.type(d_loss)

        return loss, backprop

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Module form of ``softmax_cross_entropy``: ``loss = criterion(logits, targets)``.

    As in torch it takes raw logits (no softmax beforehand) and averages over targets
    that are not ``ignore_index``; unlike torch, the class axis is last.
    """

    def __init__(self, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def _compute(self, input, target):
        return softmax_cross_entropy(input, target, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    """Module form of ``mse_loss``."""

    def _compute(self, input, target):
        return mse_loss(input, target, self.reduction)
