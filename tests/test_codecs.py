import io

import numpy as np
import pytest
import zstandard

from csst_data.store import codecs


def _mask(seed=0, shape=(37, 53), num_classes=19):
    rng = np.random.default_rng(seed)
    m = rng.integers(0, num_classes, shape).astype(np.uint8)
    m[rng.random(shape) < 0.1] = 255
    return m


def test_npy_zst_round_trip_and_plain_zstd_reader():
    m = _mask()
    data = codecs.encode_label(m, 19, key="k")
    assert np.array_equal(codecs.decode_label(data, 19), m)
    # Any tool: zstd + numpy.load, no csst code involved.
    raw = zstandard.ZstdDecompressor().decompress(data)
    assert np.array_equal(np.load(io.BytesIO(raw)), m)


def test_decoded_label_is_writable():
    m = codecs.decode_label(codecs.encode_label(_mask()))
    m[0, 0] = 1
    assert m[0, 0] == 1


def test_png_round_trip():
    m = _mask(1)
    assert np.array_equal(codecs.decode_label_png(codecs.encode_label_png(m, 19)), m)


def test_palette_png_indices_are_classes():
    from PIL import Image

    m = _mask(2, num_classes=21)
    img = Image.fromarray(m, mode="P")
    img.putpalette(list(np.random.default_rng(0).integers(0, 255, 768)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert np.array_equal(codecs.decode_label_png(buf.getvalue(), 21), m)


def test_topk_round_trip_within_quantisation():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 9, 11)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    idx, q = codecs.topk(probs, 3)
    i2, p2 = codecs.decode_topk(*codecs.encode_topk(idx, q))
    assert np.array_equal(i2, idx)
    assert np.array_equal(i2[0], probs.argmax(0))
    expected = np.take_along_axis(probs, idx.astype(np.int64), 0)
    assert np.abs(p2 - expected).max() <= 1 / 255
    assert (np.diff(p2, axis=0) <= 1 / 255).all()  # sorted by probability


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4), np.uint8), np.zeros((4, 4), np.int32), np.zeros(5, np.uint8)])
def test_rejects_bad_shape_or_dtype_naming_key(bad):
    with pytest.raises(ValueError, match="frame_7"):
        codecs.encode_label(bad, 19, key="frame_7")


def test_rejects_out_of_range_value_naming_key():
    m = _mask()
    m[3, 4] = 19
    with pytest.raises(ValueError, match="frame_9.*19"):
        codecs.encode_label(m, 19, key="frame_9")
    m[3, 4] = 255
    codecs.encode_label(m, 19)


def test_decode_label_rejects_garbage():
    with pytest.raises(ValueError, match="label 'x'"):
        codecs.decode_label(b"not zstd", key="x")


def test_wds_handlers_pass_on_unknown_keys():
    data = codecs.encode_label(_mask())
    handlers = codecs.wds_handlers()
    assert any(isinstance(h(".label.npy.zst", data), np.ndarray) for h in handlers)
    assert all(h(".json", b"{}") is None for h in handlers)
    assert all(h(".txt", b"hello") is None for h in handlers)


def test_decode_image_jpeg_and_png():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3)).astype(np.uint8)
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, quality=95)
        out = codecs.decode_image(buf.getvalue())
        assert out.shape == (32, 48, 3) and out.dtype == np.uint8
        if fmt == "PNG":
            assert np.array_equal(out, rgb)
    small = codecs.decode_image(buf.getvalue(), min_height=8)
    assert small.shape == (8, 12, 3)
    with pytest.raises(ValueError, match="image 'bad'"):
        codecs.decode_image(b"\xff\xd8\xff garbage", key="bad")
