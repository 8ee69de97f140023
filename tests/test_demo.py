"""`csst demo --quick` end to end, and the report built from its folder.

The demo runs once per module (about 40 s on 2 cores); the other tests read
its folder. Oracles: webdataset's reader + numpy for the pseudo-label
accuracy, PIL for the figures, csst_demo.runner.pipeline for commands.sh.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.store.codecs import encode_label
from csst_data.index import CentroidIndex
from csst_data.store.shards import SetInfo, ShardWriter, iter_samples, read_manifest
from csst_demo.runner import SETTINGS, pipeline
from csst_demo.report import FIGURES, make_report, pseudo_accuracy

CSST = os.path.join(os.path.dirname(sys.executable), "csst")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo") / "run")
    proc = subprocess.run([CSST, "demo", "--quick", "-o", out], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"report: {os.path.join(out, 'report.md')}" in proc.stdout
    return out


def test_every_stage_output(demo):
    d = lambda *p: os.path.join(demo, *p)  # noqa: E731
    s = SETTINGS["quick"]
    for split, n in (("labeled", s["labeled"]), ("unlabeled", s["unlabeled"]), ("unlabeled-gt", s["unlabeled"]),
                     ("val", s["val"])):
        assert sum(sh["samples"] for sh in read_manifest(d("data", split))["shards"]) == n, split
    for run in ("teacher", "student"):
        assert os.path.getsize(d("runs", run, "best.pt")) > 0
        with open(d("runs", run, "metrics.jsonl")) as f:
            assert len(f.read().splitlines()) == s[f"{run}_epochs"]
    pseudo = read_manifest(d("pseudo"))
    assert pseudo.get("pseudo") is True and sum(sh["samples"] for sh in pseudo["shards"]) == s["unlabeled"]
    teacher_index = CentroidIndex.open(d("teacher-index.zarr"))
    assert [x["pseudo"] for x in teacher_index.sources] == [False]
    assert teacher_index.num_images == s["labeled"]
    index = CentroidIndex.open(d("index.zarr"))
    assert [x["pseudo"] for x in index.sources] == [False, True]
    assert index.num_images == s["labeled"] + s["unlabeled"]
    for name in ("teacher", "student", "pseudo"):
        with open(d("eval", f"{name}.json")) as f:
            r = json.load(f)
        assert 0 <= r["miou"] <= 1 and len(r["iou"]) == 19 and np.asarray(r["confusion"]).shape == (19, 19)
    with open(d("eval", "teacher.json")) as f:
        assert json.load(f)["images"] == s["val"]


def test_pseudo_json_matches_webdataset_oracle(demo):
    truth = {x["__key__"]: x["label.npy.zst"] for x in iter_samples(os.path.join(demo, "data", "unlabeled-gt"))}
    cm = np.zeros((19, 19), np.int64)
    n = 0
    for x in iter_samples(os.path.join(demo, "pseudo")):
        pred, true = x["label.npy.zst"].astype(np.int64), truth[x["__key__"]].astype(np.int64)
        keep = (true != IGNORE) & (pred != IGNORE)
        cm += np.bincount(true[keep] * 19 + pred[keep], minlength=19 * 19).reshape(19, 19)
        n += 1
    with open(os.path.join(demo, "eval", "pseudo.json")) as f:
        r = json.load(f)
    np.testing.assert_array_equal(np.asarray(r["confusion"]), cm)
    assert r["images"] == n == len(truth)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert r["miou"] == pytest.approx(np.nanmean(iou))
    got = np.array([np.nan if v is None else v for v in r["iou"].values()])
    np.testing.assert_allclose(got, iou, equal_nan=True)


def test_report_figures_exist_and_are_pngs(demo):
    with open(os.path.join(demo, "report.md")) as f:
        md = f.read()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(figures) == sorted(FIGURES.values())
    for rel in figures:
        path = os.path.join(demo, rel)
        assert os.path.getsize(path) > 0, rel
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100, rel
            im.load()  # decodes every row: a truncated file fails here
    # Every other relative link points at a file of the run.
    for rel in re.findall(r"(?<!!)\[[^\]]*\]\(([^)]+)\)", md):
        assert os.path.exists(os.path.join(demo, rel)), rel


def test_report_numbers_come_from_the_json_files(demo):
    with open(os.path.join(demo, "report.md")) as f:
        md = f.read()
    for name, row in (("teacher", "teacher"), ("student", "student"), ("pseudo", "pseudo labels")):
        with open(os.path.join(demo, "eval", f"{name}.json")) as f:
            miou = json.load(f)["miou"]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row} |") and "images) |" in ln)
        assert line.endswith(f"| {100 * miou:.2f} |"), line
    with open(os.path.join(demo, "timings.json")) as f:
        timings = json.load(f)
    assert [t["stage"] for t in timings] == [name for name, _ in pipeline(demo, SETTINGS["quick"])]
    for t in timings:
        assert f"| {t['stage']} | {t['seconds']:.1f} |" in md


def _outputs(argv):
    """The paths a command writes: values of -o / --json, or synth's folder."""
    if argv[1] == "synth":
        out = argv[argv.index("-o") + 1]
        return [os.path.join(out, split) for split in ("labeled", "unlabeled", "unlabeled-gt", "val")]
    return [argv[i + 1] for i, a in enumerate(argv) if a in ("-o", "--json")]


def test_commands_sh_holds_the_commands_that_ran(demo):
    with open(os.path.join(demo, "commands.sh")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    ran, stage = [], None
    for line in lines:
        if line.startswith("# ") and not line.startswith("# The commands"):
            stage = line[2:]
        elif line.startswith("csst "):
            ran.append((stage, shlex.split(line)))
    assert ran == pipeline(demo, SETTINGS["quick"])
    for stage, argv in ran:
        outs = _outputs(argv)
        assert outs, stage
        for path in outs:
            assert os.path.exists(path), (stage, path)


def test_make_report_again_is_deterministic(demo):
    """Remaking the report by hand (timings from timings.json) gives the same files."""
    files = ["report.md", "eval/pseudo.json", *FIGURES.values()]
    before = {f: open(os.path.join(demo, f), "rb").read() for f in files}
    assert make_report(demo) == os.path.join(demo, "report.md")
    for f in files:
        assert open(os.path.join(demo, f), "rb").read() == before[f], f


def test_demo_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["demo", "--quick", "-o", str(tmp_path)])
    assert result.exit_code != 0
    assert "not empty" in result.output
    assert os.listdir(tmp_path) == ["keep.txt"]
    # --force replaces only an earlier demo (a folder with commands.sh), never other files.
    result = CliRunner().invoke(cli, ["demo", "--quick", "--force", "-o", str(tmp_path)])
    assert result.exit_code != 0 and os.listdir(tmp_path) == ["keep.txt"]


def _labels(root, labels, image=False):
    with ShardWriter(root, SetInfo(num_classes=3, class_names=["a", "b", "c"], producer="test")) as w:
        for key, lab in labels.items():
            sample = {"__key__": key, "label.npy.zst": encode_label(lab, 3)}
            if image:
                sample["png"] = b"\x89PNG-not-decoded-here"
            w.write(sample)


def test_pseudo_accuracy_coverage_and_errors(tmp_path):
    true = np.array([[0, 0, 1, 1], [2, 2, IGNORE, 1]], np.uint8)
    pred = np.array([[0, 1, 1, IGNORE], [2, 0, 2, 1]], np.uint8)
    _labels(tmp_path / "truth", {"k0": true})
    _labels(tmp_path / "pseudo", {"k0": pred}, image=True)
    r, samples = pseudo_accuracy(str(tmp_path / "pseudo"), str(tmp_path / "truth"))
    # 7 truly labelled pixels, one of them left ignore by the teacher.
    assert r["coverage"] == pytest.approx(6 / 7)
    cm = np.asarray(r["confusion"])
    assert cm.sum() == 6 and np.trace(cm) == 4  # pixels ignored on either side are not counted
    assert r["iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1 / 2})
    assert r["images"] == 1 and [s[0] for s in samples] == ["k0"]

    _labels(tmp_path / "pseudo2", {"k0": pred, "k9": pred}, image=True)
    with pytest.raises(ValueError, match="k9"):
        pseudo_accuracy(str(tmp_path / "pseudo2"), str(tmp_path / "truth"))
