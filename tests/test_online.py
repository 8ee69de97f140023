"""`--pseudo-loss online`: one network learns from unlabelled crops labelled by its own current predictions
(or an EMA copy's), with no `csst label` stage; a run resumes exactly."""

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from csst_cli.main import cli
from csst_data.index import build_index
from csst_train.config import TrainConfig
from csst_train.images import list_inputs
from csst_train.online import UnlabeledCrops, online_loss
from csst_train.trainer import train
from hooks_model import MODEL, TERM_IN_STEP, hooks_env
from test_trainer import _write


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    _write(root / "train", 8, 0)
    _write(root / "unl", 6, 2)  # labels present but never read: the images are a SOURCE of images only
    build_index([root / "train"], root / "index.zarr", progress=False)
    return root


def _args(data, out, *extra):
    return ["train", "--data", str(data / "train"), "--index", str(data / "index.zarr"), "-o", str(out),
            "--epochs", "2", "--crop", "48", "--batch-size", "4", "--workers", "0", "--no-progress", "--loss", "ce",
            "--pseudo-loss", "online", "--unlabeled", str(data / "unl"), "--online-threshold", "0.3", *extra]


def _run(args, ok=True):
    res = CliRunner().invoke(cli, args)
    assert (res.exit_code == 0) == ok, res.output
    return res


def test_online_mode_trains_without_a_label_stage(data, tmp_path):
    seen = []
    train(TrainConfig(out=str(tmp_path / "run"), data=[str(data / "train")], index=str(data / "index.zarr"),
                      epochs=1, crop=48, batch_size=4, workers=0, loss="ce", pseudo_loss="online",
                      unlabeled=[str(data / "unl")], online_teacher="ema", online_threshold=0.3),
          log=lambda s: None, on_step=lambda info: seen.append(info.batch["unlabeled"].clone()))
    assert len(seen) == 2 and all(u.shape == (4, 3, 48, 48) and u.dtype == torch.uint8 for u in seen)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    ema, model = ckpt["ema"], ckpt["model"]
    assert ema.keys() == model.keys()
    # The mean teacher moved towards the weights, but is not them.
    moved = [k for k in model if model[k].is_floating_point() and not torch.equal(ema[k], model[k])]
    assert moved and ckpt["args"]["unlabeled"] and ckpt["args"]["pseudo_loss"] == "online"


def test_unlabelled_crops_are_drawn_from_the_seed_and_iteration(data):
    items = list_inputs([str(data / "unl")])
    a, b = UnlabeledCrops(items, 0, 32, 3), UnlabeledCrops(items, 0, 32, 3)
    assert torch.equal(a[5], b[5]) and not torch.equal(a[5], a[6])
    assert not torch.equal(a[5], UnlabeledCrops(items, 1, 32, 3)[5])


def test_online_loss_uses_confident_predictions_only():
    teacher = torch.zeros(1, 3, 2, 2)
    teacher[0, 1, 0, 0] = 10.0  # one confident pixel (class 1); the others are uniform (1/3)
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = online_loss(logits, teacher, 0.5)
    want = torch.nn.functional.cross_entropy(logits[:, :, :1, :1], torch.tensor([[[1]]]))
    assert torch.allclose(loss, want)
    assert float(online_loss(logits, teacher, 1.0).detach()) == 0.0  # nothing confident enough: no loss, no NaN


@pytest.mark.parametrize("teacher", ["self", "ema"])
def test_online_run_stopped_mid_epoch_resumes_exactly(data, tmp_path, teacher):
    # 8 samples, batch 4: 2 iterations an epoch; SIGTERM during iteration 3 (the second epoch's first).
    extra = ("--online-teacher", teacher, *MODEL)
    _run(_args(data, tmp_path / "full", *extra))
    cmd = [sys.executable, "-m", "csst_cli.main", *_args(data, tmp_path / "run", *extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=hooks_env(**{TERM_IN_STEP: 3}))
    assert proc.returncode == 75, proc.stderr
    _run(_args(data, tmp_path / "run", *extra, "--resume"))
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    for part in ("model",) + (("ema",) if teacher == "ema" else ()):
        for k, v in full[part].items():
            assert torch.equal(v, resumed[part][k]), (part, k)


def test_online_needs_unlabelled_images(data, tmp_path):
    args = _args(data, tmp_path / "run")
    i = args.index("--unlabeled")
    del args[i:i + 2]
    assert "--unlabeled" in _run(args, ok=False).output
