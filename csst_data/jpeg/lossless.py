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

import numba
import numpy as np

from csst_data.jpeg.structure import UnsupportedJpeg, choose_restart_interval, is_restart_index, parse

_LOOKAHEAD = 9                      # code bits resolved by one table lookup
_MAX_BLOCKS = 10                    # blocks per MCU allowed by T.81 (B.2.3)
# Worst case bytes of one block: 64 symbols of 16 code + 11 extra bits, all stuffed.
_BLOCK_BYTES = 2 * (64 * 27 // 8 + 1)
# Bit length of a magnitude (its Huffman category); 12 flags out of range.
_CATEGORY = np.array([int(i).bit_length() for i in range(2048)], np.int64)

# Status codes of the numba passes -> messages.
_OK, _BAD_CODE, _BAD_INDEX, _SHORT, _NO_RST, _EXTRA, _BAD_DC, _NO_END, _LATE_RST = range(9)
_ERRORS = {
    _BAD_CODE: "bad Huffman code",
    _BAD_INDEX: "AC coefficients run past the end of a block",
    _SHORT: "entropy-coded data ends inside a restart interval (truncated?)",
    _NO_RST: "expected RST{rst}, found another marker (wrong number of RST markers?)",
    _EXTRA: "data left over after a restart interval (wrong restart interval?)",
    _BAD_DC: "DC coefficient out of range",
    _NO_END: "the scan has no end marker (truncated?)",
    _LATE_RST: "RST marker after the last restart interval (wrong number of RST markers)",
}


# ---------------------------------------------------------------- Huffman tables

@numba.njit(cache=True, nogil=True)
def _canonical_codes(bits, huffval, code, size):
    """Codes of a (bits, huffval) table (T.81 Annex C) into code/size by symbol."""
    c = 0
    k = 0
    for length in range(1, 17):
        for _ in range(bits[length]):
            code[huffval[k]] = c
            size[huffval[k]] = length
            c += 1
            k += 1
        c <<= 1


@numba.njit(cache=True, nogil=True)
def _decoding_table(bits, huffval, lut, maxcode, valptr):
    """Fill the lookup table (codes <= _LOOKAHEAD bits) and the per-length limits of the slow path."""
    c = 0
    k = 0
    for length in range(1, 17):
        n = bits[length]
        # Symbol of code x of this length: huffval[valptr + x], for x <= maxcode.
        maxcode[length] = c + n - 1 if n else -1
        valptr[length] = k - c
        for _ in range(n):
            if length <= _LOOKAHEAD:
                shift = _LOOKAHEAD - length
                lut[c << shift:(c + 1) << shift] = (length << 8) | huffval[k]
            c += 1
            k += 1
        if c > (1 << length):
            return False
        c <<= 1
    return True


@numba.njit(cache=True, nogil=True)
def _optimal_table(counts, bits, huffval):
    """Optimal code lengths for symbol counts (int64[256]), as libjpeg's jpeg_gen_optimal_table.

    Fills bits[0..16] and huffval; returns the number of symbols.
    """
    freq = np.zeros(257, np.int64)
    freq[:256] = counts
    # A pseudo-symbol of the smallest count gets the longest code, which is
    # then dropped: no real code is all ones (T.81 K.2).
    freq[256] = 1
    codesize = np.zeros(257, np.int64)
    others = np.full(257, -1, np.int64)
    while True:
        # The two least frequent trees; ties go to the larger symbol, as in libjpeg.
        c1 = -1
        v = np.int64(1) << 62
        for i in range(257):
            if freq[i] and freq[i] <= v:
                v = freq[i]
                c1 = i
        c2 = -1
        v = np.int64(1) << 62
        for i in range(257):
            if freq[i] and freq[i] <= v and i != c1:
                v = freq[i]
                c2 = i
        if c2 < 0:
            break
        freq[c1] += freq[c2]
        freq[c2] = 0
        codesize[c1] += 1
        while others[c1] >= 0:
            c1 = others[c1]
            codesize[c1] += 1
        others[c1] = c2
        codesize[c2] += 1
        while others[c2] >= 0:
            c2 = others[c2]
            codesize[c2] += 1
    # Any depth is possible in principle (libjpeg gives up above 32): size the histogram for all.
    nlen = np.zeros(258, np.int64)
    for i in range(257):
        if codesize[i]:
            nlen[codesize[i]] += 1
    # Symbols sorted by (length, value), from the unadjusted lengths: the
    # adjustment below keeps that order (T.81 K.2).
    start = np.zeros(258, np.int64)
    p = 0
    for length in range(1, 258):
        start[length] = p
        p += nlen[length]
    for i in range(256):
        if codesize[i]:
            huffval[start[codesize[i]]] = i
            start[codesize[i]] += 1
    # Limit lengths to 16 (T.81 Figure K.3): move pairs of the longest codes up.
    for i in range(257, 16, -1):
        while nlen[i] > 0:
            j = i - 2
            while nlen[j] == 0:
                j -= 1
            nlen[i] -= 2
            nlen[i - 1] += 1
            nlen[j + 1] += 2
            nlen[j] -= 1
    # Drop the pseudo-symbol: the last code of the longest length.
    i = 16
    while nlen[i] == 0:
        i -= 1
    nlen[i] -= 1
    bits[:] = nlen[:17]
    return p - 1


# ---------------------------------------------------------------- decoding

@numba.njit(cache=True, nogil=True)
def _refill(buf, pos, acc, nbits, fake):
    """Top the bit buffer up to more than 56 bits, unstuffing FF00.

    At a marker or the end of the data it appends zero bits instead and
    counts them in `fake`: a scan that consumes them was cut short.
    """
    n = len(buf)
    while nbits <= 56:
        if fake == 0 and pos < n:
            byte = buf[pos]
            if byte != 0xFF:
                acc = (acc << 8) | byte
                pos += 1
                nbits += 8
                continue
            if pos + 1 < n and buf[pos + 1] == 0:
                acc = (acc << 8) | 0xFF
                pos += 2
                nbits += 8
                continue
        acc <<= 8
        nbits += 8
        fake += 8
    return pos, acc, nbits, fake


@numba.njit(cache=True, nogil=True)
def _read_symbol(acc, nbits, t, lut, maxcode, valptr, huffval):
    """(symbol, bits left) of the next code in table t; symbol -1 for a bad code. Needs 16 bits."""
    e = lut[t, (acc >> (nbits - _LOOKAHEAD)) & ((1 << _LOOKAHEAD) - 1)]
    if e:
        return e & 255, nbits - (e >> 8)
    for length in range(_LOOKAHEAD + 1, 17):
        c = (acc >> (nbits - length)) & ((1 << length) - 1)
        if c <= maxcode[t, length]:
            return huffval[t, valptr[t, length] + c], nbits - length
    return -1, nbits


@numba.njit(cache=True, nogil=True)
def _read_value(acc, nbits, s):
    """(value, bits left) of s extra bits; a leading 0 bit means negative (T.81 F.2.2.1 EXTEND)."""
    if s == 0:
        return 0, nbits
    nbits -= s
    v = (acc >> nbits) & ((1 << s) - 1)
    if v < (1 << (s - 1)):
        v -= (1 << s) - 1
    return v, nbits


@numba.njit(cache=True, nogil=True)
def _decode_block(buf, pos, acc, nbits, fake, tdc, tac, lut, maxcode, valptr, huffval, blk):
    """Decode one block: AC coefficients into blk[1:].

    Returns (status, DC difference, end, pos, acc, nbits, fake), end: one past the last nonzero AC.
    """
    if nbits < 32:
        pos, acc, nbits, fake = _refill(buf, pos, acc, nbits, fake)
    s, nbits = _read_symbol(acc, nbits, tdc, lut, maxcode, valptr, huffval)
    if s < 0 or s > 15:
        return _BAD_CODE, 0, 0, pos, acc, nbits, fake
    diff, nbits = _read_value(acc, nbits, s)
    k = 1
    end = 1
    while k < 64:
        if nbits < 32:
            pos, acc, nbits, fake = _refill(buf, pos, acc, nbits, fake)
        rs, nbits = _read_symbol(acc, nbits, tac, lut, maxcode, valptr, huffval)
        if rs < 0:
            return _BAD_CODE, 0, 0, pos, acc, nbits, fake
        r = rs >> 4
        s = rs & 15
        if s == 0:
            if r != 15:
                break       # EOB (libjpeg reads any run with size 0 but ZRL as EOB)
            k += 16         # ZRL
            continue
        k += r
        if k > 63:
            return _BAD_INDEX, 0, 0, pos, acc, nbits, fake
        blk[k], nbits = _read_value(acc, nbits, s)
        k += 1
        end = k
    return _OK, diff, end, pos, acc, nbits, fake


@numba.njit(cache=True, nogil=True)
def _next_marker(buf, pos, acc, nbits, fake):
    """(status, position) of the marker that must follow an interval's data.

    Only the padding (under 8 bits) may be left, nothing may be missing.
    """
    pos, acc, nbits, fake = _refill(buf, pos, acc, nbits, fake)
    if nbits < fake:
        return _SHORT, pos
    if nbits - fake >= 8:
        return _EXTRA, pos
    n = len(buf)
    while pos + 1 < n and buf[pos + 1] == 0xFF:
        pos += 1    # fill bytes before a marker
    if pos + 1 >= n:
        return _NO_END, pos
    return _OK, pos


@numba.njit(cache=True, nogil=True)
def _decode_scan(buf, pos, lut, maxcode, valptr, huffval, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, coefs, ends):
    """Decode the scan starting at buf[pos] into coefs (blocks x 64, zeroed).

    ends[b]: one past block b's last nonzero AC coefficient, so that the
    coding passes skip the (mostly zero) tail.

    Returns (status, byte position, MCU index): on success the position of
    the marker ending the scan.
    """
    nblk = len(mcu_comp)
    mcus = len(coefs) // nblk
    pred = np.zeros(ncomp, np.int64)
    acc = 0
    nbits = 0
    fake = 0
    left = interval if interval > 0 else mcus
    rst = 0
    b = 0
    for m in range(mcus):
        if left == 0:
            # Restart: the interval ends byte-aligned before RSTn; predictors reset.
            status, pos = _next_marker(buf, pos, acc, nbits, fake)
            if status != _OK:
                return status, pos, m
            if buf[pos + 1] != 0xD0 + (rst & 7):
                return _NO_RST, pos, m
            pos += 2
            rst += 1
            acc = 0
            nbits = 0
            fake = 0
            pred[:] = 0
            left = interval
        left -= 1
        for j in range(nblk):
            status, diff, ends[b], pos, acc, nbits, fake = _decode_block(
                buf, pos, acc, nbits, fake, mcu_dc[j], mcu_ac[j], lut, maxcode, valptr, huffval, coefs[b])
            if status != _OK:
                return status, pos, m
            c = mcu_comp[j]
            pred[c] += diff
            if pred[c] < -32767 or pred[c] > 32767:
                return _BAD_DC, pos, m
            coefs[b, 0] = pred[c]
            b += 1
    status, pos = _next_marker(buf, pos, acc, nbits, fake)
    if status == _OK and 0xD0 <= buf[pos + 1] <= 0xD7:
        status = _LATE_RST
    return status, pos, mcus


# ---------------------------------------------------------------- encoding

@numba.njit(cache=True, nogil=True)
def _category(t):
    """Bit length of a magnitude t >= 0; 12 for anything beyond baseline's 11."""
    return _CATEGORY[t] if t < 2048 else 12


@numba.njit(cache=True, nogil=True)
def _count_symbols(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, freq):
    """Count the symbols of coding coefs with restarts every `interval` MCUs.

    freq rows 0-3: DC table slots, 4-7: AC slots. Returns the first block
    whose coefficients baseline coding cannot hold, or -1.
    """
    nblk = len(mcu_comp)
    mcus = len(coefs) // nblk
    pred = np.zeros(ncomp, np.int64)
    left = interval if interval > 0 else mcus
    b = 0
    for _ in range(mcus):
        if left == 0:
            pred[:] = 0
            left = interval
        left -= 1
        for j in range(nblk):
            blk = coefs[b]
            c = mcu_comp[j]
            dc = np.int64(blk[0])
            s = _category(abs(dc - pred[c]))
            pred[c] = dc
            if s > 11:
                return b
            freq[mcu_dc[j], s] += 1
            t = mcu_ac[j]
            r = 0
            for k in range(1, ends[b]):
                v = np.int64(blk[k])
                if v == 0:
                    r += 1
                    continue
                while r > 15:
                    freq[t, 0xF0] += 1     # ZRL: 16 zeros
                    r -= 16
                s = _category(abs(v))
                if s > 10:
                    return b
                freq[t, (r << 4) | s] += 1
                r = 0
            if ends[b] < 64:
                freq[t, 0] += 1            # EOB
            b += 1
    return -1


@numba.njit(cache=True, nogil=True)
def _put(acc, nbits, bits, n, out, o):
    """Append n bits (n <= 32, fewer than 32 pending) and write out whole bytes, FF stuffed with 00."""
    acc = (acc << n) | bits
    nbits += n
    if nbits >= 32:
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out[o] = byte
            o += 1
            if byte == 0xFF:
                out[o] = 0
                o += 1
    return acc, nbits, o


@numba.njit(cache=True, nogil=True)
def _put_symbol(acc, nbits, t, sym, v, s, code, size, out, o):
    """Append symbol sym of table t, then the s low bits of v (of v - 1 if negative: T.81 F.1.2.1)."""
    if v < 0:
        v -= 1
    return _put(acc, nbits, (code[t, sym] << s) | (v & ((1 << s) - 1)), size[t, sym] + s, out, o)


@numba.njit(cache=True, nogil=True)
def _flush(acc, nbits, out, o):
    """Pad to a byte with 1-bits (T.81 F.1.2.3) and write out everything pending."""
    pad = (-nbits) & 7
    acc = (acc << pad) | ((1 << pad) - 1)
    nbits += pad
    while nbits >= 8:
        nbits -= 8
        byte = (acc >> nbits) & 0xFF
        out[o] = byte
        o += 1
        if byte == 0xFF:
            out[o] = 0
            o += 1
    return o


@numba.njit(cache=True, nogil=True)
def _encode_scan(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, code, size, out):
    """Huffman code coefs with RSTn every `interval` MCUs. Returns (buffer, length); the buffer grows as needed."""
    nblk = len(mcu_comp)
    mcus = len(coefs) // nblk
    worst = nblk * _BLOCK_BYTES + 16    # + a restart marker and the final flush
    pred = np.zeros(ncomp, np.int64)
    left = interval if interval > 0 else mcus
    rst = 0
    acc = 0
    nbits = 0
    o = 0
    b = 0
    for _ in range(mcus):
        if len(out) - o < worst:
            grown = np.empty(2 * len(out) + worst, np.uint8)
            grown[:o] = out[:o]
            out = grown
        if left == 0:
            o = _flush(acc, nbits, out, o)
            nbits = 0
            out[o] = 0xFF
            out[o + 1] = 0xD0 + (rst & 7)
            o += 2
            rst += 1
            pred[:] = 0
            left = interval
        left -= 1
        for j in range(nblk):
            blk = coefs[b]
            c = mcu_comp[j]
            dc = np.int64(blk[0])
            diff = dc - pred[c]
            pred[c] = dc
            s = _category(abs(diff))
            acc, nbits, o = _put_symbol(acc, nbits, mcu_dc[j], s, diff, s, code, size, out, o)
            t = mcu_ac[j]
            r = 0
            for k in range(1, ends[b]):
                v = np.int64(blk[k])
                if v == 0:
                    r += 1
                    continue
                while r > 15:
                    acc, nbits, o = _put(acc, nbits, code[t, 0xF0], size[t, 0xF0], out, o)
                    r -= 16
                s = _category(abs(v))
                acc, nbits, o = _put_symbol(acc, nbits, t, (r << 4) | s, v, s, code, size, out, o)
                r = 0
            if ends[b] < 64:
                acc, nbits, o = _put(acc, nbits, code[t, 0], size[t, 0], out, o)
            b += 1
    o = _flush(acc, nbits, out, o)
    return out, o


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
    if len(mcu_comp) > _MAX_BLOCKS:
        raise ValueError(f"JPEG: {len(mcu_comp)} blocks per MCU (at most {_MAX_BLOCKS})")
    return mcu_comp, mcu_dc, mcu_ac, info.mcus_x, info.mcus_y, info.mcu_width


def _dht_segment(tables):
    """One DHT segment holding (class, slot, bits, huffval, count) tables."""
    body = b"".join(bytes([(tc << 4) | th]) + bits[1:].astype(np.uint8).tobytes()
                    + huffval[:n].astype(np.uint8).tobytes() for tc, th, bits, huffval, n in tables)
    return b"\xff\xc4" + (len(body) + 2).to_bytes(2, "big") + body


# ---------------------------------------------------------------- transcode

def transcode(data, restart_interval=None):
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
    bad = _count_symbols(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, restart_interval, freq)
    if bad >= 0:
        raise ValueError(f"JPEG: coefficient out of the baseline range in block {bad}")
    code = np.zeros((8, 256), np.int64)
    size = np.zeros((8, 256), np.int64)
    tables = []
    for row in sorted(set(mcu_dc.tolist()) | set(mcu_ac.tolist())):
        bits = np.zeros(17, np.int64)
        huffval = np.zeros(256, np.int64)
        n = _optimal_table(freq[row], bits, huffval)
        _canonical_codes(bits, huffval, code[row], size[row])
        tables.append((row // 4, row % 4, bits, huffval, n))

    out = np.empty(len(data) + 1024, np.uint8)  # re-coding rarely grows the data
    out, length = _encode_scan(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, restart_interval, code, size, out)

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
    lut = np.zeros((8, 1 << _LOOKAHEAD), np.int64)
    maxcode = np.full((8, 17), -1, np.int64)
    valptr = np.zeros((8, 17), np.int64)
    for row in set(mcu_dc.tolist()) | set(mcu_ac.tolist()):
        kind = "AC" if row >= 4 else "DC"
        if not defined[row]:
            raise ValueError(f"JPEG: {kind} Huffman table {row % 4} is used but not defined")
        if not _decoding_table(bits[row], huffval[row], lut[row], maxcode[row], valptr[row]):
            raise ValueError(f"JPEG: {kind} Huffman table {row % 4} has too many codes")
    coefs = np.zeros((mcus * len(mcu_comp), 64), np.int16)
    ends = np.empty(len(coefs), np.uint8)
    status, pos, mcu = _decode_scan(buf, info.scan, lut, maxcode, valptr, huffval, mcu_comp, mcu_dc, mcu_ac,
                                    len(info.components), info.restart_interval, coefs, ends)
    if status != _OK:
        rst = (mcu // max(info.restart_interval, 1) - 1) & 7
        raise ValueError(f"JPEG: {_ERRORS[status].format(rst=rst)} (MCU {mcu}, byte {pos})")
    marker = buf[pos + 1]
    if marker == 0xDA:
        raise UnsupportedJpeg("JPEG with several scans")
    if marker != 0xD9:
        raise UnsupportedJpeg(f"JPEG: marker 0x{marker:02X} after the scan, expected EOI")
    return coefs, ends
