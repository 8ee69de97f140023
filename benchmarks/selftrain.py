"""Self-training in miniature: the paper's Tables 1(a), 1(b), 2 and 4 on synthetic scenes, on CPU cores.

One synthetic dataset (`csst synth`, seed 0): LABELED labelled images, the
largest AMOUNT x LABELED unlabelled images (their true labels unused), VAL
validation images. For each training seed every row trains Fast-SCNN from
scratch (the paper's student) and is evaluated on the validation split after
its last step (no model selection on val): mIoU, and mIoU over the rarest
third of the classes (by labelled pixel share).

Table 1(a)  teacher_uniform, teacher_centroid   real labels, TEACHER_CROPS crops
            (teacher_centroid labels every unlabelled image: `csst label`,
            which stores each pixel's confidence)
            student_{uniform,centroid}_{A}x     real + pseudo labels of the first A x LABELED
                                                unlabelled images, STUDENT_FACTOR x the
                                                teacher's crops, pseudo pixels under
                                                --min-confidence ignored at training time
Table 1(b)  control_centroid    the teacher's recipe for the student's crops (repeated real labels)
Table 2     online_self         consistency regularisation (Eq. 4): one network, crops of the unlabelled
                                images labelled by its own current predictions (--pseudo-loss online)
            finetune            the teacher fine-tuned on real + pseudo labels (--init, lr 0.002)
            soft_topk           the student with soft top-2 labels (Eq. 6)
            model_regulariser   the student with hard labels + the CRST regulariser (Eq. 7)
            ours                student_centroid at the largest amount
Table 4     c2f_plus            ours with the coarse2fine+ crop schedule, against ours (constant):
                                mIoU and wall time
main        teacher_centroid, control_centroid and student_{centroid,uniform} at the largest amount:
            Table 1's rows behind its first three targets, for plans (a large --student-factor) where
            all of Table 1 would not fit the budget

Rows are reported as mean +- std (ddof 1) over the seeds, with every seed's
value; the JSON also holds the targets of issue #25 and whether each is met.

    python benchmarks/selftrain.py --workdir RUNS --json benchmarks/results/selftrain.json          # Table 1
    python benchmarks/selftrain.py --workdir RUNS --tables 4 --json benchmarks/results/selftrain-table4.json
    python benchmarks/selftrain.py --workdir RUNS --tables 2 --json benchmarks/results/selftrain-table2.json
    python benchmarks/selftrain.py --workdir RUNS8 --tables main --amounts 16 --student-factor 8 \
        --json benchmarks/results/selftrain-factor8.json

A later run in the same RUNS folder reuses every finished row (its wall time
included), so Tables 2 and 4 train only their own rows.
"""

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from csst_data.datasets import ShardSet, as_dataset
from csst_data.datasets.shardset import CONFIDENCE_MEMBER
from csst_data.index import CentroidIndex, build_index
from csst_demo import synth
from csst_train.checkpoints import model_from_checkpoint
from csst_train.config import TrainConfig
from csst_train.evaluate import evaluate
from csst_train.images import list_inputs
from csst_train.label import label
from csst_train.run_configs import LabelConfig
from csst_train.trainer import train


@dataclass(frozen=True)
class Plan:
    """The experiment: data, budget and recipe, recorded whole in the JSON."""

    seeds: int = 3                 # training seeds (all reported; none picked)
    labeled: int = 20              # labelled images (1/16 of the largest unlabelled set)
    amounts: tuple = (4, 16)       # pseudo-labelled images, in multiples of `labeled`
    val: int = 100                 # validation images
    size: tuple = (64, 128)        # image size (H, W): small scenes, so that the teacher nears convergence
    variety: float = 0.0           # per-scene appearance shifts of the synthetic data (render.shift_appearance)
    crop: int = 64
    batch: int = 32
    lr: float | None = None        # SGD learning rate of every row trained from scratch (None: the trainer's 0.02)
    teacher_crops: int = 20_000    # crops the teacher trains on
    student_factor: float = 2.0    # the student's crops, in multiples of the teacher's
    epochs: int = 10               # every row's crops are split into this many epochs
    min_confidence: float = 0.7    # student: pseudo pixels the teacher is less sure of are ignored (at training time)
    real_share: float = 0.5        # student: about this share of its samples comes from the real labels
    online_threshold: float = 0.9  # Table 2 consistency: least confidence of an online pseudo label
    label_scales: tuple = (0.75, 1.0, 1.25)  # the teacher labels with multi-scale + flip inference, as in the paper
    tables: tuple = ("1",)         # which tables to run: 1 (a and b), 2, 4
    workers: int = 0               # loader workers (0 is fastest on 2 cores)

    @property
    def student_crops(self) -> int:
        return int(round(self.teacher_crops * self.student_factor))

    @property
    def unlabeled(self) -> int:
        return max(self.amounts) * self.labeled


QUICK = dict(seeds=2, labeled=4, amounts=(1, 2), val=3, size=(64, 128), crop=32, batch=4, teacher_crops=16,
             epochs=1, tables=("1", "main", "2", "4"), label_scales=(1.0,))


class Experiment:
    """The data of the experiment and one method per kind of row; every row returns its evaluation."""

    def __init__(self, plan: Plan, work: str) -> None:
        self.plan, self.work = plan, work
        self.data = os.path.join(work, "data")
        self.lab, self.val = os.path.join(self.data, "labeled"), os.path.join(self.data, "val")
        if not os.path.exists(os.path.join(self.val, "manifest.json")):
            synth.write_dataset(self.data, synth.SynthOptions(labeled=plan.labeled, unlabeled=plan.unlabeled,
                                                              val=plan.val, size=plan.size, seed=0, force=True,
                                                              variety=plan.variety))
        self.teacher_index = self.index([self.lab], "teacher-index.zarr")
        share = CentroidIndex.open(self.teacher_index).class_pixels.sum(0).astype(float)
        self.rare = np.argsort(share / share.sum())[: synth.NUM_CLASSES // 3]

    def index(self, sources, name):
        path = os.path.join(self.work, name)
        if not os.path.exists(path):
            build_index(sources, path, progress=False)
        return path

    def row(self, out, data, index, crops, seed, **options):
        """Train one row (a finished run folder is reused) and evaluate its last checkpoint."""
        p = self.plan
        start = time.perf_counter()
        if "init" not in options:  # a fine-tuned row keeps the trainer's fine-tuning rate
            options.setdefault("lr", p.lr)
        if not os.path.exists(os.path.join(out, "done.json")):
            train(TrainConfig(out=out, data=data, index=index, seed=seed, epochs=p.epochs, crop=p.crop,
                              batch_size=p.batch, length=max(crops // p.epochs, 2 * p.batch), workers=p.workers,
                              loss="ohem", min_kept=p.batch * p.crop * p.crop // 16, **options), log=lambda s: None)
            with open(os.path.join(out, "done.json"), "w") as f:
                json.dump({"train_seconds": time.perf_counter() - start}, f)
        seconds = json.load(open(os.path.join(out, "done.json")))["train_seconds"]
        model, ckpt = model_from_checkpoint(os.path.join(out, "last.pt"))
        result = evaluate(model, as_dataset(self.val).iter(images=True, labels=True), ckpt["num_classes"])
        iou = np.array([np.nan if v is None else v for v in result["iou"]])
        return {"miou": result["miou"], "iou": iou.tolist(), "rare_miou": float(np.nanmean(iou[self.rare])),
                "iterations": ckpt["iteration"], "train_seconds": seconds}

    def teacher(self, seed, sampling="centroid"):
        """Table 1(a)'s teacher row (trained once; Tables 2 and 4 reuse it)."""
        return self.row(self.out(seed, f"teacher_{sampling}"), [self.lab], self.teacher_index,
                        self.plan.teacher_crops, seed, sampling=sampling)

    def control(self, seed):
        """Table 1(b)'s control: the teacher's recipe for the student's crops (repeated real labels)."""
        return self.row(self.out(seed, "control_centroid"), [self.lab], self.teacher_index, self.plan.student_crops,
                        seed, sampling="centroid")

    def pseudo(self, seed):
        """The teacher's pseudo labels of every unlabelled image (top-2 soft labels and confidence stored)."""
        out = os.path.join(self.work, f"seed{seed}", "pseudo")
        if not os.path.exists(os.path.join(out, "manifest.json")):
            self.teacher(seed)
            label(os.path.join(self.work, f"seed{seed}", "teacher_centroid", "last.pt"),
                  list_inputs([os.path.join(self.data, "unlabeled")]), out,
                  LabelConfig(workers=0, topk=2, scales=self.plan.label_scales, flip=True))
        return out

    def pseudo_source(self, seed, amount):
        """The pseudo labels of the first `amount` x LABELED unlabelled images, as a SOURCE."""
        pseudo = self.pseudo(seed)
        n = amount * self.plan.labeled
        if n == self.plan.unlabeled:
            return pseudo
        keys = sorted(key for key, _ in ShardSet(pseudo).image_refs())[:n]
        listed = os.path.join(self.work, f"seed{seed}", f"first-{n}.txt")
        with open(listed, "w") as f:
            f.write("\n".join(keys) + "\n")
        return f"{pseudo}@{listed}"

    def student(self, seed, name, amount, **options):
        p = self.plan
        source = self.pseudo_source(seed, amount)
        index = self.index([self.lab, source], f"seed{seed}/index-{amount}x.zarr")
        # Real images make up `real_share` of the draws (csst train --source-weights, by image count).
        weights = {0: p.real_share / (1 - p.real_share) * amount} if 0 < p.real_share < 1 else None
        options = {"sampling": "centroid", "source_weights": weights, "min_confidence": p.min_confidence or None,
                   **options}
        return self.row(self.out(seed, name), [self.lab, source], index, p.student_crops, seed, **options)

    def out(self, seed, name):
        return os.path.join(self.work, f"seed{seed}", name)


def table1(ex: Experiment, seed: int) -> dict:
    p = ex.plan
    rows = {}
    for sampling in ("uniform", "centroid"):
        rows[f"teacher_{sampling}"] = ex.teacher(seed, sampling)
    rows["control_centroid"] = ex.control(seed)
    for amount in p.amounts:
        for sampling in ("uniform", "centroid"):
            rows[f"student_{sampling}_{amount}x"] = ex.student(seed, f"student_{sampling}_{amount}x", amount,
                                                               sampling=sampling)
    return rows


def main_rows(ex: Experiment, seed: int) -> dict:
    """Table 1's rows behind its first three targets alone (the teacher, the students with and without
    centroid sampling at the largest amount, the control): what fits when the student trains for many
    times the teacher's crops."""
    top = max(ex.plan.amounts)
    return {"teacher_centroid": ex.teacher(seed),
            f"student_centroid_{top}x": ex.student(seed, f"student_centroid_{top}x", top),
            "control_centroid": ex.control(seed),
            f"student_uniform_{top}x": ex.student(seed, f"student_uniform_{top}x", top, sampling="uniform")}


def table2(ex: Experiment, seed: int) -> dict:
    p, top = ex.plan, max(ex.plan.amounts)
    rows = {"ours": ex.student(seed, f"student_centroid_{top}x", top)}
    rows["online_self"] = ex.row(ex.out(seed, "online_self"), [ex.lab], ex.teacher_index, p.student_crops, seed,
                                 sampling="centroid", pseudo_loss="online",
                                 unlabeled=[os.path.join(ex.data, "unlabeled")], online_threshold=p.online_threshold)
    rows["finetune"] = ex.student(seed, "finetune", top,
                                  init=os.path.join(ex.out(seed, "teacher_centroid"), "last.pt"))
    rows["soft_topk"] = ex.student(seed, "soft_topk", top, pseudo_loss="soft-topk", min_confidence=None)
    rows["model_regulariser"] = ex.student(seed, "model_regulariser", top, pseudo_loss="hard+mr")
    return rows


def table4(ex: Experiment, seed: int) -> dict:
    top = max(ex.plan.amounts)
    return {"ours": ex.student(seed, f"student_centroid_{top}x", top),
            "c2f_plus": ex.student(seed, "c2f_plus", top, schedule="coarse2fine+")}


TABLES = {"1": table1, "main": main_rows, "2": table2, "4": table4}


def stats(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist()}


def summary(per_seed: list) -> dict:
    """{row: {miou, rare_miou, train_seconds: stats; iterations; per_class_iou}} over the seeds."""
    out = {}
    for name in per_seed[0]:
        rows = [s[name] for s in per_seed]
        out[name] = {k: stats([r[k] for r in rows]) for k in ("miou", "rare_miou", "train_seconds")}
        out[name]["iterations"] = rows[0]["iterations"]
        out[name]["per_class_iou"] = np.nanmean([r["iou"] for r in rows], axis=0).tolist()
    return out


def targets(rows: dict, top: int) -> dict:
    """Issue #25's targets, each with the measured figures."""
    out = {}
    s, t = rows.get(f"student_centroid_{top}x"), rows.get("teacher_centroid")
    if s and t:
        gain, noise = s["miou"]["mean"] - t["miou"]["mean"], max(s["miou"]["std"], t["miou"]["std"])
        out["student - teacher (centroid) >= 2 std and >= 2.0 mIoU"] = {
            "gain": 100 * gain, "two_std": 200 * noise, "met": bool(gain >= 2 * noise and gain >= 0.02)}
    c = rows.get("control_centroid")
    if s and c:
        out["student > control (Table 1b)"] = {"gain": 100 * (s["miou"]["mean"] - c["miou"]["mean"]),
                                               "met": bool(s["miou"]["mean"] > c["miou"]["mean"])}
    u = rows.get(f"student_uniform_{top}x")
    if s and u:
        gain = s["rare_miou"]["mean"] - u["rare_miou"]["mean"]
        out["rare third: student centroid > student uniform"] = {"gain": 100 * gain, "met": bool(gain > 0)}
    f, o = rows.get("c2f_plus"), rows.get("ours")
    if f and o:
        speed = o["train_seconds"]["mean"] / f["train_seconds"]["mean"]
        gap = abs(f["miou"]["mean"] - o["miou"]["mean"])
        out["coarse2fine+ within 1 std of constant at >= 1.5x less time"] = {
            "miou_gap": 100 * gap, "std": 100 * o["miou"]["std"], "speedup": speed,
            "met": bool(gap <= o["miou"]["std"] and speed >= 1.5)}
    return out


def member_bytes(pseudo: str) -> dict:
    """Mean stored bytes per image of the label and of the confidence member (what the confidence costs)."""
    from csst_data.store.members import group_members

    sizes = {"label.npy.zst": [], CONFIDENCE_MEMBER: []}
    for shard in ShardSet(pseudo).shard_files:
        for members in group_members(shard).values():
            for name in sizes:
                sizes[name].append(members[name][1])
    return {"label_bytes_per_image": float(np.mean(sizes["label.npy.zst"])),
            "confidence_bytes_per_image": float(np.mean(sizes[CONFIDENCE_MEMBER]))}


def show(console, out):
    table = Table(title=f"self-training in miniature: mIoU %, mean +- std over {out['plan']['seeds']} seeds "
                        f"(values per seed), {out['seconds'] / 60:.0f} min on {out['cpu_threads']} threads; "
                        f"rare third: {', '.join(out['rare_classes'])}")
    for col in ("row", "iterations", "mIoU", "per seed", "rare mIoU", "train s"):
        table.add_column(col, justify="right")
    for name, r in out["rows"].items():
        table.add_row(name, str(r["iterations"]), f"{100 * r['miou']['mean']:.2f} +- {100 * r['miou']['std']:.2f}",
                      " ".join(f"{100 * v:.1f}" for v in r["miou"]["values"]),
                      f"{100 * r['rare_miou']['mean']:.2f} +- {100 * r['rare_miou']['std']:.2f}",
                      f"{r['train_seconds']['mean']:.0f}")
    console.print(table)
    for name, t in out["targets"].items():
        console.print(f"{'met' if t['met'] else 'NOT met'}: {name}  "
                      + ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "met"))


@click.command()
@click.option("--seeds", default=Plan.seeds, show_default=True)
@click.option("--labeled", default=Plan.labeled, show_default=True)
@click.option("--amounts", default="4,16", show_default=True, help="Pseudo-labelled images, in multiples of --labeled.")
@click.option("--teacher-crops", default=Plan.teacher_crops, show_default=True)
@click.option("--student-factor", default=Plan.student_factor, show_default=True)
@click.option("--variety", default=Plan.variety, show_default=True,
              help="Appearance shifts between the synthetic scenes (csst synth --variety).")
@click.option("--batch", default=Plan.batch, show_default=True, help="Crops per step of every row.")
@click.option("--lr", type=float, default=None, help="Learning rate of the rows trained from scratch "
              "(default: the trainer's).")
@click.option("--min-confidence", default=Plan.min_confidence, show_default=True,
              help="Student: ignore pseudo pixels under this stored teacher confidence (0: keep all).")
@click.option("--tables", default="1", show_default=True,
              help="Comma-separated: 1 (a and b), main (Table 1 at the largest amount, no uniform teacher), 2, 4.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep (and reuse) the runs here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--quick", is_flag=True, help="Tiny smoke run (seconds per row), every table.")
def main(seeds, labeled, amounts, teacher_crops, student_factor, variety, batch, lr, min_confidence, tables,
         workdir, json_path, quick):
    plan = Plan(seeds=seeds, labeled=labeled, amounts=tuple(int(a) for a in amounts.split(",")),
                teacher_crops=teacher_crops, student_factor=student_factor, variety=variety, batch=batch, lr=lr,
                min_confidence=min_confidence,
                tables=tuple(tables.split(",")))
    if quick:
        plan = Plan(**{**asdict(plan), **QUICK})
    console, t0 = Console(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ex = Experiment(plan, workdir or tmp)
        per_seed = []
        for seed in range(plan.seeds):
            rows = {}
            for t in plan.tables:
                rows.update(TABLES[t](ex, seed))
            per_seed.append(rows)
            console.print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): "
                          + ", ".join(f"{k} {100 * v['miou']:.1f}" for k, v in rows.items()))
        top = max(plan.amounts)
        out = {"plan": asdict(plan), "rows": summary(per_seed), "rare_classes": [synth.CLASS_NAMES[c] for c in ex.rare],
               "class_names": list(synth.CLASS_NAMES), "model": "fastscnn", "device": "cpu",
               "cpu_threads": torch.get_num_threads(), "pseudo_storage": member_bytes(ex.pseudo(0)),
               "seconds": time.perf_counter() - t0}
    out["targets"] = targets(out["rows"], top)
    show(console, out)
    if json_path:
        from csst_data.store.shards import atomic_write_json

        atomic_write_json(json_path, out)


if __name__ == "__main__":
    sys.exit(main())
