"""The embedded demo dataset: procedurally rendered street scenes, 19 classes.

Each scene is a street seen from a car: a perspective ground plane (road with
lane markings, sidewalks, grass), building facades with windows along both
sides, a far skyline under the sky, and objects standing on the ground (trees,
poles with lights and signs, people, bicycles and motorcycles with riders,
cars, trucks, buses, trams), painted far to near. The classes and colours are
those of Cityscapes' train ids, and the pixel distribution is long-tailed in
the same way: road, building, vegetation and sky dominate while pole, traffic
light, rider, motorcycle and train each hold well under 1 % of the pixels.

Appearance is made learnable but not trivial: colours are jittered per
instance, several classes share a palette (truck/bus/train, person/rider,
bicycle/motorcycle, vegetation/terrain, building/wall) and differ only in shape,
texture or context, and every image gets noise, lighting gradients and shadows.
A few regions are void (255): the ego vehicle's bonnet and "static" clutter.

The package is laid out by job: `classes` (ids, names, colours), `scene` (the
drawing canvas), `background` and `objects` (what is drawn), `render` (one
scene, `render_scene`) and this module, which writes datasets: `write_dataset`
writes the labelled, unlabelled and validation splits as shard sets (or in the
Cityscapes folder layout), with per-sample seeds derived from (seed, split,
index) so the output does not depend on the number of worker processes. The
names other code imports from here (CLASS_NAMES, PALETTE, render_scene, ...)
stay importable from this module.
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from csst_data import IGNORE
from csst_demo.classes import (  # noqa: F401  (re-exported: the names other code uses)
    BICYCLE, BUILDING, BUS, CAR, CITYSCAPES_LABEL_IDS, CITYSCAPES_LUT, CLASS_NAMES, EGO, FENCE, LIGHT, MOTORCYCLE,
    NUM_CLASSES, PALETTE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY, TERRAIN, TRAIN, TRUCK, VEGETATION, WALL)
from csst_demo.render import render_raw, render_scene, shift_appearance, to_cityscapes_ids  # noqa: F401

SPLITS = ("labeled", "unlabeled", "val")
_SPLIT_CODE = {"labeled": 0, "unlabeled": 1, "val": 2}
_CITYSCAPES_SPLIT = {"labeled": "train", "unlabeled": "train_extra", "val": "val"}
_CITIES = {"labeled": ("synthburg", "pixelstadt", "rendorf"), "unlabeled": ("noisheim", "texelfeld", "gridau"),
           "val": ("valbruck",)}
JPEG_QUALITY = 90
# 4:2:0 chroma, as camera JPEGs and the Pillow/OpenCV defaults have (simplejpeg defaults to 4:4:4).
JPEG_SUBSAMPLING = "420"
SHARD_MAXCOUNT = 100


# -- writing ------------------------------------------------------------------------
def sample_rng(seed: int, split: str, index: int, *stream: int) -> np.random.Generator:
    """The generator of one sample: depends only on (seed, split, index); `stream` names another,
    independent generator of the same sample (its appearance shift: 1)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index), *stream]))


def sample_key(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def encode_jpeg(image: np.ndarray, restart: bool = False) -> bytes:
    """RGB uint8 array -> JPEG bytes as a camera or Pillow writes them; with `restart`, as csst
    stores them in shards: transcoded losslessly to restart markers (the same pixels)."""
    import simplejpeg

    data = simplejpeg.encode_jpeg(image, quality=JPEG_QUALITY, colorspace="RGB", colorsubsampling=JPEG_SUBSAMPLING)
    if restart:
        from csst_data.jpeg.restart import with_restart_index
        from csst_data.jpeg.lossless import transcode

        data = with_restart_index(transcode(data))
    return data


def _encode_png(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class SampleTask:
    """One sample to render and encode (sent to a worker process)."""

    split: str
    index: int
    seed: int
    height: int
    width: int
    layout: str
    variety: float = 0.0


def _make_sample(task):
    """One sample's encoded members; runs in worker processes."""
    from csst_data.store.codecs import encode_json, encode_label

    split, index, seed, h, w = task.split, task.index, task.seed, task.height, task.width
    image, raw = render_raw(h, w, sample_rng(seed, split, index))
    if task.variety > 0:  # its own generator: the scene itself is the one variety 0 renders
        image = shift_appearance(image, sample_rng(seed, split, index, 1), task.variety)
    if task.layout == "cityscapes":
        return _encode_png(image), _encode_png(CITYSCAPES_LUT[raw])
    label = raw.copy()
    label[label >= EGO] = IGNORE
    counts = np.bincount(label.ravel(), minlength=256)
    meta = {"source": "csst-synth", "split": split, "index": index, "seed": seed, "height": h, "width": w,
            "class_pixels": counts[:NUM_CLASSES].tolist(), "ignore_pixels": int(counts[IGNORE])}
    return encode_jpeg(image, restart=True), encode_label(label, NUM_CLASSES), encode_json(meta)


def cityscapes_name(split: str, index: int) -> tuple[str, str]:
    """(city, file stem) of a sample in the Cityscapes layout: {city}_{seq:06d}_000019."""
    cities = _CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_000019"


def _written_paths(out, layout):
    if layout == "cityscapes":
        return [os.path.join(out, d) for d in ("leftImg8bit", "gtFine")]
    return [os.path.join(out, d) for d in ("labeled", "unlabeled", "unlabeled-gt", "val")]


class FolderNotEmpty(ValueError):
    """The output folder holds something and `force` was not given."""


@dataclass(frozen=True)
class SynthOptions:
    """What `write_dataset` renders and how."""

    labeled: int  # labelled training images
    unlabeled: int  # unlabelled images (their true labels go to unlabeled-gt/ in the shards layout)
    val: int  # labelled validation images
    size: tuple = (256, 512)  # (height, width), each at least 16
    seed: int = 0  # the same seed writes the same bytes
    layout: str = "shards"  # "shards" or "cityscapes" (see write_dataset)
    workers: int = 1  # rendering processes; the output does not depend on it
    force: bool = False  # write into a non-empty folder, replacing what an earlier run wrote there
    variety: float = 0.0  # per-scene appearance shifts (render.shift_appearance); 0 keeps every byte as before


def write_dataset(out: str | os.PathLike, opts: SynthOptions,
                  progress: Optional[Callable[[int, int], object]] = None) -> dict[str, int]:
    """Render and write the three splits to `out`; returns {split: number of samples}.

    layout="shards": shard sets `labeled/`, `unlabeled/` (images only),
    `unlabeled-gt/` (their true labels, same keys) and `val/`.
    layout="cityscapes": `leftImg8bit/{train,train_extra,val}/{city}/*_leftImg8bit.png`
    and `gtFine/{train,val}/{city}/*_gtFine_labelIds.png` with Cityscapes label ids.
    `out` must be empty or missing unless `opts.force`, which replaces what an
    earlier run wrote there. `progress(done, total)` is called per sample written.
    """
    (h, w), counts = _checked(opts)
    out = str(out)
    _prepare_folder(out, opts)
    tasks = [SampleTask(split, i, int(opts.seed), h, w, opts.layout, float(opts.variety))
             for split in SPLITS for i in range(counts[split])]
    results = _map(_make_sample, tasks, opts.workers)
    bar = _Counter(progress, len(tasks))
    try:
        if opts.layout == "cityscapes":
            _write_cityscapes(out, tasks, results, bar)
        else:
            _write_shards(out, tasks, results, (opts.seed, (h, w)), bar)
    finally:
        if hasattr(results, "close"):  # stops the worker pool if writing failed
            results.close()
    return counts


def _checked(opts):
    """((height, width), {split: count}) of valid options; ValueError naming the bad one."""
    h, w = (int(v) for v in opts.size)
    if h < 16 or w < 16:
        raise ValueError(f"size {h}x{w} is too small (at least 16x16)")
    if opts.layout not in ("shards", "cityscapes"):
        raise ValueError(f"layout {opts.layout!r}: expected 'shards' or 'cityscapes'")
    if not 0 <= opts.variety <= 2:
        raise ValueError(f"variety {opts.variety}: expected a number in [0, 2]")
    counts = {"labeled": int(opts.labeled), "unlabeled": int(opts.unlabeled), "val": int(opts.val)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"sample counts must be >= 0, got {counts}")
    return (h, w), counts


def _prepare_folder(out, opts):
    """Create `out`, or empty what an earlier run wrote there (`force`); refuse a non-empty folder otherwise."""
    if os.path.isdir(out) and os.listdir(out):
        if not opts.force:
            raise FolderNotEmpty(f"{out} is not empty; choose an empty folder, or pass force=True to replace "
                                 "what an earlier run wrote there")
        for path in _written_paths(out, opts.layout):
            if os.path.isdir(path):
                shutil.rmtree(path)
    elif os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)


def _map(fn, tasks, workers):
    """Ordered map, in worker processes when workers > 1."""
    if workers <= 1 or len(tasks) < 2:
        return map(fn, tasks)
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(workers)
    it = pool.imap(fn, tasks, chunksize=4)

    def gen():
        try:
            yield from it
        finally:
            pool.terminate()
            pool.join()

    return gen()


class _Counter:
    """Counts written samples for a `progress(done, total)` callback."""

    def __init__(self, progress, total):
        self.progress, self.total, self.done = progress if callable(progress) else None, total, 0


def _advance(bar, split):
    bar.done += 1
    if bar.progress:
        bar.progress(bar.done, bar.total)


def _write_shards(out, tasks, results, provenance, bar):
    """Shard sets labeled/, unlabeled/ + unlabeled-gt/, val/; `provenance` is (seed, size) for the manifests."""
    from csst_data.store.shards import SetInfo, ShardWriter

    seed, size = provenance

    def writer(name, fields, split):
        info = SetInfo(num_classes=NUM_CLASSES, class_names=CLASS_NAMES, fields=fields, producer="csst synth",
                       extra={"synth": {"seed": int(seed), "split": split, "size": list(size)}})
        return ShardWriter(os.path.join(out, name), info, maxcount=SHARD_MAXCOUNT)

    writers = {
        "labeled": [writer("labeled", ["jpg", "label.npy.zst", "json"], "labeled")],
        "unlabeled": [writer("unlabeled", ["jpg", "json"], "unlabeled"),
                      writer("unlabeled-gt", ["label.npy.zst", "json"], "unlabeled")],
        "val": [writer("val", ["jpg", "label.npy.zst", "json"], "val")],
    }
    try:
        for task, (jpg, label, meta) in zip(tasks, results):
            split = task.split
            key = sample_key(split, task.index)
            if split == "unlabeled":
                image_w, gt_w = writers[split]
                image_w.write({"__key__": key, "jpg": jpg, "json": meta})
                gt_w.write({"__key__": key, "label.npy.zst": label, "json": meta})
            else:
                writers[split][0].write({"__key__": key, "jpg": jpg, "label.npy.zst": label, "json": meta})
            _advance(bar, split)
    except BaseException:
        for ws in writers.values():
            for w in ws:
                w.abort()
        raise
    for ws in writers.values():
        for w in ws:
            w.close()


def _write_cityscapes(out, tasks, results, bar):
    from csst_data.store.shards import atomic_write_bytes

    for task, (image_png, label_png) in zip(tasks, results):
        split = task.split
        cs_split = _CITYSCAPES_SPLIT[split]
        city, stem = cityscapes_name(split, task.index)
        img_dir = os.path.join(out, "leftImg8bit", cs_split, city)
        os.makedirs(img_dir, exist_ok=True)
        atomic_write_bytes(os.path.join(img_dir, f"{stem}_leftImg8bit.png"), image_png)
        if split != "unlabeled":  # train_extra has images only
            gt_dir = os.path.join(out, "gtFine", cs_split, city)
            os.makedirs(gt_dir, exist_ok=True)
            atomic_write_bytes(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), label_png)
        _advance(bar, split)

