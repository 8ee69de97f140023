import io
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE, codecs, shards
from csst_data.index import CentroidIndex, build_index
from csst_data.sources import (CITYSCAPES_CLASS_NAMES, CITYSCAPES_LABEL_TO_TRAIN, CITYSCAPES_TRAIN_TO_LABEL,
                               SampleReader, fingerprint, is_pseudo, iter_source, list_samples, resolve_source)


def png_bytes(array, mode=None, palette=None):
    img = Image.fromarray(array, mode=mode)
    if palette is not None:
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_cityscapes_tables_are_inverse():
    assert CITYSCAPES_LABEL_TO_TRAIN.dtype == np.uint8 and CITYSCAPES_LABEL_TO_TRAIN.shape == (256,)
    assert len(CITYSCAPES_TRAIN_TO_LABEL) == 19 == len(CITYSCAPES_CLASS_NAMES)
    assert [int(CITYSCAPES_LABEL_TO_TRAIN[i]) for i in CITYSCAPES_TRAIN_TO_LABEL] == list(range(19))
    # Standard table spot checks: road 7 -> 0, car 26 -> 13, bicycle 33 -> 18; void/parking/caravan -> ignore.
    assert CITYSCAPES_LABEL_TO_TRAIN[[7, 26, 33, 0, 9, 29, 34, 255]].tolist() == [0, 13, 18] + [IGNORE] * 5
    assert int((CITYSCAPES_LABEL_TO_TRAIN != IGNORE).sum()) == 19


def make_cityscapes(root, split="train"):
    rng = np.random.default_rng(1)
    labels = {}
    for city, n in (("aachen", 2), ("bochum", 1)):
        for i in range(n):
            key = f"{city}_{i:06d}_000019"
            ids = rng.choice([0, 7, 8, 9, 26, 33, 29], size=(16, 24)).astype(np.uint8)
            write(os.path.join(root, "gtFine", split, city, f"{key}_gtFine_labelIds.png"), png_bytes(ids, "L"))
            write(os.path.join(root, "leftImg8bit", split, city, f"{key}_leftImg8bit.png"),
                  png_bytes(rng.integers(0, 255, (16, 24, 3)).astype(np.uint8)))
            labels[key] = ids
    return labels


def test_cityscapes_mapping_is_applied(tmp_path):
    root = tmp_path / "cityscapes"
    labels = make_cityscapes(root)
    spec = {"kind": "cityscapes", "path": str(root), "split": "train"}
    samples = list(iter_source(spec))
    assert [s["key"] for s in samples] == sorted(labels)
    for s in samples:
        ids = labels[s["key"]]
        assert np.array_equal(s["label"], CITYSCAPES_LABEL_TO_TRAIN[ids])
        assert s["image"].startswith(b"\x89PNG")
    r = CliRunner().invoke(cli, ["index", "build", "--cityscapes", str(root), "-o", str(tmp_path / "i.zarr"),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    idx = CentroidIndex.open(tmp_path / "i.zarr")
    assert idx.num_classes == 19 and idx.class_names == CITYSCAPES_CLASS_NAMES
    mapped = np.concatenate([CITYSCAPES_LABEL_TO_TRAIN[labels[k]].ravel() for k in idx.images["key"]])
    assert idx.class_pixels.sum(axis=0).tolist() == np.bincount(mapped[mapped != IGNORE], minlength=19).tolist()
    assert idx.class_pixels[:, 13].sum() > 0 and idx.class_pixels[:, 3].sum() == 0
    reader = SampleReader(idx)
    key = idx.images["key"][2]
    city = key.split("_")[0]
    with open(root / "leftImg8bit" / "train" / city / f"{key}_leftImg8bit.png", "rb") as f:
        assert reader.image_bytes(2) == f.read()  # never re-encoded
    assert np.array_equal(reader.label(2), CITYSCAPES_LABEL_TO_TRAIN[labels[key]])
    with pytest.raises(ValueError, match="gtFine/val"):
        list_samples(resolve_source({"kind": "cityscapes", "path": str(root), "split": "val"}))


def test_voc_palette_pngs_are_class_ids(tmp_path):
    palette = list(np.random.default_rng(0).integers(0, 255, 768).astype(int))
    mask = np.array([[0, 1, 2, 255], [15, 1, 1, 255]], np.uint8)
    root = tmp_path / "VOC2012"
    write(str(root / "SegmentationClass" / "2007_000001.png"), png_bytes(mask, "P", palette))
    write(str(root / "JPEGImages" / "2007_000001.jpg"), b"\xff\xd8\xff fake jpeg")
    write(str(root / "ImageSets" / "Segmentation" / "train.txt"), b"2007_000001\n")
    (s,) = iter_source({"kind": "voc", "path": str(root)})
    assert Image.open(root / "SegmentationClass" / "2007_000001.png").mode == "P"
    assert np.array_equal(s["label"], mask) and s["image"] == b"\xff\xd8\xff fake jpeg"
    # The same PNGs as a plain mask folder.
    (s,) = iter_source(str(root / "SegmentationClass"), images=False)
    assert np.array_equal(s["label"], mask) and s["image"] is None
    idx = CentroidIndex.open(build_index([{"kind": "voc", "path": str(root)}], tmp_path / "v.zarr",
                                         num_classes=21, progress=False))
    assert idx.class_pixels[0].tolist()[:3] == [1, 3, 1] and idx.class_pixels[0, 15] == 1


def test_masks_paired_with_images_by_stem(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b", "a", "c"):
        write(str(tmp_path / "masks" / "sub" / f"{name}.png"), png_bytes(rng.integers(0, 3, (6, 8)).astype(np.uint8), "L"))
        write(str(tmp_path / "imgs" / f"{name}.jpg"), b"\xff\xd8\xff" + name.encode())
    src = resolve_source(str(tmp_path / "masks"), images=str(tmp_path / "imgs"))
    assert src["kind"] == "masks"
    cols = list_samples(src)
    assert cols["key"] == ["a", "b", "c"] and cols["label_path"] == [os.path.join("sub", "a.png")] + cols["label_path"][1:]
    assert [s["image"] for s in iter_source(src)] == [b"\xff\xd8\xffa", b"\xff\xd8\xffb", b"\xff\xd8\xffc"]
    # A glob selects a subset; its root is the folder above the wildcard.
    glob_src = resolve_source(str(tmp_path / "masks" / "sub" / "[ab].png"))
    assert glob_src["path"] == os.path.realpath(tmp_path / "masks" / "sub")
    assert list_samples(glob_src)["key"] == ["a", "b"]
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "masks"), "--images", str(tmp_path / "imgs"),
                                 "--num-classes", "3", "-o", str(tmp_path / "i.zarr"), "--no-progress"])
    assert r.exit_code == 0, r.output
    reader = pickle.loads(pickle.dumps(SampleReader(CentroidIndex.open(tmp_path / "i.zarr"))))
    assert reader.image_bytes(1) == b"\xff\xd8\xffb"
    os.remove(tmp_path / "imgs" / "c.jpg")
    with pytest.raises(ValueError, match=r"c\.png: no image with stem 'c'"):
        list_samples(src)


def test_fingerprints(tmp_path):
    with shards.ShardWriter(tmp_path / "s", num_classes=3) as w:
        w.write({"__key__": "a", "label.npy.zst": codecs.encode_label(np.zeros((2, 2), np.uint8))})
    src = resolve_source(str(tmp_path / "s"))
    import hashlib

    assert fingerprint(src) == hashlib.sha256((tmp_path / "s" / "manifest.json").read_bytes()).hexdigest()
    write(str(tmp_path / "m" / "x.png"), png_bytes(np.zeros((2, 2), np.uint8), "L"))
    msrc = resolve_source(str(tmp_path / "m"))
    before = fingerprint(msrc)
    assert fingerprint(msrc) == before
    write(str(tmp_path / "m" / "y.png"), png_bytes(np.zeros((2, 2), np.uint8), "L"))
    assert fingerprint(msrc) != before


def test_shard_iteration_and_reader(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    with shards.ShardWriter(tmp_path / "s", maxcount=2, num_classes=4) as w:
        for i in range(5):
            label = rng.integers(0, 4, (5, 7)).astype(np.uint8)
            fmt = "label.png" if i % 2 else "label.npy.zst"
            data = codecs.encode_label_png(label) if i % 2 else codecs.encode_label(label)
            w.write({"__key__": f"k{i}", "jpg": b"\xff\xd8\xff%d" % i, fmt: data, "json": {"i": i}})
            written[f"k{i}"] = label
    got = list(iter_source(str(tmp_path / "s")))
    assert [s["key"] for s in got] == list(written) and [s["meta"]["i"] for s in got] == list(range(5))
    assert all(np.array_equal(s["label"], written[s["key"]]) for s in got)
    idx = CentroidIndex.open(build_index([tmp_path / "s"], tmp_path / "i.zarr", progress=False))
    reader = pickle.loads(pickle.dumps(SampleReader(idx)))  # as in a DataLoader worker
    for row, key in enumerate(idx.images["key"]):
        assert np.array_equal(reader.label(row), written[key])
        assert reader.image_bytes(row) == b"\xff\xd8\xff%d" % row
    # Unlabelled shards iterate with labels=False and cannot be indexed.
    with shards.ShardWriter(tmp_path / "u", num_classes=4) as w:
        w.write({"__key__": "u0", "jpg": b"\xff\xd8\xffu"})
    assert [s["image"] for s in iter_source(str(tmp_path / "u"), labels=False)] == [b"\xff\xd8\xffu"]
    with pytest.raises(ValueError, match="u0.*no label"):
        build_index([tmp_path / "u"], tmp_path / "j.zarr", progress=False)


def test_pseudo_flag_and_bad_specs(tmp_path):
    assert is_pseudo({"fields": ["jpg", "label.npy.zst", "topk_idx.npy.zst"]})
    assert is_pseudo({"producer": {"checkpoint": "t.pt"}}) and not is_pseudo({"producer": "csst synth"})
    with pytest.raises(ValueError, match="no such folder"):
        resolve_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown kind"):
        resolve_source({"kind": "coco", "path": str(tmp_path)})


def test_label_decoder_reuses_its_buffer():
    from csst_data.sources import label_decoder

    decode = label_decoder()
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 5, shape).astype(np.uint8) for shape in ((4, 6), (10, 12), (3, 5), (10, 12))]
    for m in masks:  # growing and shrinking sizes
        got = decode(codecs.encode_label(m), "k")
        assert np.array_equal(got, m) and not got.flags.writeable
    assert np.array_equal(decode(codecs.encode_label_png(masks[0])), masks[0])
    ids = np.array([[7, 26], [0, 33]], np.uint8)
    assert decode(codecs.encode_label(ids), kind="cityscapes").tolist() == [[0, 13], [IGNORE, 18]]
    with pytest.raises(ValueError, match="'bad'.*2-D uint8"):
        decode(codecs.encode_npy_zst(np.zeros((2, 2, 2), np.uint8)), "bad")
