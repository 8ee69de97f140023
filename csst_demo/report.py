"""The demo report: `OUT/report.md` plus PNG figures under `OUT/figures/`.

Everything comes from the files the pipeline left in OUT (see csst_demo.runner):
eval/teacher.json and eval/student.json (`csst eval --json`), the runs'
metrics.jsonl and args.json, index.zarr, the pseudo-label shards and the held
back true labels of the unlabelled split. The pseudo-label accuracy is computed
here once and written to eval/pseudo.json (same shape as the eval JSONs), so
every number in the report can be traced to a JSON file of the run.

Figures are drawn with matplotlib's object API (`Figure` + the Agg canvas), so
importing this module never touches pyplot or the global backend.
"""

import io
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from csst_data import IGNORE
from csst_data.datasets.tables import class_palette
from csst_data.store.shards import atomic_write_bytes, atomic_write_json

FIGURES = {
    "class_distribution": "figures/class_distribution.png",
    "pseudo_iou": "figures/pseudo_iou.png",
    "iou": "figures/iou_teacher_student.png",
    "crops": "figures/centroid_crops.png",
    "pseudo_samples": "figures/pseudo_samples.png",
    "curves": "figures/training_curves.png",
}
COLORS = {"real": "#4c72b0", "pseudo": "#dd8452", "teacher": "#4c72b0", "student": "#55a868"}
FRAME = {False: (76, 114, 176), True: (221, 132, 82)}  # crop frame: real / pseudo label


# -- inputs ------------------------------------------------------------------
def load_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; did its stage of the pipeline run?") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_metrics(path: str) -> list[dict]:
    """The per-epoch records of a run's metrics.jsonl."""
    if not os.path.exists(path):
        raise ValueError(f"{path}: missing; did the training stage run?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def colorize(label: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """uint8 H x W label -> RGB in the classes' palette (tables.class_palette); ignore is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(class_names)] = class_palette(class_names)
    return lut[label]


def overlay(image: np.ndarray, label: np.ndarray, class_names: Sequence[str], alpha: float = 0.55,
            highlight: Optional[int] = None, highlight_alpha: float = 0.85) -> np.ndarray:
    """The label's palette colours blended over the image (ignore left as is);
    class `highlight` more opaque, so a crop shows what it was sampled for."""
    colour = colorize(label, class_names).astype(np.float32)
    a = np.where(label == IGNORE, 0.0, alpha).astype(np.float32)
    if highlight is not None:
        a[label == highlight] = highlight_alpha
    out = (1 - a[..., None]) * image.astype(np.float32) + a[..., None] * colour
    return out.round().astype(np.uint8)


# -- pseudo-label accuracy ---------------------------------------------------
def pseudo_accuracy(pseudo: str, truth: str, keep: int = 4) -> tuple[dict, list]:
    """Confusion of the pseudo labels in `pseudo` against the true labels in
    `truth` (shard sets with the same keys).

    Pixels the teacher left unlabelled (ignore, e.g. below --min-confidence)
    are not in the confusion; `coverage` is the share of truly labelled pixels
    that got a pseudo label. Returns (result dict in the shape of the eval
    JSONs, the first `keep` samples as (key, image bytes, pseudo, truth)).
    """
    from csst_data.datasets import ShardSet
    from csst_train.metrics import confusion_matrix, iou_from_confusion, pixel_accuracy

    pseudo_set = ShardSet(pseudo)
    names = pseudo_set.classes
    num_classes = int(pseudo_set.num_classes)
    gt = {s["key"]: s["label"] for s in ShardSet(truth).iter(images=False, labels=True)}
    cm = torch.zeros((num_classes, num_classes), dtype=torch.int64)
    covered = total = 0
    confidence, samples, n = [], [], 0
    for s in pseudo_set.iter(images=True, labels=True):
        n += 1
        key, lab = s["key"], s["label"]
        true = gt.get(key)
        if true is None:
            raise ValueError(f"{truth}: no true label for pseudo-labelled sample {key!r}")
        if true.shape != lab.shape:
            raise ValueError(f"sample {key!r}: pseudo label {lab.shape} and true label {true.shape} differ in size")
        target = np.where(lab == IGNORE, IGNORE, true)
        cm += confusion_matrix(torch.from_numpy(lab.astype(np.int64)), torch.from_numpy(target), num_classes)
        valid = true != IGNORE
        total += int(valid.sum())
        covered += int((valid & (lab != IGNORE)).sum())
        if s["meta"] and "mean_confidence" in s["meta"]:
            confidence.append(float(s["meta"]["mean_confidence"]))
        if len(samples) < keep:
            samples.append((key, s["image"], lab, true))
    if n == 0:
        raise ValueError(f"{pseudo}: no pseudo-labelled samples")
    iou, miou = iou_from_confusion(cm)
    result = {  # None, not NaN, where undefined: the file stays strict JSON
        "pseudo": os.path.abspath(pseudo), "truth": os.path.abspath(truth),
        "miou": None if np.isnan(miou) else miou,
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iou)},
        "pixel_accuracy": None if cm.sum() == 0 else pixel_accuracy(cm),
        "coverage": covered / total if total else None,
        "mean_confidence": float(np.mean(confidence)) if confidence else None,
        "images": n,
        "confusion": cm.numpy().tolist(),
    }
    return result, samples


# -- figures -----------------------------------------------------------------
def _figure(w, h):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def save_figure(fig: Any, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pct(v):
    return np.nan if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * float(v)


def class_distribution(index: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(real, pseudo) pixels per class, from the index's class_pixels split by source."""
    is_pseudo = np.array([bool(s.get("pseudo")) for s in index.sources], dtype=bool)
    rows = is_pseudo[np.asarray(index.images["source"])]
    px = np.asarray(index.class_pixels, dtype=np.int64)
    return px[~rows].sum(0), px[rows].sum(0), int((~rows).sum()), int(rows.sum())


def plot_class_distribution(names: Sequence[str], real: np.ndarray, pseudo: np.ndarray, n_real: int, n_pseudo: int,
                            path: str) -> str:
    x = np.arange(len(names))
    fig = _figure(10, 4)
    ax = fig.add_subplot()
    for off, px, what, n in ((-0.2, real, "real", n_real), (0.2, pseudo, "pseudo", n_pseudo)):
        share = px / px.sum() if px.sum() else np.zeros(len(px))
        share = np.where(share > 0, share, np.nan)  # log scale: absent classes get no bar
        ax.bar(x + off, 100 * share, 0.4, color=COLORS[what], label=f"{what} labels ({n} images)")
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("share of labelled pixels (%)")
    ax.set_title("Class distribution: real vs pseudo labels")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_iou_bars(names: Sequence[str], series: list, title: str, path: str) -> str:
    """Grouped per-class IoU bars; series: [(legend label, [IoU or None per class], colour)]."""
    x = np.arange(len(names))
    width = 0.8 / len(series)
    fig = _figure(10, 4)
    ax = fig.add_subplot()
    for i, (label, iou, colour) in enumerate(series):
        pos, vals = x - 0.4 + width * (i + 0.5), np.array([_pct(v) for v in iou])
        ax.bar(pos, vals, width, color=colour, label=label)
        for xp in pos[np.isnan(vals)]:  # class in neither labels nor predictions
            ax.text(xp, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right")
    return save_figure(fig, path)


def _thumb(rgb, width):
    from PIL import Image

    h, w = rgb.shape[:2]
    if w == width:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, max(1, round(h * width / w))), Image.BILINEAR))


def _mosaic(rows, tile_h, tile_w, gap=4, frame=3):
    """Tiles (RGB arrays or None, frame colour or None) on a white grid."""
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (tile_h + gap) + gap, ncol * (tile_w + gap) + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j in range(ncol):
            y, x = gap + i * (tile_h + gap), gap + j * (tile_w + gap)
            tile, colour = row[j] if j < len(row) else (None, None)
            if tile is None:
                out[y:y + tile_h, x:x + tile_w] = 235
                continue
            out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile[:tile_h, :tile_w]
            if colour is not None:
                for sl in ((slice(y, y + frame), slice(x, x + tile_w)),
                           (slice(y + tile_h - frame, y + tile_h), slice(x, x + tile_w)),
                           (slice(y, y + tile_h), slice(x, x + frame)),
                           (slice(y, y + tile_h), slice(x + tile_w - frame, x + tile_w))):
                    out[sl] = colour
    return out


def centroid_crops(index: Any, size: int, seed: int = 0, per_class: int = 4) -> list[list[tuple[np.ndarray, bool]]]:
    """[class][tile] of (crop with its label overlaid, from pseudo labels?):
    up to `per_class` centroid-sampled crops per class, as training sees them
    (without augmentation)."""
    from csst_data.loader.crop_loader import load_crop
    from csst_data.loader.crops import NO_AUGMENT
    from csst_data.loader.options import CropOptions
    from csst_data.loader.sampling import epoch_plan
    from csst_data.loader.reader import SampleReader

    # An epoch long enough that every class with components gets per_class centroids.
    plan = epoch_plan(index, 0, seed, strategy="centroid", length=per_class * index.num_classes)
    is_pseudo = np.array([bool(s.get("pseudo")) for s in index.sources], dtype=bool)
    source = np.asarray(index.images["source"])
    names = index.class_names
    reader = SampleReader(index)
    rows = []
    try:
        for c in range(index.num_classes):
            tiles = []
            for j in np.flatnonzero(plan["cls"] == c)[:per_class]:
                row = int(plan["image"][j])
                rng = np.random.default_rng([seed, int(j)])
                img, lab = load_crop(reader, index, row, (float(plan["cy"][j]), float(plan["cx"][j])), size, rng,
                                     CropOptions(aug=NO_AUGMENT))
                tile = overlay(img, lab, names, alpha=0.35, highlight=c)
                tiles.append((tile, bool(is_pseudo[source[row]])))
            rows.append(tiles)
    finally:
        reader.close()
    return rows


def plot_centroid_crops(names: Sequence[str], rows: list, path: str, thumb: int = 112, per_class: int = 4) -> str:
    tiles = [[(_thumb(t, thumb), FRAME[p]) for t, p in row] for row in rows]
    mosaic = _mosaic(tiles or [[]], thumb, thumb)
    step = thumb + 4
    fig = _figure(1.8 + mosaic.shape[1] / 100, 0.6 + mosaic.shape[0] / 100)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([4 + i * step + thumb / 2 for i in range(len(rows))],
                  [f"{n} ({len(r)})" if len(r) < per_class else n for n, r in zip(names, rows)])
    ax.set_xticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title("Centroid-sampled crops per class\n(frame: blue = real label, orange = pseudo label)", fontsize=10)
    return save_figure(fig, path)


def plot_pseudo_samples(names: Sequence[str], samples: list, path: str, width: int = 320) -> str:
    from matplotlib.patches import Patch

    from csst_data.store.codecs import decode_image

    c = len(names)
    rows, labels, present = [], [], set()
    for key, data, lab, true in samples:
        image = decode_image(data, key=key)
        tiles = [image, colorize(lab, names), colorize(true, names)]
        rows.append([(_thumb(t, width), None) for t in tiles])
        m = (true != IGNORE) & (lab != IGNORE)
        labels.append(f"{key}\n{100 * (lab[m] == true[m]).mean():.0f}% px agree" if m.any() else key)
        present |= set(np.unique(lab).tolist()) | set(np.unique(true).tolist())
    tile_h = max((r[0][0].shape[0] for r in rows), default=width // 2)
    mosaic = _mosaic(rows or [[]], tile_h, width)
    fig = _figure(2.0 + mosaic.shape[1] / 100, 1.6 + mosaic.shape[0] / 100)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    step = width + 4
    ax.set_xticks([4 + j * step + width / 2 for j in range(3)], ["image", "pseudo label", "true label"])
    ax.xaxis.tick_top()
    ax.set_yticks([4 + i * (tile_h + 4) + tile_h / 2 for i in range(len(rows))], labels, fontsize=8)
    for s in ax.spines.values():
        s.set_visible(False)
    pal = class_palette(names) / 255.0
    handles = [Patch(color=pal[k], label=names[k]) for k in sorted(present) if k < c]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 7), fontsize=8)
    return save_figure(fig, path)


def plot_training_curves(runs: dict[str, list[dict]], path: str) -> str:
    """runs: {name: metrics records}; loss and val mIoU per epoch."""
    fig = _figure(10, 3.6)
    ax_loss, ax_miou = fig.subplots(1, 2)
    for name, recs in runs.items():
        ep = [r["epoch"] for r in recs]
        ax_loss.plot(ep, [r.get("loss", np.nan) for r in recs], "o-", color=COLORS.get(name), label=name)
        miou = [_pct(r.get("val_miou")) for r in recs]
        ax_miou.plot(ep, miou, "o-", color=COLORS.get(name), label=name)
    from matplotlib.ticker import MaxNLocator

    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    ax_miou.set(xlabel="epoch", ylabel="val mIoU (%)", title="Validation mIoU")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)


# -- report ------------------------------------------------------------------
def _fmt(v):
    v = _pct(v)
    return "–" if np.isnan(v) else f"{v:.2f}"


def _share(px, i):
    return f"{100 * px[i] / px.sum():.3g}" if px.sum() else "–"


def _md_table(header, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _best(recs):
    vals = [r["val_miou"] for r in recs if r.get("val_miou") is not None]
    return max(vals) if vals else None


@dataclass(frozen=True)
class RunData:
    """What the report shows, read from the files the pipeline left in its folder."""

    pseudo: dict  # pseudo-label accuracy, as written to eval/pseudo.json
    samples: list  # the first pseudo-labelled samples: (key, image bytes, pseudo label, true label)
    teacher: dict  # eval/teacher.json
    student: dict  # eval/student.json
    runs: dict  # {"teacher"|"student": metrics.jsonl records}
    args: dict  # {"teacher"|"student": args.json}
    names: list  # class names
    real_px: np.ndarray  # pixels per class in the real labels
    pseudo_px: np.ndarray  # ... and in the pseudo labels
    n_real: int  # images with real labels
    n_pseudo: int  # images with pseudo labels
    index: object  # the CentroidIndex of index.zarr (the crops figure samples from it)

    @property
    def crop(self) -> int:
        """The student's crop size (the size of the centroid crops shown)."""
        return int(self.args["student"].get("crop") or 128)


def make_report(out: str | os.PathLike, timings: Optional[list] = None, seed: int = 0) -> str:
    """Write eval/pseudo.json, the figures and report.md into `out`; returns the report's path.

    `timings` ([{stage, seconds, command}]) is saved to out/timings.json; when
    None, that file is read if present, so the report can be remade by hand.
    """
    out = os.path.abspath(out)
    if timings is not None:
        atomic_write_json(os.path.join(out, "timings.json"), list(timings))
    elif os.path.exists(os.path.join(out, "timings.json")):
        timings = load_json(os.path.join(out, "timings.json"))
    d = load_run(out)
    draw_figures(out, d, seed)
    md = _intro_md(d) + _results_md(d) + _runs_md(d) + _per_class_md(d) + _pseudo_and_balance_md(d, seed)
    md += _timings_md(timings) + _commands_md()
    path = os.path.join(out, "report.md")
    atomic_write_bytes(path, "\n".join(md).encode("utf-8"))
    return path


def load_run(out: str) -> RunData:
    """The numbers of the run in `out`, every one of them from a JSON file of the run; writes eval/pseudo.json."""
    from csst_data.index import CentroidIndex

    p = lambda *a: os.path.join(out, *a)  # noqa: E731
    pseudo, samples = pseudo_accuracy(p("pseudo"), p("data", "unlabeled-gt"))
    atomic_write_json(p("eval", "pseudo.json"), pseudo)
    teacher, student = load_json(p("eval", "teacher.json")), load_json(p("eval", "student.json"))
    runs = {name: load_metrics(p("runs", name, "metrics.jsonl")) for name in ("teacher", "student")}
    args = {name: load_json(p("runs", name, "args.json")) for name in ("teacher", "student")}
    index = CentroidIndex.open(p("index.zarr"), check_stale=False)
    real_px, pseudo_px, n_real, n_pseudo = class_distribution(index)
    return RunData(pseudo, samples, teacher, student, runs, args, list(pseudo["iou"]), real_px, pseudo_px,
                   n_real, n_pseudo, index)


def draw_figures(out: str, d: RunData, seed: int) -> None:
    """The report's figures, at the paths of FIGURES under `out`."""
    fig = {k: os.path.join(out, v) for k, v in FIGURES.items()}
    names, pseudo, teacher, student = d.names, d.pseudo, d.teacher, d.student
    plot_class_distribution(names, d.real_px, d.pseudo_px, d.n_real, d.n_pseudo, fig["class_distribution"])
    plot_iou_bars(names, [(f"pseudo labels (mIoU {_fmt(pseudo['miou'])}%)", list(pseudo["iou"].values()),
                           COLORS["pseudo"])],
                  f"Pseudo-label accuracy against the true labels ({pseudo['images']} unlabelled images)",
                  fig["pseudo_iou"])
    plot_iou_bars(names, [(f"{n} (mIoU {_fmt(r['miou'])}%)", [r["iou"].get(c) for c in names], COLORS[n])
                          for n, r in (("teacher", teacher), ("student", student))],
                  f"Per-class IoU on the validation split ({teacher.get('images')} images)", fig["iou"])
    plot_centroid_crops(names, centroid_crops(d.index, d.crop, seed), fig["crops"])
    plot_pseudo_samples(names, d.samples, fig["pseudo_samples"])
    plot_training_curves(d.runs, fig["curves"])


def _intro_md(d):
    ta, sa = d.args["teacher"], d.args["student"]
    return [
        "# csst demo report",
        "",
        "One run of the CSST self-training pipeline (Zhu et al., *Improving Semantic Segmentation via Efficient "
        "Self-Training*) on csst's synthetic street scenes. A **teacher** is trained on the labelled split with "
        f"`{ta.get('sampling')}` sampling (centroid: crops centred on connected components, the same number per "
        "class); it writes **pseudo labels** for the unlabelled split; a centroid index is built over real and "
        f"pseudo labels; a **student** is trained on both, with `{sa.get('sampling')}` sampling and the "
        f"`{sa.get('schedule')}` crop schedule; both models are evaluated on the validation split. Every stage is a `csst` command whose output is in "
        "this folder, so any stage can be rerun by hand: see [commands.sh](commands.sh).",
        "",
    ]


def _results_md(d):
    teacher, student, pseudo = d.teacher, d.student, d.pseudo
    gain = _pct(student["miou"]) - _pct(teacher["miou"])
    return [
        "## Results",
        "",
        f"The student reaches **{_fmt(student['miou'])}%** mIoU on the validation split, the teacher "
        f"**{_fmt(teacher['miou'])}%** ({gain:+.2f} points). The teacher's pseudo labels reach "
        f"{_fmt(pseudo['miou'])}% mIoU against the held-back true labels of the {pseudo['images']} unlabelled images.",
        "",
        _md_table(["model", "trained on", "evaluated on", "mIoU (%)"], [
            ["teacher", f"{d.n_real} labelled images", f"val ({teacher.get('images')} images)", _fmt(teacher["miou"])],
            ["student", f"{d.n_real} labelled + {d.n_pseudo} pseudo-labelled images",
             f"val ({student.get('images')} images)", _fmt(student["miou"])],
            ["pseudo labels", "(teacher's predictions)", f"unlabelled split ({pseudo['images']} images)",
             _fmt(pseudo["miou"])],
        ], ["---", "---", "---", "---:"]),
        "",
        f"Pseudo labels cover {_fmt(pseudo['coverage'])}% of the truly labelled pixels, with pixel accuracy "
        f"{_fmt(pseudo['pixel_accuracy'])}%"
        + (f" and mean teacher confidence {_fmt(pseudo['mean_confidence'])}%." if pseudo["mean_confidence"] is not None
           else "."),
        "Sources: [eval/teacher.json](eval/teacher.json), [eval/student.json](eval/student.json), "
        "[eval/pseudo.json](eval/pseudo.json).",
        "",
    ]


def _runs_md(d):
    runs, args = d.runs, d.args
    return [
        "### Training runs",
        "",
        _md_table(["run", "epochs", "crop", "batch", "sampling", "schedule", "best val mIoU (%)",
                   "training time (s)"], [
            [n, len(runs[n]), args[n].get("crop"), args[n].get("batch_size"), args[n].get("sampling"),
             args[n].get("schedule"), _fmt(_best(runs[n])), f"{sum(r.get('epoch_s', 0) for r in runs[n]):.1f}"]
            for n in ("teacher", "student")
        ], ["---", "---:", "---:", "---:", "---", "---", "---:", "---:"]),
        "",
        "![training curves](" + FIGURES["curves"] + ")",
        "",
    ]


def _per_class_md(d):
    return [
        "### Per-class IoU (%)",
        "",
        _md_table(["class", "teacher", "student", "pseudo labels", "real pixel share (%)", "pseudo pixel share (%)"], [
            [c, _fmt(d.teacher["iou"].get(c)), _fmt(d.student["iou"].get(c)), _fmt(d.pseudo["iou"][c]),
             _share(d.real_px, i), _share(d.pseudo_px, i)]
            for i, c in enumerate(d.names)
        ]),
        "",
        "– : the class appears neither in the labels nor in the predictions.",
        "",
        "![per-class IoU, teacher vs student](" + FIGURES["iou"] + ")",
        "",
    ]


def _pseudo_and_balance_md(d, seed):
    crop = d.crop
    return [
        "## Pseudo labels",
        "",
        "How well the teacher labels the unlabelled split, class by class, against its held-back true labels:",
        "",
        "![pseudo-label IoU](" + FIGURES["pseudo_iou"] + ")",
        "",
        "A few pseudo labels next to their images and true labels (black: ignore):",
        "",
        "![pseudo labels next to their images](" + FIGURES["pseudo_samples"] + ")",
        "",
        "## Class balance",
        "",
        "Share of labelled pixels per class in the real and the pseudo labels (log scale), from "
        "[index.zarr](index.zarr). Rare classes are what centroid sampling is for: every class gets the same "
        "number of crops per epoch however few pixels it has.",
        "",
        "![class distribution](" + FIGURES["class_distribution"] + ")",
        "",
        f"Crops of {crop}×{crop} pixels around centroids drawn by the student's sampler (epoch 0, seed {seed}), a "
        "row per class, labels overlaid in the Cityscapes palette (the row's class more opaque):",
        "",
        "![centroid-sampled crops](" + FIGURES["crops"] + ")",
        "",
    ]


def _timings_md(timings):
    if not timings:
        return []
    total = sum(t["seconds"] for t in timings)
    return [
        "## Stage timings",
        "",
        _md_table(["stage", "seconds", "command"],
                  [[t["stage"], f"{t['seconds']:.1f}", f"`{t['command']}`"] for t in timings]
                  + [["**total**", f"**{total:.1f}**", ""]], ["---", "---:", "---"]),
        "",
    ]


def _commands_md():
    return ["## Commands", "",
            "The exact commands that ran, in order, are in [commands.sh](commands.sh); run it (or any line of it) "
            "to reproduce this folder.", ""]
