"""The centroid index: every connected component of every class of a dataset,
stored as a zarr v3 group (layout in DESIGN.md) that any zarr reader opens.

    build_index(["DATA/labeled", "PSEUDO"], "index.zarr", workers=4)
    index = CentroidIndex.open("index.zarr")   # fails if a source changed
    index.components(13)                        # every car: image, y, x, area, bbox

A build lists the samples of each source (datasets.py), splits them into chunks
that a process pool decodes and runs through the numba kernel
(components.py), then sorts the components by class and writes the group
through a temporary folder that is renamed into place. `rank`/`world_size`
build a contiguous slice of the samples into a part; `merge_indexes` joins
parts into exactly the index a single build writes, and `append=True` adds
sources to an index without recomputing the old ones.

The layout is documented in docs/formats.md. Source paths in
`attrs.sources` are relative to the folder that holds the index, so data and
index move together.
"""

import hashlib
import json
import math
import os
import shutil
from collections import deque
from functools import cached_property

import numpy as np

from csst_data import IGNORE
from csst_data.index.components import components as find_components
from csst_data.datasets import as_dataset, declared_classes, from_attrs, source_name
from csst_data.store.codecs import label_decoder
from csst_data.store.locks import OutputLock
from csst_data.workers import die_with_parent, mp_context
from csst_data.store.shards import RangeReader

FORMAT = "csst-centroid-index"
# 2: sources are stored as datasets (datasets.py `to_attrs`).
VERSION = 2
ZSTD_LEVEL = 5
# Masks per pool task: small tasks keep the pipeline and the tail short.
TASK_MASKS = 32
# images/* columns: name -> dtype (str columns are zarr variable-length strings).
IMAGE_COLUMNS = {
    "key": str, "source": np.int32, "shard": np.int32,
    "label_offset": np.int64, "label_size": np.int64, "image_offset": np.int64, "image_size": np.int64,
    "height": np.int32, "width": np.int32, "class_pixels": np.int64,
    "label_path": str, "image_path": str,
}
COMPONENT_COLUMNS = {"image": np.int32, "class": np.int16, "y": np.float32, "x": np.float32,
                     "area": np.int64, "bbox": np.int32}
# Source attributes that are paths: left out of the content hash, so a moved index keeps its hash.
_PATH_FIELDS = ("path", "data_root", "img_dir", "ann_dir", "split")


class StaleIndexError(ValueError):
    """An index whose sources changed since it was built."""


def part_path(out, rank, world_size):
    """Where rank `rank` of `world_size` writes its part of index `out`."""
    stem, ext = os.path.splitext(os.fspath(out).rstrip(os.sep))
    return f"{stem}.part-{rank:05d}-of-{world_size:05d}{ext}"


# -- the worker --------------------------------------------------------------
_decode = None


def _process(task, reader=None):
    """Decode one chunk of masks and find their components (in any process). `reader`: the
    listing's RangeReader, in the process that lists (it keeps the remote shard just listed)."""
    global _decode
    if _decode is None:
        _decode = label_decoder()  # one buffer per process, reused across tasks
    dataset, shards, offsets, sizes, paths, names, images, num_classes, connectivity, min_area = task
    n = len(names)
    heights = np.empty(n, np.int32)
    widths = np.empty(n, np.int32)
    pixels = np.empty((n, num_classes), np.int64)
    parts = []
    own = reader is None
    reader = reader or RangeReader()
    try:
        for i in range(n):
            data = dataset.read(reader, shards[i], offsets[i], sizes[i], paths[i])
            mask = dataset.decode_label(data, names[i], decode=_decode)
            r = find_components(mask, num_classes, connectivity, min_area, key=names[i])
            if images is not None:
                _check_image(dataset, reader, images, i, mask.shape)
            heights[i], widths[i] = mask.shape
            pixels[i] = r["class_pixels"]
            parts.append((i, r))
    finally:
        if own:
            reader.close()
    comps = {
        "image": np.concatenate([np.full(len(r["class"]), i, np.int32) for i, r in parts] or [np.empty(0, np.int32)]),
        **{c: np.concatenate([r[c] for _, r in parts] or [np.empty(0)]).astype(COMPONENT_COLUMNS[c])
           for c in ("class", "y", "x", "area")},
        "bbox": np.concatenate([r["bbox"] for _, r in parts] or [np.empty((0, 4), np.int32)]).astype(np.int32),
    }
    return heights, widths, pixels, comps


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


def _tasks(dataset, cols, lo, hi, chunk, params, check_images=False):
    """Tasks for rows lo:hi of one block of a dataset's samples (a shard's, or a folder dataset's)."""
    names = [dataset.describe(cols, i) for i in range(lo, hi)]
    image_names = [dataset.describe(cols, i, "image") for i in range(lo, hi)] if check_images else None
    for a in range(lo, hi, chunk):
        b = min(a + chunk, hi)
        images = None
        if check_images:
            images = {"shard": cols["shard"][a:b], "offset": cols["image_offset"][a:b], "size": cols["image_size"][a:b],
                      "path": cols["image_path"][a:b], "names": image_names[a - lo:b - lo]}
        yield (dataset, cols["shard"][a:b], cols["label_offset"][a:b], cols["label_size"][a:b],
               cols["label_path"][a:b], names[a - lo:b - lo], images, *params)


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


# -- writing -----------------------------------------------------------------
def _index_base(out):
    return os.path.realpath(os.path.dirname(os.path.abspath(out)))


def _source_attrs(dataset, out, **extra):
    return {**dataset.to_attrs(_index_base(out)), **extra}


def _hash(attrs, images, comps, offsets):
    """sha256 of an index's content: everything but paths and the hash itself."""
    sha = hashlib.sha256()
    meta = {k: v for k, v in attrs.items() if k not in ("content_hash",)}
    meta["sources"] = [{k: v for k, v in s.items() if k not in _PATH_FIELDS} for s in attrs["sources"]]
    sha.update(json.dumps(meta, sort_keys=True).encode("utf-8"))
    arrays = [(f"images/{c}", images[c]) for c in IMAGE_COLUMNS]
    arrays += [(f"components/{c}", comps[c]) for c in COMPONENT_COLUMNS] + [("class_offsets", offsets)]
    types = {**{f"images/{c}": t for c, t in IMAGE_COLUMNS.items()},
             **{f"components/{c}": t for c, t in COMPONENT_COLUMNS.items()}, "class_offsets": np.int64}
    for name, arr in arrays:
        if types[name] is str:
            data = "\0".join(str(s) for s in arr).encode("utf-8")
            sha.update(f"{name} str {len(arr)}\n".encode())
        else:
            # The declared dtype, little-endian: the hash of what is on disk.
            arr = np.ascontiguousarray(arr, dtype=np.dtype(types[name]).newbyteorder("<"))
            data = arr.tobytes()
            sha.update(f"{name} {arr.dtype.str} {arr.shape}\n".encode())
        sha.update(data)
    return sha.hexdigest()


def _write(out, attrs, images, comps, offsets):
    """Write the zarr group to a temporary folder, then rename it to `out`."""
    import asyncio

    import zarr.api.asynchronous as za
    from zarr.codecs import ZstdCodec
    from zarr.core.sync import sync

    attrs = dict(attrs, content_hash=_hash(attrs, images, comps, offsets))
    out = os.fspath(out).rstrip(os.sep)
    tmp, old = f"{out}.tmp", f"{out}.old"
    for leftover in (tmp, old):  # of a killed build
        if os.path.exists(leftover):
            shutil.rmtree(leftover)

    def data(arr, dtype):
        if dtype is str:
            # numpy >= 2 strings become zarr variable-length strings; older
            # numpy gets fixed-width ones.
            return np.asarray(arr, dtype=np.dtypes.StringDType() if hasattr(np.dtypes, "StringDType") else str)
        return np.ascontiguousarray(arr, dtype=dtype)

    def chunks(arr):
        row = int(np.prod(arr.shape[1:], dtype=np.int64)) or 1
        return (max(1, min(arr.shape[0], (1 << 20) // row)),) + arr.shape[1:]

    async def write_all():
        # All arrays at once: zarr's per-array overhead would dominate small builds.
        root = await za.create_group(store=tmp, zarr_format=3, attributes=attrs)
        groups = {"images": await root.create_group("images"), "components": await root.create_group("components")}
        arrays = [(groups["images"], c, data(images[c], t)) for c, t in IMAGE_COLUMNS.items()]
        arrays += [(groups["components"], c, data(comps[c], t)) for c, t in COMPONENT_COLUMNS.items()]
        arrays.append((root, "class_offsets", data(offsets, np.int64)))
        # write_empty_chunks: skip zarr's per-chunk comparison with the fill value.
        await asyncio.gather(*[g.create_array(name, data=arr, chunks=chunks(arr), compressors=ZstdCodec(level=ZSTD_LEVEL),
                                              config={"write_empty_chunks": True}) for g, name, arr in arrays])

    sync(write_all())
    # Swap in the finished folder; a crash leaves either the old index or
    # the new one, plus a temporary folder that the next build removes.
    if os.path.exists(out):
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out)
    return out


# -- reading -----------------------------------------------------------------
class CentroidIndex:
    """A centroid index on disk. Arrays are loaded on first use, once."""

    def __init__(self, path, group):
        self.path = os.fspath(path)
        self.group = group
        self.attrs = dict(group.attrs)

    @classmethod
    def open(cls, path, check_stale=True):
        import zarr

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"{path}: no such index")
        try:
            group = zarr.open_group(path, mode="r", zarr_format=3)
        except Exception as e:
            raise ValueError(f"{path}: not a zarr v3 group ({e})") from e
        fmt, version = group.attrs.get("format"), group.attrs.get("version")
        if fmt != FORMAT:
            raise ValueError(f"{path}: format is {fmt!r}, expected {FORMAT!r}")
        if version != VERSION:
            raise ValueError(f"{path}: index version {version} is not supported (expected {VERSION})")
        index = cls(path, group)
        if check_stale:
            index.check_stale()
        return index

    # -- metadata --
    @property
    def num_classes(self):
        return int(self.attrs["num_classes"])

    @property
    def class_names(self):
        return list(self.attrs["class_names"])

    @property
    def connectivity(self):
        return int(self.attrs["connectivity"])

    @property
    def min_area(self):
        return int(self.attrs["min_area"])

    @property
    def part(self):
        """{rank, world_size, start, stop, total} for a rank's part, else None."""
        return self.attrs.get("part")

    @property
    def sources(self):
        """The stored attributes of each source: kind, its dataset's fields, sha256, samples, pseudo."""
        return [dict(s, pseudo=bool(s.get("pseudo"))) for s in self.attrs["sources"]]

    @cached_property
    def datasets(self):
        """The sources as datasets (datasets.py), with absolute paths."""
        base = _index_base(self.path)
        return [from_attrs({k: v for k, v in s.items() if k not in ("sha256", "samples", "pseudo")}, base)
                for s in self.attrs["sources"]]

    def check_stale(self):
        """Raise StaleIndexError if a source changed or is gone."""
        try:
            datasets = self.datasets
        except (OSError, ValueError) as e:
            raise StaleIndexError(f"index {self.path} is stale: a source is missing or unreadable ({e}); "
                                  "rebuild it with --force") from e
        for ds, s in zip(datasets, self.attrs["sources"]):
            try:
                current = ds.fingerprint()
            except (OSError, ValueError) as e:
                raise StaleIndexError(f"index is stale: {ds.name} is missing or unreadable ({e}); "
                                      "rebuild it with --force") from e
            if current != s["sha256"]:
                raise StaleIndexError(f"index is stale: {ds.name} changed; rebuild it with --force")

    # -- tables --
    @property
    def num_images(self):
        return int(self.group["images/key"].shape[0])

    @property
    def num_components(self):
        return int(self.group["components/class"].shape[0])

    @cached_property
    def images(self):
        """The images table: {column: numpy array}, one row per image."""
        return {c: self.group[f"images/{c}"][...] for c in IMAGE_COLUMNS}

    @property
    def class_pixels(self):
        """(N, C) int64: pixels of each class in each image."""
        return self.images["class_pixels"]

    @cached_property
    def class_offsets(self):
        return self.group["class_offsets"][...]

    @cached_property
    def _components(self):
        return {c: self.group[f"components/{c}"][...] for c in COMPONENT_COLUMNS}

    def component_counts(self):
        """(C,) int64: components of each class."""
        return np.diff(self.class_offsets)

    def components(self, c):
        """The components of class `c`: image, y, x, area, bbox (empty if absent)."""
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} is out of range: the index has {self.num_classes} classes")
        lo, hi = int(self.class_offsets[c]), int(self.class_offsets[c + 1])
        return {k: v[lo:hi] for k, v in self._components.items() if k != "class"}

    def absent_classes(self):
        """Classes without a single component."""
        return [int(c) for c in np.flatnonzero(self.component_counts() == 0)]

    def content_hash(self):
        """sha256 of the index content (not paths): checkpoints record it."""
        if "content_hash" in self.attrs:
            return self.attrs["content_hash"]
        offsets = self.class_offsets
        return _hash(self.attrs, self.images, self._components, offsets)

    def summary(self):
        """Per-class statistics: components, images containing the class, share
        of labelled pixels, median component area; plus totals and absent classes."""
        counts = self.component_counts()
        pixels = self.class_pixels
        total = pixels.sum()
        in_images = (pixels > 0).sum(axis=0)
        classes = []
        for c in range(self.num_classes):
            area = self.components(c)["area"]
            classes.append({
                "id": c, "name": self.class_names[c], "components": int(counts[c]),
                "images": int(in_images[c]), "pixels": int(pixels[:, c].sum()),
                "pixel_share": float(pixels[:, c].sum() / total) if total else 0.0,
                "median_area": float(np.median(area)) if len(area) else None,
            })
        return {
            "path": self.path, "num_images": self.num_images, "num_components": self.num_components,
            "num_classes": self.num_classes, "connectivity": self.connectivity, "min_area": self.min_area,
            "sources": [{"kind": s["kind"], "name": source_name(s), "samples": s.get("samples"), "pseudo": s["pseudo"]}
                        for s in self.sources],
            "part": self.part, "classes": classes,
            "absent_classes": [self.class_names[c] for c in self.absent_classes()],
            "content_hash": self.content_hash(),
        }

    def _table(self):
        images = {c: (np.asarray(v, dtype=object) if IMAGE_COLUMNS[c] is str else v) for c, v in self.images.items()}
        comps = dict(self._components)
        return images, comps


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
        count += len(t[5])
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
        with mp_context().Pool(workers - 1, initializer=die_with_parent) as pool:
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


def _build_table(datasets, blocks, source_base, lo, hi, num_classes, connectivity, min_area, workers, progress,
                 check_images=False, reader=None):
    """Images table and components of global sample rows lo:hi."""
    params = (num_classes, connectivity, min_area)
    n = hi - lo
    chunk = max(1, min(TASK_MASKS, math.ceil(n / max(1, workers * 16))))
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
                    yield from _tasks(ds, cols, a, b, chunk, params, check_images)
                start += count

    results = _run(tasks(), workers, n, progress, reader)
    images = _empty_images(num_classes)
    if pieces:
        images.update({c: np.concatenate([p[c] for p in pieces]) for c in pieces[0]})
    images["height"] = np.concatenate([r[0] for r in results] or [np.empty(0, np.int32)])
    images["width"] = np.concatenate([r[1] for r in results] or [np.empty(0, np.int32)])
    images["class_pixels"] = np.concatenate([r[2] for r in results] or [np.empty((0, num_classes), np.int64)])
    comps = [r[3] for r in results]
    shift = np.cumsum([0] + [len(r[0]) for r in results[:-1]])
    if comps:
        joined = {c: np.concatenate([x[c] for x in comps]) for c in COMPONENT_COLUMNS if c != "image"}
        joined["image"] = np.concatenate([x["image"] + s for x, s in zip(comps, shift)]).astype(np.int32)
    else:
        joined = _empty_components()
    for c, t in IMAGE_COLUMNS.items():
        if t is not str:
            images[c] = images[c].astype(t)
    return images, joined


def build_index(sources, out, num_classes=None, class_names=None, connectivity=None, min_area=None, workers=1,
                rank=None, world_size=None, append=False, force=False, progress=None, check_images=False):
    """Build the centroid index of `sources` (Datasets or SOURCE strings) into `out`.

    connectivity: 4 or 8 (default 8); min_area: drop smaller components
    (default 1). With `rank`/`world_size` this writes the part
    `part_path(out, rank, world_size)` holding a contiguous slice of the
    samples. With `append`, `sources` are added to the existing index `out`;
    `force` replaces an existing one. `progress(done, total)` is called as
    masks are indexed. `check_images` also decodes every image once (a bad
    file is an error naming it now, not in the middle of training). Returns the
    path written. One writer at a time: a second build of the same output
    raises OutputBusy.
    """
    out = os.fspath(out).rstrip(os.sep)
    parted = world_size is not None and world_size > 1 and rank is not None
    with OutputLock(part_path(out, rank, world_size) if parted else out):
        return _build_index(sources, out, num_classes, class_names, connectivity, min_area, workers, rank,
                            world_size, append, force, progress, check_images)


def _build_index(sources, out, num_classes, class_names, connectivity, min_area, workers, rank, world_size, append,
                 force, progress, check_images=False):
    datasets = [as_dataset(s) for s in sources]
    if not datasets:
        raise ValueError("no sources given")
    seen = set()
    for ds in datasets:
        if ds.ident() in seen:
            raise ValueError(f"source {ds.name} is given twice")
        seen.add(ds.ident())
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if world_size is not None and not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    parted = world_size is not None and world_size > 1

    old = None
    if append:
        if parted:
            raise ValueError("append cannot be combined with rank/world_size")
        if not os.path.exists(out):
            raise ValueError(f"{out}: no index to append to")
        old = CentroidIndex.open(out, check_stale=True)
        if old.part is not None:
            raise ValueError(f"{out} is a rank's part; merge the parts first")
        for name, given, have in (("connectivity", connectivity, old.connectivity),
                                  ("min_area", min_area, old.min_area), ("num_classes", num_classes, old.num_classes)):
            if given is not None and given != have:
                raise ValueError(f"{out} was built with {name}={have}, not {given}")
        old_ids = {ds.ident() for ds in old.datasets}
        for ds in datasets:
            if ds.ident() in old_ids:
                raise ValueError(f"source {ds.name} is already in {out}")
        connectivity, min_area, num_classes = old.connectivity, old.min_area, old.num_classes
        class_names = old.class_names if class_names is None else class_names
    connectivity = 8 if connectivity is None else int(connectivity)
    min_area = 1 if min_area is None else int(min_area)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    target = part_path(out, rank, world_size) if parted else out
    if not append and os.path.exists(target) and not force:
        raise ValueError(f"{target} exists; pass --force to overwrite it (or --append to add sources)")
    # Fingerprint first: a source changing during the build then reads as stale (and an empty
    # or unreadable source is reported as such before anything is asked of its classes).
    prints = [ds.fingerprint() for ds in datasets]
    num_classes, class_names = _resolve_classes(datasets, num_classes, class_names)
    if old is not None and class_names != old.class_names:
        raise ValueError(f"class names differ from those of {out}")
    # One reader lists the shards and does the tasks run in this process: a remote shard listed
    # (fetched whole) is read from there, not again.
    reader = RangeReader()
    blocks = [ds.blocks(reader=reader) for ds in datasets]
    counts = [sum(block[0] for block in b) for b in blocks]
    total = sum(counts)
    lo, hi = (total * rank // world_size, total * (rank + 1) // world_size) if parted else (0, total)
    base = len(old.sources) if old is not None else 0
    try:
        images, comps = _build_table(datasets, blocks, base, lo, hi, num_classes, connectivity, min_area, workers,
                                     progress, check_images, reader)
    finally:
        reader.close()
    src_attrs = [_source_attrs(ds, target, sha256=p, samples=c, pseudo=ds.pseudo)
                 for ds, p, c in zip(datasets, prints, counts)]
    if old is not None:
        old_attrs = [_source_attrs(ds, target, sha256=s["sha256"], samples=s["samples"], pseudo=s["pseudo"])
                     for ds, s in zip(old.datasets, old.sources)]
        images, comps, offsets = _concat([old._table(), (images, comps)], num_classes)
        src_attrs = old_attrs + src_attrs
    else:
        comps, offsets = _sort_components(comps, num_classes)
    attrs = {
        "format": FORMAT, "version": VERSION, "num_classes": num_classes, "class_names": class_names,
        "ignore_index": IGNORE, "connectivity": connectivity, "min_area": min_area, "sources": src_attrs,
    }
    if parted:
        attrs["part"] = {"rank": rank, "world_size": world_size, "start": lo, "stop": hi, "total": total}
    return _write(target, attrs, images, comps, offsets)


def merge_indexes(parts, out, force=False):
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
    images, comps, offsets = _concat([i._table() for i in idx], first.num_classes)
    attrs = {k: v for k, v in first.attrs.items() if k not in ("part", "content_hash")}
    attrs["sources"] = [_source_attrs(ds, out, sha256=s["sha256"], samples=s["samples"], pseudo=s["pseudo"])
                        for ds, s in zip(first.datasets, first.sources)]
    return _write(out, attrs, images, comps, offsets)

