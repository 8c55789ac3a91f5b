"""The `predtext train`, `eval`, `sample` and `quantize` commands.

Bad input (a missing or corrupt file, an impossible setting, a resume that does not fit)
ends with one line on stderr, ``predtext COMMAND: error: ...``, and exit status 2; set
``PREDTEXT_DEBUG=1`` to get the traceback instead. Files already written are never
touched before the input has been checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from predtext.commandline import EXIT_BAD_INPUT, one_line_errors, positive_int
from predtext.errors import PredtextError

TRAIN_EPILOG = """\
examples:
  predtext train notes/ --out notes.safetensors --time-budget 600
  predtext train 'mail/**/*.txt' --out mail.safetensors --level word --hidden 384
  predtext train notes/ --out notes.safetensors --resume          # continue a stopped run

The best model (lowest validation loss) is kept in --out, with the word n-gram counts of
the training text that the suggestion engine uses beside the network. A checkpoint is
written to OUT.ckpt every few minutes and on Ctrl-C; --resume continues from it exactly
as an uninterrupted run would. Settings left out take the level's defaults (or, with
--resume, the checkpoint's); the char defaults are the best found for a 5-minute run on a
2-core laptop.
"""


def add_arguments(parser, command):
    """Add the options of ``command`` ("train", "eval", "sample" or "quantize") to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    one_line_errors(parser, command)
    command_arguments = {"train": _train_arguments, "eval": _eval_arguments,
                         "sample": _sample_arguments, "quantize": _quantize_arguments}
    command_arguments[command](parser)
    if command == "quantize":   # it runs no network
        return
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="threads for the recurrent kernels (default: all CPUs)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="where the model runs: cpu (the default) or cuda (a GPU, "
                             "through CuPy: pip install 'predtext[gpu]')")


def run(args) -> int:
    """Run the parsed command; returns the exit status."""
    try:
        if getattr(args, "threads", None):
            from predtext.backend import get_ops

            get_ops().set_num_threads(args.threads)
        commands = {"train": _run_train, "eval": _run_eval, "sample": _run_sample,
                    "quantize": _run_quantize}
        return commands[args.command](args)
    except (PredtextError, ValueError, TypeError, OSError) as exc:
        if os.environ.get("PREDTEXT_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"predtext {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


# ---------------------------------------------------------------- argument types



def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _number(low=None, high=None, low_open=False, high_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            lowest = "-inf" if low is None else low
            highest = "inf" if high is None else high
            bounds = f"{left}{lowest}, {highest}{right}"
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, got {text!r}")
        return value

    return parse



# ---------------------------------------------------------------- train

# option dest -> TrainConfig field
_TRAIN_FIELDS = {
    "level": "level", "cell": "cell", "layers": "num_layers", "hidden": "hidden_size",
    "embed": "embed_size", "dropout": "dropout", "recurrent_dropout": "recurrent_dropout",
    "tie_weights": "tie_weights",
    "forget_bias": "forget_bias", "seq_len": "seq_len", "batch_size": "batch_size",
    "max_vocab": "max_vocab", "min_count": "min_count", "vocab_limit": "vocab_limit",
    "valid_fraction": "valid_fraction", "lr": "lr", "min_lr_ratio": "min_lr_ratio",
    "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "clip": "clip",
    "seed": "seed", "time_budget": "time_budget", "max_steps": "max_steps", "epochs": "epochs",
    "patience": "patience", "eval_interval": "eval_interval", "eval_tokens": "eval_tokens",
    "checkpoint": "checkpoint", "checkpoint_interval": "checkpoint_interval",
    "ngram": "ngram", "ngram_order": "ngram_order", "plot": "plot", "device": "device",
}


def _train_arguments(parser):
    from predtext.lm.model import CELLS
    from predtext.lm.train import LEVEL_DEFAULTS

    char, word = LEVEL_DEFAULTS["char"], LEVEL_DEFAULTS["word"]
    parser.description = ("Train a character- or word-level recurrent language model on text "
                          "files, directories or globs.")
    parser.epilog = TRAIN_EPILOG
    parser.add_argument("files", nargs="+", metavar="FILES",
                        help="text files, directories (read recursively) or glob patterns")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="model file to write (the best model found is kept here)")
    parser.add_argument("--level", choices=("char", "word"),
                        help="tokens: characters (default) or words, punctuation and spaces")
    parser.add_argument("--time-budget", type=_number(0, low_open=True), metavar="SECONDS",
                        help="stop after this many seconds of training and keep the best model")

    model = parser.add_argument_group("model")
    model.add_argument("--cell", choices=CELLS,
                       help=f"recurrent cell (default {char['cell']} char, {word['cell']} word)")
    model.add_argument("--layers", type=positive_int, metavar="N",
                       help=f"stacked recurrent layers (default {char['num_layers']})")
    model.add_argument("--hidden", type=positive_int, metavar="N",
                       help=f"hidden units per layer (default {char['hidden_size']} char, "
                            f"{word['hidden_size']} word)")
    model.add_argument("--embed", type=positive_int, metavar="N",
                       help=f"embedding size (default {char['embed_size']} char; word level: "
                            f"--hidden, as the weights are tied)")
    model.add_argument("--dropout", type=_number(0, 1, high_open=True), metavar="P",
                       help=f"dropout on embeddings, between layers and before the output "
                            f"(default {char['dropout']} char, {word['dropout']} word)")
    model.add_argument("--recurrent-dropout", type=_number(0, 1, high_open=True), metavar="P",
                       help="variational dropout on the recurrent state where it enters each "
                            "step's recurrent product: one mask per sequence (default 0)")
    model.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=None,
                       help="share the embedding and output weights (needs --embed = --hidden; "
                            "default on for word level)")
    model.add_argument("--forget-bias", type=float, metavar="B",
                       help="initial LSTM forget-gate bias (default 0)")

    data = parser.add_argument_group("data")
    data.add_argument("--seq-len", type=positive_int, metavar="N",
                      help=f"tokens per sequence for truncated BPTT (default {char['seq_len']} "
                           f"char, {word['seq_len']} word)")
    data.add_argument("--batch-size", type=positive_int, metavar="N",
                      help=f"sequences per batch (default {char['batch_size']})")
    data.add_argument("--max-vocab", type=positive_int, metavar="N",
                      help=f"keep the N most frequent tokens, the rest become unknown "
                           f"(default: all chars; {word['max_vocab']} words)")
    data.add_argument("--min-count", type=positive_int, metavar="N",
                      help="drop tokens seen fewer than N times (default 1)")
    data.add_argument("--vocab-limit", type=positive_int, metavar="N",
                      help="refuse a vocabulary larger than N (default 50000)")
    data.add_argument("--valid-fraction", type=_number(0, 1, high_open=True), metavar="F",
                      help="the last F of each file is held out for validation (default 0.1)")
    data.add_argument("--replace-invalid", action="store_true",
                      help="read invalid UTF-8 as U+FFFD instead of stopping with an error")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=_number(0, low_open=True), metavar="LR",
                       help=f"peak Adam learning rate (default {char['lr']})")
    optim.add_argument("--min-lr-ratio", type=_number(0, 1), metavar="R",
                       help="the cosine schedule ends at LR * R (default 0.05)")
    optim.add_argument("--warmup-steps", type=_non_negative_int, metavar="N",
                       help="linear warmup steps (default 20)")
    optim.add_argument("--weight-decay", type=_number(0), metavar="W",
                       help="L2 weight decay (default 0)")
    optim.add_argument("--clip", type=_number(0), metavar="NORM",
                       help="clip the gradient norm to NORM, 0 for none (default 5)")
    optim.add_argument("--seed", type=int, metavar="S", help="random seed (default 1234)")

    stop = parser.add_argument_group("stopping and validation")
    stop.add_argument("--max-steps", type=positive_int, metavar="N", help="stop after N steps")
    stop.add_argument("--epochs", type=_number(0, low_open=True), metavar="E",
                      help="stop after E passes over the data (default 10 when neither "
                           "--time-budget nor --max-steps is given)")
    stop.add_argument("--patience", type=_non_negative_int, metavar="N",
                      help="stop after N validations without improvement, 0 never (default 5)")
    stop.add_argument("--eval-interval", type=_number(0, low_open=True), metavar="SECONDS",
                      help="seconds of training between validations (default: a sixth of "
                           "the budget, kept within 10-600, or 120 without a budget)")
    stop.add_argument("--eval-tokens", type=positive_int, metavar="N",
                      help="validation tokens scored each time (default 200000 char, 50000 word)")

    files = parser.add_argument_group("checkpoints and output")
    files.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                       help="continue the run saved in CHECKPOINT (default OUT.ckpt)")
    files.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (default OUT.ckpt)")
    files.add_argument("--checkpoint-interval", type=_number(0, low_open=True), metavar="SECONDS",
                       help="seconds between checkpoints (default 300)")
    files.add_argument("--no-ngram", dest="ngram", action="store_false", default=None,
                       help="do not store word n-gram counts in the model file")
    files.add_argument("--ngram-order", type=positive_int, metavar="N",
                       help="order of the stored word n-gram counts (default 3)")
    files.add_argument("--no-plot", dest="plot", action="store_false", default=None,
                       help="do not draw the loss-curve PNG (drawn when matplotlib is installed)")
    files.add_argument("--float16", action="store_true",
                       help="store the weights as float16 (half the file size)")
    files.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_train(args):
    from predtext.lm.distributed import launched_rank
    from predtext.lm.train import TrainConfig, train

    values, explicit = {}, set()
    for dest, name in _TRAIN_FIELDS.items():
        value = getattr(args, dest)
        if value is not None:
            values[name] = value
            explicit.add(name)
    if args.replace_invalid:
        values["errors"] = "replace"
    if args.float16:
        values["weights_dtype"] = "float16"
    values["progress"] = not args.quiet and sys.stderr.isatty()
    config = TrainConfig(**values)
    config.resolved()  # bad combinations fail here, before any file is read
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; give a file name")
    result = train(args.files, out, config, resume=args.resume, explicit=explicit)
    best = result.best_valid
    summary = f"model written to {result.out} (stopped: {result.stopped}"
    if best:
        summary += (f"; best validation loss {best['loss']:.4f}, perplexity "
                    f"{best['perplexity']:.2f}, bpc {best['bpc']:.3f} at step {best['step']}")
    if launched_rank() == 0:    # under mpirun, once
        print(summary + ")")
    return 0


# ---------------------------------------------------------------- eval


def _eval_arguments(parser):
    parser.description = ("Evaluate a model on text: loss (nats per token), perplexity and "
                          "bits per character. Without MODEL the packaged default model is used.")
    parser.add_argument("paths", nargs="+", metavar="[MODEL] FILES",
                        help="a model file (optional) followed by text files, directories or globs")
    parser.add_argument("--model", metavar="PATH", help="the model file (instead of a first MODEL)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: loss, perplexity, bpc, tokens")
    parser.add_argument("--split", choices=("all", "train", "validation"), default="all",
                        help="score the whole files (default) or their train/validation part")
    parser.add_argument("--valid-fraction", type=_number(0, 1, high_open=True), default=0.1,
                        metavar="F", help="held-out fraction for --split (default 0.1)")
    parser.add_argument("--replace-invalid", action="store_true",
                        help="read invalid UTF-8 as U+FFFD instead of stopping with an error")


def _run_eval(args):
    from predtext.lm.corpus import resolve_paths
    from predtext.lm.train import evaluate, metrics, read_ids

    model_path, files = args.model, list(args.paths)
    if model_path is None and len(files) > 1 and _looks_like_model(files[0]):
        model_path, files = files[0], files[1:]
    if model_path is None and len(files) == 1 and _looks_like_model(files[0]):
        raise ValueError(f"no text files given to evaluate {files[0]} on")
    model = _on_device(_load_model(model_path), args.device)
    ids, n_chars = read_ids(resolve_paths(files), model.tokenizer, args.split, args.valid_fraction,
                            "replace" if args.replace_invalid else "strict")
    result = evaluate(model, ids)
    figures = metrics(result["loss"], n_chars / len(ids))
    figures["tokens"] = result["tokens"]
    if args.json:
        print(json.dumps({key: figures[key] for key in ("loss", "perplexity", "bpc", "tokens")}))
    else:
        print(f"loss {figures['loss']:.4f} nats/token, perplexity {figures['perplexity']:.3f}, "
              f"bpc {figures['bpc']:.4f} ({figures['tokens']:,} tokens)")
    return 0


# ---------------------------------------------------------------- sample


def _sample_arguments(parser):
    parser.description = ("Generate text from a model. Without MODEL the packaged default "
                          "model is used.")
    parser.add_argument("model", nargs="?", metavar="MODEL", help="model file (default: packaged)")
    parser.add_argument("--prompt", default="", metavar="TEXT", help="text to continue")
    parser.add_argument("--length", type=_non_negative_int, default=200, metavar="N",
                        help="tokens to generate (default 200)")
    parser.add_argument("--temperature", type=_number(0), default=0.8, metavar="T",
                        help="sharpen (<1) or flatten (>1) the distribution; 0 is greedy "
                             "(default 0.8)")
    parser.add_argument("--top-k", type=_non_negative_int, default=0, metavar="K",
                        help="sample among the K likeliest tokens only (0: all, the default)")
    parser.add_argument("--top-p", type=_number(0, 1, low_open=True), default=1.0, metavar="P",
                        help="sample from the smallest set of tokens with probability >= P "
                             "(default 1: all)")
    parser.add_argument("--seed", type=int, metavar="S", help="random seed (reproducible output)")


def _run_sample(args):
    model = _on_device(_load_model(args.model), args.device)
    text = model.generate(args.prompt, args.length, temperature=args.temperature,
                          top_k=args.top_k or None, top_p=args.top_p, seed=args.seed)
    sys.stdout.write(args.prompt + text + ("" if text.endswith("\n") else "\n"))
    return 0


# ---------------------------------------------------------------- quantize


def _quantize_arguments(parser):
    parser.description = (
        "Write a copy of a model for inference whose recurrent and decoder weight matrices "
        "are 8-bit integers with one float32 scale per row (a quarter of their float32 size, "
        "half of float16), for the same suggestions within noise. The copy cannot be "
        "trained further.")
    parser.add_argument("input", metavar="IN", help="model file (or training checkpoint)")
    parser.add_argument("output", metavar="OUT", help="model file to write")


def _run_quantize(args):
    import numpy

    from predtext.lm import modelfile
    from predtext.lm.model import NGRAM_TENSOR_PREFIX, LanguageModel

    source, out = Path(args.input), Path(args.output)
    if out.is_dir():
        raise ValueError(f"OUT {out}: is a directory; give a file name")
    tensors, meta = modelfile.load_model(source)
    model = LanguageModel.from_tensors(tensors, meta, source)
    if model.quantized:
        raise ValueError(f"IN {source}: the model's weights are already {model.quantized}")
    network = {k: v for k, v in tensors.items() if not k.startswith(NGRAM_TENSOR_PREFIX)}
    # Weights stored as float16 keep that for what stays float (the embedding, the biases):
    # the copy loses nothing more than the 8-bit rounding.
    weights_dtype = numpy.float16 if all(a.dtype == numpy.float16 for a in network.values()) \
        else None
    quantized = model.quantize("int8")
    quantized.save(out, weights_dtype=weights_dtype)
    bytes_in = sum(a.nbytes for a in network.values())
    bytes_out = sum(a.nbytes for a in quantized.tensors(weights_dtype).values())
    size_in, size_out = source.stat().st_size, out.stat().st_size
    print(f"{source}: {size_in:,} bytes, of which network weights {bytes_in:,}")
    print(f"{out}: {size_out:,} bytes, of which network weights {bytes_out:,} "
          f"({len(quantized._int8_names())} matrices int8 with float32 row scales)")
    print(f"file {size_in / size_out:.2f}x smaller, network weights "
          f"{bytes_in / bytes_out:.2f}x smaller")
    return 0


# ---------------------------------------------------------------- models


def _looks_like_model(path):
    """A model file by its name, or by its content (a predtext safetensors header)."""
    from predtext.lm.modelfile import read_meta

    if str(path).endswith((".safetensors", ".ckpt")):
        return True
    if not Path(path).is_file():
        return False
    try:
        read_meta(path)
    except PredtextError:
        return False
    return True


def _on_device(model, device):
    """The model moved to ``device`` (a GPU it cannot reach: one clear error, a ValueError)."""
    return model if device is None else model.to(device)


def _load_model(path):
    """The model at ``path``, or the packaged default when ``path`` is None."""
    from predtext.lm.model import LanguageModel, default_model_path

    if path is None:
        path = default_model_path()
        if not path.is_file():
            raise PredtextError("no model given, and the packaged default model is not "
                                "installed; train one with `predtext train FILES --out PATH`")
    model = LanguageModel.load(path)
    if model.tokenizer is None:
        raise PredtextError(f"{path}: the model has no tokenizer, so it cannot read text")
    return model
