"""`csst predict`: a checkpoint's predictions as PNG files, one per image.

Formats: `ids` (class ids, mode L), `cityscapes` (Cityscapes label ids, the
files the official cityscapesscripts evaluator and the benchmark server take:
`{key}.png` holds `city_seq_frame`), `color` (a palette PNG) and `overlay` (the
prediction blended over the photo, for looking). Predictions are the argmax of
the class probabilities averaged over `scales` and `flips` (sliding windows of
`crop` on large images), as `csst eval` scores them. Images are read by the
same DataLoader as `csst label`; each rank predicts the keys that hash to it;
files are written atomically, and a rerun skips those already written.
"""

import io
import os
import time

import numpy as np
import torch

from csst_data.datasets import tables
from csst_data.runs.shardrun import rank_of, record_failure, start_rank
from csst_data.store.shards import atomic_write_bytes
from csst_data.workers import die_with_parent, mp_context
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import dist_env, pick_device
from csst_train.label import ImageDataset, _collate, _same_size_runs, default_workers, predict_labels, ref_name

FORMATS = ("ids", "cityscapes", "color", "overlay")


def class_palette(class_names):
    """RGB per class: the dataset's own colours where csst knows them (VOC), else Cityscapes' and fixed random ones."""
    from csst_demo.report import palette

    if list(class_names) == list(tables.VOC_CLASSES):
        return np.array(tables.VOC_PALETTE, np.uint8)
    return palette(len(class_names))


def render(pred, fmt, image=None, class_names=None):
    """A prediction (uint8 H x W class ids) -> PNG bytes in `fmt`."""
    from PIL import Image

    if fmt == "ids":
        out = Image.fromarray(pred, mode="L")
    elif fmt == "cityscapes":
        lut = np.zeros(256, np.uint8)
        lut[:19] = tables.CITYSCAPES_TRAIN_TO_LABEL
        out = Image.fromarray(lut[pred], mode="L")
    elif fmt == "color":
        out = Image.fromarray(pred, mode="P")
        colours = np.zeros((256, 3), np.uint8)
        colours[:len(class_names)] = class_palette(class_names)
        out.putpalette(colours.ravel().tolist())
    elif fmt == "overlay":
        colours = class_palette(class_names).astype(np.float32)
        blend = 0.45 * image.astype(np.float32) + 0.55 * colours[pred]
        out = Image.fromarray(blend.round().astype(np.uint8))
    else:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def predict(checkpoint, items, out_dir, *, fmt="ids", device="auto", batch_size=4, workers=None, scales=(1.0,),
            flip=False, crop=None, stride=None, amp="off", rank=None, world_size=None, progress=None):
    """Write `out_dir/{key}.png` for every item ([(key, ref)] from `label.list_inputs`) of this rank.

    Returns a summary dict: written, skipped (already there), failed, total, seconds.
    `progress(done, total)` is called as images finish.
    """
    from csst_train.checkpoints import model_from_checkpoint
    from csst_train.inference import normalise

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    rank, world_size = dist_env(rank, world_size)
    dev = pick_device(device)
    model, ckpt = model_from_checkpoint(checkpoint, dev)
    num_classes, names = int(ckpt["num_classes"]), list(ckpt.get("class_names") or range(ckpt["num_classes"]))
    if fmt == "cityscapes" and names != list(tables.CITYSCAPES_CLASSES):
        raise ValueError(f"{checkpoint}: --format cityscapes needs a checkpoint of the 19 Cityscapes train classes, "
                         f"this one has {num_classes} ({', '.join(map(str, names[:4]))}, ...)")
    os.makedirs(out_dir, exist_ok=True)
    start_rank(out_dir, rank, world_size)  # failures of an earlier run are gone
    mine = [it for it in items if rank_of(it[0], world_size) == rank]
    path_of = {key: os.path.join(out_dir, f"{key}.png") for key, _ in mine}
    todo = [it for it in mine if not os.path.exists(path_of[it[0]])]
    done, failed, start = len(mine) - len(todo), 0, time.perf_counter()
    workers = default_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(ImageDataset(todo), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_collate, worker_init_fn=die_with_parent,
                                         prefetch_factor=4 if workers else None,
                                         multiprocessing_context=mp_context() if workers else None)
    amp_dtype = to_amp_dtype(amp, dev)
    if progress:
        progress(done, len(mine))
    for batch in loader:
        rows = []
        for i, image, _, _, error in batch:
            if error is not None:
                record_failure(out_dir, todo[i][0], ref_name(todo[i][1]), error, rank, world_size)
                failed += 1
            else:
                rows.append((i, image))
        for run in _same_size_runs(rows):
            x = torch.stack([r[1] for r in run]).to(dev)
            pred, _, _, _ = predict_labels(model, normalise(x), num_classes, scales=scales, flip=flip, crop=crop,
                                           stride=stride, amp_dtype=amp_dtype)
            for j, (i, image) in enumerate(run):
                key = todo[i][0]
                atomic_write_bytes(path_of[key], render(pred[j], fmt, image.numpy(), names))
        done += len(batch)
        if progress:
            progress(done, len(mine))
    return {"written": len(todo) - failed, "skipped": len(mine) - len(todo), "failed": failed, "total": len(mine),
            "seconds": time.perf_counter() - start, "rank": rank, "world_size": world_size}
