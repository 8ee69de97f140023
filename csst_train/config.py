"""The options of a training run, declared once (the trainer and `csst train` read them here).

No torch import: `csst train --help` shows these defaults without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Every option of a training run, with its default: the one place they are declared."""

    out: str | None = None                        # run folder: last.pt, best.pt, metrics.jsonl, args.json
    data: Sequence = ()                           # training sources (Datasets or SOURCE strings)
    index: str | None = None                      # centroid index of `data`; None: build one in OUT/index.zarr
    val: Sequence = ()                            # validation sources; their mIoU picks best.pt
    model: str = "fastscnn"                       # fastscnn, deeplabv3plus-r18/-r50, smp:ARCH:ENCODER, package.module:factory
    pretrained: str | None = None                 # smp:...: encoder weights to fetch ("imagenet"); None: random
    init: str | None = None                       # state dict to start from (e.g. a torchvision ResNet)
    epochs: int = 30
    crop: int = 768                               # full crop size; a fast schedule's smaller crops get larger batches
    batch_size: int = 8                           # crops per process at the full crop
    lr: float | None = None                       # None: 0.02 from scratch, 0.002 with `init`
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9                            # poly learning-rate exponent
    sampling: str = "centroid"                    # centroid (CSST), uniform, class-uniform, rare-class (DAFormer)
    schedule: str = "constant"                    # crop-size schedule; coarse2fine+ is the paper's fastest
    sizes: Sequence[int] | None = None            # crop sizes of the schedule; None: 1/2, 3/4, 1 x crop
    length: int | None = None                     # samples per epoch over all ranks; None: number of images
    p: float = 0.5                                # class-uniform: share of centroid-sampled crops
    temperature: float = 0.01                     # rare-class sampling temperature
    source_weights: Mapping[int, float] | None = None  # index source -> relative sampling weight
    loss: str = "ohem"                            # ohem or ce
    min_kept: int = 100_000                       # OHEM: pixels kept at least, per batch
    pseudo_loss: str = "hard"                     # hard, soft-topk, hard+mr (pseudo-labelled samples) or online (paper Table 2)
    mr_weight: float = 0.1                        # weight of the model regulariser for hard+mr
    min_confidence: float | None = None           # pseudo pixels whose stored teacher confidence is under this are ignored
    class_fraction: float | None = None           # CBST: per class, keep this fraction of its most confident pseudo pixels
    unlabeled: Sequence = ()                      # pseudo_loss "online": image sources labelled by the network as it trains
    online_teacher: str = "self"                  # online: "self" (its own predictions, Eq. 4) or "ema" (mean teacher)
    online_threshold: float = 0.9                 # online: least top probability for an unlabelled pixel to count
    online_weight: float = 1.0                    # online: weight of the unlabelled loss
    ema_decay: float = 0.99                       # online "ema": decay of the mean teacher per step
    workers: int = 2                              # DataLoader workers per process
    max_bad_samples: int = 0                      # unreadable samples to skip (listed in OUT/bad_samples.jsonl); 0: stop at the first
    seed: int = 0
    device: str = "auto"                          # auto, cpu, cuda or cuda:N
    amp: str = "off"                              # off, bf16 or fp16 autocast on CUDA
    channels_last: bool = False                   # NHWC memory format for model and inputs (faster convs on GPUs)
    compile: bool = False                         # torch.compile the model (a slow first step, faster after)
    val_every: int = 1                            # validate every N epochs, and after the last
    val_crop: int | None = None                   # sliding-window size for validation; None: whole images
    resume: bool = False                          # continue OUT from last.pt
    save_every: int = 0                           # also write last.pt every N iterations (mid-epoch); 0: at epoch ends only
    tensorboard: bool = False                     # scalars to OUT/tb (needs the tensorboard package)
