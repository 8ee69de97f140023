"""`csst train`: one readable training loop for teacher and student.

Single process (CPU or one GPU) or several under torchrun (DDP; gloo on CPU,
nccl on CUDA). SGD with a poly learning rate per iteration over the whole
schedule, class-balanced crops from `csst_data.loader`, optional AMP, an
atomic `last.pt` every epoch, `best.pt` by validation mIoU, JSON-lines
metrics, and exact resumption.
"""

import contextlib
import hashlib
import json
import os
import signal
import time
from dataclasses import fields, replace

import numpy as np
import torch
import torch.distributed as dist

from csst_data.datasets import as_dataset
from csst_data.index import CentroidIndex
from csst_data.store.locks import OutputLock
from csst_data.loader.crop_loader import CropLoader
from csst_train.config import TrainConfig
from csst_train.checkpoints import load_checkpoint, save_checkpoint
from csst_train.distributed import amp_dtype, setup_distributed
from csst_train.evaluate import check_classes, evaluate
from csst_train.inference import normalise
from csst_train.losses import segmentation_loss
from csst_train.models import build_model, load_init

# Options that must not change when a run is resumed.
_RESUME_FIXED = ("model", "epochs", "crop", "batch_size", "sampling", "schedule", "sizes", "length",
                 "seed", "loss", "pseudo_loss", "lr", "source_weights")


def poly_lr(base_lr, iteration, total, power=0.9):
    """The poly policy: base_lr * (1 - iteration / total) ** power."""
    return base_lr * (1.0 - min(iteration, total) / max(total, 1)) ** power


def check_index_matches(index, data):
    """Fail early when --data names other sources than those the index was built from."""
    if not data:
        return
    want = {as_dataset(d).ident(): as_dataset(d).name for d in data}
    have = {d.ident(): d.name for d in index.datasets}
    if set(want) != set(have):
        raise ValueError(
            f"index {index.path} was built from {sorted(have.values())}, but --data is {sorted(want.values())}; "
            "rebuild it with `csst index build` over the same sources (or drop --index to build one in the run folder)"
        )


def _param_hash(model):
    sha = hashlib.sha256()
    for p in model.parameters():
        sha.update(p.detach().cpu().numpy().tobytes())
    return sha.hexdigest()[:16]


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def train(config=None, log=print, progress=None, on_validation=None, **overrides):
    """Train a segmentation model; returns the last epoch's metrics dict (rank 0) or None.

    `config` is a TrainConfig; keyword arguments override its fields. On rank 0,
    `log(line)` gets a summary per epoch, `progress(epoch, epochs, step, steps,
    info)` is called after every step (info: loss, lr, crops_per_s), and
    `on_validation(epoch, result, class_names, last)` after every validation.
    """
    cfg = replace(config or TrainConfig(), **overrides)
    if cfg.out is None:
        raise ValueError("no run folder given (out)")
    # One run per folder: rank 0 (the only writer) holds its lock.
    with OutputLock(cfg.out, ".lock") if int(os.environ.get("RANK", 0)) == 0 else contextlib.nullcontext():
        return _train(log=log, progress=progress, on_validation=on_validation,
                      **{f.name: getattr(cfg, f.name) for f in fields(cfg)})


class Preempted(Exception):
    """Training stopped on SIGTERM, SIGINT or SIGUSR1 after writing last.pt; `--resume` continues it."""

    def __init__(self, path, iteration, signum):
        super().__init__(f"stopped by {signal.Signals(signum).name} at iteration {iteration}; "
                         f"{path} holds the run, continue it with --resume")
        self.path, self.iteration, self.signum = path, iteration, signum


# Signals that stop a run at the next step boundary (SLURM and Kubernetes send SIGTERM; SLURM's
# --signal can send SIGUSR1 ahead of the kill; SIGINT is Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _train(*, out, data, index, val, model, init, epochs, crop, batch_size, lr, momentum, weight_decay, power,
           sampling, schedule, sizes, length, p, temperature, source_weights, loss, min_kept, pseudo_loss,
           mr_weight, workers, max_bad_samples, seed, device, amp, val_every, val_crop, resume, save_every, tensorboard, trace,
           kill_after_epoch, kill_at_iteration, signal_at_iteration, log, progress, on_validation):
    data = [as_dataset(d) for d in data]
    val = [as_dataset(v) for v in ([val] if isinstance(val, (str, os.PathLike)) else val or ())]
    args = {k: v for k, v in locals().items() if k not in ("log", "progress", "on_validation")}
    args["data"] = [d.name for d in data]
    args["val"] = [v.name for v in val]
    rank, world, dev = setup_distributed(device)
    main = rank == 0
    os.makedirs(out, exist_ok=True)
    last_path, best_path = os.path.join(out, "last.pt"), os.path.join(out, "best.pt")
    ckpt = None
    if resume:
        ckpt = load_checkpoint(last_path)
        changed = [k for k in _RESUME_FIXED if ckpt["args"].get(k) != args.get(k)]
        if changed:
            raise ValueError(f"{last_path}: cannot resume with changed options: "
                             + ", ".join(f"--{k.replace('_', '-')} {ckpt['args'].get(k)!r} -> {args.get(k)!r}" for k in changed))
    elif os.path.exists(last_path):
        raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it or choose another -o")

    idx = _open_index(index, data, out, main)
    check_index_matches(idx, data)
    if resume and ckpt.get("index_hash") != idx.content_hash():
        raise ValueError(f"index {idx.path} changed since {last_path} was written; resume needs the same index")
    num_classes, class_names = idx.num_classes, list(idx.class_names)
    for v in val:
        # Before the first step: a bad validation set must not cost an epoch.
        check_classes(v, num_classes, class_names, f"the index {idx.path}")
        v.check(num_classes)
    if pseudo_loss == "soft-topk" and not any(d.has_topk for d in idx.datasets):
        raise ValueError("--pseudo-loss soft-topk needs soft labels: none of the index's sources holds top-k "
                         "members (write pseudo labels with `csst label --topk K`)")

    # -- model, optimiser, loader ------------------------------------------------------
    torch.manual_seed(seed)
    np.random.seed(seed)
    net = build_model(model, num_classes)
    if init and not resume:
        missing, unexpected = load_init(net, init)
        if main:
            log(f"--init {init}: {len(missing)} missing, {len(unexpected)} unexpected keys"
                + (f" (missing e.g. {missing[:3]})" if missing else ""))
    net.to(dev)
    if world > 1 and dev.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    base_lr = lr if lr is not None else (0.002 if init else 0.02)
    optimizer = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    dtype = amp_dtype(amp, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loader = CropLoader(idx, crop=crop, batch_size=batch_size, epochs=epochs, schedule=schedule, sizes=sizes,
                        strategy=sampling, seed=seed, workers=workers, rank=rank, world_size=world,
                        length=length, source_weights=source_weights, p=p, temperature=temperature,
                        pin_memory=dev.type == "cuda", topk=pseudo_loss == "soft-topk", skip_bad=max_bad_samples > 0,
                        reuse_buffers=True)  # each batch goes to the device within its step
    bad_rows = set()
    total_iters = loader.total_iterations()
    iteration, best_miou, stats = 0, -1.0, _new_stats()
    if ckpt is not None:
        _unwrap(net).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        loader.load_state_dict(ckpt["loader"])
        iteration, best_miou = ckpt["iteration"], ckpt.get("best_miou", -1.0)
        stats = ckpt.get("epoch_stats") or stats  # a mid-epoch checkpoint carries its epoch's running figures
        torch.set_rng_state(ckpt["rng"])
        if ckpt.get("cuda_rng") is not None and dev.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
        if main:
            log(f"resumed {last_path} at epoch {loader.epoch + 1}, iteration {iteration}")

    def checkpoint(epoch_done, record=None):
        """Everything a resumed run needs, written atomically to last.pt (rank 0)."""
        return {"model": _unwrap(net).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch_done, "iteration": iteration,
                "loader": loader.state_dict(), "args": args, "num_classes": num_classes,
                "class_names": class_names, "index_hash": idx.content_hash(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "best_miou": best_miou, "metrics": record, "epoch_stats": None if record else dict(stats)}

    val_samples = _val_samples(val) if val else None
    metrics_path = os.path.join(out, "metrics.jsonl")
    trace_file = open(os.path.join(out, f"trace-rank{rank}.jsonl"), "a") if trace else None
    board = _tensorboard(out) if tensorboard and main else None
    if main and not resume:
        with open(os.path.join(out, "args.json"), "w") as f:
            json.dump(args, f, indent=1, default=str)
    stop = _StopFlag()
    record = None
    try:
        for epoch in range(loader.epoch, epochs):
            loader.set_epoch(epoch)
            size, bsz = loader.crop_and_batch(epoch)
            net.train()
            steps_total = loader.batches_in_epoch(epoch)
            batches = iter(loader)
            while True:
                # -- one step: wait for a batch (data_s), then compute (step_s) --
                t_wait = time.perf_counter()
                try:
                    batch = next(batches, None)
                except ValueError as e:
                    # A worker's error arrives with its traceback in the message: keep its last line.
                    raise ValueError(str(e).strip().splitlines()[-1].removeprefix("ValueError: ")) from None
                if batch is None:
                    break
                t_step = time.perf_counter()
                if batch.get("bad"):
                    _record_bad(out, batch.pop("bad"), bad_rows, max_bad_samples, rank)
                batch.pop("bad", None)
                lr_now = poly_lr(base_lr, iteration, total_iters, power)
                for group in optimizer.param_groups:
                    group["lr"] = lr_now
                x = normalise(batch["image"].to(dev, non_blocking=True))
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    logits = net(x)
                    batch = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
                    batch["label"] = batch["label"].long()  # uint8 through the loader: 8x less to copy
                    value = segmentation_loss(logits.float(), batch, kind=loss, pseudo_loss=pseudo_loss,
                                              mr_weight=mr_weight, min_kept=min_kept)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_value = float(value.detach())  # waits for the device: step_s is the real step time
                iteration += 1
                stats["steps"] += 1
                stats["crops"] += len(x)
                stats["loss_sum"] += loss_value
                stats["data_s"] += t_step - t_wait
                stats["step_s"] += time.perf_counter() - t_step
                if trace_file:
                    trace_file.write(json.dumps({"epoch": epoch, "iteration": iteration,
                                                 "rows": batch["row"].tolist(), "params": _param_hash(net)}) + "\n")
                    trace_file.flush()
                if progress and main:
                    progress(epoch, epochs, loader.batches_done, steps_total, _live(stats, world, lr_now))
                # -- at the step boundary: preemption and periodic checkpoints --
                if signal_at_iteration == iteration:
                    os.kill(os.getpid(), signal.SIGTERM)  # tests: a scheduler's preemption
                stopping = stop.agreed(dev, world)
                if main and (stopping or (save_every and iteration % save_every == 0)):
                    save_checkpoint(checkpoint(epoch), last_path)  # mid-epoch: the loader state says where
                if stopping:
                    if world > 1:
                        dist.barrier()
                    raise Preempted(last_path, iteration, stop.signum or signal.SIGTERM)
                if kill_at_iteration == iteration:
                    os.kill(os.getpid(), signal.SIGKILL)  # tests: a real kill at an arbitrary step
            # -- end of epoch: metrics, validation, checkpoints --
            # The rate of the epoch's last step, from the iteration count: a run resumed right after that
            # step takes none in this epoch.
            last_lr = poly_lr(base_lr, iteration - 1, total_iters, power) if stats["steps"] else None
            record = _epoch_record(epoch, iteration, size, bsz, stats, last_lr, dev, world)
            stats = _new_stats()
            if val_samples is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs):
                result = evaluate(_unwrap(net), val_samples(), num_classes, dev, crop=val_crop, amp_dtype=dtype,
                                  rank=rank, world_size=world)
                record.update(val_miou=result["miou"], val_iou=result["iou"])
                if main and on_validation:
                    on_validation(epoch, result, class_names, epoch + 1 == epochs)
            if main:
                improved = record.get("val_miou") is not None and record["val_miou"] > best_miou
                if improved:
                    best_miou = record["val_miou"]
                state = checkpoint(epoch + 1, record)
                save_checkpoint(state, last_path)
                if improved or (val_samples is None and epoch + 1 == epochs):
                    save_checkpoint(state, best_path)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if board:
                    _board_scalars(board, record, class_names)
                log(_summary(record))
            if world > 1:
                dist.barrier()
            if kill_after_epoch is not None and epoch + 1 == kill_after_epoch:
                os.kill(os.getpid(), signal.SIGKILL)  # tests: a real kill right after a checkpoint
    finally:
        stop.restore()
        if trace_file:
            trace_file.close()
        if board:
            board.close()
    if main and not os.path.exists(best_path) and os.path.exists(last_path):
        # No validation improvement ever recorded (e.g. NaN mIoU): keep a usable best.pt.
        save_checkpoint(load_checkpoint(last_path), best_path)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record if main else None


def _record_bad(out, bad, seen, limit, rank):
    """Append skipped samples to OUT/bad_samples.jsonl; more distinct ones than `limit` stop the run."""
    with open(os.path.join(out, "bad_samples.jsonl"), "a") as f:
        for b in bad:
            f.write(json.dumps({**b, "rank": rank}) + "\n")
            seen.add(b["row"])
    if len(seen) > limit:
        raise ValueError(f"{len(seen)} samples could not be read, more than --max-bad-samples {limit} "
                         f"(listed in {os.path.join(out, 'bad_samples.jsonl')}); the last: {bad[-1]['reason']}")


def _new_stats():
    return {"steps": 0, "crops": 0, "loss_sum": 0.0, "data_s": 0.0, "step_s": 0.0}


def _live(stats, world, lr):
    """What the progress bar shows: mean loss, learning rate, crops/s and the share of time spent waiting for data."""
    busy = stats["data_s"] + stats["step_s"]
    return {"loss": stats["loss_sum"] / max(stats["steps"], 1), "lr": lr,
            "crops_per_s": stats["crops"] * world / max(busy, 1e-9), "data_wait": stats["data_s"] / max(busy, 1e-9)}


def _epoch_record(epoch, iteration, size, bsz, stats, lr, dev, world):
    """One line of metrics.jsonl; loss and times are means over ranks."""
    loss = _mean_over_ranks(stats["loss_sum"] / max(stats["steps"], 1), dev, world)
    data_s = _mean_over_ranks(stats["data_s"], dev, world)
    step_s = _mean_over_ranks(stats["step_s"], dev, world)
    elapsed = data_s + step_s
    return {"epoch": epoch + 1, "iteration": iteration, "crop": size, "batch": bsz, "loss": loss, "lr": lr,
            "crops": stats["crops"] * world, "epoch_s": elapsed, "crops_per_s": stats["crops"] * world / max(elapsed, 1e-9),
            "data_s": data_s, "step_s": step_s, "data_wait_fraction": data_s / max(elapsed, 1e-9)}


class _StopFlag:
    """Set by STOP_SIGNALS; every rank stops at the same step boundary (the flag is all-reduced)."""

    def __init__(self):
        self.signum = None
        self.previous = {}
        for s in STOP_SIGNALS:
            try:
                self.previous[s] = signal.signal(s, self._set)
            except ValueError:  # not the main thread: leave the handlers alone
                pass

    def _set(self, signum, frame):
        self.signum = self.signum or signum

    def agreed(self, dev, world):
        if world == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _tensorboard(out):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(os.path.join(out, "tb"))


def _board_scalars(board, record, class_names):
    step = record["epoch"]
    for k in ("loss", "lr", "crops_per_s", "data_wait_fraction", "data_s", "step_s"):
        if record.get(k) is not None:
            board.add_scalar(f"train/{k}", record[k], step)
    if record.get("val_miou") is not None:
        board.add_scalar("val/miou", record["val_miou"], step)
    for name, v in zip(class_names, record.get("val_iou") or []):
        if v is not None:
            board.add_scalar(f"val/iou/{name}", v, step)
    board.flush()


def _open_index(index, data, out, main):
    if index is None:
        if not data:
            raise ValueError("give --index INDEX, or --data SRC... to build an index in the run folder")
        index = os.path.join(out, "index.zarr")
        if main and not os.path.exists(index):
            from csst_data.index import build_index

            build_index(list(data), index)
        if dist.is_initialized():
            dist.barrier()
    return CentroidIndex.open(index)


def _val_samples(val):
    """A function that iterates every validation sample (images and labels), source after source."""
    return lambda: (s for v in val for s in v.iter(images=True, labels=True))


def _mean_over_ranks(value, dev, world):
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item() / world)


def _summary(r):
    text = (f"epoch {r['epoch']}: loss {r['loss']:.4f}, crop {r['crop']} x batch {r['batch']}, "
            f"{r['crops_per_s']:.1f} crops/s, {r['epoch_s']:.1f} s")
    if "val_miou" in r:
        text += ", val mIoU " + ("n/a" if r["val_miou"] is None else f"{100 * r['val_miou']:.2f}")
    return text
