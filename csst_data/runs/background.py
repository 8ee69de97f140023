"""Encode samples in a thread pool and write them in order from one thread (`csst label`).

The model's loop hands each prediction over with `put(encode, *args)` and goes
on; `encode(*args)` (label compression, image transcoding) runs in a pool of
threads and the results are written in the order they were put, by one thread,
through the run's ShardWriter. `put` blocks when `depth` samples are pending,
so memory stays bounded.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable

from csst_data.store.shards import ShardWriter
from csst_data.workers import lower_priority


class BackgroundWriter:
    """`writer` fed from `threads` encoding threads; at `nice`, they yield the CPU to the model."""

    def __init__(self, writer: ShardWriter, threads: int, depth: int, nice: int = 0) -> None:
        self.writer, self.error, self.nice = writer, None, nice
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="csst-encode",
                                                          initializer=lower_priority, initargs=(nice,))
        self.queue = queue.Queue(maxsize=max(1, depth))
        self.thread = threading.Thread(target=self._run, name="csst-writer", daemon=True)
        self.thread.start()

    def put(self, encode: Callable[..., dict], *args: object) -> None:
        """Encode `encode(*args)` (a sample dict) in the pool; it is written after those put before."""
        if self.error is not None:
            raise self.error  # e.g. OSError (disk full) from the writer thread
        self.queue.put(self.pool.submit(encode, *args))

    def _run(self):
        lower_priority(self.nice)
        while (future := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure so `put` never blocks forever
            try:
                self.writer.write(future.result())
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                self.error = e

    def close(self) -> None:
        """Write everything pending, finish the open shard and the manifest."""
        self.queue.put(None)
        self.thread.join()
        self.pool.shutdown()
        if self.error is not None:
            self.writer.abort()
            raise self.error
        self.writer.close()

    def abort(self) -> None:
        """Drop pending samples and the open shard (a rerun redoes them)."""
        self.error = self.error or RuntimeError("aborted")
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put(None)
        self.thread.join()
        self.pool.shutdown(cancel_futures=True)
        self.writer.abort()
