"""The numba kernels of the lossless transcoder (`csst_data.jpeg.lossless` drives them).

Huffman tables (canonical codes, decoding lookup tables, optimal tables from
symbol counts), decoding a scan into coefficients, counting the symbols of a
re-coding and encoding the scan again. They take their tables as arrays and
report errors as status codes (OK, BAD_CODE, ...), which the driver turns into
messages.
"""

import numba
import numpy as np

LOOKAHEAD = 9                      # code bits resolved by one table lookup
MAX_BLOCKS = 10                    # blocks per MCU allowed by T.81 (B.2.3)
# Worst case bytes of one block: 64 symbols of 16 code + 11 extra bits, all stuffed.
_BLOCK_BYTES = 2 * (64 * 27 // 8 + 1)
# Bit length of a magnitude (its Huffman category); 12 flags out of range.
_CATEGORY = np.array([int(i).bit_length() for i in range(2048)], np.int64)

# Status codes of the numba passes (the driver has their messages).
OK, BAD_CODE, BAD_INDEX, SHORT, NO_RST, EXTRA, BAD_DC, NO_END, LATE_RST = range(9)


# ---------------------------------------------------------------- Huffman tables

@numba.njit(cache=True, nogil=True)
def canonical_codes(bits, huffval, code, size):
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
def decoding_table(bits, huffval, lut, maxcode, valptr):
    """Fill the lookup table (codes <= LOOKAHEAD bits) and the per-length limits of the slow path."""
    c = 0
    k = 0
    for length in range(1, 17):
        n = bits[length]
        # Symbol of code x of this length: huffval[valptr + x], for x <= maxcode.
        maxcode[length] = c + n - 1 if n else -1
        valptr[length] = k - c
        for _ in range(n):
            if length <= LOOKAHEAD:
                shift = LOOKAHEAD - length
                lut[c << shift:(c + 1) << shift] = (length << 8) | huffval[k]
            c += 1
            k += 1
        if c > (1 << length):
            return False
        c <<= 1
    return True


@numba.njit(cache=True, nogil=True)
def optimal_table(counts, bits, huffval):
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
    e = lut[t, (acc >> (nbits - LOOKAHEAD)) & ((1 << LOOKAHEAD) - 1)]
    if e:
        return e & 255, nbits - (e >> 8)
    for length in range(LOOKAHEAD + 1, 17):
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
        return BAD_CODE, 0, 0, pos, acc, nbits, fake
    diff, nbits = _read_value(acc, nbits, s)
    k = 1
    end = 1
    while k < 64:
        if nbits < 32:
            pos, acc, nbits, fake = _refill(buf, pos, acc, nbits, fake)
        rs, nbits = _read_symbol(acc, nbits, tac, lut, maxcode, valptr, huffval)
        if rs < 0:
            return BAD_CODE, 0, 0, pos, acc, nbits, fake
        r = rs >> 4
        s = rs & 15
        if s == 0:
            if r != 15:
                break       # EOB (libjpeg reads any run with size 0 but ZRL as EOB)
            k += 16         # ZRL
            continue
        k += r
        if k > 63:
            return BAD_INDEX, 0, 0, pos, acc, nbits, fake
        blk[k], nbits = _read_value(acc, nbits, s)
        k += 1
        end = k
    return OK, diff, end, pos, acc, nbits, fake


@numba.njit(cache=True, nogil=True)
def _next_marker(buf, pos, acc, nbits, fake):
    """(status, position) of the marker that must follow an interval's data.

    Only the padding (under 8 bits) may be left, nothing may be missing.
    """
    pos, acc, nbits, fake = _refill(buf, pos, acc, nbits, fake)
    if nbits < fake:
        return SHORT, pos
    if nbits - fake >= 8:
        return EXTRA, pos
    n = len(buf)
    while pos + 1 < n and buf[pos + 1] == 0xFF:
        pos += 1    # fill bytes before a marker
    if pos + 1 >= n:
        return NO_END, pos
    return OK, pos


@numba.njit(cache=True, nogil=True)
def decode_scan(buf, pos, lut, maxcode, valptr, huffval, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, coefs, ends):
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
            if status != OK:
                return status, pos, m
            if buf[pos + 1] != 0xD0 + (rst & 7):
                return NO_RST, pos, m
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
            if status != OK:
                return status, pos, m
            c = mcu_comp[j]
            pred[c] += diff
            if pred[c] < -32767 or pred[c] > 32767:
                return BAD_DC, pos, m
            coefs[b, 0] = pred[c]
            b += 1
    status, pos = _next_marker(buf, pos, acc, nbits, fake)
    if status == OK and 0xD0 <= buf[pos + 1] <= 0xD7:
        status = LATE_RST
    return status, pos, mcus


# ---------------------------------------------------------------- encoding

@numba.njit(cache=True, nogil=True)
def _category(t):
    """Bit length of a magnitude t >= 0; 12 for anything beyond baseline's 11."""
    return _CATEGORY[t] if t < 2048 else 12


@numba.njit(cache=True, nogil=True)
def count_symbols(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, freq):
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
def encode_scan(coefs, ends, mcu_comp, mcu_dc, mcu_ac, ncomp, interval, code, size, out):
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

