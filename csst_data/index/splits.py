"""Seeded labelled / unlabelled splits of a source, for the semi-supervised protocol and few-shot.

`draw_split(keys, count, seed, presence)` picks `count` keys. Without
`presence` it is a uniform draw: the first `count` of a seeded permutation, as
the split files of the semi-supervised codebases were made. With `presence`
(images x classes, from a centroid index's `class_pixels > 0`) it is
class-aware, which no peer offers: classes are visited from the rarest (fewest
images) to the commonest, and each class not yet in the chosen images adds one
of its images: the one that adds the most classes not yet covered, the first
in the same permutation among equals; the permutation then fills the rest.
Every class of the source is in the labelled part whenever `count` allows it; `missing_classes` says which are not. The price: at the
smallest counts the few images that cover most classes are chosen whatever
the seed (on 400 synthetic scenes, 200 seeds gave 1 distinct 1-shot and 6
distinct 2-shot splits; 5 shots and more were all distinct), so where
seed-to-seed variety matters more than coverage, draw uniformly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from csst_data.datasets import Dataset
from csst_data.index.store import CentroidIndex
from csst_data.store.shards import atomic_write_bytes


@dataclass(frozen=True)
class Split:
    """A drawn split: the labelled keys, the rest, and the classes of the source the labelled part lacks."""

    labeled: list[str]
    unlabeled: list[str]
    missing_classes: list[int]


def split_size(total: int, fraction: str | None = None, count: int | None = None) -> int:
    """How many of `total` samples a split labels: `count`, or round(total x fraction) (at least 1);
    `fraction` is "1/16", "0.25" or "25%"."""
    if (fraction is None) == (count is None):
        raise ValueError("give a fraction or a count, not both")
    if count is not None:
        n = int(count)
    else:
        try:
            f = Fraction(fraction[:-1]) / 100 if fraction.endswith("%") else Fraction(fraction)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"fraction {fraction!r}: expected 1/16, 0.25 or 25%") from None
        if not 0 < f <= 1:
            raise ValueError(f"fraction {fraction!r} must be in (0, 1]")
        n = max(1, round(total * f))
    if not 1 <= n <= total:
        raise ValueError(f"a split of {n} samples out of {total}")
    return n


def draw_split(keys: Sequence[str], count: int, seed: int, presence: np.ndarray | None = None) -> Split:
    """`count` of `keys` as the labelled part (see the module docstring); `presence[i, c]`: image i holds class c."""
    if not 1 <= count <= len(keys):
        raise ValueError(f"a split of {count} samples out of {len(keys)}")
    order = np.random.default_rng(seed).permutation(len(keys))
    chosen = list(order[:count]) if presence is None else _class_aware(order, count, presence)
    picked = set(int(i) for i in chosen)
    labeled = sorted(keys[i] for i in picked)
    unlabeled = sorted(keys[i] for i in range(len(keys)) if i not in picked)
    missing = []
    if presence is not None:
        have = presence[sorted(picked)].any(axis=0)
        missing = [int(c) for c in np.flatnonzero(presence.any(axis=0) & ~have)]
    return Split(labeled, unlabeled, missing)


def _class_aware(order: np.ndarray, count: int, presence: np.ndarray) -> list[int]:
    presence = np.asarray(presence, bool)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))  # position of each image in the permutation
    chosen, taken, covered = [], np.zeros(len(order), bool), np.zeros(presence.shape[1], bool)
    images_per_class = presence.sum(axis=0)
    for c in np.argsort(images_per_class, kind="stable"):
        if len(chosen) == count:
            break
        if covered[c] or images_per_class[c] == 0:
            continue
        holders = np.flatnonzero(presence[:, c] & ~taken)
        # The holder that adds the most classes not yet covered; among equals, the permutation's first.
        gain = (presence[holders] & ~covered).sum(axis=1)
        best = holders[gain == gain.max()]
        pick = int(best[np.argmin(rank[best])])
        chosen.append(pick)
        taken[pick] = True
        covered |= presence[pick]
    rest = order[~taken[order]]  # the permutation, less what the classes took
    return chosen + [int(i) for i in rest[:count - len(chosen)]]


def split_source(dataset: Dataset, count: int, seed: int, index: CentroidIndex | None = None) -> Split:
    """Draw a split of `dataset`'s samples; with `index` (a CentroidIndex built over them) class-aware."""
    keys = list(dataset.samples(labels=None)["key"])
    presence = None
    if index is not None:
        row = {k: i for i, k in enumerate(index.images["key"])}
        lacking = [k for k in keys if k not in row]
        if lacking:
            raise ValueError(f"index {index.path} does not hold sample {lacking[0]!r} of {dataset.name} "
                             f"({len(lacking)} missing): build it over that source")
        presence = index.class_pixels[[row[k] for k in keys]] > 0
    return draw_split(keys, count, seed, presence)


LABELED, UNLABELED = "labeled.txt", "unlabeled.txt"  # the file names of the semi-supervised codebases


def write_split(split: Split, out_dir: str, force: bool = False) -> tuple[str, str]:
    """Write labeled.txt and unlabeled.txt (keys, one a line) into `out_dir`, atomically; existing
    files are refused unless `force` (a split defines an experiment). Returns both paths."""
    paths = tuple(os.path.join(out_dir, n) for n in (LABELED, UNLABELED))
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not force:
        raise ValueError(f"{existing[0]} exists; pass --force to replace the split")
    os.makedirs(out_dir, exist_ok=True)
    for path, keys in zip(paths, (split.labeled, split.unlabeled)):
        atomic_write_bytes(path, "".join(k + "\n" for k in keys).encode("utf-8"))
    return paths
