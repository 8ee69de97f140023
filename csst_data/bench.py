"""Measuring code for `csst bench` and benchmarks/: IO, loader and training throughput on a user's data.

Every function returns plain dicts of figures (JSON-able) and takes a
`progress(done, total)` callback; the command line (cli/bench.py) prints them.

- `io_throughput(dataset, workers, order)`: samples/s and MB/s of reading and
  decoding image + label, in index order or a seeded random order.
- `label_decode_ms(dataset)`: the label decode alone.
- `loader_throughput(index, crop, workers, ...)`: crops/s and pixels/s of the
  crop loader at one crop size, and the time per crop split into read / decode /
  crop + augment (measured in this process, over the same plan).
- `class_coverage(index, strategy, ...)`: share of one epoch's crops holding each class.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

from csst_data.store.shards import RangeReader

if TYPE_CHECKING:
    from csst_data.loader.crops import CropParams
    from csst_data.datasets import Dataset
    from csst_data.index import CentroidIndex

# -- IO ------------------------------------------------------------------------------------
_io = {}


def _io_init(dataset, cols):
    _io.update(dataset=dataset, cols=cols, reader=RangeReader())


def _io_read(i):
    """Read and decode sample i's image and label; -> bytes read."""
    from csst_data.store.codecs import decode_image

    ds, c, reader = _io["dataset"], _io["cols"], _io["reader"]
    has_label = c["label_size"][i] != -1 or c["label_path"][i]
    if c["shard"][i] >= 0 and c["image_offset"][i] >= 0 and c["label_offset"][i] >= 0:
        # Members of one shard sample: one read (one request in object storage), as the loader does.
        image, label = ds.read_ranges(reader, c["shard"][i], [(c["image_offset"][i], c["image_size"][i]),
                                                             (c["label_offset"][i], c["label_size"][i])])
    else:
        image = ds.read(reader, c["shard"][i], c["image_offset"][i], c["image_size"][i], c["image_path"][i])
        label = ds.read(reader, c["shard"][i], c["label_offset"][i], c["label_size"][i],
                        c["label_path"][i]) if has_label else None
    decode_image(image)
    n = len(image)
    if label is not None:
        ds.decode_label(label)
        n += len(label)
    return n


def io_throughput(dataset: Dataset, workers: int = 1, order: str = "sequential", samples: Optional[int] = None,
                  seed: int = 0, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """{samples_per_s, mb_per_s, bytes_per_sample, samples, seconds} of reading + decoding image and label."""
    cols = dataset.samples(labels=None)  # a remote set's shards are fetched whole to list them, and not kept
    n = len(cols["key"])
    if n == 0:
        raise ValueError(f"{dataset.name}: no samples")
    rows = np.arange(n) if order == "sequential" else np.random.default_rng(seed).permutation(n)
    rows = rows[: samples or n].tolist()
    start = time.perf_counter()
    total, done = 0, 0
    if workers <= 1:
        _io_init(dataset, cols)
        results = map(_io_read, rows)
        pool = None
    else:
        from csst_data.workers import mp_context, worker_init

        pool = mp_context().Pool(workers, initializer=worker_init(_io_init), initargs=(dataset, cols))
        results = pool.imap(_io_read, rows, chunksize=4)
    try:
        for b in results:
            total += b
            done += 1
            if progress:
                progress(done, len(rows))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    seconds = time.perf_counter() - start
    return {"samples": len(rows), "seconds": seconds, "samples_per_s": len(rows) / seconds,
            "mb_per_s": total / seconds / 1e6, "bytes_per_sample": total / len(rows)}


def label_decode_ms(dataset: Dataset, samples: int = 32) -> float:
    """Mean milliseconds to decode one label (bytes already read)."""
    cols = dataset.samples(labels=True)
    reader = RangeReader()
    blobs = [dataset.read(reader, cols["shard"][i], cols["label_offset"][i], cols["label_size"][i],
                          cols["label_path"][i]) for i in range(min(samples, len(cols["key"])))]
    reader.close()
    start = time.perf_counter()
    for b in blobs:
        dataset.decode_label(b)
    return 1e3 * (time.perf_counter() - start) / len(blobs)


def page_cache_note(paths: Sequence[str], drop: bool = False) -> str:
    """Whether the reads below come from the page cache: 'cold' after dropping it (root only), else 'warm'."""
    if drop:
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return "cold (page cache dropped)"
        except OSError as e:
            return f"warm (could not drop the page cache: {e.strerror})"
    return "warm (files read before may be in the page cache; --drop-caches as root measures cold reads)"


# -- loader --------------------------------------------------------------------------------
def loader_throughput(index: CentroidIndex, crop: int, batch_size: int, workers: int, samples: int,
                      strategy: str = "centroid", seed: int = 0, reuse_buffers: bool = True) -> dict:
    """{crops_per_s, pixels_per_s, crops, seconds} of the crop loader at one crop size, as `csst train`
    runs it (reusing shared-memory batch buffers)."""
    from csst_data.loader.crop_loader import CropLoader
    from csst_data.loader.options import LoaderOptions

    loader = CropLoader(index, LoaderOptions(crop=crop, batch_size=batch_size, epochs=1, sizes=[crop], seed=seed,
                                             workers=workers, length=samples, strategy=strategy,
                                             reuse_buffers=reuse_buffers))
    loader.set_epoch(0)
    rate, n, seconds = steady_throughput(loader, lambda b: len(b["label"]))
    return {"crops": n, "seconds": seconds, "crops_per_s": rate, "pixels_per_s": rate * crop * crop}


def steady_throughput(batches: Iterable, size_of: Callable[[Any], int]) -> Tuple[float, int, float]:
    """(items/s, items, seconds) of an iterable of batches, timed from the first batch's arrival.

    The rate an epoch of many batches settles at: worker start-up (forking, opening files, the
    first batch's latency) is left out, as a real epoch amortises it. A short timed pass that
    included it would charge it mostly to its small crops, whose pass is shortest."""
    t0 = time.perf_counter()
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ValueError("no batches to time")
    start, n = time.perf_counter(), 0
    for b in it:
        n += size_of(b)
    seconds = time.perf_counter() - start
    if n == 0:  # one batch only: its rate, start-up included
        n, seconds = size_of(first), start - t0
    return n / seconds, n, seconds


def crop_time_split(index: CentroidIndex, crop: int, samples: int, strategy: str = "centroid",
                    seed: int = 0) -> dict:
    """Mean ms per crop of read (bytes of image and label), decode (image window and label) and
    crop + augment, in this process over one plan's first `samples` crops; `total_ms` is timed around all,
    `image_decode_ms` is the image's part of `decode_ms`."""
    from csst_data.loader import crops
    from csst_data.store.codecs import label_decoder
    from csst_data.loader.reader import SampleReader
    from csst_data.loader.crop_loader import decode_window
    from csst_data.loader.sampling import epoch_plan

    plan = epoch_plan(index, 0, seed, strategy=strategy, length=samples)
    reader = SampleReader(index)
    decode_label = label_decoder()  # one reused buffer, as the loader decodes labels
    ds_of = index.images["source"]
    split = {"read_ms": 0.0, "decode_ms": 0.0, "crop_ms": 0.0}
    image_ms, windows = 0.0, []
    count = min(samples, len(plan["image"]))
    t_all = time.perf_counter()
    for j in range(count):
        row = int(plan["image"][j])
        h, w = int(index.images["height"][row]), int(index.images["width"][row])
        cy, cx = float(plan["cy"][j]), float(plan["cx"][j])
        tp = time.perf_counter()  # drawing the augmentation counts as crop + augment
        params = crops.crop_params(h, w, crop, np.random.default_rng([seed, j]),
                                   center=None if math.isnan(cy) else (cy, cx))
        t0 = time.perf_counter()
        data = reader.image_bytes(row)
        raw_label = reader.label_bytes(row)
        t1 = time.perf_counter()
        image, scale, origin, shape = decode_window(data, params)
        image_ms += 1e3 * (time.perf_counter() - t1)
        windows.append((data, params, tuple(shape), row))
        label = reader.datasets[ds_of[row]].decode_label(raw_label, index.images["key"][row], decode_label)
        t2 = time.perf_counter()
        crops.apply_crop(image, label, params, image_scale=scale, origin=origin, shape=shape)
        t3 = time.perf_counter()
        split["read_ms"] += 1e3 * (t1 - t0)
        split["decode_ms"] += 1e3 * (t2 - t1)
        split["crop_ms"] += 1e3 * ((t3 - t2) + (t0 - tp))
    total = 1e3 * (time.perf_counter() - t_all)
    reader.close()
    whole = {}
    floor_ms = sum(_area_floor_ms(*w, whole) for w in windows)  # untimed: after the clock above
    out = {k: v / count for k, v in split.items()}
    out["total_ms"] = total / count
    out["image_decode_ms"] = image_ms / count  # the window decode alone (part of decode_ms)
    # The window decode against its floor: the window's share of the area of a whole decode of the
    # same image at the same DCT scale, timed here too (issue #26: the per-crop fixed costs).
    out["area_floor_ms"] = floor_ms / count
    out["decode_over_area_floor"] = image_ms / floor_ms if floor_ms else float("nan")
    return out


def _area_floor_ms(data: bytes, params: CropParams, shape: tuple, row: int, whole: dict) -> float:
    """The window's area share (clipped to the image) of a whole decode of `data` at the decoded `shape`;
    whole decodes are timed once per (image, shape), the median of three, into `whole`."""
    from csst_data.store.codecs import decode_image

    if (row, shape) not in whole:
        kw = {} if shape == (params.height, params.width) else {"min_height": shape[0], "min_width": shape[1]}
        times = []
        for _ in range(3):
            t = time.perf_counter()
            decode_image(data, **kw)
            times.append(1e3 * (time.perf_counter() - t))
        whole[(row, shape)] = float(np.median(times))
    h = min(params.y0 + params.side, params.height) - max(params.y0, 0)
    w = min(params.x0 + params.side, params.width) - max(params.x0, 0)
    return whole[(row, shape)] * max(h, 0) * max(w, 0) / (params.height * params.width)


def class_coverage(index: CentroidIndex, strategy: str, samples: int, crop: int, seed: int = 1,
                   workers: int = 0) -> dict:
    """Share of one epoch's crops that hold at least one pixel of each class, and its minimum over present classes."""
    from csst_data.loader.crop_loader import CropLoader
    from csst_data.loader.options import LoaderOptions

    loader = CropLoader(index, LoaderOptions(crop=crop, batch_size=8, epochs=1, strategy=strategy, seed=seed,
                                             workers=workers, length=samples))
    loader.set_epoch(0)
    hits = np.zeros(index.num_classes)
    n = 0
    for batch in loader:
        for lab in batch["label"].numpy():
            hits[np.unique(lab[lab < index.num_classes])] += 1
            n += 1
    present = index.class_pixels.sum(0) > 0
    frac = hits / max(n, 1)
    return {"coverage": dict(zip(index.class_names, frac.tolist())),
            "min_coverage": float(frac[present].min()) if present.any() else 0.0}
