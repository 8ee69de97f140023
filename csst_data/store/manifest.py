"""Shard-set manifests: what a set's `manifest.json` holds, and writing files atomically.

Layout (docs/formats.md): `{prefix}-{NNNNNN}.tar` files and `manifest.json` in one
folder. A file is written under a temporary name and renamed when complete, so a
killed writer leaves the old version or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from csst_data import IGNORE
from csst_data.store import storage

MANIFEST = "manifest.json"
FORMAT = "csst-shards"
VERSION = 1
TMP_SUFFIX = ".tmp"
# The manifest keys SetInfo describes (and "shards"); any other top-level key is an `extra`.
_CORE = {"format", "version", "num_classes", "class_names", "ignore_index", "fields", "producer", "shards"}


class ShardError(ValueError):
    """A shard set on disk is missing, malformed or inconsistent (a ValueError: bad input)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (creating its folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write `obj` as indented JSON, atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class SetInfo:
    """What a shard set's manifest says about its samples, beside the shard list.

    Fields left None on a resumed writer are taken from the manifest already there.
    """

    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    fields: Sequence[str] | None = None  # the member suffixes each sample has, e.g. ["jpg", "label.npy.zst"]
    producer: str | None = None          # what wrote the set (a command line, "csst synth", ...)
    ignore_index: int = IGNORE
    extra: Mapping[str, object] | None = None  # further top-level manifest keys ("pseudo", "rank", ...)

    def manifest_fields(self) -> dict:
        """The manifest's keys other than "shards", in the order they are written."""
        return {
            "format": FORMAT, "version": VERSION, "num_classes": self.num_classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "ignore_index": self.ignore_index, "fields": list(self.fields) if self.fields is not None else None,
            "producer": self.producer, **(self.extra or {}),
        }

    def resumed(self, old: Mapping, manifest_path: str) -> SetInfo:
        """This info completed from the manifest `old` that a resumed writer continues."""
        if self.num_classes is not None and old.get("num_classes") not in (None, self.num_classes):
            raise ShardError(
                f"{manifest_path}: num_classes is {old.get('num_classes')}, this writer has {self.num_classes}"
            )
        return replace(
            self,
            num_classes=self.num_classes if self.num_classes is not None else old.get("num_classes"),
            class_names=self.class_names if self.class_names is not None else old.get("class_names"),
            fields=self.fields if self.fields is not None else old.get("fields"),
            producer=self.producer if self.producer is not None else old.get("producer"),
            extra={**{k: v for k, v in old.items() if k not in _CORE}, **(self.extra or {})},
        )


def read_json(path: str) -> dict:
    """A JSON file or object-store object; ShardError naming it when it is not JSON."""
    try:
        if storage.is_url(path):
            return json.loads(storage.read(path))
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: not valid JSON ({e})") from e


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a shard set (a folder or an object-store URL), with a clear error if it is not one."""
    path = storage.join(str(root), MANIFEST)
    missing = ShardError(f"{root}: no {MANIFEST}; not a csst shard set")
    if not storage.is_url(path) and not os.path.exists(path):
        raise missing
    try:
        manifest = read_json(path)
    except storage.NotFound:
        raise missing from None
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ShardError(f"{path}: version {manifest.get('version')} is not supported (expected {VERSION})")
    return manifest


def is_shard_set(path: str | os.PathLike) -> bool:
    """Whether `path` (a folder or an object-store URL) holds a shard-set manifest."""
    if storage.is_url(path):
        return storage.exists(storage.join(str(path), MANIFEST))
    return os.path.isfile(os.path.join(str(path), MANIFEST))


def shard_paths(root: str | os.PathLike) -> list[str]:
    """Paths (or URLs) of the listed shards, in manifest order."""
    return [storage.join(str(root), s["name"]) for s in read_manifest(root)["shards"]]


def merge_manifests(root: str | os.PathLike, parts: Sequence[str], drop: Iterable[str] = (), out: str = MANIFEST,
                    exists: Callable[[str], bool] | None = None) -> dict:
    """Write `root/out` listing the shards of the part manifests `parts` (file names in `root`), in order.

    Used when several processes wrote one shard set, each with its own prefix
    and manifest. The parts must agree on num_classes, class_names and
    ignore_index; `fields` are united; other top-level keys come from the first
    part, less those in `drop`. The file is written under a unique temporary
    name and renamed, so ranks merging at the same time do not collide.
    `exists(name)` says whether a listed shard is there (default: a file in `root`).
    """
    import tempfile

    root = str(root)
    metas = []
    for name in parts:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            raise ShardError(f"{path}: part manifest is missing")
        meta = read_json(path)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ShardError(f"{path}: not a csst shard manifest of version {VERSION}")
        metas.append((path, meta))
    if not metas:
        raise ShardError(f"{root}: no part manifests to merge")
    first_path, first = metas[0]
    shards, names, fields = [], set(), []
    for path, meta in metas:
        for k in ("num_classes", "class_names", "ignore_index"):
            if meta.get(k) != first.get(k):
                raise ShardError(f"{path}: {k} is {meta.get(k)!r}, but {first_path} has {first.get(k)!r}")
        for f in meta.get("fields") or []:
            if f not in fields:
                fields.append(f)
        for s in meta.get("shards", []):
            if s["name"] in names:
                raise ShardError(f"{path}: shard {s['name']} is listed by two part manifests")
            if not (exists(s["name"]) if exists else os.path.exists(os.path.join(root, s["name"]))):
                raise ShardError(f"{path} lists {s['name']}, which is missing")
            names.add(s["name"])
            shards.append(s)
    merged = {k: v for k, v in first.items() if k not in drop and k != "shards"}
    merged["fields"] = fields or first.get("fields")
    merged["shards"] = shards
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{out}.", suffix=TMP_SUFFIX)
    with os.fdopen(fd, "wb") as f:
        f.write((json.dumps(merged, indent=1) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, out))
    return merged
