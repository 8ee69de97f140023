"""The drawing canvas of one synthetic scene and the shared appearance tables.

`Scene` holds per-pixel label, base colour, texture and light while the
background and objects are painted; `render.finish` turns it into an image.
World units are camera heights; the camera looks down +Z with X to the right.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike
from skimage import draw

from csst_demo.classes import SKY

# Pixels of a shape: a boolean mask, a pair of slices or the (rows, cols) of skimage.draw.
Pixels = Union[np.ndarray, tuple]

CAM = 1.0  # camera height; world units are camera heights (about 1.25 m)
PARKING = 2.2  # width of a parking lane

# Shared palettes: classes that share one are told apart by shape and context.
CAR_COLORS = np.array([[25, 25, 28], [215, 215, 212], [165, 168, 172], [105, 106, 110], [150, 25, 25],
                        [30, 50, 115], [30, 60, 42], [185, 165, 130], [120, 20, 30], [70, 90, 140]], np.float32)
HEAVY_COLORS = np.array([[225, 225, 218], [180, 32, 30], [222, 182, 35], [40, 80, 160], [40, 120, 62],
                          [140, 140, 142], [220, 120, 32]], np.float32)  # truck, bus, train
TWO_WHEEL_COLORS = np.array([[25, 25, 25], [170, 30, 30], [35, 60, 150], [175, 175, 180], [40, 110, 55],
                              [225, 125, 30], [220, 220, 215]], np.float32)  # bicycle, motorcycle
CLOTHES = np.array([[30, 30, 35], [40, 55, 95], [70, 90, 130], [150, 30, 35], [200, 200, 195], [90, 90, 90],
                     [120, 95, 60], [60, 80, 50], [190, 150, 60], [130, 60, 110], [230, 110, 40]], np.float32)
SKIN = np.array([[235, 195, 165], [200, 150, 115], [150, 100, 70], [95, 65, 45]], np.float32)
BUILDING_COLORS = np.array([[195, 175, 145], [150, 150, 150], [150, 82, 62], [212, 205, 192], [212, 190, 125],
                             [120, 115, 108], [175, 130, 100], [160, 170, 175]], np.float32)
GLASS = np.array([55, 62, 75], np.float32)


_EMPTY = (np.zeros(0, np.intp), np.zeros(0, np.intp))


class Scene:
    """Drawing state of one scene: per pixel label, base colour, texture and light.

    Textures are applied once at the end from two noise fields: `fine`
    (per-pixel, amplitude in grey levels) and `mottle` (smooth, relative).
    """

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.f = w * rng.uniform(0.85, 1.1)      # focal length in pixels
        self.yh = h * rng.uniform(0.38, 0.47)    # horizon row
        self.vx = w * rng.uniform(0.42, 0.58)    # vanishing point column
        self.label = np.full((h, w), SKY, np.uint8)
        self.color = np.zeros((h, w, 3), np.float32)
        self.fine = np.zeros((h, w), np.float32)
        self.mottle = np.zeros((h, w), np.float32)
        self.light = np.ones((h, w), np.float32)
        # Light of faces: near faces 1, sides and tops differ by the sun's side.
        self.side_light = rng.uniform(0.65, 0.95)
        self.top_light = rng.uniform(1.0, 1.2)

    # -- pixels --------------------------------------------------------------
    def fill(self, where: Pixels, cls: Optional[int], color: ArrayLike, fine: float | np.ndarray = 3.0,
             mottle: float | np.ndarray = 0.05, light: float | np.ndarray = 1.0) -> None:
        """Paint pixels `where` (mask, slices or (rr, cc)) as class `cls` (None: keep the label)."""
        if cls is not None:
            self.label[where] = cls
        self.color[where] = color
        self.fine[where] = fine
        self.mottle[where] = mottle
        self.light[where] = light

    def jitter(self, color: ArrayLike, sd: float = 10.0, scale: float = 0.12) -> np.ndarray:
        """Per-instance colour: brightness and channel jitter."""
        c = np.asarray(color, np.float32) * self.rng.uniform(1 - scale, 1 + scale)
        return np.clip(c + self.rng.normal(0, sd, 3), 0, 255).astype(np.float32)

    # -- geometry ------------------------------------------------------------
    def project(self, X: ArrayLike, Y: ArrayLike, Z: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        X, Y, Z = (np.asarray(a, np.float64) for a in (X, Y, Z))
        return self.vx + self.f * X / Z, self.yh + self.f * (CAM - Y) / Z

    def _poly(self, x, y):
        # Skip polygons off the image: skimage's call overhead dominates small shapes.
        if x.max() < 0 or y.max() < 0 or x.min() > self.w - 1 or y.min() > self.h - 1:
            return _EMPTY
        return draw.polygon(y, x, shape=(self.h, self.w))

    def poly(self, X: ArrayLike, Y: ArrayLike, Z: ArrayLike) -> Pixels:
        """Pixels of a planar polygon given by its world vertices."""
        return self._poly(*self.project(X, Y, Z))

    def rect(self, X0: float, X1: float, Y0: float, Y1: float, Z: float) -> Pixels:
        """An upright rectangle facing the camera: slices of the pixels whose centres it holds."""
        (x0, x1), (y1, y0) = self.project([X0, X1], [Y0, Y1], Z)
        c0, c1 = max(int(np.ceil(x0)), 0), min(int(np.floor(x1)) + 1, self.w)
        r0, r1 = max(int(np.ceil(y0)), 0), min(int(np.floor(y1)) + 1, self.h)
        if c1 <= c0 or r1 <= r0:
            return _EMPTY
        return slice(r0, r1), slice(c0, c1)

    def disk(self, X: float, Y: float, Z: float, r: float, ry: Optional[float] = None) -> Pixels:
        cx, cy = self.project(X, Y, Z)
        rx = self.f * r / Z
        ry = self.f * (ry if ry is not None else r) / Z
        if rx < 0.3 or ry < 0.3 or cx + rx < 0 or cx - rx > self.w or cy + ry < 0 or cy - ry > self.h:
            return _EMPTY
        return draw.ellipse(cy, cx, ry, rx, shape=(self.h, self.w))

    def segment(self, p0: tuple, p1: tuple, Z: float, width: float) -> Pixels:
        """A thick line between (X, Y) points in the near plane at depth Z."""
        (x0, y0), (x1, y1) = p0, p1
        d = np.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / d * width / 2, (x1 - x0) / d * width / 2
        return self.poly([x0 + nx, x1 + nx, x1 - nx, x0 - nx], [y0 + ny, y1 + ny, y1 - ny, y0 - ny], Z)

    def box(self, X0: float, X1: float, Y0: float, Y1: float, Z0: float, Z1: float, cls: Optional[int],
            color: ArrayLike, **tex: float) -> dict[str, Pixels]:
        """An axis-aligned box: paints its visible faces, returns them by name."""
        faces = {}
        if Y1 < CAM:
            faces["top"] = self.poly([X0, X1, X1, X0], [Y1] * 4, [Z0, Z0, Z1, Z1])
            self.fill(faces["top"], cls, color, light=self.top_light, **tex)
        if X1 < 0:
            faces["side"] = self.poly([X1] * 4, [Y0, Y1, Y1, Y0], [Z0, Z0, Z1, Z1])
        elif X0 > 0:
            faces["side"] = self.poly([X0] * 4, [Y0, Y1, Y1, Y0], [Z0, Z0, Z1, Z1])
        if "side" in faces:
            self.fill(faces["side"], cls, color, light=self.side_light, **tex)
        faces["near"] = self.rect(X0, X1, Y0, Y1, Z0)
        self.fill(faces["near"], cls, color, **tex)
        return faces

    def side_rect(self, X: float, Y0: float, Y1: float, Z0: float, Z1: float, cls: Optional[int], color: ArrayLike,
                  **tex: float) -> None:
        """A rectangle on the visible side face at lateral position X (windows, stripes)."""
        idx = self.poly([X] * 4, [Y0, Y1, Y1, Y0], [Z0, Z0, Z1, Z1])
        self.fill(idx, cls, color, light=self.side_light, **tex)

    def side_wheel(self, X: float, Zc: float, r: float, cls: Optional[int]) -> None:
        t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        idx = self.poly([X] * 14, r + r * np.sin(t), Zc + r * np.cos(t))
        self.fill(idx, cls, (22, 22, 24), fine=2, light=self.side_light)


def upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small 2-D field to h x w (smooth noise)."""
    sh, sw = small.shape
    ty = np.linspace(0, sh - 1, h, dtype=np.float32)
    tx = np.linspace(0, sw - 1, w, dtype=np.float32)
    y0 = np.minimum(ty.astype(np.intp), sh - 2)
    x0 = np.minimum(tx.astype(np.intp), sw - 2)
    wy = (ty - y0).astype(np.float32)[:, None]
    wx = (tx - x0).astype(np.float32)[None, :]
    rows = small[y0] * (1 - wy) + small[y0 + 1] * wy
    return rows[:, x0] * (1 - wx) + rows[:, x0 + 1] * wx


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Unit-variance smooth noise with about `cells` blobs across the height."""
    sh = max(int(cells), 2) + 1
    sw = max(int(cells * w / h), 2) + 1
    return upsample(rng.standard_normal((sh, sw)).astype(np.float32), h, w) * 1.6


def frac(a: ArrayLike) -> np.ndarray:
    return a - np.floor(a)
