"""Inference helpers shared by the trainer's validation, `csst eval` and `csst label`:
ImageNet normalisation, and class probabilities with whole-image or
sliding-window inference, multi-scale and horizontal-flip averaging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


Stats = tuple  # (mean, std) per channel on the 0..1 scale
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)  # csst's own models' normalisation, and the default


def normalise(image: torch.Tensor, stats: Stats = IMAGENET) -> torch.Tensor:
    """uint8 images (N, 3, H, W) or (N, H, W, 3) -> float32 (N, 3, H, W), minus mean over std
    (`stats`: the model's, as its checkpoint records them; ImageNet's by default).

    Runs on the input's device: move uint8 to the GPU first, it is 4x smaller."""
    if image.dtype != torch.uint8:
        raise ValueError(f"normalise expects uint8 images, got {image.dtype}")
    if image.ndim != 4:
        raise ValueError(f"normalise expects a batch (N, 3, H, W) or (N, H, W, 3), got shape {tuple(image.shape)}")
    if image.shape[1] != 3:
        if image.shape[-1] != 3:
            raise ValueError(f"images must have 3 channels, got shape {tuple(image.shape)}")
        image = image.permute(0, 3, 1, 2)
    mean = torch.tensor(stats[0], device=image.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(stats[1], device=image.device).view(1, 3, 1, 1) * 255
    return ((image.float() - mean) / std).contiguous()


def _pair(v, name):
    if v is None:
        return None
    h, w = (v, v) if isinstance(v, int) else tuple(v)
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {v}")
    return int(h), int(w)


def logits(model: torch.nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The model's float32 logits (N, C, H, W) at the input's size; torchvision's {"out": ...} unwrapped."""
    y = model(x)
    if isinstance(y, dict):  # torchvision-style models return {"out": ...}
        y = y["out"]
    if y.ndim != 4 or y.shape[1] != num_classes:
        raise ValueError(f"the model returned shape {tuple(y.shape)}, expected (N, {num_classes}, H, W)")
    if y.shape[-2:] != x.shape[-2:]:
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return y.float()


def check_window(crop: int | tuple[int, int] | None, stride: int | tuple[int, int] | None) -> None:
    """A sliding window's stride may not exceed its crop: the pixels between two windows would have
    no prediction (and were written as class 0)."""
    crop, stride = _pair(crop, "crop"), _pair(stride, "stride")
    if crop is not None and stride is not None and (stride[0] > crop[0] or stride[1] > crop[1]):
        raise ValueError(f"stride {stride[0]},{stride[1]} is larger than the crop {crop[0]},{crop[1]}: the pixels "
                         "between two windows would have no prediction (give a stride of at most the crop)")


def _slide(model, x, num_classes, crop, stride):
    """Average the logits of overlapping crop-sized windows (mmsegmentation's slide inference)."""
    n, _, h, w = x.shape
    (ch, cw), (sh, sw) = crop, stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    out = x.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = x.new_zeros((1, 1, h, w), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            # The last window in a row/column is pushed back inside the image.
            y1, x1 = r * sh, c * sw
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            out[:, :, y1:y2, x1:x2] += logits(model, x[:, :, y1:y2, x1:x2], num_classes)
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def _forward(model, x, num_classes, crop, stride):
    if crop is not None and (x.shape[2] > crop[0] or x.shape[3] > crop[1]):
        return _slide(model, x, num_classes, crop, stride)
    return logits(model, x, num_classes)


def predict_probs(model: torch.nn.Module, image: torch.Tensor, num_classes: int, scales: Sequence[float] = (1.0,),
                  flip: bool = False, crop: int | tuple[int, int] | None = None,
                  stride: int | tuple[int, int] | None = None, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Class probabilities (N, C, H, W) float32 for a normalised float image (N, 3, H, W).

    Each scale resizes the input, runs the model (sliding `crop`-sized windows at
    `stride`, default 2/3 of the crop, when the resized image is larger than the
    crop; whole image otherwise), resizes the logits back to (H, W) and takes the
    softmax; with `flip` the mirrored image is added. The probabilities of all
    passes are averaged. The model is used as given: call model.eval() first.
    """
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"expected a normalised float image (N, 3, H, W), got {image.dtype} {tuple(image.shape)}")
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive, got {scales}")
    crop = _pair(crop, "crop")
    stride = _pair(stride, "stride") if stride is not None else None
    check_window(crop, stride)
    if crop is not None and stride is None:
        stride = (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    h, w = image.shape[-2:]
    amp = (
        torch.autocast(device_type=image.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    probs = None
    passes = 0
    with torch.no_grad(), amp:
        for s in scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = image if size == (h, w) else F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            for flipped in (False, True) if flip else (False,):
                xi = x.flip(-1) if flipped else x
                y = _forward(model, xi, num_classes, crop, stride)
                if flipped:
                    y = y.flip(-1)
                if y.shape[-2:] != (h, w):
                    y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
                p = y.float().softmax(1)
                probs = p if probs is None else probs.add_(p)
                passes += 1
    return probs / passes if passes > 1 else probs
