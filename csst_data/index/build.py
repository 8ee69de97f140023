"""Building the centroid index: every connected component of every class of a
dataset, written as the zarr group of `store.py`.

    build_index(["DATA/labeled", "PSEUDO"], "index.zarr", IndexOptions(workers=4))

A build lists the samples of each source (csst_data.datasets), splits them into
chunks that a process pool decodes and runs through the numba kernel
(components.py), then sorts the components by class and writes the group
(store.write_index). `rank`/`world_size` build a contiguous slice of the
samples into a part; `merge_indexes` joins parts into exactly the index a
single build writes, and `append=True` adds sources to an index without
recomputing the old ones.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import deque
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from csst_data import IGNORE
from csst_data.datasets import Dataset, as_dataset, declared_classes
from csst_data.index.components import components as find_components
from csst_data.index.store import (COMPONENT_COLUMNS, FORMAT, IMAGE_COLUMNS, VERSION, CentroidIndex, index_base,
                                   write_index)
from csst_data.store.codecs import label_decoder
from csst_data.store.locks import OutputLock
from csst_data.store.shards import RangeReader
from csst_data.workers import mp_context, worker_init

# Masks per pool task: small tasks keep the pipeline and the tail short.
TASK_MASKS = 32


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """How `build_index` builds an index; None: the datasets' (or the appended index's) own."""
    num_classes: Optional[int] = None            # None: declared by the datasets
    class_names: Optional[Sequence[str]] = None  # None: declared, else "0", "1", ...
    connectivity: Optional[int] = None           # 4 or 8 (None: 8)
    min_area: Optional[int] = None               # drop smaller components (None: 1)
    workers: int = 1                             # processes decoding masks
    check_images: bool = False                   # also decode every image once: a bad file fails now
    rank: Optional[int] = None                   # with world_size: write this rank's part
    world_size: Optional[int] = None
    append: bool = False                         # add the sources to the existing index
    force: bool = False                          # replace an existing index
    fingerprint: str = "stat"                    # how a source's change is noticed: "stat" (names, sizes,
                                                 # times) or "content" (sha256 of every file, on `workers` threads)


def part_path(out: str | os.PathLike, rank: int, world_size: int) -> str:
    """Where rank `rank` of `world_size` writes its part of index `out`."""
    stem, ext = os.path.splitext(os.fspath(out).rstrip(os.sep))
    return f"{stem}.part-{rank:05d}-of-{world_size:05d}{ext}"


# -- the worker --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MaskChunk:
    """One pool task: consecutive masks of one block of a dataset, and what the kernel needs."""
    dataset: Dataset
    shards: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    paths: np.ndarray
    names: List[str]
    images: Optional[dict]  # with --check-images: where each mask's image is
    num_classes: int
    connectivity: int
    min_area: int


_decode = None


def _process(task, reader=None):
    """Decode one chunk of masks and find their components (in any process). `reader`: the
    listing's RangeReader, in the process that lists (it keeps the remote shard just listed)."""
    global _decode
    if _decode is None:
        _decode = label_decoder()  # one buffer per process, reused across tasks
    t = task
    n = len(t.names)
    heights = np.empty(n, np.int32)
    widths = np.empty(n, np.int32)
    pixels = np.empty((n, t.num_classes), np.int64)
    parts = []
    own = reader is None
    reader = reader or RangeReader()
    try:
        for i in range(n):
            data = t.dataset.read(reader, t.shards[i], t.offsets[i], t.sizes[i], t.paths[i])
            mask = t.dataset.decode_label(data, t.names[i], decode=_decode)
            r = find_components(mask, t.num_classes, t.connectivity, t.min_area, key=t.names[i])
            if t.images is not None:
                _check_image(t.dataset, reader, t.images, i, mask.shape)
            heights[i], widths[i] = mask.shape
            pixels[i] = r["class_pixels"]
            parts.append((i, r))
    finally:
        if own:
            reader.close()
    return heights, widths, pixels, _joined_components(parts)


def _joined_components(parts):
    """The components of a chunk's masks, `image` numbering the mask within the chunk."""
    return {
        "image": np.concatenate([np.full(len(r["class"]), i, np.int32) for i, r in parts] or [np.empty(0, np.int32)]),
        **{c: np.concatenate([r[c] for _, r in parts] or [np.empty(0)]).astype(COMPONENT_COLUMNS[c])
           for c in ("class", "y", "x", "area")},
        "bbox": np.concatenate([r["bbox"] for _, r in parts] or [np.empty((0, 4), np.int32)]).astype(np.int32),
    }


def _check_image(dataset, reader, images, i, shape):
    """--check-images: decode sample i's image once, so a bad file is found now, not mid-training."""
    from csst_data.store.codecs import decode_image

    where = images["names"][i]
    if images["size"][i] == -1 and not images["path"][i]:
        raise ValueError(f"{where}: no image for this label")
    data = dataset.read(reader, images["shard"][i], images["offset"][i], images["size"][i], images["path"][i])
    try:
        pixels = decode_image(data)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if pixels.shape[:2] != shape:
        from csst_data.jpeg.structure import size_mismatch

        raise ValueError(f"{where}: {size_mismatch(data, pixels.shape[:2], shape)}")


def _tasks(dataset, cols, rows, chunk, options):
    """Tasks for rows `rows` (a range) of one block of a dataset's samples (a shard's, or a folder
    dataset's); `options`: the build's, resolved."""
    lo, hi = rows.start, rows.stop
    names = [dataset.describe(cols, i) for i in range(lo, hi)]
    image_names = [dataset.describe(cols, i, "image") for i in range(lo, hi)] if options.check_images else None
    for a in range(lo, hi, chunk):
        b = min(a + chunk, hi)
        images = None
        if options.check_images:
            images = {"shard": cols["shard"][a:b], "offset": cols["image_offset"][a:b], "size": cols["image_size"][a:b],
                      "path": cols["image_path"][a:b], "names": image_names[a - lo:b - lo]}
        yield MaskChunk(dataset, cols["shard"][a:b], cols["label_offset"][a:b], cols["label_size"][a:b],
                        cols["label_path"][a:b], names[a - lo:b - lo], images, options.num_classes,
                        options.connectivity, options.min_area)


# -- in-memory tables --------------------------------------------------------
def _sort_components(comps, num_classes):
    """Stable sort by class (keeps image, then raster order) + class_offsets."""
    order = np.argsort(comps["class"], kind="stable")
    comps = {k: v[order] for k, v in comps.items()}
    counts = np.bincount(comps["class"].astype(np.int64), minlength=num_classes)
    return comps, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _concat(tables, num_classes):
    """Join (images, comps) tables in order into one (images, comps, class_offsets)."""
    images = {c: np.concatenate([t[0][c] for t in tables]) for c in IMAGE_COLUMNS}
    shift = np.cumsum([0] + [len(t[0]["key"]) for t in tables[:-1]])
    comps = {c: np.concatenate([t[1][c] for t in tables]) for c in COMPONENT_COLUMNS if c != "image"}
    comps["image"] = np.concatenate([t[1]["image"].astype(np.int64) + s for t, s in zip(tables, shift)]).astype(np.int32)
    comps, offsets = _sort_components(comps, num_classes)
    return images, comps, offsets


def _empty_images(num_classes):
    out = {c: np.empty(0, dtype=object if t is str else t) for c, t in IMAGE_COLUMNS.items()}
    out["class_pixels"] = np.empty((0, num_classes), np.int64)
    return out


def _empty_components():
    out = {c: np.empty(0, t) for c, t in COMPONENT_COLUMNS.items()}
    out["bbox"] = np.empty((0, 4), np.int32)
    return out


def _source_attrs(dataset, out, **extra):
    return {**dataset.to_attrs(index_base(out)), **extra}


# -- building ----------------------------------------------------------------
def _resolve_classes(datasets, num_classes, class_names):
    """The index's class count and names: given, or declared by the datasets (which must agree),
    else "0", "1", ..."""
    num_classes, class_names = declared_classes(datasets, num_classes, class_names)
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is None:
        raise ValueError("the number of classes is unknown: give --num-classes (or class names) for "
                         f"{datasets[0].name}, or a spec file with \"classes\"")
    if not 1 <= num_classes <= IGNORE:
        raise ValueError(f"num_classes must be in 1..{IGNORE}, got {num_classes}")
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
    return num_classes, [str(n) for n in class_names]


class _Done:
    """A result computed in this process, next to the pool's AsyncResults."""

    def __init__(self, value):
        self.value = value

    def ready(self):
        return True

    def get(self):
        return self.value


def _run(tasks, workers, total, progress, reader=None):
    """Results of `_process` over the task iterator, in order (`reader`: for the tasks done here).

    `workers` processes work: a pool of workers - 1 plus this one, which also
    lists the shards (the task iterator) and collects results. On a machine
    with exactly `workers` cores a third busy process would slow the others.
    `progress(done, total)` is called after each task.
    """
    results = []
    count = 0

    def done(t, r):
        nonlocal count
        results.append(r)
        count += len(t.names)
        if callable(progress):
            progress(count, total)


    if workers <= 1:
        for t in tasks:
            done(t, _process(t, reader))
    else:
        # Compile (or load) the kernel before forking so workers inherit it.
        warm = np.zeros((1, 8), np.uint8)
        find_components(warm, 1)
        warm.flags.writeable = False  # decoded masks are read-only views
        find_components(warm, 1)
        ahead = 2 * (workers - 1)  # tasks queued per pool worker: enough to never starve
        with mp_context().Pool(workers - 1, initializer=worker_init()) as pool:
            pending = deque()
            for t in tasks:
                if sum(not r.ready() for _, r in pending) < ahead:
                    pending.append((t, pool.apply_async(_process, (t,))))
                else:
                    pending.append((t, _Done(_process(t, reader))))
                while pending and pending[0][1].ready():
                    t0, r = pending.popleft()
                    done(t0, r.get())
            while pending:
                t0, r = pending.popleft()
                done(t0, r.get())
    return results


def _build_table(datasets, blocks, source_base, rows, options, progress, reader=None):
    """Images table and components of global sample rows `rows` (a range)."""
    lo, hi = rows.start, rows.stop
    n = hi - lo
    chunk = max(1, min(TASK_MASKS, math.ceil(n / max(1, options.workers * 16))))
    pieces = []

    def tasks():
        start = 0
        for s, ds in enumerate(datasets):
            for count, columns, _ in blocks[s]:
                a, b = max(lo - start, 0), min(hi - start, count)
                if a < b:
                    cols = columns()
                    if len(cols["key"]) != count:
                        raise ValueError(f"{ds.name}: the manifest lists {count} samples in a shard "
                                         f"that holds {len(cols['key'])}")
                    piece = {c: (np.asarray(cols[c][a:b], dtype=object) if t is str else cols[c][a:b])
                             for c, t in IMAGE_COLUMNS.items() if c in cols}
                    piece["source"] = np.full(b - a, source_base + s, np.int32)
                    pieces.append(piece)
                    yield from _tasks(ds, cols, range(a, b), chunk, options)
                start += count

    results = _run(tasks(), options.workers, n, progress, reader)
    return _images_table(pieces, results, options.num_classes), _chunk_components(results)


def _images_table(pieces, results, num_classes):
    """The images table of the listed pieces, with the sizes and class pixels the tasks found."""
    images = _empty_images(num_classes)
    if pieces:
        images.update({c: np.concatenate([p[c] for p in pieces]) for c in pieces[0]})
    images["height"] = np.concatenate([r[0] for r in results] or [np.empty(0, np.int32)])
    images["width"] = np.concatenate([r[1] for r in results] or [np.empty(0, np.int32)])
    images["class_pixels"] = np.concatenate([r[2] for r in results] or [np.empty((0, num_classes), np.int64)])
    for c, t in IMAGE_COLUMNS.items():
        if t is not str:
            images[c] = images[c].astype(t)
    return images


def _chunk_components(results):
    """The tasks' components in one table, `image` numbering the rows of the whole build."""
    comps = [r[3] for r in results]
    if not comps:
        return _empty_components()
    shift = np.cumsum([0] + [len(r[0]) for r in results[:-1]])
    joined = {c: np.concatenate([x[c] for x in comps]) for c in COMPONENT_COLUMNS if c != "image"}
    joined["image"] = np.concatenate([x["image"] + s for x, s in zip(comps, shift)]).astype(np.int32)
    return joined


def build_index(sources: Sequence[Any], out: str | os.PathLike, options: IndexOptions = IndexOptions(),
                progress: Optional[Callable[[int, int], None]] = None) -> str:
    """Build the centroid index of `sources` (Datasets or SOURCE strings) into `out`.

    With `options.rank`/`world_size` this writes the part
    `part_path(out, rank, world_size)` holding a contiguous slice of the
    samples. With `append`, `sources` are added to the existing index `out`;
    `force` replaces an existing one (IndexOptions). `progress(done, total)` is
    called as masks are indexed. Returns the path written. One writer at a
    time: a second build of the same output raises OutputBusy.
    """
    out = os.fspath(out).rstrip(os.sep)
    rank, world_size = options.rank, options.world_size
    parted = world_size is not None and world_size > 1 and rank is not None
    with OutputLock(part_path(out, rank, world_size) if parted else out):
        return _build_index(sources, out, options, progress)


def _build_index(sources, out, options, progress):
    datasets = _datasets(sources)
    _check_options(options)
    parted = options.world_size is not None and options.world_size > 1
    old = _appended_to(out, datasets, options, parted) if options.append else None
    options = _with_defaults(options, old)
    target = part_path(out, options.rank, options.world_size) if parted else out
    if not options.append and os.path.exists(target) and not options.force:
        raise ValueError(f"{target} exists; pass --force to overwrite it (or --append to add sources)")
    # Fingerprint first: a source changing during the build then reads as stale (and an empty
    # or unreadable source is reported as such before anything is asked of its classes).
    prints = [ds.fingerprint(content=options.fingerprint == "content", workers=options.workers) for ds in datasets]
    num_classes, class_names = _resolve_classes(datasets, options.num_classes, options.class_names)
    if old is not None and class_names != old.class_names:
        raise ValueError(f"class names differ from those of {out}")
    options = dataclasses.replace(options, num_classes=num_classes, class_names=class_names)
    # One reader lists the shards and does the tasks run in this process: a remote shard listed
    # (fetched whole) is read from there, not again.
    reader = RangeReader()
    blocks = [ds.blocks(reader=reader) for ds in datasets]
    counts = [sum(block[0] for block in b) for b in blocks]
    total = sum(counts)
    rank, world_size = options.rank, options.world_size
    lo, hi = (total * rank // world_size, total * (rank + 1) // world_size) if parted else (0, total)
    base = len(old.sources) if old is not None else 0
    try:
        images, comps = _build_table(datasets, blocks, base, range(lo, hi), options, progress, reader)
    finally:
        reader.close()
    src_attrs = [_source_attrs(ds, target, sha256=p, samples=c, pseudo=ds.pseudo)
                 for ds, p, c in zip(datasets, prints, counts)]
    if old is not None:
        old_attrs = [_source_attrs(ds, target, sha256=s["sha256"], samples=s["samples"], pseudo=s["pseudo"])
                     for ds, s in zip(old.datasets, old.sources)]
        images, comps, offsets = _concat([old.tables(), (images, comps)], num_classes)
        src_attrs = old_attrs + src_attrs
    else:
        comps, offsets = _sort_components(comps, num_classes)
    attrs = {
        "format": FORMAT, "version": VERSION, "num_classes": num_classes, "class_names": class_names,
        "ignore_index": IGNORE, "connectivity": options.connectivity, "min_area": options.min_area,
        "sources": src_attrs,
    }
    if parted:
        attrs["part"] = {"rank": rank, "world_size": world_size, "start": lo, "stop": hi, "total": total}
    return write_index(target, attrs, images, comps, offsets)


def _datasets(sources):
    """The sources as datasets: at least one, none twice."""
    datasets = [as_dataset(s) for s in sources]
    if not datasets:
        raise ValueError("no sources given")
    seen = set()
    for ds in datasets:
        if ds.ident() in seen:
            raise ValueError(f"source {ds.name} is given twice")
        seen.add(ds.ident())
    return datasets


def _check_options(options):
    rank, world_size = options.rank, options.world_size
    if options.workers < 1:
        raise ValueError(f"workers must be >= 1, got {options.workers}")
    if options.fingerprint not in ("stat", "content"):
        raise ValueError(f"fingerprint must be 'stat' or 'content', got {options.fingerprint!r}")
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if world_size is not None and not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")


def _appended_to(out, datasets, options, parted):
    """The index that `append` adds `datasets` to, checked against the options and the sources."""
    if parted:
        raise ValueError("append cannot be combined with rank/world_size")
    if not os.path.exists(out):
        raise ValueError(f"{out}: no index to append to")
    old = CentroidIndex.open(out, check_stale=True)
    if old.part is not None:
        raise ValueError(f"{out} is a rank's part; merge the parts first")
    for name, given, have in (("connectivity", options.connectivity, old.connectivity),
                              ("min_area", options.min_area, old.min_area),
                              ("num_classes", options.num_classes, old.num_classes)):
        if given is not None and given != have:
            raise ValueError(f"{out} was built with {name}={have}, not {given}")
    old_ids = {ds.ident() for ds in old.datasets}
    for ds in datasets:
        if ds.ident() in old_ids:
            raise ValueError(f"source {ds.name} is already in {out}")
    return old


def _with_defaults(options, old):
    """The options with connectivity and min_area set (an appended index's own, else 8 and 1), checked."""
    if old is not None:
        options = dataclasses.replace(
            options, connectivity=old.connectivity, min_area=old.min_area, num_classes=old.num_classes,
            class_names=old.class_names if options.class_names is None else options.class_names)
    connectivity = 8 if options.connectivity is None else int(options.connectivity)
    min_area = 1 if options.min_area is None else int(options.min_area)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    return dataclasses.replace(options, connectivity=connectivity, min_area=min_area)


def merge_indexes(parts: Sequence[str | os.PathLike], out: str | os.PathLike, force: bool = False) -> str:
    """Join the parts of a `--rank/--world-size` build into one index at `out`,
    identical to the index a single build writes."""
    if not parts:
        raise ValueError("no parts given")
    out = os.fspath(out).rstrip(os.sep)
    with OutputLock(out):
        return _merge(parts, out, force)


def _merge(parts, out, force):
    if os.path.exists(out) and not force:
        raise ValueError(f"{out} exists; pass --force to overwrite it")
    idx = [CentroidIndex.open(p, check_stale=True) for p in parts]
    for p, i in zip(parts, idx):
        if i.part is None:
            raise ValueError(f"{p}: not a part of a --rank/--world-size build")
    idx.sort(key=lambda i: i.part["rank"])
    first = idx[0]
    world = first.part["world_size"]
    ranks = [i.part["rank"] for i in idx]
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        raise ValueError(f"parts do not cover ranks 0..{world - 1}: got ranks {ranks}"
                         + (f", missing {missing}" if missing else ""))

    def ident(i):
        return ([(ds.ident(), s["sha256"], s["samples"]) for ds, s in zip(i.datasets, i.sources)], i.num_classes, i.class_names, i.connectivity, i.min_area,
                i.part["world_size"], i.part["total"])

    for i in idx[1:]:
        if ident(i) != ident(first):
            raise ValueError(f"{i.path} and {first.path} are parts of different builds "
                             "(sources, classes, connectivity or min_area differ)")
    stop = 0
    for i in idx:
        if i.part["start"] != stop or i.part["stop"] - i.part["start"] != i.num_images:
            raise ValueError(f"{i.path}: rows {i.part['start']}:{i.part['stop']} do not follow the previous part")
        stop = i.part["stop"]
    if stop != first.part["total"]:
        raise ValueError(f"parts hold {stop} of {first.part['total']} samples")
    images, comps, offsets = _concat([i.tables() for i in idx], first.num_classes)
    attrs = {k: v for k, v in first.attrs.items() if k not in ("part", "content_hash")}
    attrs["sources"] = [_source_attrs(ds, out, sha256=s["sha256"], samples=s["samples"], pseudo=s["pseudo"])
                        for ds, s in zip(first.datasets, first.sources)]
    return write_index(out, attrs, images, comps, offsets)

