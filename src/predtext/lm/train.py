"""Training a language model on text files: ``train(files, out, TrainConfig(...))``.

The loop in ``train`` reads top to bottom: build (or restore) the tokenizer, the data
streams, the model and the optimizer; then step through batches with truncated BPTT,
Adam, gradient clipping and a cosine learning-rate schedule; validate at intervals, keep
the best model in ``out``, write checkpoints, and stop on the time budget, the step or
epoch limit, early stopping or Ctrl-C. A resumed run continues exactly where the
checkpoint left off: weights, optimizer moments, schedule position, random generator,
data position and the hidden state carried between batches are all saved.

``evaluate(model, ids)`` scores a text (loss in nats per token) and is what
``predtext eval`` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from predtext.backend import get_ops, ops_for_device
from predtext.errors import CorpusError, ModelFileError, PredtextError
from predtext.lm import distributed, modelfile
from predtext.lm.corpus import TokenStream, iter_text, iter_token_ids, resolve_paths
from predtext.lm.model import CELLS, LanguageModel, LMState, perplexity
from predtext.lm.tokenizers import build_tokenizer, tokenizer_from_json
from predtext.nn import Adam, clip_grad_norm_

LN2 = math.log(2.0)


class TrainingError(PredtextError):
    """Training cannot start or continue as asked (bad settings, incompatible resume)."""


# ---------------------------------------------------------------- settings


#: Defaults per tokenizer level. The char defaults are the best settings found for a
#: 300-second run on a 2-core CPU (tinyshakespeare, validation loss in nats/char): a 2x256
#: GRU with dropout 0.1 reached 1.451, without dropout 1.468 (it sees the corpus 11 times
#: in 300 s and starts to overfit), a 2x384 GRU 1.445, 2x384 and 2x256 LSTMs about 1.54.
#: The GRU does three gate products per step to the LSTM's four and learns as much per
#: step here; the 256-wide one is kept because it steps twice as fast in the engine (its
#: weights fit the cores' caches), which keeps suggestions within their latency budget.
#: The word defaults keep the output layer, which dominates a word model's cost,
#: affordable on the same machine: 20,000 tokens and a tied 256-wide embedding.
LEVEL_DEFAULTS = {
    "char": dict(cell="gru", num_layers=2, hidden_size=256, embed_size=64, dropout=0.1,
                 tie_weights=False, seq_len=128, batch_size=32, lr=3e-3, max_vocab=None,
                 eval_tokens=200_000),
    "word": dict(cell="lstm", num_layers=2, hidden_size=256, embed_size=256, dropout=0.1,
                 tie_weights=True, seq_len=48, batch_size=32, lr=3e-3, max_vocab=20000,
                 eval_tokens=50_000),
}

#: Settings that shape the model, the data layout or the optimisation path: a resumed
#: run must use the checkpoint's values (giving a different one is an error).
LOCKED_ON_RESUME = ("level", "cell", "num_layers", "hidden_size", "embed_size", "dropout",
                    "recurrent_dropout", "tie_weights", "forget_bias", "seq_len", "batch_size",
                    "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "clip", "seed",
                    "max_vocab", "min_count", "valid_fraction")


@dataclass
class TrainConfig:
    """Everything a training run needs to know; None means "the level's default".

    Stopping: the run ends at the first of ``time_budget`` (seconds of training),
    ``max_steps``, ``epochs``, or ``patience`` validations without improvement. Without
    any of the first three it runs ``DEFAULT_EPOCHS`` epochs.
    The learning rate warms up over ``warmup_steps`` and then follows a cosine from
    ``lr`` down to ``lr * min_lr_ratio`` at the end of the run (the end of the time
    budget when there is one, else of the steps or epochs).
    """

    level: str = "char"
    # model
    cell: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    embed_size: int | None = None
    dropout: float | None = None
    recurrent_dropout: float = 0.0        # on h_{t-1} inside the recurrence (nn.RNNBase)
    tie_weights: bool | None = None
    forget_bias: float = 0.0
    # data
    seq_len: int | None = None
    batch_size: int | None = None
    max_vocab: int | None = None          # keep the most frequent tokens (others -> unknown)
    min_count: int = 1
    vocab_limit: int | None = 50000       # a larger vocabulary is an error
    valid_fraction: float = 0.1
    errors: str = "strict"                # invalid UTF-8: "strict" (error) or "replace"
    # optimisation
    lr: float | None = None
    min_lr_ratio: float = 0.05
    warmup_steps: int = 20
    weight_decay: float = 0.0
    clip: float = 5.0
    seed: int = 1234
    # stopping
    time_budget: float | None = None
    max_steps: int | None = None
    epochs: float | None = None
    patience: int = 5
    # validation and files
    eval_interval: float | None = None    # seconds between validations
    eval_tokens: int | None = None        # validation tokens scored at each interval
    checkpoint: str | None = None         # default: OUT + ".ckpt"
    checkpoint_interval: float = 300.0    # seconds between checkpoints
    ngram: bool = True                    # store word n-gram counts for the engine
    ngram_order: int = 3
    plot: bool = True                     # loss-curve PNG beside OUT (needs matplotlib)
    weights_dtype: str = "float32"        # "float16" halves the model file
    progress: bool = True
    # where the model trains: "cpu", "cuda" (CuPy), or a backend name ("reference"). The
    # files are NumPy whatever it is, so a run may resume on another device.
    device: str = "cpu"

    def resolved(self):
        """A copy with the level's defaults filled in and every value checked."""
        if self.level not in LEVEL_DEFAULTS:
            raise ValueError(f"level: expected 'char' or 'word', got {self.level!r}")
        values = dataclasses.asdict(self)
        defaults = LEVEL_DEFAULTS[self.level]
        tied = defaults["tie_weights"] if values["tie_weights"] is None else values["tie_weights"]
        if tied and values["embed_size"] is None and values["hidden_size"] is not None:
            values["embed_size"] = values["hidden_size"]  # tied weights need the same width
        for key, default in defaults.items():
            if values[key] is None:
                values[key] = default
        config = TrainConfig(**values)
        config._check()
        return config

    def _check(self):
        def positive(name, integer=True, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
                what = "int" if integer else "number"
                raise ValueError(f"{name}: expected a positive {what}, got {value!r}")

        for name in ("num_layers", "hidden_size", "embed_size", "seq_len", "batch_size",
                     "min_count", "eval_tokens", "ngram_order"):
            positive(name)
        for name in ("max_vocab", "vocab_limit", "max_steps"):
            positive(name, allow_none=True)
        for name in ("lr", "checkpoint_interval"):
            positive(name, integer=False)
        for name in ("time_budget", "epochs", "eval_interval"):
            positive(name, integer=False, allow_none=True)
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {CELLS}, got {self.cell!r}")
        for name in ("dropout", "recurrent_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a probability in [0, 1), "
                                 f"got {getattr(self, name)!r}")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError("valid_fraction: expected a number in [0, 1), "
                             f"got {self.valid_fraction!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio: expected a number in [0, 1], "
                             f"got {self.min_lr_ratio!r}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(f"tie_weights: needs embed_size == hidden_size, got "
                             f"{self.embed_size} and {self.hidden_size}")
        if self.weights_dtype not in ("float32", "float16"):
            raise ValueError("weights_dtype: expected 'float32' or 'float16', "
                             f"got {self.weights_dtype!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device: expected 'cpu', 'cuda' or a backend name, "
                             f"got {self.device!r}")
        if self.errors not in ("strict", "replace"):
            raise ValueError(f"errors: expected 'strict' or 'replace', got {self.errors!r}")
        if not 1 <= self.ngram_order <= 4:
            raise ValueError(f"ngram_order: expected 1 to 4, got {self.ngram_order!r}")
        for name in ("warmup_steps", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if self.clip < 0 or self.weight_decay < 0:
            raise ValueError("clip and weight_decay: expected non-negative numbers")

    def model_config(self, vocab_size):
        return dict(vocab_size=vocab_size, cell=self.cell, num_layers=self.num_layers,
                    hidden_size=self.hidden_size, embed_size=self.embed_size,
                    dropout=self.dropout, recurrent_dropout=self.recurrent_dropout,
                    tie_weights=self.tie_weights, forget_bias=self.forget_bias)


DEFAULT_EPOCHS = 10


@dataclass
class TrainResult:
    """What ``train`` returns: the best model (as written to ``out``) and the run's record."""

    model: LanguageModel
    record: dict
    out: Path
    checkpoint: Path
    stopped: str
    best_valid: dict | None = None
    history: list = field(default_factory=list)


# ---------------------------------------------------------------- evaluation


def evaluate(model, ids, batch_size=16, seq_len=256, max_tokens=None):
    """Score every next-token prediction of ``ids``: ``{"loss", "tokens"}``.

    The ids are cut into ``batch_size`` contiguous streams read in chunks of ``seq_len``
    with the state carried, so each token is predicted from everything before it in its
    stream; the end of the last stream is padded with ignored targets, so no token is
    dropped. ``loss`` is the mean cross-entropy in nats per predicted token. It runs where
    the model is; off the CPU the sum stays on the device and is read back once, at the end.
    """
    from predtext.nn import softmax_cross_entropy

    ids = numpy.asarray(ids, dtype=numpy.int64)
    if max_tokens is not None:
        ids = ids[:max_tokens + 1]
    n_predictions = len(ids) - 1
    if n_predictions < 1:
        raise CorpusError("the text to evaluate has fewer than two tokens")
    batch_size = max(1, min(batch_size, n_predictions // seq_len or 1))
    stream_len = -(-n_predictions // batch_size)
    inputs = numpy.zeros(batch_size * stream_len, dtype=numpy.int64)
    targets = numpy.full(batch_size * stream_len, -100, dtype=numpy.int64)
    inputs[:n_predictions] = ids[:-1]
    targets[:n_predictions] = ids[1:]
    inputs_tb = inputs.reshape(batch_size, stream_len).T
    targets_tb = targets.reshape(batch_size, stream_len).T

    was_training = model.training
    model.eval()
    on_device = not _on_default_cpu(model)
    total, state = 0.0, None
    try:
        for start in range(0, stream_len, seq_len):
            x = numpy.ascontiguousarray(inputs_tb[start:start + seq_len])
            y = numpy.ascontiguousarray(targets_tb[start:start + seq_len])
            logits, state = model.forward(x, state)
            if (y != -100).any():
                loss_sum, _ = softmax_cross_entropy(logits, y, reduction="sum",
                                                    overwrite=on_device, as_array=on_device)
                total = total + (loss_sum if on_device else float(loss_sum))
    finally:
        model.train(was_training)
    return {"loss": float(total) / n_predictions, "tokens": n_predictions}


def _on_default_cpu(model):
    """Whether the model runs on the CPU backend (floats each step, exactly as always);
    elsewhere losses and norms stay arrays of the model's backend."""
    return model.ops is get_ops("cpu")


def metrics(loss, chars_per_token):
    """Loss (nats per token), perplexity and bits per character of a mean loss."""
    return {"loss": loss, "perplexity": perplexity(loss),
            "bpc": loss / (LN2 * chars_per_token) if chars_per_token > 0 else math.nan}


def read_ids(paths, tokenizer, split="all", valid_fraction=0.1, errors="strict"):
    """All token ids of ``paths`` (one array) and the number of characters they cover."""
    n_chars = 0

    def counted(chunks):
        nonlocal n_chars
        for chunk in chunks:
            n_chars += len(chunk)
            yield chunk

    parts = []
    from predtext.lm.corpus import iter_file_texts

    for _, chunks in iter_file_texts(paths, split, valid_fraction, errors=errors):
        parts.extend(tokenizer.encode_stream(counted(chunks)))
    ids = numpy.concatenate(parts) if parts else numpy.zeros(0, dtype=numpy.int32)
    if n_chars == 0 or len(ids) == 0 or not ids.size:
        part = "" if split == "all" else f" ({split} split)"
        raise CorpusError(f"the corpus{part} is empty")
    return ids, n_chars


# ---------------------------------------------------------------- the schedule


def learning_rate(config, step, progress):
    """Linear warmup over ``warmup_steps``, then a cosine from ``lr`` to ``lr * min_lr_ratio``
    as ``progress`` (the fraction of the run done, by steps or by time) goes from 0 to 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    low = config.lr * config.min_lr_ratio
    progress = min(max(progress, 0.0), 1.0)
    return low + (config.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- the run's state and checkpoints

#: The layout of a checkpoint's ``state`` document. 0: the unversioned layout of the first
#: releases (the counters under "trainer"), still read; 1: counters under "run", with
#: ``"version"``. A counter added to ``RunState`` needs a new version and a line in
#: ``RunState.from_json`` saying what older checkpoints had instead.
CHECKPOINT_VERSION = 1


@dataclass
class RunState:
    """The counters of a run: what a checkpoint holds besides the weights, the optimizer,
    the data position and the random generator."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0              # training time: validation and checkpoints excluded
    best: dict | None = None          # the best validation result so far
    bad_evals: int = 0                # validations since the best one
    history: list = field(default_factory=list)        # every validation result
    train_curve: list = field(default_factory=list)    # [step, seconds, moving average]
    next_eval: float = 0.0            # training seconds of the next validation
    next_checkpoint: float = 0.0      # and of the next checkpoint

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved, path):
        """The counters of a checkpoint's ``state`` document of any version we read."""
        version = saved.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelFileError(path, f"bad checkpoint version {version!r}")
        if version > CHECKPOINT_VERSION:
            raise ModelFileError(path, f"is a version {version} checkpoint, from a newer "
                                       "predtext; this one reads versions up to "
                                       f"{CHECKPOINT_VERSION}")
        counters = saved.get("trainer" if version == 0 else "run")
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(counters, dict) or set(counters) != names:
            got = sorted(counters) if isinstance(counters, dict) else type(counters).__name__
            raise ModelFileError(path, f"version {version} checkpoint with bad run counters "
                                       f"(expected {sorted(names)}, got {got})")
        return cls(**counters)


def _optimizer_tensors(optimizer, state):
    """The optimizer's arrays and the carried hidden state as checkpoint tensors; the
    rest of the optimizer state (step counts, groups) as JSON."""
    saved = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            if isinstance(value, numpy.ndarray):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
              for group in saved["param_groups"]]
    if state is not None:     # NumPy already (``save_checkpoint`` brings it to the host)
        tensors["carry.h"] = state.h
        if state.c is not None:
            tensors["carry.c"] = state.c
    return tensors, {"scalars": scalars, "param_groups": groups}


def _restore_optimizer(optimizer, tensors, saved):
    state = {}
    for index, entries in saved["scalars"].items():
        state[int(index)] = dict(entries)
    for name, array in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = array
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    if "carry.h" not in tensors:
        return None
    return LMState(tensors["carry.h"].copy(),
                   tensors["carry.c"].copy() if "carry.c" in tensors else None)


def default_checkpoint_path(out):
    return Path(str(out) + ".ckpt")


def _check_resume_settings(config, explicit, saved_settings, path):
    """The saved settings, with the run's stopping options; an explicitly given setting
    that differs from the checkpoint's is an error (it would not be the same run)."""
    for name in LOCKED_ON_RESUME:
        if name in explicit and name in saved_settings:
            given, saved = getattr(config, name), saved_settings[name]
            if given != saved:
                raise TrainingError(
                    f"cannot resume from {path}: it was trained with {name}={saved!r}, "
                    f"this run asks for {name}={given!r} (leave the option out to continue it)")
    values = dataclasses.asdict(config)
    values.update({k: v for k, v in saved_settings.items() if k in LOCKED_ON_RESUME})
    return TrainConfig(**values).resolved()


# ---------------------------------------------------------------- stopping on Ctrl-C, the clock


class _InterruptFlag:
    """The first Ctrl-C asks the loop to stop after the current step (it then writes a
    checkpoint); a second one interrupts at once. ``also_sigterm``: under mpirun, which
    answers Ctrl-C by sending its processes SIGTERM, that signal asks the same."""

    def __init__(self, also_sigterm=False):
        self.requested = False
        self._signals = (signal.SIGINT, signal.SIGTERM) if also_sigterm else (signal.SIGINT,)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in self._signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)


class _Clock:
    """Training seconds: starts at what a resumed run had, and does not run while paused
    (validation and checkpoints are not training time)."""

    def __init__(self, seconds=0.0):
        self._offset = seconds
        self._since = time.perf_counter()

    @property
    def seconds(self):
        return self._offset + (time.perf_counter() - self._since)

    @contextlib.contextmanager
    def paused(self):
        self._offset = self.seconds
        try:
            yield
        finally:
            self._since = time.perf_counter()


# ---------------------------------------------------------------- preparing and finishing


@dataclass
class _Run:
    """Everything the loop works with, made by ``_prepare``; its methods are the loop's
    side trips (validation, saving)."""

    world: object                # distributed.Solo, or the MPI processes sharing the batch
    config: TrainConfig
    paths: list
    out: Path
    checkpoint_path: Path
    tokenizer: object
    batches: TokenStream
    valid_ids: object            # None: no validation
    valid_chars_per_token: float
    model: LanguageModel
    optimizer: Adam
    state: RunState
    carried: LMState | None      # the hidden state carried between batches
    limits: dict
    eval_interval: float
    best_saved: bool             # ``out`` holds the best model of this run

    @property
    def settings(self):
        return {k: v for k, v in dataclasses.asdict(self.config).items()
                if k not in ("progress", "checkpoint")}

    def progress(self):
        """The fraction of the run done, by steps or by time, whichever is further."""
        run, fractions = self.state, []
        if self.limits["steps"]:
            fractions.append(run.step / self.limits["steps"])
        if self.config.time_budget:
            fractions.append(run.seconds / self.config.time_budget)
        return max(fractions) if fractions else 0.0

    def validate(self):
        if self.valid_ids is None:
            return None
        ids, world = self.valid_ids, self.world
        split = world.size > 1 and len(ids[:self.config.eval_tokens + 1]) - 1 >= world.size
        if split:   # each rank scores its share of the predictions; the sums are reduced
            ids = ids[:self.config.eval_tokens + 1]
            share = distributed.shares(len(ids) - 1, world.size)[world.rank]
            ids = ids[share.start:share.stop + 1]
        result = evaluate(self.model, ids, max_tokens=self.config.eval_tokens)
        if split:
            loss_sum, tokens = world.sum([result["loss"] * result["tokens"], result["tokens"]])
            result = {"loss": loss_sum / tokens, "tokens": int(tokens)}
        return dict(metrics(result["loss"], self.valid_chars_per_token), step=self.state.step,
                    seconds=round(self.state.seconds, 1), tokens=result["tokens"])

    def record(self, stopped=None):
        run = self.state
        return {"settings": self.settings, "files": [str(p) for p in self.paths],
                "train_tokens": self.batches.n_tokens,
                "valid_tokens": 0 if self.valid_ids is None else int(len(self.valid_ids)),
                "steps": run.step, "tokens_seen": run.tokens,
                "seconds": round(run.seconds, 1), "epochs": self.batches.epoch,
                "best": run.best, "history": run.history,
                "train_curve": run.train_curve, "stopped": stopped}

    def save_best(self, stopped=None):
        if not self.world.is_root:
            return
        self.model.save(self.out, training=self.record(stopped),
                        weights_dtype=_dtype(self.config.weights_dtype))
        self.best_saved = True

    def save_checkpoint(self, stopped=None):
        carried, world = self.carried, self.world
        if carried is not None:     # files hold NumPy arrays, whatever the device
            to_numpy = self.model.ops.to_numpy
            carried = LMState(numpy.asarray(to_numpy(carried.h)),
                              None if carried.c is None else numpy.asarray(to_numpy(carried.c)))
        if world.size > 1 and carried is not None:   # the whole batch's state, on rank 0
            h = world.gather_rows(carried.h, self.config.batch_size)
            c = None if carried.c is None else world.gather_rows(carried.c, self.config.batch_size)
            carried = LMState(h, c) if world.is_root else None
        if not world.is_root:
            return
        tensors, optimizer_json = _optimizer_tensors(self.optimizer, carried)
        state = {"version": CHECKPOINT_VERSION, "settings": self.settings,
                 "run": self.state.to_json(), "optimizer": optimizer_json,
                 "data": self.batches.state_dict(), "rng": self.model.rng.bit_generator.state,
                 "stopped": stopped}
        modelfile.save_checkpoint(self.checkpoint_path, self.model.tensors(),
                                  self.model.file_meta(self.record(stopped)), tensors, state)


def _prepare(world, files, out, config, resume, explicit, log):
    """The tokenizer, data, model, optimizer and counters of a new or resumed run."""
    config = (config or TrainConfig()).resolved()
    # First, so that a device that cannot be used (no CuPy, driver or GPU) is one clear
    # error before any work: BackendUnavailable, a ValueError, names what is missing.
    ops = ops_for_device(config.device)
    out = Path(out)
    checkpoint_path = Path(config.checkpoint) if config.checkpoint else default_checkpoint_path(out)
    paths = resolve_paths(files)

    # The tokenizer: restored from the checkpoint, or built from the training text.
    checkpoint = None
    if resume:
        resume_path = checkpoint_path if resume is True else Path(resume)
        local_path = world.broadcast_file(resume_path)     # rank 0's file on every rank
        checkpoint = modelfile.load_checkpoint(local_path)
        if local_path != resume_path:
            os.unlink(local_path)
        saved = checkpoint.state.get("settings")
        if not isinstance(saved, dict) or not ({"trainer", "run"} & set(checkpoint.state)):
            raise ModelFileError(resume_path, "is not a training checkpoint of predtext train")
        run = RunState.from_json(checkpoint.state, resume_path)
        config = _check_resume_settings(config, set(explicit), saved, resume_path)
        checkpoint_path = Path(config.checkpoint) if config.checkpoint else checkpoint_path
        try:
            tokenizer = tokenizer_from_json(checkpoint.model_meta.get("tokenizer"))
        except ValueError as exc:
            raise ModelFileError(resume_path, f"bad tokenizer: {exc}") from None
    else:
        tokenizer = _build_tokenizer(paths, config) if world.is_root else None
        if world.size > 1:   # built once, by rank 0
            shared = world.broadcast_json(lambda: tokenizer.to_json())
            tokenizer = tokenizer or tokenizer_from_json(shared)
    if not world.is_root:
        config = dataclasses.replace(config, progress=False)

    # The data: training batches streamed from a scratch file, validation in memory.
    train_ids = iter_token_ids(paths, tokenizer, split="train",
                               valid_fraction=config.valid_fraction, errors=config.errors)
    streams = world.streams(config.batch_size)
    batches = TokenStream(train_ids, config.seq_len, config.batch_size, streams=streams)
    valid_ids, valid_chars_per_token = None, 1.0
    if config.valid_fraction > 0:
        try:
            valid_ids, valid_chars = read_ids(paths, tokenizer, "validation",
                                              config.valid_fraction, config.errors)
            valid_chars_per_token = valid_chars / len(valid_ids)
        except CorpusError:
            valid_ids = None
        if valid_ids is None or len(valid_ids) < 2:
            log("the validation split holds no text: no validation, the last model is kept")
            valid_ids = None

    # The model, the optimizer and the counters, restored when resuming.
    model = LanguageModel(tokenizer=tokenizer, seed=config.seed,
                          **config.model_config(tokenizer.vocab_size))
    model.to(ops)    # before the optimizer, whose moments are made where the weights are
    model.train()
    optimizer = Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    limits = _limits(config, len(batches))
    eval_interval = config.eval_interval or _default_eval_interval(config)
    carried = None
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint.model_tensors)
            carried = _restore_optimizer(optimizer, checkpoint.optimizer_tensors,
                                         checkpoint.state["optimizer"])
            batches.load_state_dict(checkpoint.state["data"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TrainingError(f"cannot resume from {resume_path}: {exc}") from None
        model.rng.bit_generator.state = checkpoint.state["rng"]
        if world.size > 1 and carried is not None:   # this rank's columns of the batch
            carried = LMState(carried.h[:, streams].copy(),
                              None if carried.c is None else carried.c[:, streams].copy())
        if carried is not None:                       # on the model's device
            carried = LMState(ops.asarray(carried.h),
                              None if carried.c is None else ops.asarray(carried.c))
        log(f"resumed from {resume_path} at step {run.step} ({run.seconds:.0f} s trained)")
    else:
        run = RunState(next_eval=eval_interval, next_checkpoint=config.checkpoint_interval)
        log(f"{model.num_parameters():,} parameters; vocabulary {tokenizer.vocab_size}; "
            f"{batches.n_tokens:,} training tokens ({len(batches)} batches per epoch); "
            f"{0 if valid_ids is None else len(valid_ids):,} validation tokens")
    world.broadcast_parameters(model.parameters())
    if world.rank:   # dropout masks of its own (rank 0's generator is the one saved)
        model.rng.bit_generator.state = numpy.random.default_rng(
            [config.seed, world.rank, run.step]).bit_generator.state
    best_saved = out.exists() and checkpoint is not None and run.best is not None
    return _Run(world, config, paths, out, checkpoint_path, tokenizer, batches, valid_ids,
                valid_chars_per_token, model, optimizer, run, carried, limits, eval_interval,
                best_saved)


def _build_tokenizer(paths, config):
    try:
        return build_tokenizer(
            config.level, iter_text(paths, split="train", valid_fraction=config.valid_fraction,
                                    errors=config.errors),
            max_size=config.max_vocab, min_count=config.min_count, limit=config.vocab_limit)
    except ValueError as exc:   # the vocabulary is over its limit
        raise TrainingError(str(exc)) from None


def _quiet(line):
    pass


def _finish(t, stopped, started, log):
    """The final model: the best weights (or the last ones, without validation), with the
    word n-gram counts of the training text, and the loss curve. Rank 0 writes them."""
    config, out = t.config, t.out
    if not t.world.is_root:
        t.world.barrier()    # returns once ``out`` is written
        return TrainResult(t.model, t.record(stopped), out, t.checkpoint_path, stopped,
                           t.state.best, t.state.history)
    if t.valid_ids is None or not t.best_saved:
        t.save_best(stopped)
    best = LanguageModel.load(out)
    final_record = t.record(stopped)
    final_record["wall_seconds"] = round(time.perf_counter() - started, 1)
    ngram = _build_ngram(t.paths, config, log) if config.ngram else None
    best.save(out, ngram=ngram, training=final_record, weights_dtype=_dtype(config.weights_dtype))
    best.training_record = final_record
    if ngram is not None:
        best.ngram = ngram
    if config.plot:
        _plot_losses(t.state, out, log)
    if stopped == "interrupted":
        log(f"interrupted: checkpoint in {t.checkpoint_path}; continue with --resume")
    t.world.barrier()
    return TrainResult(best, final_record, out, t.checkpoint_path, stopped, t.state.best,
                       t.state.history)


# ---------------------------------------------------------------- the loop


def train(files, out, config=None, resume=None, explicit=(), log=None, on_step=None):
    """Train a language model on ``files`` (files, directories, globs) into ``out``.

    ``config``: a ``TrainConfig`` (defaults when None). ``resume``: a checkpoint path to
    continue from (``True``: the default checkpoint beside ``out``); its settings win,
    and any name in ``explicit`` (the settings the caller set on purpose) that disagrees
    with it raises ``TrainingError`` before anything is written. ``log``: a function
    taking one line of text (validation results, notes); default: print to stderr.
    ``on_step``: called after every step with ``{"step", "loss", "lr", "seconds"}``; when it
    returns True the run stops as on Ctrl-C (checkpoint written, best model kept). Off the
    CPU (``config.device``) the loss is a 0-d array on the device: ``float()`` reads it
    back, and waits for the GPU, so a callback that does so each step slows the run.
    Returns a ``TrainResult``; ``out`` holds the best model found.
    """
    started = time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr))
    world = distributed.world()    # one process, or the MPI ranks sharing each batch
    log = log if world.is_root else _quiet
    with world.failing_together():
        t = _prepare(world, files, out, config, resume, explicit, log)
        config, model, optimizer, run, limits = t.config, t.model, t.optimizer, t.state, t.limits
        clock = _Clock(run.seconds)
        bar = _progress_bar(config, limits, run)
        stopped, loss_average = None, None
        # Off the CPU backend the loss, the norm and their moving average stay arrays on
        # the device, and a non-finite batch is skipped there (Adam's masked step): the
        # only read back to the host is the average, once per training-curve point.
        on_device = not _on_default_cpu(model)
        shown_loss = None
        with _InterruptFlag(also_sigterm=world.size > 1) as interrupt:
            while stopped is None:
                # one optimizer step per (seq_len x batch_size) batch
                for x_tb, y_tb in t.batches:
                    if t.batches.batch_index == 1:
                        # a new epoch: every stream starts again from its beginning
                        t.carried = None
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(config, run.step, t.progress())
                    (loss, t.carried), backprop = model.begin_update_loss(
                        x_tb, y_tb, t.carried, as_array=on_device)
                    model.zero_grad()
                    backprop()
                    loss = world.reduce_gradients(model.parameters(), loss, config.batch_size)
                    if on_device:
                        _device_step(model, optimizer, loss, config.clip)
                    else:
                        grad_norm = (clip_grad_norm_(model.parameters(), config.clip)
                                     if config.clip else 0.0)
                        if math.isfinite(grad_norm) and math.isfinite(loss):
                            optimizer.step()

                    run.seconds, run.step = clock.seconds, run.step + 1
                    run.tokens += t.batches.tokens_per_batch
                    asked = on_step is not None and bool(on_step({
                        "step": run.step, "loss": loss, "lr": optimizer.param_groups[0]["lr"],
                        "seconds": run.seconds}))
                    run.seconds, interrupted, asked = world.agree(run.seconds,
                                                                  interrupt.requested, asked)
                    loss_average = (loss if loss_average is None
                                    else 0.95 * loss_average + 0.05 * loss)
                    if run.step % limits["curve_every"] == 0:
                        shown_loss = float(loss_average)   # on a device: the one read back
                        run.train_curve.append([run.step, round(run.seconds, 1),
                                                round(shown_loss, 4)])
                    _update_bar(bar, config, limits, run,
                                shown_loss if on_device else loss_average)
                    stopped = (_why_stop(config, limits, run, interrupted)
                               or ("interrupted" if asked else None))

                    if run.seconds >= run.next_eval or stopped:
                        with clock.paused():
                            early = _validate(t, bar, log)
                        stopped = stopped or early
                    if stopped or run.seconds >= run.next_checkpoint:
                        with clock.paused():
                            t.save_checkpoint(stopped)
                            run.next_checkpoint = run.seconds + config.checkpoint_interval
                    if stopped:
                        break
        bar.close()
        t.batches.close()
        return _finish(t, stopped, started, log)


fit = train


def _device_step(model, optimizer, loss, clip):
    """Clip and step with everything on the device: the norm, the scale and the decision to
    skip a non-finite batch are arrays there, never read back."""
    xp = model.ops.xp
    ok = xp.isfinite(xp.asarray(loss))
    if clip:    # as on the CPU: the norm is only looked at when clipping
        ok = ok & xp.isfinite(clip_grad_norm_(model.parameters(), clip, as_array=True))
    optimizer.step(apply=ok)


def _validate(t, bar, log):
    """Score the validation text, keep the model if it is the best so far; "early
    stopping" when it has not improved ``patience`` times running."""
    run = t.state
    result = t.validate()
    run.next_eval = run.seconds + t.eval_interval
    if result is None:
        return None
    improved = run.best is None or result["loss"] < run.best["loss"]
    run.history.append(result)
    _log_validation(log, bar, result, improved)
    if improved:
        run.best, run.bad_evals = result, 0
        t.save_best()
        return None
    run.bad_evals += 1
    if t.config.patience and run.bad_evals >= t.config.patience:
        return "early stopping"
    return None


# ---------------------------------------------------------------- loop helpers


def _limits(config, batches_per_epoch):
    """The step limit (None: time only) and how often to sample the training curve."""
    steps = config.max_steps
    if config.epochs is not None:
        epoch_steps = max(1, int(config.epochs * batches_per_epoch))
        steps = epoch_steps if steps is None else min(steps, epoch_steps)
    if steps is None and config.time_budget is None:
        steps = DEFAULT_EPOCHS * batches_per_epoch
    expected = steps or int(config.time_budget * 10)  # ~10 steps/s is a rough guess
    return {"steps": steps, "curve_every": max(1, expected // 200)}


def _default_eval_interval(config):
    if config.time_budget:
        return min(max(config.time_budget / 6, 10.0), 600.0)
    return 120.0


def _why_stop(config, limits, run, interrupted):
    if interrupted:
        return "interrupted"
    if config.time_budget and run.seconds >= config.time_budget:
        return "time budget"
    if limits["steps"] and run.step >= limits["steps"]:
        return "max steps" if config.max_steps and run.step >= config.max_steps else "epochs"
    return None


def _dtype(name):
    return numpy.float16 if name == "float16" else None


def _build_ngram(paths, config, log):
    """Word n-gram counts of the training text, one document per file."""
    from predtext.lm.corpus import iter_file_texts
    from predtext.lm.ngram import NGramModel

    documents = ["".join(chunks) for _, chunks in iter_file_texts(
        paths, "train", config.valid_fraction, errors=config.errors)]
    began = time.perf_counter()
    ngram = NGramModel.from_text(documents, order=config.ngram_order)
    log(f"word {config.ngram_order}-gram counts: {ngram.vocabulary_size:,} words "
        f"({time.perf_counter() - began:.1f} s)")
    return ngram


def _progress_bar(config, limits, run):
    from tqdm import tqdm

    if config.time_budget and not limits["steps"]:
        bar = tqdm(total=round(config.time_budget), unit="s", disable=not config.progress,
                   dynamic_ncols=True, file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [ETA {remaining}{postfix}]")
        bar.update(min(run.seconds, config.time_budget))
    else:
        bar = tqdm(total=limits["steps"], unit="step", disable=not config.progress,
                   dynamic_ncols=True, file=sys.stderr)
        bar.update(run.step)
    return bar


def _update_bar(bar, config, limits, run, loss_average):
    if bar.disable:
        return
    if config.time_budget and not limits["steps"]:
        bar.update(min(run.seconds, config.time_budget) - bar.n)
    else:
        bar.update(run.step - bar.n)
    rate = run.tokens / run.seconds if run.seconds > 0 else 0.0
    # None: on a device, before the first training-curve point has read the loss back.
    loss_text = "" if loss_average is None else f"loss {loss_average:.3f}, "
    bar.set_postfix_str(f"{loss_text}{rate:,.0f} tok/s", refresh=False)


def _log_validation(log, bar, result, improved):
    line = (f"step {result['step']} ({result['seconds']:.0f} s): validation loss "
            f"{result['loss']:.4f}, perplexity {result['perplexity']:.2f}, bpc {result['bpc']:.3f}"
            + (" (best so far, saved)" if improved else ""))
    if not bar.disable:
        bar.write(line, file=sys.stderr)
    else:
        log(line)


def _plot_losses(run, out, log):
    """A loss-curve PNG beside the model (skipped quietly without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(out).with_suffix(".loss.png")
    figure, axes = plt.subplots(figsize=(7, 4))
    if run.train_curve:
        steps, _, losses = zip(*run.train_curve)
        axes.plot(steps, losses, label="training (moving average)")
    if run.history:
        axes.plot([r["step"] for r in run.history], [r["loss"] for r in run.history],
                  "o-", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    log(f"loss curve: {path}")
    return path
