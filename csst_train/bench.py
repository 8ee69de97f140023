"""`csst bench train`: does training wait on data at each crop size of a fast schedule?

For each crop size: a fixed number of warm-up and timed steps of the real loop
(the crop loader, the model, SGD, optional AMP) split into the time waiting
for the loader and the time of the step, as the trainer measures them. From
those rates, the epoch time of every schedule; from the loader's own rate per
worker, the worker count that would keep the data wait under 10%.
"""

import math
import time

import torch

from csst_data.loader.crop_loader import CropLoader
from csst_data.loader.schedules import SCHEDULES, batch_for_crop, default_sizes, schedule_table
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import pick_device
from csst_train.inference import normalise
from csst_train.losses import segmentation_loss
from csst_train.models import build_model

WAIT_LIMIT = 0.10  # data wait above this share of the step time: the loader does not keep up


def step_rates(index, model="fastscnn", crop=768, batch_size=8, sizes=None, workers=2, device="auto", amp="off",
               warmup=3, steps=10, seed=0, progress=None):
    """Per crop size: iterations/s, crops/s, data-wait fraction and whether the loader keeps up."""
    dev = pick_device(device)
    dtype = to_amp_dtype(amp, dev)
    torch.manual_seed(seed)
    net = build_model(model, index.num_classes).to(dev).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    out = {}
    sizes = sizes or default_sizes(crop)
    for n, size in enumerate(sizes):
        bsz = batch_for_crop(crop, batch_size, size)
        loader = CropLoader(index, crop=size, batch_size=bsz, epochs=1, sizes=[size], seed=seed, workers=workers,
                            length=(warmup + steps) * bsz, pin_memory=dev.type == "cuda", reuse_buffers=True)
        loader.set_epoch(0)
        data_s = step_s = 0.0
        timed = 0
        batches = iter(loader)
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            t1 = time.perf_counter()
            x = normalise(batch["image"].to(dev, non_blocking=True))
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                logits = net(x)
                batch["label"] = batch["label"].to(dev).long()
                loss = segmentation_loss(logits.float(), batch, kind="ce")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            float(loss.detach())  # waits for the device
            t2 = time.perf_counter()
            if i >= warmup:
                data_s += t1 - t0
                step_s += t2 - t1
                timed += 1
        for _ in batches:  # let the workers finish
            pass
        total = data_s + step_s
        wait = data_s / total if total else 0.0
        out[str(size)] = {"batch": bsz, "steps": timed, "iterations_per_s": timed / total if total else 0.0,
                          "crops_per_s": timed * bsz / total if total else 0.0, "data_wait_fraction": wait,
                          "loader_keeps_up": wait <= WAIT_LIMIT, "step_s": step_s / max(timed, 1),
                          "data_s": data_s / max(timed, 1)}
        if progress:
            progress(n + 1, len(sizes))
    return out


def workers_needed(rate, loader_crops_per_s, workers):
    """Workers whose crops/s cover the step's demand (`rate` crops/s) with a 10% margin."""
    per_worker = loader_crops_per_s / max(workers, 1)
    return max(1, math.ceil(1.1 * rate / max(per_worker, 1e-9)))


def epoch_times(rates, samples, epochs, crop, batch_size, sizes=None):
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
