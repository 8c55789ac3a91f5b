"""Optimizers with the update rules of ``torch.optim`` (single-tensor code path).

Each optimizer updates ``Parameter.data`` in place from ``Parameter.grad``, one array
operation per parameter. Besides torch's options, every optimizer takes ``l1``: an L1
penalty whose subgradient ``l1 * sign(w)`` is added to the gradient (together with any
coupled ``weight_decay``) before the update rule sees it. Gradients themselves are never
modified.

``state_dict()`` returns plain dicts, lists, numbers and NumPy arrays in torch's layout
(``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``) so a
checkpoint can be written without pickle; ``load_state_dict`` also accepts string
indices (as after a JSON round trip) and torch tensors.
"""

import math

import numpy

from predtext.backend import ops_of
from predtext.nn.module import Parameter, to_numpy_array


def _check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    return value


class Optimizer:
    """Base class: parameter groups, state, ``zero_grad`` and state dicts.

    ``params`` is an iterable of ``Parameter`` or of dicts (parameter groups) with a
    ``"params"`` entry and any hyperparameters that override the defaults for that group.
    Schedules change ``param_groups[i]["lr"]`` between steps.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, Parameter):
            raise TypeError("params: expected an iterable of Parameters, got a single Parameter")
        params = list(params)
        if not params:
            raise ValueError("params: the optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"params: expected Parameters, got a {type(param).__name__}"
                )
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError("params: some parameters appear in more than one parameter group")
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        group["params"] = params
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        for name in ("lr", "weight_decay", "l1"):
            _check_non_negative(name, group[name])

    def zero_grad(self):
        for group in self.param_groups:
            for param in group["params"]:
                param.zero_grad()

    #: Whether ``step(apply=...)`` is supported (the update can be masked on the device).
    masked_steps = False

    def step(self, closure=None, apply=None):
        """Update every parameter once; returns ``closure()`` if one is given, as torch does.

        ``apply``: a 0-d boolean array on the parameters' device (optimizers with
        ``masked_steps`` only). Where it is False the step leaves the parameters and the
        moments as they were, decided on the device: a GPU training loop skips a batch
        with a non-finite loss or norm without reading anything back to the host.
        """
        if apply is not None and not self.masked_steps:
            raise TypeError(f"apply: {type(self).__name__} has no masked steps (Adam and "
                            f"AdamW have)")
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.requires_grad:
                    state = self.state.setdefault(param, {})
                    if apply is None:
                        self._update(param, group, state)
                    else:
                        self._update(param, group, state, apply)
        return loss

    def _update(self, param, group, state):
        raise NotImplementedError

    @staticmethod
    def _penalised_grad(param, group, coupled_weight_decay=True):
        """The gradient plus the L2 (unless decoupled) and L1 penalties, as a new array."""
        grad = param.grad
        if coupled_weight_decay and group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        if group["l1"] != 0:
            grad = grad + group["l1"] * ops_of(param.data).xp.sign(param.data)
        return grad

    # -- state dicts ---------------------------------------------------------------------

    def state_dict(self):
        """Optimizer state as plain dicts of NumPy arrays and numbers, in torch's layout."""
        index_of = {}
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = []
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
                packed["params"].append(index_of[id(param)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index_of[id(param)]] = {
                        key: (numpy.array(ops_of(value).to_numpy(value), copy=True)
                              if hasattr(value, "shape") else value)
                        for key, value in self.state[param].items()
                    }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state saved by ``state_dict`` (or by the matching torch optimizer).

        The groups must hold the same number of parameters as this optimizer's; array
        shapes must match. Raises ValueError naming what differs, before changing anything.
        """
        try:
            saved_groups = state_dict["param_groups"]
            saved_state = state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError("state_dict: expected a dict with 'state' and "
                             "'param_groups'") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict: has {len(saved_groups)} parameter groups, "
                f"this optimizer has {len(self.param_groups)}"
            )
        param_of = {}
        for number, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"state_dict: parameter group {number} has {len(saved['params'])} "
                    f"parameters, this optimizer's has {len(group['params'])}"
                )
            for index, param in zip(saved["params"], group["params"]):
                param_of[int(index)] = param

        new_state = {}
        for index, entries in saved_state.items():
            if int(index) not in param_of:
                raise ValueError(f"state_dict: state for unknown parameter index {index!r}")
            param = param_of[int(index)]
            new_state[param] = {}
            for key, value in entries.items():
                if value is None:
                    continue  # torch stores momentum_buffer=None before the first step
                array = to_numpy_array(value)
                if array.ndim == 0:
                    number = array.item()
                    new_state[param][key] = int(number) if key == "step" else number
                elif array.shape == tuple(param.shape):
                    ops = ops_of(param.data)
                    new_state[param][key] = ops.asarray(array, dtype=param.dtype).copy()
                else:
                    raise ValueError(
                        f"state_dict: state[{index}][{key!r}]: expected shape "
                        f"{tuple(param.shape)}, got {array.shape}"
                    )

        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) else value
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for number, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {number}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    With momentum the buffer starts as the first gradient, then
    ``buf = momentum * buf + (1 - dampening) * grad``; the step is ``-lr * buf``, or
    ``-lr * (grad + momentum * buf)`` with Nesterov.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, l1=0.0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, l1=l1)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        _check_non_negative("momentum", group["momentum"])
        _check_non_negative("dampening", group["dampening"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")

    def _update(self, param, group, state):
        grad = self._penalised_grad(param, group)
        momentum = group["momentum"]
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.copy()
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= group["lr"] * grad


class RMSprop(Optimizer):
    """RMSprop as ``torch.optim.RMSprop``: divide by a running RMS of the gradient.

    ``square_avg = alpha * square_avg + (1 - alpha) * grad**2``; with ``centered`` the
    squared running mean of the gradient is subtracted first. ``eps`` is added after the
    square root.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, l1=0.0):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, l1=l1)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        for name in ("alpha", "eps", "momentum"):
            _check_non_negative(name, group[name])

    def _update(self, param, group, state):
        xp = ops_of(param.data).xp
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(param.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(param.data)
        grad = self._penalised_grad(param, group)
        alpha = group["alpha"]
        state["step"] += 1

        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = xp.sqrt(square_avg)
        avg += group["eps"]

        if group["momentum"] > 0:
            buffer = state["momentum_buffer"]
            buffer *= group["momentum"]
            buffer += grad / avg
            param.data -= group["lr"] * buffer
        else:
            param.data -= group["lr"] * (grad / avg)


class Adam(Optimizer):
    """Adam as ``torch.optim.Adam``, with bias-corrected moments and optional AMSGrad.

    ``weight_decay`` here is the classic L2 term added to the gradient; ``AdamW`` decays
    the weights directly instead.
    """

    decoupled_weight_decay = False
    masked_steps = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, l1=0.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, l1=l1)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        _check_non_negative("eps", group["eps"])
        betas = group["betas"]
        if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")

    def _update(self, param, group, state, apply=None):
        """One Adam step; with ``apply`` (a 0-d boolean array) each in-place change is
        taken only where it is True. The step count, kept on the host for the bias
        corrections, counts a skipped step too (they are rare: a non-finite batch)."""
        xp = ops_of(param.data).xp
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param.data)
            state["exp_avg_sq"] = xp.zeros_like(param.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param.data)
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"]

        def masked(target, new):
            # where(), not a product: a nan in the skipped values must not leak in.
            target[...] = xp.where(apply, new, target)

        if self.decoupled_weight_decay and group["weight_decay"] != 0:
            if apply is None:
                param.data *= 1 - lr * group["weight_decay"]
            else:
                masked(param.data, param.data * (1 - lr * group["weight_decay"]))
        grad = self._penalised_grad(param, group, not self.decoupled_weight_decay)

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if apply is None:
            exp_avg += (1 - beta1) * (grad - exp_avg)
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
        else:
            masked(exp_avg, exp_avg + (1 - beta1) * (grad - exp_avg))
            new_sq = exp_avg_sq * beta2
            new_sq += (1 - beta2) * grad * grad
            masked(exp_avg_sq, new_sq)

        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        if group["amsgrad"]:
            if apply is None:
                xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            else:
                masked(state["max_exp_avg_sq"], xp.maximum(state["max_exp_avg_sq"], exp_avg_sq))
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        denom = xp.sqrt(second_moment) / bias_correction2_sqrt
        denom += eps
        if apply is None:
            param.data -= step_size * (exp_avg / denom)
        else:
            masked(param.data, param.data - step_size * (exp_avg / denom))


class AdamW(Adam):
    """Adam with decoupled weight decay (``w *= 1 - lr * weight_decay`` before the step)."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, l1=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, l1=l1)
