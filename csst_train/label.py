"""Teacher inference that writes pseudo-label shards (`csst label`, paper Sec. 3.1).

A trained teacher predicts hard pseudo labels (argmax over classes) for a large
set of unlabelled images. Images are decoded in DataLoader workers, the model
runs batched on the device, and label compression plus tar writing run in
background threads, so the model rarely waits on I/O. On the CPU, argmax and
confidence come from one fused numba pass over the logits, and the background
work runs at a lower priority so it does not preempt the model's threads.

Ranks, resuming and failures work as in every shard-writing run
(csst_data/shardrun.py): each rank labels the keys that hash to it, a rerun of
the same command resumes, and every input key ends up in the output once.
"""

import concurrent.futures
import functools
import hashlib
import json
import os
import queue
import signal
import threading
import time

import numba
import numpy as np
import torch

from csst_data import IGNORE
from csst_data.datasets import as_dataset, sanitise_key
from csst_data.store.locks import OutputLock
from csst_data.workers import chain, die_with_parent, mp_context
from csst_data.jpeg.structure import exif_orientation
from csst_data.runs.pack import PackOptions, pack_image
from csst_data.store.codecs import decode_image, encode_json, encode_label, encode_topk, is_jpeg, is_png
from csst_data.store.shards import (
    MANIFEST, RangeReader, SetInfo, ShardWriter, file_sha256,
)
from csst_data.store.mirror import close_output, open_output
from csst_data.runs.shardrun import (FAILED, check_resumable, finish_rank, merge_ranks, rank_manifest_name,  # noqa: F401
                                rank_of, rank_prefix, record_failure, start_rank)
from csst_train.distributed import amp_dtype as to_amp_dtype
from csst_train.distributed import dist_env, pick_device

# Test hook: SIGKILL this process after that many samples were written.
KILL_ENV = "CSST_LABEL_KILL_AFTER"
# Niceness added to decode workers and writer threads when the model runs on the CPU.
BACKGROUND_NICE = 10
# Options that change what is stored: a resumed run must use the same ones.
_CONTENT_OPTIONS = ("scales", "flip", "crop", "stride", "topk", "min_confidence", "amp", "keep_bytes", "quality",
                    "lossless")


# -- inputs --------------------------------------------------------------------
def path_key(relpath):
    """Sample key of an image from its path relative to its input folder: the
    extension is dropped and dots, whitespace and path separators become '_'
    (`aachen/aachen_000000_000019_leftImg8bit.png` -> `aachen_aachen_000000_000019_leftImg8bit`)."""
    return sanitise_key(os.path.splitext(relpath)[0])


def list_inputs(inputs=()):
    """Sorted [(key, ref)] of every image to label.

    `inputs` are datasets or SOURCE strings (a bare folder, glob or file is an
    image folder here: keys are paths below it, '/' and '.' -> '_'). A ref is a
    file path, or (tar path, offset, size, member name) for an image inside a
    shard. Two images with the same key are an error naming both.
    """
    refs = []
    for source in inputs:
        refs += as_dataset(source, role="images").image_refs()
    seen = {}
    for key, ref in refs:
        if key in seen:
            raise ValueError(f"key collision: {ref_name(seen[key])} and {ref_name(ref)} both map to key {key!r}")
        seen[key] = ref
    return sorted(seen.items())


def ref_name(ref):
    """Human-readable source of a ref: the file path, or `path/shard-000000.tar#key.jpg` for a shard member."""
    return ref if isinstance(ref, str) else f"{ref[0]}#{ref[3]}"


# -- decoding in DataLoader workers ---------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """Items -> (position, uint8 H x W x 3 tensor, raw bytes, member suffix, error).

    Errors are returned, not raised, so one corrupt image does not stop the loader.
    """

    def __init__(self, items):
        self.items = items
        self.reader = RangeReader()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        key, ref = self.items[i]
        try:
            data = self.reader.read(ref) if isinstance(ref, str) else self.reader.read(ref[0], ref[1], ref[2])
            if is_jpeg(data):
                suffix = "jpg"
            elif is_png(data):
                suffix = "png"
            else:
                raise ValueError("not a JPEG or PNG file")
            image = decode_image(data)
            if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                raise ValueError(f"decoded to shape {image.shape}, expected H x W x 3")
            if not image.flags.writeable:  # PIL arrays are read-only; torch wants writable memory
                image = image.copy()
            return i, torch.from_numpy(np.ascontiguousarray(image)), data, suffix, None
        except Exception as e:  # noqa: BLE001 - every failure is recorded in failed.jsonl
            return i, None, None, None, f"{type(e).__name__}: {e}"


def _lower_priority(level, *_):
    """Renice the calling thread (Linux: only that thread) or DataLoader worker by `level`.

    On the CPU the model's threads use every core; background work (decode,
    compression, writing) at a lower priority then fills the cycles they leave
    idle instead of preempting them, which stalls every parallel region.
    """
    if level:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + level))
        except (OSError, AttributeError):
            pass


def _collate(batch):
    # Images of different sizes cannot be stacked; group them after loading.
    return batch


def _same_size_runs(rows):
    """Consecutive runs of rows whose images have the same shape (order kept)."""
    run = []
    for row in rows:
        if run and row[1].shape != run[0][1].shape:
            yield run
            run = []
        run.append(row)
    if run:
        yield run


# -- writing in background threads ------------------------------------------------
def _encode_sample(key, source, data, suffix, label, conf_mean, idx, prob, num_classes, images):
    hist = np.bincount(label.ravel(), minlength=256)
    how = "kept"
    orientation = exif_orientation(data) if suffix == "jpg" else 1
    if images is not None:
        # Restart-marker JPEGs, as `csst pack` writes them (JPEGs transcoded losslessly, the
        # orientation tag reset: the label was predicted on the stored pixels, as every viewer will now show).
        suffix, data, how, _ = pack_image(data, images)
    meta = {
        "image": how, "source": source, "height": int(label.shape[0]), "width": int(label.shape[1]),
        "producer": "csst label", "mean_confidence": round(float(conf_mean), 6),
        "class_histogram": hist[:num_classes].tolist(), "ignored_pixels": int(hist[IGNORE]),
    }
    if orientation != 1:
        meta["exif_orientation"] = orientation
    sample = {"__key__": key, suffix: data, "label.npy.zst": encode_label(label, num_classes, key), "json": encode_json(meta)}
    if idx is not None:
        sample["topk_idx.npy.zst"], sample["topk_prob.npy.zst"] = encode_topk(idx, prob)
    return sample


class _BackgroundWriter:
    """Compress samples in a thread pool and write them in order from one thread.

    `put` blocks when `depth` samples are pending, so memory stays bounded.
    """

    def __init__(self, writer, threads, depth, kill_after=None, nice=0):
        self.writer, self.kill_after, self.written, self.error, self.nice = writer, kill_after, 0, None, nice
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="csst-encode",
                                                          initializer=_lower_priority, initargs=(nice,))
        self.queue = queue.Queue(maxsize=max(1, depth))
        self.thread = threading.Thread(target=self._run, name="csst-writer", daemon=True)
        self.thread.start()

    def put(self, *args):
        if self.error is not None:
            raise self.error  # e.g. OSError (disk full) from the writer thread
        self.queue.put(self.pool.submit(_encode_sample, *args))

    def _run(self):
        _lower_priority(self.nice)
        while (future := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure so `put` never blocks forever
            try:
                self.writer.write(future.result())
                self.written += 1
                if self.kill_after is not None and self.written >= self.kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                self.error = e

    def close(self):
        """Write everything pending, finish the open shard and the manifest."""
        self.queue.put(None)
        self.thread.join()
        self.pool.shutdown()
        if self.error is not None:
            self.writer.abort()
            raise self.error
        self.writer.close()

    def abort(self):
        """Drop pending samples and the open shard (a rerun redoes them)."""
        self.error = self.error or RuntimeError("aborted")
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put(None)
        self.thread.join()
        self.pool.shutdown(cancel_futures=True)
        self.writer.abort()


def _run_fingerprint(items, producer):
    """Hash of the whole input list and the content options: ranks of one run agree on it."""
    sha = hashlib.sha256()
    sha.update(json.dumps({k: producer[k] for k in ("checkpoint_sha256",)}).encode())
    sha.update(json.dumps({k: producer["options"][k] for k in _CONTENT_OPTIONS}).encode())
    for key, _ in items:
        sha.update(key.encode("utf-8") + b"\n")
    return sha.hexdigest()


# -- from model output to labels ---------------------------------------------------------
# Cephes exp2f: 2^f for f in [-0.5, 0.5] to float32 precision (relative error ~1e-7).
_EXP2_POLY = (1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3,
              5.550332471162809e-2, 2.402264791363012e-1, 6.931472028550421e-1)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _argmax_confidence(logits, min_confidence, labels, row_confidence):
    """Labels and per-row confidence sums from logits (N, C, H, W) float32, in one pass.

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
            labels[i, y, x] = IGNORE if conf < min_confidence else best[x]
        row_confidence[i, y] = acc


def _from_logits_cpu(model, x, num_classes, min_confidence):
    from csst_train.inference import logits as model_logits

    with torch.no_grad():
        logits = model_logits(model, x, num_classes).contiguous().numpy()
    n, _, h, w = logits.shape
    labels = np.empty((n, h, w), np.uint8)
    rows = np.empty((n, h), np.float64)
    _argmax_confidence(logits, -1.0 if min_confidence is None else float(min_confidence), labels, rows)
    return labels, rows.sum(1) / (h * w), None, None


def _from_probs(probs, min_confidence, topk):
    conf, lab = probs.max(1)
    lab = lab.to(torch.uint8)
    if min_confidence is not None:
        lab[conf < min_confidence] = IGNORE
    idx = prob = None
    if topk:
        top_p, top_i = probs.topk(topk, dim=1)
        idx = top_i.to(torch.uint8).cpu().numpy()
        prob = (top_p * 255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return lab.cpu().numpy(), conf.double().mean((1, 2)).cpu().numpy(), idx, prob


def predict_labels(model, x, num_classes, *, scales=(1.0,), flip=False, crop=None, stride=None,
                   amp_dtype=None, topk=0, min_confidence=None):
    """Normalised images (N, 3, H, W) -> (labels uint8 (N,H,W), mean confidence (N,), topk idx, topk prob).

    Labels are the argmax of the class probabilities (averaged over scales and
    flips), 255 where the top probability is below `min_confidence`.
    """
    h, w = x.shape[-2:]
    whole = crop is None or (h <= _as_list(crop)[0] and w <= _as_list(crop)[1])
    if x.device.type == "cpu" and list(scales) == [1.0] and not flip and whole and not topk:
        return _from_logits_cpu(model, x, num_classes, min_confidence)
    from csst_train.inference import predict_probs

    probs = predict_probs(model, x, num_classes, scales=scales, flip=flip, crop=crop, stride=stride,
                          amp_dtype=amp_dtype)
    return _from_probs(probs, min_confidence, topk)


# -- the labelling loop ----------------------------------------------------------------
def _as_list(size):
    # JSON has no tuples: store sizes as lists so a resumed run compares equal.
    if size is None:
        return None
    return [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]


def default_workers():
    return min(8, max(1, (os.cpu_count() or 2) // 2))


def label(checkpoint, items, out_dir, *, device="auto", batch_size=4, workers=None, shard_size=1000,
          scales=(1.0,), flip=False, crop=None, stride=None, topk=0, min_confidence=None, amp="off",
          rank=None, world_size=None, encode_threads=None, inputs=None, progress=None, keep_bytes=False,
          quality=95, lossless=False):
    """Label `items` ([(key, ref)] from `list_inputs`) with the teacher `checkpoint` into `out_dir`.

    Resumes a killed run of the same command. With `world_size` > 1 (or
    torchrun's environment) only this rank's keys are labelled. Unreadable
    images are skipped and appended to OUT_DIR/failed.jsonl (one line per
    failed attempt; a rerun tries them again). `progress(done, total)` is
    called as images finish. Returns a summary dict: labelled, skipped
    (already stored), failed, total, seconds, rank, world_size, merged,
    manifest, shards. One writer per rank and output: a second raises OutputBusy.
    """
    rank, world_size = dist_env(rank, world_size)
    # An object-store URL is written through a local staging folder (csst_data/mirror.py).
    out_dir, mirror = open_output(os.fspath(out_dir), rank_prefix(rank) if world_size > 1 else "shard")
    os.makedirs(out_dir, exist_ok=True)
    with OutputLock(out_dir, f".lock-{rank_prefix(rank)}"):
        summary = _label(checkpoint, items, out_dir, device=device, batch_size=batch_size, workers=workers,
                         shard_size=shard_size, scales=scales, flip=flip, crop=crop, stride=stride, topk=topk,
                         min_confidence=min_confidence, amp=amp, rank=rank, world_size=world_size,
                         encode_threads=encode_threads, inputs=inputs, progress=progress, keep_bytes=keep_bytes,
                         quality=quality, lossless=lossless, mirror=mirror)
    return close_output(mirror, summary)


def _label(checkpoint, items, out_dir, *, device, batch_size, workers, shard_size, scales, flip, crop, stride, topk,
           min_confidence, amp, rank, world_size, encode_threads, inputs, progress, keep_bytes, quality, lossless,
           mirror=None):
    from csst_train.checkpoints import model_from_checkpoint
    from csst_train.inference import normalise

    out_dir = os.fspath(out_dir)
    rank, world_size = dist_env(rank, world_size)
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be positive")
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    dev = pick_device(device)
    amp_dtype = to_amp_dtype(amp, dev)
    model, ckpt = model_from_checkpoint(checkpoint, dev)
    num_classes = int(ckpt["num_classes"])
    class_names = ckpt.get("class_names")
    if not 0 <= topk <= min(num_classes, 255):
        raise ValueError(f"topk must be in 0..{min(num_classes, 255)}, got {topk}")
    if num_classes > IGNORE:
        raise ValueError(f"{checkpoint}: {num_classes} classes do not fit uint8 labels with ignore={IGNORE}")
    scales = [float(s) for s in scales]
    options = {
        "scales": scales, "flip": bool(flip), "crop": _as_list(crop), "stride": _as_list(stride), "topk": int(topk),
        "min_confidence": min_confidence, "amp": amp or "off", "shard_size": shard_size,
        "keep_bytes": bool(keep_bytes), "quality": int(quality), "lossless": bool(lossless),
        "batch_size": batch_size, "inputs": [os.path.abspath(i) if isinstance(i, str) else i for i in inputs or []],
    }
    producer = {"name": "csst label", "checkpoint": os.path.abspath(checkpoint),
                "checkpoint_sha256": file_sha256(checkpoint), "options": options}
    fingerprint = _run_fingerprint(items, producer)
    os.makedirs(out_dir, exist_ok=True)
    ranked = world_size > 1
    manifest_name = rank_manifest_name(rank) if ranked else MANIFEST
    check_resumable(out_dir, manifest_name, producer, world_size, fixed=("checkpoint_sha256",),
                    fixed_options=_CONTENT_OPTIONS)
    start_rank(out_dir, rank, world_size)
    mine = [it for it in items if rank_of(it[0], world_size) == rank] if ranked else list(items)
    image_fields = sorted({"png" if ref_name(r).lower().endswith(".png") else "jpg" for _, r in mine}) or ["jpg"]
    if not keep_bytes and not lossless:
        image_fields = ["jpg"]  # PNG inputs are encoded as JPEGs
    images = None if keep_bytes else PackOptions(quality=quality, lossless=lossless)
    fields = image_fields + ["label.npy.zst", "json"] + (["topk_idx.npy.zst", "topk_prob.npy.zst"] if topk else [])
    writer = ShardWriter(
        out_dir, SetInfo(num_classes=num_classes, class_names=class_names, fields=fields, producer=producer,
                         extra={"pseudo": True, **({"rank": rank, "world_size": world_size} if ranked else {})}),
        prefix=rank_prefix(rank) if ranked else "shard", maxcount=shard_size,
        manifest=manifest_name, resume=True, on_finish=mirror.sync if mirror else None,
    )
    # Keys already stored by any earlier run of this rank.
    todo = [it for it in mine if it[0] not in writer.existing_keys]
    skipped = len(mine) - len(todo)
    total = len(mine)
    kill_after = int(os.environ[KILL_ENV]) if os.environ.get(KILL_ENV) else None
    workers = default_workers() if workers is None else workers
    encode_threads = encode_threads or min(8, max(1, (os.cpu_count() or 2) // 2))
    nice = BACKGROUND_NICE if dev.type == "cpu" else 0
    bg = _BackgroundWriter(writer, encode_threads, depth=4 * batch_size, kill_after=kill_after, nice=nice)
    loader = torch.utils.data.DataLoader(
        ImageDataset(todo), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, worker_init_fn=chain(die_with_parent, functools.partial(_lower_priority, nice)),
        prefetch_factor=4 if workers else None, multiprocessing_context=mp_context() if workers else None,
    )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    failed = 0
    done = skipped
    start = time.perf_counter()
    if progress:
        progress(done, total)
    try:
        for batch in loader:
            rows = []
            for i, image, data, suffix, error in batch:
                if error is not None:
                    key, ref = todo[i]
                    record_failure(out_dir, key, ref_name(ref), error, rank, world_size)
                    failed += 1
                else:
                    rows.append((i, image, data, suffix))
            for run in _same_size_runs(rows):
                x = torch.stack([r[1] for r in run])
                if dev.type == "cuda":
                    x = x.pin_memory().to(dev, non_blocking=True)
                lab, conf_mean, idx, prob = predict_labels(
                    model, normalise(x), num_classes, scales=scales, flip=flip, crop=crop, stride=stride,
                    amp_dtype=amp_dtype, topk=topk, min_confidence=min_confidence)
                for j, (i, _, data, suffix) in enumerate(run):
                    key, ref = todo[i]
                    bg.put(key, ref_name(ref), data, suffix, lab[j], conf_mean[j],
                           None if idx is None else idx[j], None if prob is None else prob[j], num_classes, images)
            done += len(batch)
            if progress:
                progress(done, total)
    except BaseException:
        bg.abort()
        raise
    bg.close()
    seconds = time.perf_counter() - start
    merged = False
    if ranked:
        merged = finish_rank(out_dir, rank, world_size, fingerprint, len(writer.keys), failed, mirror)
    return {
        "labelled": len(todo) - failed, "skipped": skipped, "failed": failed, "total": total,
        "seconds": seconds, "rank": rank, "world_size": world_size, "merged": merged or not ranked,
        "manifest": os.path.join(out_dir, MANIFEST if (merged or not ranked) else manifest_name),
        "shards": len(writer.shards),
    }
