"""Issue #23: the paper's datasets in their official layouts (CamVid both layouts, BDD100K, Mapillary
Vistas v1.2 and v2.0), split files of the semi-supervised codebases, and unknown preset names."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.datasets import parse_source, tables, tables_paper
from layouts import _scenes, camvid_ids, mapillary_ids, write_layout

SIZE = (32, 64)


def _labels(source):
    """{key: decoded label} of a SOURCE."""
    return {s["key"]: s["label"] for s in parse_source(source).iter(labels=True)}


def _synthetic(split, n, seed=0):
    return [label for _, _, label in _scenes(n, SIZE, seed, split)]


def test_official_tables_have_the_official_counts():
    assert len(tables_paper.CAMVID_CLASSES) == len(tables_paper.CAMVID_PALETTE) == 11
    assert len(tables_paper.CAMVID32_COLORS) == 32 and set(tables_paper.CAMVID32_TO_11) == \
        {name for _, name in tables_paper.CAMVID32_COLORS}
    assert set(tables_paper.CAMVID32_TO_11.values()) == set(range(11)) | {IGNORE}
    for v, count in (("V12", 66), ("V20", 124)):
        names, colours, evaluated = (getattr(tables_paper, f"MAPILLARY_{v}_{k}") for k in ("CLASSES", "PALETTE",
                                                                                           "EVALUATED"))
        assert len(names) == len(colours) == len(evaluated) == count
        assert not all(evaluated) and len(set(names)) == count


@pytest.mark.parametrize("kind", ["camvid", "camvid-original"])
def test_camvid_layouts_give_the_11_classes_and_void_as_ignore(tmp_path, kind):
    d = write_layout(kind, tmp_path, train=3, val=2, size=SIZE)
    ds = parse_source(d["train"] if kind == "camvid" else f"camvid:{tmp_path}:all")
    assert ds.classes == list(tables_paper.CAMVID_CLASSES) and ds.num_classes == 11
    got = _labels(d["train"] if kind == "camvid" else f"camvid:{tmp_path}:all")
    want = {f"0001TP_{i:06d}": camvid_ids(lab) for i, lab in enumerate(_synthetic("train", 3))}
    if kind == "camvid-original":  # one split of every frame
        want.update({f"Seq05VD_{i:06d}": camvid_ids(lab) for i, lab in enumerate(_synthetic("val", 2))})
    assert sorted(got) == sorted(want)
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    assert any((lab == IGNORE).any() for lab in got.values())


def test_camvid_colour_coded_frames_equal_the_segnet_ids_and_its_split_lists_select_them(tmp_path):
    write_layout("camvid", tmp_path / "segnet", train=3, val=2, size=SIZE)
    write_layout("camvid-original", tmp_path / "orig", train=3, val=2, size=SIZE)
    segnet = _labels(f"camvid:{tmp_path / 'segnet'}:val")
    # SegNet's val.txt (absolute /SegNet/CamVid/... paths) selects the same frames of the original release.
    orig = _labels(f"camvid:{tmp_path / 'orig'}:val")
    assert sorted(segnet) == sorted(orig) == ["Seq05VD_000000", "Seq05VD_000001"]
    for key in segnet:
        assert np.array_equal(segnet[key], orig[key])


def test_bdd100k_masks_are_cityscapes_train_ids(tmp_path):
    d = write_layout("bdd100k", tmp_path, train=2, val=2, size=SIZE)
    ds = parse_source(d["val"])
    assert ds.classes == list(tables.CITYSCAPES_CLASSES)
    got = _labels(d["val"])
    assert sorted(got) == [f"va{i:04d}a-{i:08x}" for i in range(2)]
    for (key, lab), want in zip(sorted(got.items()), _synthetic("val", 2)):
        assert np.array_equal(lab, want)


@pytest.mark.parametrize("version", ["1.2", "2.0"])
def test_mapillary_ids_are_the_official_ones_and_unevaluated_labels_are_ignore(tmp_path, version):
    kind = "mapillary" if version == "1.2" else "mapillary-v2"
    d = write_layout(kind, tmp_path, train=4, val=1, size=SIZE)
    assert os.path.exists(tmp_path / "config_v1.2.json") == (version == "1.2")  # v2.0: the built-in list
    ds = parse_source(d["train"])
    names = tables_paper.MAPILLARY_V12_CLASSES if version == "1.2" else tables_paper.MAPILLARY_V20_CLASSES
    assert ds.classes == list(names) and ds.num_classes == len(names) == (66 if version == "1.2" else 124)
    got = _labels(d["train"])
    for (key, lab), synthetic in zip(sorted(got.items()), _synthetic("train", 4)):
        raw = mapillary_ids(synthetic, version)
        evaluated = np.array(tables_paper.MAPILLARY_V12_EVALUATED if version == "1.2" else
                             tables_paper.MAPILLARY_V20_EVALUATED)
        want = np.where(evaluated[raw], raw, IGNORE)  # v2.0 does not score label 31 (3 x 10 + 1)
        assert np.array_equal(lab, want), key
    assert any((lab == IGNORE).any() for lab in got.values())


def test_mapillary_reads_class_names_from_its_config(tmp_path):
    import json

    write_layout("mapillary", tmp_path, train=1, val=1, size=SIZE)
    config = json.loads((tmp_path / "config_v1.2.json").read_text())
    config["labels"][0]["readable"] = "Birdie"
    (tmp_path / "config_v1.2.json").write_text(json.dumps(config))
    assert parse_source(f"mapillary:{tmp_path}").classes[0] == "Birdie"
    (tmp_path / "config_v1.2.json").write_text("{")
    with pytest.raises(ValueError, match="config_v1.2.json: not a Mapillary Vistas config"):
        parse_source(f"mapillary:{tmp_path}")


@pytest.mark.parametrize("source", ["bdd10k:/data/bdd", "mapilary:/data/m:train"])
def test_an_unknown_preset_is_named_with_the_known_ones(source):
    with pytest.raises(ValueError, match="unknown preset .*known: cityscapes, .*camvid, bdd100k, mapillary"):
        parse_source(source)
    r = CliRunner().invoke(cli, ["index", "build", source, "-o", "/tmp/never.zarr"])
    assert r.exit_code != 0 and "unknown preset" in r.output and "no such file" not in r.output


def test_a_split_file_of_the_semi_supervised_codebases_selects_the_same_samples_as_stems(tmp_path):
    """UniMatch's lines name an image and a mask relative to the dataset root; a stem list names stems."""
    import json

    write_layout("cityscapes", tmp_path / "cs", train=4, val=1, size=SIZE)
    cs = tmp_path / "cs"
    stems = sorted(os.path.relpath(os.path.join(r, f), cs / "leftImg8bit" / "train")[:-len("_leftImg8bit.png")]
                   for r, _, fs in os.walk(cs / "leftImg8bit" / "train") for f in fs)
    chosen = stems[1:3]
    (tmp_path / "stems.txt").write_text("\n".join(chosen) + "\n")
    (tmp_path / "labeled.txt").write_text("".join(
        f"leftImg8bit/train/{s}_leftImg8bit.png gtFine/train/{s}_gtFine_labelTrainIds.png\n" for s in chosen))
    keys = {}
    for name in ("stems.txt", "labeled.txt"):
        spec = tmp_path / f"{name}.json"
        spec.write_text(json.dumps({"data_root": str(cs), "img_dir": "leftImg8bit/train", "ann_dir": "gtFine/train",
                                    "img_suffix": "_leftImg8bit.png", "seg_map_suffix": "_gtFine_labelIds.png",
                                    "split": str(tmp_path / name), "num_classes": 34}))
        keys[name] = parse_source(str(spec)).samples()["key"]
    assert list(keys["stems.txt"]) == list(keys["labeled.txt"]) == [os.path.basename(s) for s in chosen]


@pytest.mark.parametrize("kind", ["camvid-original", "mapillary"])
def test_predict_writes_the_official_ids_in_the_datasets_colours(tmp_path, kind):
    from PIL import Image

    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model

    d = write_layout(kind, tmp_path / "data", train=1, val=2, size=SIZE)
    names = parse_source(d["val"]).classes
    model = build_model("fastscnn", len(names))
    save_checkpoint({"model": model.state_dict(), "args": {"model": "fastscnn"}, "num_classes": len(names),
                     "class_names": names}, tmp_path / "m.pt")
    r = CliRunner().invoke(cli, ["predict", "--checkpoint", str(tmp_path / "m.pt"), "--input", d["images"], "-o",
                                 str(tmp_path / "p"), "--format", "color", "--workers", "0", "--device", "cpu",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    pngs = sorted(p for p in os.listdir(tmp_path / "p") if p.endswith(".png"))
    assert len(pngs) == 2
    img = Image.open(tmp_path / "p" / pngs[0])
    palette = tables_paper.CAMVID_PALETTE if kind.startswith("camvid") else tables_paper.MAPILLARY_V12_PALETTE
    assert img.mode == "P" and [tuple(img.getpalette()[3 * i:3 * i + 3]) for i in range(len(names))] == \
        [tuple(c) for c in palette]
