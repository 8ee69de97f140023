import io

import numpy as np
import pytest
import torch
from PIL import Image

from csst_data.store import codecs
from csst_data.loader import sampling, schedules
from csst_data.index import CentroidIndex, build_index
from csst_data.loader.crop_loader import CropLoader
from csst_data.loader.options import LoaderOptions
from csst_data.store.shards import SetInfo, ShardWriter

C = 4


def _scene(i, h=64, w=96):
    """A label with a few blobs and an image that encodes the label in its red channel."""
    rng = np.random.default_rng(i)
    label = np.zeros((h, w), np.uint8)
    for c in range(1, C):
        if c == 3 and i % 3:  # class 3 is rare: one image in three
            continue
        y, x = rng.integers(8, h - 8), rng.integers(8, w - 8)
        label[y - 5:y + 5, x - 6:x + 6] = c
    label[:2, :2] = 255
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 60
    image[..., 1] = rng.integers(0, 255)
    return image, label


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    with ShardWriter(root / "data", SetInfo(num_classes=C, class_names=list("abcd")), maxcount=5) as w:
        for i in range(12):
            image, label = _scene(i)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")  # lossless: image and label stay comparable
            w.write({"__key__": f"img{i:03d}", "png": buf.getvalue(), "label.npy.zst": codecs.encode_label(label, C)})
    build_index([root / "data"], root / "index.zarr", progress=False)
    return CentroidIndex.open(root / "index.zarr")


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def _make(index, **kw):
    args = dict(crop=32, batch_size=4, epochs=2, seed=3, workers=0, augment=True)
    args.update(kw)
    return CropLoader(index, LoaderOptions(**args))


def test_batches_identical_for_any_number_of_workers(index):
    a = _epoch(_make(index, workers=0), 1)
    b = _epoch(_make(index, workers=2), 1)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        assert torch.equal(x["row"], y["row"])


def test_shapes_and_types(index):
    batch = _epoch(_make(index), 0)[0]
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 32, 32)
    assert batch["label"].dtype == torch.uint8 and batch["label"].shape == (4, 32, 32)  # widened on the device
    assert not batch["is_pseudo"].any()


def test_image_and_label_stay_aligned(index):
    # The red channel is label * 60 wherever the label is not ignore (PNG is lossless);
    # bilinear blending blurs edges, so compare away from them with nearest-like tolerance.
    for batch in _epoch(_make(index, augment=False), 0):
        red = batch["image"][:, 0].long()
        lab = batch["label"]
        valid = lab != 255
        assert (red[valid] == lab[valid] * 60).float().mean() > 0.95


def test_centroid_crops_contain_their_class(index):
    loader = _make(index, strategy="centroid", scale_range=(1.0, 1.0))
    for batch in _epoch(loader, 0):
        for lab, c in zip(batch["label"], batch["cls"]):
            assert c >= 0 and (lab == c).any()


def test_resume_mid_epoch_yields_exactly_the_rest(index):
    full = _epoch(_make(index, workers=2), 1)
    first = _make(index, workers=2)
    first.set_epoch(1)
    it = iter(first)
    next(it)
    state = first.state_dict()
    del it
    resumed = _make(index, workers=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 1
    for x, y in zip(rest, full[1:]):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["row"], y["row"])


def test_ranks_get_equal_disjoint_slices(index):
    plan = sampling.epoch_plan(index, 0, 3, strategy="centroid")
    seen = []
    lengths = []
    for rank in range(2):
        batches = _epoch(_make(index, rank=rank, world_size=2), 0)
        lengths.append(sum(len(b["row"]) for b in batches))
        seen.append(torch.cat([b["row"] for b in batches]).tolist())
    assert lengths[0] == lengths[1] == -(-len(plan["image"]) // 2)
    assert sorted(seen[0] + seen[1]) == sorted(plan["image"].tolist())


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
def test_schedule_sets_crop_and_batch_per_epoch(index, schedule):
    loader = _make(index, crop=64, batch_size=2, epochs=3, schedule=schedule, length=12)
    table = schedules.schedule_table(schedule, 3, 64, 2)
    for epoch in range(3):
        batches = _epoch(loader, epoch)
        crop, bsz = table[epoch]
        assert batches[0]["image"].shape[-1] == crop and len(batches[0]["row"]) == min(bsz, 12)
        assert sum(len(b["row"]) for b in batches) == 12
    assert loader.total_iterations() == sum(-(-12 // b) for _, b in table)


def test_reused_batch_buffers_give_the_same_batches_and_keep_each_intact(index):
    """Workers that fill a ring of shared-memory buffers yield the batches fresh buffers give, and a
    batch stays intact while fewer than KEEP x workers more are taken (on taking the KEEP x workers-th,
    the DataLoader asks its worker for the batch that reuses the buffer)."""
    from csst_data.loader.crop_loader import KEEP

    runs = {}
    for reuse in (False, True):
        loader = CropLoader(index, LoaderOptions(crop=32, batch_size=2, epochs=1, workers=2, length=40, seed=3, reuse_buffers=reuse))
        held, copies, later = [], [], []
        for i, b in enumerate(loader):
            if i == 1:
                held, copies = b, {k: b[k].clone() for k in ("image", "label")}
            if 1 < i <= KEEP * 2:
                later.append(i)
            if i == KEEP * 2:
                assert all(torch.equal(held[k], copies[k]) for k in copies)
            runs.setdefault(reuse, []).append({k: b[k].clone() for k in ("image", "label", "row")})
        assert later  # the check above ran
    assert len(runs[False]) == len(runs[True])
    for a, b in zip(runs[False], runs[True]):
        assert all(torch.equal(a[k], b[k]) for k in a)
