"""Class-balanced crop streaming for training: the only torch module in csst_data.

One epoch, on one rank:
  epoch plan (sampling.epoch_plan: image row + centroid per sample, identical on
  every rank) -> this rank's equal-length slice (sampling.rank_slice) -> batches
  of the schedule's batch size for the epoch -> DataLoader workers take batches
  round-robin (worker k makes batches k, k+K, ...; the DataLoader hands them out
  in that same order) -> per sample: crop parameters from the image size in the
  index, image and label members read by random access (os.pread with the
  index's byte offsets, or whole files for file sources), JPEG decoded at a
  reduced DCT scale when the source window allows it, crop + augmentation.

Every sample's randomness is seeded by (seed, epoch, plan position), so a run
resumed mid-epoch (`load_state_dict`) sees exactly the crops it had not seen.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from csst_data.loader import crops, sampling, schedules
from csst_data import IGNORE, jpeg
from csst_data.store.codecs import decode_image, is_jpeg
from csst_data.index import CentroidIndex
from csst_data.loader.options import CropOptions, LoaderOptions
from csst_data.loader.reader import SampleReader
from csst_data.workers import mp_context, worker_init


def pseudo_sources(index: CentroidIndex) -> np.ndarray:
    """Boolean per index source: True when its labels come from `csst label`."""
    return np.array([ds.pseudo for ds in index.datasets], dtype=bool)


def load_crop(reader: SampleReader, index: CentroidIndex, row: int, center: Tuple[float, float], size: int,
              rng: np.random.Generator, options: CropOptions = CropOptions(), out: Optional[tuple] = None) -> tuple:
    """One (image uint8 S x S x 3, label uint8 S x S) crop of index image `row`.

    The crop holds `center` (cy, cx) at a random position (NaN: anywhere), drawn
    with `options.aug`. `options.decode(data, params, key)` -> (pixels,
    image_scale, origin, decoded shape) replaces the image decoding (default:
    `decode_window`). With `options.topk`, a third item: the sample's top-k
    (class ids, probabilities) cropped with the label's geometry (uint8 K x S x S
    each), or None when it has none. `out`: (image, label) arrays to write the
    crop into, e.g. a batch's slots.
    """
    images = index.images
    h, w = int(images["height"][row]), int(images["width"][row])
    cy, cx = center
    center = None if math.isnan(cy) else (float(cy), float(cx))
    params = crops.crop_params(h, w, size, rng, center=center, aug=options.aug)
    label = reader.label(row)
    data = reader.image_bytes(row)
    key = images["key"][row]
    if label.shape != (h, w):
        raise ValueError(f"sample {key!r}: label is {label.shape}, the index says {(h, w)}; "
                         "the index does not match its data (rebuild it)")
    try:
        image, scale, origin, shape = (options.decode or decode_window)(data, params, key)
    except ValueError as e:  # name the file, or the shard and byte offset
        raise ValueError(f"{reader.where(row, 'image')}: {e}") from None
    out = crops.apply_crop(image, label, params, image_scale=scale, origin=origin, shape=shape, out=out)
    if options.confidence_floor is not None:
        _drop_unsure(reader, row, params, out[1], options.confidence_floor)
    if not options.topk:
        return out
    soft = reader.topk(row)
    if soft is not None:
        if soft[0].shape[1:] != (h, w) or soft[1].shape != soft[0].shape:
            raise ValueError(f"sample {key!r}: top-k maps {soft[0].shape} and {soft[1].shape} do not match its label {(h, w)}")
        # Outside the image: class 0 with probability 0, i.e. no soft label there.
        soft = (crops.crop_nearest(soft[0], params, 0), crops.crop_nearest(soft[1], params, 0))
    return (*out, soft)


def _drop_unsure(reader, row, params, label, floor):
    """Pseudo-label pixels of the crop `label` whose stored confidence is under their class's floor -> ignore."""
    conf = reader.confidence(row)
    if conf is None:  # a real label, or pseudo labels stored without confidence
        return
    if conf.shape != (params.height, params.width):
        raise ValueError(f"{reader.where(row, 'label')}: confidence map {conf.shape} does not match its label "
                         f"{(params.height, params.width)}")
    conf = crops.crop_nearest(conf, params, 255)  # the label's geometry; outside the image the label is ignore
    label[conf < floor[label]] = IGNORE

def _header_size(data):
    from PIL import Image

    w, h = Image.open(io.BytesIO(data)).size
    return h, w


def decode_window(data: bytes, params: crops.CropParams,
                  key: Optional[str] = None) -> Tuple[np.ndarray, float, Tuple[int, int], Tuple[int, int]]:
    """Decode what a crop needs of an image -> (pixels, image_scale, origin, decoded shape).

    JPEGs are decoded at the smallest DCT scale that still holds the window at
    output resolution (when the window is at least twice the crop); of a JPEG
    with restart markers only the intervals covering the window are decoded
    (jpeg.window_decode); anything else is decoded whole.
    """
    h, w = params.height, params.width
    if not is_jpeg(data):
        image = decode_image(data, key=key)
        if image.shape[:2] != (h, w):  # one rule with eval: an image and its label are one size
            raise ValueError(jpeg.size_mismatch(data, image.shape[:2], (h, w)))
        return image, 1.0, (0, 0), image.shape[:2]
    try:
        info = jpeg.parse(data)
    except jpeg.UnsupportedJpeg:
        info = None  # progressive, arithmetic...: libjpeg-turbo decodes it whole
    except ValueError as e:
        raise ValueError(f"image {key!r}: cannot decode ({e})") from e
    size = (info.height, info.width) if info is not None else _header_size(data)
    if size != (h, w):
        raise ValueError(jpeg.size_mismatch(data, size, (h, w)))
    m = 8
    if max(params.side, 1.0) >= 2 * params.size:
        # DCT-domain downscaling: decode only as many pixels as the crop needs.
        m = jpeg.dct_scale(h, w, *crops.decode_min_size(params))
    shape = (jpeg.scaled_size(h, m), jpeg.scaled_size(w, m))
    scale = shape[0] / h
    box = crops.source_box(params, scale, shape)
    if box is None or info is None or not jpeg.can_splice(info):
        image = decode_image(data, min_height=shape[0] if m < 8 else None, min_width=shape[1] if m < 8 else None,
                             key=key)
        return image, image.shape[0] / h, (0, 0), image.shape[:2]
    ya, yb, xa, xb = box
    try:
        image, origin = jpeg.window_decode(data, ya, yb, xa, xb, m, info)
    except ValueError as e:
        raise ValueError(f"image {key!r}: cannot decode ({e})") from e
    return image, scale, origin, shape


PREFETCH = 2  # batches each worker prepares ahead (DataLoader prefetch_factor)
KEEP = 3  # batches per worker that the consumer may still hold (see CropLoader)
RING = PREFETCH + KEEP  # shared-memory batch buffers per worker with reuse_buffers


class CropDataset(IterableDataset):
    """Yields whole batches (dicts of tensors) for one epoch of one rank."""

    def __init__(self, index: CentroidIndex, crop_table: Sequence[Tuple[int, int]], options: LoaderOptions) -> None:
        """`options` with rank and world_size set (CropLoader sets them)."""
        self.index = index
        self.options = options
        self._ring = None
        self.crop_table = list(crop_table)
        # Read on every batch: attributes, not lookups through the options.
        self.seed, self.strategy, self.topk = options.seed, options.strategy, options.topk
        self.skip_bad, self.reuse_buffers = options.skip_bad, options.reuse_buffers
        self.crop_options = options.crop_options
        self.reader = SampleReader(index)
        self.is_pseudo = pseudo_sources(index)
        self.epoch, self.start = 0, 0
        self.offset = 0  # plan positions of this epoch taken before this run (elastic resume)
        self.current = None  # (epoch, offset, plan), made once in the main process and inherited by workers

    def plan(self, epoch: int, offset: int = 0) -> dict:
        """This rank's slice of the epoch plan: dict of arrays plus `pos` (plan position). With `offset`,
        the slice of the plan's positions from `offset` on (the rest of an epoch resumed elastically)."""
        o = self.options
        plan = sampling.epoch_plan(self.index, epoch, o.seed, strategy=o.strategy, length=o.length,
                                   p=o.p, temperature=o.temperature, source_weights=o.source_weights)
        if offset:
            pos = offset + sampling.rank_slice(len(plan["image"]) - offset, o.rank, o.world_size)
        else:
            pos = sampling.rank_slice(len(plan["image"]), o.rank, o.world_size)
        out = {k: np.asarray(v)[pos] for k, v in plan.items()}
        out["pos"] = np.asarray(pos)
        return out

    def _buffers(self, n, crop, batch):
        """(image tensor N x S x S x 3, label tensor N x S x S), uint8, N <= `batch`: fresh, or in a
        worker that reuses buffers the next of RING shared-memory pairs of `batch` crops. Sending a batch to the main process
        otherwise costs a fresh allocation (page faults) and a copy into shared memory, as much as
        the crop work itself at crop 768; a reused shared buffer is sent as a handle."""
        if not self.reuse_buffers or get_worker_info() is None:
            return torch.empty((n, crop, crop, 3), dtype=torch.uint8), torch.empty((n, crop, crop), dtype=torch.uint8)
        if self._ring is None or self._ring["shape"] != (batch, crop):
            self._ring = {"shape": (batch, crop), "next": 0, "buffers": [
                (torch.empty((batch, crop, crop, 3), dtype=torch.uint8).share_memory_(),
                 torch.empty((batch, crop, crop), dtype=torch.uint8).share_memory_()) for _ in range(RING)]}
        ring = self._ring
        image, label = ring["buffers"][ring["next"] % RING]
        ring["next"] += 1
        return image[:n], label[:n]

    def make_batch(self, plan: dict, positions: Sequence[int], crop: int, epoch: int) -> dict:
        """One batch: the crops of `positions` in this rank's slice of the plan."""
        image_t, label_t = self._buffers(len(positions), crop, self.crop_table[epoch][1])
        imgs, labels = image_t.numpy(), label_t.numpy()
        soft, bad = [], []
        n = len(plan["image"])
        positions = np.array(positions)
        for i in range(len(positions)):
            j = int(positions[i])
            for _ in range(n):
                rng = np.random.default_rng([self.seed, epoch, int(plan["pos"][j])])
                try:
                    # Written straight into the batch's slots (a retry overwrites them).
                    out = load_crop(self.reader, self.index, int(plan["image"][j]),
                                    (float(plan["cy"][j]), float(plan["cx"][j])), crop, rng, self.crop_options,
                                    out=(imgs[i], labels[i]))
                    break
                except ValueError as e:
                    if not self.skip_bad:
                        raise
                    # The next plan entry takes its place: the same on every run, so resuming stays exact.
                    bad.append({"row": int(plan["image"][j]), "key": str(self.index.images["key"][plan["image"][j]]),
                                "reason": str(e)})
                    j = (j + 1) % n
            else:
                raise ValueError("no sample of the epoch plan can be read")
            positions[i] = j
            soft.append(out[2] if self.topk else None)
        rows = plan["image"][positions]
        source = self.index.images["source"][rows]
        batch = {
            # N x 3 x S x S in channels-last memory (no copy here; convolutions take it as it is).
            "image": image_t.permute(0, 3, 1, 2),
            "label": label_t,  # uint8: the trainer widens it on the device
            "row": torch.from_numpy(rows.astype(np.int64)),
            "cls": torch.from_numpy(plan["cls"][positions].astype(np.int64)),
            "pos": torch.from_numpy(plan["pos"][positions].astype(np.int64)),  # epoch-plan positions
            "source": torch.from_numpy(source.astype(np.int64)),
            "is_pseudo": torch.from_numpy(self.is_pseudo[source]),
        }
        if any(s is not None for s in soft):
            # Samples without a soft label (real ones, or pseudo ones written without --topk)
            # get probability 0 everywhere: the loss gives them their hard label.
            k = max(s[0].shape[0] for s in soft if s is not None)
            idx = np.zeros((len(positions), k, crop, crop), np.uint8)
            prob = np.zeros((len(positions), k, crop, crop), np.uint8)
            for i, s in enumerate(soft):
                if s is not None:
                    idx[i, :len(s[0])], prob[i, :len(s[1])] = s
            batch.update(topk_idx=torch.from_numpy(idx), topk_prob=torch.from_numpy(prob))
        if self.topk:
            batch["has_topk"] = torch.tensor([s is not None for s in soft], dtype=torch.bool)
        if self.skip_bad:
            batch["bad"] = bad
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        if self.current is None or self.current[:2] != (epoch, self.offset):
            self.current = (epoch, self.offset, self.plan(epoch, self.offset))
        plan = self.current[2]
        crop, batch = self.crop_table[epoch]
        # Skip the batches already consumed, then take this worker's whole batches.
        first = self.start * batch
        positions = first + sampling.worker_slice(len(plan["image"]) - first, wid, nw, batch)
        # Samples in object storage are fetched ahead, in the order this worker uses them.
        self.reader.prefetch(plan["image"][positions])
        try:
            for s in range(0, len(positions), batch):
                yield self.make_batch(plan, positions[s:s + batch], crop, epoch)
        finally:
            self.reader.stop_prefetch()


class CropLoader:
    """Batches of class-balanced crops with the schedule's crop and batch size per epoch.

    `batch_size` is per process at the full crop; smaller crops of a fast
    schedule get proportionally larger batches. Iterate once per epoch after
    `set_epoch(e)`; `state_dict()` / `load_state_dict()` resume mid-epoch.

    With `reuse_buffers` (what `csst train` uses) workers write batches into a
    ring of shared-memory buffers, as FFCV and DALI do: a batch stays intact
    while fewer than `KEEP` x workers more batches have been taken (a training
    step that moves it to the device, or copies it, is done with it long
    before). Keep a batch longer only as a copy.
    """

    def __init__(self, index: CentroidIndex, options: LoaderOptions) -> None:
        if options.rank is None or options.world_size is None:
            rank, world_size = _dist_rank_world()
            options = dataclasses.replace(options, rank=rank, world_size=world_size)
        o = self.options = options
        self.table = schedules.schedule_table(o.schedule, o.epochs, o.crop, o.batch_size, o.sizes)
        self.dataset = CropDataset(index, self.table, o)
        self.workers, self.pin_memory = o.workers, o.pin_memory
        self.samples_per_epoch = o.length or index.num_images
        self.rank, self.world_size = o.rank, o.world_size
        self.epoch, self.batches_done = 0, 0
        self.offset = 0  # plan positions of the current epoch taken before this run (elastic resume)

    def samples_per_rank(self, epoch: Optional[int] = None) -> int:
        offset = self.offset if epoch in (None, self.epoch) else 0
        return math.ceil((self.samples_per_epoch - offset) / self.world_size)

    def batches_in_epoch(self, epoch: int) -> int:
        return math.ceil(self.samples_per_rank(epoch) / self.table[epoch][1])

    def iterations_left(self) -> int:
        """Steps left in the run from the loader's position: the rest of this epoch and the epochs after."""
        return len(self) + sum(self.batches_in_epoch(e) for e in range(self.epoch + 1, len(self.table)))

    def total_iterations(self) -> int:
        return sum(self.batches_in_epoch(e) for e in range(len(self.table)))

    def crop_and_batch(self, epoch: Optional[int] = None) -> Tuple[int, int]:
        return self.table[self.epoch if epoch is None else epoch]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.batches_done, self.offset = epoch, 0, 0

    def __len__(self) -> int:
        return self.batches_in_epoch(self.epoch) - self.batches_done

    def __iter__(self) -> Iterator[dict]:
        ds = self.dataset
        ds.epoch, ds.start, ds.offset = self.epoch, self.batches_done, self.offset
        if ds.current is None or ds.current[:2] != (self.epoch, self.offset):
            ds.current = (self.epoch, self.offset, ds.plan(self.epoch, self.offset))  # once, before the workers fork
        remaining = len(self)
        workers = min(self.workers, remaining)
        if remaining <= 0:
            return
        # A generator of its own: creating the iterator draws the workers' base seed from it, not from
        # torch's global RNG, whose stream (dropout) must not depend on where a run was resumed.
        dl = DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=self.pin_memory,
                        prefetch_factor=PREFETCH if workers else None, persistent_workers=False, worker_init_fn=worker_init(),
                        multiprocessing_context=mp_context() if workers else None,
                        generator=torch.Generator().manual_seed(ds.seed))
        for batch in dl:
            self.batches_done += 1
            yield batch
        if self.batches_done >= self.batches_in_epoch(self.epoch):
            self.epoch, self.batches_done, self.offset = self.epoch + 1, 0, 0

    def plan_done(self) -> int:
        """Positions of the current epoch's plan taken by all ranks together: every rank takes the same
        number of batches, so they are the plan's first `plan_done` positions (rank slices interleave)."""
        taken = self.offset + self.batches_done * self.table[self.epoch][1] * self.world_size
        return min(taken, self.samples_per_epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.dataset.seed,
                "strategy": self.dataset.strategy, "world_size": self.world_size, "offset": self.offset,
                "plan_done": self.plan_done() if self.epoch < len(self.table) else 0}

    def load_state_dict(self, state: dict) -> None:
        """Resume where `state` was saved. Under another number of processes (elastic resume) the
        epoch goes on from the plan position all ranks had reached, its rest split among the new ranks
        (each plan position is seen once in the epoch); the per-rank batch size stays."""
        self.epoch = int(state["epoch"])
        same = state.get("world_size", self.world_size) == self.world_size and not state.get("offset")
        if same:
            self.batches_done, self.offset = int(state["batches_done"]), 0
            return
        if "plan_done" not in state:
            raise ValueError(f"loader state was saved with world size {state['world_size']} by an older csst, "
                             f"this run has {self.world_size}; resume with the same number of processes")
        self.batches_done, self.offset = 0, int(state["plan_done"])


def _dist_rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
