"""csst predict: one PNG per image, in the formats users submit and look at."""

import io
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_demo import synth
from csst_data.datasets import parse_source
from csst_train.checkpoints import save_checkpoint
from csst_train.inference import normalise, predict_probs
from csst_train.models import build_model

# Official Cityscapes label ids of the 19 train ids (cityscapesScripts labels.py), written out independently.
OFFICIAL = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
CITYSCAPES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    synth.write_dataset(root / "cs", synth.SynthOptions(2, 0, 3, size=(48, 96), seed=1, layout="cityscapes"))
    torch.manual_seed(0)
    model = build_model("fastscnn", 19).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(300)  # spread the untrained logits over many classes
    path = root / "cs19.pt"
    save_checkpoint({"model": model.state_dict(), "args": {"model": "fastscnn"}, "num_classes": 19,
                     "class_names": CITYSCAPES}, path)
    return root, str(path), model


def run(*args):
    r = CliRunner().invoke(cli, ["predict", *map(str, args), "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    return r


def eval_argmax(model, image, **kw):
    """What `csst eval` scores for one image."""
    x = normalise(torch.from_numpy(np.array(image))[None])
    return predict_probs(model, x, 19, **kw).argmax(1)[0].numpy()


def test_cityscapes_format_for_the_official_evaluator(setup, tmp_path):
    root, ckpt, model = setup
    source = f"cityscapes:{root / 'cs'}:val"
    run("--checkpoint", ckpt, "--input", source, "-o", tmp_path / "cs", "--format", "cityscapes")
    run("--checkpoint", ckpt, "--input", source, "-o", tmp_path / "ids", "--format", "ids")
    samples = list(parse_source(source).iter(labels=False))
    assert sorted(os.listdir(tmp_path / "cs")) == sorted([f"{s['key']}.png" for s in samples] + ["predict.json"])
    seen = set()
    for s in samples:
        # The official evaluator finds a prediction by the `city_seq_frame` part of the name.
        assert s["key"].count("_") == 2 and s["key"].endswith("_000019")
        ids = np.asarray(Image.open(tmp_path / "cs" / f"{s['key']}.png"))
        train_ids = np.asarray(Image.open(tmp_path / "ids" / f"{s['key']}.png"))
        assert ids.dtype == np.uint8 and ids.shape == (48, 96) and train_ids.max() < 19
        assert np.array_equal(ids, np.array(OFFICIAL, np.uint8)[train_ids])
        seen |= set(np.unique(ids).tolist())
        image = np.asarray(Image.open(io.BytesIO(s["image"])).convert("RGB"))
        assert np.array_equal(train_ids, eval_argmax(model, image))
    assert seen <= set(OFFICIAL) and len(seen) > 1


def test_ids_equal_what_eval_scores_with_scales_and_flip(setup, tmp_path):
    root, ckpt, model = setup
    src = root / "cs" / "leftImg8bit" / "val"
    run("--checkpoint", ckpt, "--input", src, "-o", tmp_path / "p", "--scales", "0.5,1.0", "--flip")
    for key, path in parse_source(str(src), role="images").image_refs():
        image = np.asarray(Image.open(path).convert("RGB"))
        got = np.asarray(Image.open(tmp_path / "p" / f"{key}.png"))
        assert np.array_equal(got, eval_argmax(model, image, scales=(0.5, 1.0), flip=True))


def test_color_overlay_and_rerun(setup, tmp_path):
    root, ckpt, _ = setup
    source = f"cityscapes:{root / 'cs'}:val"
    run("--checkpoint", ckpt, "--input", source, "-o", tmp_path / "c", "--format", "color")
    run("--checkpoint", ckpt, "--input", source, "-o", tmp_path / "o", "--format", "overlay")
    names = sorted(n for n in os.listdir(tmp_path / "c") if n != "predict.json")
    assert len(names) == 3
    for name in names:
        c, o = Image.open(tmp_path / "c" / name), Image.open(tmp_path / "o" / name)
        assert c.mode == "P" and c.size == o.size == (96, 48) and o.mode == "RGB"
        assert tuple(c.getpalette()[:3]) == (128, 64, 128)  # road in the Cityscapes colours
    again = run("--checkpoint", ckpt, "--input", source, "-o", tmp_path / "c", "--format", "color")
    assert "wrote 0 prediction(s)" in again.output and "3 already there" in again.output


def test_cityscapes_format_refuses_other_classes(setup, tmp_path):
    root, _, _ = setup
    model = build_model("fastscnn", 3)
    save_checkpoint({"model": model.state_dict(), "args": {"model": "fastscnn"}, "num_classes": 3,
                     "class_names": ["a", "b", "c"]}, tmp_path / "c3.pt")
    r = CliRunner().invoke(cli, ["predict", "--checkpoint", str(tmp_path / "c3.pt"), "--input",
                                 f"cityscapes:{root / 'cs'}:val", "-o", str(tmp_path / "x"), "--format", "cityscapes"])
    assert r.exit_code == 1 and "19 Cityscapes train classes" in r.output


@pytest.mark.parametrize("change", [["--format", "color"], ["--flip"], ["--scales", "0.5,1.0"], ["--checkpoint"]])
def test_a_rerun_with_other_options_is_refused_or_forced(setup, tmp_path, change):
    """Issue #22: predicting again into a folder with another --format, --flip, --scales or checkpoint
    said "wrote 0, 3 already there" and kept the old files. Now it is refused naming predict.json and
    what differs, leaving the files as they were; --force replaces them."""
    root, ckpt, model = setup
    source = f"cityscapes:{root / 'cs'}:val"
    out = tmp_path / "p"
    run("--checkpoint", ckpt, "--input", source, "-o", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    if change == ["--checkpoint"]:
        other = build_model("fastscnn", 19)
        save_checkpoint({"model": other.state_dict(), "args": {"model": "fastscnn"}, "num_classes": 19,
                         "class_names": CITYSCAPES}, tmp_path / "other.pt")
        args = ["--checkpoint", tmp_path / "other.pt", "--input", source]
    else:
        args = ["--checkpoint", ckpt, "--input", source, *change]
    r = CliRunner().invoke(cli, ["predict", *map(str, args), "-o", str(out), "--workers", "0", "--device", "cpu",
                                 "--no-progress"])
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert "predict.json" in line and "--force" in line
    assert ("another checkpoint" in line) if change == ["--checkpoint"] else (change[0].lstrip("-") in line)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    forced = run(*args, "-o", out, "--force")
    assert "wrote 3 prediction(s)" in forced.output
    fresh = tmp_path / "fresh"
    run(*args, "-o", fresh)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png"} == \
        {p.name: p.read_bytes() for p in fresh.iterdir() if p.suffix == ".png"}
    assert "3 already there" in run(*args, "-o", out).output  # the record now holds the new options


def test_pngs_in_the_folder_without_a_record_are_not_taken_as_predictions(setup, tmp_path):
    root, ckpt, _ = setup
    source = f"cityscapes:{root / 'cs'}:val"
    keys = [s["key"] for s in parse_source(source).iter(labels=False)]
    out = tmp_path / "p"
    out.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(out / f"{keys[0]}.png")
    r = CliRunner().invoke(cli, ["predict", "--checkpoint", ckpt, "--input", source, "-o", str(out),
                                 "--workers", "0", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 1 and "no record of what wrote them" in r.output
    assert np.asarray(Image.open(out / f"{keys[0]}.png")).shape == (4, 4)
