"""Spliced window decoding: pixel-identical to decoding the whole JPEG and cropping."""

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from csst_data.loader import crops
from csst_data import jpeg
from csst_data.jpeg import restart, window
from csst_demo import synth
from csst_data.store.codecs import decode_image
from csst_data.loader.crop_loader import decode_window


def encode(image, subsampling=2, quality=90, restart=4):
    buf = io.BytesIO()
    kw = {"restart_marker_blocks": restart} if restart else {}
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=subsampling, **kw)
    return buf.getvalue()


def scene(h, w, seed=0):
    return synth.render_scene(h, w, np.random.default_rng(seed))[0]


# Sizes that are not multiples of the MCU, with restart intervals that divide the MCUs of a row.
KINDS = [((120, 200), 2), ((121, 203), 2), ((64, 96), 0), ((77, 45), 0), ((96, 160), 1)]


@pytest.fixture(scope="module")
def jpegs():
    out = []
    for (h, w), sub in KINDS:
        mcu = 8 if sub == 0 else 16
        k = jpeg.choose_restart_interval(w, mcu if sub != 1 else 16)
        out.append(encode(scene(h, w, h), subsampling=sub, restart=k))
    # The same JPEGs with the restart index that csst adds to those it writes.
    out += [jpeg.with_restart_index(d) for d in out if jpeg.can_splice(jpeg.parse(d))]
    grey = scene(90, 131, 7)[..., 1].copy()
    buf = io.BytesIO()
    Image.fromarray(grey).convert("L").save(buf, format="JPEG", quality=85,
                                              restart_marker_blocks=jpeg.choose_restart_interval(131, 8))
    out.append(buf.getvalue())
    return out


def test_restart_jpegs_are_ordinary_jpegs(jpegs):
    import cv2
    import simplejpeg

    for data in jpegs:
        info = jpeg.parse(data)
        assert info.restart_interval > 0 and jpeg.can_splice(info)
        assert len(jpeg.restart_offsets(data, info)) == info.mcus_y * info.mcus_x // info.restart_interval - 1
        pil = np.asarray(Image.open(io.BytesIO(data)))
        assert pil.shape[:2] == (info.height, info.width)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == pil.shape[:2]
        assert simplejpeg.decode_jpeg(data).shape[:2] == pil.shape[:2]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_window_decode_equals_full_decode_then_crop(jpegs, data):
    src = data.draw(st.sampled_from(jpegs))
    m = data.draw(st.sampled_from([8, 7, 6, 5, 4, 3, 2, 1]))
    info = jpeg.parse(src)
    full = window._decode(src, m)
    H, W = full.shape[:2]
    y0 = data.draw(st.integers(0, H - 1))
    y1 = data.draw(st.integers(y0 + 1, H))
    x0 = data.draw(st.integers(0, W - 1))
    x1 = data.draw(st.integers(x0 + 1, W))
    px, (top, left) = jpeg.window_decode(src, y0, y1, x0, x1, m, info)
    assert top <= y0 and left <= x0 and top + px.shape[0] >= y1 and left + px.shape[1] >= x1
    assert np.array_equal(px, full[top:top + px.shape[0], left:left + px.shape[1]])


def full_decode(data, params, key=None):
    """The pre-splicing loader: the whole JPEG, at the DCT scale the window allows."""
    if max(params.side, 1.0) >= 2 * params.size:
        mh, mw = crops.decode_min_size(params)
        image = decode_image(data, min_height=mh, min_width=mw)
    else:
        image = decode_image(data)
    return image, image.shape[0] / params.height, (0, 0), image.shape[:2]


def test_loader_crops_equal_full_decode_crops(jpegs):
    rng = np.random.default_rng(0)
    for src in jpegs[:-1]:
        info = jpeg.parse(src)
        label = np.zeros((info.height, info.width), np.uint8)
        for _ in range(60):
            size = int(rng.choice([16, 32, 48, 64]))
            params = crops.crop_params(info.height, info.width, size, rng, aug=crops.Augment(scale_range=(0.25, 2.0)))
            img, scale, origin, shape = decode_window(src, params)
            a = crops.apply_crop(img, label, params, image_scale=scale, origin=origin, shape=shape)
            img, scale, origin, shape = full_decode(src, params)
            b = crops.apply_crop(img, label, params, image_scale=scale, origin=origin, shape=shape)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_jpegs_without_markers_and_pngs_fall_back_to_whole_decodes():
    image = scene(64, 96)
    plain = encode(image, restart=0)
    assert not jpeg.can_splice(jpeg.parse(plain))
    params = crops.crop_params(64, 96, 32, np.random.default_rng(1))
    px, scale, origin, shape = decode_window(plain, params)
    assert origin == (0, 0) and px.shape[:2] == (64, 96) == tuple(shape)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    px, scale, origin, shape = decode_window(buf.getvalue(), params)
    assert np.array_equal(px, image) and scale == 1.0
    with pytest.raises(jpeg.UnsupportedJpeg):
        prog = io.BytesIO()
        Image.fromarray(image).save(prog, format="JPEG", progressive=True)
        jpeg.parse(prog.getvalue())
    assert math.isclose(decode_window(prog.getvalue(), params)[1], 1.0)  # progressive: decoded whole


def test_restart_index_is_invisible_to_decoders_and_matches_the_scan(jpegs):
    import cv2
    import simplejpeg

    plain = [d for d in jpegs if jpeg.can_splice(jpeg.parse(d)) and all(m != 0xE9 for m, _, _ in jpeg.parse(d).segments)]
    assert len(plain) == 6
    for data in plain:
        indexed = jpeg.with_restart_index(data)
        info, new = jpeg.parse(data), jpeg.parse(indexed)
        count = info.mcus_y * info.mcus_x // info.restart_interval
        assert len(indexed) - len(data) == 2 + 2 + len(restart._INDEX_ID) + 11 + 2 * count
        assert jpeg.with_restart_index(indexed) == indexed  # added once
        for decode in (lambda d: np.asarray(Image.open(io.BytesIO(d))),
                       lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR),
                       lambda d: simplejpeg.decode_jpeg(d)):
            assert np.array_equal(decode(indexed), decode(data))
        # The index gives the intervals that a scan finds (shifted by the segments' bytes).
        assert restart.index_lengths(indexed, new) is not None
        starts, stops = jpeg.restart_intervals(indexed, new)
        offsets, end = jpeg.scan_markers(indexed, new)
        assert np.array_equal(stops, np.append(offsets, end)) and starts[0] == new.scan
        assert np.array_equal(starts[1:], offsets + 2)


def test_restart_index_spans_segments_and_a_stale_one_is_ignored():
    grey = scene(1456, 1456, 3)[..., 0].copy()  # 182 x 182 MCUs of 8x8, one per interval: two segments
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=80, restart_marker_blocks=1)
    data = buf.getvalue()
    indexed = jpeg.with_restart_index(data)
    info = jpeg.parse(indexed)
    assert sum(1 for m, a, _ in info.segments if m == 0xE9) == 2
    assert np.array_equal(jpeg.restart_intervals(indexed, info)[1], np.append(*jpeg.scan_markers(indexed, info)))
    # The index of one encode copied into another (as a tool that re-codes the scan but keeps APP
    # segments leaves it): it does not match, so the markers are found by scanning.
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="JPEG", quality=60, restart_marker_blocks=1)
    other = buf.getvalue()
    o = jpeg.parse(other)
    stale = other[:o.sos] + indexed[info.segments[-2][1]:info.sos] + other[o.sos:]
    s = jpeg.parse(stale)
    assert restart.index_lengths(stale, s) is not None  # well formed, but for another scan
    starts, stops = jpeg.restart_intervals(stale, s)
    assert np.array_equal(stops, np.append(*jpeg.scan_markers(stale, s)))
    full = window._decode(stale, 8)
    px, (top, left) = jpeg.window_decode(stale, 700, 760, 300, 420, 8, s)
    assert np.array_equal(px, full[top:top + px.shape[0], left:left + px.shape[1]])


def test_a_stale_restart_index_is_replaced_and_transcoding_drops_it():
    from csst_data.jpeg.lossless import transcode

    image = scene(64, 128, 4)
    a = jpeg.with_restart_index(encode(image, quality=90, restart=2))
    b = encode(image, quality=70, restart=2)
    pa, pb = jpeg.parse(a), jpeg.parse(b)
    idx = b"".join(a[s:e] for m, s, e in pa.segments if m == 0xE9)
    stale = b[:pb.sos] + idx + b[pb.sos:]
    fixed = jpeg.with_restart_index(stale)
    assert fixed != stale and jpeg.with_restart_index(fixed) == fixed
    f = jpeg.parse(fixed)
    assert sum(1 for m, _, _ in f.segments if m == 0xE9) == 1
    assert np.array_equal(restart._index_intervals(fixed, f)[1], np.append(*jpeg.scan_markers(fixed, f)))
    # Re-coding the scan (here with another restart interval) leaves no index behind.
    out = transcode(a, restart_interval=1)
    assert not any(jpeg.is_restart_index(out, seg) for seg in jpeg.parse(out).segments)
    assert np.array_equal(window._decode(out, 8), window._decode(a, 8))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_band_decode_equals_the_single_call_decode(data):
    """Issue #26: bands of MCU rows decoded apart (on threads) and stacked equal one decode, over sizes,
    sampling factors (4:4:4, 4:2:2, 4:2:0), greyscale and restart intervals."""
    h, w = data.draw(st.integers(32, 160)), data.draw(st.integers(32, 200))  # the scenes need 32 x 32
    sub = data.draw(st.sampled_from([0, 1, 2, "grey"]))
    image = scene(h, w, data.draw(st.integers(0, 5)))
    mcu_w = 8 if sub in (0, "grey") else 16
    mcus = math.ceil(w / mcu_w)
    k = data.draw(st.sampled_from([d for d in range(1, min(mcus, 6) + 1) if mcus % d == 0]))
    buf = io.BytesIO()
    if sub == "grey":
        Image.fromarray(image[..., 1].copy()).convert("L").save(buf, format="JPEG", quality=85,
                                                                 restart_marker_blocks=k)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=90, subsampling=sub, restart_marker_blocks=k)
    src = buf.getvalue()
    if data.draw(st.booleans()):
        src = jpeg.with_restart_index(src)
    threads = data.draw(st.integers(1, 5))
    assert np.array_equal(jpeg.band_decode(src, threads), decode_image(src))


def test_band_decode_of_a_jpeg_without_markers_is_one_call():
    plain = encode(scene(64, 96), restart=0)
    calls = []

    def counting(data, m):
        calls.append(len(data))
        return window._decode(data, m)

    assert np.array_equal(jpeg.band_decode(plain, 4, decode=counting), decode_image(plain))
    assert calls == [len(plain)]
    marked = encode(scene(64, 96), restart=jpeg.choose_restart_interval(96, 16))
    calls.clear()
    jpeg.band_decode(marked, 3, decode=counting)
    assert len(calls) == min(window.BANDS_PER_THREAD * 3, jpeg.parse(marked).mcus_y) > 1


def test_whole_decodes_in_eval_and_label_equal_decode_image():
    from csst_train.images import decode_whole

    image = scene(96, 160)
    marked = encode(image, restart=jpeg.choose_restart_interval(160, 16))
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    for data in (marked, jpeg.with_restart_index(marked), encode(image, restart=0), png.getvalue()):
        for threads in (1, 2, 3):
            assert np.array_equal(decode_whole(data, threads=threads), decode_image(data))


def test_splice_kernel_equals_the_array_splice(jpegs):
    """The one-pass kernel that splices from the restart index gives the bytes of the array version,
    which finds the intervals by `restart_intervals`; a stale index makes it decline (-1)."""
    rng = np.random.default_rng(3)
    indexed = [d for d in jpegs if restart.index_lengths(d, jpeg.parse(d)) is not None]
    assert indexed
    for data in indexed:
        info = jpeg.parse(data)
        per_row = info.mcus_x // info.restart_interval
        lengths = restart.index_lengths(data, info)
        for _ in range(40):
            row0, row1 = sorted(rng.choice(info.mcus_y + 1, 2, replace=False))
            col0, col1 = sorted(rng.choice(per_row + 1, 2, replace=False))
            out = np.empty(len(data), np.uint8)
            n = window._splice_scan(np.frombuffer(data, np.uint8), lengths, info.scan, per_row, row0, row1, col0,
                                    col1, out)
            assert bytes(out[:n]) == bytes(window._spliced_scan(data, info, per_row, row0, row1, col0, col1))
        # An index whose first interval is a byte off puts every marker elsewhere: the kernel declines.
        shifted = lengths.copy()
        shifted[0] += 1
        out = np.empty(len(data), np.uint8)
        assert window._splice_scan(np.frombuffer(data, np.uint8), shifted, info.scan, per_row, 0, info.mcus_y, 0,
                                   per_row, out) == -1
