"""Learning-rate schedules that set ``optimizer.param_groups[i]["lr"]``.

They follow ``torch.optim.lr_scheduler``: constructing a schedule sets the learning rate
for step 0, and ``step()`` is called once after each ``optimizer.step()`` (or once per
epoch, for epoch-based schedules). ``state_dict()`` is a plain dict of numbers and lists.
"""

import math

from predtext.nn.optim import Optimizer


def _check_optimizer(optimizer):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected a predtext Optimizer, got {type(optimizer).__name__}")
    return optimizer


class _ScheduleState:
    """What every schedule shares: its last rates and its state (all but the optimizer)."""

    def get_last_lr(self):
        """The learning rates the last ``step()`` (or the constructor) set."""
        return list(self._last_lr)

    def state_dict(self):
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update({key: value for key, value in state_dict.items()
                              if key != "optimizer"})


class LRScheduler(_ScheduleState):
    """Base class: keeps ``base_lrs`` and ``last_epoch`` and writes ``get_lr()`` into the groups.

    Subclasses implement ``get_lr()``, the learning rates at ``self.last_epoch``.
    """

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = _check_optimizer(optimizer)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in group for group in optimizer.param_groups):
            raise ValueError(
                "last_epoch: resuming a schedule needs 'initial_lr' in every parameter group "
                "(load the optimizer's state first)"
            )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps, as torch's StepLR.

    Like torch it scales the current rate (chainable) rather than recomputing it from
    the base rate, so it composes with other changes made to ``lr``.
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size: expected a positive int, got {step_size!r}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lrs
        return [lr * self.gamma for lr in lrs]


class CosineWithWarmup(LRScheduler):
    """Linear warmup, then cosine decay from each group's base rate down to ``min_lr``.

    Step ``s`` (0-based, the value of ``last_epoch``) uses:

    * ``s < warmup_steps``: ``base_lr * (s + 1) / warmup_steps``, so the first step
      already learns and step ``warmup_steps - 1`` reaches ``base_lr``;
    * ``warmup_steps <= s < total_steps``: ``min_lr + (base_lr - min_lr) *
      (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2``;
    * ``s >= total_steps``: ``min_lr``.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0, last_epoch=-1):
        for name, value in (("warmup_steps", warmup_steps), ("total_steps", total_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if total_steps < warmup_steps:
            raise ValueError(
                f"total_steps: expected at least warmup_steps={warmup_steps}, got {total_steps}"
            )
        if not min_lr >= 0:
            raise ValueError(f"min_lr: expected a non-negative number, got {min_lr!r}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr, step):
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self):
        return [self._lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


class ReduceLROnPlateau(_ScheduleState):
    """Scale the learning rate by ``factor`` when a metric stops improving, as torch's.

    Call ``step(metric)`` after each evaluation. A value counts as an improvement when it
    beats the best so far by more than ``threshold`` (relative or absolute, per
    ``threshold_mode``); after more than ``patience`` steps without one, every group's
    rate becomes ``max(lr * factor, min_lr)`` (changes smaller than ``eps`` are skipped)
    and ``cooldown`` steps follow during which bad steps are not counted.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        self.optimizer = _check_optimizer(optimizer)
        if not 0 <= factor < 1:
            raise ValueError(f"factor: expected a number in [0, 1), got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        n_groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n_groups:
                raise ValueError(
                    f"min_lr: expected {n_groups} values, one per parameter group, "
                    f"got {len(min_lr)}"
                )
            self.min_lrs = list(min_lr)
        else:
            self.min_lrs = [min_lr] * n_groups
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def is_better(self, value, best):
        if self.mode == "min":
            if self.threshold_mode == "rel":
                limit = best * (1 - self.threshold)
            else:
                limit = best - self.threshold
            return value < limit
        if self.threshold_mode == "rel":
            limit = best * (1 + self.threshold)
        else:
            limit = best + self.threshold
        return value > limit

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def step(self, metrics):
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            new_lr = max(group["lr"] * self.factor, min_lr)
            if group["lr"] - new_lr > self.eps:
                group["lr"] = new_lr
