import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from csst_data import IGNORE
from csst_data.index.components import components

STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def oracle(mask, num_classes, connectivity):
    """scipy.ndimage per class, in the kernel's order (scipy numbers components
    in raster order of their first pixel)."""
    rows = []
    for c in range(num_classes):
        lab, n = ndimage.label(mask == c, structure=STRUCTURE[connectivity])
        if n == 0:
            continue
        ones = np.ones(mask.shape)
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(ones, lab, idx)
        com = ndimage.center_of_mass(ones, lab, idx)
        for i, sl in enumerate(ndimage.find_objects(lab)):
            rows.append((c, int(area[i]), com[i][0], com[i][1], sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
    return rows


def check(mask, num_classes, connectivity):
    r = components(mask, num_classes, connectivity)
    want = oracle(mask, num_classes, connectivity)
    assert len(r["class"]) == len(want)
    assert r["class"].dtype == np.int16 and r["area"].dtype == np.int64 and r["bbox"].dtype == np.int32
    for k, w in enumerate(want):
        assert r["class"][k] == w[0] and r["area"][k] == w[1]
        assert r["y"][k] == pytest.approx(w[2], abs=1e-9) and r["x"][k] == pytest.approx(w[3], abs=1e-9)
        assert tuple(r["bbox"][k]) == w[4:]
    hist = np.bincount(mask[mask != IGNORE].astype(np.int64), minlength=num_classes)
    assert np.array_equal(r["class_pixels"], hist)
    return r


@st.composite
def masks(draw):
    num_classes = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    values = st.sampled_from(list(range(num_classes)) + [IGNORE])
    mask = draw(arrays(np.uint8, (h, w), elements=values))
    # Stretch columns sometimes: long runs over widths that are multiples of
    # 8 take the kernel's word-at-a-time path.
    stretch = draw(st.sampled_from([1, 1, 8, 16]))
    return np.repeat(mask, stretch, axis=1), num_classes


@settings(max_examples=300, deadline=None)
@given(masks(), st.sampled_from([4, 8]))
def test_matches_scipy_per_class(case, connectivity):
    mask, num_classes = case
    check(mask, num_classes, connectivity)


def checkerboard(h, w):
    return ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2).astype(np.uint8)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("mask", [
    np.full((7, 9), IGNORE, np.uint8),                       # all ignore
    np.full((1, 1), 0, np.uint8),                            # single pixel
    np.array([[0, 0, 1, 255, 1, 1, 0, 2]], np.uint8),         # single row
    np.array([[0], [0], [1], [255], [1], [2]], np.uint8),    # single column
    np.where(np.eye(9, dtype=bool), 1, 0).astype(np.uint8),  # diagonal line
    np.where(np.fliplr(np.eye(8, dtype=bool)), 2, IGNORE).astype(np.uint8),  # anti-diagonal
    checkerboard(8, 8),
    checkerboard(5, 24),
    np.zeros((3, 64), np.uint8),                             # one long run per row (word path)
])
def test_edge_cases(mask, connectivity):
    check(mask, 3, connectivity)


def test_diagonals_differ_between_4_and_8():
    mask = np.where(np.eye(6, dtype=bool), 1, IGNORE).astype(np.uint8)
    assert len(components(mask, 2, 4)["class"]) == 6
    r = components(mask, 2, 8)
    assert len(r["class"]) == 1 and r["area"][0] == 6 and tuple(r["bbox"][0]) == (0, 0, 6, 6)
    board = checkerboard(6, 6)
    assert len(components(board, 2, 4)["class"]) == 36
    assert components(board, 2, 8)["class"].tolist() == [0, 1]


def test_u_shape_merges_late():
    # The two arms of the U meet only in the last row: union-find joins them.
    mask = np.zeros((5, 5), np.uint8)
    mask[:, 0] = mask[:, 4] = mask[4, :] = 1
    r = check(mask, 2, 4)
    assert r["class"].tolist() == [0, 1] and r["area"].tolist() == [12, 13]
    assert tuple(r["bbox"][1]) == (0, 0, 5, 5)


def test_centroid_is_mean_of_pixels():
    mask = np.full((10, 16), IGNORE, np.uint8)
    mask[2:5, 3:11] = 1
    mask[6, 0] = 1
    r = components(mask, 2)
    assert r["class"].tolist() == [1, 1]
    assert (r["y"][0], r["x"][0]) == (3.0, 6.5) and (r["y"][1], r["x"][1]) == (6.0, 0.0)
    assert r["area"].tolist() == [24, 1]


def test_min_area_drops_small_components_but_not_pixels():
    mask = np.zeros((6, 6), np.uint8)
    mask[0, 0] = 1
    mask[3:, 3:] = 1
    r = components(mask, 2, min_area=2)
    assert r["class"].tolist() == [0, 1] and r["area"].tolist() == [26, 9]
    assert r["class_pixels"].tolist() == [26, 10]


def test_out_of_range_value_names_the_key():
    mask = np.zeros((4, 4), np.uint8)
    mask[2, 3] = 7
    with pytest.raises(ValueError, match=r"'frame_0042'.*value 7 is >= num_classes=5"):
        components(mask, 5, key="frame_0042")
    with pytest.raises(ValueError, match="2-D uint8"):
        components(mask.astype(np.int32), 5)
    with pytest.raises(ValueError, match="connectivity"):
        components(mask, 8, connectivity=6)


def test_non_contiguous_input_and_determinism():
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 3, (40, 80)).astype(np.uint8)
    a = components(mask[:, ::2], 3)
    b = components(np.ascontiguousarray(mask[:, ::2]), 3)
    for k in a:
        assert np.array_equal(a[k], b[k])
    check(mask[:, ::2], 3, 8)


def test_large_street_like_mask():
    # Big blocks with ragged ignore edges: long runs plus many small pieces.
    rng = np.random.default_rng(0)
    mask = np.repeat(np.repeat(rng.integers(0, 6, (16, 32)), 16, 0), 16, 1).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.02] = IGNORE
    for connectivity in (4, 8):
        check(mask, 6, connectivity)
