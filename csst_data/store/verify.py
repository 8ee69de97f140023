"""Checking a shard set against its manifest (`csst verify`): checksums, counts, decodable members."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from csst_data.store import storage
from csst_data.store.manifest import TMP_SUFFIX, ShardError, read_manifest
from csst_data.store.members import member_offsets, read_member


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def verify_shard(path: str, entry: dict, num_classes: int | None = None) -> list[str]:
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


def verify_shards(root: str | os.PathLike, progress: Callable[[str], object] | None = None) -> list[dict]:
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
