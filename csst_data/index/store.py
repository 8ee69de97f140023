"""The centroid index's store: a zarr v3 group that any zarr reader opens.

    index = CentroidIndex.open("index.zarr")   # fails if a source changed
    index.components(13)                        # every car: image, y, x, area, bbox

`write_index` writes a group through a temporary folder that is renamed into
place; `hash_content` is the content hash it records (everything but paths).
The layout is documented in docs/formats.md. Source paths in `attrs.sources`
are relative to the folder that holds the index (`index_base`), so data and
index move together.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import cached_property
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from csst_data.datasets import CONTENT_PREFIX, Dataset, from_attrs, source_name

FORMAT = "csst-centroid-index"
# 2: sources are stored as datasets (csst_data.datasets `to_attrs`).
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


def index_base(out: str) -> str:
    """The folder that an index's source paths are relative to: the one holding it."""
    return os.path.realpath(os.path.dirname(os.path.abspath(out)))


_TYPES = {**{f"images/{c}": t for c, t in IMAGE_COLUMNS.items()},
          **{f"components/{c}": t for c, t in COMPONENT_COLUMNS.items()}, "class_offsets": np.int64}
# Attributes that are about the arrays, not part of the content the hash covers.
_NOT_HASHED = ("content_hash", "array_sha256")


def _update(sha, name, arr):
    """Feed one array to a hash: its name, dtype, shape and bytes (strings joined by NUL)."""
    if _TYPES[name] is str:
        sha.update(f"{name} str {len(arr)}\n".encode())
        sha.update("\0".join(str(s) for s in arr).encode("utf-8"))
    else:
        # The declared dtype, little-endian: the hash of what is on disk.
        arr = np.ascontiguousarray(arr, dtype=np.dtype(_TYPES[name]).newbyteorder("<"))
        sha.update(f"{name} {arr.dtype.str} {arr.shape}\n".encode())
        sha.update(arr.tobytes())


def _named_arrays(images, comps, offsets):
    return ([(f"images/{c}", images[c]) for c in IMAGE_COLUMNS]
            + [(f"components/{c}", comps[c]) for c in COMPONENT_COLUMNS] + [("class_offsets", offsets)])


def array_digest(name: str, arr: np.ndarray) -> str:
    """sha256 of one index array as the index records it (`attrs.array_sha256`), so that a missing
    chunk (which zarr fills with the fill value) or a damaged one is noticed and named."""
    sha = hashlib.sha256()
    _update(sha, name, arr)
    return sha.hexdigest()


def hash_content(attrs: dict, images: dict, comps: dict, offsets: np.ndarray) -> str:
    """sha256 of an index's content: everything but paths and the hashes themselves."""
    sha = hashlib.sha256()
    meta = {k: v for k, v in attrs.items() if k not in _NOT_HASHED}
    meta["sources"] = [{k: v for k, v in s.items() if k not in _PATH_FIELDS} for s in attrs["sources"]]
    sha.update(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for name, arr in _named_arrays(images, comps, offsets):
        _update(sha, name, arr)
    return sha.hexdigest()


def write_index(out: str, attrs: dict, images: dict, comps: dict, offsets: np.ndarray) -> str:
    """Write the zarr group to a temporary folder, then rename it to `out`."""
    import asyncio

    import zarr.api.asynchronous as za
    from zarr.codecs import ZstdCodec
    from zarr.core.sync import sync

    attrs = dict(attrs, content_hash=hash_content(attrs, images, comps, offsets),
                 array_sha256={name: array_digest(name, arr) for name, arr in _named_arrays(images, comps, offsets)})
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


class CentroidIndex:
    """A centroid index on disk. Arrays are loaded on first use, once."""

    def __init__(self, path: str, group: Any) -> None:
        self.path = os.fspath(path)
        self.group = group
        self.attrs = dict(group.attrs)

    @classmethod
    def open(cls, path: str | os.PathLike, check_stale: bool = True) -> CentroidIndex:
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
    def num_classes(self) -> int:
        return int(self.attrs["num_classes"])

    @property
    def class_names(self) -> List[str]:
        return list(self.attrs["class_names"])

    @property
    def connectivity(self) -> int:
        return int(self.attrs["connectivity"])

    @property
    def min_area(self) -> int:
        return int(self.attrs["min_area"])

    @property
    def part(self) -> Optional[dict]:
        """{rank, world_size, start, stop, total} for a rank's part, else None."""
        return self.attrs.get("part")

    @property
    def sources(self) -> List[dict]:
        """The stored attributes of each source: kind, its dataset's fields, sha256, samples, pseudo."""
        return [dict(s, pseudo=bool(s.get("pseudo"))) for s in self.attrs["sources"]]

    @cached_property
    def datasets(self) -> List[Dataset]:
        """The sources as datasets (csst_data.datasets), with absolute paths."""
        base = index_base(self.path)
        return [from_attrs({k: v for k, v in s.items() if k not in ("sha256", "samples", "pseudo")}, base)
                for s in self.attrs["sources"]]

    def check_stale(self) -> None:
        """Raise StaleIndexError if a source changed or is gone."""
        try:
            datasets = self.datasets
        except (OSError, ValueError) as e:
            raise StaleIndexError(f"index {self.path} is stale: a source is missing or unreadable ({e}); "
                                  "rebuild it with --force") from e
        for ds, s in zip(datasets, self.attrs["sources"]):
            try:
                # The kind the build recorded: a content fingerprint is checked by content.
                current = ds.fingerprint(content=str(s["sha256"]).startswith(CONTENT_PREFIX),
                                         workers=min(8, os.cpu_count() or 1))
            except (OSError, ValueError) as e:
                raise StaleIndexError(f"index is stale: {ds.name} is missing or unreadable ({e}); "
                                      "rebuild it with --force") from e
            if current != s["sha256"]:
                raise StaleIndexError(f"index is stale: {ds.name} changed; rebuild it with --force")

    # -- tables --
    def _array(self, name):
        """The zarr array `name`; a deleted or unreadable one is an error naming the index and the array."""
        try:
            return self.group[name]
        except Exception as e:
            raise ValueError(f"index {self.path}: array {name} is missing or unreadable "
                             f"({type(e).__name__}: {e}); rebuild it with --force") from None

    def _load(self, name):
        """Array `name` read whole and checked against the checksum the build recorded: a missing chunk
        reads as the fill value without an error in zarr, so only the checksum can notice it."""
        try:
            arr = self._array(name)[...]
        except ValueError as e:
            if str(e).startswith(f"index {self.path}: "):
                raise
            raise ValueError(f"index {self.path}: array {name} cannot be read ({e}); rebuild it with --force") from None
        except Exception as e:
            raise ValueError(f"index {self.path}: array {name} cannot be read ({type(e).__name__}: {e}); "
                             "rebuild it with --force") from None
        want = (self.attrs.get("array_sha256") or {}).get(name)
        if want is not None and array_digest(name, arr) != want:
            raise ValueError(f"index {self.path}: array {name} is damaged or misses chunks (its checksum does "
                             "not match the one recorded at build time); rebuild it with --force")
        return arr

    @property
    def num_images(self) -> int:
        return int(self._array("images/key").shape[0])

    @property
    def num_components(self) -> int:
        return int(self._array("components/class").shape[0])

    @cached_property
    def images(self) -> Dict[str, np.ndarray]:
        """The images table: {column: numpy array}, one row per image."""
        return {c: self._load(f"images/{c}") for c in IMAGE_COLUMNS}

    @property
    def class_pixels(self) -> np.ndarray:
        """(N, C) int64: pixels of each class in each image."""
        return self.images["class_pixels"]

    @cached_property
    def class_offsets(self) -> np.ndarray:
        return self._load("class_offsets")

    @cached_property
    def _components(self):
        return {c: self._load(f"components/{c}") for c in COMPONENT_COLUMNS}

    def component_counts(self) -> np.ndarray:
        """(C,) int64: components of each class."""
        return np.diff(self.class_offsets)

    def components(self, c: int) -> Dict[str, np.ndarray]:
        """The components of class `c`: image, y, x, area, bbox (empty if absent)."""
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"class {c} is out of range: the index has {self.num_classes} classes")
        lo, hi = int(self.class_offsets[c]), int(self.class_offsets[c + 1])
        return {k: v[lo:hi] for k, v in self._components.items() if k != "class"}

    def absent_classes(self) -> List[int]:
        """Classes without a single component."""
        return [int(c) for c in np.flatnonzero(self.component_counts() == 0)]

    def content_hash(self) -> str:
        """sha256 of the index content (not paths): checkpoints record it."""
        if "content_hash" in self.attrs:
            return self.attrs["content_hash"]
        offsets = self.class_offsets
        return hash_content(self.attrs, self.images, self._components, offsets)

    def summary(self) -> dict:
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

    def tables(self) -> Tuple[dict, dict]:
        """(images, components) tables in memory, as a build makes them (str columns as object arrays)."""
        images = {c: (np.asarray(v, dtype=object) if IMAGE_COLUMNS[c] is str else v) for c, v in self.images.items()}
        comps = dict(self._components)
        return images, comps
