"""Online pseudo labels, the consistency-regularisation alternative of the paper's Table 2 (Eq. 4).

One network learns, besides its labelled crops, from crops of unlabelled images
labelled by its own current predictions (`teacher="self"`), or by those of an
exponential moving average of its weights (`teacher="ema"`, mean teacher):
pixels whose predicted top probability is at least `threshold` take the argmax
as a hard label, the rest are ignored. No `csst label` stage and no stored
pseudo labels; this is what csst's offline pipeline is compared against.

`UnlabeledCrops` draws iteration t's unlabelled crops from (seed, t) alone, so
a run resumed at iteration t sees the crops it had not seen, as the crop loader
does for labelled ones. Images are decoded whole (no window decode: this mode
is the comparison, not the fast path).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from csst_data.loader import crops
from csst_data.store.codecs import decode_image
from csst_data.store.shards import RangeReader
from csst_data.workers import mp_context, worker_init

TEACHERS = ("self", "ema")
_STREAM = 0x0C5  # mixed into the seed: unlabelled draws differ from the labelled plan's


@dataclass(frozen=True)
class Online:
    """How the online pseudo labels are made and weighed (one per run)."""

    threshold: float = 0.9               # least top probability for a pixel to take its predicted label
    weight: float = 1.0                  # weight of the unlabelled loss against the labelled one
    ema: torch.nn.Module | None = None   # the mean teacher (teacher="ema"); None: the network itself
    decay: float = 0.99                  # EMA decay per step


def make_online(net: torch.nn.Module, teacher: str, threshold: float, weight: float, decay: float) -> Online:
    """The run's `Online`: with teacher "ema" a frozen copy of `net` that follows its weights."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown online teacher {teacher!r}: choose one of {', '.join(TEACHERS)}")
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= decay < 1.0:
        raise ValueError(f"online threshold must be in [0, 1] and EMA decay in [0, 1), got {threshold}, {decay}")
    ema = None
    if teacher == "ema":
        ema = copy.deepcopy(net).eval()
        ema.requires_grad_(False)
    return Online(threshold, weight, ema, decay)


def online_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Cross-entropy of `logits` against the argmax of `teacher_logits` (no gradient) where its top
    probability is at least `threshold`; the mean over those pixels (0 when there are none)."""
    from csst_train.losses import cross_entropy

    with torch.no_grad():
        conf, target = teacher_logits.float().softmax(1).max(1)
        target[conf < threshold] = 255
    return cross_entropy(logits.float(), target)


@torch.no_grad()
def update_ema(online: Online, net: torch.nn.Module) -> None:
    """ema = decay * ema + (1 - decay) * weights; buffers (BatchNorm statistics) copied."""
    if online.ema is None:
        return
    for e, p in zip(online.ema.parameters(), net.parameters()):
        e.lerp_(p.detach(), 1.0 - online.decay)
    for e, b in zip(online.ema.buffers(), net.buffers()):
        e.copy_(b)


class UnlabeledCrops(torch.utils.data.Dataset):
    """Item t (an iteration) -> uint8 (batch, 3, crop, crop): that iteration's unlabelled crops, drawn
    with the crop loader's augmentation from images chosen uniformly, all from (seed, t)."""

    def __init__(self, items: Sequence[tuple[str, object]], seed: int, crop: int, batch: int) -> None:
        if not items:
            raise ValueError("no unlabelled images to train on")
        self.items, self.seed, self.crop, self.batch = list(items), int(seed), int(crop), int(batch)
        self.reader = RangeReader()
        self.aug = crops.Augment()

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, t: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, _STREAM, int(t)])
        out = np.empty((self.batch, self.crop, self.crop, 3), np.uint8)
        for b in range(self.batch):
            key, ref = self.items[int(rng.integers(len(self.items)))]
            data = self.reader.read(ref) if isinstance(ref, str) else self.reader.read(ref[0], ref[1], ref[2])
            try:
                image = decode_image(data, key=key)
            except ValueError as e:
                raise ValueError(f"unlabelled image {key!r}: {e}") from None
            params = crops.crop_params(image.shape[0], image.shape[1], self.crop, rng, aug=self.aug)
            out[b] = crops.apply_crop(image, None, params)[0]
        return torch.from_numpy(out).permute(0, 3, 1, 2)


def unlabeled_batches(items: Sequence[tuple[str, object]], seed: int, crop: int, batch: int, first: int,
                      steps: int, workers: int) -> torch.utils.data.DataLoader:
    """The unlabelled batches of iterations first .. first + steps - 1, in order, decoded in `workers`."""
    return torch.utils.data.DataLoader(
        UnlabeledCrops(items, seed, crop, batch), batch_size=None, sampler=range(first, first + steps),
        num_workers=workers, worker_init_fn=worker_init(), multiprocessing_context=mp_context() if workers else None,
        # Its own generator: making the iterator draws a seed from it, not from torch's global RNG, whose
        # state (dropout) a checkpoint restores; the crops depend on (seed, iteration) alone.
        generator=torch.Generator().manual_seed(seed))
