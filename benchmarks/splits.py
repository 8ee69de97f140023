"""How often a labelled split misses classes: uniform draws against csst's class-aware split.

The semi-supervised protocol labels a fraction of a split (1/16, 1/8 of
Cityscapes train) and few-shot transfer labels N images. On long-tailed street
scenes a uniform draw can leave rare classes out of the labelled part, so the
teacher never sees them. This draws `--seeds` splits of each size from the
synthetic Cityscapes-like scenes (19 classes, long-tailed; the per-image class
presence from their centroid index) and reports, per size, the share of seeds
whose labelled part misses at least one class of the source and the mean
number missed, for `draw_split` without and with the index.

    python benchmarks/splits.py --json benchmarks/results/splits.json
"""

import os
import sys
import tempfile

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from csst_data.datasets import ShardSet
from csst_data.store.shards import atomic_write_json
from csst_data.index import CentroidIndex, build_index
from csst_data.index.splits import draw_split
from csst_demo import synth

SIZES = ("1/16", "1/8", "1/4", "1", "2", "5", "10")


def _count(size, total):
    num, _, den = size.partition("/")
    return max(1, round(total * int(num) / int(den))) if den else int(num)


def misses(presence, keys, count, seeds, aware):
    """(share of seeds missing >= 1 class, mean classes missed) over `seeds` draws, counted here from the
    labelled keys (not from the split's own report)."""
    row = {k: i for i, k in enumerate(keys)}
    source = presence.any(axis=0)
    missed = []
    for seed in range(seeds):
        labeled = draw_split(keys, count, seed, presence if aware else None).labeled
        missed.append(int((source & ~presence[[row[k] for k in labeled]].any(axis=0)).sum()))
    return float(np.mean(np.array(missed) > 0)), float(np.mean(missed))


@click.command()
@click.option("--images", default=400, show_default=True, help="Synthetic labelled scenes (the source to split).")
@click.option("--size", default="256x512", show_default=True, help="Scene size HxW.")
@click.option("--seeds", default=200, show_default=True, help="Splits drawn per size and method.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run.")
def main(images, size, seeds, json_path, quick):
    if quick:
        images, size, seeds = 48, "64x128", 10
    h, w = (int(v) for v in size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        synth.write_dataset(os.path.join(tmp, "d"), synth.SynthOptions(images, 0, 0, size=(h, w), seed=0))
        build_index([ShardSet(os.path.join(tmp, "d", "labeled"))], os.path.join(tmp, "i.zarr"), progress=False)
        index = CentroidIndex.open(os.path.join(tmp, "i.zarr"))
        keys = [str(k) for k in index.images["key"]]
        presence = index.class_pixels > 0
    rows = {}
    for s in SIZES:
        count = _count(s, len(keys))
        uniform, aware = misses(presence, keys, count, seeds, False), misses(presence, keys, count, seeds, True)
        rows[s] = {"count": count, "uniform_miss_rate": uniform[0], "uniform_mean_missed": uniform[1],
                   "class_aware_miss_rate": aware[0], "class_aware_mean_missed": aware[1]}
    per_class = presence.mean(axis=0)
    result = {"images": len(keys), "classes_present": int(presence.any(axis=0).sum()), "seeds": seeds,
              "rarest_class_image_share": float(per_class[per_class > 0].min()), "by_size": rows,
              "uniform_miss_rate_1_16": rows["1/16"]["uniform_miss_rate"],
              "class_aware_miss_rate_1_16": rows["1/16"]["class_aware_miss_rate"]}
    table = Table(title=f"labelled splits of {len(keys)} synthetic scenes ({result['classes_present']} classes; "
                        f"rarest class in {result['rarest_class_image_share']:.1%} of images), {seeds} seeds each")
    for col in ("split", "images", "uniform: seeds missing a class", "mean missed", "class-aware: seeds missing",
                "mean missed"):
        table.add_column(col, justify="right")
    for s, r in rows.items():
        table.add_row(s, str(r["count"]), f"{r['uniform_miss_rate']:.0%}", f"{r['uniform_mean_missed']:.2f}",
                      f"{r['class_aware_miss_rate']:.0%}", f"{r['class_aware_mean_missed']:.2f}")
    Console().print(table)
    if json_path:
        atomic_write_json(json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
