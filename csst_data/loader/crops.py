"""Crops and the paper's augmentations (Sec. 4.2): random scale 0.5-2.0,
horizontal flip, colour jitter 0.1 and Gaussian blur.

The work is split in two so that the loader can decode a JPEG at a reduced
DCT scale before cropping:
  crop_params(...)  draws everything random (window, flip, jitter, blur) from
                    a numpy Generator; the window is in ORIGINAL image pixels.
  apply_crop(...)   cuts the window out of an image (full size or a reduced
                    decode) and the label (always full size) and resizes it to
                    size x size: bilinear image (OpenCV, antialiased when
                    shrinking), nearest label (numpy index arrays). Only the
                    window is touched, so the cost does not grow with the image.

Geometry: pixel i covers [i, i + 1). The window is [y0, y0 + side) x
[x0, x0 + side) with integer y0, x0 and side = size / scale. Output pixel j
samples the source at y0 + (j + 0.5) * side / size (its centre); a label
pixel takes the value of the source pixel containing that point, or ignore
(255) when it falls outside the image, where the image gets the mean colour.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import cv2
import numpy as np

from csst_data import IGNORE

cv2.setNumThreads(1)  # one crop at a time per loader worker: no nested thread pools

# ImageNet mean in uint8 RGB: padding that a normalised network sees as ~0.
MEAN = (124, 116, 104)


@dataclasses.dataclass(frozen=True)
class CropParams:
    """One crop, drawn by `crop_params`: the window, flip, jitter and blur."""
    height: int          # original image size
    width: int
    y0: int              # window top-left, original pixels (may be < 0: padding)
    x0: int
    side: float          # window side in original pixels (size / scale)
    size: int            # output side
    flip: bool = False
    brightness: float = 1.0  # jitter factors, 1.0 = unchanged
    contrast: float = 1.0
    saturation: float = 1.0
    blur_sigma: float = 0.0  # 0 = no blur


def _place(lo, hi, rng, side, extent, center):
    """Integer window start along one axis; [lo, hi] keeps the window inside
    the image (or around it, when the image is smaller)."""
    if center is None:
        return int(rng.integers(lo, hi + 1))
    # The pixel holding the centroid sits at a uniform position of the window:
    # start in [a, p] keeps its centre p + 0.5 inside [start, start + side).
    p = min(int(math.floor(center + 0.5)), extent - 1)
    a = int(math.floor(p + 0.5 - side)) + 1
    start = int(rng.integers(a, p + 1))
    lo, hi = max(lo, a), min(hi, p)
    # Empty only for a centroid in the last pixel row/column: overshoot < 1 px.
    return min(max(start, lo), hi) if lo <= hi else a


@dataclasses.dataclass(frozen=True)
class Augment:
    """What `crop_params` draws besides the window; made once per loader, not per crop."""
    scale_range: Optional[Tuple[float, float]] = (0.5, 2.0)  # random scale; None: no scaling
    flip: bool = True                  # horizontal flip with probability 0.5
    colour: bool = True                # False turns jitter and blur off
    jitter: float = 0.1                # brightness, contrast, saturation in [1 - jitter, 1 + jitter]
    blur_p: float = 0.5                # probability of a Gaussian blur...
    blur_sigma: Tuple[float, float] = (0.15, 1.15)  # ...with sigma drawn from this range


# No augmentation: scale 1, no flip, jitter or blur (a crop that draws only its window).
NO_AUGMENT = Augment(scale_range=(1.0, 1.0), flip=False, colour=False)


def crop_params(height: int, width: int, size: int, rng: np.random.Generator,
                center: Optional[Tuple[float, float]] = None, aug: Augment = Augment()) -> CropParams:
    """Draw one crop: window, flip, jitter and blur.

    center: (row, col) centroid in original pixels, or None / NaN for a random
    crop. With a centroid the pixel holding it sits at a uniformly random
    position inside the window; the window is then moved to lie inside the
    image when the image is at least as large (the centroid stays inside), or
    to cover the whole image along an axis where the image is smaller.
    aug: the scale range, flip, jitter and blur to draw (`Augment`).
    """
    scale_range, flip, colour, jitter, blur_p = aug.scale_range, aug.flip, aug.colour, aug.jitter, aug.blur_p
    height, width, size = int(height), int(width), int(size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    scale = 1.0
    if scale_range is not None:
        lo, hi = map(float, scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        scale = float(rng.uniform(lo, hi)) if hi > lo else lo
    side = size / scale
    if center is not None and not (np.isfinite(center[0]) and np.isfinite(center[1])):
        center = None
    if center is not None:
        cy, cx = float(center[0]), float(center[1])
        if not (-0.5 <= cy < height and -0.5 <= cx < width):
            raise ValueError(f"centroid ({cy}, {cx}) is outside the {height}x{width} image")
    # Allowed window starts: inside the image, or covering it when it is smaller.
    dy, dx = math.floor(height - side), math.floor(width - side)
    y0 = _place(min(0, dy), max(0, dy), rng, side, height, None if center is None else cy)
    x0 = _place(min(0, dx), max(0, dx), rng, side, width, None if center is None else cx)
    do_flip = bool(flip) and bool(rng.random() < 0.5)
    b = c = s = 1.0
    if not colour:
        jitter = blur_p = 0
    if jitter:
        b, c, s = (float(v) for v in rng.uniform(1.0 - jitter, 1.0 + jitter, size=3))
    sigma = 0.0
    if blur_p and rng.random() < blur_p:
        sigma = float(rng.uniform(*aug.blur_sigma))
    return CropParams(height, width, y0, x0, side, size, do_flip, b, c, s, sigma)


def decode_min_size(params: CropParams) -> Tuple[int, int]:
    """(min_height, min_width) of a decode that still holds the window at
    >= output resolution; pass to codecs.decode_image for DCT downscaling."""
    ratio = params.size / params.side
    return math.ceil(params.height * ratio), math.ceil(params.width * ratio)


def _axis(start, side, size, extent):
    """Source index of every output pixel along one axis and the output range
    [j0, j1) that falls inside the image."""
    step = side / size
    centres = start + (np.arange(size) + 0.5) * step
    j0 = int(np.searchsorted(centres, 0.0, "left"))
    j1 = int(np.searchsorted(centres, float(extent), "left"))
    return np.floor(centres[j0:j1]).astype(np.intp), j0, j1, step


def source_box(params: CropParams, image_scale: float,
               shape: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:
    """The pixels [ya, yb) x [xa, xb) of a decode (of size `shape`, at `image_scale`
    of the original) that `apply_crop` reads, or None when the window misses the image.

    A loader that decodes only part of an image (jpeg.window_decode) must decode at least these.
    """
    return _source(params, image_scale, image_scale, shape)[0]


def _prefilter_sigma(p, f):
    """Gaussian sigma (in source pixels) applied before bilinear sampling at `f` source pixels per
    output pixel: the antialiasing a shrink needs, plus the crop's blur folded in (f > 1).

    The antialiasing stands in for Pillow's antialiased bilinear (a triangle filter as wide as the
    step) at a quarter of its cost: sigma = 0.4 f - 0.05, fitted to Pillow's output for f in
    1.1-2 on a street scene and on edges plus noise (37-50 dB PSNR; Pillow's own bicubic is
    34-35 dB from its bilinear on the second), ramping from 0 at f = 1, where the two agree."""
    if f <= 1.0:
        return 0.0
    aa = min(3.9 * (f - 1.0), 0.4 * f - 0.05)
    return math.sqrt(aa * aa + (p.blur_sigma * f) ** 2)  # the output blur, in source pixels


@functools.lru_cache(maxsize=8)  # the loader asks twice per crop: for the decode, then the crop
def _source(p, sy, sx, shape):
    """(box, resize box, output range) of the inside part of the window; box None when empty.
    The index arrays returned are shared: callers must not write to them."""
    rows, j0, j1, step = _axis(p.y0, p.side, p.size, p.height)
    cols, i0, i1, _ = _axis(p.x0, p.side, p.size, p.width)
    if not (j1 > j0 and i1 > i0):
        return None, None, (rows, cols, j0, j1, i0, i1)
    # Source box of the inside part, in the decoded image's pixels.
    h, w = shape
    by0 = max(0.0, (p.y0 + j0 * step) * sy)
    by1 = min(float(h), (p.y0 + j1 * step) * sy)
    bx0 = max(0.0, (p.x0 + i0 * step) * sx)
    bx1 = min(float(w), (p.x0 + i1 * step) * sx)
    # The window plus the support of the resampling and of the Gaussian in front of it.
    f = step * max(sy, sx)
    pad = int(math.ceil(max(f, 1.0) + 3.0 * _prefilter_sigma(p, f))) + 1
    ya, yb = max(0, int(by0) - pad), min(h, int(math.ceil(by1)) + pad)
    xa, xb = max(0, int(bx0) - pad), min(w, int(math.ceil(bx1)) + pad)
    return (ya, yb, xa, xb), (by0, by1, bx0, bx1), (rows, cols, j0, j1, i0, i1)


def _resample(region, ty, tx, fy, fx, h_out, w_out, sigma):
    """Bilinear samples of `region` at the output pixel centres: output (j, i) reads region
    coordinate (ty + (j + 0.5) fy - 0.5, tx + (i + 0.5) fx - 0.5), after a Gaussian of `sigma`.

    cv2.resize does exactly this when the offsets ty, tx are whole pixels (the window starts
    inside the image, the usual case) at 4-5x the speed of cv2.warpAffine, which takes the rest.
    Both clamp at the region's edges, which the padding of `_source` keeps away from the window."""
    if sigma >= 0.3:  # below that a 3-tap kernel is the identity up to rounding
        region = cv2.GaussianBlur(region, (0, 0), sigma)
    if ty == int(ty) and tx == int(tx):
        ty, tx = int(ty), int(tx)
        # Just enough source for the output (the last sample's right neighbour included), so that
        # the output of cv2.resize, rounded from (source / f), holds h_out x w_out.
        hs = min(region.shape[0] - ty, int(math.ceil(h_out * fy)) + 2)
        ws = min(region.shape[1] - tx, int(math.ceil(w_out * fx)) + 2)
        out = cv2.resize(region[ty:ty + hs, tx:tx + ws], None, fx=1.0 / fx, fy=1.0 / fy,
                         interpolation=cv2.INTER_LINEAR)
        if out.shape[0] >= h_out and out.shape[1] >= w_out:
            return out[:h_out, :w_out]
    m = np.array([[fx, 0.0, tx + 0.5 * fx - 0.5], [0.0, fy, ty + 0.5 * fy - 0.5]])
    return cv2.warpAffine(region, m, (w_out, h_out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def apply_crop(image: np.ndarray, label: Optional[np.ndarray], params: CropParams,
               image_scale: Optional[float] = None, mean: Tuple[int, int, int] = MEAN,
               origin: Tuple[int, int] = (0, 0), shape: Optional[Tuple[int, int]] = None,
               out: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Cut, resize and augment one crop -> (image size x size x 3 uint8,
    label size x size uint8, or None when `label` is None).

    image: H' x W' x 3 uint8, the original or a reduced decode of it;
    image_scale is its size over the original size (default: measured from
    image.shape against params.height / width). A part of such a decode is
    given by `origin` (its top-left pixel in the decode) and `shape` (the
    whole decode's height and width); it must hold `source_box`. label:
    params.height x params.width uint8, or None.

    The image is sampled bilinearly at each output pixel's centre; a shrink is
    antialiased by a Gaussian in front (see `_prefilter_sigma`), into which the
    crop's blur is folded; an enlarged crop is blurred after. Jitter is one
    colour-matrix pass and the flip comes last: jitter and blur act on every
    pixel alike and the blur kernel is symmetric, so the order does not matter.
    Every step is one OpenCV pass over the window or the crop, never the image.

    out: (image, label) arrays to write the crop into (a batch's slots), saving a copy.
    """
    p = params
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected H x W x 3 uint8, got shape {image.shape} dtype {image.dtype}")
    if label is not None and label.shape != (p.height, p.width):
        raise ValueError(f"label: shape {label.shape} does not match the image size {p.height}x{p.width}")
    shape = tuple(shape) if shape is not None else image.shape[:2]
    if image_scale is None:
        sy, sx = shape[0] / p.height, shape[1] / p.width
    else:
        sy = sx = float(image_scale)
    box, resize_box, axes = _source(p, sy, sx, shape)

    out_image, out_label = out if out is not None else (None, None)
    if label is not None:
        out_label = crop_nearest(label, p, IGNORE, axes, out=out_label)
    inside, blurred = None, False
    if box is not None:
        inside, blurred = _window(image, p, box, resize_box, axes, origin)
    crop = _padded(inside, p.size, axes, mean)
    return _finish(crop, p, blurred, out_image), out_label


def _window(image, p, box, resize_box, axes, origin):
    """(the resampled inside part of the window, whether a prefilter blurred it) from `image`, a
    decode or its part at `origin`."""
    (ya, yb, xa, xb), (by0, by1, bx0, bx1), (oy, ox) = box, resize_box, origin
    if ya < oy or xa < ox or yb > oy + image.shape[0] or xb > ox + image.shape[1]:
        raise ValueError(f"image part at {origin} of {image.shape[:2]} does not hold the source box {box}")
    region = image[ya - oy:yb - oy, xa - ox:xb - ox]
    _, _, j0, j1, i0, i1 = axes
    h_out, w_out = j1 - j0, i1 - i0
    fx, fy = (bx1 - bx0) / w_out, (by1 - by0) / h_out  # source pixels per output pixel
    sigma = _prefilter_sigma(p, max(fx, fy))
    return _resample(region, by0 - ya, bx0 - xa, fy, fx, h_out, w_out, sigma), max(fx, fy) > 1.0


def _padded(inside, size, axes, mean):
    """The S x S crop: the inside part, on the mean colour where the window leaves the image."""
    _, _, j0, j1, i0, i1 = axes
    if inside is not None and (j0, i0, j1, i1) == (0, 0, size, size):
        return inside
    crop = np.empty((size, size, 3), np.uint8)
    crop[:] = np.array(mean, np.uint8)
    if inside is not None:
        crop[j0:j1, i0:i1] = inside
    return crop


def _finish(crop, p, blurred, out_image):
    """Jitter, the blur (unless the prefilter did it) and the flip, each one OpenCV pass; the
    last writes into `out_image` when there is one."""
    steps = []
    if (p.brightness, p.contrast, p.saturation) != (1.0, 1.0, 1.0):
        m = _jitter_matrix(crop, p.brightness, p.contrast, p.saturation)
        steps.append(lambda a, dst: cv2.transform(a, m, dst=dst))
    if p.blur_sigma > 0 and not blurred:
        steps.append(lambda a, dst: cv2.GaussianBlur(a, (0, 0), p.blur_sigma, dst=dst))
    if p.flip:
        steps.append(lambda a, dst: cv2.flip(a, 1, dst=dst))
    for k, step in enumerate(steps):
        crop = step(np.ascontiguousarray(crop), out_image if k == len(steps) - 1 else None)
    if out_image is None:
        return np.ascontiguousarray(crop)
    if not steps:
        out_image[...] = crop
    return out_image


def crop_nearest(array: np.ndarray, params: CropParams, fill: int, _axes: Optional[tuple] = None,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """The label geometry of a crop (window, scale, flip; nearest neighbour) applied to
    an H x W or K x H x W map of the original size: labels, top-k class ids and probabilities.
    Output pixels outside the image get `fill`. `out`: an array to write into (e.g. a batch slot)."""
    p = params
    S = p.size
    rows, cols, j0, j1, i0, i1 = _axes or _source(p, 1.0, 1.0, (p.height, p.width))[2]
    if out is None:
        out = np.empty(array.shape[:-2] + (S, S), dtype=array.dtype)
    if p.flip:  # mirrored: the columns gathered in reverse order, into the mirrored range
        cols, i0, i1 = cols[::-1], S - i1, S - i0
    if (j0, i0, j1, i1) != (0, 0, S, S):
        out[...] = fill
    if j1 > j0 and i1 > i0:
        # Rows, then columns, of the window's bounding box only: two cheap gathers (much faster
        # than np.ix_), the first of which would otherwise copy whole image rows.
        r0, c0 = rows[0], min(cols[0], cols[-1])
        box = array[..., r0:rows[-1] + 1, c0:max(cols[0], cols[-1]) + 1]
        # (mode="clip": the indices are in range, and numpy skips its buffered bounds check)
        box.take(rows - r0, axis=-2, mode="clip").take(cols - c0, axis=-1, out=out[..., j0:j1, i0:i1], mode="clip")
    return out


# ITU-R 601-2 luma, as Pillow's "L" conversion and ImageEnhance use.
_LUMA = (0.299, 0.587, 0.114)
_LUMA_ROW = np.array(_LUMA)


def _jitter_matrix(image, brightness, contrast, saturation):
    """One 3x4 colour matrix doing ImageEnhance's Color (saturation), then
    Brightness, then Contrast (around the mean luma): all three are affine in
    RGB, so a single pass replaces three blends."""
    r, g, b = cv2.mean(image)[:3]
    mean = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    # saturation keeps the luma, so the mean after brightness is brightness * mean
    k = contrast * brightness
    offset = (1.0 - contrast) * brightness * mean
    m = np.empty((3, 4))
    m[:, :3] = _LUMA_ROW * (k * (1.0 - saturation))
    m[[0, 1, 2], [0, 1, 2]] += k * saturation
    m[:, 3] = offset
    return m


def random_crop(image: np.ndarray, label: Optional[np.ndarray], size: int, rng: np.random.Generator,
                center: Optional[Tuple[float, float]] = None, mean: Tuple[int, int, int] = MEAN,
                aug: Augment = Augment()) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """crop_params + apply_crop on a full-size image."""
    height, width = image.shape[:2]
    params = crop_params(height, width, size, rng, center=center, aug=aug)
    return apply_crop(image, label, params, mean=mean)
