"""`csst pack`: any dataset csst reads -> a csst shard set ready for fast training.

Per sample: the label becomes `.label.npy.zst` (class ids, 255 = ignore); a
JPEG image is transcoded losslessly to a restart-marker JPEG (same DCT
coefficients, so the same pixels; csst_data/jpeg/lossless.py), which the loader decodes by
window (csst_data/jpeg/window.py); a PNG image is encoded as a restart-marker JPEG at `quality`,
or kept as it is with `lossless`; a JPEG that cannot be transcoded
(progressive, arithmetic coded) is kept as it is. A `.json` member records
where the sample came from and what was done to its image.

Workers decode and encode; this process writes shards in input order. Ranks,
resuming after a kill and failures work as in every shard-writing run
(skeleton.py, shardrun.py): a rerun skips the keys already stored, and
unreadable samples go to failed.jsonl while the rest are packed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from csst_data import IGNORE
from csst_data.datasets import as_dataset, declared_classes
from csst_data.jpeg.structure import exif_orientation
from csst_data.runs.skeleton import RunSpec, ShardRun, ranked_output, todo_of
from csst_data.store import storage
from csst_data.store.codecs import encode_json, encode_label, is_jpeg, is_png
from csst_data.store.shards import RangeReader, SetInfo
from csst_data.workers import mp_context, rank_world, worker_init

# The options that change what is stored: a resumed run must use the same ones.
# What a rerun into the same folder must share with the run that wrote it: the pixels it stores
# and what it packs ("inputs": another source under the same keys would be skipped as packed).
CONTENT_OPTIONS = ("quality", "lossless", "inputs")


@dataclass(frozen=True)
class PackOptions:
    quality: int = 95          # JPEG quality for images that are not JPEGs already
    lossless: bool = False     # keep PNG images as PNG instead of encoding them as JPEG
    shard_size: int = 1000     # samples per shard
    workers: int = 2           # processes reading, transcoding and encoding samples
    num_classes: int | None = None      # classes of mask folders (shard sets, presets and specs declare theirs)
    class_names: Sequence[str] | None = None  # their names, when known


def encode_restart_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """An RGB array -> baseline 4:2:0 JPEG with restart markers every few MCUs (Pillow >= 11 writes them)."""
    from PIL import Image

    from csst_data.jpeg.structure import choose_restart_interval

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality), subsampling=2,
                              restart_marker_blocks=choose_restart_interval(rgb.shape[1], 16))
    return buf.getvalue()


def pack_image(data: bytes, options: PackOptions) -> tuple[str, bytes, str, tuple[int, int]]:
    """Image bytes -> (member suffix, bytes, what was done: "transcoded", "encoded" or "kept"), and (height, width)."""
    from csst_data import jpeg
    from csst_data.store.codecs import decode_image
    from csst_data.jpeg.lossless import transcode

    if is_jpeg(data):
        try:
            info = jpeg.parse(data)
        except jpeg.UnsupportedJpeg:
            from PIL import Image

            size = Image.open(io.BytesIO(data)).size
            return "jpg", bytes(data), "kept", (size[1], size[0])
        if info.baseline:
            out = jpeg.with_restart_index(jpeg.without_orientation(transcode(data)))
            return "jpg", out, "transcoded", (info.height, info.width)
        return "jpg", bytes(data), "kept", (info.height, info.width)
    if not is_png(data):
        raise ValueError("neither a JPEG nor a PNG image")
    rgb = decode_image(data)
    if options.lossless:
        return "png", bytes(data), "kept", rgb.shape[:2]
    return "jpg", jpeg.with_restart_index(encode_restart_jpeg(rgb, options.quality)), "encoded", rgb.shape[:2]


# -- what one sample is -------------------------------------------------------------------
@dataclass(frozen=True)
class PackItem:
    """Where one sample's members are (a row of its dataset's columns)."""

    source: int          # index of its dataset in the run's sources
    key: str
    shard: object
    label_offset: int
    label_size: int
    image_offset: int
    image_size: int
    label_path: object
    image_path: object

    @property
    def labelled(self) -> bool:
        return self.label_size != -1 or bool(self.label_path)


@dataclass(frozen=True)
class PackTask:
    position: int        # in the run's to-do list
    item: PackItem


# -- work in pool processes --------------------------------------------------------------
_state = {}


def _init(datasets, options, num_classes):
    _state.update(datasets=datasets, options=options, num_classes=num_classes, reader=RangeReader())


def _pack_one(task):
    """One sample -> (position, sample dict for ShardWriter, None, image bytes read) or
    (position, None, (the file that failed, error), 0)."""
    it = task.item
    ds, options, reader = _state["datasets"][it.source], _state["options"], _state["reader"]
    where = ds.locate("image", it.key, it.shard, it.image_offset, it.image_path)
    try:
        data = ds.read(reader, it.shard, it.image_offset, it.image_size, it.image_path)
        suffix, image, how, (h, w) = pack_image(data, options)
        sample = {"__key__": it.key, suffix: image}
        meta = {"source": where, "image": how, "height": int(h), "width": int(w)}
        orientation = exif_orientation(data)
        if orientation != 1:
            # Pixels stay as stored (csst never rotates); the tag is reset in the stored copy and recorded here.
            meta["exif_orientation"] = orientation
        if it.labelled:
            where = ds.locate("label", it.key, it.shard, it.label_offset, it.label_path)
            label = ds.decode_label(ds.read(reader, it.shard, it.label_offset, it.label_size, it.label_path), it.key)
            if label.shape != (h, w):
                raise ValueError(f"image is {h}x{w} but its label is {label.shape[0]}x{label.shape[1]}")
            sample["label.npy.zst"] = encode_label(label, _state["num_classes"], it.key)
            meta["ignored_pixels"] = int((label == IGNORE).sum())
        sample["json"] = encode_json(meta)
        return task.position, sample, None, len(data)
    except Exception as e:  # noqa: BLE001 - every failure is recorded in failed.jsonl
        return task.position, None, (where, f"{type(e).__name__}: {e}"), 0


def _imap(tasks, workers, initargs):
    if workers <= 1:
        _init(*initargs)
        yield from map(_pack_one, tasks)
        return
    with mp_context().Pool(workers, initializer=worker_init(_init), initargs=initargs) as pool:
        yield from pool.imap(_pack_one, tasks, chunksize=2)


# -- the run ---------------------------------------------------------------------------------
_COLUMNS = ("shard", "label_offset", "label_size", "image_offset", "image_size", "label_path", "image_path")


def _items(datasets):
    """Every sample of `datasets` as PackItems; a key in two of them is an error naming both."""
    items, seen = [], {}
    for s, ds in enumerate(datasets):
        cols = ds.samples(labels=None)
        for i, key in enumerate(cols["key"]):
            if key in seen:
                raise ValueError(f"key {key!r} is in {seen[key]} and in {ds.name}; pack them into separate shard sets")
            seen[key] = ds.name
            items.append(PackItem(s, key, *(cols[c][i] for c in _COLUMNS)))
    return items


def _identity(ds) -> dict:
    """A source as the manifest records it for the rerun check: its description with real paths,
    so another spelling of the same folder is the same source (a URL stays as it is)."""
    out = ds.to_attrs(None)
    for k in ("path", "data_root", "img_dir", "ann_dir", "split"):
        if isinstance(out.get(k), str) and not storage.is_url(out[k]):
            out[k] = os.path.realpath(out[k])
    return out


def pack(sources: Sequence, out: str | os.PathLike, options: PackOptions = PackOptions(), rank: int | None = None,
         world_size: int | None = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """Pack `sources` (datasets or SOURCE strings) into the shard set `out`; resumes a killed run.

    `progress(done, total)` is called as samples finish. Returns a summary dict:
    packed, skipped (already stored), failed, total, seconds, images_in_bytes,
    images_out_bytes, transcoded, encoded, kept, merged, manifest.
    """
    rank, world_size = rank_world(rank, world_size)
    datasets = [as_dataset(s) for s in sources]
    if not datasets:
        raise ValueError("no sources given")
    num_classes, class_names = declared_classes(datasets, options.num_classes, options.class_names)
    items = _items(datasets)
    labelled = any(it.labelled for it in items)
    if labelled and num_classes is None:
        raise ValueError(f"the number of classes of {datasets[0].name} is unknown: give --num-classes")
    content = {"quality": options.quality, "lossless": options.lossless, "shard_size": options.shard_size}
    producer = {"name": "csst pack", "options": {**content, "sources": [ds.name for ds in datasets],
                                                 "inputs": [_identity(ds) for ds in datasets]}}
    fingerprint = hashlib.sha256(json.dumps([producer["options"], sorted(it.key for it in items)]).encode()).hexdigest()
    fields = ["jpg"] + (["png"] if options.lossless else []) + (["label.npy.zst"] if labelled else []) + ["json"]
    info = SetInfo(num_classes=num_classes, class_names=class_names, fields=fields, producer=producer,
                   extra={"pseudo": any(ds.pseudo for ds in datasets)})
    # An object-store URL is written through a local staging folder (mirror.py).
    with ranked_output(out, rank, world_size) as (folder, mirror, done):
        run = ShardRun(RunSpec(folder, rank, world_size, producer, fingerprint, fixed_options=CONTENT_OPTIONS),
                       mirror)
        return done(_pack(run, datasets, items, info, options, progress))


def _pack(run, datasets, items, info, options, progress):
    mine = run.mine(items, lambda it: it.key)
    writer = run.open(info, options.shard_size)
    todo = todo_of(mine, writer, lambda it: it.key)
    counts = {"transcoded": 0, "encoded": 0, "kept": 0, "images_in_bytes": 0, "images_out_bytes": 0}
    done, total, start = len(mine) - len(todo), len(mine), time.perf_counter()
    if progress:
        progress(done, total)
    tasks = [PackTask(i, it) for i, it in enumerate(todo)]
    try:
        for i, sample, error, read in _imap(tasks, options.workers, (datasets, options, info.num_classes)):
            if error is not None:
                run.fail(todo[i].key, *error)
            else:
                counts[json.loads(sample["json"])["image"]] += 1
                counts["images_in_bytes"] += read
                counts["images_out_bytes"] += len(sample.get("jpg") or sample.get("png"))
                writer.write(sample)
            done += 1
            if progress:
                progress(done, total)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return run.finish(packed=len(todo) - run.failed, skipped=len(mine) - len(todo), total=total,
                      seconds=time.perf_counter() - start, **counts, failed=run.failed)
