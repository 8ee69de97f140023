"""The restart index: APP9 segments csst writes into its JPEGs, and the restart intervals of a scan.

`with_restart_index` adds the index (the byte length of every restart
interval), `without_restart_index` drops it, and `restart_intervals` gives the
byte range of each interval, from a matching index or by scanning for markers.
"""

from __future__ import annotations

import numpy as np

from csst_data.jpeg.structure import JpegInfo, can_splice, parse, scan_markers

# The restart index: APP9 segments that csst adds to the JPEGs it writes, holding the byte length
# of every restart interval, so that a reader finds the intervals of a window without scanning the
# whole entropy-coded data for markers (0.2-0.3 ms of a 1024x2048 image, which the loader would
# pay per crop). Decoders skip APPn segments they do not know. Payload, big-endian:
#   "CSST-RST\0", version (1 byte), restart interval (2), intervals in all (4),
#   first interval in this segment (4), then each interval's length in bytes (2 each).
_INDEX_ID = b"CSST-RST\0"
_INDEX_HEAD = len(_INDEX_ID) + 1 + 2 + 4 + 4
_INDEX_PER_SEGMENT = (0xFFFF - 2 - _INDEX_HEAD) // 2


def is_restart_index(data: bytes, segment: tuple[int, int, int]) -> bool:
    """Whether a segment (marker, start, end) of `parse` is a csst restart index."""
    marker, a, _ = segment
    return marker == 0xE9 and bytes(data[a + 4:a + 4 + len(_INDEX_ID)]) == _INDEX_ID


def without_restart_index(data: bytes, info: JpegInfo | None = None) -> bytes:
    """The JPEG without restart-index segments (for a writer that re-codes the scan)."""
    info = info or parse(data)
    view, parts, pos = memoryview(data), [], 0
    for _, a, b in filter(lambda seg: is_restart_index(data, seg), info.segments):
        parts.append(view[pos:a])
        pos = b
    parts.append(view[pos:])
    return b"".join(parts)


def with_restart_index(data: bytes, info: JpegInfo | None = None) -> bytes:
    """The JPEG with a restart index (APP9 segments before the scan) when its windows can be
    spliced; other JPEGs come back unchanged, as do those whose index matches their scan (a
    stale one is replaced)."""
    info = info or parse(data)
    if not can_splice(info) or _checked_index(data, info) is not None:
        return bytes(data)
    if any(is_restart_index(data, seg) for seg in info.segments):
        data = without_restart_index(data, info)
        info = parse(data)
    try:
        starts, stops = _scan_intervals(data, info)
    except _MarkerCount:  # markers missing or extra: no index (a reader says what is wrong)
        return bytes(data)
    lengths = stops - starts
    if lengths.max() > 0xFFFF:
        return bytes(data)
    parts = [bytes(data[:info.sos])]
    for first in range(0, len(lengths), _INDEX_PER_SEGMENT):
        payload = b"".join([_INDEX_ID, b"\x01", info.restart_interval.to_bytes(2, "big"),
                            len(lengths).to_bytes(4, "big"), first.to_bytes(4, "big"),
                            lengths[first:first + _INDEX_PER_SEGMENT].astype(">u2").tobytes()])
        parts.append(b"\xff\xe9" + (len(payload) + 2).to_bytes(2, "big") + payload)
    parts.append(bytes(data[info.sos:]))
    return b"".join(parts)


def _interval_count(info):
    return info.mcus_y * (info.mcus_x // info.restart_interval)


def index_lengths(data: bytes, info: JpegInfo) -> np.ndarray | None:
    """The byte length of every restart interval from the JPEG's restart index (int64), unchecked;
    None when there is none or it does not fit this JPEG's frame and restart interval."""
    count = _interval_count(info)
    chunks = []
    for seg in info.segments:
        if not is_restart_index(data, seg):
            continue
        _, a, b = seg
        head = bytes(data[a + 4 + len(_INDEX_ID):a + 4 + _INDEX_HEAD])
        if len(head) < _INDEX_HEAD - len(_INDEX_ID) or head[0] != 1:
            return None
        k, total, first = int.from_bytes(head[1:3], "big"), int.from_bytes(head[3:7], "big"), int.from_bytes(head[7:11], "big")
        if k != info.restart_interval or total != count or first != sum(len(c) for c in chunks):
            return None
        chunks.append(np.frombuffer(data, ">u2", count=(b - a - 4 - _INDEX_HEAD) // 2, offset=a + 4 + _INDEX_HEAD))
    if not chunks:
        return None
    lengths = np.concatenate(chunks).astype(np.int64)
    return lengths if len(lengths) == count else None


def _index_intervals(data, info):
    """(starts, stops) from the restart index, unchecked; None without a fitting index."""
    lengths = index_lengths(data, info)
    if lengths is None:
        return None
    stops = info.scan + np.cumsum(lengths + 2) - 2
    return stops - lengths, stops


def _markers_at(data, stops, which, count):
    """Whether intervals `which` end where `stops` says: at RST (i mod 8), the last one at another marker."""
    buf = np.frombuffer(data, np.uint8)
    pos = stops[which]
    if not len(pos):
        return True
    if int(pos.max()) + 1 >= len(buf):
        return False
    nxt = buf[pos + 1]
    rst = (nxt >= 0xD0) & (nxt <= 0xD7)
    return bool(((buf[pos] == 0xFF) & np.where(which == count - 1, ~rst & (nxt != 0), nxt == 0xD0 + (which & 7))).all())


def _checked_index(data, info):
    """(starts, stops) from the restart index when every marker is where it says, else None."""
    got = _index_intervals(data, info)
    count = _interval_count(info)
    return got if got is not None and _markers_at(data, got[1], np.arange(count), count) else None


class _MarkerCount(ValueError):
    """The scan holds another number of restart markers than its frame and interval call for."""


def _scan_intervals(data, info):
    offsets, end = scan_markers(data, info)
    count = _interval_count(info)
    if len(offsets) != count - 1:
        raise _MarkerCount(f"JPEG: {len(offsets)} restart markers, expected {count - 1}")
    return np.concatenate([[info.scan], offsets + 2]), np.concatenate([offsets, [end]])


def restart_intervals(data: bytes, info: JpegInfo,
                      check: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops): the byte range of each restart interval's entropy-coded data, in order.

    From the restart index when the JPEG carries one that matches its scan (the markers of the
    intervals `check`, default all, looked at where the index puts them; an index copied along by
    a tool that re-coded the scan does not match and is ignored), else by scanning the data for
    markers. A reader of a few intervals checks only the markers it uses."""
    if check is None:
        got = _checked_index(data, info)
    else:
        got = _index_intervals(data, info)
        if got is not None and not _markers_at(data, got[1], check, _interval_count(info)):
            got = None
    return got if got is not None else _scan_intervals(data, info)
