"""The run skeleton of every command that writes a shard set by ranks (`csst label`, `csst pack`).

A command describes its run once (a `RunSpec`: output, rank, producer,
fingerprint, the options a resumed run must share) and does only its own
per-sample work in between:

    with ranked_output(out, rank, world_size) as (folder, mirror, done):
        run = ShardRun(spec(folder), mirror)        # resumability checked, rank started
        mine = run.mine(items, key)                 # the keys that hash to this rank
        writer = run.open(info, shard_size)         # ShardWriter, resuming what is stored
        todo = todo_of(mine, writer, key)           # the keys no earlier run stored
        for ...: writer.write(sample) / run.fail(key, source, reason)
        return done(run.finish(**counts))           # done marker, merge; the summary

Resumability, ranks, failures and merging are shardrun.py's; writing to a URL
through a staging folder is mirror.py's; the lock (one writer per rank and
output) is locks.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from csst_data.runs.shardrun import (check_resumable, finish_rank, rank_manifest_name, rank_of, rank_prefix,
                                     record_failure, start_rank)
from csst_data.store.locks import OutputLock
from csst_data.store.mirror import Mirror, close_output, open_output
from csst_data.store.shards import MANIFEST, SetInfo, ShardWriter


@dataclass(frozen=True)
class RunSpec:
    """What a shard-writing run is: where, which rank, and what a resumed run must share."""

    out: str                        # the local folder written (a URL's staging folder)
    rank: int                       # this process's rank, 0..world_size - 1
    world_size: int                 # processes writing the set; 1 = a single process
    producer: dict                  # the manifest's `producer` record (name, options, ...)
    fingerprint: str                # hash of inputs and content options: ranks of one run agree on it
    fixed: tuple = ()               # keys of `producer` a resumed run must share
    fixed_options: tuple = ()       # keys of producer["options"] a resumed run must share

    @property
    def ranked(self) -> bool:
        return self.world_size > 1

    @property
    def manifest_name(self) -> str:
        return rank_manifest_name(self.rank) if self.ranked else MANIFEST

    @property
    def prefix(self) -> str:
        return rank_prefix(self.rank) if self.ranked else "shard"


@contextlib.contextmanager
def ranked_output(out: str, rank: int, world_size: int) -> Iterator[tuple[str, Mirror | None, Callable]]:
    """Open `out` (a folder or an object-store URL) for this rank, holding its lock.

    Yields (folder to write, Mirror or None, done): call `done(summary)` with the
    run's summary; it uploads what is left to a URL and returns the summary."""
    folder, mirror = open_output(os.fspath(out), rank_prefix(rank) if world_size > 1 else "shard")
    os.makedirs(folder, exist_ok=True)
    with OutputLock(folder, f".lock-{rank_prefix(rank)}"):
        yield folder, mirror, lambda summary: close_output(mirror, summary)


@dataclass
class ShardRun:
    """One rank's run: resumability checked and the rank started on creation."""

    spec: RunSpec
    mirror: Mirror | None = None
    failed: int = 0
    writer: ShardWriter | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.spec
        check_resumable(s.out, s.manifest_name, s.producer, s.world_size, fixed=s.fixed,
                        fixed_options=s.fixed_options)
        start_rank(s.out, s.rank, s.world_size)

    def mine(self, items: Iterable, key: Callable[[Any], str]) -> list:
        """The items whose key hashes to this rank (all of them in a single process)."""
        if not self.spec.ranked:
            return list(items)
        return [it for it in items if rank_of(key(it), self.spec.world_size) == self.spec.rank]

    def open(self, info: SetInfo, shard_size: int) -> ShardWriter:
        """The rank's ShardWriter, resuming the shards already stored (its `existing_keys`)."""
        s = self.spec
        extra = {**(info.extra or {}), **({"rank": s.rank, "world_size": s.world_size} if s.ranked else {})}
        info = dataclasses.replace(info, extra=extra)
        self.writer = ShardWriter(s.out, info, prefix=s.prefix, maxcount=shard_size, manifest=s.manifest_name,
                                  resume=True, on_finish=self.mirror.sync if self.mirror else None)
        return self.writer

    def fail(self, key: str, source: str, reason: str) -> None:
        """Record an unreadable input in this run's failures."""
        record_failure(self.spec.out, key, source, reason, self.spec.rank, self.spec.world_size)
        self.failed += 1

    def finish(self, **summary: Any) -> dict:
        """After the writer closed: the done marker and merge (ranked runs) -> the summary dict,
        `summary`'s entries followed by rank, world_size, merged, manifest, shards."""
        s = self.spec
        merged = True
        if s.ranked:
            merged = finish_rank(s.out, s.rank, s.world_size, s.fingerprint, len(self.writer.keys), self.failed,
                                 self.mirror)
        return {**summary, "rank": s.rank, "world_size": s.world_size, "merged": merged,
                "manifest": os.path.join(s.out, MANIFEST if merged else s.manifest_name),
                "shards": len(self.writer.shards)}


def todo_of(mine: Sequence, writer: ShardWriter, key: Callable[[Any], str]) -> list:
    """The items of `mine` whose keys no earlier run of this rank stored."""
    return [it for it in mine if key(it) not in writer.existing_keys]
