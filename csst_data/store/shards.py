"""The shard store: webdataset tar shards plus an atomically rewritten manifest.

Layout (docs/formats.md): `{prefix}-{NNNNNN}.tar` files and `manifest.json` in
one folder. A shard is written under a temporary name and renamed when complete;
the manifest is rewritten (temporary name, then rename) after every finished
shard, so a killed writer leaves only complete, listed shards.

This module has the writer; the manifest (`manifest`), reading members
(`members`) and verification (`verify`) live beside it, and their names are
importable from here too: `csst_data.store.shards` is the shard store's API.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable

from csst_data.store.manifest import (  # noqa: F401  (the shard store's API, importable from here)
    FORMAT, MANIFEST, TMP_SUFFIX, VERSION, SetInfo, ShardError, atomic_write_bytes, atomic_write_json,
    is_shard_set, merge_manifests, read_json, read_manifest, shard_paths)
from csst_data.store.members import (  # noqa: F401
    RangeReader, group_members, iter_samples, member_offsets, read_member, shard_keys)
from csst_data.store.verify import file_sha256, verify_shard, verify_shards  # noqa: F401

# A fixed integer mtime: float mtimes make tarfile emit PAX headers, and a
# constant makes shards byte-reproducible.
TAR_MTIME = 946684800
_KEY_RE = re.compile(r"^[^./\\\s]+$")


def check_key(key: object) -> str:
    """A key must be non-empty, without dots, path separators or whitespace."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"invalid sample key {key!r}: keys must be non-empty and contain no '.', '/', '\\' or "
            "whitespace (webdataset groups tar members by the text before the first dot)"
        )
    return key


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, f):
        self.f, self.sha, self.nbytes = f, hashlib.sha256(), 0

    def write(self, b):
        self.sha.update(b)
        self.nbytes += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def _to_bytes(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True).encode("utf-8")
    raise TypeError(f"shard member values must be bytes, str or dict, got {type(value).__name__}")


class ShardWriter:
    """Write samples (dicts of `__key__` and member-suffix -> bytes) to tar shards.

    >>> with ShardWriter("out", SetInfo(num_classes=19, class_names=names)) as w:
    ...     w.write({"__key__": "a0001", "jpg": jpeg_bytes, "label.npy.zst": label_bytes})

    A shard is finished after `maxcount` samples or once it holds `maxsize`
    bytes. With `resume=True` the writer continues after the last complete
    shard of `prefix` and `existing_keys` holds the keys already stored, so the
    caller can skip them.
    """

    def __init__(self, root: str | os.PathLike, info: SetInfo = SetInfo(), *, prefix: str = "shard",
                 maxcount: int = 1000, maxsize: int = 1 << 30, manifest: str = MANIFEST, resume: bool = False,
                 on_finish: Callable[[str], object] | None = None) -> None:
        if maxcount < 1 or maxsize < 1:
            raise ValueError("maxcount and maxsize must be positive")
        check_key(prefix)
        self.root, self.prefix = str(root), prefix
        self.on_finish = on_finish  # called with the manifest's name after each finished shard
        self.maxcount, self.maxsize = maxcount, maxsize
        self.manifest_path = os.path.join(self.root, manifest)
        os.makedirs(self.root, exist_ok=True)
        self.existing_keys = set()
        old = read_json(self.manifest_path) if os.path.exists(self.manifest_path) else None
        mine = _numbered(self.root, prefix)
        if not resume and (old is not None and old.get("shards") or mine):
            raise FileExistsError(
                f"{self.root} already holds shards of prefix {prefix!r}; pass resume=True to "
                "continue it, or write to an empty folder"
            )
        if resume and old is not None:
            info = info.resumed(old, self.manifest_path)
            self.shards = [s for s in old.get("shards", [])]
        else:
            self.shards = []
        listed = {s["name"] for s in self.shards}
        # Leftovers of a killed writer: temporary files, and shards renamed
        # but not yet listed (their samples are not in the manifest).
        for path in glob.glob(os.path.join(self.root, f"{prefix}-*.tar{TMP_SUFFIX}")):
            os.remove(path)
        for number, name in mine:
            if name not in listed:
                os.remove(os.path.join(self.root, name))
        for s in self.shards:
            path = os.path.join(self.root, s["name"])
            if not os.path.exists(path):
                raise ShardError(f"{self.manifest_path} lists {s['name']}, which is missing")
            self.existing_keys.update(shard_keys(path))
        numbers = [n for n, name in _numbered(self.root, prefix) if name in listed]
        self.next_number = max(numbers) + 1 if numbers else 0
        self.meta = info.manifest_fields()
        self.keys = set(self.existing_keys)
        self._tar = None
        self._write_manifest()

    # -- writing -----------------------------------------------------------
    def write(self, sample: dict) -> None:
        """Add one sample (its members in suffix order); a full shard is finished."""
        key = check_key(sample.get("__key__"))
        if key in self.keys:
            raise ValueError(f"duplicate sample key {key!r} in {self.root}")
        members = {k: _to_bytes(v) for k, v in sample.items() if not k.startswith("_")}
        if not members:
            raise ValueError(f"sample {key!r} has no members")
        for suffix in members:
            if not suffix or suffix.startswith(".") or "/" in suffix:
                raise ValueError(f"sample {key!r}: invalid member suffix {suffix!r}")
        if self._tar is None:
            self._open()
        for suffix in sorted(members):
            data = members[suffix]
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
            info.uname = info.gname = "csst"
            self._tar.tarstream.addfile(info, io.BytesIO(data))
        self.keys.add(key)
        self._count += 1
        if self._count >= self.maxcount or self._tar.tarstream.offset >= self.maxsize:
            self._finish()

    def _open(self):
        import webdataset as wds

        self._name = f"{self.prefix}-{self.next_number:06d}.tar"
        self._tmp = os.path.join(self.root, self._name + TMP_SUFFIX)
        self._raw = open(self._tmp, "wb")
        self._file = _HashingFile(self._raw)
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=TAR_MTIME)
        # webdataset 1.0.2 does not pass `format` on; tarfile defaults to PAX.
        self._tar.tarstream.format = tarfile.GNU_FORMAT
        self._count = 0

    def _finish(self):
        self._tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        final = os.path.join(self.root, self._name)
        os.replace(self._tmp, final)
        self.shards.append({"name": self._name, "samples": self._count,
                            "bytes": self._file.nbytes, "sha256": self._file.sha.hexdigest()})
        self._tar = None
        self.next_number += 1
        self._write_manifest()
        if self.on_finish is not None:
            self.on_finish(os.path.basename(self.manifest_path))

    def _write_manifest(self):
        atomic_write_json(self.manifest_path, {**self.meta, "shards": self.shards})

    def close(self) -> None:
        """Finish the open shard and write the final manifest."""
        if self._tar is not None:
            self._finish()
        self._write_manifest()

    def abort(self) -> None:
        """Drop the open shard (its samples are not listed); keep finished ones."""
        if self._tar is not None:
            self._tar.close()
            self._raw.close()
            os.remove(self._tmp)
            self._tar = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _numbered(root, prefix):
    """[(number, name)] of finished shards `{prefix}-NNNNNN.tar` in `root`."""
    out = []
    pat = re.compile(re.escape(prefix) + r"-(\d+)\.tar$")
    for name in os.listdir(root):
        m = pat.match(name)
        if m:
            out.append((int(m.group(1)), name))
    return sorted(out)
