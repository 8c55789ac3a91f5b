"""Run by tests/test_lm_distributed.py under mpirun: one training run, settings in argv[1].

JSON keys: files, out, config (TrainConfig fields), resume, stop_at (stop after that step,
as Ctrl-C would), fail_rank and fail_at (that rank raises at that step), missing_on_rank
(that rank is given a file that does not exist), announce (print "first step trained
by rank R pid P" to stderr once this run's first step is done, for a test waiting to
interrupt or kill a running loop), nan_rank and nan_at (that
rank's share of the batch gives a NaN loss from that step: its input embedding is poisoned).
"""

import json
import os
import socket
import sys

from predtext.lm.distributed import world
from predtext.lm.train import TrainConfig, train


def poison_from_step(step):
    """From training step ``step`` on, this rank's model computes with a NaN parameter, so
    its loss and gradients are NaN: a rank whose state went bad."""
    from predtext.lm.model import LanguageModel

    original, calls = LanguageModel.begin_update_loss, [0]

    def poisoned(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= step:
            next(iter(self.parameters())).data[...] = float("nan")
        return original(self, *args, **kwargs)

    LanguageModel.begin_update_loss = poisoned


def main():
    args = json.loads(sys.argv[1])
    rank = world().rank
    files = list(args["files"])
    if args.get("missing_on_rank") == rank:
        files.append(args["out"] + ".no-such-file.txt")

    if args.get("nan_rank") == rank:
        poison_from_step(args["nan_at"])

    first = []

    def on_step(info):
        if args.get("fail_rank") == rank and info["step"] == args.get("fail_at"):
            raise RuntimeError(f"injected fault at step {info['step']}")
        if args.get("announce") and not first:
            first.append(info["step"])
            print(f"first step trained by rank {rank} pid {os.getpid()}", file=sys.stderr,
                  flush=True)
        return info["step"] == args.get("stop_at")

    result = train(files, args["out"], TrainConfig(**args["config"]), resume=args.get("resume"),
                   log=lambda line: print(line, file=sys.stderr), on_step=on_step)
    print(json.dumps({"rank": rank, "host": socket.gethostname(), "steps": result.record["steps"],
                      "stopped": result.stopped}))


if __name__ == "__main__":
    main()
