import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy import ndimage

from csst_data import IGNORE
from csst_data.loader.crops import MEAN, Augment, CropParams, apply_crop, crop_params, decode_min_size, random_crop

# Well separated colours: class c <-> LUT[c], so the image encodes the label.
LUT = np.array([[(37 * c) % 256, (91 * c + 40) % 256, (151 * c + 80) % 256] for c in range(16)], np.uint8)
NO_COLOUR = dict(jitter=0, blur_p=0)


def blocks(rng, height, width, block=8, classes=10):
    small = rng.integers(0, classes, (-(-height // block), -(-width // block)), dtype=np.uint8)
    return np.kron(small, np.ones((block, block), np.uint8))[:height, :width].copy()


def discs(rng, height=300, width=500, n=25):
    label = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for i in range(n):
        r = rng.integers(4, 30)
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1 + i % 9
    return label


def centroid_pixel(params, cy, cx):
    """Output pixel (row, col) that shows the source pixel holding (cy, cx)."""
    step = params.side / params.size
    j = int((np.floor(cy + 0.5) + 0.5 - params.y0) / step)
    i = int((np.floor(cx + 0.5) + 0.5 - params.x0) / step)
    return j, (params.size - 1 - i if params.flip else i)


@pytest.mark.parametrize("size", [64, 160, 640])
def test_centroid_crop_contains_its_class(size):
    rng = np.random.default_rng(size)
    label = discs(rng)
    image = LUT[label]
    checked = 0
    for c in range(1, 10):
        # Independent oracle for the components and their centroids.
        comps, n = ndimage.label(label == c)
        for cy, cx in ndimage.center_of_mass(label == c, comps, range(1, n + 1)):
            for _ in range(3):
                params = crop_params(*label.shape, size, rng, center=(cy, cx))
                assert 0.5 * size <= params.side <= 2.0 * size
                out_image, out_label = apply_crop(image, label, params)
                assert out_image.shape == (size, size, 3) and out_label.shape == (size, size)
                j, i = centroid_pixel(params, cy, cx)
                assert out_label[j, i] == c
                checked += 1
    assert checked > 30


def test_centroid_position_is_spread_inside_crop():
    rng = np.random.default_rng(0)
    params = [crop_params(2000, 2000, 100, rng, center=(1000.0, 1000.0), aug=Augment(scale_range=None)) for _ in range(400)]
    offsets = np.array([1000 - p.y0 for p in params])
    assert offsets.min() >= 0 and offsets.max() <= 99
    assert offsets.min() < 10 and offsets.max() > 90  # uniform over the crop, not centred
    # Near the border the window is clamped into the image and keeps the centroid.
    for cx in (398.0, 399.0, 399.4):
        for _ in range(100):
            p = crop_params(300, 400, 128, rng, center=(2.0, cx))
            assert 0 <= p.y0 <= 2 and p.y0 + p.side <= 300
            assert p.x0 <= np.floor(cx + 0.5) + 0.5 < p.x0 + p.side <= 401  # overshoot < 1 px
            j, i = centroid_pixel(p, 2.0, cx)
            assert 0 <= j < p.size and 0 <= i < p.size


def aligned(out_image, out_label, mean=MEAN, tol=2):
    """Image and label agree where the label is constant over a 5x5 neighbourhood."""
    lo = ndimage.minimum_filter(out_label, 5, mode="nearest")
    hi = ndimage.maximum_filter(out_label, 5, mode="nearest")
    inner = (lo == hi)[2:-2, 2:-2]
    lab = out_label[2:-2, 2:-2][inner]
    got = out_image[2:-2, 2:-2][inner].astype(int)
    want = np.where(lab[:, None] == IGNORE, np.array(mean), LUT[np.minimum(lab, 15)].astype(int))
    assert inner.mean() > 0.2
    return np.abs(got - want).max() <= tol


@pytest.mark.parametrize("seed", range(6))
def test_scale_and_flip_keep_image_and_label_aligned(seed):
    rng = np.random.default_rng(seed)
    label = blocks(rng, 200, 330)
    image = LUT[label]
    for size in (96, 256):
        out_image, out_label = random_crop(image, label, size, rng, aug=Augment(**NO_COLOUR))
        assert aligned(out_image, out_label)
    # Flip mirrors image and label together.
    params = crop_params(200, 330, 128, rng, aug=Augment(flip=True, **NO_COLOUR))
    flipped = apply_crop(image, label, dataclasses.replace(params, flip=True))
    plain = apply_crop(image, label, dataclasses.replace(params, flip=False))
    np.testing.assert_array_equal(flipped[0], plain[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], plain[1][:, ::-1])


def test_scale_one_is_an_exact_slice():
    rng = np.random.default_rng(1)
    label = blocks(rng, 120, 150, block=3)
    image = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    for _ in range(10):
        p = crop_params(120, 150, 64, rng, aug=Augment(scale_range=None, flip=False, **NO_COLOUR))
        out_image, out_label = apply_crop(image, label, p)
        np.testing.assert_array_equal(out_image, image[p.y0:p.y0 + 64, p.x0:p.x0 + 64])
        np.testing.assert_array_equal(out_label, label[p.y0:p.y0 + 64, p.x0:p.x0 + 64])


def test_reduced_decode_stays_aligned():
    rng = np.random.default_rng(2)
    label = blocks(rng, 256, 512, block=32)
    half = LUT[label[::2, ::2]]  # what a 1/2 DCT decode of LUT[label] shows
    for _ in range(10):
        params = crop_params(256, 512, 64, rng, aug=Augment(scale_range=(0.25, 0.5), **NO_COLOUR))
        mh, mw = decode_min_size(params)
        assert mh <= 128 + 1 and mw <= 256 + 1  # a half-size decode is enough
        out_image, out_label = apply_crop(half, label, params, image_scale=0.5)
        assert aligned(out_image, out_label, tol=3)
        # image_scale is inferred from the shapes by default.
        np.testing.assert_array_equal(apply_crop(half, label, params)[0], out_image)


def test_small_image_is_padded_with_ignore_and_mean():
    rng = np.random.default_rng(3)
    label = blocks(rng, 50, 80, block=5)
    image = LUT[label]
    out_image, out_label = random_crop(image, label, 128, rng, aug=Augment(scale_range=None, flip=False, **NO_COLOUR))
    assert (out_label == IGNORE).sum() == 128 * 128 - 50 * 80
    assert (out_image[out_label == IGNORE] == np.array(MEAN, np.uint8)).all()
    assert aligned(out_image, out_label, tol=0)
    # Centroid crops of a small image cover the whole image too.
    p = crop_params(50, 80, 128, rng, center=(25.0, 40.0), aug=Augment(scale_range=None))
    assert -78 <= p.y0 <= 0 and -48 <= p.x0 <= 0


def test_same_rng_same_crop():
    label = blocks(np.random.default_rng(0), 200, 300)
    image = LUT[label]
    a = random_crop(image, label, 96, np.random.default_rng(5), center=(100.0, 150.0))
    b = random_crop(image, label, 96, np.random.default_rng(5), center=(100.0, 150.0))
    c = random_crop(image, label, 96, np.random.default_rng(6), center=(100.0, 150.0))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    # NaN centroid (a plan's "none") means a random crop.
    p = crop_params(200, 300, 96, np.random.default_rng(5), center=(np.nan, np.nan))
    assert isinstance(p, CropParams)


def test_colour_jitter_matches_pillow_enhance():
    rng = np.random.default_rng(4)
    image = ndimage.uniform_filter(rng.integers(0, 256, (64, 64, 3)).astype(float), (9, 9, 1)).astype(np.uint8)
    label = np.zeros((64, 64), np.uint8)
    x = image.astype(float)
    gray = x @ [0.299, 0.587, 0.114]
    for b, c, s in [(1.1, 0.9, 1.05), (0.9, 1.1, 0.9)]:
        params = CropParams(64, 64, 0, 0, 64.0, 64, brightness=b, contrast=c, saturation=s)
        got, _ = apply_crop(image, label, params)
        got = got.astype(int)
        # Float oracle: saturation, brightness, contrast around the mean grey.
        sat = gray[..., None] + s * (x - gray[..., None])
        want = np.clip(c * b * sat + (1 - c) * b * gray.mean(), 0, 255)
        assert np.abs(got - want).max() <= 1.5
        # Pillow's three ImageEnhance passes agree up to their own rounding.
        im = ImageEnhance.Color(Image.fromarray(image)).enhance(s)
        im = ImageEnhance.Brightness(im).enhance(b)
        pillow = np.asarray(ImageEnhance.Contrast(im).enhance(c)).astype(int)
        assert np.abs(got - pillow).max() <= 3
        assert np.abs(got - image).max() > 5


def test_blur_is_gaussian():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    params = CropParams(80, 80, 0, 0, 80.0, 80, blur_sigma=1.0)
    got, _ = apply_crop(image, None, params)
    want = ndimage.gaussian_filter(image.astype(float), (1.0, 1.0, 0), mode="mirror")
    assert np.abs(got[4:-4, 4:-4] - want[4:-4, 4:-4]).mean() < 2.0
    assert np.abs(got.astype(int) - image).mean() > 10


def test_augmentation_draws():
    rng = np.random.default_rng(6)
    ps = [crop_params(512, 1024, 256, rng) for _ in range(400)]
    scales = np.array([256 / p.side for p in ps])
    assert scales.min() >= 0.5 and scales.max() <= 2.0 and scales.max() - scales.min() > 1.2
    assert 0.4 < np.mean([p.flip for p in ps]) < 0.6
    assert 0.4 < np.mean([p.blur_sigma > 0 for p in ps]) < 0.6
    assert all(0.15 <= p.blur_sigma <= 1.15 for p in ps if p.blur_sigma)
    assert all(0.9 <= v <= 1.1 for p in ps for v in (p.brightness, p.contrast, p.saturation))
    plain = crop_params(512, 1024, 256, rng, aug=Augment(scale_range=None, flip=False, jitter=0, blur_p=0))
    assert (plain.side, plain.flip, plain.brightness, plain.blur_sigma) == (256.0, False, 1.0, 0.0)
    for _ in range(20):
        p = crop_params(512, 1024, 256, rng, aug=Augment(colour=False))
        assert (p.brightness, p.contrast, p.saturation, p.blur_sigma) == (1.0, 1.0, 1.0, 0.0)


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="outside the 100x100 image"):
        crop_params(100, 100, 64, rng, center=(150.0, 3.0))
    with pytest.raises(ValueError, match="crop size"):
        crop_params(100, 100, 0, rng)
    with pytest.raises(ValueError, match="scale_range"):
        crop_params(100, 100, 64, rng, aug=Augment(scale_range=(2.0, 0.5)))
    params = crop_params(100, 100, 64, rng)
    with pytest.raises(ValueError, match="label: shape"):
        apply_crop(np.zeros((100, 100, 3), np.uint8), np.zeros((90, 100), np.uint8), params)
    with pytest.raises(ValueError, match="image: expected"):
        apply_crop(np.zeros((100, 100), np.uint8), None, params)


def psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-12))


def pillow_crop(image, p):
    """Oracle: Pillow's BILINEAR resize of the inside part of the window (when shrinking, a triangle
    filter as wide as the step), pasted on the mean colour."""
    step = p.side / p.size
    h, w = image.shape[:2]
    inside = lambda start, extent: [j for j in range(p.size) if 0 <= start + (j + 0.5) * step < extent]
    rows, cols = inside(p.y0, h), inside(p.x0, w)
    j0, j1, i0, i1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = (max(0.0, p.x0 + i0 * step), max(0.0, p.y0 + j0 * step), min(w, p.x0 + i1 * step), min(h, p.y0 + j1 * step))
    canvas = Image.new("RGB", (p.size, p.size), MEAN)
    canvas.paste(Image.fromarray(image).resize((i1 - i0, j1 - j0), Image.BILINEAR, box=box), (i0, j0))
    return np.asarray(canvas)


@pytest.mark.parametrize("scale", [0.55, 0.7, 0.9, 1.0, 1.15, 1.6, 2.0])
def test_resampling_matches_pillows_antialiased_bilinear(scale):
    rng = np.random.default_rng(int(scale * 100))
    label = blocks(rng, 300, 420, block=7)
    # Edges and texture: blocks of colour plus smoothed noise.
    image = np.clip(LUT[label].astype(float) + ndimage.uniform_filter(rng.normal(0, 40, (300, 420, 3)), (3, 3, 0)),
                    0, 255).astype(np.uint8)
    size = 96
    side = size / scale
    for y0, x0 in ((10, 20), (300 - int(side) - 1, 420 - int(side) - 1), (-13, 5)):  # the last: partly outside
        p = CropParams(300, 420, y0, x0, side, size)
        got, _ = apply_crop(image, None, p)
        want = pillow_crop(image, p)
        # Closer than Pillow's own bicubic is to its bilinear (34-35 dB on this image); a shrink
        # without antialiasing scores 26 dB at scale 0.55.
        assert psnr(got, want) > 36, (scale, y0, x0, psnr(got, want))
        assert got.dtype == np.uint8 and got.shape == (size, size, 3)
        if y0 < 0:  # rows above the image are the mean colour
            assert (got[:int(-y0 / (side / size))] == np.array(MEAN, np.uint8)).all()


def test_shrinking_blur_is_folded_into_the_antialiasing():
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (240, 240, 3), dtype=np.uint8)
    p = CropParams(240, 240, 20, 30, 150.0, 80, blur_sigma=1.0)  # shrinks 1.875x
    got, _ = apply_crop(image, None, p)
    sharp, _ = apply_crop(image, None, dataclasses.replace(p, blur_sigma=0.0))
    # Oracle: Pillow's antialiased resize, then the Gaussian at output resolution.
    want = ndimage.gaussian_filter(pillow_crop(image, p).astype(float), (1.0, 1.0, 0), mode="mirror")
    assert psnr(got[4:-4, 4:-4], want[4:-4, 4:-4]) > 36
    assert psnr(got, sharp) < 30  # the blur is there


def test_crops_written_into_given_arrays_equal_returned_ones():
    rng = np.random.default_rng(9)
    label = blocks(rng, 200, 330)
    image = LUT[label]
    for _ in range(40):
        p = crop_params(200, 330, 96, rng, aug=Augment(scale_range=(0.3, 2.0)))  # some windows run past the image
        want = apply_crop(image, label, p)
        slots = (np.full((96, 96, 3), 7, np.uint8), np.full((96, 96), 7, np.uint8))
        got = apply_crop(image, label, p, out=slots)
        assert got[0] is slots[0] and got[1] is slots[1]
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
