"""Lossless JPEG transcoding: restart markers and optimised Huffman tables.

`transcode(data, restart_interval)` does for a baseline JPEG what
`jpegtran -restart N -optimize` does: the DCT coefficients stay exactly the
input's (every decoder gives the same pixels), only the entropy coding
changes. Three numba passes over the single scan:

1. decode every block into int16 coefficients (zigzag order) in coding order:
   MCU by MCU, the blocks of an MCU in scan order. DC is stored as its value,
   not its difference, because the prediction restarts where the *new*
   intervals start;
2. count the DC and AC symbols that coding with the new restart interval
   produces, per Huffman table slot, and build optimal codes from the counts
   (T.81 Annex K.2, as libjpeg's jpeg_gen_optimal_table: code lengths limited
   to 16 bits, the all-ones code reserved);
3. encode the blocks again with those codes, padding each interval to a byte
   with 1-bits and inserting RST0..RST7 after it.

The output keeps every segment of the input in its order (APPn, COM, DQT,
SOF, SOS header) except DHT and DRI, which are replaced by new ones just
before the SOS. Corrupt input (truncated data, bad Huffman codes, a wrong
number of RST markers) raises ValueError, never a guess. No pip-installable
library offers lossless restart insertion (jpegtran is a system tool;
Pillow, simplejpeg and OpenCV only re-encode pixels), so it is written here.

    out = transcode(data)                 # interval: choose_restart_interval
    out = transcode(data, restart_interval=4)
"""

from __future__ import annotations

import numpy as np

from csst_data.jpeg import lossless_kernels as kernels
from csst_data.jpeg.structure import UnsupportedJpeg, choose_restart_interval, parse
from csst_data.jpeg.restart import is_restart_index

# Status codes of the kernels -> messages.
_ERRORS = {
    kernels.BAD_CODE: "bad Huffman code",
    kernels.BAD_INDEX: "AC coefficients run past the end of a block",
    kernels.SHORT: "entropy-coded data ends inside a restart interval (truncated?)",
    kernels.NO_RST: "expected RST{rst}, found another marker (wrong number of RST markers?)",
    kernels.EXTRA: "data left over after a restart interval (wrong restart interval?)",
    kernels.BAD_DC: "DC coefficient out of range",
    kernels.NO_END: "the scan has no end marker (truncated?)",
    kernels.LATE_RST: "RST marker after the last restart interval (wrong number of RST markers)",
}


# ---------------------------------------------------------------- segments

def _huffman_tables(buf, info):
    """The DHT tables defined before the scan: (bits (8, 17), huffval (8, 256), defined (8,)).

    Row t < 4 is DC slot t, row 4 + t AC slot t; a later definition replaces an earlier one.
    """
    bits = np.zeros((8, 17), np.int64)
    huffval = np.zeros((8, 256), np.int64)
    defined = np.zeros(8, bool)
    for marker, start, end in info.segments:
        if marker != 0xC4:
            continue
        p = start + 4
        while p < end:
            tc, th = buf[p] >> 4, buf[p] & 15
            if tc > 1 or th > 3 or p + 17 > end:
                raise ValueError(f"JPEG: bad DHT segment at byte {start}")
            counts = buf[p + 1:p + 17].astype(np.int64)
            n = int(counts.sum())
            if n > 256 or p + 17 + n > end:
                raise ValueError(f"JPEG: bad DHT segment at byte {start}")
            row = 4 * tc + th
            bits[row, 1:] = counts
            huffval[row] = 0
            huffval[row, :n] = buf[p + 17:p + 17 + n]
            defined[row] = True
            p += 17 + n
    return bits, huffval, defined


def _scan_layout(buf, info):
    """The blocks of one MCU: (component index, DC row, AC row) each, and the MCU grid.

    Returns (mcu_comp, mcu_dc, mcu_ac, mcus_x, mcus_y, mcu pixel width).
    """
    comps = info.components
    if not 1 <= len(comps) <= 4:
        raise UnsupportedJpeg(f"JPEG with {len(comps)} components")
    p = info.sos + 4
    ns = int(buf[p])
    if info.scan - info.sos != 8 + 2 * ns:
        raise ValueError(f"JPEG: bad SOS segment at byte {info.sos}")
    if tuple(buf[p + 1 + 2 * ns:p + 4 + 2 * ns].tolist()) != (0, 63, 0):  # Ss, Se, Ah/Al
        raise UnsupportedJpeg("scan is not sequential (spectral selection or successive approximation)")
    if ns != len(comps):
        raise UnsupportedJpeg(f"scan holds {ns} of {len(comps)} components (several scans)")
    for _, h, v, _ in comps:
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise ValueError(f"JPEG: bad sampling factors {h}x{v}")
    ids = [c[0] for c in comps]
    mcu_comp, mcu_dc, mcu_ac = [], [], []
    scan_comps = []
    for i in range(ns):
        cid, sel = int(buf[p + 1 + 2 * i]), int(buf[p + 2 + 2 * i])
        if cid not in ids:
            raise ValueError(f"JPEG: scan names component {cid}, not in the frame")
        if (sel >> 4) > 3 or (sel & 15) > 3:
            raise ValueError(f"JPEG: bad Huffman table selector 0x{sel:02X}")
        scan_comps.append((ids.index(cid), sel >> 4, 4 + (sel & 15)))
    if ns == 1:
        # A non-interleaved scan codes one block per MCU over the component's
        # own block grid, not padded to the frame's MCU.
        ci, dc, ac = scan_comps[0]
        _, h, v, _ = comps[ci]
        hmax = max(c[1] for c in comps)
        vmax = max(c[2] for c in comps)
        cols = -(-info.width * h // hmax)
        rows = -(-info.height * v // vmax)
        return ([ci], [dc], [ac], -(-cols // 8), -(-rows // 8), 8 * hmax // h)
    for ci, dc, ac in scan_comps:
        _, h, v, _ = comps[ci]
        mcu_comp += [ci] * (h * v)
        mcu_dc += [dc] * (h * v)
        mcu_ac += [ac] * (h * v)
    if len(mcu_comp) > kernels.MAX_BLOCKS:
        raise ValueError(f"JPEG: {len(mcu_comp)} blocks per MCU (at most {kernels.MAX_BLOCKS})")
    return mcu_comp, mcu_dc, mcu_ac, info.mcus_x, info.mcus_y, info.mcu_width


def _dht_segment(tables):
    """One DHT segment holding (class, slot, bits, huffval, count) tables."""
    body = b"".join(bytes([(tc << 4) | th]) + bits[1:].astype(np.uint8).tobytes()
                    + huffval[:n].astype(np.uint8).tobytes() for tc, th, bits, huffval, n in tables)
    return b"\xff\xc4" + (len(body) + 2).to_bytes(2, "big") + body


# ---------------------------------------------------------------- transcode

def transcode(data: bytes, restart_interval: int | None = None) -> bytes:
    """Losslessly re-code a baseline JPEG with RST markers every `restart_interval` MCUs and optimal Huffman tables.

    restart_interval: None -> choose_restart_interval (divides the MCUs of a
    row, so windows can be spliced); 0 -> no restart markers. Raises
    UnsupportedJpeg for progressive / arithmetic / 12-bit / multi-scan input
    and ValueError for corrupt input.
    """
    try:
        info = parse(data)
    except ZeroDivisionError:   # parse() divides by the largest sampling factor
        raise ValueError("JPEG: sampling factors of 0") from None
    if info.width == 0:
        raise ValueError("JPEG: frame of width 0")
    buf = np.frombuffer(data, np.uint8)
    mcu_comp, mcu_dc, mcu_ac, mcus_x, mcus_y, mcu_width = _scan_layout(buf, info)
    if restart_interval is None:
        restart_interval = choose_restart_interval(info.width, mcu_width)
    restart_interval = int(restart_interval)
    if not 0 <= restart_interval <= 0xFFFF:
        raise ValueError(f"restart interval {restart_interval} out of range 0..65535")
    mcu_comp, mcu_dc, mcu_ac = (np.array(a, np.int64) for a in (mcu_comp, mcu_dc, mcu_ac))
    ncomp = len(info.components)
    coefs, ends = _decode(buf, info, mcu_comp, mcu_dc, mcu_ac, mcus_x * mcus_y)

    # Optimal tables for the slots the scan uses (rows as in _huffman_tables).
    freq = np.zeros((8, 256), np.int64)
    bad = kernels.count_symbols(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, restart_interval, freq)
    if bad >= 0:
        raise ValueError(f"JPEG: coefficient out of the baseline range in block {bad}")
    code = np.zeros((8, 256), np.int64)
    size = np.zeros((8, 256), np.int64)
    tables = []
    for row in sorted(set(mcu_dc.tolist()) | set(mcu_ac.tolist())):
        bits = np.zeros(17, np.int64)
        huffval = np.zeros(256, np.int64)
        n = kernels.optimal_table(freq[row], bits, huffval)
        kernels.canonical_codes(bits, huffval, code[row], size[row])
        tables.append((row // 4, row % 4, bits, huffval, n))

    out = np.empty(len(data) + 1024, np.uint8)  # re-coding rarely grows the data
    out, length = kernels.encode_scan(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, restart_interval, code, size, out)

    view = memoryview(data)
    parts = [b"\xff\xd8"]
    # Tables and restart interval are written anew, and a restart index describes the old scan.
    parts += [view[a:b] for marker, a, b in info.segments
              if marker not in (0xC4, 0xDD) and not is_restart_index(data, (marker, a, b))]
    parts.append(_dht_segment(tables))
    if restart_interval:
        parts.append(b"\xff\xdd\x00\x04" + restart_interval.to_bytes(2, "big"))
    parts += [view[info.sos:info.scan], out[:length].data, b"\xff\xd9"]
    return b"".join(parts)


def _decode(buf, info, mcu_comp, mcu_dc, mcu_ac, mcus):
    """All blocks of the scan in coding order: (coefficients int16 blocks x 64 in zigzag order, DC
    as values; one past the last nonzero AC coefficient of each block, uint8)."""
    bits, huffval, defined = _huffman_tables(buf, info)
    lut = np.zeros((8, 1 << kernels.LOOKAHEAD), np.int64)
    maxcode = np.full((8, 17), -1, np.int64)
    valptr = np.zeros((8, 17), np.int64)
    for row in set(mcu_dc.tolist()) | set(mcu_ac.tolist()):
        kind = "AC" if row >= 4 else "DC"
        if not defined[row]:
            raise ValueError(f"JPEG: {kind} Huffman table {row % 4} is used but not defined")
        if not kernels.decoding_table(bits[row], huffval[row], lut[row], maxcode[row], valptr[row]):
            raise ValueError(f"JPEG: {kind} Huffman table {row % 4} has too many codes")
    coefs = np.zeros((mcus * len(mcu_comp), 64), np.int16)
    ends = np.empty(len(coefs), np.uint8)
    status, pos, mcu = kernels.decode_scan(buf, info.scan, lut, maxcode, valptr, huffval, mcu_comp, mcu_dc, mcu_ac,
                                    len(info.components), info.restart_interval, coefs, ends)
    if status != kernels.OK:
        rst = (mcu // max(info.restart_interval, 1) - 1) & 7
        raise ValueError(f"JPEG: {_ERRORS[status].format(rst=rst)} (MCU {mcu}, byte {pos})")
    marker = buf[pos + 1]
    if marker == 0xDA:
        raise UnsupportedJpeg("JPEG with several scans")
    if marker != 0xD9:
        raise UnsupportedJpeg(f"JPEG: marker 0x{marker:02X} after the scan, expected EOI")
    return coefs, ends
