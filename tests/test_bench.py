"""csst bench io|loader|train on a tiny synthetic dataset: the JSON fields and their consistency."""

import json

import pytest
from click.testing import CliRunner

from csst_cli.main import cli
from csst_demo import synth
from csst_data.index import build_index


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    synth.write_dataset(root / "cs", synth.SynthOptions(4, 0, 0, size=(128, 256), seed=3, layout="cityscapes"))
    r = CliRunner().invoke(cli, ["pack", f"cityscapes:{root / 'cs'}:train", "-o", str(root / "packed"), "--no-progress"])
    assert r.exit_code == 0, r.output
    build_index([root / "packed"], root / "i.zarr")
    return root


def run(*args):
    r = CliRunner().invoke(cli, ["bench", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r


def test_bench_io_compares_files_and_shards(data, tmp_path):
    run("io", f"cityscapes:{data / 'cs'}:train", data / "packed", "--workers", "1,2", "--json", tmp_path / "io.json",
        "--plot", tmp_path / "io.png", "--no-progress")
    result = json.loads((tmp_path / "io.json").read_text())
    assert result["workers"] == [1, 2] and len(result["sources"]) == 2
    for source in result["sources"]:
        runs = source["runs"]
        assert sorted((r["order"], r["workers"]) for r in runs) == [("random", 1), ("random", 2),
                                                                     ("sequential", 1), ("sequential", 2)]
        for r in runs:
            assert r["samples"] == 4 and r["samples_per_s"] > 0
            assert r["mb_per_s"] == pytest.approx(r["samples_per_s"] * r["bytes_per_sample"] / 1e6)
            assert r["cache"].startswith("warm")
        assert source["label_decode_ms"] > 0 and source["bytes_per_sample"] > 0
    png_files, packed = result["sources"]
    assert packed["bytes_per_sample"] < png_files["bytes_per_sample"]  # restart JPEGs vs PNGs
    assert (tmp_path / "io.png").stat().st_size > 1000


def test_bench_loader_figures_are_consistent(data, tmp_path):
    run("loader", "--index", data / "i.zarr", "--crop", "96", "--sizes", "48,96", "--workers", "0,1",
        "--samples", "8", "--coverage-samples", "38", "--json", tmp_path / "l.json", "--plot", tmp_path / "l.png")
    result = json.loads((tmp_path / "l.json").read_text())
    assert sorted((r["crop"], r["workers"]) for r in result["runs"]) == [(48, 0), (48, 1), (96, 0), (96, 1)]
    for r in result["runs"]:
        assert r["crops_per_s"] > 0 and r["pixels_per_s"] == pytest.approx(r["crops_per_s"] * r["crop"] ** 2)
    for split in result["split"].values():
        parts = split["read_ms"] + split["decode_ms"] + split["crop_ms"]
        assert 0 < split["image_decode_ms"] <= split["decode_ms"]
        assert min(split.values()) > 0 and abs(parts - split["total_ms"]) <= 0.1 * split["total_ms"]
    cov = result["coverage"]
    assert set(cov) == {"centroid", "uniform"} and 0 <= cov["centroid"]["min_coverage"] <= 1


def test_bench_train_says_whether_the_loader_keeps_up(data, tmp_path):
    run("train", "--index", data / "i.zarr", "--crop", "64", "--batch-size", "2", "--workers", "0",
        "--warmup", "1", "--steps", "2", "--epochs", "3", "--device", "cpu", "--json", tmp_path / "t.json",
        "--no-progress")
    result = json.loads((tmp_path / "t.json").read_text())
    assert set(result["rates"]) == {str(s) for s in result["sizes"]}
    for r in result["rates"].values():
        assert r["steps"] == 2 and r["iterations_per_s"] > 0 and 0 <= r["data_wait_fraction"] <= 1
        assert r["crops_per_s"] == pytest.approx(r["iterations_per_s"] * r["batch"])
        assert r["loader_keeps_up"] == (r["data_wait_fraction"] <= 0.10) and r["workers_needed"] >= 0
    assert set(result["epoch_s_by_schedule"]) >= {"constant", "coarse2fine+"}
    assert all(v > 0 for v in result["epoch_s_by_schedule"].values())


def test_bench_missing_source_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(cli, ["bench", "io", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "nowhere: no such file or folder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["bench", "loader", "--index", str(tmp_path)])
    assert r.exit_code == 1 and "not a zarr v3 group" in r.output.replace("\n", " ") or "no such index" in r.output
