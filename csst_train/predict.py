"""`csst predict`: a checkpoint's predictions as PNG files, one per image.

Formats (`FORMATS`, a registry of name -> Format): `ids` (class ids, mode L),
`cityscapes` (Cityscapes label ids, the files the official cityscapesscripts
evaluator and the benchmark server take: `{key}.png` holds `city_seq_frame`),
`color` (a palette PNG) and `overlay` (the prediction blended over the photo,
for looking). Predictions are the argmax of the class probabilities averaged
over `scales` and `flips` (sliding windows of `crop` on large images), as
`csst eval` scores them. Images are read by the same DataLoader as `csst label`
(images.py); each rank predicts the keys that hash to it; files are written
atomically, and a rerun skips those already written. OUTPUT/predict.json
records what wrote the folder (the checkpoint's sha256 and the options that
change the files); a rerun with another checkpoint or other options is refused,
or with `force` replaces this rank's files.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from csst_data.datasets import tables
from csst_data.datasets.tables import class_palette
from csst_data.runs.shardrun import rank_of, record_failure, start_rank
from csst_data.store.shards import atomic_write_bytes, atomic_write_json, file_sha256
from csst_data.workers import rank_world
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import pick_device
from csst_train.inference import normalise
from csst_train.images import image_loader, ref_name, same_size_runs
from csst_train.label import predict_labels
from csst_train.run_configs import PredictConfig


# -- formats -------------------------------------------------------------------------------
def _ids(pred, image, class_names):
    from PIL import Image

    return Image.fromarray(pred, mode="L")


def _cityscapes(pred, image, class_names):
    from PIL import Image

    lut = np.zeros(256, np.uint8)
    lut[:19] = tables.CITYSCAPES_TRAIN_TO_LABEL
    return Image.fromarray(lut[pred], mode="L")


def _color(pred, image, class_names):
    from PIL import Image

    out = Image.fromarray(pred, mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[:len(class_names)] = class_palette(class_names)
    out.putpalette(colours.ravel().tolist())
    return out


def _overlay(pred, image, class_names):
    from PIL import Image

    colours = class_palette(class_names).astype(np.float32)
    blend = 0.45 * image.astype(np.float32) + 0.55 * colours[pred]
    return Image.fromarray(blend.round().astype(np.uint8))


@dataclass(frozen=True)
class Format:
    """An output format: how a prediction becomes an image, and the classes it needs (None: any)."""

    draw: Callable              # (pred uint8 H x W, image uint8 H x W x 3, class names) -> PIL image
    classes: Sequence[str] | None = None
    needs: str = ""             # those classes, in words, for the error naming a checkpoint without them


FORMATS = {
    "ids": Format(_ids),
    "cityscapes": Format(_cityscapes, classes=tuple(tables.CITYSCAPES_CLASSES), needs="the 19 Cityscapes train classes"),
    "color": Format(_color),
    "overlay": Format(_overlay),
}


def _format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def render(pred: np.ndarray, fmt: str, image: np.ndarray | None = None,
           class_names: Sequence[str] | None = None) -> bytes:
    """A prediction (uint8 H x W class ids) -> PNG bytes in `fmt`."""
    buf = io.BytesIO()
    _format(fmt).draw(pred, image, class_names).save(buf, format="PNG")
    return buf.getvalue()


# -- what wrote the folder ------------------------------------------------------------------
RECORD = "predict.json"


def _record(checkpoint, config):
    """The folder's record: the checkpoint and the options that change the files written."""
    options = {"format": config.fmt, **config.test_time().record(), "amp": config.amp or "off"}
    return {"producer": "csst predict", "checkpoint": os.path.abspath(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint), "options": options}


def _differences(old, new):
    """What differs between two records, in words, e.g. "format 'color', not 'ids'"."""
    out = [f"{k} {old['options'].get(k)!r}, not {v!r}" for k, v in new["options"].items()
           if old.get("options", {}).get(k) != v]
    if old.get("checkpoint_sha256") != new["checkpoint_sha256"]:
        out.insert(0, f"another checkpoint ({old.get('checkpoint')})")
    return out


def _claim(out_dir, record, paths, force):
    """Make `out_dir` this run's: the files in `paths` that exist are kept when an earlier run with
    the same record wrote them, else refused, or removed with `force` (before the record is written,
    so a run killed half-way never leaves old files under the new record)."""
    path = os.path.join(out_dir, RECORD)
    existing = [p for p in paths if os.path.exists(p)]
    try:
        with open(path) as f:
            old = json.load(f)
        why = "; ".join(_differences(old, record))
    except FileNotFoundError:
        old, why = None, "no record of what wrote them" if existing else ""
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); remove it or use a new folder") from None
    if why and (existing or old is not None):
        if not force:
            raise ValueError(f"{path}: {out_dir} holds predictions made with {why}; use a new folder, "
                             "or --force to replace them")
        for p in existing:
            os.remove(p)
    atomic_write_json(path, record)


# -- the run -------------------------------------------------------------------------------
def predict(checkpoint: str | os.PathLike, items: Sequence[tuple[str, object]], out_dir: str | os.PathLike,
            config: PredictConfig = PredictConfig(), rank: int | None = None, world_size: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `out_dir/{key}.png` for every item ([(key, ref)] from `images.list_inputs`) of this rank.

    Returns a summary dict: written, skipped (already there), failed, total, seconds.
    `progress(done, total)` is called as images finish.
    """
    from csst_train.checkpoints import checkpoint_stats, model_from_checkpoint

    fmt = _format(config.fmt)
    rank, world_size = rank_world(rank, world_size)
    dev = pick_device(config.device)
    model, ckpt = model_from_checkpoint(checkpoint, dev)
    stats = checkpoint_stats(ckpt)
    num_classes, names = int(ckpt["num_classes"]), list(ckpt.get("class_names") or range(ckpt["num_classes"]))
    if fmt.classes is not None and names != list(fmt.classes):
        raise ValueError(f"{checkpoint}: --format {config.fmt} needs a checkpoint of {fmt.needs}, "
                         f"this one has {num_classes} ({', '.join(map(str, names[:4]))}, ...)")
    os.makedirs(out_dir, exist_ok=True)
    mine = [it for it in items if rank_of(it[0], world_size) == rank]
    path_of = {key: os.path.join(out_dir, f"{key}.png") for key, _ in mine}
    _claim(out_dir, _record(checkpoint, config), list(path_of.values()), config.force)
    start_rank(out_dir, rank, world_size)  # failures of an earlier run are gone
    todo = [it for it in mine if not os.path.exists(path_of[it[0]])]
    done, failed, start = len(mine) - len(todo), 0, time.perf_counter()
    amp_dtype = to_amp_dtype(config.amp, dev)
    if progress:
        progress(done, len(mine))
    for batch in image_loader(todo, config.batch_size, config.workers):
        rows = [r for r in batch if r.error is None]
        for r in batch:
            if r.error is not None:
                record_failure(out_dir, todo[r.position][0], ref_name(todo[r.position][1]), r.error, rank, world_size)
                failed += 1
        for run in same_size_runs(rows):
            x = torch.stack([r.image for r in run]).to(dev)
            pred = predict_labels(model, normalise(x, stats), num_classes, config.test_time(),
                                  amp_dtype=amp_dtype).ids
            for j, r in enumerate(run):
                atomic_write_bytes(path_of[todo[r.position][0]], render(pred[j], config.fmt, r.image.numpy(), names))
        done += len(batch)
        if progress:
            progress(done, len(mine))
    return {"written": len(todo) - failed, "skipped": len(mine) - len(todo), "failed": failed, "total": len(mine),
            "seconds": time.perf_counter() - start, "rank": rank, "world_size": world_size}
