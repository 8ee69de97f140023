"""`make bench` smoke run: every benchmark runs (--quick) and writes the JSON fields its issue names."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

try:  # the index benchmark compares against cc3d, installed with the `bench` extra only
    import cc3d  # noqa: F401
    SKIP = []
except ImportError:
    SKIP = ["index"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIELDS = {
    "io": ["size_ratio_png_over_csst", "decode_speedup"],
    "index": ["speedup_vs_cc3d", "speedup_vs_scipy", "build_masks_per_s_1w", "build_masks_per_s_2w"],
    "loader": ["speedup_vs_folder", "small_over_full", "min_class_coverage_centroid", "min_class_coverage_uniform",
               "crops_per_s_by_size", "packed_over_cityscapes_png", "decode_ms_by_size", "decode_over_area_floor",
               "splice_bytes_ratio",
               "pack_images_per_s"],
    "objectstore": ["s3_crops_per_s", "local_crops_per_s", "s3_over_local", "whole_shard_bytes_over_csst_bytes",
                    "gets_per_sample"],
    "schedule": ["device", "epoch_s", "speedup_coarse2fine_plus"],
    "splits": ["by_size", "uniform_miss_rate_1_16", "class_aware_miss_rate_1_16"],
    "models": ["models", "crop"],
    "decode": ["ms_per_image", "csst_1t_over_plain_1t", "plain_1t_over_bands_2t"],
    "label": ["label_images_per_s", "forward_images_per_s", "overhead_fraction", "label_bytes_per_image", "device"],
    "selftrain": ["plan", "rows", "targets", "rare_classes", "class_names", "model", "device", "cpu_threads",
                  "pseudo_storage", "seconds"],
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    skip = [a for name in SKIP for a in ("--skip", name)]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run_all.py"), "--quick", "--out", str(out),
                           *skip], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_benchmark_writes_its_fields(results, name):
    if name in SKIP:
        pytest.skip(f"the {name} benchmark needs the bench extra")
    out, _ = results
    with open(os.path.join(out, f"{name}.json")) as f:
        result = json.load(f)
    missing = [k for k in FIELDS[name] if k not in result]
    assert not missing, f"{name}.json lacks {missing}"


def test_selftrain_rows_are_mean_std_and_per_seed_values(results):
    out, _ = results
    with open(os.path.join(out, "selftrain.json")) as f:
        result = json.load(f)
    seeds = result["plan"]["seeds"]
    rows = result["rows"]
    # Every table's rows (the quick run runs Tables 1, main, 2 and 4; main's rows are Table 1's, reused).
    want = {"teacher_uniform", "teacher_centroid", "control_centroid", "ours", "online_self", "finetune", "soft_topk",
            "model_regulariser", "c2f_plus"} | {f"student_{s}_{a}x" for s in ("uniform", "centroid")
                                                 for a in result["plan"]["amounts"]}
    assert set(rows) == want
    for row in rows.values():
        for figure in ("miou", "rare_miou", "train_seconds"):
            assert set(row[figure]) == {"mean", "std", "values"} and len(row[figure]["values"]) == seeds
            assert abs(row[figure]["mean"] - np.mean(row[figure]["values"])) < 1e-9
        assert 0.0 <= row["miou"]["mean"] <= 1.0 and row["iterations"] > 0
    assert len(result["targets"]) == 4 and all("met" in t for t in result["targets"].values())
    assert result["pseudo_storage"]["confidence_bytes_per_image"] > 0


def test_objectstore_peer_runs_or_says_why_not(results):
    """The LitData peer reads the same plan from the same server (both of its read modes), or, without
    the package, the JSON says it was skipped and why."""
    out, _ = results
    with open(os.path.join(out, "objectstore.json")) as f:
        result = json.load(f)
    peer = result["peer"]
    try:
        import litdata  # noqa: F401
    except ImportError:
        assert "litdata is not installed" in peer["skipped"]
        pytest.skip("litdata is not installed: the peer benchmark needs the bench extra")
    for mode in ("ranged", "chunks"):
        assert peer[mode]["crops_per_s"] > 0 and peer[mode]["bytes_per_sample"] > 0
        assert peer["rank0_bytes"][mode] > 0
        assert result[f"csst_over_peer_crops_per_s_{mode}"] > 0
    # Whole chunks of 64 MB hold every sample of the quick run: the chunk mode fetches them all.
    assert peer["rank0_bytes"]["chunks"] > peer["rank0_bytes"]["ranged"]


def test_summary_table_printed(results):
    _, stdout = results
    assert "benchmark summary" in stdout
