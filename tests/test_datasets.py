"""Datasets: presets in their official layouts, mmseg's conventions, spec files, the one source grammar."""

import hashlib
import io
import json
import os
import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.store import codecs, shards
from csst_data.datasets import tables
from csst_demo import synth
from csst_data.loader.reader import SampleReader
from csst_data.datasets import (FolderDataset, FolderOptions, ShardSet, is_pseudo, label_decoder,
                                parse_source, preset, read_spec)
from csst_data.index import CentroidIndex, build_index
from layouts import png_bytes, write

# Official label ids -> train ids (cityscapesScripts labels.py), written out independently of the code.
CITYSCAPES_LUT = np.full(256, IGNORE, np.uint8)
CITYSCAPES_LUT[[7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]] = np.arange(19)


def jpeg_bytes(h, w, seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def labels_by_key(source, **kw):
    return {s["key"]: s["label"] for s in parse_source(source, **kw).iter(images=False)}


# -- Cityscapes ---------------------------------------------------------------------
def test_cityscapes_tables_are_inverse():
    ds = preset("cityscapes", ".")
    assert ds.lut.dtype == np.uint8 and ds.lut.shape == (256,)
    assert len(tables.CITYSCAPES_TRAIN_TO_LABEL) == 19 == len(tables.CITYSCAPES_CLASSES) == ds.num_classes
    assert [int(ds.lut[i]) for i in tables.CITYSCAPES_TRAIN_TO_LABEL] == list(range(19))
    # Standard table spot checks: road 7 -> 0, car 26 -> 13, bicycle 33 -> 18; void/parking/caravan -> ignore.
    assert ds.lut[[7, 26, 33, 0, 9, 29, 34, 255]].tolist() == [0, 13, 18] + [IGNORE] * 5
    assert np.array_equal(ds.lut, CITYSCAPES_LUT)


def make_cityscapes(root, split="train"):
    rng = np.random.default_rng(1)
    labels = {}
    for city, n in (("aachen", 2), ("bochum", 1)):
        for i in range(n):
            key = f"{city}_{i:06d}_000019"
            ids = rng.choice([0, 7, 8, 9, 26, 33, 29], size=(16, 24)).astype(np.uint8)
            write(os.path.join(root, "gtFine", split, city, f"{key}_gtFine_labelIds.png"), png_bytes(ids, "L"))
            # The official folders also hold colour, instance and polygon files.
            write(os.path.join(root, "gtFine", split, city, f"{key}_gtFine_color.png"),
                  png_bytes(np.zeros((16, 24, 3), np.uint8)))
            write(os.path.join(root, "gtFine", split, city, f"{key}_gtFine_polygons.json"), b"{}")
            write(os.path.join(root, "leftImg8bit", split, city, f"{key}_leftImg8bit.png"),
                  png_bytes(rng.integers(0, 255, (16, 24, 3)).astype(np.uint8)))
            labels[key] = ids
    return labels


def test_cityscapes_preset(tmp_path):
    root = tmp_path / "cityscapes"
    labels = make_cityscapes(root)
    samples = list(parse_source(f"cityscapes:{root}:train").iter())
    assert [s["key"] for s in samples] == sorted(labels)
    for s in samples:
        assert np.array_equal(s["label"], CITYSCAPES_LUT[labels[s["key"]]])
        assert s["image"].startswith(b"\x89PNG")
    r = CliRunner().invoke(cli, ["index", "build", f"cityscapes:{root}", "-o", str(tmp_path / "i.zarr"), "--no-progress"])
    assert r.exit_code == 0, r.output
    idx = CentroidIndex.open(tmp_path / "i.zarr")
    assert idx.num_classes == 19 and idx.class_names == list(tables.CITYSCAPES_CLASSES)
    mapped = np.concatenate([CITYSCAPES_LUT[labels[k]].ravel() for k in idx.images["key"]])
    assert idx.class_pixels.sum(axis=0).tolist() == np.bincount(mapped[mapped != IGNORE], minlength=19).tolist()
    assert idx.class_pixels[:, 13].sum() > 0 and idx.class_pixels[:, 3].sum() == 0
    reader = SampleReader(idx)
    key = idx.images["key"][2]
    city = key.split("_")[0]
    with open(root / "leftImg8bit" / "train" / city / f"{key}_leftImg8bit.png", "rb") as f:
        assert reader.image_bytes(2) == f.read()  # never re-encoded
    assert np.array_equal(reader.label(2), CITYSCAPES_LUT[labels[key]])
    # A stored label id mask in a shard-like .npy.zst goes through the same table.
    ds = parse_source(f"cityscapes:{root}:train")
    assert ds.decode_label(codecs.encode_label(np.array([[7, 26], [0, 33]], np.uint8))).tolist() == [[0, 13], [IGNORE, 18]]
    with pytest.raises(ValueError, match="gtFine/val"):
        parse_source(f"cityscapes:{root}:val").samples()


def test_index_equals_the_one_built_before_the_redesign(tmp_path):
    """sha256 of the index arrays that do not depend on encoder bytes, recorded with the pre-redesign
    csst (sources.py) on the same synthetic data: shard sets, and the Cityscapes layout."""
    import zarr

    cols = ["images/key", "images/source", "images/shard", "images/height", "images/width", "images/class_pixels",
            "images/label_path", "components/image", "components/class", "components/y", "components/x",
            "components/area", "components/bbox", "class_offsets"]

    def digest(path):
        g = zarr.open_group(path, mode="r")
        sha = hashlib.sha256()
        for c in cols:
            a = g[c][...]
            if a.dtype.kind in "OTU":
                sha.update("\0".join(map(str, a)).encode())
            else:
                sha.update(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
        return sha.hexdigest()

    t = tmp_path
    synth.write_dataset(t / "s", synth.SynthOptions(6, 0, 3, size=(64, 128), seed=3))
    synth.write_dataset(t / "c", synth.SynthOptions(6, 0, 3, size=(64, 128), seed=3, layout="cityscapes"))
    build_index([t / "s" / "labeled", t / "s" / "val"], t / "a.zarr")
    build_index([f"cityscapes:{t / 'c'}:train", f"cityscapes:{t / 'c'}:val"], t / "b.zarr")
    assert digest(t / "a.zarr") == "447eeb79150c6d6e3958fa7e00bab6a608abfafafb107f3c8cdd862556b66a6b"
    assert digest(t / "b.zarr") == "aa9a778338701689205e2d70d724b50d15977fef1c050a33e90c3a607fbb2a68"


# -- VOC -------------------------------------------------------------------------------
def test_voc_preset_palette_pngs_aug_and_rgb(tmp_path):
    palette = [v for c in tables.VOC_PALETTE for v in c] + [224, 224, 192] * 235
    mask = np.array([[0, 1, 2, 255], [15, 1, 1, 255]], np.uint8)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    write(str(root / "SegmentationClass" / "2007_000001.png"), png_bytes(mask, "P", palette))
    write(str(root / "JPEGImages" / "2007_000001.jpg"), b"\xff\xd8\xff fake jpeg")
    write(str(root / "JPEGImages" / "2007_000002.jpg"), b"\xff\xd8\xff another")
    write(str(root / "ImageSets" / "Segmentation" / "train.txt"), b"2007_000001\n")
    # SBD's augmented set as mmseg's voc_aug converter writes it: class-id PNGs and aug.txt.
    write(str(root / "SegmentationClassAug" / "2007_000002.png"), png_bytes(mask[::-1].copy(), "L"))
    write(str(root / "ImageSets" / "Segmentation" / "aug.txt"), b"2007_000001\n2007_000002\n")
    write(str(root / "SegmentationClassAug" / "2007_000001.png"), png_bytes(mask, "L"))
    (s,) = parse_source(f"voc:{root}").iter()
    assert Image.open(root / "SegmentationClass" / "2007_000001.png").mode == "P"
    assert np.array_equal(s["label"], mask) and s["image"] == b"\xff\xd8\xff fake jpeg"
    # The VOCdevkit folder above works too; the aug split reads SegmentationClassAug.
    aug = labels_by_key(f"voc:{tmp_path / 'VOCdevkit'}:aug")
    assert sorted(aug) == ["2007_000001", "2007_000002"] and np.array_equal(aug["2007_000002"], mask[::-1])
    # The same PNGs as a plain mask folder.
    (s,) = parse_source(str(root / "SegmentationClass")).iter(images=False)
    assert np.array_equal(s["label"], mask) and s["image"] is None
    idx = CentroidIndex.open(build_index([f"voc:{root}:train"], tmp_path / "v.zarr"))
    assert idx.num_classes == 21 and idx.class_names[15] == "person" and idx.class_names[0] == "background"
    assert idx.class_pixels[0].tolist()[:3] == [1, 3, 1] and idx.class_pixels[0, 15] == 1
    # Masks saved as RGB in the VOC colours map to the same ids; the border colour is ignore.
    rgb = np.array(Image.open(root / "SegmentationClass" / "2007_000001.png").convert("RGB"))
    write(str(root / "SegmentationClass" / "2007_000001.png"), png_bytes(rgb))
    (s,) = parse_source(f"voc:{root}").iter(images=False)
    assert np.array_equal(s["label"], mask)
    with pytest.raises(ValueError, match=r"2007_000009\.jpg \(listed in val\.txt\) is missing"):
        write(str(root / "ImageSets" / "Segmentation" / "val.txt"), b"2007_000009\n")
        write(str(root / "SegmentationClass" / "2007_000009.png"), png_bytes(mask, "L"))
        parse_source(f"voc:{root}:val").samples()


# -- ADE20K, COCO-Stuff, LoveDA -----------------------------------------------------------
def test_ade20k_preset_reduces_zero_label(tmp_path):
    root = tmp_path / "data" / "ADEChallengeData2016"
    raw = np.array([[0, 1, 2], [150, 149, 0]], np.uint8)
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        write(str(root / "images" / split / f"{name}.jpg"), jpeg_bytes(2, 3))
        write(str(root / "annotations" / split / f"{name}.png"), png_bytes(raw, "L"))
    ds = parse_source(f"ade20k:{tmp_path / 'data'}")  # the parent folder works; default split: training
    assert ds.num_classes == 150 and ds.classes[:3] == ["wall", "building", "sky"] and ds.classes[149] == "flag"
    (s,) = ds.iter()
    assert s["key"] == "ADE_train_00000001"
    assert s["label"].tolist() == [[IGNORE, 0, 1], [149, 148, IGNORE]]
    assert list(labels_by_key(f"ade20k:{root}:val")) == ["ADE_val_00000001"]


def test_coco_stuff_preset_official_and_converted(tmp_path):
    root = tmp_path / "coco_stuff164k"
    # Official stuffthingmaps: raw ids 0..181 (0 person, 11 unused 'street sign', 91 banner, 181 wood), 255 unlabelled.
    raw = np.array([[0, 11, 91], [181, 255, 1]], np.uint8)
    write(str(root / "images" / "train2017" / "000000000009.jpg"), jpeg_bytes(2, 3))
    write(str(root / "annotations" / "train2017" / "000000000009.png"), png_bytes(raw, "L"))
    ds = parse_source(f"coco-stuff:{root}")
    assert ds.num_classes == 171 and ds.classes[0] == "person" and ds.classes[80] == "banner" and ds.classes[170] == "wood"
    (s,) = ds.iter()
    assert s["key"] == "000000000009" and s["label"].tolist() == [[0, IGNORE, 80], [170, IGNORE, 1]]
    # mmseg's converted annotations (*_labelTrainIds.png) are class ids already.
    write(str(root / "images" / "val2017" / "000000000139.jpg"), jpeg_bytes(2, 3))
    write(str(root / "annotations" / "val2017" / "000000000139_labelTrainIds.png"), png_bytes(raw, "L"))
    write(str(root / "annotations" / "val2017" / "000000000139.png"), png_bytes(raw, "L"))
    assert labels_by_key(f"coco-stuff:{root}:val")["000000000139"].tolist() == raw.tolist()


def test_loveda_preset_both_layouts(tmp_path):
    raw = np.array([[0, 1, 7], [2, 0, 3]], np.uint8)
    mm = tmp_path / "mm"
    write(str(mm / "img_dir" / "train" / "0.png"), png_bytes(np.zeros((2, 3, 3), np.uint8)))
    write(str(mm / "ann_dir" / "train" / "0.png"), png_bytes(raw, "L"))
    ds = parse_source(f"loveda:{mm}")
    assert ds.classes == list(tables.LOVEDA_CLASSES) and ds.num_classes == 7
    assert labels_by_key(ds)["0"].tolist() == [[IGNORE, 0, 6], [1, IGNORE, 2]]
    official = tmp_path / "LoveDA"
    for scene, name in (("Rural", "0"), ("Urban", "1366")):
        write(str(official / "Train" / scene / "images_png" / f"{name}.png"), png_bytes(np.zeros((2, 3, 3), np.uint8)))
        write(str(official / "Train" / scene / "masks_png" / f"{name}.png"), png_bytes(raw, "L"))
    got = labels_by_key(f"loveda:{official}:train")
    assert sorted(got) == ["0", "1366"] and got["1366"].tolist() == [[IGNORE, 0, 6], [1, IGNORE, 2]]


# -- mmseg's conventions, exactly -------------------------------------------------------------
def test_reduce_zero_label_label_map_and_ignore_index_are_exact(tmp_path):
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    write(str(tmp_path / "m" / "a.png"), png_bytes(raw, "L"))

    def mapped(**kw):
        ds = read_spec_from(tmp_path, ann_dir="m", **kw)
        return next(ds.iter(images=False))["label"].ravel()

    plain = mapped()
    assert plain.tolist() == list(range(256))
    reduced = mapped(reduce_zero_label=True)
    # mmseg: 0 -> 255, v -> v - 1 for 1..254, 255 stays 255.
    assert reduced.tolist() == [IGNORE] + list(range(254)) + [IGNORE]
    lm = mapped(label_map={"3": 0, "7": 1, "200": 2})
    assert lm[[3, 7, 200]].tolist() == [0, 1, 2]
    assert (np.delete(lm, [3, 7, 200]) == IGNORE).all()  # unlisted values -> ignore
    ig = mapped(ignore_index=0)
    assert ig[0] == IGNORE and ig[1:255].tolist() == list(range(1, 255)) and ig[255] == IGNORE
    with pytest.raises(ValueError, match="label_map or reduce_zero_label, not both"):
        mapped(label_map={"1": 0}, reduce_zero_label=True)


def read_spec_from(tmp_path, name="spec.json", **fields):
    path = tmp_path / name
    path.write_text(json.dumps(fields))
    return read_spec(path)


def test_palette_maps_colours_and_names_an_unknown_one(tmp_path):
    palette = [[128, 64, 128], [70, 70, 70], [0, 0, 142]]
    ids = np.array([[0, 1, 2, 1], [2, 2, 0, 0]], np.uint8)
    rgb = np.array(palette, np.uint8)[ids]
    write(str(tmp_path / "ann" / "f1.png"), png_bytes(rgb))
    write(str(tmp_path / "img" / "f1.jpg"), jpeg_bytes(2, 4))
    spec = dict(img_dir="img", ann_dir="ann", palette=palette, classes=["road", "building", "car"])
    ds = read_spec_from(tmp_path, **spec)
    assert ds.num_classes == 3
    (s,) = ds.iter()
    assert s["label"].tolist() == ids.tolist()
    # An RGBA export of the same colours reads the same.
    write(str(tmp_path / "ann" / "f1.png"), png_bytes(np.dstack([rgb, np.full(ids.shape, 255, np.uint8)])))
    assert next(ds.iter())["label"].tolist() == ids.tolist()
    rgb[1, 3] = (1, 2, 3)
    write(str(tmp_path / "ann" / "f1.png"), png_bytes(rgb))
    with pytest.raises(ValueError, match=r"ann/f1\.png.*colour \(1, 2, 3\) is not in the palette"):
        next(ds.iter())
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "spec.json"), "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code != 0 and "f1.png" in r.output and "(1, 2, 3)" in r.output and "Traceback" not in r.output
    lenient = read_spec_from(tmp_path, "lenient.json", unknown_color="ignore", **spec)
    want = ids.copy()
    want[1, 3] = IGNORE
    assert next(lenient.iter())["label"].tolist() == want.tolist()
    # Without a palette an RGB mask is refused, not read as garbage.
    with pytest.raises(ValueError, match="colour-coded.*no palette"):
        next(parse_source(str(tmp_path / "ann")).iter(images=False))


def test_suffix_pairing_pairs_every_image_and_names_unpaired_files(tmp_path):
    rng = np.random.default_rng(0)
    masks = {}
    for i in (1, 2, 3):
        masks[f"{i:05d}"] = rng.integers(0, 4, (5, 6)).astype(np.uint8)
        write(str(tmp_path / "d" / f"{i:05d}_gt.png"), png_bytes(masks[f"{i:05d}"], "L"))
        write(str(tmp_path / "d" / f"{i:05d}_img.jpg"), jpeg_bytes(5, 6, i))
    opts = FolderOptions(images=str(tmp_path / "d"), img_suffix="_img.jpg", seg_map_suffix="_gt.png", num_classes=4)
    ds = parse_source(str(tmp_path / "d"), opts)
    got = list(ds.iter())
    assert [s["key"] for s in got] == ["00001", "00002", "00003"]
    for s in got:
        assert np.array_equal(s["label"], masks[s["key"]])
        with open(tmp_path / "d" / f"{s['key']}_img.jpg", "rb") as f:
            assert s["image"] == f.read()
    write(str(tmp_path / "d" / "00004_gt.png"), png_bytes(masks["00001"], "L"))
    write(str(tmp_path / "d" / "00005_img.jpg"), jpeg_bytes(5, 6))
    with pytest.raises(ValueError, match=r"1 mask\(s\) without an image \(00004_gt\.png\).*"
                                         r"1 image\(s\) without a mask \(00005_img\.jpg\)"):
        parse_source(str(tmp_path / "d"), opts).samples()
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "d"), "--images", str(tmp_path / "d"),
                                 "--img-suffix", "_img.jpg", "--seg-map-suffix", "_gt.png", "--num-classes", "4",
                                 "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code == 1 and "00004_gt.png" in r.output and "00005_img.jpg" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_spec_file_and_equivalent_options_give_the_same_index(tmp_path):
    from test_index import assert_same_index

    rng = np.random.default_rng(2)
    for i in range(4):
        mask = rng.integers(0, 4, (12, 16)).astype(np.uint8)  # raw 0 = "other", classes 1..3
        write(str(tmp_path / "ds" / "annotations" / f"s{i}_gt.png"), png_bytes(mask, "L"))
        write(str(tmp_path / "ds" / "images" / f"s{i}.jpg"), jpeg_bytes(12, 16, i))
    names = ["a", "b", "c"]
    (tmp_path / "names.txt").write_text("\n".join(names))
    spec = {"img_dir": "images", "ann_dir": "annotations", "img_suffix": ".jpg", "seg_map_suffix": "_gt.png",
            "reduce_zero_label": True, "classes": names}
    (tmp_path / "ds" / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "ds" / "spec.toml").write_text(
        'img_dir = "images"\nann_dir = "annotations"\nimg_suffix = ".jpg"\nseg_map_suffix = "_gt.png"\n'
        'reduce_zero_label = true\nclasses = ["a", "b", "c"]\n')
    run = CliRunner().invoke
    for name in ("spec.json", "spec.toml"):
        r = run(cli, ["index", "build", str(tmp_path / "ds" / name), "-o", str(tmp_path / f"{name}.zarr")])
        assert r.exit_code == 0, r.output
    r = run(cli, ["index", "build", str(tmp_path / "ds" / "annotations"), "--images", str(tmp_path / "ds" / "images"),
                  "--img-suffix", ".jpg", "--seg-map-suffix", "_gt.png", "--reduce-zero-label",
                  "--class-names", str(tmp_path / "names.txt"), "-o", str(tmp_path / "opts.zarr")])
    assert r.exit_code == 0, r.output
    assert_same_index(tmp_path / "spec.json.zarr", tmp_path / "spec.toml.zarr")  # arrays and attributes
    assert_same_index(tmp_path / "spec.json.zarr", tmp_path / "opts.zarr")
    idx = CentroidIndex.open(tmp_path / "opts.zarr")
    assert idx.class_names == names and idx.class_pixels.sum() > 0
    assert idx.class_pixels.sum() + sum(int((np.asarray(Image.open(p)) == 0).sum()) for p in
                                        (tmp_path / "ds" / "annotations").iterdir()) == 4 * 12 * 16


def test_every_command_parses_the_same_sources(tmp_path, monkeypatch):
    """index build, train, eval, label and pack take the same SOURCE strings through one parser."""
    import csst_cli.evaluate
    import csst_cli.index
    import csst_cli.label
    import csst_cli.pack
    import csst_cli.train

    make_cityscapes(tmp_path / "cs")
    synth.write_dataset(tmp_path / "syn", synth.SynthOptions(2, 0, 0, size=(32, 64)))
    write(str(tmp_path / "m" / "a.png"), png_bytes(np.zeros((4, 4), np.uint8), "L"))
    write(str(tmp_path / "i" / "a.jpg"), jpeg_bytes(4, 4))
    (tmp_path / "spec.json").write_text(json.dumps({"img_dir": "i", "ann_dir": "m", "num_classes": 2}))
    sources = [str(tmp_path / "syn" / "labeled"), f"cityscapes:{tmp_path / 'cs'}:train", str(tmp_path / "spec.json"),
               str(tmp_path / "m")]
    (tmp_path / "ck.pt").write_bytes(b"")
    seen = {}

    class Parsed(Exception):
        pass

    for name, module in (("index", csst_cli.index), ("train", csst_cli.train), ("eval", csst_cli.evaluate),
                         ("label", csst_cli.label), ("pack", csst_cli.pack)):
        real = module.parse_sources

        def spy(texts, options, role="labels", param="SOURCE", check_images=True, name=name, real=real):
            seen[name] = [ds.ident() for ds in real(texts, options, role=role, param=param, check_images=check_images)]
            raise Parsed

        monkeypatch.setattr(module, "parse_sources", spy)
    common = ["--images", str(tmp_path / "i")]
    argvs = {
        "index": ["index", "build", *sources, "-o", str(tmp_path / "x.zarr"), *common],
        "train": ["train", *[a for s in sources for a in ("--data", s)], "-o", str(tmp_path / "run"), *common],
        "eval": ["eval", "--checkpoint", str(tmp_path / "ck.pt"), *[a for s in sources for a in ("--data", s)], *common],
        "label": ["label", "--checkpoint", str(tmp_path / "ck.pt"), *[a for s in sources for a in ("--input", s)],
                  "-o", str(tmp_path / "p"), *common],
        "pack": ["pack", *sources, "-o", str(tmp_path / "packed"), *common],
    }
    for name, argv in argvs.items():
        r = CliRunner().invoke(cli, argv)
        assert isinstance(r.exception, Parsed), (name, r.output)
    assert seen["index"] == seen["train"] == seen["eval"] == seen["pack"]
    # label reads images: the same datasets, except that a bare folder is a folder of images.
    assert seen["label"][:3] == seen["index"][:3] and json.loads(seen["label"][3])["img_dir"] == str(tmp_path / "m")


# -- listing, fingerprints, shard sets ------------------------------------------------------
def test_masks_paired_with_images_by_stem(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b", "a", "c"):
        write(str(tmp_path / "masks" / "sub" / f"{name}.png"), png_bytes(rng.integers(0, 3, (6, 8)).astype(np.uint8), "L"))
        write(str(tmp_path / "imgs" / f"{name}.jpg"), b"\xff\xd8\xff" + name.encode())
    ds = parse_source(str(tmp_path / "masks"), FolderOptions(images=str(tmp_path / "imgs")))
    assert isinstance(ds, FolderDataset)
    cols = ds.samples()
    # Paths are stored relative to the folder holding masks and images.
    assert cols["key"] == ["a", "b", "c"] and cols["label_path"][0] == os.path.join("masks", "sub", "a.png")
    assert cols["image_path"][0] == os.path.join("imgs", "a.jpg")
    assert [s["image"] for s in ds.iter()] == [b"\xff\xd8\xffa", b"\xff\xd8\xffb", b"\xff\xd8\xffc"]
    # A glob selects a subset; its root is the folder above the wildcard.
    glob_ds = parse_source(str(tmp_path / "masks" / "sub" / "[ab].png"))
    assert glob_ds.spec.data_root == os.path.realpath(tmp_path / "masks" / "sub")
    assert glob_ds.samples()["key"] == ["a", "b"]
    r = CliRunner().invoke(cli, ["index", "build", str(tmp_path / "masks"), "--images", str(tmp_path / "imgs"),
                                 "--num-classes", "3", "-o", str(tmp_path / "i.zarr"), "--no-progress"])
    assert r.exit_code == 0, r.output
    reader = pickle.loads(pickle.dumps(SampleReader(CentroidIndex.open(tmp_path / "i.zarr"))))
    assert reader.image_bytes(1) == b"\xff\xd8\xffb"
    os.remove(tmp_path / "imgs" / "c.jpg")
    with pytest.raises(ValueError, match=r"mask\(s\) without an image \(c\.png\)"):
        ds.samples()


def test_fingerprints(tmp_path):
    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=3)) as w:
        w.write({"__key__": "a", "label.npy.zst": codecs.encode_label(np.zeros((2, 2), np.uint8))})
    shard = tmp_path / "s" / "shard-000000.tar"
    want = hashlib.sha256((tmp_path / "s" / "manifest.json").read_bytes()
                          + f"\0shard-000000.tar\0{shard.stat().st_size}".encode()).hexdigest()
    assert ShardSet(tmp_path / "s").fingerprint() == want  # the manifest and every shard's size
    write(str(tmp_path / "m" / "x.png"), png_bytes(np.zeros((2, 2), np.uint8), "L"))
    ds = parse_source(str(tmp_path / "m"))
    before = ds.fingerprint()
    assert ds.fingerprint() == before
    write(str(tmp_path / "m" / "y.png"), png_bytes(np.zeros((2, 2), np.uint8), "L"))
    assert ds.fingerprint() != before


def test_shard_iteration_and_reader(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    with shards.ShardWriter(tmp_path / "s", shards.SetInfo(num_classes=4), maxcount=2) as w:
        for i in range(5):
            label = rng.integers(0, 4, (5, 7)).astype(np.uint8)
            fmt = "label.png" if i % 2 else "label.npy.zst"
            data = codecs.encode_label_png(label) if i % 2 else codecs.encode_label(label)
            w.write({"__key__": f"k{i}", "jpg": b"\xff\xd8\xff%d" % i, fmt: data, "json": {"i": i}})
            written[f"k{i}"] = label
    got = list(parse_source(str(tmp_path / "s")).iter())
    assert [s["key"] for s in got] == list(written) and [s["meta"]["i"] for s in got] == list(range(5))
    assert all(np.array_equal(s["label"], written[s["key"]]) for s in got)
    idx = CentroidIndex.open(build_index([tmp_path / "s"], tmp_path / "i.zarr", progress=False))
    reader = pickle.loads(pickle.dumps(SampleReader(idx)))  # as in a DataLoader worker
    for row, key in enumerate(idx.images["key"]):
        assert np.array_equal(reader.label(row), written[key])
        assert reader.image_bytes(row) == b"\xff\xd8\xff%d" % row
    # Unlabelled shards iterate with labels=False and cannot be indexed.
    with shards.ShardWriter(tmp_path / "u", shards.SetInfo(num_classes=4)) as w:
        w.write({"__key__": "u0", "jpg": b"\xff\xd8\xffu"})
    assert [s["image"] for s in ShardSet(tmp_path / "u").iter(labels=False)] == [b"\xff\xd8\xffu"]
    with pytest.raises(ValueError, match="u0.*no label"):
        build_index([tmp_path / "u"], tmp_path / "j.zarr", progress=False)


def test_pseudo_flag_and_bad_sources(tmp_path):
    assert is_pseudo({"fields": ["jpg", "label.npy.zst", "topk_idx.npy.zst"]})
    assert is_pseudo({"producer": {"checkpoint": "t.pt"}}) and not is_pseudo({"producer": "csst synth"})
    with pytest.raises(ValueError, match="no such file or folder"):
        parse_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no such folder"):
        parse_source(f"ade20k:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match=r"spec\.json: unknown field\(s\) img_prefix"):
        read_spec_from(tmp_path, img_prefix="x")
    with pytest.raises(ValueError, match="palette must be a list"):
        read_spec_from(tmp_path, ann_dir=".", palette=[[1, 2]])
    r = CliRunner().invoke(cli, ["index", "build", f"ade20k:{tmp_path / 'missing'}", "-o", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2 and "missing: no such folder" in r.output


def test_label_decoder_reuses_its_buffer():
    decode = label_decoder()
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 5, shape).astype(np.uint8) for shape in ((4, 6), (10, 12), (3, 5), (10, 12))]
    for m in masks:  # growing and shrinking sizes
        got = decode(codecs.encode_label(m), "k")
        assert np.array_equal(got, m) and not got.flags.writeable
    assert np.array_equal(decode(codecs.encode_label_png(masks[0])), masks[0])
    ids = np.array([[7, 26], [0, 33]], np.uint8)
    cityscapes = preset("cityscapes", ".")
    assert cityscapes.decode_label(codecs.encode_label(ids), decode=decode).tolist() == [[0, 13], [IGNORE, 18]]
    with pytest.raises(ValueError, match="'bad'.*2-D uint8"):
        decode(codecs.encode_npy_zst(np.zeros((2, 2, 2), np.uint8)), "bad")


# -- every command on every layout ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cityscapes", "voc", "ade20k", "loveda", "suffix", "palette", "camvid",
                                  "camvid-original", "bdd100k", "mapillary", "mapillary-v2"])
def test_index_train_eval_label_on_each_layout(tmp_path, kind):
    """What a user runs on their dataset in its official layout: index build, train, eval, label."""
    import webdataset as wds

    from layouts import write_layout

    d = write_layout(kind, tmp_path / "data", train=4, val=2, size=(48, 96))
    opts = d["options"]
    run = CliRunner().invoke
    r = run(cli, ["index", "build", d["train"], "-o", str(tmp_path / "i.zarr"), "--no-progress", *opts])
    assert r.exit_code == 0, r.output
    idx = CentroidIndex.open(tmp_path / "i.zarr")
    assert idx.num_classes == d["num_classes"] and idx.num_images == 4 and idx.class_pixels.sum() > 0
    r = run(cli, ["train", "--data", d["train"], "--index", str(tmp_path / "i.zarr"), "--val", d["val"],
                  "-o", str(tmp_path / "run"), "--epochs", "1", "--crop", "32", "--batch-size", "4", "--workers", "0",
                  "--loss", "ce", "--no-progress", *opts])
    assert r.exit_code == 0, r.output
    r = run(cli, ["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--data", d["val"],
                  "--json", str(tmp_path / "e.json"), "--no-progress", *opts])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["images"] == 2 and result["miou"] is not None and len(result["iou"]) == d["num_classes"]
    r = run(cli, ["label", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--input", d["images"],
                  "-o", str(tmp_path / "pseudo"), "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "pseudo"), shardshuffle=False)]
    assert len(keys) == len(set(keys)) == d["count"]
    assert shards.read_manifest(tmp_path / "pseudo")["num_classes"] == d["num_classes"]
