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


@pytest.mark.parametrize("kind", ["camvid", "camvid-original", "bdd100k", "mapillary", "mapillary-v2"])
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
    palette = {"camvid": tables_paper.CAMVID_PALETTE, "camvid-original": tables_paper.CAMVID_PALETTE,
               "bdd100k": tables.CITYSCAPES_PALETTE, "mapillary": tables_paper.MAPILLARY_V12_PALETTE,
               "mapillary-v2": tables_paper.MAPILLARY_V20_PALETTE}[kind]
    assert img.mode == "P" and [tuple(img.getpalette()[3 * i:3 * i + 3]) for i in range(len(names))] == \
        [tuple(c) for c in palette]


# -- subsets and splits --------------------------------------------------------------------------
def _cityscapes(tmp_path, train=8):
    write_layout("cityscapes", tmp_path / "cs", train=train, val=1, size=SIZE)
    return f"cityscapes:{tmp_path / 'cs'}:train"


def test_a_subset_and_its_complement_are_the_whole_split(tmp_path):
    source = _cityscapes(tmp_path)
    keys = sorted(parse_source(source).samples()["key"])
    (tmp_path / "l.txt").write_text("\n".join(keys[2:5]) + "\n")
    part, rest = parse_source(f"{source}@{tmp_path / 'l.txt'}"), parse_source(f"{source}@~{tmp_path / 'l.txt'}")
    a, b = list(part.samples()["key"]), list(rest.samples()["key"])
    assert a == keys[2:5] and sorted(a + b) == keys and not set(a) & set(b)
    assert [s["key"] for s in part.iter()] == a  # reading goes through the inner dataset
    assert [k for k, _ in rest.image_refs()] == b
    assert part.classes == list(tables.CITYSCAPES_CLASSES)


def test_the_semi_supervised_split_file_format_selects_the_same_samples_as_keys(tmp_path):
    source = _cityscapes(tmp_path)
    cs = tmp_path / "cs"
    keys = sorted(parse_source(source).samples()["key"])[1:4]
    stems = {os.path.basename(p)[:-len("_leftImg8bit.png")]: os.path.relpath(p, cs)
             for p in map(str, cs.glob("leftImg8bit/train/*/*_leftImg8bit.png"))}
    (tmp_path / "keys.txt").write_text("".join(k + "\n" for k in keys))
    (tmp_path / "unimatch.txt").write_text("".join(
        f"{stems[k]} {stems[k].replace('leftImg8bit', 'gtFine').replace('.png', '')}_labelTrainIds.png\n"
        for k in keys))
    for name in ("keys.txt", "unimatch.txt"):
        assert list(parse_source(f"{source}@{tmp_path / name}").samples()["key"]) == keys


def test_a_list_line_that_names_no_sample_is_one_line_naming_the_file_and_line(tmp_path):
    source = _cityscapes(tmp_path)
    (tmp_path / "l.txt").write_text("nowhere_000000_000000\n")
    with pytest.raises(ValueError, match=r"l.txt: line 1: 'nowhere_000000_000000' names no sample of cityscapes"):
        parse_source(f"{source}@{tmp_path / 'l.txt'}")
    with pytest.raises(ValueError, match="no such sample list"):
        parse_source(f"{source}@{tmp_path / 'missing.txt'}")


def test_split_writes_seeded_lists_that_train_and_label_read(tmp_path):
    """csst split -> labeled.txt / unlabeled.txt; index build on SOURCE@labeled, label on SOURCE@~labeled."""
    import webdataset as wds

    from csst_data.store import shards

    source = _cityscapes(tmp_path)
    run = CliRunner().invoke
    r = run(cli, ["split", source, "--fraction", "1/4", "--seed", "3", "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    labeled = (tmp_path / "s" / "labeled.txt").read_text().split()
    unlabeled = (tmp_path / "s" / "unlabeled.txt").read_text().split()
    assert len(labeled) == 2 and len(unlabeled) == 6
    assert sorted(labeled + unlabeled) == sorted(parse_source(source).samples()["key"])
    r2 = run(cli, ["split", source, "--fraction", "1/4", "--seed", "3", "-o", str(tmp_path / "s")])
    assert r2.exit_code != 0 and "--force" in r2.output  # an experiment's split is not silently replaced
    run(cli, ["split", source, "--fraction", "25%", "--seed", "3", "-o", str(tmp_path / "again")])
    assert (tmp_path / "again" / "labeled.txt").read_text().split() == labeled  # same seed, same split
    lab = f"{source}@{tmp_path / 's' / 'labeled.txt'}"
    r = run(cli, ["index", "build", lab, "-o", str(tmp_path / "i.zarr"), "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["train", "--data", lab, "--index", str(tmp_path / "i.zarr"), "-o", str(tmp_path / "t"),
                  "--epochs", "1", "--crop", "32", "--batch-size", "2", "--workers", "0", "--loss", "ce",
                  "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["label", "--checkpoint", str(tmp_path / "t" / "last.pt"), "--input",
                  f"{source}@~{tmp_path / 's' / 'labeled.txt'}", "-o", str(tmp_path / "pseudo"), "--workers", "0",
                  "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "pseudo"), shardshuffle=False)]
    assert sorted(keys) == sorted(unlabeled)


def test_a_class_aware_split_holds_every_class_a_random_one_misses():
    from csst_data.index.splits import draw_split

    rng = np.random.default_rng(0)
    presence = rng.random((200, 19)) < 0.5
    presence[:, 15:] = False
    for c, holder in zip(range(15, 19), (11, 57, 120, 199)):  # four rare classes, one image each
        presence[holder, c] = True
    misses = 0
    for seed in range(20):
        aware = draw_split([f"k{i}" for i in range(200)], 12, seed, presence)
        assert aware.missing_classes == [] and len(aware.labeled) == 12
        plain = draw_split([f"k{i}" for i in range(200)], 12, seed)
        chosen = [int(k[1:]) for k in plain.labeled]
        misses += not presence[chosen].any(axis=0)[presence.any(axis=0)].all()
    assert misses > 0
    tight = draw_split([f"k{i}" for i in range(200)], 2, 0, presence)  # too few samples for four rare classes
    assert tight.labeled == ["k11", "k57"] and {17, 18} <= set(tight.missing_classes)  # the rarest come first


def test_split_with_an_index_reports_that_every_class_is_labelled(tmp_path):
    source = _cityscapes(tmp_path)
    run = CliRunner().invoke
    assert run(cli, ["index", "build", source, "-o", str(tmp_path / "i.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["split", source, "--count", "4", "--index", str(tmp_path / "i.zarr"), "-o", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "every class of the source is in the labelled part" in r.output


def test_init_from_a_19_class_checkpoint_into_66_classes_loads_all_but_the_head(tmp_path):
    from csst_train.checkpoints import save_checkpoint
    from csst_train.models import build_model, init_from

    src = build_model("fastscnn", 19)
    save_checkpoint({"model": src.state_dict(), "args": {"model": "fastscnn"}, "num_classes": 19,
                     "class_names": list(tables.CITYSCAPES_CLASSES)}, tmp_path / "cs.pt")
    dst = build_model("fastscnn", 66)
    report = init_from(dst, tmp_path / "cs.pt")
    assert set(report.new) == {"classifier.3.weight", "classifier.3.bias"}
    assert set(report.loaded) == set(dst.state_dict()) - set(report.new)  # every backbone tensor and the rest
    assert report.new["classifier.3.bias"] == (66,) and report.file_shapes["classifier.3.bias"] == (19,)
    assert "classifier.3.bias 66 (the file's: 19)" in report.summary()


def test_few_shot_transfer_cityscapes_to_mapillary_end_to_end(tmp_path):
    """The paper's Fig. 8 recipe, tiny: a 19-class Cityscapes model fine-tuned with --init on 1 Mapillary
    image (a class-aware 1-shot split) and evaluated over all 66 classes."""
    import json

    run = CliRunner().invoke
    cs = write_layout("cityscapes", tmp_path / "cs", train=4, val=1, size=SIZE)
    vistas = write_layout("mapillary", tmp_path / "vistas", train=4, val=2, size=SIZE)
    common = ["--epochs", "1", "--crop", "32", "--batch-size", "2", "--workers", "0", "--loss", "ce", "--no-progress"]
    assert run(cli, ["index", "build", cs["train"], "-o", str(tmp_path / "cs.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["train", "--data", cs["train"], "--index", str(tmp_path / "cs.zarr"), "-o", str(tmp_path / "t"),
                  *common])
    assert r.exit_code == 0, r.output
    assert run(cli, ["index", "build", vistas["train"], "-o", str(tmp_path / "v.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["split", vistas["train"], "--count", "1", "--index", str(tmp_path / "v.zarr"), "-o",
                  str(tmp_path / "shots")])
    assert r.exit_code == 0, r.output
    shot = f"{vistas['train']}@{tmp_path / 'shots' / 'labeled.txt'}"
    assert run(cli, ["index", "build", shot, "-o", str(tmp_path / "s.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["train", "--data", shot, "--index", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "ft"),
                  "--init", str(tmp_path / "t" / "last.pt"), "--length", "4", *common])  # 4 crops of the one shot
    assert r.exit_code == 0, r.output
    assert "new (initialised anew): classifier.3.weight 66x" in r.output
    r = run(cli, ["eval", "--checkpoint", str(tmp_path / "ft" / "last.pt"), "--data", vistas["val"], "--json",
                  str(tmp_path / "e.json"), "--no-progress"])
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert len(result["iou"]) == 66 and result["images"] == 2


def test_the_controls_of_table_1b_and_table_2_run_small(tmp_path):
    """Table 1(b): the real labels alone for as many iterations as the student (--length = real + pseudo);
    Table 2's teacher fine-tuning: the teacher continued (--init) on real + pseudo labels."""
    import json

    run = CliRunner().invoke
    cs = write_layout("cityscapes", tmp_path / "cs", train=4, val=2, size=SIZE)  # train_extra: 2 images
    common = ["--epochs", "1", "--crop", "32", "--batch-size", "2", "--workers", "0", "--loss", "ce", "--no-progress"]
    assert run(cli, ["index", "build", cs["train"], "-o", str(tmp_path / "r.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["train", "--data", cs["train"], "--index", str(tmp_path / "r.zarr"), "-o", str(tmp_path / "teacher"),
                  *common])
    assert r.exit_code == 0, r.output
    r = run(cli, ["label", "--checkpoint", str(tmp_path / "teacher" / "last.pt"), "--input", cs["images"], "-o",
                  str(tmp_path / "pseudo"), "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    both = [cs["train"], str(tmp_path / "pseudo")]
    assert run(cli, ["index", "build", *both, "-o", str(tmp_path / "s.zarr"), "--no-progress"]).exit_code == 0
    runs = {"student": [], "repeat": ["--length", "6"], "finetuned": ["--init", str(tmp_path / "teacher" / "last.pt")]}
    for name, extra in runs.items():
        data, index = (cs["train"], "r.zarr") if name == "repeat" else (both, "s.zarr")
        data = [data] if isinstance(data, str) else data
        r = run(cli, ["train", "--data", *data, "--index", str(tmp_path / index), "-o", str(tmp_path / name),
                      *extra, *common])
        assert r.exit_code == 0, r.output
    steps = {n: json.loads((tmp_path / n / "metrics.jsonl").read_text().splitlines()[-1])["iteration"] for n in runs}
    assert steps["repeat"] == steps["student"] == 3  # 4 real + 2 pseudo images, batch 2
    lrs = {n: json.loads((tmp_path / n / "args.json").read_text()).get("lr") for n in runs}
    assert lrs["finetuned"] in (None, 0.002)


def test_a_1_16_cityscapes_split_trains_a_teacher_that_labels_the_other_15_16(tmp_path):
    import webdataset as wds

    from csst_data.store import shards

    source = _cityscapes(tmp_path, train=16)
    run = CliRunner().invoke
    assert run(cli, ["split", source, "--fraction", "1/16", "-o", str(tmp_path / "s")]).exit_code == 0
    lab, rest = (f"{source}@{'~' if r else ''}{tmp_path / 's' / 'labeled.txt'}" for r in (False, True))
    assert run(cli, ["index", "build", lab, "-o", str(tmp_path / "l.zarr"), "--no-progress"]).exit_code == 0
    r = run(cli, ["train", "--data", lab, "--index", str(tmp_path / "l.zarr"), "-o", str(tmp_path / "t"), "--epochs",
                  "1", "--length", "4", "--crop", "32", "--batch-size", "2", "--workers", "0", "--loss", "ce",
                  "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(cli, ["label", "--checkpoint", str(tmp_path / "t" / "last.pt"), "--input", rest, "-o",
                  str(tmp_path / "pseudo"), "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    keys = [s["__key__"] for s in wds.WebDataset(shards.shard_paths(tmp_path / "pseudo"), shardshuffle=False)]
    assert len(keys) == 15 and sorted(keys) == sorted((tmp_path / "s" / "unlabeled.txt").read_text().split())
