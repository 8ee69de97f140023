"""Baseline JPEG structure, restart markers and spliced window decoding.

A restart marker (RST0-7) ends a byte-aligned interval of K MCUs and resets
the DC predictors, so each interval decodes on its own. When K divides the
MCUs of a row, the intervals that cover a window (a rectangle of whole
intervals) copied into a new JPEG - same tables, frame size patched, markers
renumbered 0..7 in order - form an ordinary small JPEG whose pixels equal that
region of the full decode: every block is decoded from the same coefficients,
and without fancy upsampling (csst decodes with `fastupsample`) no pixel
depends on a neighbouring MCU. See ../docs/formats.md (images in shards).

    info = parse(data)                           # frame, MCU grid, restart interval
    window_decode(data, y0, y1, x0, x1, scale)   # -> (pixels, (top, left) of them in the decode)

No library exposes this (libjpeg-turbo's own crop decodes every row above a
window, and skips no entropy decoding), so it is written here.
"""

import io
import math
from dataclasses import dataclass

import numpy as np

_SOF_BASELINE = (0xC0, 0xC1)  # baseline and extended sequential, Huffman coded
_SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
# Segments a spliced window needs: tables, restart interval, frame, Adobe colour transform, JFIF.
_KEEP = (0xDB, 0xC4, 0xDD, 0xE0, 0xEE)


class UnsupportedJpeg(ValueError):
    """A JPEG that the restart machinery cannot handle (progressive, arithmetic, several scans...)."""


@dataclass(frozen=True)
class JpegInfo:
    height: int
    width: int
    components: tuple           # ((id, h, v, quant table), ...) in frame order
    mcu_height: int             # pixels
    mcu_width: int
    mcus_y: int
    mcus_x: int
    restart_interval: int       # MCUs per interval; 0: no restart markers
    sof: int                    # byte offset of the SOF marker
    sos: int                    # byte offset of the SOS marker
    scan: int                   # first byte of entropy-coded data
    segments: tuple             # ((marker, start, end), ...) between SOI and SOS, end exclusive
    baseline: bool              # sequential Huffman with one interleaved scan of every component


def parse(data):
    """The structure of a JPEG up to its first scan; UnsupportedJpeg for what is not sequential Huffman."""
    buf = memoryview(data)
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise ValueError("not a JPEG (no SOI marker)")
    pos, segments = 2, []
    sof = frame = None
    restart = 0
    while True:
        while pos < n and buf[pos] == 0xFF and pos + 1 < n and buf[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > n or buf[pos] != 0xFF:
            raise ValueError(f"JPEG: bad marker at byte {pos}")
        marker = buf[pos + 1]
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        end = pos + 2 + length
        if end > n:
            raise ValueError(f"JPEG: segment 0x{marker:02X} at byte {pos} runs past the end")
        if marker in _SOF_OTHER:
            raise UnsupportedJpeg(f"SOF 0x{marker:02X}: not a baseline (sequential Huffman) JPEG")
        if marker in _SOF_BASELINE:
            sof = pos
            if buf[pos + 4] != 8:
                raise UnsupportedJpeg(f"{buf[pos + 4]}-bit samples")
            height = (buf[pos + 5] << 8) | buf[pos + 6]
            width = (buf[pos + 7] << 8) | buf[pos + 8]
            comps = tuple((buf[pos + 10 + 3 * i], buf[pos + 11 + 3 * i] >> 4, buf[pos + 11 + 3 * i] & 15,
                           buf[pos + 12 + 3 * i]) for i in range(buf[pos + 9]))
            frame = (height, width, comps)
        elif marker == 0xDD:
            restart = (buf[pos + 4] << 8) | buf[pos + 5]
        elif marker == 0xDA:
            if frame is None:
                raise ValueError("JPEG: scan before frame header")
            height, width, comps = frame
            if height == 0:
                raise UnsupportedJpeg("height defined by a DNL marker")
            if not comps or any(not (1 <= c[1] <= 4 and 1 <= c[2] <= 4) for c in comps) or width == 0:
                raise ValueError("JPEG: bad frame header (sampling factors or width)")
            hmax = max(c[1] for c in comps)
            vmax = max(c[2] for c in comps)
            in_scan = buf[pos + 4]
            return JpegInfo(
                height=height, width=width, components=comps, mcu_height=8 * vmax, mcu_width=8 * hmax,
                mcus_y=math.ceil(height / (8 * vmax)), mcus_x=math.ceil(width / (8 * hmax)),
                restart_interval=restart, sof=sof, sos=pos, scan=end, segments=tuple(segments),
                baseline=in_scan == len(comps) and (len(comps) > 1 or (hmax, vmax) == (1, 1)))
        segments.append((marker, pos, end))
        pos = end


def scan_markers(data, info):
    """(byte offsets of the RST markers of the first scan, offset of the marker that ends it), in one pass.

    Data after the end (e.g. a second image appended by a camera) is not taken for restart markers.
    """
    buf = np.frombuffer(data, np.uint8, offset=info.scan)
    ff = np.flatnonzero(buf[:-1] == 0xFF)
    nxt = buf[ff + 1]
    # Entropy-coded bytes never hold FF followed by anything but 00 (stuffing): the rest are markers.
    ff, nxt = ff[nxt != 0], nxt[nxt != 0]
    rst = (nxt >= 0xD0) & (nxt <= 0xD7)
    ends = np.flatnonzero(~rst & (nxt != 0xFF))  # FF FF is fill before a marker
    if not len(ends):
        raise ValueError("JPEG: the scan has no end marker (truncated?)")
    stop = int(ends[0])
    return ff[:stop][rst[:stop]].astype(np.int64) + info.scan, int(ff[stop]) + info.scan


def restart_offsets(data, info):
    """Byte offsets of the RST markers of the first scan, in order (int64 array)."""
    return scan_markers(data, info)[0]


# The restart index: APP9 segments that csst adds to the JPEGs it writes, holding the byte length
# of every restart interval, so that a reader finds the intervals of a window without scanning the
# whole entropy-coded data for markers (0.2-0.3 ms of a 1024x2048 image, which the loader would
# pay per crop). Decoders skip APPn segments they do not know. Payload, big-endian:
#   "CSST-RST\0", version (1 byte), restart interval (2), intervals in all (4),
#   first interval in this segment (4), then each interval's length in bytes (2 each).
_INDEX_ID = b"CSST-RST\0"
_INDEX_HEAD = len(_INDEX_ID) + 1 + 2 + 4 + 4
_INDEX_PER_SEGMENT = (0xFFFF - 2 - _INDEX_HEAD) // 2


def is_restart_index(data, segment):
    """Whether a segment (marker, start, end) of `parse` is a csst restart index."""
    marker, a, _ = segment
    return marker == 0xE9 and bytes(data[a + 4:a + 4 + len(_INDEX_ID)]) == _INDEX_ID


def without_restart_index(data, info=None):
    """The JPEG without restart-index segments (for a writer that re-codes the scan)."""
    info = info or parse(data)
    view, parts, pos = memoryview(data), [], 0
    for _, a, b in filter(lambda seg: is_restart_index(data, seg), info.segments):
        parts.append(view[pos:a])
        pos = b
    parts.append(view[pos:])
    return b"".join(parts)


def with_restart_index(data, info=None):
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


def _read_index(data, info):
    """Interval lengths from the restart index, or None when there is none or it does not fit this
    JPEG's frame and restart interval."""
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
    lengths = _read_index(data, info)
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


def restart_intervals(data, info):
    """(starts, stops): the byte range of each restart interval's entropy-coded data, in order.

    From the restart index when the JPEG carries one that matches its scan (every marker checked
    where the index puts it; an index copied along by a tool that re-coded the scan does not match
    and is ignored), else by scanning the data for markers."""
    got = _checked_index(data, info)
    return got if got is not None else _scan_intervals(data, info)


def can_splice(info):
    """Whether windows of this JPEG can be spliced from restart intervals."""
    k = info.restart_interval
    return info.baseline and k > 0 and info.mcus_x % k == 0


def choose_restart_interval(width, mcu_width, most=4):
    """The largest interval <= `most` MCUs that divides the MCUs of a row (splicing needs it)."""
    mcus = math.ceil(width / mcu_width)
    if mcus < 1:
        raise ValueError(f"width {width}: no MCU in a row")
    return next(k for k in range(min(most, mcus), 0, -1) if mcus % k == 0)


def exif_orientation(data):
    """The EXIF orientation tag of an image (1..8; 1 when there is none)."""
    from PIL import Image

    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)) or 1
    except Exception:
        return 1


def size_mismatch(data, image_hw, label_hw):
    """The message for an image whose stored size differs from its label's, naming an EXIF
    rotation when that is what happened (a mask drawn on a phone photo's rotated view)."""
    msg = f"image is {image_hw[0]}x{image_hw[1]} but its label is {label_hw[0]}x{label_hw[1]}"
    orientation = exif_orientation(data)
    if orientation >= 5 and tuple(image_hw) == tuple(label_hw)[::-1]:
        msg += (f"; the image's EXIF orientation {orientation} rotates it for viewers, and the label was drawn on that "
                "view: csst reads pixels as stored, so rotate the image's pixels (e.g. `exiftran -ai`) first")
    return msg


def without_orientation(data, info=None):
    """The same JPEG with its EXIF orientation tag set to 1 (the stored pixels are the view).

    csst reads pixels as stored, never rotated; a tag left in place would make
    viewers show the image rotated against its labels."""
    from PIL import Image

    info = info or parse(data)
    buf = memoryview(data)
    for marker, a, b in info.segments:
        if marker == 0xE1 and bytes(buf[a + 4:a + 10]) == b"Exif\0\0":
            exif = Image.Exif()
            exif.load(bytes(buf[a + 10:b]))
            if exif.get(0x0112, 1) == 1:
                return bytes(data)
            exif[0x0112] = 1
            payload = b"Exif\0\0" + exif.tobytes()
            if len(payload) + 2 > 65535:
                return bytes(data)
            segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
            return bytes(buf[:a]) + segment + bytes(buf[b:])
    return bytes(data)


def scaled_size(n, m):
    """Pixels of a decode at scale m/8 (libjpeg: ceil(n * m / 8))."""
    return -(-n * m // 8)


def dct_scale(height, width, min_height=0, min_width=0):
    """The m/8 (m = 1..8) that simplejpeg's min_height/min_width pick: the smallest still as large."""
    for m in range(1, 9):
        if scaled_size(height, m) >= min_height and scaled_size(width, m) >= min_width:
            return m
    return 8


def splice(data, info, row0, row1, col0, col1):
    """A JPEG of MCU rows [row0, row1) and restart intervals [col0, col1) of each row.

    Returns (jpeg bytes, (top, left) pixel offset of the piece in the image).
    """
    k = info.restart_interval
    per_row = info.mcus_x // k
    sel = np.arange(row0, row1)[:, None] * per_row + np.arange(col0, col1)
    # From the restart index, checking only the markers this piece uses (each copied interval's
    # end and the one before each row's first): a stale index falls back to scanning.
    got = _index_intervals(data, info)
    used = np.concatenate([sel.ravel(), sel[sel[:, 0] > 0, 0] - 1])
    if got is None or not _markers_at(data, got[1], used, _interval_count(info)):
        got = _scan_intervals(data, info)
    starts, stops = got
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
    # The intervals [col0, col1) of a row are one byte range, RST markers included: copy each row
    # whole, a marker between rows, then renumber every marker in order (the n-th is RST n mod 8).
    a, b = starts[sel[:, 0]], stops[sel[:, -1]]
    body = bytearray(b"\xff\xd0".join([buf[x:y] for x, y in zip(a.tolist(), b.tolist())]))
    at = np.concatenate([[0], np.cumsum(b - a + 2)[:-1]])  # where each row starts in the body
    marks = (stops[sel] - a[:, None] + at[:, None]).ravel()[:-1]
    np.frombuffer(body, np.uint8)[marks + 1] = 0xD0 + (np.arange(len(marks)) & 7)
    parts += [body, b"\xff\xd9"]
    return b"".join(parts), (top, left)


def window_decode(data, y0, y1, x0, x1, m=8, info=None, decode=None):
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
