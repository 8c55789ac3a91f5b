"""Writes tests/data/legacy_v0.ckpt: a checkpoint of the training loop as it was at commit
cb3d201 (before the checkpoint format had a version). Kept so the test that resumes it
shows a checkpoint written by that code still continues. Rerunning it with newer code
writes a newer format; it is here as the record of how the file was made. The run is set
for 20 steps and stopped after 10 (as Ctrl-C would), so resuming it to 20 steps must give
what an uninterrupted 20-step run gives:

    PYTHONPATH=src python tests/data/make_legacy_checkpoint.py
"""

import os
import tempfile
from pathlib import Path

from predtext.lm.train import TrainConfig, train

HERE = Path(__file__).parent


def main():
    os.environ.setdefault("PREDTEXT_DATA_DIR", tempfile.mkdtemp())
    config = TrainConfig(hidden_size=16, embed_size=8, seq_len=16, batch_size=4, max_steps=20,
                         progress=False, ngram=False, plot=False, eval_interval=1e9,
                         checkpoint_interval=1e9, dropout=0.1, lr=1e-2, warmup_steps=3,
                         checkpoint=str(HERE / "legacy_v0.ckpt"))
    with tempfile.TemporaryDirectory() as scratch:
        train([HERE / "legacy_corpus.txt"], Path(scratch) / "m.safetensors", config,
              log=lambda line: None, on_step=lambda info: info["step"] == 10)


if __name__ == "__main__":
    main()
