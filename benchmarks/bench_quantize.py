"""An 8-bit model beside its float one: file size, held-out loss, keystroke savings.

    python benchmarks/bench_quantize.py [--model PATH] [--json]

``predtext quantize`` writes MODEL (by default the packaged default model) with 8-bit
recurrent and decoder weights into a temporary file; then, for both files in the same run:
the file size and the bytes of network weights in it; the validation loss (nats/char) on the
held-out 10% of every file of the model's training record, scored as
``scripts/train_default_model.py`` scores it; and the keystroke savings of the default engine
on ``benchmarks/data/english_original.txt`` (no corpus holds it), by ``bench_ksr.py``'s
protocol. The engine's per-keystroke time budget is lifted for the KSR rows: on a loaded
machine a late predictor is skipped at random, which would change the count by more than the
weights do; lifted, the two rows differ by the weights alone. The loss and KSR do not depend on
the CPU; the latency columns (p50, p99 of suggest()) do, and are printed for completeness.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import bench_ksr

from predtext.cli import main as predtext_main
from predtext.engine.config import MAX_TIME_BUDGET_MS
from predtext.lm import modelfile
from predtext.lm.corpus import resolve_paths
from predtext.lm.model import NGRAM_TENSOR_PREFIX, LanguageModel, default_model_path
from predtext.lm.train import evaluate, read_ids


def figures(path: Path, files, test: str, k: int) -> dict:
    tensors, _ = modelfile.load_model(path)
    model = LanguageModel.load(path)
    ids, _ = read_ids(resolve_paths(files), model.tokenizer, "validation")
    config = copy.deepcopy(bench_ksr.PREDTEXT_DEFAULT)
    config.setdefault("engine", {})["time_budget_ms"] = MAX_TIME_BUDGET_MS
    typed = bench_ksr.run_predtext(test, k, config, str(path))
    return {
        "file_bytes": path.stat().st_size,
        "weight_bytes": sum(a.nbytes for name, a in tensors.items()
                            if not name.startswith(NGRAM_TENSOR_PREFIX)),
        "valid_loss": evaluate(model, ids)["loss"],
        "valid_tokens": len(ids) - 1,
        "ksr": typed.ksr,
        "p50_ms": typed.latency_percentile(50),
        "p99_ms": typed.latency_percentile(99),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="a float model file (default: the packaged default model)")
    parser.add_argument("-k", type=int, default=6, help="suggestions offered per keystroke")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    source = args.model or default_model_path()
    # Nothing learned reaches the user's own history or config.
    os.environ["PREDTEXT_DATA_DIR"] = tempfile.mkdtemp(prefix="bench_quantize_data_")
    os.environ["PREDTEXT_CONFIG"] = os.path.join(os.environ["PREDTEXT_DATA_DIR"], "none.toml")
    files = LanguageModel.load(source).training_record.get("files")
    if not files:
        raise SystemExit(f"{source}: its training record names no files to validate on")
    test = bench_ksr.ENGLISH_TEXT.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="bench_quantize_") as tmp:
        quantized = Path(tmp) / "int8.safetensors"
        if predtext_main(["quantize", str(source), str(quantized)]) != 0:
            return 1
        rows = {"float": figures(source, files, test, args.k),
                "int8": figures(quantized, files, test, args.k)}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{source.name}: held-out 10% of {len(files)} files "
          f"({rows['float']['valid_tokens']:,} tokens); KSR on {bench_ksr.ENGLISH_TEXT.name}, "
          f"k={args.k}, no time budget; {bench_ksr._who()}")
    print(f"{'weights':<8}{'file bytes':>13}{'weight bytes':>14}{'valid loss':>12}"
          f"{'KSR %':>8}{'p50 ms':>8}{'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<8}{row['file_bytes']:>13,}{row['weight_bytes']:>14,}"
              f"{row['valid_loss']:>12.5f}{row['ksr'] * 100:>8.2f}{row['p50_ms']:>8.2f}"
              f"{row['p99_ms']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
