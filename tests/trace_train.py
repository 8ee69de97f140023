"""Test-side runner for the two-process gloo test: `csst_train.trainer.train` with an `on_step`
callback that writes OUT/trace-rank{R}.jsonl, one line per step: {epoch, iteration, rows, pos, params}
(rows: the index rows of the step's crops; pos: their epoch-plan positions; params: a 16-hex-digit hash of the parameters after it).

    python -m torch.distributed.run --nproc_per_node 2 tests/trace_train.py '{"out": ..., ...}'

The argument is a JSON object of TrainConfig fields.
"""

import hashlib
import json
import os
import sys

from csst_train.config import TrainConfig
from csst_train.trainer import train


def param_hash(model):
    sha = hashlib.sha256()
    for p in model.parameters():
        sha.update(p.detach().cpu().numpy().tobytes())
    return sha.hexdigest()[:16]


def main(config_json):
    cfg = TrainConfig(**json.loads(config_json))
    os.makedirs(cfg.out, exist_ok=True)
    files = {}

    def on_step(step):
        if step.rank not in files:
            files[step.rank] = open(os.path.join(cfg.out, f"trace-rank{step.rank}.jsonl"), "a")
        f = files[step.rank]
        f.write(json.dumps({"epoch": step.epoch, "iteration": step.iteration,
                            "rows": step.batch["row"].tolist(), "pos": step.batch["pos"].tolist(),
                            "params": param_hash(step.model)}) + "\n")
        f.flush()

    try:
        train(cfg, log=lambda line: print(line, file=sys.stderr), on_step=on_step)
    finally:
        for f in files.values():
            f.close()


if __name__ == "__main__":
    main(sys.argv[1])
