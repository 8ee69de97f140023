"""The crop loader's options, in one place: `LoaderOptions`, taken whole by `CropLoader` and
handed whole to its `CropDataset` (torch-free, so configs can build one without loading torch)."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, Callable, Optional, Sequence

import numpy as np

from csst_data.loader.crops import NO_AUGMENT, Augment


@dataclasses.dataclass(frozen=True)
class CropOptions:
    """How `load_crop` makes one crop: drawn once per loader, the same for all its crops."""
    aug: Augment = Augment()           # what crops.crop_params draws (NO_AUGMENT: centred, scale 1)
    topk: bool = False                 # also crop the sample's top-k maps
    decode: Optional[Callable] = None  # decode(data, params, key) -> (pixels, scale, origin, shape); None: decode_window
    # Per class id (256 entries), the least stored confidence (0..255) a pseudo-label pixel needs to
    # count; pixels under it become ignore. Samples without a confidence member are left as they are.
    confidence_floor: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    crop: int                       # crop side at the full crop of the schedule
    batch_size: int                 # per process, at the full crop (smaller crops get larger batches)
    epochs: int                     # epochs of the schedule table
    schedule: str = "constant"      # crop-size schedule (schedules.py)
    sizes: Optional[Sequence[int]] = None  # the schedule's crop sizes (None: its own)
    strategy: str = "centroid"      # sampling strategy (sampling.py)
    seed: int = 0                   # seeds every sample's randomness with (seed, epoch, plan position)
    workers: int = 2                # DataLoader worker processes
    rank: Optional[int] = None      # None (with world_size None): torch.distributed's, else 0
    world_size: Optional[int] = None
    length: Optional[int] = None    # samples per epoch (None: one per image)
    source_weights: Any = None      # sampling weight per source (sampling.epoch_plan)
    augment: bool = True            # random scale, flip, jitter and blur; off: centred scale 1
    scale_range: tuple = (0.5, 2.0)  # random scale range, with augment
    p: float = 0.5                  # rare-class sampling: share of class-balanced draws
    temperature: float = 0.01       # rare-class sampling: softmax temperature over class frequencies
    pin_memory: bool = False        # DataLoader pin_memory (CUDA training)
    topk: bool = False              # batches carry the pseudo labels' top-k maps
    skip_bad: bool = False          # a sample that cannot be read is replaced, and reported in the batch
    reuse_buffers: bool = False     # workers fill a ring of shared-memory batches (CropLoader)
    confidence_floor: Any = None    # per class id, the least confidence a pseudo pixel needs (CropOptions)

    @cached_property
    def crop_options(self) -> CropOptions:
        """What each crop is made with, made once per loader (not per crop)."""
        floor = None if self.confidence_floor is None else np.asarray(self.confidence_floor, np.uint8)
        return CropOptions(Augment(scale_range=self.scale_range) if self.augment else NO_AUGMENT, self.topk,
                           confidence_floor=floor)
