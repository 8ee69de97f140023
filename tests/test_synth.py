import io
import json
import os

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.store import codecs, shards
from csst_demo import synth

CITYSCAPES_VOID = {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30}


def test_tables():
    assert len(synth.CLASS_NAMES) == 19 and synth.CLASS_NAMES[0] == "road" and synth.CLASS_NAMES[-1] == "bicycle"
    assert synth.PALETTE.shape == (19, 3) and synth.PALETTE.dtype == np.uint8
    assert synth.PALETTE[synth.CLASS_NAMES.index("car")].tolist() == [0, 0, 142]
    assert dict(zip(synth.CLASS_NAMES, synth.CITYSCAPES_LABEL_IDS))["train"] == 31


def test_render_is_deterministic_and_valid():
    a_img, a_lab = synth.render_scene(96, 192, np.random.default_rng(5))
    b_img, b_lab = synth.render_scene(96, 192, np.random.default_rng(5))
    c_img, c_lab = synth.render_scene(96, 192, np.random.default_rng(6))
    assert a_img.shape == (96, 192, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (96, 192) and a_lab.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert set(np.unique(a_lab).tolist()) <= set(range(19)) | {IGNORE}
    with pytest.raises(ValueError, match="too small"):
        synth.render_scene(8, 8, np.random.default_rng(0))


@pytest.fixture(scope="module")
def labelled_split():
    """The first 100 scenes of the labelled split at the default size."""
    labels = [synth.render_scene(256, 512, synth.sample_rng(0, "labeled", i))[1] for i in range(100)]
    return np.stack(labels)


def test_long_tailed_distribution(labelled_split):
    labels = labelled_split
    counts = np.bincount(labels.ravel(), minlength=256)
    frac = counts[:19] / counts[:19].sum()
    names = np.array(synth.CLASS_NAMES)
    # Road, building, vegetation and sky dominate: each >= 4 %, together > 60 %.
    big = [synth.ROAD, synth.BUILDING, synth.VEGETATION, synth.SKY]
    assert frac[big].min() >= 0.04 and frac[big].sum() > 0.6, dict(zip(names, frac.round(4)))
    assert set(np.argsort(frac)[-5:]) >= set(big) - {synth.SKY}
    # At least three classes under 0.5 % of the labelled pixels.
    rare = names[frac < 0.005]
    assert len(rare) >= 3, dict(zip(names, frac.round(4)))
    # ... and every class is still present in several images.
    per_image = np.stack([(labels == c).any(axis=(1, 2)) for c in range(19)])
    assert per_image.sum(axis=1).min() >= 3, dict(zip(names, per_image.sum(axis=1)))
    # Several instances per image: cars/persons/poles appear in most images.
    assert per_image[[synth.CAR, synth.POLE]].mean() > 0.8


def test_ignore_regions(labelled_split):
    ignore = (labelled_split == IGNORE).mean(axis=(1, 2))
    assert (ignore > 0).mean() > 0.3  # a few void regions in many images
    assert 0 < ignore.mean() < 0.15


def test_scale_independent_distribution(labelled_split):
    # The same scenes at half the resolution keep roughly the same pixel shares.
    small = np.stack([synth.render_scene(128, 256, synth.sample_rng(0, "labeled", i))[1] for i in range(30)])
    big = labelled_split[:30]
    fs = np.bincount(small.ravel(), minlength=256)[:19] / small.size
    fb = np.bincount(big.ravel(), minlength=256)[:19] / big.size
    assert np.abs(fs - fb).max() < 0.03


def _read_all(root):
    return {s["__key__"]: s for s in wds.WebDataset(shards.shard_paths(root), shardshuffle=False, empty_check=False)}


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def test_write_dataset_shards(tmp_path):
    out = tmp_path / "data"
    counts = synth.write_dataset(out, synth.SynthOptions(5, 4, 3, size=(64, 128), seed=3), progress=False)
    assert counts == {"labeled": 5, "unlabeled": 4, "val": 3}
    for name, n in (("labeled", 5), ("unlabeled", 4), ("unlabeled-gt", 4), ("val", 3)):
        m = shards.read_manifest(out / name)
        assert m["num_classes"] == 19 and m["class_names"] == list(synth.CLASS_NAMES)
        assert sum(s["samples"] for s in m["shards"]) == n
    lab = _read_all(out / "labeled")
    assert sorted(lab) == [synth.sample_key("labeled", i) for i in range(5)]
    for i in range(5):
        sample = lab[synth.sample_key("labeled", i)]
        image, label = synth.render_scene(64, 128, synth.sample_rng(3, "labeled", i))
        assert np.array_equal(codecs.decode_label(sample["label.npy.zst"], 19), label)
        assert codecs.is_jpeg(sample["jpg"])
        decoded = np.asarray(Image.open(io.BytesIO(sample["jpg"])))
        assert decoded.shape == image.shape
        assert np.abs(decoded.astype(int) - image).mean() < 12  # JPEG q90 of the same scene
        meta = json.loads(sample["json"])
        assert meta["class_pixels"] == np.bincount(label.ravel(), minlength=19)[:19].tolist()
    unl, gt = _read_all(out / "unlabeled"), _read_all(out / "unlabeled-gt")
    assert sorted(unl) == sorted(gt) == [synth.sample_key("unlabeled", i) for i in range(4)]
    assert all("jpg" in s and "label.npy.zst" not in s for s in unl.values())
    key = synth.sample_key("unlabeled", 2)
    _, label = synth.render_scene(64, 128, synth.sample_rng(3, "unlabeled", 2))
    assert np.array_equal(codecs.decode_label(gt[key]["label.npy.zst"]), label)


def test_write_dataset_bytes_deterministic(tmp_path):
    a = synth.write_dataset(tmp_path / "a", synth.SynthOptions(3, 2, 2, size=(48, 96), seed=1), progress=False)
    synth.write_dataset(tmp_path / "b", synth.SynthOptions(3, 2, 2, size=(48, 96), seed=1, workers=2), progress=False)
    synth.write_dataset(tmp_path / "c", synth.SynthOptions(3, 2, 2, size=(48, 96), seed=2), progress=False)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a and fa == fb  # same seed, same bytes, whatever the number of workers
    assert fa.keys() == fc.keys() and fa["labeled/shard-000000.tar"] != fc["labeled/shard-000000.tar"]


def test_write_dataset_refuses_non_empty(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        synth.write_dataset(out, synth.SynthOptions(1, 0, 0, size=(32, 64)), progress=False)
    synth.write_dataset(out, synth.SynthOptions(1, 0, 0, size=(32, 64), force=True), progress=False)
    # replaces the earlier run
    synth.write_dataset(out, synth.SynthOptions(2, 0, 0, size=(32, 64), force=True), progress=False)
    assert (out / "keep.txt").exists()
    assert sum(s["samples"] for s in shards.read_manifest(out / "labeled")["shards"]) == 2


def test_cityscapes_layout(tmp_path):
    out = tmp_path / "cs"
    synth.write_dataset(out, synth.SynthOptions(4, 2, 2, size=(64, 128), seed=0, layout="cityscapes"), progress=False)
    ids = set(synth.CITYSCAPES_LABEL_IDS)
    for split, cs_split, n in (("labeled", "train", 4), ("unlabeled", "train_extra", 2), ("val", "val", 2)):
        for i in range(n):
            city, stem = synth.cityscapes_name(split, i)
            assert stem.startswith(f"{city}_") and stem.endswith("_000019")
            img_path = out / "leftImg8bit" / cs_split / city / f"{stem}_leftImg8bit.png"
            gt_path = out / "gtFine" / cs_split / city / f"{stem}_gtFine_labelIds.png"
            image = np.asarray(Image.open(img_path))
            assert image.shape == (64, 128, 3)
            if split == "unlabeled":
                assert not gt_path.exists()
                continue
            gt = np.asarray(Image.open(gt_path))
            assert gt.dtype == np.uint8 and Image.open(gt_path).mode == "L"
            _, label = synth.render_scene(64, 128, synth.sample_rng(0, split, i))
            known = label != IGNORE
            assert np.array_equal(gt[known], np.array(synth.CITYSCAPES_LABEL_IDS, np.uint8)[label[known]])
            assert set(np.unique(gt[~known]).tolist()) <= CITYSCAPES_VOID
            assert set(np.unique(gt).tolist()) <= ids | CITYSCAPES_VOID
    assert not (out / "gtFine" / "train_extra").exists()
    names = sorted(p.name for p in (out / "leftImg8bit" / "train").rglob("*.png"))
    assert len(names) == 4 and len(set(names)) == 4


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "data"
    r = runner.invoke(cli, ["synth", "-o", str(out), "--labeled", "2", "--unlabeled", "1", "--val", "1", "--size", "32x64"])
    assert r.exit_code == 0, r.output
    assert shards.read_manifest(out / "val")["shards"][0]["samples"] == 1
    r = runner.invoke(cli, ["synth", "-o", str(out), "--labeled", "1", "--size", "32x64"])
    assert r.exit_code != 0 and "not empty" in r.output
    r = runner.invoke(cli, ["synth", "-o", str(out), "--labeled", "1", "--unlabeled", "0", "--val", "0", "--size", "32x64",
                            "--force"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["synth", "-o", str(tmp_path / "x"), "--size", "big"])
    assert r.exit_code != 0 and "HEIGHTxWIDTH" in r.output


def test_variety_shifts_appearance_only_and_is_deterministic():
    """`variety` changes a scene's pixels (exposure, contrast, cast, haze) but not its label or layout;
    0 renders what the option's absence renders; the same task renders the same bytes."""
    from csst_demo.synth import SampleTask, _make_sample
    from csst_data.store.codecs import decode_label
    import simplejpeg

    plain = SampleTask("labeled", 3, 0, 64, 128, "shards")
    assert _make_sample(plain) == _make_sample(SampleTask("labeled", 3, 0, 64, 128, "shards", 0.0))
    shifted = [_make_sample(SampleTask("labeled", 3, 0, 64, 128, "shards", 1.0)) for _ in range(2)]
    assert shifted[0] == shifted[1]
    assert np.array_equal(decode_label(shifted[0][1]), decode_label(_make_sample(plain)[1]))
    a = simplejpeg.decode_jpeg(_make_sample(plain)[0]).astype(int)
    b = simplejpeg.decode_jpeg(shifted[0][0]).astype(int)
    assert np.abs(a - b).mean() > 5
    with pytest.raises(ValueError, match="variety"):
        synth.write_dataset("/nonexistent-never-written", synth.SynthOptions(1, 0, 0, size=(32, 32), variety=-1))
