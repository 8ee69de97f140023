"""Evaluation on whole images: confusion matrix, per-class IoU and mIoU.

Used by the trainer's validation and by `csst eval`. Samples are split across
ranks (sample i on rank i % world) and the confusion matrix is all-reduced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from csst_data.datasets import Dataset
from csst_data.jpeg.structure import size_mismatch
from csst_data.store.codecs import check_label
from csst_train.images import decode_whole
from csst_train.inference import IMAGENET, normalise, predict_probs
from csst_train.metrics import all_reduce_confusion, confusion_matrix, iou_from_confusion


# Threads decoding one image in bands (csst's restart-marker JPEGs): evaluation decodes one image at a
# time in this process, so a second core would otherwise idle during the decode.
BAND_THREADS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: test-time augmentation, sliding windows, autocast, and this process's share."""

    scales: tuple[float, ...] = (1.0,)    # test-time scales; the probabilities of all passes are averaged
    flip: bool = False                    # also the horizontally mirrored image
    crop: int | None = None               # sliding-window size for larger images; None: whole images
    amp_dtype: torch.dtype | None = None  # autocast dtype on CUDA; None: float32
    stats: tuple = IMAGENET               # the model's input normalisation (its checkpoint's)
    rank: int = 0                         # this process evaluates samples i with i % world_size == rank
    world_size: int = 1


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: Iterable[dict], num_classes: int, device: str | torch.device = "cpu",
             options: EvalOptions = EvalOptions(), progress: Callable[[], None] | None = None) -> dict:
    """Evaluate `model` on `samples`: an iterable of dicts with "key", "image"
    (encoded bytes or a uint8 H x W x 3 array) and "label" (uint8 H x W).

    `options.crop` switches to sliding-window inference for images larger than it.
    `progress()` is called once per image this rank evaluates.
    Returns {"miou", "iou" (list), "confusion", "images"}; miou and iou entries are None where
    undefined (no labelled pixel, absent class).
    """
    was_training = model.training
    model.eval()
    cm = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
    n = 0
    for i, sample in enumerate(samples):
        if i % options.world_size != options.rank:
            continue
        image, label = _checked_pair(sample, num_classes)
        x = normalise(torch.from_numpy(np.ascontiguousarray(image))[None].to(device), options.stats)
        probs = predict_probs(model, x, num_classes, scales=options.scales, flip=options.flip, crop=options.crop,
                              amp_dtype=options.amp_dtype)
        pred = probs.argmax(1)[0]
        label = label if label.flags.writeable else label.copy()  # torch wants writable memory
        cm += confusion_matrix(pred, torch.from_numpy(label).to(device), num_classes)
        n += 1
        if progress:
            progress()
    all_reduce_confusion(cm)
    if was_training:
        model.train()
    iou, miou = iou_from_confusion(cm)
    # None, not NaN, where undefined (no labelled pixel): results go to strict JSON.
    return {"miou": None if np.isnan(miou) else float(miou), "iou": [None if np.isnan(v) else float(v) for v in iou],
            "confusion": cm.cpu().numpy(), "images": n}


def _checked_pair(sample, num_classes):
    """(decoded image, label) of a sample; errors name its file or shard member."""
    image, label = sample["image"], sample["label"]
    where = sample.get("name") or repr(sample.get("key"))  # the file or shard member, for messages
    if label is None:
        raise ValueError(f"{where}: no label to evaluate against")
    check_label(label, num_classes, where)  # a class id the model cannot predict is an error, not a silent miss
    data = image
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode_whole(image, key=where, threads=BAND_THREADS)
    if image.shape[:2] != label.shape:
        detail = (size_mismatch(data, image.shape[:2], label.shape) if isinstance(data, (bytes, bytearray, memoryview))
                  else f"image {image.shape[:2]} and label {label.shape} differ in size")
        raise ValueError(f"{where}: {detail}")
    return image, label


def check_classes(dataset: Dataset, num_classes: int, class_names: Sequence[str], what: str) -> None:
    """Refuse to evaluate `what` (a checkpoint or index, with these classes) on a dataset that declares others."""
    if dataset.num_classes is not None and dataset.num_classes != num_classes:
        raise ValueError(f"{dataset.name} has {dataset.num_classes} classes, {what} has {num_classes}")
    if dataset.classes is not None and list(dataset.classes) != list(class_names):
        diff = next((i for i, (a, b) in enumerate(zip(dataset.classes, class_names)) if a != b),
                    min(len(dataset.classes), len(class_names)) - 1)
        raise ValueError(f"{dataset.name} and {what} name their classes differently "
                         f"(class {diff}: {dataset.classes[diff]!r} vs {class_names[diff]!r})")
