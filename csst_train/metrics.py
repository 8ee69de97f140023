"""Confusion matrix and IoU for semantic segmentation.

The confusion matrix is (C, C) int64 with rows = true class, columns =
predicted class. It is summed over batches (and over ranks with
`all_reduce_confusion`) and turned into IoU once at the end.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from csst_data import IGNORE


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE) -> torch.Tensor:
    """(C, C) int64 counts of (true, predicted) pairs over pixels whose target is
    not `ignore_index`, on the device of `pred`. pred and target: same shape, ints."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    target = target.to(pred.device).long().reshape(-1)
    pred = pred.long().reshape(-1)
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.numel():
        lo = torch.minimum(target.min(), pred.min()).item()
        hi = torch.maximum(target.max(), pred.max()).item()
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"class ids must be in [0, {num_classes}) or {ignore_index} (ignore); found {lo}..{hi}"
            )
    cm = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes)


def iou_from_confusion(cm: torch.Tensor | np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU (ndarray, NaN for a class absent from both prediction and
    target) and mIoU (nanmean over classes; NaN if no class is present)."""
    cm = cm.detach().cpu().numpy() if torch.is_tensor(cm) else np.asarray(cm)
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.full(len(tp), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return iou, miou


def pixel_accuracy(cm: torch.Tensor | np.ndarray) -> float:
    """The share of labelled pixels predicted right (NaN without any)."""
    cm = cm.detach().cpu().numpy() if torch.is_tensor(cm) else np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def all_reduce_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Sum a confusion matrix over ranks in place when torch.distributed is
    initialised (the tensor must live on the backend's device: CUDA for nccl)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(cm, op=dist.ReduceOp.SUM)
    return cm
