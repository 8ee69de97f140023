"""Label codecs: zstd-compressed .npy (the default), PNG, and top-k soft labels.

A `.npy.zst` member is a plain `.npy` file compressed as one standard zstd
frame, so any tool can read it back with `zstd -d` and `numpy.load`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numcodecs import Zstd

from csst_data import IGNORE

if TYPE_CHECKING:
    from PIL import Image

# Level 9 keeps labels smaller than PNG while decoding stays ~1 ms per
# 1024x2048 mask (zstd decode speed barely depends on the level).
ZSTD_LEVEL = 9
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of every zstd frame
# Pillow's integer grey modes wider than 8 bits (16-bit PNGs and TIFFs; "I" is 32-bit).
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")
_zstd = {}


def _codec(level):
    if level not in _zstd:
        _zstd[level] = Zstd(level=level, checksum=True)
    return _zstd[level]


def _name(key):
    return f"label {key!r}" if key is not None else "label"


def check_label(mask: np.ndarray, num_classes: int | None = None, key: str | None = None) -> np.ndarray:
    """Return `mask` if it is a valid label (uint8 H x W, values < num_classes or 255)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(
            f"{_name(key)}: expected a 2-D uint8 mask, got shape {mask.shape} dtype {mask.dtype}"
        )
    if num_classes is not None and num_classes < IGNORE:
        bad = (mask >= num_classes) & (mask != IGNORE)
        if bad.any():
            values = np.unique(mask[bad])[:5].tolist()
            raise ValueError(
                f"{_name(key)}: values {values} are >= num_classes={num_classes} and not the ignore label {IGNORE}"
            )
    return mask


def encode_npy_zst(array: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    """Any numpy array -> bytes of a zstd-compressed .npy file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return bytes(_codec(level).encode(buf.getbuffer()))


def decode_npy_zst(data: bytes) -> np.ndarray:
    """Bytes of a zstd-compressed .npy file -> numpy array (writable)."""
    raw = _codec(ZSTD_LEVEL).decode(data)
    fp = io.BytesIO(raw)
    version = np.lib.format.read_magic(fp)
    if version != (1, 0):
        return np.load(io.BytesIO(raw), allow_pickle=False)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed in .npy.zst members")
    # frombuffer skips np.load's chunked reads; the copy makes it writable.
    arr = np.frombuffer(raw, dtype=dtype, offset=fp.tell(), count=int(np.prod(shape)))
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def encode_label(mask: np.ndarray, num_classes: int | None = None, key: str | None = None,
                 level: int = ZSTD_LEVEL) -> bytes:
    """Label mask -> `.npy.zst` bytes, after validation."""
    return encode_npy_zst(check_label(mask, num_classes, key), level)


def decode_label(data: bytes, num_classes: int | None = None, key: str | None = None) -> np.ndarray:
    """`.npy.zst` bytes -> uint8 H x W mask; validates shape, dtype and, if given, values."""
    try:
        mask = decode_npy_zst(data)
    except Exception as e:
        raise ValueError(f"{_name(key)}: cannot decode .npy.zst ({e})") from e
    return check_label(mask, num_classes, key)


def encode_label_png(mask: np.ndarray, num_classes: int | None = None, key: str | None = None) -> bytes:
    """Label mask -> PNG bytes (mode L)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(check_label(mask, num_classes, key), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def decode_label_png(data: bytes, num_classes: int | None = None, key: str | None = None) -> np.ndarray:
    """PNG bytes (mode L or palette P, whose indices are the classes) -> uint8 mask."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        if img.mode not in ("L", "P"):
            raise ValueError(f"mode {img.mode}, expected L or P")
        mask = np.asarray(img)
    except Exception as e:
        raise ValueError(f"{_name(key)}: cannot decode PNG label ({e})") from e
    return check_label(mask, num_classes, key)


def is_npy_zst(data: bytes) -> bool:
    """Whether `data` starts as a zstd frame (a `.npy.zst` member)."""
    return bytes(data[:4]) == ZSTD_MAGIC


def decode_label_bytes(data: bytes, name: str | None = None) -> np.ndarray:
    """`.npy.zst` or PNG (mode L / P) label bytes -> uint8 mask, values as stored."""
    if is_npy_zst(data):
        return decode_label(data, key=name)
    if is_png(data):
        return decode_label_png(data, key=name)
    raise ValueError(f"label {name!r}: neither a .npy.zst nor a PNG")


LabelDecoder = Callable[..., np.ndarray]  # decode(data, name=None) -> uint8 H x W mask


def label_decoder() -> LabelDecoder:
    """A `.npy.zst` label decoder for a stream of masks that reuses one buffer.

    `decode(data, name)` is `decode_label_bytes`, but a mask comes back as a
    read-only view into the buffer, valid until the next call. A fresh 2 MB
    array per 1024x2048 mask costs more in page faults than the zstd decode
    itself; the index build decodes masks one after another.
    """
    from numcodecs import zstd

    state = {"buf": np.empty(0, np.uint8), "headers": {}}

    def decode(data, name=None):
        if not is_npy_zst(data):
            return decode_label_bytes(data, name)
        try:
            raw = zstd.decompress(data, state["buf"])
        except (ValueError, RuntimeError):
            # First mask, or a larger one (or a frame without its size): size the buffer for it.
            raw = np.frombuffer(zstd.decompress(data), np.uint8)
            state["buf"] = np.empty(len(raw), np.uint8)
            state["buf"][:] = raw
            raw = state["buf"]
        if bytes(raw[:8]) != b"\x93NUMPY\x01\x00":  # not a version 1.0 .npy: the general path
            return decode_label_bytes(data, name)
        end = 10 + int(raw[8]) + 256 * int(raw[9])
        header = bytes(raw[10:end])
        parsed = state["headers"].get(header)
        if parsed is None:
            fp = io.BytesIO(bytes(raw[:end]))
            np.lib.format.read_magic(fp)
            parsed = state["headers"][header] = np.lib.format.read_array_header_1_0(fp)
        shape, fortran, dtype = parsed
        if len(shape) != 2 or fortran or dtype != np.uint8:
            return decode_label_bytes(data, name)  # raises the usual clear error
        size = shape[0] * shape[1]
        if end + size > len(raw):
            raise ValueError(f"label {name!r}: truncated .npy.zst")
        mask = raw[end:end + size].reshape(shape)
        mask.flags.writeable = False
        return mask

    return decode


def wide_grey(img: Image.Image, *, scale: bool) -> np.ndarray | None:
    """A Pillow image of a grey mode wider than 8 bits -> uint8 H x W; None for any other mode.

    scale=True (a photo): 0..65535 mapped to 0..255, rounded (Pillow's own conversion clips
    it to white). scale=False (a mask, whose values are class ids): values kept, one above
    255 an error.
    """
    if img.mode not in WIDE_GREY_MODES:
        return None
    arr = np.asarray(img)
    if not scale:
        if arr.size and int(arr.max()) > 255:
            raise ValueError(f"{img.mode} mask holds value {int(arr.max())} > 255")
        return arr.astype(np.uint8)
    wide = arr.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).clip(0, 255).astype(np.uint8)  # 0..65535 -> 0..255, rounded


def topk(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (C, H, W) -> top-k (idx uint8 (k,H,W), prob uint8 (k,H,W)).

    Probabilities are quantised to round(p * 255), an error of at most 1/510.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or not 1 <= k <= probs.shape[0]:
        raise ValueError(f"topk: expected (C, H, W) probabilities and 1 <= k <= C, got {probs.shape}, k={k}")
    idx = np.argsort(-probs, axis=0, kind="stable")[:k]
    prob = np.take_along_axis(probs, idx, axis=0)
    return idx.astype(np.uint8), quantise(prob)


def quantise(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 round(p * 255)."""
    return np.clip(np.rint(np.asarray(prob, np.float32) * 255.0), 0, 255).astype(np.uint8)


def encode_topk(idx: np.ndarray, prob: np.ndarray, level: int = ZSTD_LEVEL) -> tuple[bytes, bytes]:
    """(idx uint8 (k,H,W), prob uint8 (k,H,W)) -> (idx bytes, prob bytes)."""
    idx, prob = np.asarray(idx), np.asarray(prob)
    if idx.shape != prob.shape or idx.ndim != 3 or idx.dtype != np.uint8 or prob.dtype != np.uint8:
        raise ValueError(f"topk: expected two uint8 (k, H, W) arrays, got {idx.shape} {idx.dtype}, {prob.shape} {prob.dtype}")
    return encode_npy_zst(idx, level), encode_npy_zst(prob, level)


def encode_confidence(conf: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    """A teacher's per-pixel top-1 probability as uint8 H x W round(p * 255) -> `confidence.npy.zst` bytes."""
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.dtype != np.uint8:
        raise ValueError(f"confidence: expected a uint8 (H, W) array, got {conf.shape} {conf.dtype}")
    return encode_npy_zst(conf, level)


def decode_topk(idx_data: bytes, prob_data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """-> (idx uint8 (k,H,W), prob float32 (k,H,W) in [0, 1])."""
    idx = decode_npy_zst(idx_data)
    prob = decode_npy_zst(prob_data).astype(np.float32) / 255.0
    return idx, prob


def is_jpeg(data: bytes) -> bool:
    """Whether `data` starts as a JPEG (SOI and a marker)."""
    return bytes(data[:3]) == b"\xff\xd8\xff"


def is_png(data: bytes) -> bool:
    """Whether `data` starts with the PNG signature."""
    return bytes(data[:8]) == b"\x89PNG\r\n\x1a\n"


def decode_image(data: bytes, min_height: int | None = None, min_width: int | None = None,
                 key: str | None = None) -> np.ndarray:
    """Image bytes -> uint8 H x W x 3 RGB array.

    JPEGs go through libjpeg-turbo (simplejpeg). Given `min_height`/`min_width`
    it decodes at the smallest DCT scale (1/2, 1/4, 1/8) still at least that
    large, which is much cheaper than decoding in full and resizing.
    """
    try:
        if is_jpeg(data):
            import simplejpeg

            try:
                if min_height or min_width:
                    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                                  min_height=min_height or 0, min_width=min_width or 0)
                return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)
            except ValueError:
                pass  # CMYK / YCCK JPEGs, which libjpeg-turbo does not turn into RGB: Pillow does
        return _decode_pillow(data)
    except Exception as e:
        name = f"image {key!r}" if key is not None else "image"
        raise ValueError(f"{name}: cannot decode ({e})") from e


def _decode_pillow(data):
    """Any image Pillow reads -> uint8 RGB, with every mode a photo can have mapped correctly:
    16-bit grey scaled to 8 bits (Pillow's own conversion clips it to white), transparency and
    alpha dropped, palette and 1-bit images expanded, CMYK converted."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    grey = wide_grey(img, scale=True)
    if grey is not None:
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")
    return np.array(img.convert("RGB"))  # writable, unlike asarray


def encode_json(obj: object) -> bytes:
    """`obj` as a shard's .json member: UTF-8 JSON, keys sorted."""
    return json.dumps(obj, sort_keys=True).encode("utf-8")


def _npy_zst_handler(key, data):
    if key.endswith(".npy.zst"):
        return decode_npy_zst(data)
    return None


def _label_png_handler(key, data):
    # Without this, webdataset's "rgb8" would turn a PNG label into RGB.
    if key.endswith(".label.png"):
        return decode_label_png(data)
    return None


def _jpeg_handler(key, data):
    if key.endswith((".jpg", ".jpeg")):
        return decode_image(data)
    return None


def wds_handlers() -> list[Callable[[str, bytes], object]]:
    """Decoder handlers for webdataset: `.decode(*wds_handlers(), "rgb8")`.

    Labels come back as uint8 arrays and JPEGs as RGB uint8 arrays decoded by
    libjpeg-turbo; anything else falls through to webdataset's own decoders.
    """
    return [_npy_zst_handler, _label_png_handler, _jpeg_handler]
