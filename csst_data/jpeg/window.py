"""Spliced window decoding: the restart intervals of a window decoded as a small JPEG.

A restart marker (RST0-7) ends a byte-aligned interval of K MCUs and resets
the DC predictors, so each interval decodes on its own. When K divides the
MCUs of a row, the intervals that cover a window (a rectangle of whole
intervals) copied into a new JPEG - same tables, frame size patched, markers
renumbered 0..7 in order - form an ordinary small JPEG whose pixels equal that
region of the full decode: every block is decoded from the same coefficients,
and without fancy upsampling (csst decodes with `fastupsample`) no pixel
depends on a neighbouring MCU. See docs/formats.md (images in shards).

    window_decode(data, y0, y1, x0, x1, scale)   # -> (pixels, (top, left) of them in the decode)

No library exposes this (libjpeg-turbo's own crop decodes every row above a
window, and skips no entropy decoding), so it is written here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numba
import numpy as np

from csst_data.jpeg.restart import index_lengths, restart_intervals
from csst_data.jpeg.structure import JpegInfo, can_splice, parse

# Segments a spliced window needs: tables, restart interval, frame, Adobe colour transform, JFIF.
_KEEP = (0xDB, 0xC4, 0xDD, 0xE0, 0xEE)


def scaled_size(n: int, m: int) -> int:
    """Pixels of a decode at scale m/8 (libjpeg: ceil(n * m / 8))."""
    return -(-n * m // 8)


def dct_scale(height: int, width: int, min_height: int = 0, min_width: int = 0) -> int:
    """The m/8 (m = 1..8) that simplejpeg's min_height/min_width pick: the smallest still as large."""
    for m in range(1, 9):
        if scaled_size(height, m) >= min_height and scaled_size(width, m) >= min_width:
            return m
    return 8


def splice(data: bytes, info: JpegInfo, row0: int, row1: int, col0: int,
           col1: int) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of MCU rows [row0, row1) and restart intervals [col0, col1) of each row.

    Returns (jpeg bytes, (top, left) pixel offset of the piece in the image).
    """
    k = info.restart_interval
    per_row = info.mcus_x // k
    top, left = row0 * info.mcu_height, col0 * k * info.mcu_width
    height = min(info.height, row1 * info.mcu_height) - top
    width = min(info.width, col1 * k * info.mcu_width) - left
    buf = memoryview(data)
    sof = bytearray(buf[info.sof:info.sof + 2 + ((buf[info.sof + 2] << 8) | buf[info.sof + 3])])
    sof[5:9] = bytes((height >> 8, height & 255, width >> 8, width & 255))
    parts = [b"\xff\xd8"]
    for marker, a, b in info.segments:  # in their order, the frame header patched
        if a == info.sof:
            parts.append(bytes(sof))
        elif marker in _KEEP:
            parts.append(buf[a:b])
    parts.append(buf[info.sos:info.scan])
    body = None
    lengths = index_lengths(data, info)
    if lengths is not None:
        # One pass over the piece's intervals (their markers checked where the index puts them).
        out = np.empty(int(lengths.sum()) + 2 * len(lengths), np.uint8)
        n = _splice_scan(np.frombuffer(data, np.uint8), lengths, info.scan, per_row, row0, row1, col0, col1, out)
        body = out[:n] if n >= 0 else None
    if body is None:  # no index, or a stale one: find the markers by scanning
        body = _spliced_scan(data, info, per_row, row0, row1, col0, col1)
    parts += [body, b"\xff\xd9"]
    return b"".join(parts), (top, left)


def _spliced_scan(data, info, per_row, row0, row1, col0, col1):
    """The piece's entropy-coded data, intervals found by `restart_intervals` (index or scan)."""
    sel = np.arange(row0, row1)[:, None] * per_row + np.arange(col0, col1)
    # Only the markers this piece uses are checked (each copied interval's end and the one before
    # each row's first): a stale index falls back to scanning.
    used = np.concatenate([sel.ravel(), sel[sel[:, 0] > 0, 0] - 1])
    starts, stops = restart_intervals(data, info, check=used)
    buf = memoryview(data)
    # The intervals [col0, col1) of a row are one byte range, RST markers included: copy each row
    # whole, a marker between rows, then renumber every marker in order (the n-th is RST n mod 8).
    a, b = starts[sel[:, 0]], stops[sel[:, -1]]
    body = bytearray(b"\xff\xd0".join([buf[x:y] for x, y in zip(a.tolist(), b.tolist())]))
    at = np.concatenate([[0], np.cumsum(b - a + 2)[:-1]])  # where each row starts in the body
    marks = (stops[sel] - a[:, None] + at[:, None]).ravel()[:-1]
    np.frombuffer(body, np.uint8)[marks + 1] = 0xD0 + (np.arange(len(marks)) & 7)
    return body


@numba.njit(cache=True, nogil=True)
def _splice_scan(buf, lengths, scan, per_row, row0, row1, col0, col1, out):
    """Write the entropy-coded data of intervals [col0, col1) of MCU rows [row0, row1) into `out`,
    markers renumbered in order (the n-th is RST n mod 8); returns the bytes written, or -1 when a
    marker is not where the index `lengths` puts it (each copied interval's end and the one before
    each row's first are checked: interval i ends at RST i mod 8, the last one at another marker).
    The numpy version (`_spliced_scan`) costs about 0.1 ms per window in small array operations."""
    count = len(lengths)
    last = (row1 - 1) * per_row + col1
    stops = np.empty(last, np.int64)
    pos = scan
    for i in range(last):
        stops[i] = pos + lengths[i]
        pos = stops[i] + 2
    if stops[last - 1] + 1 >= len(buf):
        return -1
    o, n = 0, 0
    for r in range(row0, row1):
        first = r * per_row + col0
        if first > 0:
            p = stops[first - 1]
            if buf[p] != 0xFF or buf[p + 1] != 0xD0 + ((first - 1) & 7):
                return -1
        a = scan if first == 0 else stops[first - 1] + 2
        for c in range(col0, col1):
            i = r * per_row + c
            p = stops[i]
            if buf[p] != 0xFF:
                return -1
            nxt = buf[p + 1]
            if i == count - 1:
                if (nxt >= 0xD0 and nxt <= 0xD7) or nxt == 0:
                    return -1
            elif nxt != 0xD0 + (i & 7):
                return -1
            out[o:o + p - a] = buf[a:p]
            o += p - a
            if r < row1 - 1 or c < col1 - 1:
                out[o] = 0xFF
                out[o + 1] = 0xD0 + (n & 7)
                n += 1
                o += 2
            a = p + 2
    return o


def window_decode(data: bytes, y0: int, y1: int, x0: int, x1: int, m: int = 8, info: JpegInfo | None = None,
                  decode: Callable[[bytes, int], np.ndarray] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode (at scale m/8) the smallest spliced piece holding decoded pixels [y0, y1) x [x0, x1).

    Returns (pixels, (top, left)): `pixels` equal rows top.. and columns left..
    of the full decode at the same scale. Falls back to the full decode (top =
    left = 0) for JPEGs whose intervals cannot be spliced. `decode(jpeg, m)`
    decodes a JPEG at scale m/8 (default: simplejpeg, RGB, fast DCT and upsampling).
    """
    decode = decode or _decode
    info = info or parse(data)
    if not can_splice(info):
        return decode(data, m), (0, 0)
    k = info.restart_interval
    # Decoded pixels -> original pixels (one block of 8 decodes to m pixels).
    mh, mw = info.mcu_height * m // 8, info.mcu_width * m // 8
    row0, row1 = max(0, y0 // mh), min(info.mcus_y, -(-y1 // mh))
    col0, col1 = max(0, x0 // (mw * k)), min(info.mcus_x // k, -(-x1 // (mw * k)))
    # A piece of fewer than 8 rows or columns could decode at another scale: widen it.
    while (min(info.height, row1 * info.mcu_height) - row0 * info.mcu_height) < 8 and row0 > 0:
        row0 -= 1
    while (min(info.width, col1 * k * info.mcu_width) - col0 * k * info.mcu_width) < 8 and col0 > 0:
        col0 -= 1
    if (row0, row1, col0, col1) == (0, info.mcus_y, 0, info.mcus_x // k):
        return decode(data, m), (0, 0)
    piece, (top, left) = splice(data, info, row0, row1, col0, col1)
    return decode(piece, m), (top * m // 8, left * m // 8)


def _decode(data, m):
    import simplejpeg

    if m == 8:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
    h, w = simplejpeg.decode_jpeg_header(data)[:2]
    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                  min_height=scaled_size(h, m), min_width=scaled_size(w, m))


_pools: dict = {}  # (pid, threads) -> ThreadPoolExecutor: per process, since a forked child has no threads
BANDS_PER_THREAD = 4


def band_decode(data: bytes, threads: int = 2, info: JpegInfo | None = None,
                decode: Callable[[bytes, int], np.ndarray] | None = None) -> np.ndarray:
    """The whole image of a restart-marker JPEG, decoded in bands of MCU rows on `threads` threads.

    At every MCU row a csst JPEG splits into valid JPEGs (`splice` of whole rows), and
    with fast upsampling no decoded pixel depends on another MCU row, so the bands
    decoded apart and stacked equal one decode of the whole image, pixel for pixel.
    libjpeg-turbo releases the GIL, so the bands decode on `threads` threads. A JPEG
    that cannot be spliced (no markers, progressive) or `threads` <= 1 is one call.
    """
    info = info or parse(data)
    threads = min(int(threads), info.mcus_y)
    if threads <= 1 or not can_splice(info):
        return (decode or _decode)(data, 8)
    # More bands than threads: a band of sky decodes faster than one of street, and threads
    # that take the next band when done stay busy (measured: 4 per thread did best on 2 cores).
    bands = min(BANDS_PER_THREAD * threads, info.mcus_y)
    per_row = info.mcus_x // info.restart_interval
    edges = np.linspace(0, info.mcus_y, bands + 1).round().astype(int)
    pieces = [splice(data, info, a, b, 0, per_row)[0] for a, b in zip(edges[:-1], edges[1:])]
    key = (os.getpid(), threads)
    if key not in _pools:
        from concurrent.futures import ThreadPoolExecutor

        _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="csst-band")
    if decode is not None:
        return np.concatenate(list(_pools[key].map(lambda piece: decode(piece, 8), pieces)))[:info.height]
    # libjpeg-turbo writes each band straight into its rows of the image: no copy to stack them.
    import simplejpeg

    out = np.empty((info.height, info.width, 3), np.uint8)
    rows = [min(int(a) * info.mcu_height, info.height) for a in edges]

    def one(i):
        simplejpeg.decode_jpeg(pieces[i], colorspace="RGB", fastdct=True, fastupsample=True,
                               buffer=out[rows[i]:rows[i + 1]])

    list(_pools[key].map(one, range(bands)))
    return out
