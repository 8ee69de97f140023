"""Baseline JPEG structure: markers, frame, restart interval, EXIF orientation.

`parse` reads a JPEG up to its first scan into a JpegInfo (frame size, MCU
grid, restart interval, the segments before the scan); `scan_markers` finds
the restart markers of the scan. `can_splice` says whether windows of a JPEG
can be spliced from its restart intervals (csst_data.jpeg.window), and
`choose_restart_interval` picks an interval for which they can. The EXIF
helpers exist because csst reads pixels as stored, never rotated.

    info = parse(data)                           # frame, MCU grid, restart interval
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_SOF_BASELINE = (0xC0, 0xC1)  # baseline and extended sequential, Huffman coded
_SOF_OTHER = (0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
# Segments a spliced window needs: tables, restart interval, frame, Adobe colour transform, JFIF.
class UnsupportedJpeg(ValueError):
    """A JPEG that the restart machinery cannot handle (progressive, arithmetic, several scans...)."""


@dataclass(frozen=True)
class JpegInfo:
    """What `parse` reads of a JPEG up to its first scan."""

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


def parse(data: bytes) -> JpegInfo:
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


def scan_markers(data: bytes, info: JpegInfo) -> tuple[np.ndarray, int]:
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


def restart_offsets(data: bytes, info: JpegInfo) -> np.ndarray:
    """Byte offsets of the RST markers of the first scan, in order (int64 array)."""
    return scan_markers(data, info)[0]


def can_splice(info: JpegInfo) -> bool:
    """Whether windows of this JPEG can be spliced from restart intervals."""
    k = info.restart_interval
    return info.baseline and k > 0 and info.mcus_x % k == 0


def choose_restart_interval(width: int, mcu_width: int, most: int = 4) -> int:
    """The largest interval <= `most` MCUs that divides the MCUs of a row (splicing needs it)."""
    mcus = math.ceil(width / mcu_width)
    if mcus < 1:
        raise ValueError(f"width {width}: no MCU in a row")
    return next(k for k in range(min(most, mcus), 0, -1) if mcus % k == 0)


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag of an image (1..8; 1 when there is none)."""
    from PIL import Image

    try:
        return int(Image.open(io.BytesIO(data)).getexif().get(0x0112, 1)) or 1
    except Exception:
        return 1


def size_mismatch(data: bytes, image_hw: Sequence[int], label_hw: Sequence[int]) -> str:
    """The message for an image whose stored size differs from its label's, naming an EXIF
    rotation when that is what happened (a mask drawn on a phone photo's rotated view)."""
    msg = f"image is {image_hw[0]}x{image_hw[1]} but its label is {label_hw[0]}x{label_hw[1]}"
    orientation = exif_orientation(data)
    if orientation >= 5 and tuple(image_hw) == tuple(label_hw)[::-1]:
        msg += (f"; the image's EXIF orientation {orientation} rotates it for viewers, and the label was drawn on that "
                "view: csst reads pixels as stored, so rotate the image's pixels (e.g. `exiftran -ai`) first")
    return msg


def without_orientation(data: bytes, info: JpegInfo | None = None) -> bytes:
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
