"""A csst shard set as a dataset: `{prefix}-NNNNNN.tar` files listed in manifest.json.

The shard format itself (writer, reader, manifest) is `csst_data.store.shards`;
a set may live in a folder or in object storage (`csst_data.store.storage`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from csst_data.datasets.base import (CONTENT_PREFIX, Block, Columns, Dataset, absolute_path, file_digests, int_columns,
                                    join_columns, new_columns, relative_path)
from csst_data.store import storage
from csst_data.store.codecs import LabelDecoder, decode_label_bytes
from csst_data.store.shards import RangeReader, ShardError, group_members, read_manifest

LABEL_MEMBERS = ("label.npy.zst", "label.png")  # a sample's label member, by preference
IMAGE_MEMBERS = ("jpg", "jpeg", "png")          # its image member, by preference
CONFIDENCE_MEMBER = "confidence.npy.zst"        # `csst label`: uint8 H x W round(teacher's top probability * 255)


def is_pseudo(manifest: Mapping) -> bool:
    """Whether a shard set holds pseudo labels (written by `csst label`).

    True when the manifest says `"pseudo": true`, carries top-k soft labels, or
    its producer names a checkpoint or the `label` command.
    """
    if manifest.get("pseudo"):
        return True
    fields_ = manifest.get("fields") or []
    if any(str(f).startswith("topk") for f in fields_):
        return True
    producer = manifest.get("producer")
    if isinstance(producer, dict):
        return "checkpoint" in producer or producer.get("command") in ("label", "csst label")
    return isinstance(producer, str) and producer.startswith("csst label")


class ShardSet(Dataset):
    """A csst shard set: `{prefix}-NNNNNN.tar` files listed in manifest.json."""

    kind = "shards"

    def __init__(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        self.remote = storage.is_url(path)  # an object-store URL, read by ranged GETs
        self.path = path.rstrip("/") if self.remote else os.path.realpath(path)
        if not self.remote and not os.path.isdir(self.path):
            raise ValueError(f"{path}: no such folder")
        try:
            self.manifest = read_manifest(self.path)
        except ShardError as e:
            raise ValueError(str(e)) from e
        self.shard_files = [storage.join(self.path, s["name"]) for s in self.manifest["shards"]]

    def __getstate__(self) -> dict:
        return {"path": self.path, "remote": self.remote, "manifest": self.manifest, "shard_files": self.shard_files}

    @property
    def has_topk(self) -> bool:
        return any(str(f).startswith("topk") for f in self.manifest.get("fields") or [])

    @property
    def has_confidence(self) -> bool:
        return CONFIDENCE_MEMBER in (self.manifest.get("fields") or [])

    def topk(self, reader: RangeReader, shard: int, key: str) -> tuple[bytes, bytes] | None:
        if not self.has_topk:
            return None
        return self._members(reader, shard, key, ("topk_idx.npy.zst", "topk_prob.npy.zst"))

    def confidence(self, reader: RangeReader, shard: int, key: str) -> bytes | None:
        if not self.has_confidence:
            return None
        found = self._members(reader, shard, key, (CONFIDENCE_MEMBER,))
        return None if found is None else found[0]

    def _members(self, reader, shard, key, names):
        """The bytes of members `names` of sample `key`, or None when one is missing."""
        # The member map of each shard, read once per process (the index holds no offsets of these members).
        cache = self.__dict__.setdefault("_members_of", {})
        shard = int(shard)
        if shard not in cache:
            cache[shard] = group_members(self.shard_files[shard])  # remote: one whole read, not kept
        members = cache[shard].get(key, {})
        if any(n not in members for n in names):
            return None
        path = self.shard_files[shard]
        return tuple(reader.read(path, *members[n]) for n in names)

    @property
    def name(self) -> str:
        return self.path

    @property
    def classes(self) -> list[str] | None:
        names = self.manifest.get("class_names")
        if names:
            return list(names)
        return None

    @property
    def num_classes(self) -> int | None:
        return self.manifest.get("num_classes")

    @property
    def pseudo(self) -> bool:
        return is_pseudo(self.manifest)

    def shard_columns(self, number: int, labels: bool | None = True, reader: RangeReader | None = None) -> Columns:
        """The samples of shard `number` as columns (`reader`: see shards.member_offsets)."""
        path = self.shard_files[number]
        cols = new_columns()
        for key, members in group_members(path, reader).items():
            lab = next((members[m] for m in LABEL_MEMBERS if m in members), None)
            img = next((members[m] for m in IMAGE_MEMBERS if m in members), None)
            if lab is None and labels:
                raise ValueError(f"{path}: sample {key!r} has no label member ({' or '.join(LABEL_MEMBERS)})")
            cols["key"].append(key)
            cols["shard"].append(number)
            cols["label_offset"].append(lab[0] if lab else -1)
            cols["label_size"].append(lab[1] if lab else -1)
            cols["image_offset"].append(img[0] if img else -1)
            cols["image_size"].append(img[1] if img else -1)
            cols["label_path"].append("")
            cols["image_path"].append("")
        return int_columns(cols)

    def blocks(self, labels: bool | None = True, reader: RangeReader | None = None) -> list[Block]:
        return [(int(s["samples"]), (lambda n=n: self.shard_columns(n, labels, reader)), self.shard_files[n])
                for n, s in enumerate(self.manifest["shards"])]

    def samples(self, labels: bool | None = True) -> Columns:
        return join_columns(self.shard_columns(n, labels) for n in range(len(self.shard_files)))

    def read(self, reader: RangeReader, shard: int, offset: int, size: int, path: str) -> bytes:
        if offset < 0:
            raise ValueError(f"{self.path}: sample has no such member")
        return reader.read(self.shard_files[int(shard)], int(offset), int(size))

    def read_ranges(self, reader: RangeReader, shard: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return reader.read_ranges(self.shard_files[int(shard)], ranges)

    def decode_label(self, data: bytes, name: str | None = None, decode: LabelDecoder | None = None) -> np.ndarray:
        return (decode or decode_label_bytes)(data, name)

    def iter(self, images: bool = True, labels: bool = True, reader: RangeReader | None = None) -> Iterator[dict]:
        # Also yields each sample's .json member (`meta`).
        own = reader is None
        reader = reader or RangeReader()
        try:
            for number, path in enumerate(self.shard_files):
                for key, members in group_members(path, reader).items():
                    out = {"key": key, "image": None, "label": None, "meta": None, "dataset": self,
                           "name": f"{path}:{key}"}
                    img = next((members[m] for m in IMAGE_MEMBERS if m in members), None)
                    if images and img is not None:
                        out["image"] = reader.read(path, *img)
                    if labels:
                        lab = next((members[m] for m in LABEL_MEMBERS if m in members), None)
                        if lab is None:
                            raise ValueError(f"{path}: sample {key!r} has no label member")
                        out["label"] = decode_label_bytes(reader.read(path, *lab), key)
                    if "json" in members:
                        out["meta"] = json.loads(reader.read(path, *members["json"]))
                    yield out
        finally:
            if own:
                reader.close()

    def image_refs(self) -> list[tuple[str, tuple]]:
        refs = []
        for path in self.shard_files:
            for key, members in group_members(path).items():
                suffix = next((s for s in IMAGE_MEMBERS if s in members), None)
                if suffix is None:
                    raise ValueError(f"{path}: sample {key!r} has no image member (.jpg/.jpeg/.png)")
                refs.append((key, (path, *members[suffix], f"{key}.{suffix}")))
        return refs

    def describe(self, cols: Mapping, i: int, what: str = "label") -> str:
        where = f"{self.shard_files[int(cols['shard'][i])]}:{cols['key'][i]}"
        offset = cols.get(f"{what}_offset")
        return where if offset is None or offset[i] < 0 else f"{where} ({what} at byte {int(offset[i])})"

    def fingerprint(self, content: bool = False, workers: int = 1) -> str:
        """sha256 of manifest.json and of every listed shard's size: a truncated or
        replaced shard makes an index built on the set stale, not silently wrong. With
        `content`, a local shard's bytes are hashed instead of its size; a remote shard's
        ETag (which stores derive from the content) stands for its bytes either way."""
        sha = hashlib.sha256()
        prefix = CONTENT_PREFIX if content else ""
        if self.remote:
            # The manifest's bytes, and each shard's size and ETag (one LIST, or a HEAD per shard
            # where the store cannot list): a rewritten object gets a new ETag.
            sha.update(storage.read(storage.join(self.path, "manifest.json")))
            listing = storage.listdir(self.path)
            for path in self.shard_files:
                name = storage.basename(path)
                if listing is not None:
                    meta = listing.get(name, {"size": -1, "etag": None})
                else:
                    try:
                        meta = storage.head(path)
                    except storage.NotFound:
                        meta = {"size": -1, "etag": None}
                sha.update(f"\0{name}\0{meta['size']}\0{meta['etag']}".encode())
            return prefix + sha.hexdigest()
        with open(os.path.join(self.path, "manifest.json"), "rb") as f:
            sha.update(f.read())
        present = [p for p in self.shard_files if os.path.exists(p)]
        what = dict(zip(present, file_digests(present, workers) if content else map(os.path.getsize, present)))
        for path in self.shard_files:  # a missing shard: -1
            sha.update(f"\0{os.path.basename(path)}\0{what.get(path, -1)}".encode())
        return prefix + sha.hexdigest()

    def to_attrs(self, base: str | None) -> dict:
        # A URL is stored as it is; a folder relative to the index.
        return {"kind": self.kind, "path": self.path if self.remote else relative_path(self.path, base)}

    @classmethod
    def from_attrs(cls, attrs: Mapping, base: str | None) -> ShardSet:
        return cls(attrs["path"] if storage.is_url(attrs["path"]) else absolute_path(attrs["path"], base))
