"""Gradient clipping, in place on ``Parameter.grad``."""

import math

import numpy

from predtext.backend import ops_of
from predtext.nn.module import Parameter


def _as_param_list(params):
    if isinstance(params, Parameter):
        return [params]
    params = list(params)
    for param in params:
        if not isinstance(param, Parameter):
            raise TypeError(f"params: expected Parameters, got a {type(param).__name__}")
    return params


def _norm_order(norm_type):
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
        raise ValueError(f"norm_type: expected a positive number or 'inf', got {norm_type!r}")
    return float(norm_type)


def total_grad_norm(params, norm_type=2.0, as_array=False):
    """The ``norm_type``-norm of all gradients taken together, as a float (``as_array``:
    a 0-d float64 array of the gradients' backend, read back to the host by nothing)."""
    order = _norm_order(norm_type)
    grads = [param.grad for param in _as_param_list(params)]
    if not grads:
        return numpy.zeros((), numpy.float64) if as_array else 0.0
    xp = ops_of(grads[0]).xp
    # The norm of the per-parameter norms equals the norm of the concatenation, and
    # avoids building that concatenation. They stay arrays until the end: on a GPU that is
    # one read back to the host, not one per parameter.
    if order == math.inf:
        per_param = [xp.abs(grad).max() for grad in grads if grad.size]
        if not per_param:
            return xp.zeros((), xp.float64) if as_array else 0.0
        total = xp.max(xp.stack(per_param))
    else:
        per_param = xp.stack([xp.linalg.norm(grad.ravel(), ord=order) for grad in grads])
        total = xp.linalg.norm(per_param, ord=order)
    return xp.asarray(total, dtype=xp.float64) if as_array else float(total)


def clip_grad_norm_(params, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    as_array=False):
    """Scale gradients so that their total norm is at most ``max_norm``; return the norm.

    The returned value is the total norm before clipping (as in torch), so training code
    can log it. When it is nan or inf the gradients are left untouched (torch would fill
    them with nan) and the value is returned anyway: check ``math.isfinite`` on it and
    skip ``optimizer.step()`` for that batch. With ``error_if_nonfinite=True`` a
    non-finite norm raises RuntimeError instead, as torch does.

    ``as_array=True``: the norm comes back as a 0-d float64 array of the gradients'
    backend, and the scaling is done there too, so that a GPU is never waited for; the
    result is the same as without it (a scale of at least 1 multiplies by exactly 1).
    ``error_if_nonfinite`` needs the norm on the host, so it cannot go with it.
    """
    params = _as_param_list(params)
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm >= 0:
        raise ValueError(f"max_norm: expected a non-negative number, got {max_norm!r}")
    if as_array:
        if error_if_nonfinite:
            raise ValueError("error_if_nonfinite: needs the norm on the host; "
                             "it cannot go with as_array=True")
        return _clip_on_device(params, max_norm, norm_type)
    total = total_grad_norm(params, norm_type)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is non-finite ({total}); "
                "pass error_if_nonfinite=False to get the norm back and skip the step"
            )
        return total
    # The 1e-6 keeps the division finite for all-zero gradients, as torch does.
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for param in params:
            param.grad *= param.grad.dtype.type(scale)
    return total


def clip_grad_value_(params, clip_value):
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place."""
    params = _as_param_list(params)
    if (isinstance(clip_value, bool) or not isinstance(clip_value, (int, float))
            or not clip_value >= 0):
        raise ValueError(f"clip_value: expected a non-negative number, got {clip_value!r}")
    for param in params:
        ops_of(param.grad).xp.clip(param.grad, -clip_value, clip_value, out=param.grad)


def _clip_on_device(params, max_norm, norm_type):
    """``clip_grad_norm_`` with the norm and the scale kept as arrays of the backend."""
    total = total_grad_norm(params, norm_type, as_array=True)
    if not params:
        return total
    xp = ops_of(params[0].grad).xp
    # A non-finite norm leaves the gradients untouched, as on the host (scale 1).
    scale = xp.where(xp.isfinite(total), xp.minimum(max_norm / (total + 1e-6), 1.0), 1.0)
    for param in params:
        param.grad *= scale.astype(param.grad.dtype)
    return total
