"""Train the packaged default model: src/predtext/models/default.safetensors.

A character-level GRU (two layers of 256 by default) trained on the training
splits of the shared public-domain corpora (tinyshakespeare and the nine gutenberg novels,
the first 90% of each file), with the word 3-gram counts of the same text embedded for the
suggestion engine. Weights are stored as float16 so that the file stays under 20 MB;
`--int8` then stores the recurrent and decoder matrices as int8 with a float32 scale per row
(`predtext quantize`: the engine's steps read them directly). The defaults give the packaged
model; the larger one measured beside it in README is
`--hidden-size 512 --budget 6000 --int8`.
Everything is seeded, so the same budget on the same machine gives the same model (a time
budget stops at a step count that depends on the machine's speed).

    python scripts/train_default_model.py [--budget SECONDS] [--out PATH] [--corpora DIR]
                                          [--cell gru] [--hidden-size 256] [--layers 2]
                                          [--int8]

Prints the validation figures (loss in nats per character, perplexity, bits per character)
on each corpus's held-out 10%, and the file size.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 20 * 1024 * 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds of training (default 600)")
    parser.add_argument("--cell", default="gru", help="rnn_tanh, rnn_relu, lstm or gru")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--int8", action="store_true",
                        help="store the recurrent and decoder matrices as int8 (predtext quantize)")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "predtext" / "models" /
                        "default.safetensors")
    parser.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "build" / "default_model.ckpt",
                        help="training checkpoint (default build/default_model.ckpt, outside "
                             "the package)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args(argv)

    from predtext.cli import main as predtext_main
    from predtext.lm.corpus import resolve_paths
    from predtext.lm.model import LanguageModel
    from predtext.lm.train import TrainConfig, evaluate, metrics, read_ids, train

    corpora = {"tinyshakespeare": [args.corpora / "tinyshakespeare.txt"],
               "gutenberg": [args.corpora / "gutenberg"]}
    files = [path for paths in corpora.values() for path in paths]
    config = TrainConfig(level="char", cell=args.cell, hidden_size=args.hidden_size,
                         num_layers=args.layers, time_budget=args.budget, seed=args.seed,
                         weights_dtype="float16", ngram=True, ngram_order=3, plot=False,
                         progress=sys.stderr.isatty())
    config.checkpoint = str(args.checkpoint)  # never inside the package
    result = train(files, args.out, config, resume=args.resume or None)

    print(f"\n{args.out}: {result.model.num_parameters():,} parameters, "
          f"{result.record['steps']:,} steps, {result.record['seconds']:.0f} s of training "
          f"(stopped: {result.stopped})")
    if args.int8 and predtext_main(["quantize", str(args.out), str(args.out)]) != 0:
        return 1
    model = LanguageModel.load(args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, weights "
          f"{model.quantized or 'float16'}")
    print(f"{'held-out 10% of':<18}{'tokens':>10}{'loss':>9}{'ppl':>8}{'bpc':>8}")
    for name, paths in corpora.items():
        ids, n_chars = read_ids(resolve_paths(paths), model.tokenizer, "validation")
        figures = metrics(evaluate(model, ids)["loss"], n_chars / len(ids))
        print(f"{name:<18}{len(ids) - 1:>10,}{figures['loss']:>9.4f}"
              f"{figures['perplexity']:>8.3f}{figures['bpc']:>8.3f}")
    if args.out.stat().st_size > MAX_BYTES:
        print(f"warning: {args.out} is over {MAX_BYTES / 1e6:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
