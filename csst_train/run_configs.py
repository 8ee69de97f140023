"""The options of `csst label` and `csst predict`, each in one frozen dataclass passed whole.

Torch-free, so the command line reads the defaults from here (cli/options.py
`library_defaults`) without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Size = tuple[int, int] | int | None


def size_list(size: Size) -> list[int] | None:
    """A size as [H, W] (None stays None): JSON has no tuples, and a record read back must compare equal."""
    if size is None:
        return None
    return [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]


@dataclass(frozen=True)
class TestTime:
    """How a prediction is made from an image: the probabilities averaged over scales and flips."""

    scales: Sequence[float] = (1.0,)  # resize factors; probabilities are averaged over them
    flip: bool = False                # also average the horizontally flipped image
    crop: Size = None                 # sliding-window size for images larger than it (None: whole image)
    stride: Size = None               # sliding-window stride (None: 2/3 of crop)

    def record(self) -> dict:
        """The options as label's manifest and predict.json record them (JSON: lists, a rerun compares equal)."""
        return {"scales": [float(s) for s in self.scales], "flip": bool(self.flip), "crop": size_list(self.crop),
                "stride": size_list(self.stride)}


@dataclass(frozen=True)
class LabelConfig:
    """`csst label`: how the teacher labels and what each sample stores."""

    device: str = "auto"              # auto, cpu, cuda or cuda:N
    batch_size: int = 4               # images per forward pass (sizes that differ go in separate passes)
    workers: int | None = None        # DataLoader workers decoding images (None: half the cores, at most 8)
    shard_size: int = 1000            # samples per shard
    scales: Sequence[float] = (1.0,)  # test-time scales
    flip: bool = False                # test-time horizontal flip
    crop: Size = None                 # sliding-window size (None: whole image)
    stride: Size = None               # sliding-window stride (None: 2/3 of crop)
    topk: int = 0                     # also store the top-k classes and probabilities (soft labels); 0 = off
    min_confidence: float | None = None  # pixels whose top probability is below this become 255 (ignore)
    confidence: bool = True           # also store each pixel's top probability (confidence.npy.zst), so
                                      # `csst train --min-confidence/--class-fraction` can threshold later
    amp: str = "off"                  # autocast dtype on CUDA: off, bf16 or fp16
    encode_threads: int | None = None  # threads compressing labels (None: half the cores, at most 8)
    keep_bytes: bool = False          # store the original image bytes, not restart-marker JPEGs
    quality: int = 95                 # JPEG quality for PNG inputs
    lossless: bool = False            # keep PNG inputs as PNG
    inputs: Sequence | None = None    # the SOURCEs given, recorded in the manifest's producer

    def test_time(self) -> TestTime:
        return TestTime(scales=tuple(self.scales), flip=self.flip, crop=self.crop, stride=self.stride)


@dataclass(frozen=True)
class PredictConfig:
    """`csst predict`: how predictions are made and written."""

    fmt: str = "ids"                  # output format, a name in csst_train.predict.FORMATS
    device: str = "auto"              # auto, cpu, cuda or cuda:N
    batch_size: int = 4               # images per forward pass
    workers: int | None = None        # DataLoader workers decoding images (None: half the cores, at most 8)
    scales: Sequence[float] = (1.0,)  # test-time scales
    flip: bool = False                # test-time horizontal flip
    crop: Size = None                 # sliding-window size (None: whole image)
    stride: Size = None               # sliding-window stride (None: 2/3 of crop)
    amp: str = "off"                  # autocast dtype on CUDA: off, bf16 or fp16
    force: bool = False               # replace the files of an earlier run with other options (else refused)

    def test_time(self) -> TestTime:
        return TestTime(scales=tuple(self.scales), flip=self.flip, crop=self.crop, stride=self.stride)
