import logging

import numpy as np
import pytest

from csst_data.loader import sampling
from csst_data.loader.sampling import (STRATEGIES, epoch_plan, rank_slice, rare_class_probabilities,
                                worker_slice)


class FakeIndex:
    """The CentroidIndex API that sampling uses, over plain numpy arrays."""

    def __init__(self, counts, num_images=100, num_sources=1, seed=0, class_pixels=None):
        rng = np.random.default_rng(seed)
        self.num_classes = len(counts)
        self.class_names = [f"class{c}" for c in range(len(counts))]
        self.num_images = num_images
        self.sources = [{"path": f"src{s}", "sha256": "0", "samples": 0} for s in range(num_sources)]
        source = (np.arange(num_images) * num_sources // num_images).astype(np.int32)
        self.images = {"key": np.array([f"img{i:04d}" for i in range(num_images)]), "source": source,
                       "height": np.full(num_images, 64, np.int32), "width": np.full(num_images, 96, np.int32)}
        self._comps = []
        for n in counts:
            image = np.sort(rng.integers(0, num_images, n)).astype(np.int32)
            self._comps.append({"image": image, "y": rng.uniform(0, 63, n).astype(np.float32),
                                "x": rng.uniform(0, 95, n).astype(np.float32),
                                "area": rng.integers(1, 100, n), "bbox": np.zeros((n, 4), np.int32)})
        if class_pixels is None:
            class_pixels = rng.integers(0, 1000, (num_images, len(counts)))
        self.class_pixels = np.asarray(class_pixels, dtype=np.int64)

    def components(self, c):
        return self._comps[c]


COUNTS = [500, 50, 10, 3, 1, 0, 200]


def test_plan_fields_and_dtypes():
    plan = epoch_plan(FakeIndex(COUNTS), 0, seed=1)
    assert plan["image"].dtype == np.int64 and plan["cls"].dtype == np.int16
    assert plan["cy"].dtype == np.float32 and plan["cx"].dtype == np.float32
    assert all(len(a) == 100 for a in plan.values())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_epoch_same_plan_other_epoch_differs(strategy):
    index = FakeIndex(COUNTS)
    a = epoch_plan(index, 3, seed=7, strategy=strategy)
    b = epoch_plan(index, 3, seed=7, strategy=strategy)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["image"], epoch_plan(index, 4, seed=7, strategy=strategy)["image"])
    assert not np.array_equal(a["image"], epoch_plan(index, 3, seed=8, strategy=strategy)["image"])


def test_centroid_balanced_per_class(caplog):
    sampling._warned.clear()
    index = FakeIndex(COUNTS)
    with caplog.at_level(logging.WARNING, logger="csst_data.loader.sampling"):
        plan = epoch_plan(index, 0, seed=0, strategy="centroid")
        epoch_plan(index, 1, seed=0, strategy="centroid")
    # The empty class is reported once, by name, and left out.
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "class5" in warnings[0]
    present = [c for c, n in enumerate(COUNTS) if n]
    counts = np.bincount(plan["cls"], minlength=len(COUNTS))
    assert counts[5] == 0 and counts.sum() == 100
    target = 100 / len(present)
    assert all(abs(counts[c] - target) <= 1 for c in present)
    # Every sample is a real centroid of its class.
    for c in present:
        comp = index.components(c)
        rows = plan["cls"] == c
        pairs = set(zip(comp["image"].tolist(), comp["y"].tolist(), comp["x"].tolist()))
        got = set(zip(plan["image"][rows].tolist(), plan["cy"][rows].tolist(), plan["cx"][rows].tolist()))
        assert got <= pairs
    # Enough centroids: no repeats. Too few: each centroid used equally (+-1).
    big = plan["cy"][plan["cls"] == 0]
    assert len(np.unique(big)) == len(big)
    small = np.unique(plan["cy"][plan["cls"] == 3], return_counts=True)[1]
    assert len(small) == 3 and small.max() - small.min() <= 1


def test_centroid_with_longer_epoch():
    plan = epoch_plan(FakeIndex(COUNTS), 0, seed=0, strategy="centroid", length=1000)
    counts = np.bincount(plan["cls"], minlength=len(COUNTS))
    assert counts.sum() == 1000
    assert all(abs(counts[c] - 1000 / 6) <= 1 for c, n in enumerate(COUNTS) if n)


def test_uniform_each_image_once():
    plan = epoch_plan(FakeIndex(COUNTS), 0, seed=0, strategy="uniform")
    assert sorted(plan["image"].tolist()) == list(range(100))
    assert np.isnan(plan["cy"]).all() and np.isnan(plan["cx"]).all() and (plan["cls"] == -1).all()
    longer = epoch_plan(FakeIndex(COUNTS), 0, seed=0, strategy="uniform", length=250)
    times = np.bincount(longer["image"], minlength=100)
    assert times.min() == 2 and times.max() == 3
    shorter = epoch_plan(FakeIndex(COUNTS), 0, seed=0, strategy="uniform", length=40)
    assert len(np.unique(shorter["image"])) == 40


def test_class_uniform_fraction():
    plan = epoch_plan(FakeIndex(COUNTS), 0, seed=0, strategy="class-uniform", length=200, p=0.3)
    centroid = plan["cls"] >= 0
    assert centroid.sum() == 60
    assert np.isnan(plan["cy"][~centroid]).all() and not np.isnan(plan["cy"][centroid]).any()
    counts = np.bincount(plan["cls"][centroid], minlength=len(COUNTS))
    assert all(abs(counts[c] - 10) <= 1 for c, n in enumerate(COUNTS) if n)


def test_rare_class_probabilities_and_draws():
    counts = [50, 50, 50, 50]
    pixels = np.zeros((100, 4), np.int64)
    pixels[0] = [700, 200, 90, 10]  # frequencies 0.7, 0.2, 0.09, 0.01
    index = FakeIndex(counts, class_pixels=pixels)
    f = np.array([0.7, 0.2, 0.09, 0.01])
    for t in (0.01, 0.1, 1.0):
        expected = np.exp((1 - f) / t) / np.exp((1 - f) / t).sum()
        np.testing.assert_allclose(rare_class_probabilities(index, t), expected, rtol=1e-9)
    plan = epoch_plan(index, 0, seed=0, strategy="rare-class", length=20000, temperature=0.1)
    share = np.bincount(plan["cls"], minlength=4) / 20000
    np.testing.assert_allclose(share, rare_class_probabilities(index, 0.1), atol=0.015)
    assert share[3] > share[2] > share[1] > share[0]


def test_rare_class_skips_empty_classes():
    pixels = np.zeros((100, 3), np.int64)
    pixels[0] = [10, 500, 0]
    index = FakeIndex([5, 5, 0], class_pixels=pixels)  # class 2: rarest but no component
    plan = epoch_plan(index, 0, seed=0, strategy="rare-class", length=500)
    assert set(np.unique(plan["cls"]).tolist()) <= {0, 1}


def test_source_weights():
    index = FakeIndex([400, 3], num_images=100, num_sources=2)
    source = index.images["source"]
    plan = epoch_plan(index, 0, seed=0, strategy="uniform", length=300, source_weights={0: 1.0, 1: 0.5})
    # 50 images per source, weights 1 : 0.5 -> shares 2 : 1.
    assert np.bincount(source[plan["image"]], minlength=2).tolist() == [200, 100]
    plan = epoch_plan(index, 0, seed=0, strategy="centroid", length=200, source_weights={1: 0.0})
    assert (source[plan["image"]] == 0).all()
    # Per-class counts stay balanced whatever the weights.
    counts = np.bincount(plan["cls"], minlength=2)
    usable = [c for c in range(2) if (source[index.components(c)["image"]] == 0).any()]
    assert all(abs(counts[c] - 200 / len(usable)) <= 1 for c in usable)
    # Within class 0, centroids are drawn in proportion weight * count per source.
    comp_src = source[index.components(0)["image"]]
    plan = epoch_plan(index, 0, seed=0, strategy="centroid", length=200, source_weights={0: 1.0, 1: 0.25})
    rows = plan["cls"] == 0
    got = np.bincount(source[plan["image"][rows]], minlength=2)
    w = np.array([1.0, 0.25]) * np.bincount(comp_src, minlength=2)
    assert np.abs(got - rows.sum() * w / w.sum()).max() <= 1
    with pytest.raises(ValueError, match="source 5 does not exist"):
        epoch_plan(index, 0, seed=0, source_weights={5: 1.0})
    with pytest.raises(ValueError, match="weight 0"):
        epoch_plan(index, 0, seed=0, source_weights={0: 0, 1: 0})
    with pytest.raises(ValueError, match=">= 0"):
        epoch_plan(index, 0, seed=0, source_weights={0: -1})


def test_bad_arguments():
    index = FakeIndex(COUNTS)
    with pytest.raises(ValueError, match="unknown sampling strategy 'balanced'"):
        epoch_plan(index, 0, seed=0, strategy="balanced")
    with pytest.raises(ValueError, match="length"):
        epoch_plan(index, 0, seed=0, length=0)
    with pytest.raises(ValueError, match="needs centroids"):
        epoch_plan(FakeIndex([0, 0]), 0, seed=0, strategy="centroid")
    assert len(epoch_plan(FakeIndex([0, 0]), 0, seed=0, strategy="uniform")["image"]) == 100


@pytest.mark.parametrize("plan_len", [1, 7, 100, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_rank_slices_equal_and_cover(plan_len, world):
    slices = [rank_slice(plan_len, r, world) for r in range(world)]
    per_rank = -(-plan_len // world)
    assert all(len(s) == per_rank for s in slices)
    together = np.concatenate(slices)
    assert set(together.tolist()) == set(range(plan_len))
    # Only the padding repeats: fewer than `world` extra samples.
    assert len(together) - plan_len < world


def test_rank_slice_bad_rank():
    with pytest.raises(ValueError, match="rank 2"):
        rank_slice(10, 2, 2)


@pytest.mark.parametrize("n,workers,batch", [(0, 2, 4), (10, 1, 3), (17, 3, 4), (100, 4, 1), (5, 8, 2)])
def test_worker_slices_disjoint_and_in_batch_order(n, workers, batch):
    slices = [worker_slice(n, w, workers, batch) for w in range(workers)]
    together = np.concatenate(slices)
    assert len(together) == n and set(together.tolist()) == set(range(n))
    # Taking one batch from each worker in turn (as DataLoader does) restores the order.
    batches = [[s[i:i + batch] for i in range(0, len(s), batch)] for s in slices]
    order = []
    for step in range(max(len(b) for b in batches)):
        for b in batches:
            if step < len(b):
                order.extend(b[step].tolist())
    assert order == list(range(n))
