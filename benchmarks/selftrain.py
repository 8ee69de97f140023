"""Self-training experiment: the paper's Table 1(a) rows in miniature.

On one synthetic dataset (`csst synth`, seed 0), for each training seed:
  teacher_uniform   real labels, uniform sampling
  teacher_centroid  real labels, centroid sampling
  (teacher_centroid labels the unlabelled split: `csst label`)
  student_uniform   real + pseudo labels, uniform sampling
  student_centroid  real + pseudo labels, centroid sampling
Every row trains Fast-SCNN from scratch for the same number of iterations
(same epochs x samples per epoch x batch), with the constant crop schedule,
and is evaluated (last checkpoint, no model selection on val) on the
validation split: mIoU and mIoU over the rarest third of the classes (by
labelled pixel share). Rows are reported as mean +- std over the seeds.

The student recipe is what a user would run with csst's own options: pseudo
labels keep only pixels the teacher is at least 70 % sure of (`csst label
--min-confidence 0.7`), and real images make up about half of the student's
samples (`csst train --source-weights`), so the few real labels are not
drowned by 24x as many pseudo labels. The default split (25 labelled, 600
unlabelled) is the semi-supervised setting the method is for.

    python benchmarks/selftrain.py --seeds 3 --json benchmarks/results/selftrain.json
"""

import os
import sys
import tempfile
import time

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from csst_demo import synth
from csst_data.index import CentroidIndex, build_index
from csst_data.datasets import as_dataset
from csst_train.checkpoints import model_from_checkpoint
from csst_train.evaluate import evaluate
from csst_train.images import list_inputs
from csst_train.label import label
from csst_train.run_configs import LabelConfig
from csst_train.config import TrainConfig
from csst_train.trainer import train

ROWS = ("teacher_uniform", "teacher_centroid", "student_uniform", "student_centroid")


def run_row(out, data, index, sampling, seed, cfg, source_weights=None):
    train(TrainConfig(out=out, data=data, index=index, sampling=sampling, seed=seed, epochs=cfg["epochs"],
                      crop=cfg["crop"], batch_size=cfg["batch"], length=cfg["length"], workers=cfg["workers"],
                      loss="ohem", source_weights=source_weights, min_kept=cfg["min_kept"]), log=lambda s: None)
    model, ckpt = model_from_checkpoint(os.path.join(out, "last.pt"))
    result = evaluate(model, as_dataset(cfg["val"]).iter(images=True, labels=True), ckpt["num_classes"])
    iou = np.array([np.nan if v is None else v for v in result["iou"]])
    return {"miou": result["miou"], "iou": iou.tolist(), "rare_miou": float(np.nanmean(iou[cfg["rare"]])),
            "iterations": ckpt["iteration"]}


def stats(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist()}


@click.command()
@click.option("--seeds", default=3, show_default=True)
@click.option("--labeled", default=25, show_default=True)
@click.option("--unlabeled", default=600, show_default=True)
@click.option("--val", "n_val", default=100, show_default=True)
@click.option("--size", default="256x512", show_default=True)
@click.option("--crop", default=256, show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--length", default=800, show_default=True, help="Samples per epoch, the same for every row.")
@click.option("--workers", default=0, show_default=True, help="Loader workers (0 is fastest on 2 cores).")
@click.option("--min-confidence", default=0.7, show_default=True,
              help="Pseudo-label pixels the teacher is less sure of become ignore (csst label --min-confidence); "
                   "0 keeps every pixel.")
@click.option("--real-share", default=0.5, show_default=True,
              help="About this share of the student's samples comes from the real labels (csst train "
                   "--source-weights, by image count); 0 draws real and pseudo images alike.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the runs here (default: a temporary folder).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run.")
def main(seeds, labeled, unlabeled, n_val, size, crop, batch, epochs, length, workers, min_confidence, real_share,
         workdir, json_path, quick):
    if quick:
        seeds, labeled, unlabeled, n_val, size, crop, batch, epochs, length = 1, 12, 12, 6, "128x256", 128, 4, 1, 12
    h, w = (int(v) for v in size.lower().split("x"))
    console = Console()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or tmp
        data = os.path.join(work, "data")
        if not os.path.exists(os.path.join(data, "val", "manifest.json")):
            synth.write_dataset(data, synth.SynthOptions(labeled=labeled, unlabeled=unlabeled, val=n_val,
                                                         size=(h, w), seed=0),
                                progress=False)
        lab = os.path.join(data, "labeled")
        teacher_index = os.path.join(work, "teacher-index.zarr")
        if not os.path.exists(teacher_index):
            build_index([lab], teacher_index, progress=False)
        share = CentroidIndex.open(teacher_index).class_pixels.sum(0).astype(float)
        share /= share.sum()
        rare = np.argsort(share)[: synth.NUM_CLASSES // 3]
        cfg = {"epochs": epochs, "crop": crop, "batch": batch, "length": length, "workers": workers,
               "min_kept": batch * crop * crop // 16, "val": os.path.join(data, "val"), "rare": rare}
        # Weight of the real source (index source 0) so that real images make up `real_share` of the draws.
        weights = {0: real_share / (1 - real_share) * unlabeled / labeled} if 0 < real_share < 1 else None
        results = {r: [] for r in ROWS}
        for seed in range(seeds):
            run = lambda name, *a, **k: run_row(os.path.join(work, f"seed{seed}", name), *a, seed, cfg, **k)  # noqa: E731
            results["teacher_uniform"].append(run("teacher_uniform", [lab], teacher_index, "uniform"))
            results["teacher_centroid"].append(run("teacher_centroid", [lab], teacher_index, "centroid"))
            pseudo = os.path.join(work, f"seed{seed}", "pseudo")
            label(os.path.join(work, f"seed{seed}", "teacher_centroid", "last.pt"),
                  list_inputs([os.path.join(data, "unlabeled")]), pseudo,
                  LabelConfig(workers=workers, min_confidence=min_confidence or None))
            index = os.path.join(work, f"seed{seed}", "index.zarr")
            build_index([lab, pseudo], index, progress=False)
            results["student_uniform"].append(run("student_uniform", [lab, pseudo], index, "uniform", source_weights=weights))
            results["student_centroid"].append(run("student_centroid", [lab, pseudo], index, "centroid", source_weights=weights))
            console.print(f"seed {seed}: " + ", ".join(f"{r} {100 * results[r][-1]['miou']:.2f}" for r in ROWS)
                          + f"  ({time.perf_counter() - t0:.0f} s)")
    rare_names = [synth.CLASS_NAMES[c] for c in rare]
    out = {r: stats([x["miou"] for x in results[r]]) for r in ROWS}
    out["rare_miou"] = {r: stats([x["rare_miou"] for x in results[r]]) for r in ROWS}
    out.update({
        "rare_classes": rare_names, "seeds": seeds, "iterations_per_row": results["teacher_uniform"][0]["iterations"],
        "per_class_iou": {r: np.nanmean([x["iou"] for x in results[r]], axis=0).tolist() for r in ROWS},
        "class_names": list(synth.CLASS_NAMES), "device": "cpu", "cpu_threads": torch.get_num_threads(),
        "config": {"labeled": labeled, "unlabeled": unlabeled, "val": n_val, "size": [h, w], "crop": crop,
                   "batch": batch, "epochs": epochs, "samples_per_epoch": length, "model": "fastscnn",
                   "loss": "ohem", "schedule": "constant", "pseudo_min_confidence": min_confidence,
                   "student_real_share": real_share, "student_source_weights": weights},
        "seconds": time.perf_counter() - t0,
    })
    out["targets"] = {
        "student_centroid>teacher_centroid": out["student_centroid"]["mean"] > out["teacher_centroid"]["mean"],
        "student_centroid>student_uniform": out["student_centroid"]["mean"] > out["student_uniform"]["mean"],
        "rare: centroid>uniform (teacher)":
            out["rare_miou"]["teacher_centroid"]["mean"] > out["rare_miou"]["teacher_uniform"]["mean"],
        "rare: centroid>uniform (student)":
            out["rare_miou"]["student_centroid"]["mean"] > out["rare_miou"]["student_uniform"]["mean"],
    }
    table = Table(title=f"self-training on synthetic data: mIoU %, mean +- std over {seeds} seed(s), "
                        f"{out['iterations_per_row']} iterations per row")
    for col in ("row", "mIoU", f"rare mIoU ({', '.join(rare_names)})"):
        table.add_column(col, justify="right")
    for r in ROWS:
        table.add_row(r, f"{100 * out[r]['mean']:.2f} +- {100 * out[r]['std']:.2f}",
                      f"{100 * out['rare_miou'][r]['mean']:.2f} +- {100 * out['rare_miou'][r]['std']:.2f}")
    console.print(table)
    console.print(out["targets"])
    if json_path:
        from csst_data.store.shards import atomic_write_json

        atomic_write_json(json_path, out)


if __name__ == "__main__":
    sys.exit(main())
