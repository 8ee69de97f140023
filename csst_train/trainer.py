"""`csst train`: one readable training loop for teacher and student.

Single process (CPU or one GPU) or several under torchrun (DDP; gloo on CPU,
nccl on CUDA). SGD with a poly learning rate per iteration over the whole
schedule, class-balanced crops from `csst_data.loader`, optional AMP, an
atomic `last.pt` every epoch, `best.pt` by validation mIoU, JSON-lines
metrics, and exact resumption.

`train(cfg)` is `setup` (checks, model, optimiser, loader, a resumed state),
then per epoch `train_one_epoch` and `end_epoch` (`validate`, checkpoints,
metrics), all over one `Run`. `train_step` (step.py) is the optimiser step
itself, the one `csst bench train` times too. Callers watch a run through callbacks
(`log`, `progress`, `on_validation` on rank 0; `on_step` on every rank).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist

from csst_data.datasets import as_dataset
from csst_data.index import CentroidIndex
from csst_data.store.locks import OutputLock
from csst_data.loader.confidence import confidence_floor
from csst_data.loader.crop_loader import CropLoader
from csst_data.loader.options import LoaderOptions
from csst_data.workers import rank_world
from csst_train.config import TrainConfig
from csst_train.checkpoints import load_checkpoint, load_weights, save_checkpoint
from csst_train.distributed import amp_dtype, setup_distributed
from csst_train.evaluate import EvalOptions, check_classes, evaluate
from csst_train.models import build_model, init_from, normalisation
from csst_train.online import make_online, unlabeled_batches
from csst_train.step import Step, train_step, unwrap

# Options that must not change when a run is resumed.
_RESUME_FIXED = ("model", "epochs", "crop", "batch_size", "sampling", "schedule", "sizes", "length",
                 "seed", "loss", "pseudo_loss", "lr", "source_weights", "min_confidence", "class_fraction",
                 "unlabeled", "online_teacher", "online_threshold", "online_weight", "ema_decay")


def poly_lr(base_lr: float, iteration: int, total: int, power: float = 0.9) -> float:
    """The poly policy: base_lr * (1 - iteration / total) ** power."""
    return base_lr * (1.0 - min(iteration, total) / max(total, 1)) ** power


def check_index_matches(index: CentroidIndex, data: Sequence) -> None:
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


@dataclass(frozen=True)
class StepInfo:
    """What `on_step` gets after every optimiser step, on every rank."""

    epoch: int               # 0-based
    iteration: int           # the global iteration this step completed (1 after the first)
    batch: dict              # the loader's batch, on the host ("row": the index rows of its crops)
    model: torch.nn.Module   # the model as trained (DDP-wrapped under torchrun)
    rank: int


@dataclass(frozen=True)
class Callbacks:
    """Where a run reports: `log` and `progress`, `on_validation` on rank 0; `on_step` on every rank."""

    log: Callable[[str], None] = print
    progress: Callable[[int, int, int, int, dict], None] | None = None
    on_validation: Callable[[int, dict, list, bool], None] | None = None
    on_step: Callable[[StepInfo], None] | None = None


def train(cfg: TrainConfig, log: Callable[[str], None] = print, progress: Callable | None = None,
          on_validation: Callable | None = None, on_step: Callable[[StepInfo], None] | None = None) -> dict | None:
    """Train a segmentation model as `cfg` says; returns the last epoch's metrics dict (rank 0) or None.

    On rank 0, `log(line)` gets a summary per epoch, `progress(epoch, epochs, step, steps,
    info)` is called after every step (info: loss, lr, crops_per_s, data_wait), and
    `on_validation(epoch, result, class_names, last)` after every validation. On every rank,
    `on_step(StepInfo)` is called after every optimiser step, before the step boundary's
    stop check and periodic checkpoint.
    """
    if cfg.out is None:
        raise ValueError("no run folder given (out)")
    rank, _ = rank_world()
    # One run per folder: rank 0 (the only writer) holds its lock.
    with OutputLock(cfg.out, ".lock") if rank == 0 else contextlib.nullcontext():
        return _train(cfg, Callbacks(log, progress, on_validation, on_step))


class Preempted(Exception):
    """Training stopped on SIGTERM, SIGINT or SIGUSR1 after writing last.pt; `--resume` continues it."""

    def __init__(self, path: str, iteration: int, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at iteration {iteration}; "
                         f"{path} holds the run, continue it with --resume")
        self.path, self.iteration, self.signum = path, iteration, signum


# Signals that stop a run at the next step boundary (SLURM and Kubernetes send SIGTERM; SLURM's
# --signal can send SIGUSR1 ahead of the kill; SIGINT is Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


# -- the run: set-up, epochs, validation, checkpoints ----------------------------------------------

@dataclass
class Run:
    """What the functions of one run share; `iteration`, `best_miou`, `stats` and `board` change as it goes."""

    cfg: TrainConfig
    args: dict                  # the options as args.json and every checkpoint record them
    rank: int
    world: int
    dev: torch.device
    idx: CentroidIndex
    step: Step
    loader: CropLoader
    base_lr: float
    total_iters: int            # iterations of the whole schedule (the poly rate's horizon)
    val_samples: Callable | None = None  # iterates the validation samples; None: no validation
    unlabeled: list | None = None  # pseudo_loss "online": the unlabelled images [(key, ref)]
    board: object = None        # TensorBoard writer (rank 0, --tensorboard)
    iteration: int = 0
    best_miou: float = -1.0
    stats: dict = field(default_factory=lambda: _new_stats())  # this epoch's running figures
    bad_rows: set = field(default_factory=set)  # distinct unreadable samples skipped so far

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def net(self) -> torch.nn.Module:
        return self.step.net

    @property
    def last_path(self) -> str:
        return os.path.join(self.cfg.out, "last.pt")

    @property
    def best_path(self) -> str:
        return os.path.join(self.cfg.out, "best.pt")

    @property
    def num_classes(self) -> int:
        return self.idx.num_classes

    @property
    def class_names(self) -> list:
        return list(self.idx.class_names)


def run_args(cfg: TrainConfig, data: list, val: list) -> dict:
    """The run's options as args.json and the checkpoints record them: the config's fields, with the
    training and validation sources by name."""
    args = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    args["data"] = [d.name for d in data]
    args["val"] = [v.name for v in val]
    args["unlabeled"] = [as_dataset(u, role="images").name for u in cfg.unlabeled]
    return args


def _train(cfg, cb):
    run = setup(cfg, cb.log)
    stop = _StopFlag()
    record = None
    try:
        for epoch in range(run.loader.epoch, cfg.epochs):
            size, bsz = train_one_epoch(run, epoch, stop, cb)
            record = end_epoch(run, epoch, size, bsz, cb)
    finally:
        stop.restore()
        if run.board:
            run.board.close()
    if run.main and not os.path.exists(run.best_path) and os.path.exists(run.last_path):
        # No validation improvement ever recorded (e.g. NaN mIoU): keep a usable best.pt.
        save_checkpoint(load_checkpoint(run.last_path), run.best_path)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record if run.main else None


def setup(cfg: TrainConfig, log: Callable[[str], None] = print) -> Run:
    """Check the options against the run folder and the index, then build the model, optimiser and loader
    (restored from last.pt with `resume`); rank 0 writes args.json for a new run."""
    data = [as_dataset(d) for d in cfg.data]
    val = [as_dataset(v) for v in ([cfg.val] if isinstance(cfg.val, (str, os.PathLike)) else cfg.val or ())]
    args = run_args(cfg, data, val)
    rank, world, dev = setup_distributed(cfg.device)
    os.makedirs(cfg.out, exist_ok=True)
    ckpt = _previous_run(cfg, args)
    idx = _checked_index(cfg, data, val, ckpt, rank == 0)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    net = _model(cfg, idx.num_classes, dev, world, rank == 0, log)
    base_lr = cfg.lr if cfg.lr is not None else (0.002 if cfg.init else 0.02)
    optimizer = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dtype = amp_dtype(cfg.amp, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    online, unlabeled = _online(cfg, net)
    step = Step(net, optimizer, scaler, dev, dtype, loss=cfg.loss, pseudo_loss=cfg.pseudo_loss,
                mr_weight=cfg.mr_weight, min_kept=cfg.min_kept, num_classes=idx.num_classes, model_name=cfg.model,
                stats=normalisation(cfg.model, cfg.pretrained), channels_last=cfg.channels_last, online=online)
    loader = _loader(cfg, idx, rank, world, dev, _confidence_floor(cfg, idx, rank == 0, log))
    run = Run(cfg, args, rank, world, dev, idx, step, loader, base_lr, loader.total_iterations(),
              val_samples=_val_samples(val) if val else None, unlabeled=unlabeled)
    if ckpt is not None:
        _restore(run, ckpt, log)
    run.board = _tensorboard(cfg.out) if cfg.tensorboard and run.main else None
    if run.main and not cfg.resume:
        with open(os.path.join(cfg.out, "args.json"), "w") as f:
            json.dump(args, f, indent=1, default=str)
    return run


def _previous_run(cfg, args):
    """The checkpoint to resume (None for a new run); refuses changed options, or a run folder in use."""
    last_path = os.path.join(cfg.out, "last.pt")
    if not cfg.resume:
        if os.path.exists(last_path):
            raise FileExistsError(f"{cfg.out} already holds a run (last.pt); pass --resume to continue it or choose another -o")
        return None
    ckpt = load_checkpoint(last_path)
    changed = [k for k in _RESUME_FIXED if ckpt["args"].get(k) != args.get(k)]
    if changed:
        raise ValueError(f"{last_path}: cannot resume with changed options: "
                         + ", ".join(f"--{k.replace('_', '-')} {ckpt['args'].get(k)!r} -> {args.get(k)!r}" for k in changed))
    return ckpt


def _checked_index(cfg, data, val, ckpt, main):
    """The run's index, checked against its sources, the resumed run and the validation sets."""
    idx = _open_index(cfg.index, data, cfg.out, main)
    check_index_matches(idx, data)
    if ckpt is not None and ckpt.get("index_hash") != idx.content_hash():
        raise ValueError(f"index {idx.path} changed since {os.path.join(cfg.out, 'last.pt')} was written; "
                         "resume needs the same index")
    for v in val:
        # Before the first step: a bad validation set must not cost an epoch.
        check_classes(v, idx.num_classes, list(idx.class_names), f"the index {idx.path}")
        v.check(idx.num_classes)
    if idx.num_images and not np.asarray(idx.class_pixels).any():
        # Every pixel is ignore (255): centroid sampling has no crop to draw, uniform trains to loss 0.
        raise ValueError(f"the index {idx.path} has no labelled pixel: every label of "
                         f"{', '.join(d.name for d in idx.datasets)} is ignore (255), so there is nothing to learn "
                         "(check the label format: --reduce-zero-label, a spec's label_map, or the mask folder)")
    if cfg.pseudo_loss == "soft-topk" and not any(d.has_topk for d in idx.datasets):
        raise ValueError("--pseudo-loss soft-topk needs soft labels: none of the index's sources holds top-k "
                         "members (write pseudo labels with `csst label --topk K`)")
    return idx


def _model(cfg, num_classes, dev, world, main, log):
    """The model on `dev`, from `init` for a new run; SyncBatchNorm on CUDA and DDP under torchrun."""
    # A resumed run's weights come from last.pt: nothing to fetch.
    net = build_model(cfg.model, num_classes, None if cfg.resume else cfg.pretrained)
    if cfg.init and not cfg.resume:
        report = init_from(net, cfg.init)
        if main:
            log(report.summary())
    net.to(dev, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    if cfg.compile:
        net = torch.compile(net)
    if world > 1 and dev.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    return net


def _online(cfg, net):
    """(Online, the unlabelled images) for pseudo loss "online"; (None, None) otherwise."""
    if (cfg.pseudo_loss == "online") != bool(cfg.unlabeled):
        raise ValueError("--pseudo-loss online and --unlabeled go together: the unlabelled images are what the "
                         "network labels as it trains")
    if not cfg.unlabeled:
        return None, None
    from csst_train.images import list_inputs

    online = make_online(net, cfg.online_teacher, cfg.online_threshold, cfg.online_weight, cfg.ema_decay)
    return online, list_inputs(cfg.unlabeled)


def _confidence_floor(cfg, idx, main, log):
    """The per-class floor of stored teacher confidence that pseudo pixels need (None: all count)."""
    floor = confidence_floor(idx, cfg.min_confidence, cfg.class_fraction)
    if floor is not None and main:
        names = list(idx.class_names)
        log("pseudo labels count where the teacher's confidence is at least: "
            + ", ".join(f"{n} {floor[c] / 255:.2f}" for c, n in enumerate(names)))
    return floor


def _loader(cfg, idx, rank, world, dev, floor=None):
    return CropLoader(idx, LoaderOptions(
        crop=cfg.crop, batch_size=cfg.batch_size, epochs=cfg.epochs, schedule=cfg.schedule,
        sizes=cfg.sizes, strategy=cfg.sampling, seed=cfg.seed, workers=cfg.workers, rank=rank,
        world_size=world, length=cfg.length, source_weights=cfg.source_weights, p=cfg.p,
        temperature=cfg.temperature, pin_memory=dev.type == "cuda", topk=cfg.pseudo_loss == "soft-topk",
        skip_bad=cfg.max_bad_samples > 0, confidence_floor=floor,
        reuse_buffers=True))  # each batch goes to the device within its step


def _restore(run, ckpt, log):
    """Model, optimiser, scaler, loader position, counters and RNG state from a checkpoint."""
    load_weights(unwrap(run.net), ckpt["model"], run.last_path, ckpt["args"].get("model", run.cfg.model))
    run.step.optimizer.load_state_dict(ckpt["optimizer"])
    run.step.scaler.load_state_dict(ckpt["scaler"])
    if run.step.online is not None and run.step.online.ema is not None:
        run.step.online.ema.load_state_dict(ckpt["ema"])
    run.loader.load_state_dict(ckpt["loader"])
    run.iteration, run.best_miou = ckpt["iteration"], ckpt.get("best_miou", -1.0)
    saved_world = ckpt["loader"].get("world_size", run.world)
    if run.loader.offset or saved_world != run.world:
        # Elastic resume: the per-rank batch stays, so the step count of what is left changes with the
        # number of processes; the poly schedule goes on from where these steps end it at zero.
        run.iteration = run.total_iters - run.loader.iterations_left()
        if run.main:
            log(f"resuming a run of {saved_world} process(es) on {run.world}: the epoch goes on from plan "
                f"position {run.loader.offset} (per-process batch unchanged)")
    run.stats = ckpt.get("epoch_stats") or run.stats  # a mid-epoch checkpoint carries its epoch's running figures
    torch.set_rng_state(ckpt["rng"])
    if ckpt.get("cuda_rng") is not None and run.dev.type == "cuda":
        torch.cuda.set_rng_state(ckpt["cuda_rng"], run.dev)
    if run.main:
        log(f"resumed {run.last_path} at epoch {run.loader.epoch + 1}, iteration {run.iteration}")


def checkpoint(run: Run, epoch_done: int, record: dict | None = None) -> dict:
    """Everything a resumed run needs, as last.pt holds it (`record`: the epoch's metrics, at an epoch's end)."""
    dev = run.dev
    return {"model": unwrap(run.net).state_dict(), "optimizer": run.step.optimizer.state_dict(),
            "scaler": run.step.scaler.state_dict(), "epoch": epoch_done, "iteration": run.iteration,
            "loader": run.loader.state_dict(), "args": run.args, "num_classes": run.num_classes,
            "class_names": run.class_names, "index_hash": run.idx.content_hash(), "rng": torch.get_rng_state(),
            "normalisation": {"mean": list(run.step.stats[0]), "std": list(run.step.stats[1])},
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
            "best_miou": run.best_miou, "metrics": record, "epoch_stats": None if record else dict(run.stats),
            "ema": run.step.online.ema.state_dict() if run.step.online and run.step.online.ema else None}


def train_one_epoch(run: Run, epoch: int, stop: _StopFlag, cb: Callbacks) -> tuple[int, int]:
    """The steps of one epoch (from the loader's position); returns its (crop size, batch size)."""
    cfg, loader = run.cfg, run.loader
    loader.set_epoch(epoch)
    size, bsz = loader.crop_and_batch(epoch)
    run.net.train()
    steps_total = loader.batches_in_epoch(epoch)
    unlabeled = None
    if run.unlabeled:  # this epoch's unlabelled crops, one batch per iteration from the run's position
        unlabeled = iter(unlabeled_batches(run.unlabeled, cfg.seed, size, bsz, run.iteration,
                                           steps_total - loader.batches_done, cfg.workers))
    for batch, t_wait, t_step in _timed_batches(loader):
        if unlabeled is not None:
            batch["unlabeled"] = next(unlabeled)
        if batch.get("bad"):
            _record_bad(cfg.out, batch.pop("bad"), run.bad_rows, cfg.max_bad_samples, run.rank)
        batch.pop("bad", None)
        lr_now = poly_lr(run.base_lr, run.iteration, run.total_iters, cfg.power)
        for group in run.step.optimizer.param_groups:
            group["lr"] = lr_now
        loss_value = train_step(run.step, batch)
        run.iteration += 1
        _count(run.stats, len(batch["image"]), loss_value, t_step - t_wait, time.perf_counter() - t_step)
        if cb.on_step:
            cb.on_step(StepInfo(epoch, run.iteration, batch, run.net, run.rank))
        if cb.progress and run.main:
            cb.progress(epoch, cfg.epochs, loader.batches_done, steps_total, _live(run.stats, run.world, lr_now))
        _step_boundary(run, epoch, stop)
    return size, bsz


def _timed_batches(loader):
    """The epoch's batches, each with the clock when the wait for it began and when it arrived."""
    batches = iter(loader)
    while True:
        t_wait = time.perf_counter()
        try:
            batch = next(batches, None)
        except ValueError as e:
            # A worker's error arrives with its traceback in the message: keep its last line.
            raise ValueError(str(e).strip().splitlines()[-1].removeprefix("ValueError: ")) from None
        if batch is None:
            return
        yield batch, t_wait, time.perf_counter()


def _count(stats, crops, loss_value, data_s, step_s):
    stats["steps"] += 1
    stats["crops"] += crops
    stats["loss_sum"] += loss_value
    stats["data_s"] += data_s
    stats["step_s"] += step_s


def _step_boundary(run, epoch, stop):
    """Between steps: a stop signal (agreed by every rank) or --save-every writes last.pt mid-epoch."""
    stopping = stop.agreed(run.dev, run.world)
    every = run.cfg.save_every
    if run.main and (stopping or (every and run.iteration % every == 0)):
        save_checkpoint(checkpoint(run, epoch), run.last_path)  # mid-epoch: the loader state says where
    if stopping:
        if run.world > 1:
            dist.barrier()
        raise Preempted(run.last_path, run.iteration, stop.signum or signal.SIGTERM)


def validate(run: Run) -> dict:
    """mIoU and per-class IoU of the model on the validation sources (the images split over ranks)."""
    options = EvalOptions(crop=run.cfg.val_crop, amp_dtype=run.step.dtype, rank=run.rank, world_size=run.world,
                          stats=run.step.stats)
    return evaluate(unwrap(run.net), run.val_samples(), run.num_classes, run.dev, options)


def end_epoch(run: Run, epoch: int, size: int, bsz: int, cb: Callbacks) -> dict:
    """The epoch's metrics record, validation when due, and on rank 0 last.pt, best.pt and metrics.jsonl."""
    cfg = run.cfg
    # The rate of the epoch's last step, from the iteration count: a run resumed right after that
    # step takes none in this epoch.
    last_lr = poly_lr(run.base_lr, run.iteration - 1, run.total_iters, cfg.power) if run.stats["steps"] else None
    record = _epoch_record(run, epoch, size, bsz, last_lr)
    run.stats = _new_stats()
    if run.val_samples is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
        result = validate(run)
        record.update(val_miou=result["miou"], val_iou=result["iou"])
        if run.main and cb.on_validation:
            cb.on_validation(epoch, result, run.class_names, epoch + 1 == cfg.epochs)
    if run.main:
        _save_epoch(run, epoch, record, cb.log)
    if run.world > 1:
        dist.barrier()
    return record


def _save_epoch(run, epoch, record, log):
    improved = record.get("val_miou") is not None and record["val_miou"] > run.best_miou
    if improved:
        run.best_miou = record["val_miou"]
    state = checkpoint(run, epoch + 1, record)
    save_checkpoint(state, run.last_path)
    if improved or (run.val_samples is None and epoch + 1 == run.cfg.epochs):
        save_checkpoint(state, run.best_path)
    with open(os.path.join(run.cfg.out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
    if run.board:
        _board_scalars(run.board, record, run.class_names)
    log(_summary(record))


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


def _epoch_record(run, epoch, size, bsz, lr):
    """One line of metrics.jsonl; loss and times are means over ranks."""
    stats, dev, world = run.stats, run.dev, run.world
    loss = _mean_over_ranks(stats["loss_sum"] / max(stats["steps"], 1), dev, world)
    data_s = _mean_over_ranks(stats["data_s"], dev, world)
    step_s = _mean_over_ranks(stats["step_s"], dev, world)
    elapsed = data_s + step_s
    return {"epoch": epoch + 1, "iteration": run.iteration, "crop": size, "batch": bsz, "loss": loss, "lr": lr,
            "crops": stats["crops"] * world, "epoch_s": elapsed, "crops_per_s": stats["crops"] * world / max(elapsed, 1e-9),
            "data_s": data_s, "step_s": step_s, "data_wait_fraction": data_s / max(elapsed, 1e-9)}


class _StopFlag:
    """Set by STOP_SIGNALS; every rank stops at the same step boundary (the flag is all-reduced)."""

    def __init__(self) -> None:
        self.signum = None
        self.previous = {}
        for s in STOP_SIGNALS:
            try:
                self.previous[s] = signal.signal(s, self._set)
            except ValueError:  # not the main thread: leave the handlers alone
                pass

    def _set(self, signum, frame):
        self.signum = self.signum or signum

    def agreed(self, dev: torch.device, world: int) -> bool:
        if world == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
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
