"""Plan-ordered prefetch: fetch the bytes of the samples a worker will need next, ahead of it.

A DataLoader worker knows its whole slice of the epoch plan before it makes its
first batch (crop_loader.CropDataset), so the reads can run ahead of the decoding:
`Prefetcher` walks the rows in the order they will be used, keeps up to
`depth` of them requested (on `threads` threads, so that many requests are in
flight at once) and never more than `max_bytes` fetched but not yet taken.
`take(row)` hands the next row's bytes over, waiting only when they have not
arrived yet. Object-store latency (a few ms per request, far more when a store
throttles and the client backs off) then overlaps with decoding instead of
adding to it.

Nothing random happens here and the rows come back in the order asked for, so
a plan read through a prefetcher gives the same crops as one read directly
(and a resumed epoch starts its prefetcher at the first unread batch).
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Any, Callable, Iterable, Optional, Tuple


class Prefetcher:
    """`fetch(row)` run ahead for `rows` (an iterable of (row, size in bytes)), in order."""

    def __init__(self, fetch: Callable[[int], Any], rows: Iterable[Tuple[int, int]], depth: int = 32,
                 threads: int = 8, max_bytes: int = 256 << 20) -> None:
        self.fetch, self.rows = fetch, iter(rows)
        self.depth, self.max_bytes = max(1, depth), max_bytes
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="csst-prefetch")
        self.pending = collections.deque()  # (row, size, future), in plan order
        self.held = 0  # bytes requested and not yet taken
        self._fill()

    def _fill(self):
        while len(self.pending) < self.depth:
            # The byte bound yields to the first request, so one huge sample cannot stall the stream.
            if self.pending and self.held >= self.max_bytes:
                break
            nxt = next(self.rows, None)
            if nxt is None:
                break
            row, size = nxt
            self.pending.append((row, size, self.pool.submit(self.fetch, row)))
            self.held += size

    def take(self, row: int) -> Optional[Any]:
        """The fetched value of `row`, or None when it is not among the rows in flight (the caller
        reads it itself). Rows in line before it were skipped by the caller and are dropped.
        A failed fetch raises here, for the sample that needed it."""
        if not any(r == row for r, _, _ in self.pending):
            return None
        while True:
            r, size, future = self.pending.popleft()
            self.held -= size
            if r == row:
                break
            future.cancel()
        try:
            return future.result()
        finally:
            self._fill()

    def close(self) -> None:
        for _, _, future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
