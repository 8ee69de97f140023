"""Confidence chosen at training time: `csst label` stores each pixel's teacher confidence, and
`csst train --min-confidence / --class-fraction` ignores pseudo pixels under a floor, without relabelling."""

import numpy as np
import pytest
from click.testing import CliRunner

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.datasets.shardset import CONFIDENCE_MEMBER
from csst_data.index import CentroidIndex, build_index
from csst_data.loader import crops
from csst_data.loader.confidence import class_floors, confidence_floor, level_of
from csst_data.loader.crop_loader import load_crop
from csst_data.loader.options import CropOptions
from csst_data.loader.reader import SampleReader
from csst_data.store import shards
from csst_demo import synth


def run(*args, ok=True):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert (r.exit_code == 0) == ok, r.output
    return r


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory):
    """A teacher trained for one epoch, its pseudo labels (with confidence and top-1 soft labels), and the index."""
    root = tmp_path_factory.mktemp("conf")
    synth.write_dataset(root / "d", synth.SynthOptions(8, 6, 2, size=(64, 128), seed=3))
    run("train", "--data", root / "d" / "labeled", "-o", root / "teacher", "--epochs", "1", "--crop", "64",
        "--batch-size", "4", "--workers", "0", "--loss", "ce", "--no-progress")
    # --topk 1 stores the top probability a second way, through the soft-label path: an independent oracle.
    run("label", "--checkpoint", root / "teacher" / "last.pt", "--input", root / "d" / "unlabeled",
        "-o", root / "pseudo", "--topk", "1", "--workers", "0", "--device", "cpu", "--no-progress")
    build_index([root / "d" / "labeled", root / "pseudo"], root / "index.zarr")
    return root


def _pseudo_rows(index):
    return np.flatnonzero(index.images["source"] == 1)


def test_label_stores_the_confidence_member(pseudo):
    manifest = shards.read_manifest(pseudo / "pseudo")
    assert CONFIDENCE_MEMBER in manifest["fields"] and manifest["producer"]["options"]["confidence"] is True
    index = CentroidIndex.open(pseudo / "index.zarr")
    reader = SampleReader(index)
    for row in _pseudo_rows(index):
        conf = reader.confidence(row)
        idx, prob = reader.topk(row)
        assert conf.shape == (64, 128) and conf.dtype == np.uint8
        np.testing.assert_array_equal(conf, prob[0])  # round(top probability * 255), both ways
        np.testing.assert_array_equal(reader.label(row), idx[0])
    # Real labels carry none.
    assert reader.confidence(int(np.flatnonzero(index.images["source"] == 0)[0])) is None


def test_threshold_is_exact_in_the_label_geometry(pseudo):
    index = CentroidIndex.open(pseudo / "index.zarr")
    reader = SampleReader(index)
    rng = np.random.default_rng(0)
    floor = rng.integers(0, 256, 256).astype(np.uint8)
    aug = crops.Augment(scale_range=(0.5, 2.0))
    dropped = 0
    for n, row in enumerate(_pseudo_rows(index)):
        for seed in range(5):
            plain = load_crop(reader, index, int(row), (np.nan, np.nan), 48, np.random.default_rng([seed, n]),
                              CropOptions(aug=aug, topk=True))
            cut = load_crop(reader, index, int(row), (np.nan, np.nan), 48, np.random.default_rng([seed, n]),
                            CropOptions(aug=aug, confidence_floor=floor))
            label, top = plain[1], plain[2][1][0]  # the top-1 probability, cropped by the soft-label path
            under = (label != IGNORE) & (top < floor[label])
            np.testing.assert_array_equal(cut[1], np.where(under, IGNORE, label))
            np.testing.assert_array_equal(cut[0], plain[0])
            dropped += int(under.sum())
    assert dropped > 100


def test_min_confidence_ignores_exactly_the_pixels_under_it():
    q = np.arange(256)
    for t in (0.0, 0.1, 0.5, 0.6, 0.7, 0.9, 0.99, 1.0):
        assert np.array_equal(q < level_of(t), q / 255 < t)
    with pytest.raises(ValueError, match="min_confidence"):
        level_of(1.5)


def test_class_floors_keep_the_stated_fraction():
    rng = np.random.default_rng(1)
    hist = np.zeros((256, 256), np.int64)
    hist[:5] = rng.integers(0, 50, (5, 256))
    hist[5, 200] = 1000  # every pixel at one level: the floor keeps them all
    for f in (0.1, 0.5, 0.8, 1.0):
        floors = class_floors(hist, f)
        for c in range(6):
            n = hist[c].sum()
            kept = hist[c, floors[c]:].sum() / n
            assert kept >= f - 1e-12
            if floors[c] < 255:  # the largest such floor: one level up keeps less
                assert hist[c, floors[c] + 1:].sum() / n < f
        assert floors[7] == 0 and floors[IGNORE] == 0  # no pixels: nothing dropped


def test_class_fraction_floors_over_the_index(pseudo):
    index = CentroidIndex.open(pseudo / "index.zarr")
    reader = SampleReader(index)
    labels = np.concatenate([reader.label(r).ravel() for r in _pseudo_rows(index)])
    conf = np.concatenate([reader.confidence(r).ravel() for r in _pseudo_rows(index)])
    calls = []
    floor = confidence_floor(index, class_fraction=0.6, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(_pseudo_rows(index)),) * 2
    for c in np.unique(labels[labels != IGNORE]):
        mine = conf[labels == c]
        assert (mine >= floor[c]).mean() >= 0.6 > (mine >= int(floor[c]) + 1).mean()
    both = confidence_floor(index, min_confidence=0.99, class_fraction=0.6)
    assert np.array_equal(both[:IGNORE], np.maximum(floor, level_of(0.99))[:IGNORE])


def test_train_thresholds_at_training_time(pseudo, tmp_path):
    r = run("train", "--data", pseudo / "d" / "labeled", pseudo / "pseudo", "--index", pseudo / "index.zarr",
            "-o", tmp_path / "s", "--epochs", "1", "--crop", "48", "--batch-size", "4", "--length", "8",
            "--workers", "0", "--class-fraction", "0.5", "--no-progress")
    assert "teacher's confidence is at least" in r.output


def test_threshold_needs_stored_confidence(pseudo, tmp_path):
    run("label", "--checkpoint", pseudo / "teacher" / "last.pt", "--input", pseudo / "d" / "unlabeled",
        "-o", tmp_path / "bare", "--no-confidence", "--workers", "0", "--device", "cpu", "--no-progress")
    assert CONFIDENCE_MEMBER not in shards.read_manifest(tmp_path / "bare")["fields"]
    r = run("train", "--data", pseudo / "d" / "labeled", tmp_path / "bare", "-o", tmp_path / "s", "--epochs", "1",
            "--crop", "48", "--batch-size", "4", "--length", "8", "--workers", "0", "--min-confidence", "0.8",
            "--no-progress", ok=False)
    assert "without the teacher's confidence" in r.output and "bare" in r.output
