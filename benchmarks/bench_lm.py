"""Language-model quality beside its anchors, trained for the same time in one run.

Character level (tinyshakespeare, first 90% train, last 10% validation):

* predtext: ``predtext train tinyshakespeare.txt --level char --time-budget BUDGET`` with
  the default settings, run as a separate process exactly as a user would;
* torch LSTM, same recipe: a PyTorch LSTM of the same size (layers, hidden, embedding),
  trained on the same batches with the same optimiser, clipping and learning-rate schedule,
  for the same training time -- the anchor the target names;
* torch with predtext's default cell, same recipe, when that cell is not an LSTM (so the
  comparison of the two libraries on the same network is in the table too);
* torch, reference recipe (``--reference``): the README's figure, a 2x256 LSTM (embedding
  64), Adam 2e-3 constant, batch 32 x 64, clip 5.

Both sides count only training time against the budget (validation runs outside it), and
every model is scored by the same code: its weights are loaded into a predtext
``LanguageModel`` and ``predtext.lm.train.evaluate`` reads the whole validation split.

Word level (gutenberg novels, each book split 90/10): the word LSTM from
``predtext train gutenberg/ --level word --time-budget WORD_BUDGET`` against an
interpolated Kneser-Ney 3-gram (``predtext.engine.ngram.NGramModel``) counted on the same
training text. To compare perplexities the two must predict the same tokens from the
same vocabulary:

* the vocabulary is the word model's (the most frequent 20,000 tokens of the training
  text); every other token becomes the unknown token ``<unk>`` for both models, and
  ``<unk>`` is predicted like any other token;
* the word tokenizer keeps whitespace as tokens (so text round-trips), an n-gram model
  does not: a 3-gram over "word, space, word" would only ever see one previous word. So
  the n-gram is counted on the words and punctuation alone, and both models are scored on
  exactly those tokens of the held-out text: the LSTM's probability of each word or
  punctuation token given everything before it, the 3-gram's given the two tokens before it.
  (The LSTM's whitespace predictions are printed separately, as its all-token perplexity.)

    python benchmarks/bench_lm.py [--budget 300] [--word-budget 300] [--reference]
                                  [--skip-char] [--skip-word] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy

from predtext.lm.corpus import TokenStream, resolve_paths
from predtext.lm.model import LanguageModel
from predtext.lm.train import TrainConfig, evaluate, learning_rate, read_ids

CORPORA = Path(os.environ.get("PREDTEXT_CORPORA", Path(__file__).resolve().parents[2] /
                              "shared" / "corpora"))


def train_with_cli(files, out, level, budget, threads, extra=()):
    """``predtext train`` in its own process, with default settings."""
    command = [sys.executable, "-m", "predtext.cli", "train", *map(str, files), "--out", str(out),
               "--level", level, "--time-budget", str(budget), "--no-ngram", "--no-plot",
               "--quiet", *extra]
    if threads:
        command += ["--threads", str(threads)]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - began


# ---------------------------------------------------------------- torch


def torch_language_model(config, vocab_size, cell):
    import torch

    recurrent = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]

    class TorchLM(torch.nn.Module):
        # Attribute names match predtext's, so the state dict loads into LanguageModel; the
        # dropout sits where predtext's does (embedding output, between layers, before the
        # decoder).
        def __init__(self):
            super().__init__()
            p = config.dropout
            self.embedding = torch.nn.Embedding(vocab_size, config.embed_size)
            self.embedding_dropout = torch.nn.Dropout(p)
            self.rnn = recurrent(config.embed_size, config.hidden_size, config.num_layers,
                                 dropout=p if config.num_layers > 1 else 0.0)
            self.output_dropout = torch.nn.Dropout(p)
            self.decoder = torch.nn.Linear(config.hidden_size, vocab_size)

        def forward(self, ids, state):
            out, state = self.rnn(self.embedding_dropout(self.embedding(ids)), state)
            return self.decoder(self.output_dropout(out)), state

    return TorchLM()


def train_torch(config, train_ids, vocab_size, budget, schedule=True, cell="lstm"):
    """Train a torch ``cell`` model on the same batches as predtext for ``budget`` seconds.

    ``schedule``: predtext's warmup + cosine-by-time schedule (else a constant rate).
    Returns ``(state_dict, tokens_trained)``.
    """
    import torch

    torch.manual_seed(config.seed)
    batches = TokenStream(train_ids, config.seq_len, config.batch_size)
    model = torch_language_model(config, vocab_size, cell)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, seconds, tokens, state = 0, 0.0, 0, None
    while seconds < budget:
        for x_tb, y_tb in batches:
            began = time.perf_counter()
            if batches.batch_index == 1:
                state = None
            lr = learning_rate(config, step, seconds / budget) if schedule else config.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, state = model(torch.from_numpy(x_tb.astype(numpy.int64)), state)
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     torch.from_numpy(y_tb.astype(numpy.int64)).reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            seconds += time.perf_counter() - began
            step += 1
            tokens += x_tb.size
            if seconds >= budget:
                break
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}, tokens


def score_torch(state_dict, config, tokenizer, valid_ids, cell="lstm"):
    settings = dict(config.model_config(tokenizer.vocab_size), cell=cell)
    model = LanguageModel(tokenizer=tokenizer, **settings)
    model.load_state_dict(state_dict)
    return evaluate(model, valid_ids)["loss"]


# ---------------------------------------------------------------- character level


def char_benchmark(budget, threads, reference):
    corpus = CORPORA / "tinyshakespeare.txt"
    print(f"== character level: {corpus.name}, {budget:g} s of training each ==", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "char.safetensors"
        wall = train_with_cli([corpus], out, "char", budget, threads)
        ours = LanguageModel.load(out)
        record = ours.training_record
        config = TrainConfig(**record["settings"]).resolved()
        valid_ids, _ = read_ids([corpus], ours.tokenizer, "validation")
        train_ids, _ = read_ids([corpus], ours.tokenizer, "train")
        rows.append(("predtext (defaults)", _recipe(config, True, config.cell),
                     record["tokens_seen"], record["seconds"],
                     evaluate(ours, valid_ids)["loss"]))
        print(f"  predtext done ({wall:.0f} s wall)", flush=True)

        if threads:
            import torch

            torch.set_num_threads(threads)
        cells = ["lstm"] + ([config.cell] if config.cell != "lstm" else [])
        for cell in cells:
            weights, tokens = train_torch(config, train_ids, ours.vocab_size, budget, cell=cell)
            rows.append((f"torch {cell.upper()}, same recipe", _recipe(config, True, cell), tokens,
                         budget, score_torch(weights, config, ours.tokenizer, valid_ids, cell)))
            print(f"  torch {cell.upper()} (same recipe) done", flush=True)
        if reference:
            ref = TrainConfig(cell="lstm", hidden_size=256, embed_size=64, num_layers=2,
                              seq_len=64, dropout=0.0, batch_size=32, lr=2e-3,
                              clip=5.0).resolved()
            weights, tokens = train_torch(ref, train_ids, ours.vocab_size, budget, schedule=False)
            rows.append(("torch LSTM, reference recipe", _recipe(ref, False, "lstm"), tokens,
                         budget, score_torch(weights, ref, ours.tokenizer, valid_ids)))

    print(f"\n{'model':<30}{'recipe':<52}{'tokens':>11}{'tok/s':>9}{'val loss':>10}")
    for name, recipe, tokens, seconds, loss in rows:
        print(f"{name:<30}{recipe:<52}{tokens:>11,}{tokens / seconds:>9,.0f}{loss:>10.4f}")
    for name, _, _, _, loss in rows[1:1 + len(cells)]:
        print(f"predtext - {name}: {rows[0][4] - loss:+.4f} nats/char (negative: predtext better)")
    print(flush=True)
    return rows


def _recipe(config, schedule, cell):
    lr = f"lr {config.lr:g} {'cosine' if schedule else 'constant'}"
    return (f"{cell.upper()} {config.num_layers}x{config.hidden_size} emb {config.embed_size} "
            f"drop {config.dropout:g}, "
            f"{config.batch_size}x{config.seq_len}, {lr}")


# ---------------------------------------------------------------- word level


def token_log_probs(model, ids, batch_size=8, seq_len=128):
    """log P(ids[i] | ids[:i]) for i >= 1, each stream carrying its state (as ``evaluate``)."""
    n = len(ids) - 1
    batch_size = max(1, min(batch_size, n // seq_len or 1))
    length = -(-n // batch_size)
    inputs = numpy.zeros(batch_size * length, dtype=numpy.int64)
    targets = numpy.zeros(batch_size * length, dtype=numpy.int64)
    inputs[:n], targets[:n] = ids[:-1], ids[1:]
    inputs_tb = inputs.reshape(batch_size, length).T
    targets_tb = targets.reshape(batch_size, length).T
    scores_tb = numpy.zeros((length, batch_size))
    model.eval()
    state = None
    for start in range(0, length, seq_len):
        window = numpy.ascontiguousarray(inputs_tb[start:start + seq_len])
        logits, state = model.forward(window, state)
        logits = logits.astype(numpy.float64)
        logits -= logits.max(-1, keepdims=True)
        log_z = numpy.log(numpy.exp(logits).sum(-1))
        targets_window = targets_tb[start:start + seq_len, :, None]
        chosen = numpy.take_along_axis(logits, targets_window, -1)[..., 0]
        scores_tb[start:start + seq_len] = chosen - log_z
    return scores_tb.T.reshape(-1)[:n]


def word_benchmark(budget, threads):
    from predtext.engine.ngram import NGramModel

    books = resolve_paths([CORPORA / "gutenberg"])
    print(f"== word level: {len(books)} gutenberg novels (each 90/10), "
          f"{budget:g} s of LSTM training ==", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "word.safetensors"
        train_with_cli(books, out, "word", budget, threads)
        model = LanguageModel.load(out)
    tokenizer = model.tokenizer
    is_space = numpy.array([token.isspace() for token in tokenizer.id_to_token])
    is_space[0] = False  # <unk> stands for a word

    def as_words(ids):
        return " ".join(f"t{i}" for i in ids)  # one n-gram "word" per token id

    documents, lstm_scores, lstm_all, kn_scores = [], [], [], []
    for book in books:
        train_ids, _ = read_ids([book], tokenizer, "train")
        documents.append(as_words(train_ids[~is_space[train_ids]]))
    began = time.perf_counter()
    ngram = NGramModel.from_text(documents, order=3)
    print(f"  3-gram counted in {time.perf_counter() - began:.1f} s", flush=True)
    for book in books:
        ids, _ = read_ids([book], tokenizer, "validation")
        scores = token_log_probs(model, ids)
        lstm_all.append(scores)
        lstm_scores.append(scores[~is_space[ids[1:]]])
        words = [f"t{i}" for i in ids[~is_space[ids]]]
        # The same tokens the LSTM is scored on: every word/punctuation token but the first.
        offset = 0 if is_space[ids[0]] else 1
        kn_scores.append([math.log(ngram.probability(words[i], words[max(0, i - 2):i]))
                          for i in range(offset, len(words))])
    lstm_ppl = math.exp(-numpy.concatenate(lstm_scores).mean())
    all_ppl = math.exp(-numpy.concatenate(lstm_all).mean())
    kn = numpy.concatenate([numpy.asarray(s) for s in kn_scores])
    kn_ppl = math.exp(-kn.mean())
    n_scored = sum(len(s) for s in lstm_scores)
    print(f"\nheld-out word and punctuation tokens: {n_scored:,} "
          f"(vocabulary {tokenizer.vocab_size:,})")
    print(f"{'model':<44}{'perplexity':>12}")
    print(f"{'predtext word LSTM':<44}{lstm_ppl:>12.2f}")
    print(f"{'interpolated Kneser-Ney 3-gram (NGramModel)':<44}{kn_ppl:>12.2f}")
    print(f"(LSTM over all tokens, whitespace included: {all_ppl:.2f})")
    print(f"LSTM / KN perplexity: {lstm_ppl / kn_ppl:.3f} (below 1: the LSTM is better)\n")
    return lstm_ppl, kn_ppl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds of training for each char-level model (default 300)")
    parser.add_argument("--word-budget", type=float, default=300.0,
                        help="seconds of training for the word LSTM (default 300)")
    parser.add_argument("--reference", action="store_true",
                        help="also train torch with the README's reference recipe (2x256)")
    parser.add_argument("--skip-char", action="store_true")
    parser.add_argument("--skip-word", action="store_true")
    parser.add_argument("--threads", type=int, help="threads for both libraries (default: all)")
    args = parser.parse_args(argv)
    if not args.skip_char:
        char_benchmark(args.budget, args.threads, args.reference)
    if not args.skip_word:
        word_benchmark(args.word_budget, args.threads)


if __name__ == "__main__":
    main()
