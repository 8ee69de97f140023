"""Soft labels end to end: `csst label --topk` output through the loader into each pseudo loss."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.loader import crops
from csst_data.store import shards
from csst_demo import synth
from csst_data.loader.reader import SampleReader
from csst_data.index import CentroidIndex, build_index
from csst_data.loader.crop_loader import CropLoader, load_crop
from csst_data.loader.options import CropOptions, LoaderOptions


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory):
    """A teacher trained for one epoch, its top-3 soft labels of unlabelled images, and the index of both."""
    root = tmp_path_factory.mktemp("soft")
    synth.write_dataset(root / "d", synth.SynthOptions(8, 6, 2, size=(64, 128), seed=2))
    run("train", "--data", root / "d" / "labeled", "-o", root / "teacher", "--epochs", "1", "--crop", "64",
        "--batch-size", "4", "--workers", "0", "--loss", "ce", "--no-progress")
    run("label", "--checkpoint", root / "teacher" / "last.pt", "--input", root / "d" / "unlabeled",
        "-o", root / "pseudo", "--topk", "3", "--workers", "0", "--device", "cpu",
        "--no-progress")
    build_index([root / "d" / "labeled", root / "pseudo"], root / "index.zarr")
    return root


def test_topk_crops_follow_the_label_geometry(pseudo):
    index = CentroidIndex.open(pseudo / "index.zarr")
    reader = SampleReader(index)
    rows = np.flatnonzero(index.images["source"] == 1)  # the pseudo-labelled images
    checked = 0
    for n, row in enumerate(rows):
        for seed in range(6):
            rng = np.random.default_rng([seed, n])
            image, label, soft = load_crop(reader, index, int(row), (np.nan, np.nan), 48, rng,
                                           CropOptions(aug=crops.Augment(scale_range=(0.5, 2.0)), topk=True))
            # The same draw again, applied by hand to the decoded full maps.
            params = crops.crop_params(64, 128, 48, np.random.default_rng([seed, n]), center=None,
                                       aug=crops.Augment(scale_range=(0.5, 2.0), flip=True, colour=True))
            full_idx, full_prob = reader.topk(row)
            assert full_idx.shape == full_prob.shape == (3, 64, 128)
            assert np.array_equal(soft[0], crops.crop_nearest(full_idx, params, 0))
            assert np.array_equal(soft[1], crops.crop_nearest(full_prob, params, 0))
            assert np.array_equal(label, crops.crop_nearest(reader.label(row).copy(), params, IGNORE))
            # The hard pseudo label is the top class wherever it is not ignored: same geometry.
            labelled = label != IGNORE
            assert np.array_equal(label[labelled], soft[0][0][labelled])
            checked += int(labelled.sum())
    assert checked > 1000


def test_batches_mix_real_and_soft_pseudo_samples(pseudo):
    index = CentroidIndex.open(pseudo / "index.zarr")
    # The first seed whose batch mixes real and pseudo samples (which ones a plan draws is chance).
    for seed in range(1, 20):
        loader = CropLoader(index, LoaderOptions(crop=32, batch_size=14, epochs=1, workers=0, topk=True, seed=seed))
        loader.set_epoch(0)
        (batch,) = list(loader)
        if 0 < int(batch["is_pseudo"].sum()) < 14:
            break
    assert batch["topk_idx"].shape == batch["topk_prob"].shape == (14, 3, 32, 32)
    assert torch.equal(batch["has_topk"], batch["is_pseudo"]) and 0 < int(batch["is_pseudo"].sum()) < 14
    assert int(batch["topk_prob"][~batch["has_topk"]].sum()) == 0  # real samples: no soft mass
    # Without topk the loader reads no soft labels at all.
    plain = CropLoader(index, LoaderOptions(crop=32, batch_size=14, epochs=1, workers=0, seed=seed))
    plain.set_epoch(0)
    (b2,) = list(plain)
    assert "topk_idx" not in b2 and torch.equal(b2["label"], batch["label"])


@pytest.mark.parametrize("loss", ["soft-topk", "hard+mr"])
def test_student_trains_with_each_pseudo_loss(pseudo, tmp_path, loss):
    out = tmp_path / loss
    run("train", "--data", pseudo / "d" / "labeled", pseudo / "pseudo", "--index", pseudo / "index.zarr",
        "-o", out, "--epochs", "2", "--crop", "48", "--batch-size", "4", "--workers", "1", "--loss", "ce",
        "--pseudo-loss", loss, "--val", pseudo / "d" / "val", "--no-progress")
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    assert torch.load(out / "last.pt", weights_only=False)["args"]["pseudo_loss"] == loss


def test_soft_topk_without_soft_labels_fails_at_start(pseudo, tmp_path):
    build_index([pseudo / "d" / "labeled"], tmp_path / "i.zarr")
    r = CliRunner().invoke(cli, ["train", "--data", str(pseudo / "d" / "labeled"), "--index", str(tmp_path / "i.zarr"),
                                 "-o", str(tmp_path / "r"), "--pseudo-loss", "soft-topk", "--no-progress"])
    assert r.exit_code == 1 and "csst label --topk" in r.output
    assert shards.read_manifest(pseudo / "pseudo")["fields"][-2:] == ["topk_idx.npy.zst", "topk_prob.npy.zst"]
