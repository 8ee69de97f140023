import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data.store import codecs
from csst_data.index import build_index
from csst_data.store.shards import SetInfo, ShardWriter
from csst_train.trainer import poly_lr
from hooks_model import KILL_BEFORE_STEP, MODEL, TERM_IN_STEP, hooks_env

C = 3
NAMES = ["ground", "thing", "sky"]


def _write(root, n, seed):
    with ShardWriter(root, SetInfo(num_classes=C, class_names=NAMES), maxcount=4) as w:
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            label = np.zeros((64, 96), np.uint8)
            label[:20] = 2
            y, x = rng.integers(24, 50), rng.integers(10, 80)
            label[y:y + 10, x:x + 12] = 1
            image = np.stack([label * 90, 255 - label * 60, rng.integers(0, 60, label.shape)], -1).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=90)
            w.write({"__key__": f"s{seed}_{i:03d}", "jpg": buf.getvalue(), "label.npy.zst": codecs.encode_label(label, C)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _write(root / "train", 12, 0)
    _write(root / "val", 3, 1)
    build_index([root / "train"], root / "index.zarr", progress=False)
    return root


def _args(data, out, *extra):
    return ["train", "--data", str(data / "train"), "--index", str(data / "index.zarr"), "--val", str(data / "val"),
            "-o", str(out), "--epochs", "2", "--crop", "64", "--batch-size", "4", "--workers", "0",
            "--no-progress", "--loss", "ce", *extra]


def _run(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _metrics(out):
    lines = [json.loads(line) for line in open(out / "metrics.jsonl")]
    timing = ("epoch_s", "crops_per_s", "data_s", "step_s", "data_wait_fraction")
    return [{k: v for k, v in r.items() if k not in timing} for r in lines]


def test_poly_lr_values():
    assert poly_lr(0.02, 0, 100) == 0.02
    assert poly_lr(0.02, 50, 100) == pytest.approx(0.02 * 0.5 ** 0.9)
    assert poly_lr(0.02, 100, 100) == 0.0
    assert poly_lr(0.01, 25, 100, power=1.0) == pytest.approx(0.0075)


def test_train_writes_checkpoints_and_metrics(data, tmp_path):
    _run(_args(data, tmp_path / "run"))
    rows = _metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["val_miou"] <= 1 and len(r["val_iou"]) == C for r in rows)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["class_names"] == NAMES and ckpt["index_hash"]
    assert (tmp_path / "run" / "best.pt").exists()
    res = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data",
                                   str(data / "val"), "--flip", "--scales", "0.5,1", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    result = json.load(open(tmp_path / "e.json"))
    assert set(result["iou"]) == set(NAMES) and 0 <= result["miou"] <= 1 and result["images"] == 3


def test_existing_run_is_not_overwritten(data, tmp_path):
    _run(_args(data, tmp_path / "run", "--epochs", "1"))
    res = CliRunner().invoke(cli, _args(data, tmp_path / "run", "--epochs", "1"))
    assert res.exit_code != 0 and "--resume" in res.output


def test_killed_run_resumes_to_identical_result(data, tmp_path):
    # 12 samples, batch 4: 3 iterations an epoch; SIGKILL as iteration 4 starts, right after epoch 1's checkpoint.
    _run(_args(data, tmp_path / "full", "--workers", "2", *MODEL))
    cmd = [sys.executable, "-m", "csst_cli.main", *_args(data, tmp_path / "killed", "--workers", "2", *MODEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{KILL_BEFORE_STEP: 4}))
    assert proc.returncode == -9, proc.stderr
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["epoch"] == 1
    _run(_args(data, tmp_path / "killed", "--workers", "2", *MODEL, "--resume"))
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "killed")


def test_resume_refuses_changed_options(data, tmp_path):
    _run(_args(data, tmp_path / "run", "--epochs", "1"))
    res = CliRunner().invoke(cli, _args(data, tmp_path / "run", "--epochs", "1", "--seed", "5", "--resume"))
    assert res.exit_code != 0 and "--seed" in res.output


def test_index_not_matching_data_fails_at_start(data, tmp_path):
    args = _args(data, tmp_path / "run")
    args[args.index("--data") + 1] = str(data / "val")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and "was built from" in res.output


USER_MODEL = """
import torch
def factory(num_classes):
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, num_classes, 1))
"""


def test_user_model_by_module_factory_trains(data, tmp_path, monkeypatch):
    (tmp_path / "my_seg_model.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _run(_args(data, tmp_path / "run", "--model", "my_seg_model:factory", "--epochs", "3", "--lr", "0.05"))
    rows = _metrics(tmp_path / "run")
    assert rows[-1]["loss"] < rows[0]["loss"]
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ckpt["args"]["model"] == "my_seg_model:factory"


def test_two_process_gloo_run(data, tmp_path):
    out = tmp_path / "ddp"
    # The options of _args(data, out, "--epochs", "1", "--batch-size", "2"); the runner traces every step.
    config = {"data": [str(data / "train")], "index": str(data / "index.zarr"), "val": [str(data / "val")],
              "out": str(out), "epochs": 1, "crop": 64, "batch_size": 2, "workers": 0, "loss": "ce"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(os.path.dirname(__file__), "trace_train.py"), json.dumps(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    traces = [[json.loads(line) for line in open(out / f"trace-rank{r}.jsonl")] for r in range(2)]
    assert len(traces[0]) == len(traces[1]) > 1
    rows = [sum((s["rows"] for s in t), []) for t in traces]
    assert len(rows[0]) == len(rows[1]) == 6  # 12 samples, equal halves
    for a, b in zip(*traces):
        assert a["params"] == b["params"]  # identical parameters after every step
    from csst_data.index import CentroidIndex
    from csst_data.loader.sampling import epoch_plan

    plan = epoch_plan(CentroidIndex.open(data / "index.zarr"), 0, 0, strategy="centroid")
    assert sorted(rows[0] + rows[1]) == sorted(plan["image"].tolist())
    assert (out / "last.pt").exists() and len(_metrics(out)) == 1


def test_cityscapes_layout_trains_and_evaluates(tmp_path):
    from csst_demo import synth

    root = tmp_path / "cs"
    synth.write_dataset(root,
                        synth.SynthOptions(labeled=6, unlabeled=0, val=2, size=(64, 128), seed=0, layout="cityscapes"),
                        progress=False)
    res = CliRunner().invoke(cli, ["index", "build", f"cityscapes:{root}:train",
                                   "-o", str(tmp_path / "cs.zarr"), "--no-progress"])
    assert res.exit_code == 0, res.output
    _run(["train", "--data", f"cityscapes:{root}:train", "--index", str(tmp_path / "cs.zarr"),
          "--val", f"cityscapes:{root}:val", "-o", str(tmp_path / "run"), "--epochs", "1", "--crop", "64",
          "--batch-size", "2", "--workers", "0", "--no-progress", "--loss", "ce"])
    assert len(_metrics(tmp_path / "run")) == 1
    res = CliRunner().invoke(cli, ["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"),
                                   "--data", f"cityscapes:{root}:val", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert json.load(open(tmp_path / "e.json"))["images"] == 2


def test_eval_of_data_without_labelled_pixels_reports_na(data, tmp_path):
    _run(_args(data, tmp_path / "run", "--epochs", "1"))  # the last --epochs wins
    with ShardWriter(tmp_path / "unlabelled", SetInfo(num_classes=C, class_names=NAMES), maxcount=4) as w:
        buf = io.BytesIO()
        Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(buf, format="JPEG")
        w.write({"__key__": "blank", "jpg": buf.getvalue(),
                 "label.npy.zst": codecs.encode_label(np.full((64, 96), 255, np.uint8), C)})
    res = _run(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", str(tmp_path / "unlabelled"),
                "--json", str(tmp_path / "e.json")])
    assert "mIoU n/a: no labelled pixels" in res.output
    with open(tmp_path / "e.json") as f:
        assert json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))["miou"] is None


def _params(path):
    return torch.load(path, weights_only=False)["model"]


def _same_params(a, b):
    a, b = _params(a), _params(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mid_epoch_sigkill_after_checkpoint_resumes_to_identical_result(data, tmp_path):
    # 12 samples, batch 4: 3 iterations an epoch; a checkpoint every 2 iterations, killed at iteration 5.
    common = ("--workers", "1", "--save-every", "2", *MODEL)
    _run(_args(data, tmp_path / "full", *common))
    cmd = [sys.executable, "-m", "csst_cli.main", *_args(data, tmp_path / "killed", *common)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{KILL_BEFORE_STEP: 6}))
    assert proc.returncode == -9, proc.stderr
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    assert saved["iteration"] == 4 and saved["loader"]["epoch"] == 1 and saved["loader"]["batches_done"] == 1
    _run(_args(data, tmp_path / "killed", *common, "--resume"))
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "killed" / "last.pt")
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "killed")


def test_sigterm_stops_at_a_step_writes_last_pt_and_resume_continues(data, tmp_path):
    # SIGTERM during iteration 2, as a scheduler's preemption: the run stops at the end of that iteration.
    _run(_args(data, tmp_path / "full", *MODEL))
    cmd = [sys.executable, "-m", "csst_cli.main", *_args(data, tmp_path / "run", *MODEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{TERM_IN_STEP: 2}))
    assert proc.returncode == 75, proc.stderr
    assert "stopped by SIGTERM at iteration 2" in proc.stderr and "--resume" in proc.stderr
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert saved["iteration"] == 2 and saved["loader"]["batches_done"] == 2
    _run(_args(data, tmp_path / "run", *MODEL, "--resume"))
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "run" / "last.pt")


def test_metrics_record_where_the_time_goes(data, tmp_path):
    _run(_args(data, tmp_path / "run", "--epochs", "1"))
    (row,) = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert row["data_s"] >= 0 and row["step_s"] > 0 and 0 <= row["data_wait_fraction"] <= 1
    assert row["epoch_s"] == pytest.approx(row["data_s"] + row["step_s"])
    assert row["data_wait_fraction"] == pytest.approx(row["data_s"] / row["epoch_s"])


def test_tensorboard_scalars(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(_args(data, tmp_path / "run", "--epochs", "2", "--tensorboard"))
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/crops_per_s", "train/data_wait_fraction", "val/miou"} <= tags
    assert {f"val/iou/{n}" for n in NAMES} & tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]


def test_two_process_gloo_mid_epoch_kill_and_resume(data, tmp_path):
    def torchrun(out, *extra, **hooks):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "csst_cli.main", *_args(data, out, "--batch-size", "2", "--save-every", "2", *MODEL, *extra)]
        return subprocess.run(cmd, capture_output=True, text=True, env={**hooks_env(**hooks), "OMP_NUM_THREADS": "1"},
                              timeout=300)

    assert torchrun(tmp_path / "full").returncode == 0
    # 6 samples per rank, batch 2: 3 iterations an epoch; checkpoint at 4, SIGKILL right after 5 (epoch 2).
    assert torchrun(tmp_path / "run", **{KILL_BEFORE_STEP: 6}).returncode != 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["iteration"] == 4
    proc = torchrun(tmp_path / "run", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "run" / "last.pt")


def test_stop_at_the_last_step_of_an_epoch_resumes(data, tmp_path):
    # 12 samples, batch 4: iteration 3 is the last of epoch 1; the stop comes before the epoch's own checkpoint.
    _run(_args(data, tmp_path / "full", *MODEL))
    cmd = [sys.executable, "-m", "csst_cli.main", *_args(data, tmp_path / "run", *MODEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{TERM_IN_STEP: 3}))
    assert proc.returncode == 75, proc.stderr
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert saved["iteration"] == 3 and saved["loader"]["batches_done"] == 3
    _run(_args(data, tmp_path / "run", *MODEL, "--resume"))
    _same_params(tmp_path / "full" / "last.pt", tmp_path / "run" / "last.pt")
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "run")
