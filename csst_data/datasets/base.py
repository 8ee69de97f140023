"""What every dataset offers, and the sample columns they list.

Every kind of dataset (`ShardSet`, `FolderDataset`) has the same few methods:
`samples()` lists the samples as columns (key, shard, byte ranges, relative
paths), `fingerprint()` hashes what they were built from, `read(reader, ...)`
returns an image's or label's bytes, `decode_label(data)` turns label bytes into
class ids (uint8, 255 = ignore), `iter()` yields decoded samples in order, and
`classes` / `num_classes` name the classes where the dataset declares them.
`to_attrs` / `from_attrs` store a dataset in an index's attributes and bring it
back.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from csst_data.store.codecs import LabelDecoder
from csst_data.store.verify import file_sha256
from csst_data.store.shards import RangeReader

SAMPLE_COLUMNS = ("key", "shard", "label_offset", "label_size", "image_offset", "image_size",
                  "label_path", "image_path")
_KEY_SUB = re.compile(r"[.\s/\\]+")

Columns = dict  # column name (SAMPLE_COLUMNS) -> list, or int64 array for the numeric columns
Block = tuple  # (sample count, function returning the block's Columns, shard file or None)


def sanitise_key(stem: str) -> str:
    """Sample key from a file's stem: dots, whitespace and separators become '_'.

    `aachen/aachen_000000_000019_leftImg8bit` -> `aachen_aachen_000000_000019_leftImg8bit`
    (keys may not hold dots or separators; webdataset splits member names at the first dot).
    """
    key = _KEY_SUB.sub("_", stem).strip("_")
    if not key:
        raise ValueError(f"{stem!r}: cannot make a sample key from this path")
    return key


def new_columns() -> Columns:
    """Empty sample columns."""
    return {k: [] for k in SAMPLE_COLUMNS}


def int_columns(cols: Columns) -> Columns:
    """`cols` with its numeric columns as int64 arrays."""
    for c in ("shard", "label_offset", "label_size", "image_offset", "image_size"):
        cols[c] = np.asarray(cols[c], dtype=np.int64)
    return cols


def join_columns(parts: Iterable[Columns]) -> Columns:
    """The columns of several blocks, one after the other."""
    cols = new_columns()
    for p in parts:
        for c in cols:
            cols[c].extend(p[c])
    return int_columns(cols)


class Dataset:
    """What every kind of dataset offers (see the module docstring)."""

    kind: str | None = None  # the name `to_attrs` stores and `KINDS` finds the class by

    @property
    def name(self) -> str:
        """Short human-readable name, for messages."""
        raise NotImplementedError

    @property
    def classes(self) -> list[str] | None:
        """Class names the dataset declares, or None."""
        return None

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def pseudo(self) -> bool:
        """Whether the labels are a teacher's (csst label), not human labels."""
        return False

    def ident(self) -> str:
        """What makes two datasets the same (absolute paths and reading options)."""
        return json.dumps(self.to_attrs(None), sort_keys=True)

    def blocks(self, labels: bool | None = True, reader: RangeReader | None = None) -> list[Block]:
        """The samples as blocks in order: [(count, function returning the block's columns, shard file or None)].

        One block by default; a shard set has one per shard, listed only when needed (with the
        pass's `reader`, which then keeps a remote shard for the reads that follow).
        """
        cols = self.samples(labels)
        return [(len(cols["key"]), lambda: cols, None)]

    def samples(self, labels: bool | None = True) -> Columns:
        """Columns of every sample; with labels=True a sample without a label is an error,
        with None labels are listed where there are some."""
        raise NotImplementedError

    def read(self, reader: RangeReader, shard: int, offset: int, size: int, path: str) -> bytes:
        """Bytes of one image or label, given its columns (shard, byte range, relative path)."""
        raise NotImplementedError

    def read_ranges(self, reader: RangeReader, shard: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of several (offset, size) ranges of one shard (a shard set's), by as few reads as possible."""
        return [self.read(reader, shard, o, n, "") for o, n in ranges]

    def decode_label(self, data: bytes, name: str | None = None, decode: LabelDecoder | None = None) -> np.ndarray:
        """Label bytes -> uint8 H x W class ids (255 = ignore). `decode` may replace
        the plain `.npy.zst` decoder (e.g. `label_decoder()` reusing a buffer)."""
        raise NotImplementedError

    def image_refs(self) -> list[tuple[str, str | tuple]]:
        """[(key, ref)] of every image: ref is a file path or (tar path, offset, size, member name)."""
        raise NotImplementedError

    has_topk: bool = False  # whether samples may carry top-k soft labels

    def topk(self, reader: RangeReader, shard: int, key: str) -> tuple[bytes, bytes] | None:
        """(top-k class ids bytes, probabilities bytes) of a sample's soft label, or None."""
        return None

    has_confidence: bool = False  # whether samples may carry the teacher's per-pixel confidence

    def confidence(self, reader: RangeReader, shard: int, key: str) -> bytes | None:
        """The `confidence.npy.zst` bytes of a sample (uint8 H x W, round(p * 255)), or None."""
        return None

    def iter(self, images: bool = True, labels: bool = True, reader: RangeReader | None = None) -> Iterator[dict]:
        """Yield dicts in order: key, image (bytes or None), label (class ids or None),
        meta (a shard sample's decoded .json member, or None), dataset."""
        own = reader is None
        reader = reader or RangeReader()
        try:
            for count, columns, _ in self.blocks(labels, reader):
                cols = columns()
                for i in range(count):
                    yield self._sample(cols, i, images, labels, reader)
        finally:
            if own:
                reader.close()

    def check(self, num_classes: int | None) -> None:
        """Read every sample once, before it is needed (a validation set before training):
        labelled, with an image, image and label of one size, class ids < num_classes or 255.
        Raises ValueError naming the file (or shard member) and the problem."""
        from PIL import Image

        from csst_data.store.codecs import check_label

        reader = RangeReader()
        try:
            for count, columns, _ in self.blocks(True, reader):
                cols = columns()
                for i in range(count):
                    where = self.describe(cols, i)
                    if cols["image_size"][i] == -1 and not cols["image_path"][i]:
                        raise ValueError(f"{where}: no image for this label")
                    s = self._sample(cols, i, True, True, reader)
                    check_label(s["label"], num_classes, where)
                    try:
                        w, h = Image.open(io.BytesIO(s["image"])).size  # the header only
                    except Exception as e:
                        raise ValueError(f"{self.describe(cols, i, 'image')}: not a readable image ({e})") from None
                    if (h, w) != s["label"].shape:
                        from csst_data.jpeg.structure import size_mismatch

                        raise ValueError(f"{self.describe(cols, i, 'image')}: "
                                         f"{size_mismatch(s['image'], (h, w), s['label'].shape)} ({where})")
        finally:
            reader.close()

    def _sample(self, cols, i, images, labels, reader):
        key = cols["key"][i]
        name = self.describe(cols, i, "label" if labels else "image")
        out = {"key": key, "image": None, "label": None, "meta": None, "dataset": self, "name": name}
        if images and cols["image_size"][i] != -1 or images and cols["image_path"][i]:
            out["image"] = self.read(reader, cols["shard"][i], cols["image_offset"][i], cols["image_size"][i],
                                     cols["image_path"][i])
        if labels:
            data = self.read(reader, cols["shard"][i], cols["label_offset"][i], cols["label_size"][i],
                             cols["label_path"][i])
            out["label"] = self.decode_label(data, name)
        return out

    def describe(self, cols: Mapping, i: int, what: str = "label") -> str:
        """Where sample i's label (or image) lives, for messages."""
        raise NotImplementedError

    def locate(self, what: str, key: str, shard: int = -1, offset: int = -1, path: str = "") -> str:
        """`describe` of one sample given its column values."""
        cols = {"key": [key], "shard": [shard], f"{what}_offset": [offset], f"{what}_path": [path]}
        return self.describe(cols, 0, what)

    def fingerprint(self, content: bool = False, workers: int = 1) -> str:
        """A hash of what the samples were built from: it changes when they may have.

        The default looks at file names, sizes and modification times (cheap, but a file
        rewritten at the same size with its time restored goes unseen); `content` hashes every
        file's bytes on `workers` threads and returns CONTENT_PREFIX + the hash.
        """
        raise NotImplementedError

    def to_attrs(self, base: str | None) -> dict:
        """JSON-able description; paths relative to `base` (None: absolute)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


# A content fingerprint is stored with this prefix, so a check recomputes the same kind.
CONTENT_PREFIX = "content:"


def file_digests(paths: Sequence[str], workers: int = 1) -> list[str]:
    """sha256 (hex) of each file's bytes, on `workers` threads (reads and hashlib release the GIL)."""
    if workers <= 1 or len(paths) < 2:
        return [file_sha256(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(file_sha256, paths))


def declared_classes(datasets: Iterable[Dataset], num_classes: int | None = None,
                     class_names: Sequence[str] | None = None) -> tuple[int | None, list[str] | None]:
    """(class count, class names) that the given values and the datasets declare, each None where
    nobody does; a dataset that disagrees with the others or with the given values is an error."""
    for ds in datasets:
        c, names = ds.num_classes, ds.classes
        if c is not None and num_classes is not None and c != num_classes:
            raise ValueError(f"{ds.name} has {c} classes, but {num_classes} were asked for"
                             if class_names is None else f"{ds.name} has {c} classes, not {num_classes}")
        num_classes = c if num_classes is None else num_classes
        if names is not None:
            if class_names is not None and list(names) != list(class_names):
                raise ValueError(f"{ds.name}: its class names differ from those of the other sources or options "
                                 f"({list(names)[:3]}... vs {list(class_names)[:3]}...)")
            class_names = list(names)
    return num_classes, class_names


def source_name(fields: Mapping) -> str:
    """A dataset's name from its fields (a FolderSpec's, or the attributes an index stores):
    `PRESET:ROOT[:SPLIT]` for a preset, else its folder."""
    if fields.get("preset"):
        split = fields.get("split_name")
        return f"{fields['preset']}:{fields['data_root']}" + (f":{split}" if split else "")
    return fields.get("path") or fields.get("ann_dir") or fields.get("img_dir")


def relative_path(path: str | None, base: str | None) -> str | None:
    """`path` relative to the real folder `base` (None: `path` as it is), as an index stores it."""
    if path is None or base is None:
        return path
    return os.path.relpath(path, os.path.realpath(base))


def absolute_path(path: str | None, base: str | None) -> str | None:
    """The inverse of `relative_path`."""
    if path is None or base is None:
        return path
    return os.path.normpath(os.path.join(os.path.realpath(base), path))


