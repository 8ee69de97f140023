"""Epoch plans: which image, and which centroid (or none), each sample of an
epoch is cropped around.

A plan is a dict of equal-length numpy arrays:
  image (int64)   image row in the index
  cy, cx (float32) centroid (row, column) in original image pixels; NaN means
                  no centroid, i.e. a random crop
  cls (int16)     class of the centroid; -1 when none

It depends only on (index, strategy, seed, epoch, ...), never on ranks or
workers: every rank builds the same plan and takes its `rank_slice`, and each
worker then takes its `worker_slice` of that.

Strategies (`SAMPLERS`, their names `STRATEGIES`):
  centroid       CSST: an epoch of N samples holds N // C' centroids of every
                 class that has components (C' of them); the N - C' * (N // C')
                 left over go one each to classes chosen at random for this
                 epoch. A class is sampled without replacement when it has
                 enough centroids and by repeated random permutations when it
                 has fewer (so its centroids are used equally often, +-1).
  uniform        every image once per epoch in random order, random crops; a
                 length other than N repeats (more permutations) or trims.
  class-uniform  NVIDIA semantic-segmentation: round(p * N) samples drawn as
                 in `centroid`, the rest as in `uniform` (random crops).
  rare-class     DAFormer: class c has probability softmax((1 - f_c) / T) over
                 the classes with components, f_c its share of all labelled
                 pixels (index.class_pixels); the N samples are split among
                 classes by one multinomial draw, then centroids are drawn per
                 class as in `centroid`.

Source weights (`source_weights={source: weight}`, missing sources weigh 1.0)
apply to every pool of items a strategy draws from (all images for the uniform
part, the centroids of one class otherwise): a pool's k draws are split among
sources in proportion to weight_s * (items of source s in the pool), rounded
by largest remainder (ties broken at random), and each source's share is
drawn from its own items as without weights. So each item of a source with
weight 0.5 is drawn half as often as an item of a weight-1.0 source, and the
per-class counts of `centroid` are unchanged. Weight 0 leaves a source out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Dict, List, Optional

import numpy as np

log = logging.getLogger(__name__)

_warned = set()


def check_strategy(strategy: str) -> str:
    if strategy not in SAMPLERS:
        raise ValueError(f"unknown sampling strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    return strategy


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Generator of one epoch: independent streams for every (seed, epoch)."""
    return np.random.default_rng([int(seed), int(epoch)])


def _draw(rng, k, n):
    """k indices into range(n): without replacement when k <= n, otherwise
    whole random permutations followed by a partial one."""
    if k <= n:
        return rng.choice(n, k, replace=False)  # O(k) even when n is huge
    reps, rest = divmod(k, n)
    full = rng.permuted(np.tile(np.arange(n), (reps, 1)), axis=1).ravel()
    return np.concatenate([full, rng.choice(n, rest, replace=False)])


def _apportion(rng, k, weights):
    """Split k into integer counts proportional to `weights` (largest remainder,
    ties broken at random)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = k * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    left = k - int(counts.sum())
    if left:
        # Random order first, then a stable sort by remainder: equal remainders
        # are resolved by the random order.
        order = rng.permutation(len(weights))
        frac = (exact - counts)[order]
        frac[weights[order] == 0] = -1.0
        counts[order[np.argsort(-frac, kind="stable")[:left]]] += 1
    return counts


def _draw_pool(rng, k, groups, weights):
    """k indices into a pool of len(groups) items, split by source weight.

    `groups` is the source of each item; `weights` None means no weighting.
    """
    n = len(groups)
    if weights is None:
        return _draw(rng, k, n)
    sources, inverse = np.unique(groups, return_inverse=True)
    w = np.array([weights.get(int(s), 1.0) for s in sources], dtype=np.float64)
    members = [np.flatnonzero(inverse == i) for i in range(len(sources))]
    w = w * np.array([len(m) for m in members])
    if not (w > 0).any():
        return np.zeros(0, dtype=np.int64)
    counts = _apportion(rng, k, w)
    parts = [m[_draw(rng, int(c), len(m))] for m, c in zip(members, counts) if c]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _check_weights(index, source_weights):
    if source_weights is None:
        return None
    n = len(index.sources)
    weights = {}
    for s, w in dict(source_weights).items():
        s = int(s)
        if not 0 <= s < n:
            raise ValueError(f"source_weights: source {s} does not exist (the index has {n} sources)")
        w = float(w)
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"source_weights: weight of source {s} must be a finite number >= 0, got {w}")
        weights[s] = w
    return weights


def _present_classes(index, comps):
    """Classes with at least one component; warn once per process about the rest."""
    present = [c for c in range(index.num_classes) if len(comps[c]["image"])]
    missing = tuple(index.class_names[c] for c in range(index.num_classes) if c not in set(present))
    if missing and missing not in _warned:
        _warned.add(missing)
        log.warning("classes without any component are left out of sampling: %s", ", ".join(missing))
    return present


def _usable(comps, c, image_source, weights):
    """Whether class c has a centroid that a nonzero source weight allows."""
    if weights is None:
        return True
    src = image_source[comps[c]["image"]]
    return any(weights.get(int(s), 1.0) > 0 for s in np.unique(src))


def _centroid_part(rng, k, classes, comps, image_source, weights, class_counts=None):
    """k centroid samples over `classes`: equal counts (remainder to random
    classes) unless `class_counts` is given."""
    if class_counts is None:
        class_counts = np.full(len(classes), k // len(classes), dtype=np.int64)
        left = k - int(class_counts.sum())
        class_counts[rng.permutation(len(classes))[:left]] += 1
    image, cy, cx, cls = [], [], [], []
    for c, kc in zip(classes, class_counts):
        if not kc:
            continue
        comp = comps[c]
        groups = image_source[comp["image"]] if weights is not None else comp["image"]
        rows = _draw_pool(rng, int(kc), groups, weights)
        image.append(np.asarray(comp["image"], dtype=np.int64)[rows])
        cy.append(np.asarray(comp["y"], dtype=np.float32)[rows])
        cx.append(np.asarray(comp["x"], dtype=np.float32)[rows])
        cls.append(np.full(len(rows), c, dtype=np.int16))
    return _plan(image, cy, cx, cls)


def _uniform_part(rng, k, image_source, weights):
    image = _draw_pool(rng, k, image_source, weights).astype(np.int64)
    nan = np.full(len(image), np.nan, dtype=np.float32)
    return _plan([image], [nan], [nan.copy()], [np.full(len(image), -1, dtype=np.int16)])


def _plan(image, cy, cx, cls):
    if not image:
        return {"image": np.zeros(0, np.int64), "cy": np.zeros(0, np.float32),
                "cx": np.zeros(0, np.float32), "cls": np.zeros(0, np.int16)}
    return {"image": np.concatenate(image), "cy": np.concatenate(cy),
            "cx": np.concatenate(cx), "cls": np.concatenate(cls)}


def class_frequencies(index: Any) -> np.ndarray:
    """Share of all labelled pixels that each class covers (index.class_pixels)."""
    pixels = np.asarray(index.class_pixels, dtype=np.float64).sum(axis=0)
    total = pixels.sum()
    return pixels / total if total > 0 else pixels


def rare_class_probabilities(index: Any, temperature: float = 0.01, classes: Optional[List[int]] = None) -> np.ndarray:
    """DAFormer's softmax((1 - f_c) / T) over `classes` (default: all)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    f = class_frequencies(index)
    classes = np.arange(index.num_classes) if classes is None else np.asarray(classes)
    logits = (1.0 - f[classes]) / temperature
    e = np.exp(logits - logits.max())
    return e / e.sum()


def epoch_plan(index: Any, epoch: int, seed: int, strategy: str = "centroid", length: Optional[int] = None,
               p: float = 0.5, temperature: float = 0.01, source_weights: Optional[dict] = None) -> Dict[str, np.ndarray]:
    """The plan of one epoch (see the module docstring); deterministic in (seed, epoch)."""
    check_strategy(strategy)
    n_images = int(index.num_images)
    if n_images < 1:
        raise ValueError("the index holds no images")
    length = n_images if length is None else int(length)
    if length < 1:
        raise ValueError(f"epoch length must be >= 1, got {length}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"class-uniform fraction p must be in [0, 1], got {p}")
    weights = _check_weights(index, source_weights)
    image_source = np.asarray(index.images["source"], dtype=np.int64)
    if weights is not None and not any(weights.get(int(s), 1.0) > 0 for s in np.unique(image_source)):
        raise ValueError("source_weights: every source of the index has weight 0")
    rng = epoch_rng(seed, epoch)
    sampler = SAMPLERS[strategy]
    pools = EpochPools(index, length, p, temperature, image_source, weights)
    if sampler.centroids:
        pools = _with_centroids(pools, strategy)
    plan = sampler.draw(rng, pools)
    order = rng.permutation(len(plan["image"]))
    return {name: array[order] for name, array in plan.items()}


# -- the strategies ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EpochPools:
    """What a strategy draws one epoch's samples from."""
    index: Any
    length: int                     # samples in the epoch
    p: float                        # class-uniform: share of centroid samples
    temperature: float              # rare-class: softmax temperature
    image_source: np.ndarray        # source of every image row
    weights: Optional[Dict[int, float]]  # source weights (None: unweighted)
    comps: Optional[List[dict]] = None     # per class its components (strategies drawing centroids)
    classes: Optional[List[int]] = None    # the classes drawn: with components, of a nonzero source weight


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One sampling strategy: how it draws an epoch, and whether that needs centroids."""
    draw: Callable[[np.random.Generator, EpochPools], dict]  # (rng, pools) -> plan, before the final shuffle
    centroids: bool                 # draws centroids: the index must have components


def _with_centroids(pools, strategy):
    index, image_source, weights = pools.index, pools.image_source, pools.weights
    comps = [index.components(c) for c in range(index.num_classes)]
    classes = [c for c in _present_classes(index, comps) if _usable(comps, c, image_source, weights)]
    if not classes:
        raise ValueError(f"sampling strategy {strategy!r} needs centroids, but the index has none "
                         "(with nonzero source weight); use strategy='uniform'")
    return dataclasses.replace(pools, comps=comps, classes=classes)


def _centroid(rng, d):
    return _centroid_part(rng, d.length, d.classes, d.comps, d.image_source, d.weights)


def _uniform(rng, d):
    return _uniform_part(rng, d.length, d.image_source, d.weights)


def _class_uniform(rng, d):
    k = int(round(d.p * d.length))
    parts = [_centroid_part(rng, k, d.classes, d.comps, d.image_source, d.weights),
             _uniform_part(rng, d.length - k, d.image_source, d.weights)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _rare_class(rng, d):
    prob = rare_class_probabilities(d.index, d.temperature, d.classes)
    counts = rng.multinomial(d.length, prob)
    return _centroid_part(rng, d.length, d.classes, d.comps, d.image_source, d.weights, counts)


# name -> Sampler: every strategy `--sampling` offers (see the module docstring).
SAMPLERS = {
    "centroid": Sampler(_centroid, centroids=True),
    "uniform": Sampler(_uniform, centroids=False),
    "class-uniform": Sampler(_class_uniform, centroids=True),
    "rare-class": Sampler(_rare_class, centroids=True),
}
STRATEGIES = tuple(SAMPLERS)


def rank_slice(plan_len: int, rank: int, world_size: int) -> np.ndarray:
    """Positions in the plan for one rank: interleaved (rank, rank + world, ...),
    ceil(plan_len / world_size) of them for every rank, wrapping around to the
    start of the plan to pad; nothing is dropped."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if plan_len < 1:
        raise ValueError(f"plan length must be >= 1, got {plan_len}")
    per_rank = -(-plan_len // world_size)
    return (rank + world_size * np.arange(per_rank, dtype=np.int64)) % plan_len


def worker_slice(n: int, worker_id: int, num_workers: int, batch_size: int = 1) -> np.ndarray:
    """Positions in range(n) for one data-loader worker, in whole batches.

    The n positions are cut into consecutive batches of `batch_size` (the last
    may be short) and worker w gets batches w, w + K, w + 2K, ... (K =
    num_workers). A DataLoader takes one batch from each worker in turn, so the
    batches come out in the order of the rank's slice, which makes resuming
    after b batches a matter of skipping b * batch_size positions.
    """
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ValueError(f"worker {worker_id} is outside 0..{num_workers - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = np.arange(worker_id * batch_size, n, num_workers * batch_size, dtype=np.int64)
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    pos = (starts[:, None] + np.arange(batch_size, dtype=np.int64)).ravel()
    return pos[pos < n]
