"""Subsets of a dataset: the samples a list names, or the rest of them.

The semi-supervised protocol trains on a labelled fraction of a split (1/16 of
Cityscapes train) and labels the rest; few-shot transfer fine-tunes on N
images. In the SOURCE grammar `SOURCE@LIST` keeps the samples that LIST names
and `SOURCE@~LIST` the others, so a subset and its complement are the whole
source. A list names one sample a line, by its first whitespace-separated
token: a key, a stem (`aachen/aachen_000000_000019`), or an image path as the
semi-supervised codebases' split files give it (UniMatch's
`leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png gtFine/...`).
`csst split` writes such lists (keys, one a line).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from csst_data.datasets.base import (CONTENT_PREFIX, Block, Columns, Dataset, absolute_path, relative_path,
                                    sanitise_key)
from csst_data.datasets.folder import FolderSpec
from csst_data.store.codecs import LabelDecoder
from csst_data.store.shards import RangeReader

COMPLEMENT = "~"  # SOURCE@~LIST: every sample the list does not name


class Subset(Dataset):
    """The samples of `inner` whose keys are in `keys` (with `rest`: those that are not)."""

    kind = "subset"

    def __init__(self, inner: Dataset, keys: Iterable[str], rest: bool = False, list_path: str | None = None) -> None:
        self.inner, self.keys, self.rest, self.list_path = inner, frozenset(keys), bool(rest), list_path

    # -- what it is --
    @property
    def name(self) -> str:
        what = self.list_path or f"{len(self.keys)} keys"
        return f"{self.inner.name}@{COMPLEMENT if self.rest else ''}{what}"

    @property
    def classes(self) -> list[str] | None:
        return self.inner.classes

    @property
    def num_classes(self) -> int | None:
        return self.inner.num_classes

    @property
    def pseudo(self) -> bool:
        return self.inner.pseudo

    @property
    def has_topk(self) -> bool:
        return self.inner.has_topk

    @property
    def spec(self) -> FolderSpec | None:
        """The inner folder dataset's fields (None for a shard set)."""
        return getattr(self.inner, "spec", None)

    @property
    def remote(self) -> bool:
        return bool(getattr(self.inner, "remote", False))

    # -- listing: the inner dataset's, filtered by key --
    def _kept(self, cols: Columns) -> Columns:
        keep = np.fromiter((k in self.keys for k in cols["key"]), bool, len(cols["key"])) != self.rest
        return {c: [v for v, k in zip(cols[c], keep) if k] if isinstance(cols[c], list) else np.asarray(cols[c])[keep]
                for c in cols}

    def blocks(self, labels: bool | None = True, reader: RangeReader | None = None) -> list[Block]:
        out = []
        for _, columns, shard in self.inner.blocks(labels, reader):
            cols = self._kept(columns())
            out.append((len(cols["key"]), (lambda c=cols: c), shard))
        return out

    def samples(self, labels: bool | None = True) -> Columns:
        return self._kept(self.inner.samples(labels))

    def image_refs(self) -> list[tuple[str, str | tuple]]:
        return [(k, ref) for k, ref in self.inner.image_refs() if (k in self.keys) != self.rest]

    # -- reading: the inner dataset's --
    def read(self, reader: RangeReader, shard: int, offset: int, size: int, path: str) -> bytes:
        return self.inner.read(reader, shard, offset, size, path)

    def read_ranges(self, reader: RangeReader, shard: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return self.inner.read_ranges(reader, shard, ranges)

    def decode_label(self, data: bytes, name: str | None = None, decode: LabelDecoder | None = None) -> np.ndarray:
        return self.inner.decode_label(data, name, decode)

    def topk(self, reader: RangeReader, shard: int, key: str) -> tuple[bytes, bytes] | None:
        return self.inner.topk(reader, shard, key)

    @property
    def has_confidence(self) -> bool:
        return self.inner.has_confidence

    def confidence(self, reader: RangeReader, shard: int, key: str) -> bytes | None:
        return self.inner.confidence(reader, shard, key)

    def describe(self, cols: Mapping, i: int, what: str = "label") -> str:
        return self.inner.describe(cols, i, what)

    # -- identity --
    def fingerprint(self, content: bool = False, workers: int = 1) -> str:
        sha = hashlib.sha256(self.inner.fingerprint(content, workers).encode())
        sha.update(json.dumps([sorted(self.keys), self.rest]).encode())
        return (CONTENT_PREFIX if content else "") + sha.hexdigest()

    def to_attrs(self, base: str | None) -> dict:
        return {"kind": self.kind, "of": self.inner.to_attrs(base), "keys": sorted(self.keys), "rest": self.rest,
                "list": relative_path(self.list_path, base)}

    @classmethod
    def from_attrs(cls, attrs: Mapping, base: str | None) -> Subset:
        from csst_data.datasets.sources import from_attrs

        return cls(from_attrs(attrs["of"], base), attrs["keys"], attrs.get("rest", False),
                   absolute_path(attrs.get("list"), base))


def _candidates(token: str) -> list[str]:
    """Keys a list entry may mean, most specific first: the path as a key, its tails, then its
    file name less the extension and less trailing `_suffix` parts (`x_leftImg8bit` -> `x`)."""
    path = token.replace("\\", "/").strip("/")
    stem, ext = os.path.splitext(path)
    stem = stem if ext and "/" not in ext else path
    parts = [p for p in stem.split("/") if p]
    out = ["_".join(parts[i:]) for i in range(len(parts))]
    name = parts[-1] if parts else token
    while "_" in name:
        name = name.rsplit("_", 1)[0]
        out.append(name)
    return [k for k in (_safe_key(c) for c in out) if k]


def _safe_key(text: str) -> str | None:
    try:
        return sanitise_key(text)
    except ValueError:
        return None


def read_list(path: str | os.PathLike, inner: Dataset) -> list[str]:
    """The keys of `inner` that the list file `path` names, in file order; a line that names
    no sample of `inner`, or a sample twice, is an error naming the file and the line."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the sample list ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of sample names") from None
    have = set(inner.samples(labels=None)["key"])
    keys, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        token = line.split()[0]
        key = next((k for k in _candidates(token) if k in have), None)
        if key is None:
            raise ValueError(f"{path}: line {n}: {token!r} names no sample of {inner.name}")
        if key in seen:
            raise ValueError(f"{path}: lines {seen[key]} and {n} both name sample {key!r}")
        seen[key] = n
        keys.append(key)
    if not keys:
        raise ValueError(f"{path}: names no sample")
    return keys


def subset(inner: Dataset, list_path: str, rest: bool = False) -> Subset:
    """`inner` restricted to the samples `list_path` names (with `rest`: to the others)."""
    real = os.path.realpath(list_path)
    return Subset(inner, read_list(real, inner), rest, real)


def split_subset(text: str) -> tuple[str, str, bool] | None:
    """`SOURCE@LIST` / `SOURCE@~LIST` -> (SOURCE, LIST, rest), when LIST is a file; else None."""
    source, at, tail = text.rpartition("@")
    if not at or not source:
        return None
    rest = tail.startswith(COMPLEMENT)
    listed = tail[len(COMPLEMENT):] if rest else tail
    if not os.path.isfile(listed):
        if os.path.exists(text):
            return None  # a path that holds an @
        raise ValueError(f"{text}: no such sample list {listed} (SOURCE@LIST keeps the samples a list names, "
                         f"SOURCE@{COMPLEMENT}LIST the others)")
    return source, listed, rest
