"""Confidence chosen at training time: which pseudo-label pixels count.

`csst label` stores each pixel's teacher confidence (its top probability p) as
q = round(p * 255) in `confidence.npy.zst` beside the hard label, so a
threshold is a training option, not a relabelling. `confidence_floor` turns
the two ways of choosing one into a floor per class id, which the crop loader
applies to every crop (`load_crop`: a pseudo pixel of class c whose q is under
floor[c] becomes ignore):

- `min_confidence` t: one floor for every class, the least q with q / 255 >= t,
  so the ignored pixels are exactly those with q / 255 < t;
- `class_fraction` f (class-balanced self-training, CBST, Zou et al. 2018):
  per class c, the largest floor that keeps at least f of the pseudo pixels
  labelled c, counted over every pseudo-labelled image of the index. A class
  the teacher is unsure of keeps its share of pixels, where one threshold
  would drop it; ties at the floor's grey level may keep a little more than f.
With both, a class's floor is the larger of the two.

Real labels carry no confidence member and are never touched. Torch-free.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from csst_data import IGNORE

LEVELS = 256  # stored confidence values, 0..255


def level_of(min_confidence: float) -> int:
    """The least stored value q with q / 255 >= `min_confidence` (in [0, 1])."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    return int(np.argmax(np.arange(LEVELS) / 255.0 >= min_confidence))


def confidence_histograms(index: Any, progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """int64 (256 classes, 256 levels): pseudo pixels per (class id, stored confidence) over the index's
    pseudo-labelled images (ignored pixels, id 255, included in their row). ValueError when a
    pseudo-labelled source has no confidence member."""
    from csst_data.loader.reader import SampleReader

    pseudo = [i for i, ds in enumerate(index.datasets) if ds.pseudo]
    check_has_confidence(index)
    rows = np.flatnonzero(np.isin(np.asarray(index.images["source"]), pseudo))
    reader = SampleReader(index)
    hist = np.zeros(LEVELS * LEVELS, np.int64)
    try:
        for done, row in enumerate(rows, 1):
            label, conf = reader.label(row), reader.confidence(row)
            if conf is None or conf.shape != label.shape:
                raise ValueError(f"{reader.where(row, 'label')}: no confidence map of the label's size "
                                 f"({None if conf is None else conf.shape} for {label.shape})")
            hist += np.bincount((label.astype(np.int64) * LEVELS + conf).ravel(), minlength=LEVELS * LEVELS)
            if progress:
                progress(done, len(rows))
    finally:
        reader.close()
    return hist.reshape(LEVELS, LEVELS)


def check_has_confidence(index: Any) -> None:
    """ValueError unless the index has pseudo-labelled sources and each stores the teacher's confidence."""
    pseudo = [ds for ds in index.datasets if ds.pseudo]
    if not pseudo:
        raise ValueError(f"the index {index.path} has no pseudo-labelled source: a confidence threshold applies "
                         "to labels written by `csst label`")
    lacking = [ds.name for ds in pseudo if not ds.has_confidence]
    if lacking:
        raise ValueError(f"{', '.join(lacking)}: pseudo labels stored without the teacher's confidence "
                         "(confidence.npy.zst); relabel with a `csst label` that stores it, or threshold at "
                         "label time with `csst label --min-confidence`")


def class_floors(hist: np.ndarray, fraction: float) -> np.ndarray:
    """uint8 (256,): per class id, the largest floor q that keeps at least `fraction` of its pixels in
    `hist` (classes x levels); 0 for a class with no pixel, and for the ignore id."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"class_fraction must be in (0, 1], got {fraction}")
    hist = np.asarray(hist, np.int64)
    tail = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # tail[c, q]: pixels of class c with confidence >= q
    need = fraction * tail[:, 0]
    # The largest q whose tail still holds `need`: tails fall with q, so count the qs that qualify.
    floors = (tail >= need[:, None] - 1e-9).sum(1) - 1
    floors[tail[:, 0] == 0] = 0
    floors[IGNORE] = 0
    return floors.astype(np.uint8)


def confidence_floor(index: Any, min_confidence: Optional[float] = None, class_fraction: Optional[float] = None,
                     progress: Optional[Callable[[int, int], None]] = None) -> Optional[np.ndarray]:
    """The per-class floor (uint8, 256 entries) the loader applies to pseudo labels, or None when
    neither option is given. `progress(done, total)` follows the pass over the pseudo labels that
    `class_fraction` needs."""
    if min_confidence is None and class_fraction is None:
        return None
    check_has_confidence(index)
    floor = np.zeros(LEVELS, np.uint8)
    if min_confidence is not None:
        floor[:] = level_of(min_confidence)
    if class_fraction is not None:
        floor = np.maximum(floor, class_floors(confidence_histograms(index, progress), class_fraction))
    floor[IGNORE] = 0
    return floor
