"""Teacher inference that writes pseudo-label shards (`csst label`, paper Sec. 3.1).

A trained teacher predicts hard pseudo labels (argmax over classes) for a large
set of unlabelled images. Images are decoded in DataLoader workers
(images.py), the model runs batched on the device, and label compression plus
tar writing run in background threads (csst_data/runs/background.py), so the
model rarely waits on I/O. On the CPU, argmax and confidence come from one
fused numba pass over the logits, and the background work runs at a lower
priority so it does not preempt the model's threads.

Ranks, resuming and failures work as in every shard-writing run
(csst_data/runs/skeleton.py): each rank labels the keys that hash to it, a
rerun of the same command resumes, and every input key ends up in the output once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np
import torch

from csst_data import IGNORE
from csst_data.jpeg.structure import exif_orientation
from csst_data.runs.background import BackgroundWriter
from csst_data.runs.pack import PackOptions, pack_image
from csst_data.runs.skeleton import RunSpec, ShardRun, ranked_output, todo_of
from csst_data.datasets.shardset import CONFIDENCE_MEMBER
from csst_data.store.codecs import encode_confidence, encode_json, encode_label, encode_topk
from csst_data.store.shards import SetInfo, file_sha256
from csst_data.workers import rank_world
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import pick_device
from csst_train.images import LoadedImage, default_workers, image_loader, ref_name, same_size_runs
from csst_train.run_configs import LabelConfig, TestTime, size_list

# Niceness added to decode workers and writer threads when the model runs on the CPU.
BACKGROUND_NICE = 10
# Options that change what is stored: a resumed run must use the same ones.
CONTENT_OPTIONS = ("scales", "flip", "crop", "stride", "topk", "min_confidence", "confidence", "amp", "keep_bytes",
                   "quality", "lossless")


# -- one labelled sample -----------------------------------------------------------------
@dataclass(frozen=True)
class Predicted:
    """One image and what the teacher made of it, ready to be encoded."""

    key: str
    source: str                  # where the image came from (images.ref_name)
    data: bytes                  # the image file's bytes
    suffix: str                  # "jpg" or "png"
    label: np.ndarray            # uint8 H x W class ids, 255 = ignore
    confidence: float            # mean top probability over the image
    topk_idx: np.ndarray | None = None
    topk_prob: np.ndarray | None = None
    confidence_map: np.ndarray | None = None  # uint8 H x W round(top probability * 255), every pixel


@dataclass(frozen=True)
class Storing:
    """How a sample is stored: the label's class count, and the image (None: its bytes as they are)."""

    num_classes: int
    images: PackOptions | None   # restart-marker JPEGs as `csst pack` writes them


def encode_sample(p: Predicted, how: Storing) -> dict:
    """A prediction -> the sample dict ShardWriter writes (runs in the encoding threads)."""
    hist = np.bincount(p.label.ravel(), minlength=256)
    suffix, data, image = p.suffix, p.data, "kept"
    orientation = exif_orientation(data) if suffix == "jpg" else 1
    if how.images is not None:
        # Restart-marker JPEGs, as `csst pack` writes them (JPEGs transcoded losslessly, the
        # orientation tag reset: the label was predicted on the stored pixels, as every viewer will now show).
        suffix, data, image, _ = pack_image(data, how.images)
    meta = {
        "image": image, "source": p.source, "height": int(p.label.shape[0]), "width": int(p.label.shape[1]),
        "producer": "csst label", "mean_confidence": round(float(p.confidence), 6),
        "class_histogram": hist[:how.num_classes].tolist(), "ignored_pixels": int(hist[IGNORE]),
    }
    if orientation != 1:
        meta["exif_orientation"] = orientation
    sample = {"__key__": p.key, suffix: data, "label.npy.zst": encode_label(p.label, how.num_classes, p.key),
              "json": encode_json(meta)}
    if p.confidence_map is not None:
        sample[CONFIDENCE_MEMBER] = encode_confidence(p.confidence_map)
    if p.topk_idx is not None:
        sample["topk_idx.npy.zst"], sample["topk_prob.npy.zst"] = encode_topk(p.topk_idx, p.topk_prob)
    return sample


# -- from model output to labels ---------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """What the teacher made of a batch of N images."""

    ids: np.ndarray                        # uint8 (N, H, W) class ids, 255 under min_confidence
    mean_confidence: np.ndarray            # (N,) mean top probability per image
    confidence: np.ndarray                 # uint8 (N, H, W) round(top probability * 255)
    topk_idx: np.ndarray | None = None     # uint8 (N, K, H, W) with topk
    topk_prob: np.ndarray | None = None    # uint8 (N, K, H, W) round(p * 255) with topk


# Cephes exp2f: 2^f for f in [-0.5, 0.5] to float32 precision (relative error ~1e-7).
_EXP2_POLY = (1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3,
              5.550332471162809e-2, 2.402264791363012e-1, 6.931472028550421e-1)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _argmax_confidence(logits, min_confidence, labels, row_confidence, confidence):
    """Labels, per-pixel confidence (uint8 round(p * 255)) and per-row confidence sums from
    logits (N, C, H, W) float32, in one pass.

    The confidence of a pixel is its top softmax probability, 1 / sum_c exp(l_c - max).
    libm's exp does not vectorise, so exp(d) = 2^n * 2^f is computed here with
    the exponent n written as float bits and a polynomial for 2^f; every loop
    then vectorises and this is ~10x faster than softmax + max in torch on the
    CPU. Ties go to the lowest class, as in torch.
    """
    n, c, h, w = logits.shape
    p0, p1, p2, p3, p4, p5 = _EXP2_POLY
    for r in numba.prange(n * h):
        i = r // h
        y = r - i * h
        top = logits[i, 0, y].copy()
        best = np.zeros(w, np.uint8)
        for k in range(1, c):
            row = logits[i, k, y]
            for x in range(w):
                better = row[x] > top[x]
                top[x] = row[x] if better else top[x]
                best[x] = k if better else best[x]
        total = np.zeros(w, np.float32)
        bits = np.empty(w, np.int32)
        scale = bits.view(np.float32)  # 2^n, assembled from its exponent bits
        frac = np.empty(w, np.float32)
        for k in range(c):
            row = logits[i, k, y]
            for x in range(w):
                # exp(-87) is the smallest normal float32; below it the term is nil.
                t = max(row[x] - top[x], np.float32(-87.0)) * np.float32(1.4426950408889634)
                whole = np.floor(t + np.float32(0.5))
                f = t - whole
                q = ((((np.float32(p0) * f + np.float32(p1)) * f + np.float32(p2)) * f + np.float32(p3)) * f
                     + np.float32(p4)) * f + np.float32(p5)
                frac[x] = q * f + np.float32(1.0)
                bits[x] = (np.int32(whole) + 127) << 23
            for x in range(w):
                total[x] += frac[x] * scale[x]
        acc = 0.0
        for x in range(w):
            conf = 1.0 / total[x]
            acc += conf
            confidence[i, y, x] = np.uint8(min(conf * np.float32(255.0) + np.float32(0.5), np.float32(255.0)))
            labels[i, y, x] = IGNORE if conf < min_confidence else best[x]
        row_confidence[i, y] = acc


def _from_logits_cpu(model, x, num_classes, min_confidence):
    from csst_train.inference import logits as model_logits

    with torch.no_grad():
        logits = model_logits(model, x, num_classes).contiguous().numpy()
    n, _, h, w = logits.shape
    labels = np.empty((n, h, w), np.uint8)
    rows = np.empty((n, h), np.float64)
    confidence = np.empty((n, h, w), np.uint8)
    _argmax_confidence(logits, -1.0 if min_confidence is None else float(min_confidence), labels, rows, confidence)
    return Labels(labels, rows.sum(1) / (h * w), confidence)


def _quantised(p):
    """Probabilities -> uint8 round(p * 255) on the host."""
    return (p * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _from_probs(probs, min_confidence, topk):
    conf, lab = probs.max(1)
    lab = lab.to(torch.uint8)
    if min_confidence is not None:
        lab[conf < min_confidence] = IGNORE
    idx = prob = None
    if topk:
        top_p, top_i = probs.topk(topk, dim=1)
        idx, prob = top_i.to(torch.uint8).cpu().numpy(), _quantised(top_p)
    return Labels(lab.cpu().numpy(), conf.double().mean((1, 2)).cpu().numpy(), _quantised(conf.clone()), idx, prob)


def predict_labels(model: torch.nn.Module, x: torch.Tensor, num_classes: int, tta: TestTime = TestTime(),
                   amp_dtype: torch.dtype | None = None, topk: int = 0, min_confidence: float | None = None) -> Labels:
    """Normalised images (N, 3, H, W) -> their `Labels` (class ids, confidence, top-k).

    Labels are the argmax of the class probabilities (averaged over `tta`'s scales
    and flips), 255 where the top probability is below `min_confidence`.
    """
    h, w = x.shape[-2:]
    crop = size_list(tta.crop)
    whole = crop is None or (h <= crop[0] and w <= crop[1])
    if x.device.type == "cpu" and list(tta.scales) == [1.0] and not tta.flip and whole and not topk:
        return _from_logits_cpu(model, x, num_classes, min_confidence)
    from csst_train.inference import predict_probs

    probs = predict_probs(model, x, num_classes, scales=tta.scales, flip=tta.flip, crop=tta.crop, stride=tta.stride,
                          amp_dtype=amp_dtype)
    return _from_probs(probs, min_confidence, topk)


# -- the run -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Teacher:
    """A loaded checkpoint, on its device."""

    model: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    num_classes: int
    class_names: Sequence[str] | None
    stats: tuple                     # the model's input normalisation (mean, std), from its checkpoint


def load_teacher(checkpoint: str, config: LabelConfig) -> Teacher:
    """The checkpoint's model on `config.device`; an error if its classes do not fit the labels or `topk`."""
    from csst_train.checkpoints import checkpoint_stats, model_from_checkpoint

    dev = pick_device(config.device)
    amp_dtype = to_amp_dtype(config.amp, dev)
    model, ckpt = model_from_checkpoint(checkpoint, dev)
    num_classes = int(ckpt["num_classes"])
    if not 0 <= config.topk <= min(num_classes, 255):
        raise ValueError(f"topk must be in 0..{min(num_classes, 255)}, got {config.topk}")
    if num_classes > IGNORE:
        raise ValueError(f"{checkpoint}: {num_classes} classes do not fit uint8 labels with ignore={IGNORE}")
    return Teacher(model, dev, amp_dtype, num_classes, ckpt.get("class_names"), checkpoint_stats(ckpt))


def _check(config):
    if config.batch_size < 1 or config.shard_size < 1:
        raise ValueError("batch_size and shard_size must be positive")
    if config.min_confidence is not None and not 0.0 <= config.min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {config.min_confidence}")


def _producer(checkpoint, c):
    """The manifest's producer record: the checkpoint and every option."""
    options = {
        **c.test_time().record(), "topk": int(c.topk), "min_confidence": c.min_confidence,
        "confidence": bool(c.confidence), "amp": c.amp or "off",
        "shard_size": c.shard_size, "keep_bytes": bool(c.keep_bytes), "quality": int(c.quality),
        "lossless": bool(c.lossless), "batch_size": c.batch_size,
        "inputs": [os.path.abspath(i) if isinstance(i, str) else i for i in c.inputs or []],
    }
    return {"name": "csst label", "checkpoint": os.path.abspath(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint), "options": options}


def _run_fingerprint(items, producer):
    """Hash of the whole input list and the content options: ranks of one run agree on it."""
    sha = hashlib.sha256()
    sha.update(json.dumps({k: producer[k] for k in ("checkpoint_sha256",)}).encode())
    sha.update(json.dumps({k: producer["options"][k] for k in CONTENT_OPTIONS}).encode())
    for key, _ in items:
        sha.update(key.encode("utf-8") + b"\n")
    return sha.hexdigest()


def _fields(mine, config):
    """The member suffixes of this rank's samples."""
    images = sorted({"png" if ref_name(r).lower().endswith(".png") else "jpg" for _, r in mine}) or ["jpg"]
    if not config.keep_bytes and not config.lossless:
        images = ["jpg"]  # PNG inputs are encoded as JPEGs
    return (images + ["label.npy.zst", "json"] + ([CONFIDENCE_MEMBER] if config.confidence else [])
            + (["topk_idx.npy.zst", "topk_prob.npy.zst"] if config.topk else []))


def label(checkpoint: str | os.PathLike, items: Sequence[tuple[str, object]], out_dir: str | os.PathLike,
          config: LabelConfig = LabelConfig(), rank: int | None = None, world_size: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Label `items` ([(key, ref)] from `images.list_inputs`) with the teacher `checkpoint` into `out_dir`.

    Resumes a killed run of the same command. With `world_size` > 1 (or
    torchrun's environment) only this rank's keys are labelled. Unreadable
    images are skipped and appended to OUT_DIR/failed.jsonl (one line per
    failed attempt; a rerun tries them again). `progress(done, total)` is
    called as images finish. Returns a summary dict: labelled, skipped
    (already stored), failed, total, seconds, rank, world_size, merged,
    manifest, shards. One writer per rank and output: a second raises OutputBusy.
    """
    rank, world_size = rank_world(rank, world_size)
    # An object-store URL is written through a local staging folder (csst_data/store/mirror.py).
    with ranked_output(out_dir, rank, world_size) as (folder, mirror, done):
        _check(config)
        teacher = load_teacher(checkpoint, config)
        producer = _producer(checkpoint, config)
        spec = RunSpec(folder, rank, world_size, producer, _run_fingerprint(items, producer),
                       fixed=("checkpoint_sha256",), fixed_options=CONTENT_OPTIONS)
        return done(_label(ShardRun(spec, mirror), teacher, items, config, progress))


def _label(run, teacher, items, config, progress):
    mine = run.mine(items, lambda it: it[0])
    info = SetInfo(num_classes=teacher.num_classes, class_names=teacher.class_names, fields=_fields(mine, config),
                   producer=run.spec.producer, extra={"pseudo": True})
    writer = run.open(info, config.shard_size)
    todo = todo_of(mine, writer, lambda it: it[0])  # keys stored by an earlier run of this rank are skipped
    nice = BACKGROUND_NICE if teacher.device.type == "cpu" else 0
    sink = BackgroundWriter(writer, config.encode_threads or default_workers(), depth=4 * config.batch_size,
                            nice=nice)
    storing = Storing(teacher.num_classes, None if config.keep_bytes else PackOptions(quality=config.quality,
                                                                                      lossless=config.lossless))
    labelling = _Labelling(run, teacher, config, todo, sink, storing)
    if teacher.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    done, total, start = len(mine) - len(todo), len(mine), time.perf_counter()
    if progress:
        progress(done, total)
    try:
        for batch in image_loader(todo, config.batch_size, config.workers, nice):
            labelling.batch(batch)
            done += len(batch)
            if progress:
                progress(done, total)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return run.finish(labelled=len(todo) - run.failed, skipped=len(mine) - len(todo), failed=run.failed,
                      total=total, seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class _Labelling:
    """What labelling a batch needs: the run (failures), the model, and where predictions go."""

    run: ShardRun
    teacher: Teacher
    config: LabelConfig
    todo: list
    sink: BackgroundWriter
    storing: Storing

    def batch(self, batch: list[LoadedImage]) -> None:
        """Predict a batch of loaded images (in runs of one size) and hand the samples to the writer."""
        from csst_train.inference import normalise

        t, c = self.teacher, self.config
        rows = []
        for row in batch:
            if row.error is not None:
                key, ref = self.todo[row.position]
                self.run.fail(key, ref_name(ref), row.error)
            else:
                rows.append(row)
        for run in same_size_runs(rows):
            x = torch.stack([r.image for r in run])
            if t.device.type == "cuda":
                x = x.pin_memory().to(t.device, non_blocking=True)
            out = predict_labels(t.model, normalise(x, t.stats), t.num_classes, c.test_time(), amp_dtype=t.amp_dtype,
                                 topk=c.topk, min_confidence=c.min_confidence)
            for j, r in enumerate(run):
                key, ref = self.todo[r.position]
                self.sink.put(encode_sample, Predicted(
                    key, ref_name(ref), r.data, r.suffix, out.ids[j], out.mean_confidence[j],
                    None if out.topk_idx is None else out.topk_idx[j], None if out.topk_prob is None else out.topk_prob[j],
                    out.confidence[j] if c.confidence else None), self.storing)
