"""Reading tar shards: their members' offsets, random access to them, and the RangeReader.

A shard is an uncompressed tar, so a member's bytes are one byte range of the
file (or object): `member_offsets` lists them, and every csst reader fetches
members by position through a RangeReader.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator, Sequence

from csst_data.store import storage
from csst_data.store.manifest import ShardError, shard_paths


def iter_samples(root: str | os.PathLike, decode: bool = True) -> Iterator[dict]:
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


def member_offsets(path: str, reader: RangeReader | None = None) -> list[tuple[str, int, int]]:
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


def shard_keys(path: str, reader: RangeReader | None = None) -> list[str]:
    """Sample keys of a shard, in order, each once."""
    seen = {}
    for name, _, _ in member_offsets(path, reader):
        seen.setdefault(name.split(".", 1)[0], None)
    return list(seen)


def group_members(path: str, reader: RangeReader | None = None) -> dict[str, dict[str, tuple[int, int]]]:
    """{key: {suffix: (offset, size)}} for a shard, in order (`reader`: see member_offsets)."""
    out = {}
    for name, offset, size in member_offsets(path, reader):
        key, _, suffix = name.partition(".")
        out.setdefault(key, {})[suffix] = (offset, size)
    return out


def read_member(fd: int, offset: int, size: int, path: str = "<fd>") -> bytes:
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

    def __init__(self) -> None:
        self.fds = {}
        self.kept = None  # (url, bytes) of the last remote shard fetched whole

    def whole(self, url: str) -> bytes:
        """The bytes of a remote shard, fetched once and kept until another is asked for."""
        if self.kept is None or self.kept[0] != url:
            self.kept = None
            self.kept = (url, storage.read(url))
        return self.kept[1]

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
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

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of several (offset, size) ranges of `path`; of an object, ranges close together
        come in one request."""
        if storage.is_url(path):  # random access: never the kept shard of a pass
            return storage.read_ranges(path, ranges)
        return [self.read(path, o, n) for o, n in ranges]

    def close(self) -> None:
        """Close every descriptor and drop the kept shard (the reader stays usable)."""
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
