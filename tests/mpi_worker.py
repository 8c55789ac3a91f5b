"""Run by tests/test_lm_distributed.py under mpirun: one training run, settings in argv[1].

JSON keys: files, out, config (TrainConfig fields), resume, stop_at (stop after that step,
as Ctrl-C would), fail_rank and fail_at (that rank raises at that step), missing_on_rank
(that rank is given a file that does not exist), announce (print "trained step 1" to
stderr once the first step is done, for a test waiting to interrupt a running loop).
"""

import json
import socket
import sys

from predtext.lm.distributed import world
from predtext.lm.train import TrainConfig, train


def main():
    args = json.loads(sys.argv[1])
    rank = world().rank
    files = list(args["files"])
    if args.get("missing_on_rank") == rank:
        files.append(args["out"] + ".no-such-file.txt")

    def on_step(info):
        if args.get("fail_rank") == rank and info["step"] == args.get("fail_at"):
            raise RuntimeError(f"injected fault at step {info['step']}")
        if args.get("announce") and info["step"] == 1:
            print("trained step 1", file=sys.stderr, flush=True)
        return info["step"] == args.get("stop_at")

    result = train(files, args["out"], TrainConfig(**args["config"]), resume=args.get("resume"),
                   log=lambda line: print(line, file=sys.stderr), on_step=on_step)
    print(json.dumps({"rank": rank, "host": socket.gethostname(), "steps": result.record["steps"],
                      "stopped": result.stopped}))


if __name__ == "__main__":
    main()
