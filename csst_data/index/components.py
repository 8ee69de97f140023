"""Connected components of every class of a label mask in one numba pass.

A component is a maximal set of same-class pixels connected under 4- or
8-connectivity; the ignore label 255 is never a component. The kernel works on
runs (maximal horizontal stretches of one value in a row), not pixels:

1. scan each row once and record its runs of non-ignore values (long runs are
   skipped eight bytes at a time), adding their lengths to the class histogram;
2. union every run with the same-class runs it touches in the row above (a
   two-pointer sweep), always linking the larger root to the smaller, so the
   root of a component is its first run in raster order;
3. one pass over the runs accumulates area, coordinate sums (closed-form over
   a run) and bounding boxes per root; a counting sort by class gives the
   final order: class, then raster order of the component's first pixel.
"""

from typing import Dict, Optional

import numba
import numpy as np

from csst_data import IGNORE

_ONES = np.uint64(0x0101010101010101)


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent, x):
    # Path halving keeps trees flat without recursion.
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@numba.njit(cache=True, nogil=True)
def _runs(mask, words, num_classes, conn8):
    """Runs of non-ignore pixels, unioned with the row above.

    Returns (row_start (H+1,), run_start, run_end, run_class, parent, nruns,
    histogram (C,), bad) where bad is the first out-of-range value or -1.
    `words` is the mask as uint64 (one row per line) or an empty array when
    the width is not a multiple of 8.
    """
    h, w = mask.shape
    use_words = words.shape[0] > 0
    wpr = w // 8  # words per row
    # Worst case one run per pixel; untouched pages of np.empty cost nothing.
    cap = h * w
    rs = np.empty(cap, np.int32)
    re = np.empty(cap, np.int32)
    rc = np.empty(cap, np.uint8)
    parent = np.empty(cap, np.int32)
    row_start = np.empty(h + 1, np.int64)
    hist = np.zeros(num_classes, np.int64)
    n = 0
    # 8-connectivity touches diagonal neighbours: extend the overlap by one.
    slack = 1 if conn8 else 0
    for r in range(h):
        row_start[r] = n
        j = 0
        while j < w:
            v = mask[r, j]
            k = j + 1
            if use_words:
                # Bytes up to the next word boundary, then whole words while
                # they equal v repeated, then the rest byte by byte.
                while k < w and (k & 7) != 0 and mask[r, k] == v:
                    k += 1
                if k < w and (k & 7) == 0 and mask[r, k] == v:
                    pat = np.uint64(v) * _ONES
                    wi = k >> 3
                    while wi < wpr and words[r, wi] == pat:
                        wi += 1
                    k = wi << 3
                    while k < w and mask[r, k] == v:
                        k += 1
            else:
                while k < w and mask[r, k] == v:
                    k += 1
            if v != IGNORE:
                if v >= num_classes:
                    row_start[r + 1] = n
                    return row_start, rs, re, rc, parent, n, hist, np.int64(v)
                rs[n] = j
                re[n] = k
                rc[n] = v
                parent[n] = n
                hist[v] += k - j
                n += 1
            j = k
        if r > 0:
            # Sweep the runs of this row against those of the row above.
            p = row_start[r - 1]
            p_end = row_start[r]
            for i in range(row_start[r], n):
                s = rs[i]
                e = re[i]
                c = rc[i]
                # Runs of the row above that end before this one (minus the
                # slack) cannot touch it or any later run of this row.
                while p < p_end and re[p] + slack <= s:
                    p += 1
                q = p
                while q < p_end and rs[q] < e + slack:
                    if rc[q] == c:
                        a = _find(parent, q)
                        b = _find(parent, i)
                        if a < b:
                            parent[b] = a
                        elif b < a:
                            parent[a] = b
                    q += 1
    row_start[h] = n
    return row_start, rs, re, rc, parent, n, hist, np.int64(-1)


@numba.njit(cache=True, nogil=True)
def _stats(row_start, rs, re, rc, parent, n, num_classes, min_area):
    h = row_start.shape[0] - 1
    cid = np.empty(n, np.int32)
    m = 0
    for i in range(n):
        pi = parent[i]
        if pi == i:
            cid[i] = m
            m += 1
        else:
            # parent[i] < i, already resolved to its root.
            root = parent[pi]
            parent[i] = root
            cid[i] = cid[root]
    area = np.zeros(m, np.int64)
    sy = np.zeros(m, np.int64)
    sx = np.zeros(m, np.int64)
    box = np.empty((m, 4), np.int32)
    cls = np.empty(m, np.uint8)
    for r in range(h):
        for i in range(row_start[r], row_start[r + 1]):
            k = cid[i]
            s = rs[i]
            e = re[i]
            ln = e - s
            if area[k] == 0:
                cls[k] = rc[i]
                box[k, 0] = r
                box[k, 1] = s
                box[k, 2] = r + 1
                box[k, 3] = e
            else:
                if s < box[k, 1]:
                    box[k, 1] = s
                if e > box[k, 3]:
                    box[k, 3] = e
                box[k, 2] = r + 1  # rows are visited in order
            area[k] += ln
            sy[k] += np.int64(r) * ln
            sx[k] += np.int64(ln) * (s + e - 1) // 2
    # Counting sort by class keeps raster order within a class.
    counts = np.zeros(num_classes + 1, np.int64)
    for k in range(m):
        if area[k] >= min_area:
            counts[cls[k] + 1] += 1
    for c in range(num_classes):
        counts[c + 1] += counts[c]
    total = counts[num_classes]
    o_cls = np.empty(total, np.int16)
    o_y = np.empty(total, np.float64)
    o_x = np.empty(total, np.float64)
    o_area = np.empty(total, np.int64)
    o_box = np.empty((total, 4), np.int32)
    for k in range(m):
        if area[k] >= min_area:
            c = cls[k]
            t = counts[c]
            counts[c] += 1
            o_cls[t] = c
            o_y[t] = sy[k] / area[k]
            o_x[t] = sx[k] / area[k]
            o_area[t] = area[k]
            o_box[t, 0] = box[k, 0]
            o_box[t, 1] = box[k, 1]
            o_box[t, 2] = box[k, 2]
            o_box[t, 3] = box[k, 3]
    return o_cls, o_y, o_x, o_area, o_box


def components(mask: np.ndarray, num_classes: int, connectivity: int = 8, min_area: int = 1,
               key: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Connected components of all classes of a uint8 label mask.

    Returns a dict of numpy arrays: `class` (M,) int16, `y`, `x` (M,) float64
    (centroid: mean row and column of the component's pixels), `area` (M,)
    int64, `bbox` (M, 4) int32 (y0, x0, y1, x1, end-exclusive) and
    `class_pixels` (C,) int64, the pixel histogram of the mask (all
    components, before the `min_area` filter). Components are sorted by class,
    then by the raster order of their first pixel. Values >= num_classes other
    than 255 raise ValueError naming `key`.
    """
    name = f"label {key!r}" if key is not None else "label"
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"{name}: expected a 2-D uint8 mask, got shape {mask.shape} dtype {mask.dtype}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    if not 1 <= num_classes <= IGNORE:
        raise ValueError(f"num_classes must be in 1..{IGNORE}, got {num_classes}")
    mask = np.ascontiguousarray(mask)
    h, w = mask.shape
    if w % 8 == 0 and w > 0:
        words = mask.view(np.uint64)
    else:
        words = np.empty((0, 0), np.uint64)
    row_start, rs, re, rc, parent, n, hist, bad = _runs(mask, words, num_classes, connectivity == 8)
    if bad >= 0:
        raise ValueError(
            f"{name}: value {int(bad)} is >= num_classes={num_classes} and not the ignore label {IGNORE}"
        )
    cls, y, x, area, bbox = _stats(row_start, rs, re, rc, parent, n, num_classes, max(int(min_area), 1))
    return {"class": cls, "y": y, "x": x, "area": area, "bbox": bbox, "class_pixels": hist}
