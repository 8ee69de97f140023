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

import math

SCHEDULES = ("constant", "coarse2fine", "fine2coarse", "coarse2fine+", "fine2coarse+")
FRACTIONS = (0.5, 0.75, 1.0)


def check_schedule(schedule):
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    return schedule


def default_sizes(full_crop):
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


def crop_for_epoch(schedule, epoch, epochs, sizes):
    """Crop size of epoch `epoch` (0-based) out of `epochs` under `schedule`."""
    check_schedule(schedule)
    sizes = _check_sizes(sizes)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} is outside 0..{epochs - 1}")
    k = len(sizes)
    if schedule == "constant":
        return sizes[-1]
    if schedule.endswith("+"):
        step = epoch % k
    else:
        # Equal stages even when epochs is not a multiple of len(sizes).
        step = epoch * k // epochs
    return sizes[step] if schedule.startswith("coarse2fine") else sizes[k - 1 - step]


def batch_for_crop(full_crop, full_batch, crop):
    """Batch size for `crop` that keeps full_batch * full_crop^2 pixels per step (>= 1)."""
    if full_crop < 1 or full_batch < 1 or crop < 1:
        raise ValueError(f"full_crop, full_batch and crop must be >= 1, got {full_crop}, {full_batch}, {crop}")
    return max(1, round(full_batch * (full_crop / crop) ** 2))


def schedule_table(schedule, epochs, full_crop, full_batch, sizes=None):
    """[(crop, batch)] for every epoch; `sizes` defaults to default_sizes(full_crop)."""
    sizes = default_sizes(full_crop) if sizes is None else _check_sizes(sizes)
    table = []
    for epoch in range(epochs):
        crop = crop_for_epoch(schedule, epoch, epochs, sizes)
        table.append((crop, batch_for_crop(full_crop, full_batch, crop)))
    return table


def iterations_per_epoch(samples_per_epoch, world_size, batch):
    """Steps one rank takes in an epoch: ceil(ceil(samples / world) / batch)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return math.ceil(math.ceil(samples_per_epoch / world_size) / batch)


def total_iterations(table, samples_per_epoch, world_size=1):
    """Total steps per rank over a schedule table (for the poly learning rate)."""
    return sum(iterations_per_epoch(samples_per_epoch, world_size, batch) for _, batch in table)
