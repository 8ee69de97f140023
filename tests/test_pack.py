"""csst pack: any source -> restart-marker shard sets; lossless for JPEGs, resumable, same index."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data.jpeg import structure as jpeg
from csst_data.store import shards
from csst_demo import synth
from csst_data.store.codecs import decode_image
from csst_data.datasets import parse_source
from csst_data.index import CentroidIndex, build_index
from csst_data.runs.pack import PackOptions, pack


def same_components(a, b):
    """Two indexes hold the same images (keys, sizes, class pixels) and the same components."""
    a, b = CentroidIndex.open(a), CentroidIndex.open(b)
    for c in ("key", "height", "width", "class_pixels"):
        assert np.array_equal(a.images[c], b.images[c]), c
    for c in ("image", "class", "y", "x", "area", "bbox"):
        assert np.array_equal(a._components[c], b._components[c]), c
    assert a.class_names == b.class_names


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    synth.write_dataset(root, synth.SynthOptions(5, 0, 0, size=(64, 128), seed=4, layout="cityscapes"))
    return root


def test_pack_cityscapes_pngs(cityscapes, tmp_path):
    src = f"cityscapes:{cityscapes}:train"
    r = CliRunner().invoke(cli, ["pack", src, "-o", str(tmp_path / "p"), "--workers", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "5 encoded" in r.output
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    manifest = shards.read_manifest(tmp_path / "p")
    assert manifest["num_classes"] == 19 and manifest["producer"]["name"] == "csst pack"
    # Stock webdataset reads it; every image is a baseline JPEG whose windows can be spliced.
    samples = list(wds.WebDataset(shards.shard_paths(tmp_path / "p"), shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(parse_source(src).samples()["key"])
    for s in samples:
        assert jpeg.can_splice(jpeg.parse(s["jpg"]))
        assert Image.open(io.BytesIO(s["jpg"])).size == (128, 64)
        assert json.loads(s["json"])["image"] == "encoded"
    build_index([src], tmp_path / "src.zarr")
    build_index([tmp_path / "p"], tmp_path / "packed.zarr")
    same_components(tmp_path / "src.zarr", tmp_path / "packed.zarr")
    # --lossless keeps the PNG bytes.
    r = CliRunner().invoke(cli, ["pack", src, "-o", str(tmp_path / "l"), "--lossless", "--no-progress"])
    assert r.exit_code == 0, r.output
    first = next(iter(wds.WebDataset(shards.shard_paths(tmp_path / "l"), shardshuffle=False)))
    city = first["__key__"].split("_")[0]
    with open(cityscapes / "leftImg8bit" / "train" / city / f"{first['__key__']}_leftImg8bit.png", "rb") as f:
        assert first["png"] == f.read()


def test_pack_jpeg_shards_is_lossless_and_same_index(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(6, 2, 0, size=(72, 136), seed=5))
    summary = pack([tmp_path / "d" / "labeled", tmp_path / "d" / "unlabeled"], tmp_path / "p", PackOptions(workers=1))
    assert summary["transcoded"] == 8 and summary["failed"] == 0
    original = {s["__key__"]: s for s in wds.WebDataset(
        shards.shard_paths(tmp_path / "d" / "labeled") + shards.shard_paths(tmp_path / "d" / "unlabeled"),
        shardshuffle=False)}
    packed = list(wds.WebDataset(shards.shard_paths(tmp_path / "p"), shardshuffle=False))
    assert sorted(s["__key__"] for s in packed) == sorted(original)
    for s in packed:
        o = original[s["__key__"]]
        assert jpeg.can_splice(jpeg.parse(s["jpg"]))
        assert np.array_equal(decode_image(s["jpg"]), decode_image(o["jpg"]))  # the same pixels
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(s["jpg"]))), np.asarray(Image.open(io.BytesIO(o["jpg"]))))
        assert ("label.npy.zst" in s) == ("label.npy.zst" in o)
    assert summary["images_out_bytes"] / summary["images_in_bytes"] <= 1.03
    # Unlabelled samples stay unlabelled; the labelled part indexes as before.
    build_index([tmp_path / "d" / "labeled"], tmp_path / "a.zarr")
    labelled = tmp_path / "pl"
    pack([tmp_path / "d" / "labeled"], labelled, PackOptions(shard_size=4))
    assert len(shards.read_manifest(labelled)["shards"]) == 2
    build_index([labelled], tmp_path / "b.zarr")
    same_components(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_killed_pack_resumes_with_every_key_once(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(9, 0, 0, size=(48, 96), seed=6))
    cmd = ["pack", str(tmp_path / "d" / "labeled"), "-o", str(tmp_path / "p"), "--shard-size", "2", "--workers", "1",
           "--no-progress"]
    args = [sys.executable, "-m", "csst_cli.main", *cmd]
    # SIGKILL after the 5th sample written (tests/killing_cli.py counts the writes).
    killer = os.path.join(os.path.dirname(__file__), "killing_cli.py")
    killed = subprocess.run([sys.executable, killer, "writes=5", "--", *cmd], capture_output=True)
    assert killed.returncode == -9
    assert 0 < sum(s["samples"] for s in shards.read_manifest(tmp_path / "p")["shards"]) < 9
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "p"), shardshuffle=False)]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 9
    assert CliRunner().invoke(cli, ["verify", str(tmp_path / "p")]).exit_code == 0


def scene_folder(root, count):
    """`count` small scenes as a user keeps them: `{i}.jpg` images beside `{i}_gt.png` masks (19 classes,
    255 = ignore). Returns the `csst pack` arguments that read the folder."""
    rng = np.random.default_rng(0)
    for i in range(count):
        image, label = synth.render_scene(32, 48, rng)
        Image.fromarray(image).save(root / f"{i}.jpg", quality=90)
        Image.fromarray(np.where(label >= 19, 255, label).astype(np.uint8), mode="L").save(root / f"{i}_gt.png")
    return ["pack", str(root), "--img-suffix", ".jpg", "--seg-map-suffix", "_gt.png", "--num-classes", "19"]


def test_corrupt_images_go_to_failed_jsonl(tmp_path):
    args = scene_folder(tmp_path, 4)
    (tmp_path / "2.jpg").write_bytes((tmp_path / "2.jpg").read_bytes()[:300])  # truncated
    (tmp_path / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    argv = args + ["-o", str(tmp_path / "p"), "--no-progress"]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 1 and "2 sample(s) could not be read" in r.output
    failed = [json.loads(line) for line in open(tmp_path / "p" / "failed.jsonl")]
    assert sorted(f["key"] for f in failed) == ["2", "3"]
    # Each line names the file that failed (was: the folder), as label's failures do (issue #22).
    assert sorted(f["path"] for f in failed) == [str(tmp_path / "2.jpg"), str(tmp_path / "3.jpg")]
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "p"), shardshuffle=False)]
    assert sorted(keys) == ["0", "1"]
    assert CliRunner().invoke(cli, ["verify", str(tmp_path / "p")]).exit_code == 0
    r = CliRunner().invoke(cli, argv + ["--max-failures", "2"])
    assert r.exit_code == 0, r.output


def test_ranks_pack_their_share_and_merge(tmp_path):
    synth.write_dataset(tmp_path / "d", synth.SynthOptions(7, 0, 0, size=(32, 64), seed=7))
    for rank in (1, 0):
        s = pack([tmp_path / "d" / "labeled"], tmp_path / "p", PackOptions(workers=1), rank=rank, world_size=2)
        assert s["merged"] == (rank == 0)
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "p"), shardshuffle=False)]
    assert sorted(keys) == sorted(parse_source(str(tmp_path / "d" / "labeled")).samples()["key"])


def test_a_mask_that_fails_is_named_in_failed_jsonl(tmp_path):
    """Issue #22: failed.jsonl named the mask folder and the key, not the file that failed to decode."""
    args = scene_folder(tmp_path, 3)
    (tmp_path / "1_gt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    r = CliRunner().invoke(cli, args + ["-o", str(tmp_path / "p"), "--no-progress"])
    assert r.exit_code == 1
    failed = [json.loads(line) for line in open(tmp_path / "p" / "failed.jsonl")]
    assert [(f["key"], f["path"]) for f in failed] == [("1", str(tmp_path / "1_gt.png"))]
