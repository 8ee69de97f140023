"""`make bench`: run every benchmark, write benchmarks/results/*.json and print a summary.

Each benchmark is its own script (one question each); this runs them one
after another in fresh processes, so none disturbs another's timings.

    python benchmarks/run_all.py --out benchmarks/results [--skip selftrain] [--quick]
"""

import json
import os
import platform
import subprocess
import sys
import time

import click
from rich.console import Console
from rich.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ("io", "decode", "index", "loader", "objectstore", "schedule", "label", "splits", "models", "selftrain")
# (benchmark, JSON field, target description, check)
HEADLINES = [
    ("io", "decode_speedup", ">= 10", lambda v: v >= 10),
    ("io", "size_ratio_png_over_csst", ">= 1.0", lambda v: v >= 1.0),
    ("io", "read_speedup", ">= 1.5", lambda v: v >= 1.5),
    ("index", "speedup_vs_cc3d", ">= 2", lambda v: v >= 2),
    ("index", "speedup_vs_scipy", ">= 100", lambda v: v >= 100),
    ("index", "build_masks_per_s_1w", ">= 100", lambda v: v >= 100),
    ("index", "build_speedup_2w", ">= 1.7", lambda v: v >= 1.7),
    ("loader", "speedup_vs_folder", ">= 4", lambda v: v >= 4),
    ("loader", "small_over_full", ">= 3", lambda v: v >= 3),
    ("loader", "packed_over_cityscapes_png", ">= 8", lambda v: v >= 8),
    ("loader", "splice_bytes_ratio", "<= 1.03", lambda v: v <= 1.03),
    ("loader", "min_class_coverage_centroid", ">= 0.8/C", lambda v: v >= 0.8 / 19),
    ("loader", "coverage_ratio", ">= 5", lambda v: v >= 5),
    ("objectstore", "s3_over_local", ">= 0.7", lambda v: v >= 0.7),
    ("objectstore", "gets_per_sample", "<= 1.1", lambda v: v <= 1.1),
    ("objectstore", "whole_shard_bytes_over_csst_bytes", ">= 3", lambda v: v >= 3),
    ("schedule", "speedup_coarse2fine_plus", ">= 1.5", lambda v: v >= 1.5),
    ("label", "overhead_fraction", "<= 0.10", lambda v: v <= 0.10),
]


def derived(name, result):
    """Ratios some JSON files hold only implicitly."""
    if name == "io" and "read_speedup" not in result:
        result["read_speedup"] = result["shard_samples_per_s"] / result["folder_samples_per_s"]
    if name == "index" and "build_speedup_2w" not in result:
        result["build_speedup_2w"] = result["build_masks_per_s_2w"] / result["build_masks_per_s_1w"]
    if name == "loader" and "coverage_ratio" not in result:
        result["coverage_ratio"] = result["min_class_coverage_centroid"] / max(result["min_class_coverage_uniform"], 1e-9)
    return result


@click.command()
@click.option("--out", default=os.path.join(HERE, "results"), show_default=True, type=click.Path(file_okay=False))
@click.option("--only", multiple=True, type=click.Choice(BENCHMARKS), help="Run only these (repeatable).")
@click.option("--skip", multiple=True, type=click.Choice(BENCHMARKS), help="Skip these (repeatable).")
@click.option("--quick", is_flag=True, help="Smoke-run every benchmark with --quick.")
def main(out, only, skip, quick):
    console = Console()
    os.makedirs(out, exist_ok=True)
    names = [b for b in (only or BENCHMARKS) if b not in skip]
    for name in names:
        path = os.path.join(out, f"{name}.json")
        cmd = [sys.executable, os.path.join(HERE, f"{name}.py"), "--json", path] + (["--quick"] if quick else [])
        console.rule(f"[bold]{name}")
        t = time.perf_counter()
        proc = subprocess.run(cmd)
        console.print(f"{name}: exit {proc.returncode} after {time.perf_counter() - t:.0f} s")
        if proc.returncode != 0:
            sys.exit(f"benchmark {name} failed")
    table = Table(title=f"benchmark summary ({platform.machine()}, {os.cpu_count()} cores)")
    for col in ("benchmark", "figure", "value", "target", "met"):
        table.add_column(col)
    for name, field, target, check in HEADLINES:
        path = os.path.join(out, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            result = derived(name, json.load(f))
        value = result.get(field)
        if value is None:
            table.add_row(name, field, "-", target, "-")
            continue
        table.add_row(name, field, f"{value:.3g}", target, "[green]yes" if check(value) else "[red]no")
    sel = os.path.join(out, "selftrain.json")
    if os.path.exists(sel):
        with open(sel) as f:
            s = json.load(f)
        for name, row in s["rows"].items():
            table.add_row("selftrain", f"{name} mIoU %",
                          f"{100 * row['miou']['mean']:.2f} +- {100 * row['miou']['std']:.2f}", "", "")
        for name, target in s["targets"].items():
            table.add_row("selftrain", name, "", "", "[green]yes" if target["met"] else "[red]no")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
