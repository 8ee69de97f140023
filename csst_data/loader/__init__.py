"""Crops for training: which crops to draw, how to cut them, how to stream them.

Owns the epoch plans (`sampling`: centroid and uniform sampling), crop-size
schedules (`schedules`), the crop geometry and augmentations (`crops`), the
plan-ordered prefetch from object storage (`prefetch`) and the torch
DataLoader around them (`crop_loader`, the only module of csst_data that
imports torch). It may import every other package of csst_data; nothing of
csst_train.

`CropLoader`, `load_crop` and `decode_window` are importable from here; they
load torch on first use only. `LoaderOptions` (the loader's options, in one
place) and `CropOptions` do not need torch.
"""

from csst_data.loader.options import CropOptions, LoaderOptions  # noqa: F401

_LAZY = ("CropLoader", "load_crop", "decode_window", "KEEP")


def __getattr__(name):
    # Lazy, so that `from csst_data.loader import sampling` does not import torch.
    if name in _LAZY:
        from csst_data.loader import crop_loader

        return getattr(crop_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
