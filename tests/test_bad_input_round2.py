"""Issue #22, bad input round 2: each silent wrong result becomes a one-line error naming the file."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data.datasets import parse_source, read_spec


def _folder(root, stems=("x", "y"), extra_images=()):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in stems:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / f"{n}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / f"{n}.png")
    for name in extra_images:
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(root / "images" / name)
    return root


def test_two_images_with_one_stem_are_an_error_not_a_silent_pick(tmp_path):
    d = _folder(tmp_path / "d", extra_images=("x.png",))
    r = CliRunner().invoke(cli, ["pack", str(d / "masks"), "--images", str(d / "images"), "-o", str(tmp_path / "out")])
    assert r.exit_code != 0
    line = r.output.strip().splitlines()[-1]
    assert "two images have the key 'x'" in line and "x.jpg" in line and "x.png" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_two_images_with_one_stem_listed_in_a_split_file_are_an_error(tmp_path):
    d = _folder(tmp_path / "d", extra_images=("x.png",))
    (d / "split.txt").write_text("x\ny\n")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"data_root": "d", "img_dir": "images", "ann_dir": "masks", "split": "split.txt"}))
    with pytest.raises(ValueError, match="two images have the key 'x'"):
        read_spec(spec).samples()


@pytest.mark.parametrize("field, value, words", [
    ("classes", "bg,car,track", "field 'classes' must be a list of names, not str"),
    ("img_dir", 5, "field 'img_dir' must be a string, not int"),
    ("num_classes", "3", "field 'num_classes' must be an integer, not str"),
    ("reduce_zero_label", 1, "field 'reduce_zero_label' must be true or false, not int"),
    ("label_map", [1, 2], "field 'label_map' must be a table of raw value -> class id, not list"),
])
def test_a_spec_field_of_the_wrong_type_is_one_line_naming_the_file(tmp_path, field, value, words):
    _folder(tmp_path / "d")
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"data_root": "d", "img_dir": "images", "ann_dir": "masks", field: value}))
    with pytest.raises(ValueError) as e:
        parse_source(str(spec))
    assert str(e.value).startswith(f"{spec}: {words}")
    r = CliRunner().invoke(cli, ["index", "build", str(spec), "-o", str(tmp_path / "i.zarr")])
    assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "i.zarr").exists()
