"""Fast crop-size schedules of CSST (paper Sec. 3.3, Fig. 5).

A schedule picks one crop size per epoch from a list of sizes; the batch size
scales with (full crop / crop)^2 so that the pixels per step stay constant.

- `constant`: the full (largest) crop every epoch.
- `coarse2fine` / `fine2coarse`: the epochs are cut into len(sizes) equal
  stages (epoch * len(sizes) // epochs) and the size goes up / down one step
  per stage; e.g. 180 epochs over 3 sizes change size every 60 epochs.
- `coarse2fine+` / `fine2coarse+`: the size changes every epoch, cycling
  through the sizes ascending / descending (epoch % len(sizes)).
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How a schedule picks an epoch's crop size out of the sizes (ascending)."""
    varies: bool = True     # False: the full (largest) crop every epoch
    cycles: bool = False    # one step per epoch, round the sizes; else len(sizes) equal stages
    ascending: bool = True  # small to large (coarse to fine); else large to small

    def step(self, epoch: int, epochs: int, k: int) -> int:
        """Index into the k ascending sizes of epoch `epoch` of `epochs`."""
        if not self.varies:
            return k - 1
        # Stages: equal even when epochs is not a multiple of len(sizes).
        step = epoch % k if self.cycles else epoch * k // epochs
        return step if self.ascending else k - 1 - step


# name -> Schedule: every schedule `--schedule` offers.
SCHEDULE_RULES = {
    "constant": Schedule(varies=False),
    "coarse2fine": Schedule(),
    "fine2coarse": Schedule(ascending=False),
    "coarse2fine+": Schedule(cycles=True),
    "fine2coarse+": Schedule(cycles=True, ascending=False),
}
SCHEDULES = tuple(SCHEDULE_RULES)
FRACTIONS = (0.5, 0.75, 1.0)


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULE_RULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    return schedule


def default_sizes(full_crop: int) -> List[int]:
    """[1/2, 3/4, 1] x full_crop; the smaller two rounded to multiples of 32.

    The full crop is kept as given (it is the user's memory budget); for the
    usual sizes (512, 640, 768, 800, 1024) it is a multiple of 32 anyway.
    """
    full_crop = int(full_crop)
    if full_crop < 32:
        raise ValueError(f"full crop {full_crop} is too small for the default sizes (need >= 32)")
    sizes = {max(32, int(f * full_crop / 32 + 0.5) * 32) for f in FRACTIONS[:-1]}
    sizes = {min(s, full_crop) for s in sizes}
    return sorted(sizes | {full_crop})


def _check_sizes(sizes):
    sizes = sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1:
        raise ValueError(f"crop sizes must be a non-empty list of positive integers, got {sizes}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"crop sizes must be distinct, got {sizes}")
    return sizes


def crop_for_epoch(schedule: str, epoch: int, epochs: int, sizes: Sequence[int]) -> int:
    """Crop size of epoch `epoch` (0-based) out of `epochs` under `schedule`."""
    check_schedule(schedule)
    sizes = _check_sizes(sizes)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} is outside 0..{epochs - 1}")
    return sizes[SCHEDULE_RULES[schedule].step(epoch, epochs, len(sizes))]


def batch_for_crop(full_crop: int, full_batch: int, crop: int) -> int:
    """Batch size for `crop` that keeps full_batch * full_crop^2 pixels per step (>= 1)."""
    if full_crop < 1 or full_batch < 1 or crop < 1:
        raise ValueError(f"full_crop, full_batch and crop must be >= 1, got {full_crop}, {full_batch}, {crop}")
    return max(1, round(full_batch * (full_crop / crop) ** 2))


def schedule_table(schedule: str, epochs: int, full_crop: int, full_batch: int,
                   sizes: Optional[Sequence[int]] = None) -> List[Tuple[int, int]]:
    """[(crop, batch)] for every epoch; `sizes` defaults to default_sizes(full_crop)."""
    sizes = default_sizes(full_crop) if sizes is None else _check_sizes(sizes)
    table = []
    for epoch in range(epochs):
        crop = crop_for_epoch(schedule, epoch, epochs, sizes)
        table.append((crop, batch_for_crop(full_crop, full_batch, crop)))
    return table


def iterations_per_epoch(samples_per_epoch: int, world_size: int, batch: int) -> int:
    """Steps one rank takes in an epoch: ceil(ceil(samples / world) / batch)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return math.ceil(math.ceil(samples_per_epoch / world_size) / batch)


def total_iterations(table: Sequence[Tuple[int, int]], samples_per_epoch: int, world_size: int = 1) -> int:
    """Total steps per rank over a schedule table (for the poly learning rate)."""
    return sum(iterations_per_epoch(samples_per_epoch, world_size, batch) for _, batch in table)
