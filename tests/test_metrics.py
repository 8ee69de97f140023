import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console

from csst_cli.tables import iou_table
from csst_train.metrics import all_reduce_confusion, confusion_matrix, iou_from_confusion, pixel_accuracy


def test_hand_computed_case():
    # 4 classes; class 3 never appears in target or prediction; one ignored pixel.
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    # pixels (t, p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) [ignored] (0,0)
    cm = confusion_matrix(pred, target, 4)
    want = np.array([[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert cm.dtype == torch.int64 and np.array_equal(cm.numpy(), want)
    iou, miou = iou_from_confusion(cm)
    # class 0: tp 2, union 3 + 3 - 2 = 4; class 1: tp 2, union 2 + 3 - 2 = 3; class 2: tp 1, union 2 + 1 - 1 = 2
    assert iou[:3] == pytest.approx([2 / 4, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert miou == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(5 / 7)


def test_matches_histogram_oracle():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 6, (3, 17, 23))
    t[rng.random(t.shape) < 0.1] = 255
    p = rng.integers(0, 6, t.shape)
    keep = t != 255
    want, _, _ = np.histogram2d(t[keep], p[keep], bins=6, range=[[0, 6], [0, 6]])
    cm = confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), 6)
    assert np.array_equal(cm.numpy(), want.astype(np.int64))
    # A predicted class absent from the target still has IoU 0, not NaN.
    cm2 = np.zeros((3, 3), np.int64)
    cm2[0, 1] = 5
    iou, miou = iou_from_confusion(cm2)
    assert iou[0] == 0.0 and iou[1] == 0.0 and math.isnan(iou[2]) and miou == 0.0
    iou, miou = iou_from_confusion(np.zeros((2, 2)))
    assert np.isnan(iou).all() and math.isnan(miou)


def test_bad_class_ids():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_iou_table_renders():
    console = Console(record=True, width=80)
    console.print(iou_table(np.array([0.5, np.nan]), ["road", "bus"]))
    text = console.export_text()
    assert "road" in text and "50.00" in text and "bus" in text and "mean" in text


def _worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    cm = torch.full((2, 2), rank + 1, dtype=torch.int64)
    all_reduce_confusion(cm)
    torch.save(cm, f"{out}.{rank}")
    dist.destroy_process_group()


def test_all_reduce_confusion(tmp_path):
    cm = torch.ones(2, 2, dtype=torch.int64)
    assert torch.equal(all_reduce_confusion(cm), torch.ones(2, 2, dtype=torch.int64))  # not initialised
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path / "cm")), nprocs=2)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"cm.{rank}"), torch.full((2, 2), 3, dtype=torch.int64))
