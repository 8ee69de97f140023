"""The plan-ordered prefetcher: order, skipped rows, bounds."""

import threading
import time

import pytest

from csst_data.loader.prefetch import Prefetcher


def test_rows_come_back_in_order_and_skips_are_dropped():
    p = Prefetcher(lambda r: r * 10, [(r, 1) for r in (5, 3, 5, 8, 1)], depth=3, threads=2)
    assert p.take(5) == 50 and p.take(3) == 30
    assert p.take(99) is None  # not in flight: the caller reads it itself
    assert p.take(8) == 80  # the second 5 was skipped by the caller and dropped
    assert p.take(1) == 10 and p.take(1) is None
    p.close()


def test_depth_and_byte_bound_limit_what_is_fetched_ahead():
    started, lock = [], threading.Lock()

    def fetch(r):
        with lock:
            started.append(r)
        return r

    p = Prefetcher(fetch, [(r, 100) for r in range(50)], depth=8, threads=4, max_bytes=350)
    time.sleep(0.2)
    assert len(started) == 4  # 4 x 100 bytes reach the 350-byte bound (the 4th crosses it)
    assert p.take(0) == 0
    time.sleep(0.2)
    assert len(started) == 5
    p.close()
    q = Prefetcher(fetch, [(r, 1) for r in range(100, 150)], depth=8, threads=4)
    time.sleep(0.2)
    assert len([r for r in started if r >= 100]) == 8
    q.close()


def test_a_failed_fetch_raises_for_its_row():
    def fetch(r):
        if r == 2:
            raise ValueError("boom")
        return r

    p = Prefetcher(fetch, [(r, 1) for r in range(4)], depth=4)
    assert p.take(0) == 0 and p.take(1) == 1
    with pytest.raises(ValueError, match="boom"):
        p.take(2)
    assert p.take(3) == 3
    p.close()
