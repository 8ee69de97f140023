import io
import json
import os
import shutil

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from csst_cli.main import cli
from csst_data import IGNORE
from csst_data.store import codecs, shards
from csst_data.index.components import components
from csst_data.index import CentroidIndex, IndexOptions, StaleIndexError, build_index, merge_indexes, part_path
from csst_data.loader.reader import SampleReader

C = 5
NAMES = [f"c{i}" for i in range(C)]


def make_mask(rng, h=24, w=40, classes=C):
    """Blocky masks with some ignore: several components per class."""
    mask = np.repeat(np.repeat(rng.integers(0, classes, (h // 4, w // 4)), 4, 0), 4, 1).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.05] = IGNORE
    return mask


def jpeg(h, w, seed):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_shards(root, n, seed=0, maxcount=3, classes=C, prefix="shard"):
    rng = np.random.default_rng(seed)
    masks = {}
    with shards.ShardWriter(root, shards.SetInfo(num_classes=C, class_names=NAMES), maxcount=maxcount, prefix=prefix) as w:
        for i in range(n):
            key = f"{prefix}{seed}x{i:04d}"
            mask = make_mask(rng, classes=classes)
            w.write({"__key__": key, "jpg": jpeg(*mask.shape, i), "label.npy.zst": codecs.encode_label(mask)})
            masks[key] = mask
    return masks


def write_pngs(root, n, seed=0):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    masks = {}
    for i in range(n):
        mask = make_mask(rng)
        Image.fromarray(mask, mode="L").save(os.path.join(root, f"m{seed}_{i:03d}.png"))
        masks[f"m{seed}_{i:03d}"] = mask
    return masks


def read_all(path):
    """Every array and the attrs of an index, with plain zarr."""
    g = zarr.open_group(str(path), mode="r")
    arrays = {}
    for name in ("images", "components"):
        for k, a in g[name].arrays():
            arrays[f"{name}/{k}"] = a[...]
    arrays["class_offsets"] = g["class_offsets"][...]
    return dict(g.attrs), arrays


def assert_same_index(a, b, skip_attrs=()):
    attrs_a, arr_a = read_all(a)
    attrs_b, arr_b = read_all(b)
    for k in skip_attrs:
        attrs_a.pop(k, None), attrs_b.pop(k, None)
    assert attrs_a == attrs_b
    assert sorted(arr_a) == sorted(arr_b)
    for k in arr_a:
        assert arr_a[k].dtype == arr_b[k].dtype, k
        assert np.array_equal(arr_a[k], arr_b[k]), k


@pytest.fixture
def data(tmp_path):
    masks = write_shards(tmp_path / "data", 11)
    return tmp_path, masks


def test_index_matches_kernel_and_opens_with_plain_zarr(data):
    tmp, masks = data
    out = build_index([tmp / "data"], tmp / "index.zarr", progress=False)
    g = zarr.open_group(out, mode="r")
    assert g.attrs["format"] == "csst-centroid-index" and g.attrs["version"] == 2
    assert g.attrs["num_classes"] == C and g.attrs["class_names"] == NAMES and g.attrs["connectivity"] == 8
    assert g.attrs["sources"][0]["path"] == "data"  # relative to the index's folder
    assert g["components/y"].dtype == np.float32 and g["components/class"].dtype == np.int16
    assert g["images/label_offset"].dtype == np.int64 and g["images/class_pixels"].shape == (11, C)
    assert g["components/y"].metadata.codecs[-1].to_dict()["name"] == "zstd"
    idx = CentroidIndex.open(out)
    assert idx.num_images == 11 and idx.num_classes == C and idx.class_names == NAMES
    keys = list(idx.images["key"])
    assert keys == list(masks)
    assert np.array_equal(g["images/key"][...], idx.images["key"])
    offsets = g["class_offsets"][...]
    for c in range(C):
        got = idx.components(c)
        want_rows = []
        for row, key in enumerate(keys):
            r = components(masks[key], C)
            sel = r["class"] == c
            want_rows += [(row, y, x, a, tuple(b)) for y, x, a, b in
                          zip(r["y"][sel], r["x"][sel], r["area"][sel], r["bbox"][sel])]
        assert len(got["image"]) == len(want_rows) == offsets[c + 1] - offsets[c]
        assert np.array_equal(got["image"], [w[0] for w in want_rows])
        assert np.allclose(got["y"], [w[1] for w in want_rows]) and np.allclose(got["x"], [w[2] for w in want_rows])
        assert np.array_equal(got["area"], [w[3] for w in want_rows])
        assert np.array_equal(got["bbox"], np.array([w[4] for w in want_rows]).reshape(-1, 4))
        assert np.array_equal(g["components/area"][offsets[c]:offsets[c + 1]], got["area"])
    for row, key in enumerate(keys):
        assert np.array_equal(idx.class_pixels[row], np.bincount(masks[key][masks[key] != IGNORE], minlength=C))
        assert (idx.images["height"][row], idx.images["width"][row]) == masks[key].shape
    # Byte offsets give random access to the original members.
    reader = SampleReader(idx)
    for row in (0, 5, 10):
        assert np.array_equal(reader.label(row), masks[keys[row]])
        assert reader.image_bytes(row) == jpeg(*masks[keys[row]].shape, row)


def test_absent_class_is_empty_not_keyerror(tmp_path):
    write_shards(tmp_path / "d", 4, classes=3)  # classes 3 and 4 never occur
    idx = CentroidIndex.open(build_index([tmp_path / "d"], tmp_path / "i.zarr", progress=False))
    assert idx.absent_classes() == [3, 4]
    empty = idx.components(4)
    assert all(len(v) == 0 for v in empty.values()) and empty["bbox"].shape == (0, 4)
    s = idx.summary()
    assert s["absent_classes"] == ["c3", "c4"] and s["classes"][4]["median_area"] is None
    with pytest.raises(ValueError, match="out of range"):
        idx.components(C)


def test_merge_of_rank_parts_equals_single_build(data):
    tmp, _ = data
    single = build_index([tmp / "data"], tmp / "index.zarr", progress=False)
    parts = [build_index([tmp / "data"], tmp / "index.zarr", IndexOptions(rank=r, world_size=3, force=False),
                         progress=False) for r in (2, 0, 1)]
    assert parts[1] == part_path(str(tmp / "index.zarr"), 0, 3) and os.path.isdir(parts[1])
    assert CentroidIndex.open(parts[0]).num_images == 11 - 11 * 2 // 3
    merged = merge_indexes(parts, tmp / "merged.zarr")
    assert_same_index(single, merged)
    assert CentroidIndex.open(merged).content_hash() == CentroidIndex.open(single).content_hash()
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        merge_indexes([parts[0], parts[1]], tmp / "m2.zarr")


def test_workers_give_the_same_index(data):
    tmp, _ = data
    a = build_index([tmp / "data"], tmp / "a.zarr", IndexOptions(workers=1), progress=False)
    b = build_index([tmp / "data"], tmp / "b.zarr", IndexOptions(workers=2), progress=False)
    assert_same_index(a, b)


def test_append_equals_full_build(data):
    tmp, _ = data
    write_pngs(tmp / "pngs", 4, seed=5)
    new = str(tmp / "pngs")  # a mask folder SOURCE
    full = build_index([tmp / "data", new], tmp / "full.zarr", progress=False)
    out = build_index([tmp / "data"], tmp / "app.zarr", progress=False)
    build_index([new], out, IndexOptions(num_classes=C, append=True), progress=False)
    assert_same_index(full, out)
    with pytest.raises(ValueError, match="already in"):
        build_index([new], out, IndexOptions(append=True), progress=False)
    with pytest.raises(ValueError, match="connectivity=8, not 4"):
        build_index([tmp / "data"], tmp / "full.zarr", IndexOptions(append=True, connectivity=4), progress=False)


def test_stale_index_is_detected(data):
    tmp, _ = data
    out = build_index([tmp / "data"], tmp / "index.zarr", progress=False)
    CentroidIndex.open(out)
    with shards.ShardWriter(tmp / "data", resume=True) as w:  # the manifest changes
        w.write({"__key__": "extra", "label.npy.zst": codecs.encode_label(np.zeros((4, 4), np.uint8))})
    with pytest.raises(StaleIndexError, match=r"index is stale: .*data changed; rebuild it with --force"):
        CentroidIndex.open(out)
    assert CentroidIndex.open(out, check_stale=False).num_images == 11
    result = CliRunner().invoke(cli, ["index", "stats", str(out)])
    assert result.exit_code != 0 and "index is stale" in result.output
    with pytest.raises(ValueError, match="--force"):
        build_index([tmp / "data"], out, progress=False)
    assert CentroidIndex.open(build_index([tmp / "data"], out, IndexOptions(force=True), progress=False)).num_images == 12


def test_stale_file_source_and_relative_paths(tmp_path):
    masks = write_pngs(tmp_path / "ds" / "masks", 3)
    out = build_index([tmp_path / "ds" / "masks"], tmp_path / "ds" / "index.zarr", IndexOptions(num_classes=C), progress=False)
    # Data and index move together: relative paths still resolve.
    shutil.move(tmp_path / "ds", tmp_path / "moved")
    idx = CentroidIndex.open(tmp_path / "moved" / "index.zarr")
    assert idx.datasets[0].spec.ann_dir == os.path.realpath(tmp_path / "moved" / "masks")
    assert np.array_equal(SampleReader(idx).label(2), masks["m0_002"])
    png = tmp_path / "moved" / "masks" / "m0_001.png"
    st = os.stat(png)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StaleIndexError, match="changed"):
        CentroidIndex.open(tmp_path / "moved" / "index.zarr")


def test_out_of_range_mask_names_the_file(tmp_path):
    write_pngs(tmp_path / "m", 2)
    bad = np.zeros((8, 8), np.uint8)
    bad[3, 3] = 9
    Image.fromarray(bad, mode="L").save(tmp_path / "m" / "broken_frame.png")
    for workers in (1, 2):
        with pytest.raises(ValueError, match=r"broken_frame\.png.*value 9"):
            build_index([tmp_path / "m"], tmp_path / "i.zarr", IndexOptions(num_classes=C, workers=workers), progress=False)
    assert not os.path.exists(tmp_path / "i.zarr")
    with pytest.raises(ValueError, match="--num-classes"):
        build_index([tmp_path / "m"], tmp_path / "i.zarr", progress=False)


def test_min_area_and_connectivity_recorded(data):
    tmp, masks = data
    out = build_index([tmp / "data"], tmp / "i.zarr", IndexOptions(connectivity=4, min_area=5), progress=False)
    idx = CentroidIndex.open(out)
    assert idx.connectivity == 4 and idx.min_area == 5
    want = sum(int((components(m, C, 4)["area"] >= 5).sum()) for m in masks.values())
    assert idx.num_components == want and all((idx.components(c)["area"] >= 5).all() for c in range(C))


def test_cli_build_merge_stats(data):
    tmp, _ = data
    run = CliRunner().invoke
    out = str(tmp / "index.zarr")
    for rank in (0, 1):
        r = run(cli, ["index", "build", str(tmp / "data"), "-o", out, "--no-progress"],
                env={"RANK": str(rank), "WORLD_SIZE": "2"})
        assert r.exit_code == 0, r.output
    parts = [part_path(out, r, 2) for r in (0, 1)]
    r = run(cli, ["index", "merge", *parts, "-o", out])
    assert r.exit_code == 0, r.output
    r = run(cli, ["index", "build", str(tmp / "data"), "-o", str(tmp / "single.zarr"), "--no-progress",
                  "--workers", "2"], env={"RANK": None, "WORLD_SIZE": None})
    assert r.exit_code == 0, r.output
    assert_same_index(out, tmp / "single.zarr")
    r = run(cli, ["index", "stats", out, "--json", "-", "--plot", str(tmp / "classes.png")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["num_images"] == 11 and [c["name"] for c in summary["classes"]] == NAMES
    assert sum(c["pixel_share"] for c in summary["classes"]) == pytest.approx(1.0)
    assert Image.open(tmp / "classes.png").size[0] > 100
    r = run(cli, ["index", "stats", out])
    assert r.exit_code == 0 and "median area" in r.output
    r = run(cli, ["index", "build", str(tmp / "nothing"), "-o", str(tmp / "x.zarr")])
    assert r.exit_code != 0 and "nothing" in r.output
