"""`csst bench train`: does training wait on data at each crop size of a fast schedule?

For each crop size: a fixed number of warm-up and timed steps of the real loop
(the crop loader and the trainer's own `train_step`: the model, SGD, optional AMP) split into the time waiting
for the loader and the time of the step, as the trainer measures them. From
those rates, the epoch time of every schedule; from the loader's own rate per
worker, the worker count that would keep the data wait under 10%.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from csst_data.index import CentroidIndex
from csst_data.loader.crop_loader import CropLoader
from csst_data.loader.options import LoaderOptions
from csst_data.loader.schedules import SCHEDULES, batch_for_crop, default_sizes, schedule_table
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import pick_device
from csst_train.models import build_model
from csst_train.step import Step, train_step

WAIT_LIMIT = 0.10  # data wait above this share of the step time: the loader does not keep up


@dataclass(frozen=True)
class StepBench:
    """What `step_rates` measures: the model and crops of a run, and how many steps to take per size."""

    model: str = "fastscnn"
    crop: int = 768                     # full crop size; smaller sizes get larger batches, as in training
    batch_size: int = 8                 # crops at the full crop
    sizes: Sequence[int] | None = None  # crop sizes to measure; None: 1/2, 3/4, 1 x crop
    workers: int = 2                    # loader workers
    device: str = "auto"
    amp: str = "off"
    warmup: int = 3                     # untimed steps per size
    steps: int = 10                     # timed steps per size
    seed: int = 0


def step_rates(index: CentroidIndex, options: StepBench = StepBench(),
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Per crop size: iterations/s, crops/s, data-wait fraction and whether the loader keeps up."""
    dev = pick_device(options.device)
    dtype = to_amp_dtype(options.amp, dev)
    torch.manual_seed(options.seed)
    net = build_model(options.model, index.num_classes).to(dev).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    step = Step(net, optimizer, scaler, dev, dtype, loss="ce")
    out = {}
    sizes = options.sizes or default_sizes(options.crop)
    for n, size in enumerate(sizes):
        out[str(size)] = _rates_at(index, step, options, size)
        if progress:
            progress(n + 1, len(sizes))
    return out


def _rates_at(index, step, options, size):
    """The timed steps at one crop size (after the warm-up ones) and the rates they give."""
    bsz = batch_for_crop(options.crop, options.batch_size, size)
    loader = CropLoader(index, LoaderOptions(crop=size, batch_size=bsz, epochs=1, sizes=[size], seed=options.seed,
                                             workers=options.workers, length=(options.warmup + options.steps) * bsz,
                                             pin_memory=step.dev.type == "cuda", reuse_buffers=True))
    loader.set_epoch(0)
    data_s = step_s = 0.0
    timed = 0
    batches = iter(loader)
    for i in range(options.warmup + options.steps):
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            break
        t1 = time.perf_counter()
        train_step(step, batch)  # returns once the device is done
        t2 = time.perf_counter()
        if i >= options.warmup:
            data_s += t1 - t0
            step_s += t2 - t1
            timed += 1
    for _ in batches:  # let the workers finish
        pass
    total = data_s + step_s
    wait = data_s / total if total else 0.0
    return {"batch": bsz, "steps": timed, "iterations_per_s": timed / total if total else 0.0,
            "crops_per_s": timed * bsz / total if total else 0.0, "data_wait_fraction": wait,
            "loader_keeps_up": wait <= WAIT_LIMIT, "step_s": step_s / max(timed, 1),
            "data_s": data_s / max(timed, 1)}


def workers_needed(rate: float, loader_crops_per_s: float, workers: int) -> int:
    """Workers whose crops/s cover the step's demand (`rate` crops/s) with a 10% margin."""
    per_worker = loader_crops_per_s / max(workers, 1)
    return max(1, math.ceil(1.1 * rate / max(per_worker, 1e-9)))


def epoch_times(rates: dict, samples: int, epochs: int, crop: int, batch_size: int,
                sizes: Sequence[int] | None = None) -> dict:
    """Estimated mean seconds per epoch of each schedule, from the measured iterations/s per size."""
    out = {}
    for schedule in SCHEDULES:
        table = schedule_table(schedule, epochs, crop, batch_size, sizes)
        seconds = 0.0
        for size, bsz in table:
            r = rates.get(str(size))
            if not r or not r["iterations_per_s"]:
                seconds = float("nan")
                break
            seconds += math.ceil(samples / bsz) / r["iterations_per_s"]
        out[schedule] = seconds / epochs
    return out
