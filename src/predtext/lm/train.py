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

import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from predtext.errors import CorpusError, ModelFileError, PredtextError
from predtext.lm import modelfile
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
                    "tie_weights", "forget_bias", "seq_len", "batch_size", "lr", "min_lr_ratio",
                    "warmup_steps", "weight_decay", "clip", "seed", "max_vocab", "min_count",
                    "valid_fraction")


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
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError(f"valid_fraction: expected a number in [0, 1), got {self.valid_fraction!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {self.min_lr_ratio!r}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(f"tie_weights: needs embed_size == hidden_size, got "
                             f"{self.embed_size} and {self.hidden_size}")
        if self.weights_dtype not in ("float32", "float16"):
            raise ValueError(f"weights_dtype: expected 'float32' or 'float16', got {self.weights_dtype!r}")
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
                    dropout=self.dropout, tie_weights=self.tie_weights,
                    forget_bias=self.forget_bias)


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
    dropped. ``loss`` is the mean cross-entropy in nats per predicted token.
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
    total, state = 0.0, None
    try:
        for start in range(0, stream_len, seq_len):
            x = numpy.ascontiguousarray(inputs_tb[start:start + seq_len])
            y = numpy.ascontiguousarray(targets_tb[start:start + seq_len])
            logits, state = model.forward(x, state)
            if (y != -100).any():
                loss_sum, _ = softmax_cross_entropy(logits, y, reduction="sum")
                total += float(loss_sum)
    finally:
        model.train(was_training)
    return {"loss": total / n_predictions, "tokens": n_predictions}


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


# ---------------------------------------------------------------- checkpoints


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
    if state is not None:
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


# ---------------------------------------------------------------- stopping on Ctrl-C


class _InterruptFlag:
    """The first Ctrl-C asks the loop to stop after the current step (it then writes a
    checkpoint); a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------- the loop


def train(files, out, config=None, resume=None, explicit=(), log=None, on_step=None):
    """Train a language model on ``files`` (files, directories, globs) into ``out``.

    ``config``: a ``TrainConfig`` (defaults when None). ``resume``: a checkpoint path to
    continue from (``True``: the default checkpoint beside ``out``); its settings win,
    and any name in ``explicit`` (the settings the caller set on purpose) that disagrees
    with it raises ``TrainingError`` before anything is written. ``log``: a function
    taking one line of text (validation results, notes); default: print to stderr.
    ``on_step``: called after every step with ``{"step", "loss", "lr", "seconds"}``; when it
    returns True the run stops as on Ctrl-C (checkpoint written, best model kept).
    Returns a ``TrainResult``; ``out`` holds the best model found.
    """
    started = time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr))
    config = (config or TrainConfig()).resolved()
    out = Path(out)
    checkpoint_path = Path(config.checkpoint) if config.checkpoint else default_checkpoint_path(out)
    paths = resolve_paths(files)

    # 1. The tokenizer: restored from the checkpoint, or built from the training text.
    checkpoint = None
    if resume:
        resume_path = checkpoint_path if resume is True else Path(resume)
        checkpoint = modelfile.load_checkpoint(resume_path)
        saved = checkpoint.state.get("settings")
        if not isinstance(saved, dict) or "trainer" not in checkpoint.state:
            raise ModelFileError(resume_path, "is not a training checkpoint of predtext train")
        config = _check_resume_settings(config, set(explicit), saved, resume_path)
        checkpoint_path = Path(config.checkpoint) if config.checkpoint else checkpoint_path
        try:
            tokenizer = tokenizer_from_json(checkpoint.model_meta.get("tokenizer"))
        except ValueError as exc:
            raise ModelFileError(resume_path, f"bad tokenizer: {exc}") from None
    else:
        try:
            tokenizer = build_tokenizer(
                config.level, iter_text(paths, split="train", valid_fraction=config.valid_fraction,
                                        errors=config.errors),
                max_size=config.max_vocab, min_count=config.min_count, limit=config.vocab_limit)
        except ValueError as exc:   # the vocabulary is over its limit
            raise TrainingError(str(exc)) from None

    # 2. The data: training batches streamed from a scratch file, validation in memory.
    train_ids = iter_token_ids(paths, tokenizer, split="train",
                               valid_fraction=config.valid_fraction, errors=config.errors)
    batches = TokenStream(train_ids, config.seq_len, config.batch_size)
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

    # 3. The model, the optimizer and the run's counters.
    model = LanguageModel(tokenizer=tokenizer, seed=config.seed,
                          **config.model_config(tokenizer.vocab_size))
    model.train()
    optimizer = Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run = {"step": 0, "tokens": 0, "seconds": 0.0, "best": None, "bad_evals": 0,
           "history": [], "train_curve": [], "next_eval": 0.0, "next_checkpoint": 0.0}
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
        run.update(checkpoint.state["trainer"])
        log(f"resumed from {resume_path} at step {run['step']} "
            f"({run['seconds']:.0f} s trained)")
    else:
        log(f"{model.num_parameters():,} parameters; vocabulary {tokenizer.vocab_size}; "
            f"{batches.n_tokens:,} training tokens ({len(batches)} batches per epoch); "
            f"{0 if valid_ids is None else len(valid_ids):,} validation tokens")

    limits = _limits(config, len(batches))
    eval_interval = config.eval_interval or _default_eval_interval(config)
    if checkpoint is None:
        run["next_eval"] = eval_interval
        run["next_checkpoint"] = config.checkpoint_interval
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in ("progress", "checkpoint")}
    best_model_saved = out.exists() and checkpoint is not None and run["best"] is not None

    def progress_fraction():
        fractions = [run["step"] / limits["steps"]] if limits["steps"] else []
        if config.time_budget:
            fractions.append(run["seconds"] / config.time_budget)
        return max(fractions) if fractions else 0.0

    def validate():
        if valid_ids is None:
            return None
        result = evaluate(model, valid_ids, max_tokens=config.eval_tokens)
        return dict(metrics(result["loss"], valid_chars_per_token), step=run["step"],
                    seconds=round(run["seconds"], 1), tokens=result["tokens"])

    def record(stopped=None):
        return {"settings": settings, "files": [str(p) for p in paths],
                "train_tokens": batches.n_tokens,
                "valid_tokens": 0 if valid_ids is None else int(len(valid_ids)),
                "steps": run["step"], "tokens_seen": run["tokens"],
                "seconds": round(run["seconds"], 1), "epochs": batches.epoch,
                "best": run["best"], "history": run["history"],
                "train_curve": run["train_curve"], "stopped": stopped}

    def save_best(stopped=None):
        model.save(out, training=record(stopped), weights_dtype=_dtype(config.weights_dtype))

    def save_checkpoint(stopped=None):
        tensors, optimizer_json = _optimizer_tensors(optimizer, carried)
        state = {"settings": settings, "trainer": run, "optimizer": optimizer_json,
                 "data": batches.state_dict(), "rng": model.rng.bit_generator.state,
                 "stopped": stopped}
        modelfile.save_checkpoint(checkpoint_path, model.tensors(), model.file_meta(record(stopped)),
                                  tensors, state)

    # 4. The loop: one optimizer step per batch of (seq_len x batch_size) tokens.
    bar = _progress_bar(config, limits, run)
    stopped = None
    loss_average = None
    clock = time.perf_counter()
    with _InterruptFlag() as interrupt:
        while stopped is None:
            for x_tb, y_tb in batches:
                if batches.batch_index == 1:
                    carried = None  # a new epoch: every stream starts again from its beginning
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, run["step"], progress_fraction())
                (loss, carried), backprop = model.begin_update_loss(x_tb, y_tb, carried)
                model.zero_grad()
                backprop()
                grad_norm = clip_grad_norm_(model.parameters(), config.clip) if config.clip else 0.0
                if math.isfinite(grad_norm) and math.isfinite(loss):
                    optimizer.step()
                carried.log_probs = None

                now = time.perf_counter()
                run["seconds"] += now - clock
                clock = now
                run["step"] += 1
                run["tokens"] += x_tb.size
                loss_average = loss if loss_average is None else 0.95 * loss_average + 0.05 * loss
                if run["step"] % max(1, limits["curve_every"]) == 0:
                    run["train_curve"].append([run["step"], round(run["seconds"], 1),
                                               round(loss_average, 4)])
                _update_bar(bar, config, limits, run, loss_average)

                stopped = _why_stop(config, limits, run, interrupt)
                if on_step is not None and on_step({"step": run["step"], "loss": loss,
                                                    "lr": optimizer.param_groups[0]["lr"],
                                                    "seconds": run["seconds"]}):
                    stopped = stopped or "interrupted"
                if run["seconds"] >= run["next_eval"] or stopped:
                    result = validate()
                    run["next_eval"] = run["seconds"] + eval_interval
                    if result is not None:
                        improved = run["best"] is None or result["loss"] < run["best"]["loss"]
                        run["history"].append(result)
                        _log_validation(log, bar, result, improved)
                        if improved:
                            run["best"], run["bad_evals"] = result, 0
                            save_best()
                            best_model_saved = True
                        else:
                            run["bad_evals"] += 1
                            if config.patience and run["bad_evals"] >= config.patience:
                                stopped = stopped or "early stopping"
                    clock = time.perf_counter()  # validation time is not training time
                if stopped or run["seconds"] >= run["next_checkpoint"]:
                    save_checkpoint(stopped)
                    run["next_checkpoint"] = run["seconds"] + config.checkpoint_interval
                    clock = time.perf_counter()
                if stopped:
                    break
    bar.close()
    batches.close()

    # 5. The final model: the best weights (or the last ones, without validation), with
    #    the word n-gram counts of the training text, and the loss curve.
    if valid_ids is None or not best_model_saved:
        save_best(stopped)
    best = LanguageModel.load(out)
    final_record = record(stopped)
    final_record["wall_seconds"] = round(time.perf_counter() - started, 1)
    ngram = _build_ngram(paths, config, log) if config.ngram else None
    best.save(out, ngram=ngram, training=final_record, weights_dtype=_dtype(config.weights_dtype))
    best.training_record = final_record
    if ngram is not None:
        best.ngram = ngram
    if config.plot:
        _plot_losses(run, out, log)
    if stopped == "interrupted":
        log(f"interrupted: checkpoint in {checkpoint_path}; continue with --resume")
    return TrainResult(best, final_record, out, checkpoint_path, stopped, run["best"],
                       run["history"])


fit = train


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


def _why_stop(config, limits, run, interrupt):
    if interrupt.requested:
        return "interrupted"
    if config.time_budget and run["seconds"] >= config.time_budget:
        return "time budget"
    if limits["steps"] and run["step"] >= limits["steps"]:
        return "max steps" if config.max_steps and run["step"] >= config.max_steps else "epochs"
    return None


def _dtype(name):
    return numpy.float16 if name == "float16" else None


def _build_ngram(paths, config, log):
    """Word n-gram counts of the training text, one document per file."""
    from predtext.engine.ngram import NGramModel
    from predtext.lm.corpus import iter_file_texts

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
        bar.update(min(run["seconds"], config.time_budget))
    else:
        bar = tqdm(total=limits["steps"], unit="step", disable=not config.progress,
                   dynamic_ncols=True, file=sys.stderr)
        bar.update(run["step"])
    return bar


def _update_bar(bar, config, limits, run, loss_average):
    if bar.disable:
        return
    if config.time_budget and not limits["steps"]:
        bar.update(min(run["seconds"], config.time_budget) - bar.n)
    else:
        bar.update(run["step"] - bar.n)
    rate = run["tokens"] / run["seconds"] if run["seconds"] > 0 else 0.0
    bar.set_postfix_str(f"loss {loss_average:.3f}, {rate:,.0f} tok/s", refresh=False)


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
    if run["train_curve"]:
        steps, _, losses = zip(*run["train_curve"])
        axes.plot(steps, losses, label="training (moving average)")
    if run["history"]:
        axes.plot([r["step"] for r in run["history"]], [r["loss"] for r in run["history"]],
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
