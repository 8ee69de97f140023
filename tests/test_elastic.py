"""Resume on another number of processes (issue #22): a run stopped mid-epoch on 2 processes goes on
on 1, and one stopped on 1 goes on on 2; across the two parts every position of the epoch plan is
trained on exactly once, and the run finishes its schedule."""

import json
import subprocess
import sys

import pytest
import torch

from csst_data.index import build_index
from hooks_model import KILL_BEFORE_STEP, hooks_env
from test_trainer import _write

HERE = __file__.rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("elastic")
    _write(root / "train", 12, 0)
    build_index([root / "train"], root / "index.zarr", progress=False)
    return root


def _train(data, out, procs, **hooks):
    cfg = {"out": str(out), "data": [str(data / "train")], "index": str(data / "index.zarr"), "epochs": 2,
           "crop": 64, "batch_size": 2, "workers": 0, "loss": "ce", "save_every": 1, "resume": (out / "last.pt").exists(),
           "model": "hooks_model:fastscnn"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           f"{HERE}/trace_train.py", json.dumps(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**hooks_env(**hooks), "OMP_NUM_THREADS": "1"})


def _positions(out, epoch):
    seen = []
    for path in sorted(out.glob("trace-rank*.jsonl")):
        for line in open(path):
            step = json.loads(line)
            if step["epoch"] == epoch:
                seen += step["pos"]
    return seen


@pytest.mark.parametrize("before, after, kill_before_step", [(2, 1, 3), (1, 2, 4)])
def test_resume_on_another_number_of_processes_sees_each_plan_position_once(data, tmp_path, before, after,
                                                                            kill_before_step):
    out = tmp_path / "run"
    # 12 samples, batch 2 per process: on 2 processes 3 steps an epoch, on 1 six. Killed before step
    # `kill_before_step` of epoch 1, right after the previous step's checkpoint.
    assert _train(data, out, before, **{KILL_BEFORE_STEP: kill_before_step}).returncode != 0
    saved = torch.load(out / "last.pt", weights_only=False)
    assert saved["epoch"] == 0 and saved["loader"]["world_size"] == before
    first = sorted(_positions(out, 0))
    assert first == list(range(len(first))) and 0 < len(first) < 12  # the plan's first positions
    proc = _train(data, out, after)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming a run of {before} process(es) on {after}" in proc.stderr
    epoch0 = _positions(out, 0)
    assert sorted(epoch0) == list(range(12))  # every plan position once, none twice
    assert sorted(_positions(out, 1)) == list(range(12))  # the next epoch runs on `after` processes whole
    final = torch.load(out / "last.pt", weights_only=False)
    assert final["epoch"] == 2 and final["loader"]["world_size"] == after
    # The schedule ends where it should: the last step ran at the poly schedule's end.
    steps = [json.loads(x) for p in sorted(out.glob("trace-rank*.jsonl")) for x in open(p)]
    assert max(s["iteration"] for s in steps) == final["iteration"] == 12 // (2 * after) * 2
