"""The shard store: webdataset tar shards plus an atomically rewritten manifest.

Layout (DESIGN.md): `{prefix}-{NNNNNN}.tar` files and `manifest.json` in one
folder. A shard is written under a temporary name and renamed when complete;
the manifest is rewritten (temporary name, then rename) after every finished
shard, so a killed writer leaves only complete, listed shards.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from csst_data import IGNORE
from csst_data.store import storage

MANIFEST = "manifest.json"
FORMAT = "csst-shards"
VERSION = 1
# A fixed integer mtime: float mtimes make tarfile emit PAX headers, and a
# constant makes shards byte-reproducible.
TAR_MTIME = 946684800
TMP_SUFFIX = ".tmp"
_KEY_RE = re.compile(r"^[^./\\\s]+$")


class ShardError(ValueError):
    """A shard set on disk is missing, malformed or inconsistent (a ValueError: bad input)."""


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temporary file and a rename (creating its folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def check_key(key):
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


def _resumed(info, old, manifest_path):
    """`info` completed from the manifest `old` that a resumed writer continues."""
    if info.num_classes is not None and old.get("num_classes") not in (None, info.num_classes):
        raise ShardError(
            f"{manifest_path}: num_classes is {old.get('num_classes')}, this writer has {info.num_classes}"
        )
    return replace(
        info,
        num_classes=info.num_classes if info.num_classes is not None else old.get("num_classes"),
        class_names=info.class_names if info.class_names is not None else old.get("class_names"),
        fields=info.fields if info.fields is not None else old.get("fields"),
        producer=info.producer if info.producer is not None else old.get("producer"),
        extra={**{k: v for k, v in old.items() if k not in _CORE}, **(info.extra or {})},
    )


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
        old = _read_json(self.manifest_path) if os.path.exists(self.manifest_path) else None
        mine = _numbered(self.root, prefix)
        if not resume and (old is not None and old.get("shards") or mine):
            raise FileExistsError(
                f"{self.root} already holds shards of prefix {prefix!r}; pass resume=True to "
                "continue it, or write to an empty folder"
            )
        if resume and old is not None:
            info = _resumed(info, old, self.manifest_path)
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
    def write(self, sample):
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

    def close(self):
        """Finish the open shard and write the final manifest."""
        if self._tar is not None:
            self._finish()
        self._write_manifest()

    def abort(self):
        """Drop the open shard (its samples are not listed); keep finished ones."""
        if self._tar is not None:
            self._tar.close()
            self._raw.close()
            os.remove(self._tmp)
            self._tar = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


_CORE = {"format", "version", "num_classes", "class_names", "ignore_index", "fields", "producer", "shards"}


def _read_json(path):
    """A JSON file or object-store object; ShardError naming it when it is not JSON."""
    try:
        if storage.is_url(path):
            return json.loads(storage.read(path))
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}: not valid JSON ({e})") from e


def _numbered(root, prefix):
    """[(number, name)] of finished shards `{prefix}-NNNNNN.tar` in `root`."""
    out = []
    pat = re.compile(re.escape(prefix) + r"-(\d+)\.tar$")
    for name in os.listdir(root):
        m = pat.match(name)
        if m:
            out.append((int(m.group(1)), name))
    return sorted(out)


# -- reading ---------------------------------------------------------------
def read_manifest(root):
    """The manifest of a shard set (a folder or an object-store URL), with a clear error if it is not one."""
    path = storage.join(str(root), MANIFEST)
    missing = ShardError(f"{root}: no {MANIFEST}; not a csst shard set")
    if not storage.is_url(path) and not os.path.exists(path):
        raise missing
    try:
        manifest = _read_json(path)
    except storage.NotFound:
        raise missing from None
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ShardError(f"{path}: version {manifest.get('version')} is not supported (expected {VERSION})")
    return manifest


def is_shard_set(path):
    if storage.is_url(path):
        return storage.exists(storage.join(str(path), MANIFEST))
    return os.path.isfile(os.path.join(str(path), MANIFEST))


def shard_paths(root):
    """Paths (or URLs) of the listed shards, in manifest order."""
    return [storage.join(str(root), s["name"]) for s in read_manifest(root)["shards"]]


def iter_samples(root, decode=True):
    """Iterate the samples of a shard set in order with the official webdataset reader.

    With `decode`, images come back as uint8 H x W x 3 arrays and labels as
    uint8 H x W arrays; otherwise members are raw bytes.
    """
    import webdataset as wds

    from csst_data.store.codecs import wds_handlers

    urls = shard_paths(root)
    if not urls:
        return iter(())
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None)
    if decode:
        ds = ds.decode(*wds_handlers(), "rgb8")
    return iter(ds)


def member_offsets(path, reader=None):
    """[(member name, data byte offset, size)] of every member of a tar shard.

    A remote shard is fetched whole, in one request; with `reader` (a pass's
    RangeReader) it is kept there for the pass's reads of the same shard.
    Member names must be `key.suffix` with a non-empty key and no path parts
    (no `/`, `..` or absolute names, which other tar readers would write outside
    their folder); anything else is a ShardError naming the member."""
    out = []
    try:
        if storage.is_url(path):
            whole = reader.whole(path) if reader is not None else storage.read(path)
            tar = tarfile.open(fileobj=io.BytesIO(whole), mode="r:")
        else:
            tar = tarfile.open(path, "r:")
        with tar:
            for info in tar:
                if info.isfile():
                    key, dot, suffix = info.name.partition(".")
                    if not key or not dot or not suffix or "/" in info.name or "\\" in info.name:
                        raise ShardError(f"{path}: unsafe or invalid member name {info.name!r} "
                                         "(expected key.suffix without path parts)")
                    out.append((info.name, info.offset_data, info.size))
    except tarfile.TarError as e:
        raise ShardError(f"{path}: not a readable tar ({e})") from e
    return out


def shard_keys(path, reader=None):
    """Sample keys of a shard, in order, each once."""
    seen = {}
    for name, _, _ in member_offsets(path, reader):
        seen.setdefault(name.split(".", 1)[0], None)
    return list(seen)


def group_members(path, reader=None):
    """{key: {suffix: (offset, size)}} for a shard, in order (`reader`: see member_offsets)."""
    out = {}
    for name, offset, size in member_offsets(path, reader):
        key, _, suffix = name.partition(".")
        out.setdefault(key, {})[suffix] = (offset, size)
    return out


def read_member(fd, offset, size, path="<fd>"):
    """One member's bytes by random access (`os.pread` on an open descriptor)."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ShardError(f"{path}: short read at byte {offset} ({len(data)} of {size} bytes); truncated shard?")
    return data


class RangeReader:
    """Positional reads (`os.pread`) of tar members and whole files, keeping
    one open descriptor per file: the one reader of every csst module.

    Of object-store shards it keeps the last one fetched whole (`whole`: a pass
    that lists a remote shard's members then reads them makes one request per
    shard, not one per member) until another is fetched or the reader closes."""

    def __init__(self):
        self.fds = {}
        self.kept = None  # (url, bytes) of the last remote shard fetched whole

    def whole(self, url):
        """The bytes of a remote shard, fetched once and kept until another is asked for."""
        if self.kept is None or self.kept[0] != url:
            self.kept = None
            self.kept = (url, storage.read(url))
        return self.kept[1]

    def read(self, path, offset=0, size=None):
        """`size` bytes at `offset` of `path` (a file or an object-store URL); the whole file when size is None."""
        if storage.is_url(path):
            if self.kept is not None and self.kept[0] == path:
                data = self.kept[1][offset:None if size is None else offset + size]
                if size is not None and len(data) != size:
                    raise ShardError(f"{path}: short read at byte {offset} ({len(data)} of {size} bytes); "
                                     "truncated shard?")
                return data
            return storage.read(path, offset, size)
        fd = self.fds.get(path)
        if fd is None:
            if len(self.fds) >= 256:  # bound the open descriptors of folder datasets
                self.close()
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        if size is None:
            size = os.fstat(fd).st_size - offset
        return read_member(fd, offset, size, path)

    def read_ranges(self, path, ranges):
        """The bytes of several (offset, size) ranges of `path`; of an object, ranges close together
        come in one request."""
        if storage.is_url(path):  # random access: never the kept shard of a pass
            return storage.read_ranges(path, ranges)
        return [self.read(path, o, n) for o, n in ranges]

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.kept = None

    def __getstate__(self):
        # Descriptors do not cross process boundaries (DataLoader workers), nor does a kept shard.
        return {"fds": {}, "kept": None}

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# -- verification ----------------------------------------------------------
def file_sha256(path, chunk=1 << 22):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def verify_shard(path, entry, num_classes=None):
    """Problems found in one listed shard (an empty list when it is sound)."""
    from csst_data.store.codecs import decode_label, decode_label_png, decode_npy_zst

    if not os.path.exists(path):
        return ["missing"]
    problems = []
    size = os.path.getsize(path)
    if entry.get("bytes") is not None and size < entry["bytes"]:
        problems.append(f"truncated tar ({size} of {entry['bytes']} bytes)")
    if file_sha256(path) != entry.get("sha256"):
        problems.append("checksum mismatch")
    try:
        members = member_offsets(path)
    except ShardError as e:
        return problems + [f"truncated or corrupt tar ({e.__cause__ or e})"]
    if any(offset + n > size for _, offset, n in members):
        problems.append("truncated tar (a member runs past the end of the file)")
        return problems
    keys = {name.split(".", 1)[0] for name, _, _ in members}
    if len(keys) != entry.get("samples"):
        problems.append(f"count mismatch ({len(keys)} samples, manifest says {entry.get('samples')})")
    with open(path, "rb") as f:
        fd = f.fileno()
        for name, offset, n in members:
            key, _, suffix = name.partition(".")
            try:
                data = read_member(fd, offset, n, path)
                if suffix == "label.npy.zst":
                    decode_label(data, num_classes, key)
                elif suffix == "label.png":
                    decode_label_png(data, num_classes, key)
                elif suffix.endswith(".npy.zst"):
                    decode_npy_zst(data)
            except Exception as e:
                problems.append(f"undecodable member {name} ({e})")
                break
    return problems


def verify_shards(root, progress=None):
    """Check every shard of a shard set against its manifest.

    Returns rows {"name", "samples", "problems"}; rows for unlisted shards and
    leftover temporary files are included. `progress(name)` is called per shard.
    """
    manifest = read_manifest(root)
    rows = []
    listed = set()
    remote = storage.is_url(root)
    for entry in manifest.get("shards", []):
        listed.add(entry["name"])
        path = storage.join(str(root), entry["name"])
        if remote:
            problems = _verify_remote_shard(path, entry, manifest.get("num_classes"))
        else:
            problems = verify_shard(path, entry, manifest.get("num_classes"))
        rows.append({"name": entry["name"], "samples": entry.get("samples"), "problems": problems})
        if progress:
            progress(entry["name"])
    names = (storage.listdir(root) or {}) if remote else os.listdir(root)
    for name in sorted(names):
        if name.endswith(".tar") and name not in listed:
            rows.append({"name": name, "samples": None, "problems": ["unlisted shard (not in manifest.json)"]})
        elif name.endswith(".tar" + TMP_SUFFIX):
            rows.append({"name": name, "samples": None, "problems": [],
                         "note": "temporary file of an unfinished writer; resume removes it"})
    return rows


def _verify_remote_shard(url, entry, num_classes):
    """verify_shard on a remote shard: streamed once into a temporary file (memory stays
    bounded whatever the shard's size), then checked like a local one."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(prefix="csst-verify-", suffix=".tar") as tmp:
            for block in storage.stream(url):
                tmp.write(block)
            tmp.flush()
            return verify_shard(tmp.name, entry, num_classes)
    except storage.NotFound:
        return ["missing"]


# -- merging per-rank manifests (added for `csst label`) -----------------------
def merge_manifests(root, parts, drop=(), out=MANIFEST, exists=None):
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
        meta = _read_json(path)
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
