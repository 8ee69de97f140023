"""The files of a resumable shard-writing run split across ranks (`csst label`, `csst pack`; skeleton.py runs them).

Each rank writes the samples whose key hashes to it (`rank_of`: stable when
inputs are added later) as `rankNNNNN-*.tar` with its own manifest
(`manifest-rankNNNNN.json`); a finished rank writes `done-rankNNNNN.json`, and
the last one to finish merges the part manifests into `manifest.json`. A single
process writes `shard-*.tar` and `manifest.json` directly. A rerun of the same
command keeps the finished shards and skips their keys, so every key is stored
once. Unreadable inputs are listed in `failed.jsonl`, one line each, rewritten
by every run (each rank of a multi-rank run writes `failed-rankNNNNN.jsonl`,
and the merge joins them), so it always lists the current failures.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from csst_data.store.shards import MANIFEST, atomic_write_bytes, atomic_write_json, merge_manifests, read_manifest

if TYPE_CHECKING:
    from csst_data.store.mirror import Mirror

FAILED = "failed.jsonl"


def rank_of(key: str, world_size: int) -> int:
    """The rank that writes `key`: a hash of the key, so adding inputs never moves old keys."""
    return zlib.crc32(key.encode("utf-8")) % world_size


def rank_prefix(rank: int) -> str:
    """The shard prefix of a rank: rank00003."""
    return f"rank{rank:05d}"


def rank_manifest_name(rank: int) -> str:
    """The part manifest a rank writes: manifest-rank00003.json."""
    return f"manifest-{rank_prefix(rank)}.json"


def done_name(rank: int) -> str:
    """The marker a finished rank writes: done-rank00003.json."""
    return f"done-{rank_prefix(rank)}.json"


def check_resumable(out_dir: str, manifest_name: str, producer: dict, world_size: int, fixed: Sequence[str] = (),
                    fixed_options: Sequence[str] = ()) -> None:
    """Refuse to mix another command's shards, other content options or another world size into OUT_DIR.

    `fixed` names keys of `producer`, `fixed_options` keys of `producer["options"]`,
    that a resumed run must share with the run that wrote OUT_DIR.
    """
    command = producer["name"]
    path = os.path.join(out_dir, manifest_name)
    if world_size > 1:
        main = os.path.join(out_dir, MANIFEST)
        if os.path.exists(main):
            names = [s["name"] for s in read_manifest(out_dir).get("shards", [])]
            if any(not n.startswith("rank") for n in names):
                raise ValueError(f"{main}: {out_dir} holds a single-process run; rerun it without "
                                 "--world-size or write to a new folder")
    else:
        parts = glob.glob(os.path.join(glob.escape(out_dir), "manifest-rank*.json"))
        if parts and not os.path.exists(os.path.join(out_dir, MANIFEST)):
            raise ValueError(f"{out_dir} holds an unmerged multi-rank run ({os.path.basename(parts[0])}); "
                             f"rerun it with the same --world-size, or `{command} --merge` it first")
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        old = json.load(f)
    old_producer = old.get("producer") or {}
    if old.get("shards") and (not isinstance(old_producer, dict) or old_producer.get("name") != command):
        raise ValueError(f"{path}: {out_dir} holds shards not written by `{command}`; use a new folder")
    for k in fixed:
        if old_producer.get(k) not in (None, producer[k]):
            raise ValueError(f"{path}: {out_dir} was written with another {k} ({str(old_producer[k])[:12]}...); "
                             "use a new folder")
    old_options = old_producer.get("options") or {}
    for k in fixed_options:
        if k in old_options and old_options[k] != producer["options"][k]:
            raise ValueError(f"{path}: {out_dir} was written with {k}={_shown(old_options[k])}, this run has "
                             f"{k}={_shown(producer['options'][k])}; use the same options or a new folder")
    if world_size > 1 and old.get("world_size") not in (None, world_size):
        raise ValueError(f"{path}: {out_dir} was written with world size {old['world_size']}, this run "
                         f"has {world_size}; use the same world size or a new folder")


def _shown(value: Any, limit: int = 160) -> str:
    """An option's value for a one-line message: its repr, cut at `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failures_path(out_dir: str, rank: int, world_size: int) -> str:
    """This rank's failure list: OUT_DIR/failed.jsonl, or failed-rankNNNNN.jsonl in a multi-rank run."""
    return os.path.join(out_dir, FAILED if world_size <= 1 else f"failed-{rank_prefix(rank)}.jsonl")


def start_rank(out_dir: str, rank: int, world_size: int) -> None:
    """Remove this rank's done marker (only a finished rank has one) and its failures of an earlier run."""
    paths = [failures_path(out_dir, rank, world_size)]
    if world_size > 1:
        paths.append(os.path.join(out_dir, done_name(rank)))
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def finish_rank(out_dir: str, rank: int, world_size: int, fingerprint: str, samples: int, failed: int,
                mirror: Mirror | None = None) -> bool:
    """Write this rank's done marker and merge if every rank has finished. Returns True when merged.

    With a `mirror` (an output in object storage, csst_data/store/mirror.py) this rank's files are uploaded
    before the others' markers are read from the URL, so of two ranks finishing together at
    least the later one sees both markers."""
    atomic_write_json(os.path.join(out_dir, done_name(rank)), {
        "rank": rank, "world_size": world_size, "fingerprint": fingerprint, "samples": samples, "failed": failed,
    })
    if mirror is not None:
        mirror.push()
        mirror.pull(shards=False)
    done = 0
    for r in range(world_size):
        try:
            with open(os.path.join(out_dir, done_name(r)), "rb") as f:
                marker = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        done += marker.get("fingerprint") == fingerprint and marker.get("world_size") == world_size
    if done < world_size:
        return False
    merge_ranks(out_dir, exists=mirror.exists if mirror is not None else None)
    return True


def merge_ranks(out_dir: str | os.PathLike, exists: Callable[[str], bool] | None = None) -> str:
    """Write OUT_DIR/manifest.json from the per-rank manifests of a finished multi-rank run.

    Every rank must have written its done marker (all with the same inputs and
    options); otherwise a ValueError names the ranks still missing.
    """
    out_dir = os.fspath(out_dir)
    markers = []
    for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), "done-rank*.json"))):
        with open(path, "rb") as f:
            markers.append(json.load(f))
    if not markers:
        raise ValueError(f"{out_dir}: no done-rank*.json markers; no rank of a multi-rank run has finished here")
    worlds = {m["world_size"] for m in markers}
    prints = {m["fingerprint"] for m in markers}
    if len(worlds) > 1 or len(prints) > 1:
        raise ValueError(f"{out_dir}: the done markers are from different runs (world sizes {sorted(worlds)}, "
                         f"{len(prints)} input lists); rerun every rank with the same command")
    world = worlds.pop()
    missing = sorted(set(range(world)) - {m["rank"] for m in markers})
    if missing:
        raise ValueError(f"{out_dir}: rank(s) {missing} of {world} have not finished; rerun them first")
    merge_manifests(out_dir, [rank_manifest_name(r) for r in range(world)], drop=("rank",), exists=exists)
    lines = []
    for r in range(world):
        path = failures_path(out_dir, r, world)
        if os.path.exists(path):
            with open(path, "rb") as f:
                lines.append(f.read())
    failed = os.path.join(out_dir, FAILED)
    if any(lines):
        atomic_write_bytes(failed, b"".join(lines))
    elif os.path.exists(failed):
        os.remove(failed)
    return os.path.join(out_dir, MANIFEST)


def unfinished_run(out_dir: str | os.PathLike) -> str | None:
    """What is unfinished about a multi-rank run in OUT_DIR (a message), or None.

    A run whose ranks have not all finished, or finished without the merge, has
    per-rank manifests but no manifest.json listing their shards."""
    parts = sorted(glob.glob(os.path.join(glob.escape(os.fspath(out_dir)), "manifest-rank*.json")))
    if not parts:
        return None
    main = os.path.join(out_dir, MANIFEST)
    listed = set()
    if os.path.exists(main):
        listed = {s["name"] for s in read_manifest(out_dir).get("shards", [])}
    markers = {}
    for path in glob.glob(os.path.join(glob.escape(os.fspath(out_dir)), "done-rank*.json")):
        with open(path, "rb") as f:
            m = json.load(f)
        markers[m["rank"]] = m
    worlds = {m["world_size"] for m in markers.values()}
    for path in parts:
        with open(path, "rb") as f:
            part = json.load(f)
        if any(s["name"] not in listed for s in part.get("shards", [])):
            world = part.get("world_size") or (worlds.pop() if len(worlds) == 1 else None)
            missing = sorted(set(range(world)) - set(markers)) if world else []
            what = f"rank(s) {missing} of {world} have not finished" if missing else "every rank finished but the run was not merged"
            return (f"{out_dir} is an unfinished multi-rank run: {what}; rerun the missing ranks with the same "
                    "command, or merge it (`csst label --merge`)")
    return None


def record_failure(out_dir: str, key: str, source: str, reason: str, rank: int, world_size: int = 1) -> None:
    """Append one line to this run's failures (OUT_DIR/failed.jsonl, or the rank's file)."""
    line = json.dumps({"path": source, "key": key, "reason": reason, "rank": rank}) + "\n"
    # One write per line with O_APPEND: a line is never torn.
    fd = os.open(failures_path(out_dir, rank, world_size), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
