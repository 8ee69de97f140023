"""Lossless transcoding (csst_data.jpeg.lossless) checked against independent decoders and libjpeg."""

import io
import math

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from csst_data.jpeg.structure import UnsupportedJpeg, can_splice, choose_restart_interval, parse
from csst_data.jpeg.window import _decode, window_decode
from csst_data.jpeg.lossless import transcode
from csst_demo.synth import render_scene

SIZES = [(37, 53), (64, 96), (120, 200), (257, 511)]


def scene(h, w, seed=0):
    # render_scene needs a plain aspect ratio and at least 16 pixels: crop a larger one.
    img = render_scene(max(h, 64), max(w, 64), np.random.default_rng(seed))[0]
    return np.ascontiguousarray(img[:h, :w])


def noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pil_jpeg(img, mode="RGB", **kw):
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def decodes(data):
    """The pixels of every decoder under test."""
    return {
        "pillow": np.asarray(Image.open(io.BytesIO(data))),
        "simplejpeg": simplejpeg.decode_jpeg(data),
        "simplejpeg-fast": simplejpeg.decode_jpeg(data, fastdct=True, fastupsample=True),
        "opencv": cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED),
    }


def assert_same_pixels(original, out):
    for (name, a), b in zip(decodes(original).items(), decodes(out).values()):
        assert a.shape == b.shape and np.array_equal(a, b), name


def markers(data):
    """(marker, offset) of every marker from SOI on, entropy-coded bytes skipped (FF00 is data)."""
    arr = np.frombuffer(data, np.uint8)
    ff = np.flatnonzero(arr[:-1] == 0xFF)
    nxt = arr[ff + 1]
    keep = (nxt != 0) & (nxt != 0xFF)
    return list(zip(nxt[keep].tolist(), ff[keep].tolist()))


def restart_markers(data):
    info = parse(data)
    return [m - 0xD0 for m, pos in markers(data) if pos >= info.scan and 0xD0 <= m <= 0xD7]


def scan_mcus(info):
    if len(info.components) == 1:    # non-interleaved: the block grid of the component
        return math.ceil(info.width / 8) * math.ceil(info.height / 8)
    return info.mcus_x * info.mcus_y


# ---------------------------------------------------------------- identical pixels

@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("mode,subsampling", [("RGB", 0), ("RGB", 1), ("RGB", 2), ("L", 0)])
def test_pixels_identical(h, w, mode, subsampling):
    for img in (scene(h, w, seed=h), noise(h, w, seed=w)):
        for quality in (50, 95):
            for rst in (0, 1, 5):
                data = pil_jpeg(img, mode, quality=quality, subsampling=subsampling, restart_marker_blocks=rst)
                assert_same_pixels(data, transcode(data))


@pytest.mark.parametrize("h,w", SIZES)
def test_other_encoders(h, w):
    img = scene(h, w, seed=1)
    for sub in ("444", "422", "420", "411"):
        data = simplejpeg.encode_jpeg(img, 85, colorsubsampling=sub)
        assert_same_pixels(data, transcode(data))
    grey = np.ascontiguousarray(img[..., :1])
    data = simplejpeg.encode_jpeg(grey, 85, colorspace="GRAY")
    assert_same_pixels(data, transcode(data))
    for factor in (cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
                   cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440):
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor,
                                             cv2.IMWRITE_JPEG_RST_INTERVAL, 3])
        assert ok
        data = enc.tobytes()
        out = transcode(data)
        assert_same_pixels(data, out)
        assert can_splice(parse(out))


def test_cmyk():
    data = pil_jpeg(scene(64, 96), "CMYK", quality=80)
    out = transcode(data)
    assert len(parse(out).components) == 4
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(io.BytesIO(out))))


def test_single_component_with_sampling_factors():
    # A greyscale frame may declare 2x2 sampling; its scan is still one block per MCU.
    data = bytearray(pil_jpeg(scene(70, 90), "L", quality=80))
    data[parse(bytes(data)).sof + 11] = 0x22
    data = bytes(data)
    out = transcode(data)
    assert_same_pixels(data, out)
    k = parse(out).restart_interval
    assert k == choose_restart_interval(90, 8)
    assert len(restart_markers(out)) == math.ceil(12 * 9 / k) - 1


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize("mode,subsampling,h,w", [("RGB", 2, 120, 200), ("RGB", 1, 37, 53), ("RGB", 0, 64, 96),
                                                  ("L", 0, 257, 511)])
def test_restart_markers(mode, subsampling, h, w):
    data = pil_jpeg(scene(h, w), mode, quality=90, subsampling=subsampling, restart_marker_blocks=2)
    info = parse(data)
    for requested in (None, 1, 3, 0):
        out = transcode(data, requested)
        got = parse(out)
        k = choose_restart_interval(info.width, info.mcu_width) if requested is None else requested
        assert got.restart_interval == k
        intervals = math.ceil(scan_mcus(info) / k) if k else 1
        assert restart_markers(out) == [i % 8 for i in range(intervals - 1)]
        if requested is None:
            assert can_splice(got)
        assert out.endswith(b"\xff\xd9")
        assert_same_pixels(data, out)


def test_segments_kept_in_order():
    icc = b"\0" * 128 + b"fake icc profile"
    exif = Image.Exif()
    exif[0x010F] = "csst"
    data = pil_jpeg(scene(64, 96), quality=90, icc_profile=icc, exif=exif.tobytes(), comment=b"hello")
    out = transcode(data)
    segs_in, segs_out = (
        [bytes(d[a:b]) for m, a, b in parse(d).segments if m not in (0xC4, 0xDD)] for d in (data, out))
    assert segs_in == segs_out
    assert {0xE1, 0xE2, 0xFE} <= {m for m, a, b in parse(out).segments}
    info_in, info_out = parse(data), parse(out)
    assert data[info_in.sos:info_in.scan] == out[info_out.sos:info_out.scan]


@pytest.mark.parametrize("mode,subsampling", [("RGB", 2), ("RGB", 0), ("L", 0)])
@pytest.mark.parametrize("k", [1, 4])
def test_same_entropy_data_as_libjpeg_optimize(mode, subsampling, k):
    # Pillow's libjpeg with optimize=True codes the same coefficients with
    # jpeg_gen_optimal_table: the entropy-coded bytes must be identical.
    img = scene(120, 200, seed=7)
    plain = pil_jpeg(img, mode, quality=85, subsampling=subsampling, restart_marker_blocks=k)
    optimised = pil_jpeg(img, mode, quality=85, subsampling=subsampling, restart_marker_blocks=k, optimize=True)
    out = transcode(plain, k)
    assert out[parse(out).scan:] == optimised[parse(optimised).scan:]


def test_idempotent():
    data = pil_jpeg(scene(120, 200), quality=90, subsampling=2)
    out = transcode(data)
    assert transcode(out) == out


# ---------------------------------------------------------------- size

def test_size_ratio():
    data = pil_jpeg(render_scene(512, 1024, np.random.default_rng(11))[0], quality=90, subsampling=2)
    out = transcode(data)
    ratio = len(out) / len(data)
    print(f"512x1024 q90 4:2:0: {len(data)} -> {len(out)} bytes, ratio {ratio:.4f}")
    assert ratio <= 1.03


# ---------------------------------------------------------------- errors

def test_progressive_unsupported():
    data = pil_jpeg(scene(64, 96), quality=90, progressive=True)
    with pytest.raises(UnsupportedJpeg):
        transcode(data)


def test_corrupt_input():
    data = pil_jpeg(scene(120, 200), quality=90, subsampling=2, restart_marker_blocks=2)
    scan = parse(data).scan
    for cut in (scan + 10, (scan + len(data)) // 2, len(data) - 2):   # mid-interval, mid-scan, no EOI
        with pytest.raises(ValueError):
            transcode(data[:cut])
    # One RST marker less: an interval runs into the next one's data.
    rst = next(pos for m, pos in markers(data) if pos > scan and m == 0xD3)
    with pytest.raises(ValueError):
        transcode(data[:rst] + data[rst + 2:])
    # Bad Huffman codes: the entropy-coded data replaced by all-ones bytes.
    junk = data[:scan] + b"\xff\x00" * 64 + data[-2:]
    with pytest.raises(ValueError):
        transcode(junk)


# ---------------------------------------------------------------- splicing

@pytest.mark.parametrize("m", [8, 4])
def test_windows_match_full_decode(m):
    rng = np.random.default_rng(m)
    out = transcode(pil_jpeg(scene(257, 511, seed=3), quality=90, subsampling=2))
    full = _decode(out, m)
    height, width = full.shape[:2]
    spliced = 0
    for _ in range(8):
        y0, x0 = int(rng.integers(0, height - 1)), int(rng.integers(0, width - 1))
        y1, x1 = int(rng.integers(y0 + 1, height + 1)), int(rng.integers(x0 + 1, width + 1))
        px, (top, left) = window_decode(out, y0, y1, x0, x1, m)
        assert top <= y0 and left <= x0 and top + px.shape[0] >= y1 and left + px.shape[1] >= x1
        assert np.array_equal(px, full[top:top + px.shape[0], left:left + px.shape[1]])
        spliced += px.shape != full.shape
    assert spliced
