"""The images `csst label` and `csst predict` read: listing, decoding in DataLoader workers, batching.

`list_inputs` turns SOURCEs into sorted (key, ref) items; `image_loader`
decodes them in DataLoader workers into `LoadedImage` records (a failure is a
record too, so one corrupt image does not stop the loader); `same_size_runs`
splits a batch where the image size changes, since only images of one size
stack into a tensor.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from csst_data.datasets import as_dataset, sanitise_key
from csst_data import jpeg
from csst_data.store.codecs import decode_image, is_jpeg, is_png
from csst_data.store.shards import RangeReader
from csst_data.workers import lower_priority, mp_context, worker_init

# A ref: a file path, or (tar path, offset, size, member name) for an image inside a shard.
Ref = str | tuple
Item = tuple[str, Ref]



def decode_whole(data: bytes, key: str | None = None, threads: int = 1) -> np.ndarray:
    """A whole image as uint8 H x W x 3: a JPEG with restart markers (what csst writes) in bands of MCU rows
    on `threads` threads (jpeg.band_decode: the same pixels as one call), anything else through
    codecs.decode_image (PNG, JPEGs without markers, progressive, CMYK)."""
    if threads > 1 and is_jpeg(data):
        try:
            info = jpeg.parse(data)
            if jpeg.can_splice(info):
                return jpeg.band_decode(data, threads, info)
        except ValueError:  # UnsupportedJpeg, or a CMYK JPEG that simplejpeg does not decode to RGB
            pass
    return decode_image(data, key=key)

def default_workers() -> int:
    """Decode workers (and label's encode threads) when not given: half the CPU cores, at most 8."""
    return min(8, max(1, (os.cpu_count() or 2) // 2))


# -- listing -------------------------------------------------------------------
def path_key(relpath: str) -> str:
    """Sample key of an image from its path relative to its input folder: the
    extension is dropped and dots, whitespace and path separators become '_'
    (`aachen/aachen_000000_000019_leftImg8bit.png` -> `aachen_aachen_000000_000019_leftImg8bit`)."""
    return sanitise_key(os.path.splitext(relpath)[0])


def list_inputs(inputs: Iterable = ()) -> list[Item]:
    """Sorted [(key, ref)] of every image to label.

    `inputs` are datasets or SOURCE strings (a bare folder, glob or file is an
    image folder here: keys are paths below it, '/' and '.' -> '_'). A ref is a
    file path, or (tar path, offset, size, member name) for an image inside a
    shard. Two images with the same key are an error naming both.
    """
    refs = []
    for source in inputs:
        refs += as_dataset(source, role="images").image_refs()
    seen = {}
    for key, ref in refs:
        if key in seen:
            raise ValueError(f"key collision: {ref_name(seen[key])} and {ref_name(ref)} both map to key {key!r}")
        seen[key] = ref
    return sorted(seen.items())


def ref_name(ref: Ref) -> str:
    """Human-readable source of a ref: the file path, or `path/shard-000000.tar#key.jpg` for a shard member."""
    return ref if isinstance(ref, str) else f"{ref[0]}#{ref[3]}"


# -- decoding in DataLoader workers ---------------------------------------------
@dataclass(frozen=True)
class LoadedImage:
    """One item decoded: its position in the item list and its pixels and bytes, or the error."""

    position: int
    image: torch.Tensor | None = None   # uint8 H x W x 3
    data: bytes | None = None           # the file's bytes
    suffix: str | None = None           # "jpg" or "png"
    error: str | None = None


class ImageDataset(torch.utils.data.Dataset):
    """Items [(key, ref)] -> LoadedImage. Errors are returned, not raised."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = items
        self.reader = RangeReader()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> LoadedImage:
        _, ref = self.items[i]
        try:
            data = self.reader.read(ref) if isinstance(ref, str) else self.reader.read(ref[0], ref[1], ref[2])
            if is_jpeg(data):
                suffix = "jpg"
            elif is_png(data):
                suffix = "png"
            else:
                raise ValueError("not a JPEG or PNG file")
            image = decode_image(data)
            if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                raise ValueError(f"decoded to shape {image.shape}, expected H x W x 3")
            if not image.flags.writeable:  # PIL arrays are read-only; torch wants writable memory
                image = image.copy()
            return LoadedImage(i, torch.from_numpy(np.ascontiguousarray(image)), data, suffix)
        except Exception as e:  # noqa: BLE001 - every failure is recorded in failed.jsonl
            return LoadedImage(i, error=f"{type(e).__name__}: {e}")


def keep_list(batch: list) -> list:
    """DataLoader collate_fn: images of different sizes cannot be stacked; they are grouped after loading."""
    return batch


def image_loader(items: Sequence[Item], batch_size: int, workers: int | None = None,
                 nice: int = 0) -> torch.utils.data.DataLoader:
    """Batches (lists) of LoadedImage in item order; `workers` None: `default_workers()`. Workers die
    with this process and run `nice` levels lower (label on the CPU: decoding must not preempt the model)."""
    workers = default_workers() if workers is None else workers
    return torch.utils.data.DataLoader(
        ImageDataset(items), batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=keep_list,
        worker_init_fn=worker_init(functools.partial(lower_priority, nice)),
        prefetch_factor=4 if workers else None, multiprocessing_context=mp_context() if workers else None,
    )


def same_size_runs(rows: Iterable[LoadedImage]) -> Iterator[list[LoadedImage]]:
    """Consecutive runs of loaded images of the same shape (order kept)."""
    run = []
    for row in rows:
        if run and row.image.shape != run[0].image.shape:
            yield run
            run = []
        run.append(row)
    if run:
        yield run
