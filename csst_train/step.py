"""One optimiser step, shared by the trainer and `csst bench train` (so the bench times the trainer's step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from csst_train.inference import IMAGENET, normalise
from csst_train.losses import OHEM_MIN_KEPT, segmentation_loss
from csst_train.online import Online, online_loss, update_ema


@dataclass(frozen=True)
class Step:
    """What one optimiser step reads: the model, its optimiser and scaler, where it runs, and the loss."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dev: torch.device
    dtype: torch.dtype | None = None   # autocast dtype; None: float32
    loss: str = "ce"                   # ce or ohem (on every sample's hard labels)
    pseudo_loss: str = "hard"          # hard, soft-topk or hard+mr on pseudo-labelled samples
    mr_weight: float = 0.1             # hard+mr: weight of the model regulariser
    min_kept: int = OHEM_MIN_KEPT      # ohem: pixels kept at least, per batch
    num_classes: int | None = None     # checked against the model's output channels (None: unchecked)
    model_name: str = "model"          # for that check's message
    stats: tuple = IMAGENET            # the model's input normalisation (mean, std)
    channels_last: bool = False        # inputs in NHWC memory format, as the model
    online: Online | None = None       # pseudo-loss "online": batches carry "unlabeled" crops (online.py)


def train_step(step: Step, batch: dict) -> float:
    """Forward, loss, backward and update on one crop-loader batch (learning rate as set); returns the loss.

    The trainer and `csst bench train` both take this step, so the bench times the trainer's step."""
    x = _input(step, batch["image"])
    unlabeled = batch.get("unlabeled")
    with torch.autocast(step.dev.type, dtype=step.dtype, enabled=step.dtype is not None):
        # Labelled and unlabelled crops go through one forward pass (one set of BatchNorm statistics).
        both = x if unlabeled is None else torch.cat([x, _input(step, unlabeled)])
        logits = _forward(step, both)
        check_output(step, logits, both)
        batch = {k: (v.to(step.dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        batch["label"] = batch["label"].long()  # uint8 through the loader: 8x less to copy
        n = len(x)
        value = segmentation_loss(logits[:n].float(), batch, kind=step.loss, pseudo_loss=step.pseudo_loss,
                                  mr_weight=step.mr_weight, min_kept=step.min_kept)
        if unlabeled is not None:
            value = value + step.online.weight * _online_term(step, logits[n:], both[n:])
    step.optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(value).backward()
    step.scaler.step(step.optimizer)
    step.scaler.update()
    if step.online is not None:
        update_ema(step.online, unwrap(step.net))
    return float(value.detach())  # waits for the device: the caller's clock reads the real step time


def _input(step, images):
    x = normalise(images.to(step.dev, non_blocking=True), step.stats)
    return x.contiguous(memory_format=torch.channels_last) if step.channels_last else x


def _online_term(step, logits, x):
    """The unlabelled crops' loss against the network's own predictions, or its mean teacher's."""
    if step.online.ema is None:
        return online_loss(logits, logits.detach(), step.online.threshold)
    with torch.no_grad():
        teacher = step.online.ema(x)
    return online_loss(logits, teacher, step.online.threshold)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, under DistributedDataParallel and torch.compile."""
    model = model.module if hasattr(model, "module") else model
    return getattr(model, "_orig_mod", model)


def _forward(step: Step, x: torch.Tensor) -> torch.Tensor:
    try:
        return step.net(x)
    except ValueError as e:
        # BatchNorm over a pooled 1 x 1 map (pyramid or ASPP pooling) has one value per channel in a
        # batch of one crop: torch's message names neither the batch nor the way out.
        if x.shape[0] != 1 or "Expected more than 1 value per channel" not in str(e):
            raise
        raise ValueError(f"model {step.model_name!r}: a batch of one crop, on which its BatchNorm layers cannot "
                         "train (an epoch whose samples per process leave one crop over at this batch size): "
                         "choose --length (samples per epoch) or --batch-size so that no batch holds a single "
                         "crop") from None


def check_output(step: Step, logits: torch.Tensor, x: torch.Tensor) -> None:
    """A model's output must be N x classes x H x W at the input's size: a user's factory that gets this
    wrong fails at its first step, in one line, not at the end of the run (or never, with more channels)."""
    want = (x.shape[0], step.num_classes if step.num_classes is not None else logits.shape[1], *x.shape[2:])
    if logits.ndim != 4 or tuple(logits.shape) != want:
        raise ValueError(f"model {step.model_name!r}: its output is {tuple(logits.shape)} for an input of "
                         f"{tuple(x.shape)}; expected {want} (N x classes x H x W, logits at the input size)")
