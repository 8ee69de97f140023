"""The embedded demo dataset: procedurally rendered street scenes, 19 classes.

Each scene is a street seen from a car: a perspective ground plane (road with
lane markings, sidewalks, grass), building facades with windows along both
sides, a far skyline under the sky, and objects standing on the ground (trees,
poles with lights and signs, people, bicycles and motorcycles with riders,
cars, trucks, buses, trams), painted far to near. The classes and colours are
those of Cityscapes' train ids, and the pixel distribution is long-tailed in
the same way: road, building, vegetation and sky dominate while pole, traffic
light, rider, motorcycle and train each hold well under 1 % of the pixels.

Appearance is made learnable but not trivial: colours are jittered per
instance, several classes share a palette (truck/bus/train, person/rider,
bicycle/motorcycle, vegetation/terrain, building/wall) and differ only in shape,
texture or context, and every image gets noise, lighting gradients and shadows.
A few regions are void (255): the ego vehicle's bonnet and "static" clutter.

`render_scene` draws one scene; `write_dataset` writes the labelled,
unlabelled and validation splits as shard sets (or in the Cityscapes folder
layout), with per-sample seeds derived from (seed, split, index) so the output
does not depend on the number of worker processes.
"""

import io
import os
import shutil

import numpy as np
from skimage import draw

from csst_data import IGNORE

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)
(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)

# Cityscapes' colour for each train id.
PALETTE = np.array([
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32],
], dtype=np.uint8)

# Cityscapes label id of each train id (the ids in *_gtFine_labelIds.png).
# csst_data.sources has the same table; kept here so synth has no dependency on it.
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

# Internal void codes, kept apart while drawing so the Cityscapes layout can
# write them as distinct void ids; render_scene turns both into IGNORE.
_EGO, _STATIC = 250, 251
_CITYSCAPES_LUT = np.zeros(256, np.uint8)  # 0 = "unlabeled"
_CITYSCAPES_LUT[:NUM_CLASSES] = CITYSCAPES_LABEL_IDS
_CITYSCAPES_LUT[_EGO] = 1      # "ego vehicle"
_CITYSCAPES_LUT[_STATIC] = 4   # "static"

SPLITS = ("labeled", "unlabeled", "val")
_SPLIT_CODE = {"labeled": 0, "unlabeled": 1, "val": 2}
_CITYSCAPES_SPLIT = {"labeled": "train", "unlabeled": "train_extra", "val": "val"}
_CITIES = {"labeled": ("synthburg", "pixelstadt", "rendorf"), "unlabeled": ("noisheim", "texelfeld", "gridau"),
           "val": ("valbruck",)}
JPEG_QUALITY = 90
# 4:2:0 chroma, as camera JPEGs and the Pillow/OpenCV defaults have (simplejpeg defaults to 4:4:4).
JPEG_SUBSAMPLING = "420"
SHARD_MAXCOUNT = 100

CAM = 1.0  # camera height; world units are camera heights (about 1.25 m)
PARKING = 2.2  # width of a parking lane

# Shared palettes: classes that share one are told apart by shape and context.
_CAR_COLORS = np.array([[25, 25, 28], [215, 215, 212], [165, 168, 172], [105, 106, 110], [150, 25, 25],
                        [30, 50, 115], [30, 60, 42], [185, 165, 130], [120, 20, 30], [70, 90, 140]], np.float32)
_HEAVY_COLORS = np.array([[225, 225, 218], [180, 32, 30], [222, 182, 35], [40, 80, 160], [40, 120, 62],
                          [140, 140, 142], [220, 120, 32]], np.float32)  # truck, bus, train
_TWO_WHEEL_COLORS = np.array([[25, 25, 25], [170, 30, 30], [35, 60, 150], [175, 175, 180], [40, 110, 55],
                              [225, 125, 30], [220, 220, 215]], np.float32)  # bicycle, motorcycle
_CLOTHES = np.array([[30, 30, 35], [40, 55, 95], [70, 90, 130], [150, 30, 35], [200, 200, 195], [90, 90, 90],
                     [120, 95, 60], [60, 80, 50], [190, 150, 60], [130, 60, 110], [230, 110, 40]], np.float32)
_SKIN = np.array([[235, 195, 165], [200, 150, 115], [150, 100, 70], [95, 65, 45]], np.float32)
_BUILDING_COLORS = np.array([[195, 175, 145], [150, 150, 150], [150, 82, 62], [212, 205, 192], [212, 190, 125],
                             [120, 115, 108], [175, 130, 100], [160, 170, 175]], np.float32)
_GLASS = np.array([55, 62, 75], np.float32)


_EMPTY = (np.zeros(0, np.intp), np.zeros(0, np.intp))


class _Scene:
    """Drawing state of one scene: per pixel label, base colour, texture and light.

    Textures are applied once at the end from two noise fields: `fine`
    (per-pixel, amplitude in grey levels) and `mottle` (smooth, relative).
    """

    def __init__(self, h, w, rng):
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
    def fill(self, where, cls, color, fine=3.0, mottle=0.05, light=1.0):
        """Paint pixels `where` (mask, slices or (rr, cc)) as class `cls` (None: keep the label)."""
        if cls is not None:
            self.label[where] = cls
        self.color[where] = color
        self.fine[where] = fine
        self.mottle[where] = mottle
        self.light[where] = light

    def jitter(self, color, sd=10.0, scale=0.12):
        """Per-instance colour: brightness and channel jitter."""
        c = np.asarray(color, np.float32) * self.rng.uniform(1 - scale, 1 + scale)
        return np.clip(c + self.rng.normal(0, sd, 3), 0, 255).astype(np.float32)

    # -- geometry ------------------------------------------------------------
    def project(self, X, Y, Z):
        X, Y, Z = (np.asarray(a, np.float64) for a in (X, Y, Z))
        return self.vx + self.f * X / Z, self.yh + self.f * (CAM - Y) / Z

    def _poly(self, x, y):
        # Skip polygons off the image: skimage's call overhead dominates small shapes.
        if x.max() < 0 or y.max() < 0 or x.min() > self.w - 1 or y.min() > self.h - 1:
            return _EMPTY
        return draw.polygon(y, x, shape=(self.h, self.w))

    def poly(self, X, Y, Z):
        """Pixels of a planar polygon given by its world vertices."""
        return self._poly(*self.project(X, Y, Z))

    def rect(self, X0, X1, Y0, Y1, Z):
        """An upright rectangle facing the camera: slices of the pixels whose centres it holds."""
        (x0, x1), (y1, y0) = self.project([X0, X1], [Y0, Y1], Z)
        c0, c1 = max(int(np.ceil(x0)), 0), min(int(np.floor(x1)) + 1, self.w)
        r0, r1 = max(int(np.ceil(y0)), 0), min(int(np.floor(y1)) + 1, self.h)
        if c1 <= c0 or r1 <= r0:
            return _EMPTY
        return slice(r0, r1), slice(c0, c1)

    def disk(self, X, Y, Z, r, ry=None):
        cx, cy = self.project(X, Y, Z)
        rx = self.f * r / Z
        ry = self.f * (ry if ry is not None else r) / Z
        if rx < 0.3 or ry < 0.3 or cx + rx < 0 or cx - rx > self.w or cy + ry < 0 or cy - ry > self.h:
            return _EMPTY
        return draw.ellipse(cy, cx, ry, rx, shape=(self.h, self.w))

    def segment(self, p0, p1, Z, width):
        """A thick line between (X, Y) points in the near plane at depth Z."""
        (x0, y0), (x1, y1) = p0, p1
        d = np.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / d * width / 2, (x1 - x0) / d * width / 2
        return self.poly([x0 + nx, x1 + nx, x1 - nx, x0 - nx], [y0 + ny, y1 + ny, y1 - ny, y0 - ny], Z)

    def box(self, X0, X1, Y0, Y1, Z0, Z1, cls, color, **tex):
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

    def side_rect(self, X, Y0, Y1, Z0, Z1, cls, color, **tex):
        """A rectangle on the visible side face at lateral position X (windows, stripes)."""
        idx = self.poly([X] * 4, [Y0, Y1, Y1, Y0], [Z0, Z0, Z1, Z1])
        self.fill(idx, cls, color, light=self.side_light, **tex)

    def side_wheel(self, X, Zc, r, cls):
        t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
        idx = self.poly([X] * 14, r + r * np.sin(t), Zc + r * np.cos(t))
        self.fill(idx, cls, (22, 22, 24), fine=2, light=self.side_light)


def _upsample(small, h, w):
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


def _smooth_noise(rng, h, w, cells):
    """Unit-variance smooth noise with about `cells` blobs across the height."""
    sh = max(int(cells), 2) + 1
    sw = max(int(cells * w / h), 2) + 1
    return _upsample(rng.standard_normal((sh, sw)).astype(np.float32), h, w) * 1.6


def _frac(a):
    return a - np.floor(a)


# -- scene layout ---------------------------------------------------------------
def _layout(rng):
    """Street geometry and building segments, in world units."""
    lane = rng.uniform(2.5, 3.0)
    lanes_left = int(rng.choice([0, 1, 1, 2, 2, 3]))  # oncoming lanes; ours is centred on X = 0
    park_l, park_r = rng.random() < 0.5, rng.random() < 0.6  # parking lanes along the curbs
    p = {
        "lane": lane, "lanes_left": lanes_left, "park_l": park_l, "park_r": park_r,
        "rl": lane * (0.5 + lanes_left) + rng.uniform(0.0, 0.4) + PARKING * park_l,  # road edges
        "rr": lane * 0.5 + rng.uniform(0.2, 0.6) + PARKING * park_r,
        "kind": rng.choice(["city", "city", "suburb", "open"]),
        "sunny": rng.random() < 0.6,
        "sun_side": rng.choice([-1, 1]),
        "solid_centre": rng.random() < 0.5,
    }
    for s in ("l", "r"):
        p["s" + s] = rng.uniform(1.3, 3.2)                         # sidewalk width
        p["g" + s] = 0.0 if rng.random() < 0.5 else rng.uniform(0.6, 4.0)  # grass strip
        p["x" + s] = (p["rl"] if s == "l" else p["rr"]) + p["s" + s] + p["g" + s]  # facade plane
        p["segs" + s] = _segments(rng, "suburb" if p["kind"] == "open" else p["kind"])
    if p["kind"] == "open":  # no buildings on one side: grass up to the skyline
        p["segs" + rng.choice(["l", "r"])] = []
    p["rails"] = rng.random() < 0.06  # trams are the rarest class: in ~5 % of scenes
    p["rail_x"] = -lane * rng.integers(0, lanes_left + 1) if p["rails"] else 0.0
    p["zebra"] = rng.uniform(5, 25) if rng.random() < 0.3 else None
    return p


def _segments(rng, kind):
    """Building / vegetation segments along one side: dicts with z0, z1, kind, height, colour."""
    segs, z = [], rng.uniform(0.5, 3.0)
    end = rng.uniform(70, 160)
    hmin, hmax, p_veg = {"city": (7, 22, 0.12), "suburb": (4, 9, 0.45)}.get(kind, (4, 9, 0.45))
    while z < end:
        if rng.random() < p_veg:
            length = rng.uniform(4, 15)
            segs.append({"z0": z, "z1": z + length, "kind": VEGETATION, "height": rng.uniform(2.5, 7)})
        else:
            length = rng.uniform(8, 30)
            segs.append({
                "z0": z, "z1": z + length, "kind": BUILDING, "height": rng.uniform(hmin, hmax),
                "color": _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))] * rng.uniform(0.8, 1.15)
                + rng.normal(0, 8, 3),
                "win_z": rng.uniform(1.6, 3.2), "win_y": rng.uniform(2.2, 3.0),
                "win_a": rng.uniform(0.35, 0.7), "win_b": rng.uniform(0.45, 0.7), "shop": rng.random() < 0.5,
            })
        z += length + (rng.uniform(1, 6) if rng.random() < 0.2 else 0.0)
    return segs


# -- background: sky, ground, skyline, facades -----------------------------------
def _sky(s, p):
    rng = s.rng
    n = min(int(np.floor(s.yh)) + 1, s.h)  # rows below are ground
    rows = np.arange(n, dtype=np.float32)
    t = np.clip(rows / max(s.yh, 1.0), 0, 1)[:, None]
    if rng.random() < 0.3:  # overcast
        top = s.jitter((175, 180, 188), 6)
        bottom = s.jitter((205, 207, 210), 5)
    else:
        top = s.jitter((85, 135, 205), 10)
        bottom = s.jitter((185, 208, 230), 6)
    grad = top[None, :] * (1 - t) + bottom[None, :] * t
    clouds = np.clip((_smooth_noise(rng, s.h, s.w, 4)[:n] - rng.uniform(0.2, 1.5)) * 0.6, 0, 0.8)[..., None]
    s.color[:n] = grad[:, None, :] * (1 - clouds) + np.float32(238) * clouds
    s.fine[:n] = 1.5
    s.mottle[:n] = 0.02
    p["sky_bottom"] = bottom


def _ground(s, p):
    rng = s.rng
    y0 = int(np.floor(s.yh)) + 1
    if y0 >= s.h:
        return
    rows = np.arange(y0, s.h, dtype=np.float32)
    Z = (s.f / (rows - np.float32(s.yh)))[:, None]
    X = (np.arange(s.w, dtype=np.float32)[None, :] - np.float32(s.vx)) * Z / np.float32(s.f)
    n = len(rows)
    lab = np.full((n, s.w), TERRAIN, np.uint8)
    col = np.empty((n, s.w, 3), np.float32)
    fine = np.full((n, s.w), 10.0, np.float32)
    mot = np.full((n, s.w), 0.2, np.float32)
    light = np.ones((n, s.w), np.float32)
    col[:] = s.jitter(rng.choice([[105, 125, 62], [125, 128, 72], [95, 118, 70]]), 8)

    rl, rr = p["rl"], p["rr"]
    side_walk = s.jitter(rng.choice([[145, 140, 135], [150, 115, 105], [125, 125, 128]]), 8)
    # Paving joints, only where they are a few pixels apart (no aliasing).
    joints = ((_frac(X / 0.9) < 0.07) & (0.9 * s.f / Z > 4)) | ((_frac(Z / 0.9) < 0.07) & (0.9 * s.f / Z ** 2 > 4))
    for sgn, edge, width, grass, facade in ((-1, rl, p["sl"], p["gl"], p["xl"]), (1, rr, p["sr"], p["gr"], p["xr"])):
        d = X * sgn - edge  # distance outward from the road edge
        walk = (d > 0) & (d <= width)
        if grass > 0 and rng.random() < 0.35:  # a paved forecourt instead of grass
            walk |= (d > 0) & (d <= facade - edge)
        lab[walk] = SIDEWALK
        col[walk] = side_walk
        fine[walk], mot[walk] = 4.0, 0.06
        curb = (d > 0) & (d < 0.14)
        col[curb] = side_walk * 1.18 + 10
        col[walk & joints & ~curb] *= 0.8

    road = (X >= -rl) & (X <= rr)
    asphalt = s.jitter(rng.choice([[88, 88, 92], [100, 98, 96], [72, 74, 80]]), 6)
    lab[road] = ROAD
    col[road] = asphalt
    fine[road], mot[road] = 5.0, 0.07
    lane, white = p["lane"], s.jitter((222, 222, 215), 6, 0.05)
    marks = np.zeros_like(road)
    dashed = _frac(Z / 9.0) < 0.45
    for k in range(p["lanes_left"]):  # lane boundaries; the first one parts the two directions
        line = np.abs(X + lane * (k + 0.5)) < 0.065
        marks |= line if k == 0 and p["solid_centre"] else line & dashed
    edge_r, edge_l = rr - 0.25 - PARKING * p["park_r"], -rl + 0.25 + PARKING * p["park_l"]
    marks |= (np.abs(X - edge_r) < 0.05) | (np.abs(X - edge_l) < 0.05)  # edge lines
    if p["zebra"] is not None:
        marks |= (Z > p["zebra"]) & (Z < p["zebra"] + 2.5) & (_frac(X / 1.0) < 0.5)
    marks &= road
    col[marks] = white
    if p["rails"]:
        for dx in (-0.58, 0.58):
            rail = road & (np.abs(X - p["rail_x"] - dx) < 0.05)
            col[rail] = (150, 150, 155)
            col[road & (np.abs(X - p["rail_x"] - dx - 0.07) < 0.025)] = (40, 40, 42)

    if p["sunny"]:  # shadow of the buildings on the sun's far side, with a ragged edge
        sgn = -p["sun_side"]
        reach = (p["xl"] if sgn < 0 else p["xr"]) - rng.uniform(1.0, 6.0) + 0.8 * np.sin(Z / rng.uniform(4, 12))
        light[(X * sgn) > reach] = rng.uniform(0.5, 0.7)
    s.fill((slice(y0, None), slice(None)), None, col, fine=fine, mottle=mot, light=light)
    s.label[y0:] = lab


def _plane_columns(s, sgn, X):
    """Columns showing the vertical plane at lateral X*sgn, and the depth of each."""
    if sgn < 0:
        cols = np.arange(0, max(int(np.floor(s.vx)), 0))
        dx = s.vx - cols
    else:
        cols = np.arange(min(int(np.ceil(s.vx)), s.w), s.w)
        dx = cols - s.vx
    return cols, s.f * X / np.maximum(dx, 0.5)


def _facades(s, p):
    rows = np.arange(s.h, dtype=np.float64)[:, None]
    for sgn, key in ((-1, "l"), (1, "r")):
        segs = p["segs" + key]
        if not segs:
            continue
        cols, Z = _plane_columns(s, sgn, p["x" + key])
        z0 = np.array([g["z0"] for g in segs])
        z1 = np.array([g["z1"] for g in segs])
        k = np.minimum(np.searchsorted(z1, Z), len(segs) - 1)
        valid = (Z >= z0[k]) & (Z < z1[k])
        Y = CAM - (rows - s.yh) * Z[None, :] / s.f      # world height of every pixel
        for i, g in enumerate(segs):
            on = valid & (k == i)
            if not on.any():
                continue
            c = cols[on]
            Yc, Zc = Y[:, on], Z[on]
            if g["kind"] == VEGETATION:
                top = g["height"] + 0.8 * np.sin(Zc * 1.3 + i) + 0.4 * np.sin(Zc * 3.1)
                m = (Yc >= 0) & (Yc < top[None, :])
                rr, cc = np.nonzero(m)
                s.fill((rr, c[cc]), VEGETATION, s.jitter((62, 98, 42), 8), fine=16, mottle=0.35)
                continue
            m = (Yc >= 0) & (Yc < g["height"])
            rr, cc = np.nonzero(m)
            yw, zw = Yc[rr, cc], Zc[cc] - g["z0"]
            color = np.broadcast_to(np.clip(g["color"], 0, 255).astype(np.float32), (len(rr), 3)).copy()
            u, v = zw / g["win_z"], yw / g["win_y"]
            win = ((_frac(u) > 0.5 - g["win_a"] / 2) & (_frac(u) < 0.5 + g["win_a"] / 2)
                   & (_frac(v) > 0.3) & (_frac(v) < 0.3 + g["win_b"] * 0.7)
                   & (yw > 3.0) & (yw < g["height"] - 0.6) & (zw > 0.6) & (zw < g["z1"] - g["z0"] - 0.6))
            # Window brightness varies per window (hash of its floor and column).
            h = ((np.floor(u) * 7919 + np.floor(v) * 104729 + i * 31) % 97) / 97.0
            color[win] = _GLASS * (0.6 + 0.9 * h[win, None])
            if g["shop"]:
                shop = (yw > 0.3) & (yw < 2.2) & (_frac(zw / 4.0) > 0.15)
                color[shop] = _GLASS * 0.7
            top_band = yw > g["height"] - 0.35  # cornice
            color[top_band] *= 0.8
            s.fill((rr, c[cc]), BUILDING, color, fine=3, mottle=0.08, light=s.side_light)


def _skyline(s, p):
    """Distant buildings and trees at the end of the street, hazy."""
    rng = s.rng
    zf = min(p["segsl"][-1]["z1"] if p["segsl"] else 150, p["segsr"][-1]["z1"] if p["segsr"] else 150)
    bottom = s.yh + s.f * CAM / zf
    x = 0.0
    haze = p["sky_bottom"]
    while x < s.w:
        bw = s.w * rng.uniform(0.015, 0.07)
        kind = BUILDING if rng.random() < 0.75 else VEGETATION
        height = rng.uniform(3, 28) if kind == BUILDING else rng.uniform(2, 6)
        top = s.yh + s.f * (CAM - height) / zf
        y0, y1, x0, x1 = int(max(top, 0)), int(min(bottom, s.h)), int(x), int(min(x + bw, s.w))
        if y1 > y0 and x1 > x0:
            base = _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))] if kind == BUILDING else np.array((62, 98, 42))
            color = 0.55 * base + 0.45 * haze
            s.fill((slice(y0, y1), slice(x0, x1)), kind, color, fine=4 if kind == BUILDING else 8,
                   mottle=0.05 if kind == BUILDING else 0.2)
        x += bw


def _walls(s, p):
    """Low walls and fences along the outer edge of the sidewalks."""
    rng = s.rng
    rows = np.arange(s.h, dtype=np.float64)[:, None]
    for sgn, key, edge in ((-1, "l", p["rl"]), (1, "r", p["rr"])):
        if rng.random() > 0.55 or p["x" + key] - edge < 1.0:
            continue
        X = edge + p["s" + key] + 0.05
        cols, Z = _plane_columns(s, sgn, X)
        z0 = rng.uniform(2, 25)
        z1 = z0 + rng.uniform(6, 40)
        kind = FENCE if rng.random() < 0.5 else WALL
        height = rng.uniform(0.7, 1.6) if kind == WALL else rng.uniform(0.9, 1.8)
        on = (Z >= z0) & (Z < z1)
        if not on.any():
            continue
        c, Zc = cols[on], Z[on]
        Y = CAM - (rows - s.yh) * Zc[None, :] / s.f
        rr, cc = np.nonzero((Y >= 0) & (Y < height))
        yw, zw = Y[rr, cc], Zc[cc]
        if kind == WALL:
            base = s.jitter(rng.choice([[160, 158, 150], [150, 90, 70], [185, 180, 165]]), 8)
            color = np.broadcast_to(base, (len(rr), 3)).copy()
            color[(_frac(yw / 0.35) < 0.1) | (yw > height - 0.12)] *= 0.78  # block courses, coping
            s.fill((rr, c[cc]), WALL, color, fine=6, mottle=0.12, light=s.side_light)
        else:
            bar = s.jitter(rng.choice([[105, 105, 110], [125, 95, 65], [55, 85, 55]]), 8)
            period = rng.uniform(0.12, 0.3)
            solid = (_frac(zw / period) < 0.35) | (yw > height - 0.1) | (np.abs(yw - height * 0.45) < 0.05)
            behind = s.color[rr, c[cc]]
            color = np.where(solid[:, None], bar, 0.5 * behind + 0.5 * bar * 0.6)
            s.fill((rr, c[cc]), FENCE, color, fine=4, mottle=0.05, light=s.side_light)


# -- objects ----------------------------------------------------------------------
def _tree(s, X, Z):
    rng = s.rng
    trunk_h = rng.uniform(1.6, 3.0)
    r = rng.uniform(1.0, 2.2)
    bark = s.jitter((78, 66, 52), 8)
    s.fill(s.rect(X - 0.09, X + 0.09, 0, trunk_h + r * 0.5, Z), VEGETATION, bark, fine=8, mottle=0.15)
    leaf = s.jitter(rng.choice([[58, 96, 40], [72, 108, 45], [48, 80, 38], [110, 112, 45]]), 8)
    for _ in range(rng.integers(3, 7)):
        rad = r * rng.uniform(0.45, 0.8)
        s.fill(s.disk(X + rng.uniform(-0.6, 0.6) * r, trunk_h + r + rng.uniform(-0.4, 0.5) * r, Z, rad,
                      rad * rng.uniform(0.8, 1.1)),
               VEGETATION, leaf * rng.uniform(0.85, 1.15), fine=16, mottle=0.35)


def _pole(s, X, Z, height, width=0.07):
    color = s.jitter(s.rng.choice([[120, 120, 125], [55, 62, 55], [70, 70, 72]]), 6)
    s.fill(s.rect(X - width / 2, X + width / 2, 0, height, Z), POLE, color, fine=2, mottle=0.04)
    return color


def _streetlight(s, X, Z, toward):
    height = s.rng.uniform(4.0, 6.5)
    color = _pole(s, X, Z, height)
    arm = X + toward * s.rng.uniform(0.6, 1.6)
    s.fill(s.segment((X, height - 0.05), (arm, height + 0.1), Z, 0.06), POLE, color, fine=2)
    s.fill(s.rect(min(arm, arm - toward * 0.5), max(arm, arm - toward * 0.5), height, height + 0.14, Z),
           POLE, color * 0.8, fine=2)


def _traffic_light(s, X, Z, toward):
    rng = s.rng
    if rng.random() < 0.3:  # hanging over the road from an arm
        height = rng.uniform(4.5, 5.5)
        color = _pole(s, X, Z, height + 0.3, 0.1)
        cx = X + toward * rng.uniform(1.5, 3.5)
        s.fill(s.segment((X, height), (cx, height), Z, 0.08), POLE, color, fine=2)
        top = height
    else:
        top = rng.uniform(2.8, 3.4)
        _pole(s, X, Z, top - 0.1, 0.09)
        cx = X
    box = s.jitter(rng.choice([[32, 32, 32], [180, 150, 40], [60, 70, 60]]), 5)
    front = rng.random() < 0.8
    s.fill(s.rect(cx - 0.16, cx + 0.16, top - 0.85, top, Z), LIGHT, box, fine=2, mottle=0.03)
    if front:
        lit = rng.integers(3)
        for j, lamp in enumerate(([255, 40, 30], [255, 190, 30], [60, 230, 100])):
            c = np.array(lamp, np.float32) if j == lit else np.array(lamp, np.float32) * 0.25
            s.fill(s.disk(cx, top - 0.15 - 0.27 * j, Z, 0.085), LIGHT, c, fine=1, mottle=0.0)


def _traffic_sign(s, X, Z):
    rng = s.rng
    top = rng.uniform(2.2, 2.9)
    _pole(s, X, Z, top - 0.2, 0.06)
    r = rng.uniform(0.22, 0.32)
    cy = top - r
    kind = rng.integers(5)
    if not rng.random() < 0.8:  # seen from behind: a grey plate
        s.fill(s.disk(X, cy, Z, r), SIGN, s.jitter((150, 150, 152), 6), fine=2)
    elif kind == 0:  # prohibitory: red ring, white disc
        s.fill(s.disk(X, cy, Z, r), SIGN, (200, 30, 35), fine=2)
        s.fill(s.disk(X, cy, Z, r * 0.72), SIGN, (235, 235, 232), fine=2)
    elif kind == 1:  # mandatory: blue disc, white arrow
        s.fill(s.disk(X, cy, Z, r), SIGN, (30, 75, 170), fine=2)
        s.fill(s.rect(X - r * 0.12, X + r * 0.12, cy - r * 0.55, cy + r * 0.5, Z), SIGN, (235, 235, 235), fine=2)
    elif kind == 2:  # warning: red triangle, white inside
        t = np.array([-1.0, 1.0, 0.0])
        s.fill(s.poly(X + t * r * 1.1, cy + np.array([-0.8, -0.8, 1.1]) * r, Z), SIGN, (200, 30, 35), fine=2)
        s.fill(s.poly(X + t * r * 0.7, cy + np.array([-0.55, -0.55, 0.65]) * r, Z), SIGN, (235, 235, 230), fine=2)
    elif kind == 3:  # information: blue square
        s.fill(s.rect(X - r, X + r, cy - r, cy + r, Z), SIGN, (30, 75, 170), fine=2)
        s.fill(s.rect(X - r * 0.3, X + r * 0.3, cy - r * 0.6, cy + r * 0.2, Z), SIGN, (235, 235, 235), fine=2)
    else:  # priority road: yellow diamond on white
        s.fill(s.poly(X + np.array([0, r, 0, -r]), cy + np.array([-r, 0, r, 0]), Z), SIGN, (235, 235, 230), fine=2)
        s.fill(s.poly(X + np.array([0, r, 0, -r]) * 0.6, cy + np.array([-r, 0, r, 0]) * 0.6, Z), SIGN,
               (235, 190, 30), fine=2)


def _human(s, X, Z, cls, height, clothes, pose="stand", d=1, seat=None, helmet=0.0):
    """A person standing or walking, or (cls=RIDER) sitting on a two-wheeler at `seat`."""
    rng = s.rng
    top_c, legs_c, skin = clothes
    hx = 0.085 * height  # half the width of the hips
    if pose == "ride":
        hip = np.array(seat, float)
        shoulder = hip + np.array([d * 0.22, 0.42]) * height / 1.4
        knee = hip + np.array([d * 0.28, -0.12]) * height / 1.4
        foot = knee + np.array([-d * 0.08, -0.38]) * height / 1.4
        s.fill(s.segment(hip, knee, Z, 0.16 * height / 1.4), cls, legs_c, fine=4)
        s.fill(s.segment(knee, foot, Z, 0.13 * height / 1.4), cls, legs_c, fine=4)
        s.fill(s.segment(hip, shoulder, Z, 0.27 * height / 1.4), cls, top_c, fine=4, mottle=0.06)
        hand = hip + np.array([d * 0.5, 0.2]) * height / 1.4
        s.fill(s.segment(shoulder, hand, Z, 0.08 * height / 1.4), cls, top_c * 0.9, fine=4)
        head = shoulder + np.array([d * 0.04, 0.15]) * height / 1.4
    else:
        stride = rng.uniform(0.05, 0.16) * height if pose == "walk" else 0.02 * height
        hip_y = 0.48 * height
        for sx in (-1, 1):
            s.fill(s.segment((X + sx * hx * 0.5, hip_y), (X + sx * (hx * 0.4 + stride), 0.0), Z, 0.075 * height),
                   cls, legs_c, fine=4)
        s.fill(s.poly([X - hx, X + hx, X + hx * 1.25, X - hx * 1.25], [hip_y - 0.03, hip_y - 0.03,
                                                                     0.8 * height, 0.8 * height], Z),
               cls, top_c, fine=4, mottle=0.06)
        for sx in (-1, 1):
            s.fill(s.segment((X + sx * hx * 1.2, 0.78 * height), (X + sx * (hx * 1.3 + stride * 0.4), 0.45 * height),
                             Z, 0.05 * height), cls, top_c * 0.9, fine=4)
        head = np.array([X, 0.8 * height])
    hc = head + np.array([0, 0.08 * height])
    s.fill(s.disk(hc[0], hc[1], Z, 0.06 * height, 0.075 * height), cls, skin, fine=3)
    if pose == "ride" and rng.random() < helmet:
        s.fill(s.disk(hc[0], hc[1] + 0.02 * height, Z, 0.075 * height, 0.07 * height), cls,
               s.jitter(rng.choice([[30, 30, 30], [220, 220, 220], [180, 30, 30]]), 6), fine=2)
    else:  # hair
        s.fill(s.disk(hc[0], hc[1] + 0.04 * height, Z, 0.06 * height, 0.04 * height), cls,
               s.jitter(rng.choice([[30, 25, 20], [90, 60, 35], [160, 130, 80]]), 6), fine=3)


def _clothes(s):
    rng = s.rng
    return (s.jitter(_CLOTHES[rng.integers(len(_CLOTHES))], 10), s.jitter(_CLOTHES[rng.integers(len(_CLOTHES))], 10),
            s.jitter(_SKIN[rng.integers(len(_SKIN))], 8))


def _ring(s, X, Y, Z, r, thick, cls, tyre, inner_alpha):
    """A wheel: dark tyre ring; the inside keeps most of what is behind (spokes)."""
    outer = s.disk(X, Y, Z, r)
    if len(outer[0]) == 0:
        return
    inner = s.disk(X, Y, Z, r - thick)
    s.fill(outer, cls, tyre, fine=2)
    if len(inner[0]):
        s.label[inner] = cls
        s.color[inner] = s.color[inner] * (1 - inner_alpha) + np.float32(inner_alpha * 150)


def _bicycle(s, X, Z, d, rider):
    rng = s.rng
    frame = s.jitter(_TWO_WHEEL_COLORS[rng.integers(len(_TWO_WHEEL_COLORS))], 10)
    r, wb, t = 0.27, 0.84, 0.035
    rear, front = (X - d * wb / 2, r), (X + d * wb / 2, r)
    bb = (X - d * 0.05, r * 0.95)
    seat = (X - d * 0.2, 0.78)
    head = (X + d * 0.3, 0.8)
    for wx in (rear[0], front[0]):
        _ring(s, wx, r, Z, r, 0.045, BICYCLE, (25, 25, 25), 0.3)
    for a, b in ((rear, bb), (rear, seat), (bb, seat), (seat, head), (bb, head), (head, front)):
        s.fill(s.segment(a, b, Z, t), BICYCLE, frame, fine=2)
    s.fill(s.segment((head[0] - d * 0.04, 0.9), (head[0] + d * 0.05, 0.92), Z, 0.03), BICYCLE, (30, 30, 30))
    s.fill(s.rect(seat[0] - 0.07, seat[0] + 0.07, seat[1], seat[1] + 0.04, Z), BICYCLE, (25, 25, 25))
    if rider:
        _human(s, X, Z, RIDER, rng.uniform(1.25, 1.45), _clothes(s), "ride", d, seat=(seat[0], seat[1] + 0.03),
               helmet=0.4)
    elif rng.random() < 0.3:  # its owner standing next to it: a person, not a rider
        _human(s, X + rng.uniform(-0.6, 0.6), Z - 0.3, PERSON, rng.uniform(1.25, 1.45), _clothes(s))


def _motorcycle(s, X, Z, d, rider):
    rng = s.rng
    body = s.jitter(_TWO_WHEEL_COLORS[rng.integers(len(_TWO_WHEEL_COLORS))], 10)
    r, wb = 0.3, 1.1
    for wx in (X - d * wb / 2, X + d * wb / 2):
        _ring(s, wx, r, Z, r, 0.1, MOTORCYCLE, (20, 20, 22), 0.8)
    xs = X + d * np.array([-0.55, -0.25, 0.2, 0.45, 0.55, 0.15, -0.3])
    ys = np.array([0.62, 0.78, 0.86, 0.95, 0.6, 0.35, 0.4])
    s.fill(s.poly(xs, ys, Z), MOTORCYCLE, body, fine=2, mottle=0.03)
    s.fill(s.rect(X - 0.18, X + 0.18, 0.25, 0.55, Z), MOTORCYCLE, (60, 60, 62), fine=4)  # engine
    s.fill(s.segment((X - d * 0.5, 0.28), (X + d * 0.05, 0.25), Z, 0.06), MOTORCYCLE, (185, 185, 190), fine=2)
    s.fill(s.poly(X + d * np.array([-0.45, -0.05, -0.05, -0.5]), np.array([0.8, 0.84, 0.9, 0.86]), Z),
           MOTORCYCLE, (25, 25, 25), fine=2)  # seat
    s.fill(s.disk(X + d * 0.52, 0.85, Z, 0.06), MOTORCYCLE, (240, 235, 200), fine=1)
    if rider:
        _human(s, X, Z, RIDER, rng.uniform(1.3, 1.45), _clothes(s), "ride", d, seat=(X - d * 0.22, 0.88),
               helmet=0.95)
    elif rng.random() < 0.2:
        _human(s, X + rng.uniform(-0.8, 0.8), Z - 0.3, PERSON, rng.uniform(1.25, 1.45), _clothes(s))


def _car(s, X, Z, facing):
    rng = s.rng
    sc = rng.uniform(0.9, 1.1)
    w, length = 1.45 * sc, rng.uniform(3.2, 4.0) * sc
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(_CAR_COLORS[rng.integers(len(_CAR_COLORS))], 8)
    tex = dict(fine=2.0, mottle=0.03)
    s.box(X0, X1, 0.22, 0.7, Z, Z + length, CAR, color, **tex)
    cab = s.box(X0 + 0.08, X1 - 0.08, 0.7, 1.12 * sc, Z + 0.25 * length, Z + 0.75 * length, CAR, color, **tex)
    glass = s.jitter(_GLASS, 6)
    s.fill(s.rect(X0 + 0.15, X1 - 0.15, 0.74, 1.08 * sc, Z + 0.25 * length), CAR, glass, fine=2, mottle=0.05)
    if "side" in cab:
        sx = X1 if X1 < 0 else X0
        for za, zb in ((0.28, 0.48), (0.52, 0.72)):
            s.side_rect(sx, 0.75, 1.07 * sc, Z + za * length, Z + zb * length, CAR, glass, fine=2)
    for sx in (X0, X1 - 0.26):  # wheels under the body
        s.fill(s.rect(sx, sx + 0.26, 0, 0.3, Z + 0.4), CAR, (22, 22, 24), fine=2)
    lamp = (200, 25, 25) if facing > 0 else (235, 230, 205)
    for sx in (X0 + 0.05, X1 - 0.3):
        s.fill(s.rect(sx, sx + 0.25, 0.52, 0.63, Z), CAR, lamp, fine=2)
    s.fill(s.rect(X - 0.22, X + 0.22, 0.3, 0.4, Z), CAR, (230, 230, 225), fine=2)  # plate
    if X1 < 0 or X0 > 0:
        sx = X1 if X1 < 0 else X0
        for zc in (Z + 0.18 * length, Z + 0.8 * length):
            s.side_wheel(sx, zc, 0.3, CAR)


def _shadow(s, X0, X1, Z0, Z1, strength=0.45):
    """Darken the ground under a vehicle (label unchanged)."""
    idx = s.poly([X0, X1, X1, X0], [0.0] * 4, [Z0, Z0, Z1, Z1])
    s.light[idx] *= strength


def _truck(s, X, Z, facing):
    rng = s.rng
    w = rng.uniform(2.1, 2.4)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(_HEAVY_COLORS[rng.integers(len(_HEAVY_COLORS))], 10)
    cab_color = color if rng.random() < 0.5 else s.jitter(_HEAVY_COLORS[rng.integers(len(_HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    cargo_len, cab_len = rng.uniform(4.5, 7), 2.0
    if facing > 0:  # from behind: the cargo box is nearest
        cab_z, cargo_z = Z + cargo_len, Z
    else:
        cab_z, cargo_z = Z, Z + cab_len
    cargo_h = rng.uniform(2.8, 3.3)
    parts = [(cargo_z, "cargo"), (cab_z, "cab")]
    for z, part in sorted(parts, reverse=True):
        if part == "cargo":
            s.box(X0, X1, 0.5, 0.9, z, z + cargo_len, TRUCK, (40, 40, 42), fine=3)  # chassis
            f = s.box(X0, X1, 0.9, cargo_h, z, z + cargo_len, TRUCK, color, **tex)
            if facing > 0:
                s.fill(s.rect(X - 0.03, X + 0.03, 0.95, cargo_h - 0.05, z), TRUCK, color * 0.6)
            if "side" in f and rng.random() < 0.5:
                stripe = s.jitter(_HEAVY_COLORS[rng.integers(len(_HEAVY_COLORS))], 10)
                sx = X1 if X1 < 0 else X0
                s.side_rect(sx, 1.6, 2.2, z + 0.3, z + cargo_len - 0.3, TRUCK, stripe, **tex)
        else:
            s.box(X0 + 0.05, X1 - 0.05, 0.45, 2.5, z, z + cab_len, TRUCK, cab_color, **tex)
            if facing < 0:
                s.fill(s.rect(X0 + 0.2, X1 - 0.2, 1.55, 2.35, z), TRUCK, s.jitter(_GLASS, 6), fine=2)
                s.fill(s.rect(X0 + 0.3, X1 - 0.3, 0.7, 1.2, z), TRUCK, (45, 45, 48), fine=3)  # grille
    for sx in (X0 + 0.05, X1 - 0.4):
        s.fill(s.rect(sx, sx + 0.35, 0, 0.5, Z + 0.6), TRUCK, (22, 22, 24), fine=2)
    if X1 < 0 or X0 > 0:
        sx = X1 if X1 < 0 else X0
        for zc in (Z + 1.0, Z + cab_len + cargo_len - 1.2, Z + cab_len + cargo_len - 2.3):
            s.side_wheel(sx, zc, 0.45, TRUCK)


def _bus(s, X, Z, facing):
    rng = s.rng
    w, length, height = 2.5, rng.uniform(10, 13), rng.uniform(2.8, 3.1)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(_HEAVY_COLORS[rng.integers(len(_HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    f = s.box(X0, X1, 0.3, height, Z, Z + length, BUS, color, **tex)
    glass = s.jitter(_GLASS, 6)
    if facing < 0:  # front: big windscreen and a destination display
        s.fill(s.rect(X0 + 0.12, X1 - 0.12, 1.0, height - 0.4, Z), BUS, glass, fine=2, mottle=0.05)
        s.fill(s.rect(X0 + 0.3, X1 - 0.3, height - 0.35, height - 0.1, Z), BUS, (25, 25, 25), fine=2)
        s.fill(s.rect(X0 + 0.5, X1 - 0.5, height - 0.28, height - 0.17, Z), BUS, (250, 160, 40), fine=2)
    else:
        s.fill(s.rect(X0 + 0.25, X1 - 0.25, 1.7, height - 0.3, Z), BUS, glass, fine=2, mottle=0.05)
    if "side" in f:
        sx = X1 if X1 < 0 else X0
        z = Z + 0.4
        while z < Z + length - 1.2:
            s.side_rect(sx, 1.35, height - 0.35, z, z + 1.05, BUS, glass, fine=2)
            z += 1.25
        for zc in (Z + 2.2, Z + length - 2.6):
            s.side_wheel(sx, zc, 0.48, BUS)
    for sx in (X0 + 0.1, X1 - 0.45):
        s.fill(s.rect(sx, sx + 0.35, 0, 0.35, Z + 1.5), BUS, (22, 22, 24), fine=2)


def _train(s, X, Z, facing):
    """A tram: very long, window band, pantograph, on rails; shares the bus/truck palette."""
    rng = s.rng
    w, length, height = 2.4, rng.uniform(25, 35), rng.uniform(3.2, 3.5)
    X0, X1 = X - w / 2, X + w / 2
    color = s.jitter(_HEAVY_COLORS[rng.integers(len(_HEAVY_COLORS))], 10)
    tex = dict(fine=2.5, mottle=0.04)
    # Pantograph: a thin diamond above the roof, a few metres back.
    zp = Z + rng.uniform(3, 6)
    for a, b in (((X - 0.5, height), (X, height + 0.9)), ((X + 0.5, height), (X, height + 0.9)),
                 ((X - 0.6, height + 0.9), (X + 0.6, height + 0.9))):
        s.fill(s.segment(a, b, zp, 0.05), TRAIN, (45, 45, 48), fine=2)
    f = s.box(X0, X1, 0.25, height, Z, Z + length, TRAIN, color, **tex)
    s.box(X0 + 0.05, X1 - 0.05, 0.05, 0.5, Z + 0.3, Z + length, TRAIN, (40, 40, 42), fine=3)  # bogies/skirt
    s.fill(s.rect(X0 + 0.1, X1 - 0.1, 1.3, height - 0.5, Z), TRAIN, s.jitter(_GLASS, 6), fine=2, mottle=0.05)
    s.fill(s.rect(X0 + 0.1, X1 - 0.1, height - 0.35, height - 0.12, Z), TRAIN, (25, 25, 25), fine=2)
    for sx in (X0 + 0.25, X1 - 0.45):
        s.fill(s.rect(sx, sx + 0.2, 0.65, 0.85, Z), TRAIN, (240, 235, 210) if facing < 0 else (200, 30, 30), fine=1)
    if "side" in f:
        sx = X1 if X1 < 0 else X0
        z = Z + 0.8
        while z < Z + length - 1.0:
            s.side_rect(sx, 1.3, height - 0.6, z, z + 1.6, TRAIN, s.jitter(_GLASS, 4), fine=2)
            z += 1.95
        s.side_rect(sx, 0.55, 0.75, Z, Z + length, TRAIN, color * 0.7, **tex)  # skirt band


def _static(s, X, Z):
    """Void clutter (bins, advertising columns, boxes): labelled ignore."""
    rng = s.rng
    w, h = rng.uniform(0.4, 1.2), rng.uniform(0.6, 2.2)
    color = np.clip(rng.uniform(30, 220, 3), 0, 255).astype(np.float32)
    s.box(X - w / 2, X + w / 2, 0, h, Z, Z + rng.uniform(0.4, 1.0), _STATIC, color, fine=4, mottle=0.08)


def _ego(s):
    """The bonnet of the recording car at the bottom of the image (void, as in Cityscapes)."""
    rng = s.rng
    depth = s.h * rng.uniform(0.06, 0.13)
    x = np.arange(s.w, dtype=np.float64)
    cx = s.w * rng.uniform(0.45, 0.55)
    top = s.h - depth * (1 - 0.6 * ((x - cx) / (0.7 * s.w)) ** 2)
    rows = np.arange(s.h)[:, None]
    m = rows >= top[None, :]
    color = s.jitter(rng.choice([[40, 40, 45], [150, 150, 155], [20, 30, 60]]), 6)
    shade = np.clip(1 - (rows - top[None, :]) / max(depth, 1) * 0.5, 0.4, 1.0)
    s.fill(m, _EGO, color, fine=2, mottle=0.02)
    s.light[m] = shade[m]


def _populate(s, p):
    """The objects of a scene as (depth, draw) pairs, to be painted far to near."""
    rng = s.rng
    objs = []
    zb = s.f * CAM / (s.h - s.yh)  # depth of the ground at the bottom row
    zmin = 0.9 * zb

    def depth(lo, hi):  # more objects near than far, as on a street
        return float(np.exp(rng.uniform(np.log(max(lo, zmin)), np.log(max(hi, zmin + 1)))))

    def add(z, fn, *args):
        objs.append((z, fn, args))

    rl, rr = p["rl"], p["rr"]
    for sgn, edge, walk in ((-1, rl, p["sl"]), (1, rr, p["sr"])):
        curb_x = sgn * (edge + 0.35)
        if rng.random() < 0.55:  # tree rows
            z = rng.uniform(zmin, zmin + 8)
            gap = rng.uniform(6, 14)
            while z < 70:
                add(z, _tree, sgn * (edge + walk * rng.uniform(0.5, 0.85)), z)
                z += gap * rng.uniform(0.8, 1.2)
        if rng.random() < 0.45:  # street lights
            z = rng.uniform(zmin + 2, 25)
            while z < 90:
                add(z, _streetlight, curb_x, z, -sgn)
                z += rng.uniform(20, 35)
        for _ in range(rng.poisson(0.8)):
            add_z = depth(4, 60)
            add(add_z, _traffic_sign, curb_x + sgn * rng.uniform(0, 0.3), add_z)
        if rng.random() < 0.3:
            z = depth(7, 60)
            add(z, _traffic_light, curb_x, z, -sgn)
        for _ in range(rng.poisson(1.3)):  # pedestrians on the sidewalk
            z = depth(4, 50)
            pose = "walk" if rng.random() < 0.6 else "stand"
            add(z, _human, sgn * (edge + rng.uniform(0.3, walk)), z, PERSON, rng.uniform(1.2, 1.5), _clothes(s), pose)
        for _ in range(rng.poisson(0.12)):  # parked bicycles
            z = depth(4, 30)
            add(z, _bicycle, sgn * (edge + rng.uniform(0.4, walk)), z, rng.choice([-1, 1]), False)
        if rng.random() < 0.25:
            z = depth(8, 40)
            add(z, _static, sgn * (edge + rng.uniform(0.4, walk)), z)
        if p["park_l" if sgn < 0 else "park_r"]:  # parked cars along the curb
            z = rng.uniform(zmin, zmin + 6)
            while z < 60:
                if rng.random() < 0.75:
                    add(z, _car, sgn * (edge - PARKING / 2), z, 1 if sgn > 0 else rng.choice([-1, 1]))
                z += rng.uniform(4.6, 7)

    # Traffic in the lanes: our direction (seen from behind) at X ~ 0, oncoming on the left.
    lane = p["lane"]
    lanes = [(-k * lane, 1 if k == 0 else -1) for k in range(p["lanes_left"] + 1)]
    for x, facing in lanes:
        z = rng.uniform(zmin + 3, 15)
        while z < 80:
            u = rng.random()
            xx = x + rng.uniform(-0.3, 0.3)
            if u < 0.045:
                add(z, _truck, xx, z, facing)
                z += 9
            elif u < 0.08:
                add(z, _bus, xx, z, facing)
                z += 14
            else:
                add(z, _car, xx, z, facing)
            z += rng.uniform(6, 20)
    if p["rails"] and rng.random() < 0.8:
        z = depth(14, 60)
        add(z, _train, p["rail_x"], z, rng.choice([-1, 1]))
    # Two-wheelers (side view), mostly ridden: on the road edge or crossing.
    for _ in range(rng.poisson(0.3)):
        z = depth(5, 40)
        x = rng.uniform(-rl + 0.5, rr + 0.5)
        add(z, _bicycle, x, z, rng.choice([-1, 1]), rng.random() < 0.75)
    for _ in range(rng.poisson(0.15)):
        z = depth(5, 40)
        x = rng.uniform(-rl + 0.5, rr + 0.5)
        add(z, _motorcycle, x, z, rng.choice([-1, 1]), rng.random() < 0.7)
    if p["zebra"] is not None:  # people crossing
        for _ in range(rng.poisson(1.5)):
            z = p["zebra"] + rng.uniform(0.3, 2.0)
            add(z, _human, rng.uniform(-rl, rr), z, PERSON, rng.uniform(1.2, 1.5), _clothes(s), "walk")
    objs.sort(key=lambda o: -o[0])
    return objs


def _finish(s, rng):
    """Texture, lighting and sensor noise; returns the uint8 image."""
    h, w = s.h, s.w
    # Two octaves of smooth noise, summed at the coarse grid and upsampled once.
    fine_grid = _smooth_noise(rng, 41, int(41 * w / h) + 1, 12) * 0.6
    fine_grid += rng.standard_normal(fine_grid.shape).astype(np.float32) * 0.8
    mot = _upsample(fine_grid, h, w)
    light = s.light * (1 + s.mottle * mot)
    # Global light: brightness, a colour cast, and a soft left-right gradient.
    gain = rng.uniform(0.7, 1.2) * (1 + rng.uniform(-0.25, 0.25) * (np.arange(w, dtype=np.float32) / w - 0.5))
    light *= gain[None, :].astype(np.float32)
    # Channel-planar arithmetic: broadcasting over a trailing axis of 3 is slow.
    img = np.ascontiguousarray(s.color.transpose(2, 0, 1))
    img *= light
    img *= rng.uniform(0.93, 1.07, 3).astype(np.float32)[:, None, None]  # colour cast
    img += s.fine * ((rng.random((h, w), dtype=np.float32) - np.float32(0.5)) * np.float32(3.46))
    # Sensor noise, uniform (cheaper to draw than normal) with sd 1.5-4.
    img += (rng.random((3, h, w), dtype=np.float32) - np.float32(0.5)) * np.float32(rng.uniform(1.5, 4.0) * 3.46)
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 0))


def _render(height, width, rng):
    """(image, label with internal void codes) of one scene."""
    s = _Scene(height, width, rng)
    p = _layout(rng)
    _sky(s, p)
    _ground(s, p)
    _skyline(s, p)
    _facades(s, p)
    _walls(s, p)
    for z, fn, args in _populate(s, p):
        if fn in (_car, _truck, _bus, _train):
            x = args[0]
            half = {_car: 0.75, _truck: 1.2, _bus: 1.25, _train: 1.2}[fn]
            _shadow(s, x - half - 0.1, x + half + 0.1, z - 0.2, z + {_car: 3.8, _truck: 8, _bus: 11, _train: 25}[fn])
        fn(s, *args)
    if rng.random() < 0.5:
        _ego(s)
    return _finish(s, rng), s.label


def render_scene(height, width, rng):
    """One street scene: (image uint8 H x W x 3 RGB, label uint8 H x W, 255 = ignore)."""
    if height < 16 or width < 16:
        raise ValueError(f"render_scene: size {height}x{width} is too small (at least 16x16)")
    image, label = _render(int(height), int(width), rng)
    label[label >= _EGO] = IGNORE
    return image, label


def to_cityscapes_ids(label):
    """Train-id label (255 = ignore) -> Cityscapes label ids (ignore -> 0, "unlabeled")."""
    return _CITYSCAPES_LUT[label]


# -- writing ------------------------------------------------------------------------
def sample_rng(seed, split, index):
    """The generator of one sample: depends only on (seed, split, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def sample_key(split, index):
    return f"{split}_{index:06d}"


def encode_jpeg(image, restart=False):
    """RGB uint8 array -> JPEG bytes as a camera or Pillow writes them; with `restart`, as csst
    stores them in shards: transcoded losslessly to restart markers (the same pixels)."""
    import simplejpeg

    data = simplejpeg.encode_jpeg(image, quality=JPEG_QUALITY, colorspace="RGB", colorsubsampling=JPEG_SUBSAMPLING)
    if restart:
        from csst_data.jpeg.restart import with_restart_index
        from csst_data.jpeg.lossless import transcode

        data = with_restart_index(transcode(data))
    return data


def _encode_png(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _make_sample(task):
    """One sample's encoded members; runs in worker processes."""
    from csst_data.store.codecs import encode_json, encode_label

    split, index, seed, h, w, layout = task
    image, raw = _render(h, w, sample_rng(seed, split, index))
    if layout == "cityscapes":
        return _encode_png(image), _encode_png(_CITYSCAPES_LUT[raw])
    label = raw.copy()
    label[label >= _EGO] = IGNORE
    counts = np.bincount(label.ravel(), minlength=256)
    meta = {"source": "csst-synth", "split": split, "index": index, "seed": seed, "height": h, "width": w,
            "class_pixels": counts[:NUM_CLASSES].tolist(), "ignore_pixels": int(counts[IGNORE])}
    return encode_jpeg(image, restart=True), encode_label(label, NUM_CLASSES), encode_json(meta)


def cityscapes_name(split, index):
    """(city, file stem) of a sample in the Cityscapes layout: {city}_{seq:06d}_000019."""
    cities = _CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_000019"


def _written_paths(out, layout):
    if layout == "cityscapes":
        return [os.path.join(out, d) for d in ("leftImg8bit", "gtFine")]
    return [os.path.join(out, d) for d in ("labeled", "unlabeled", "unlabeled-gt", "val")]


class FolderNotEmpty(ValueError):
    """The output folder holds something and `force` was not given."""


def write_dataset(out, labeled, unlabeled, val, size=(256, 512), seed=0, layout="shards", workers=1,
                  progress=None, force=False):
    """Render and write the three splits to `out`; returns {split: number of samples}.

    layout="shards": shard sets `labeled/`, `unlabeled/` (images only),
    `unlabeled-gt/` (their true labels, same keys) and `val/`.
    layout="cityscapes": `leftImg8bit/{train,train_extra,val}/{city}/*_leftImg8bit.png`
    and `gtFine/{train,val}/{city}/*_gtFine_labelIds.png` with Cityscapes label ids.
    `out` must be empty or missing unless `force`, which replaces what an
    earlier run wrote there. `progress(done, total)` is called per sample written.
    """
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise ValueError(f"size {h}x{w} is too small (at least 16x16)")
    if layout not in ("shards", "cityscapes"):
        raise ValueError(f"layout {layout!r}: expected 'shards' or 'cityscapes'")
    counts = {"labeled": int(labeled), "unlabeled": int(unlabeled), "val": int(val)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"sample counts must be >= 0, got {counts}")
    out = str(out)
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise FolderNotEmpty(f"{out} is not empty; choose an empty folder, or pass force=True to replace "
                                 "what an earlier run wrote there")
        for path in _written_paths(out, layout):
            if os.path.isdir(path):
                shutil.rmtree(path)
    elif os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)

    tasks = [(split, i, int(seed), h, w, layout) for split in SPLITS for i in range(counts[split])]
    results = _map(_make_sample, tasks, workers)
    total = len(tasks)
    bar = _Counter(progress, total)
    try:
        if layout == "cityscapes":
            _write_cityscapes(out, tasks, results, bar)
        else:
            _write_shards(out, tasks, results, counts, seed, (h, w), bar)
    finally:
        if hasattr(results, "close"):  # stops the worker pool if writing failed
            results.close()
    return counts


def _map(fn, tasks, workers):
    """Ordered map, in worker processes when workers > 1."""
    if workers <= 1 or len(tasks) < 2:
        return map(fn, tasks)
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(workers)
    it = pool.imap(fn, tasks, chunksize=4)

    def gen():
        try:
            yield from it
        finally:
            pool.terminate()
            pool.join()

    return gen()


class _Counter:
    """Counts written samples for a `progress(done, total)` callback."""

    def __init__(self, progress, total):
        self.progress, self.total, self.done = progress if callable(progress) else None, total, 0


def _advance(bar, split):
    bar.done += 1
    if bar.progress:
        bar.progress(bar.done, bar.total)


def _write_shards(out, tasks, results, counts, seed, size, bar):
    from csst_data.store.shards import SetInfo, ShardWriter

    def writer(name, fields, split):
        info = SetInfo(num_classes=NUM_CLASSES, class_names=CLASS_NAMES, fields=fields, producer="csst synth",
                       extra={"synth": {"seed": int(seed), "split": split, "size": list(size)}})
        return ShardWriter(os.path.join(out, name), info, maxcount=SHARD_MAXCOUNT)

    writers = {
        "labeled": [writer("labeled", ["jpg", "label.npy.zst", "json"], "labeled")],
        "unlabeled": [writer("unlabeled", ["jpg", "json"], "unlabeled"),
                      writer("unlabeled-gt", ["label.npy.zst", "json"], "unlabeled")],
        "val": [writer("val", ["jpg", "label.npy.zst", "json"], "val")],
    }
    try:
        for (split, index, *_), (jpg, label, meta) in zip(tasks, results):
            key = sample_key(split, index)
            if split == "unlabeled":
                image_w, gt_w = writers[split]
                image_w.write({"__key__": key, "jpg": jpg, "json": meta})
                gt_w.write({"__key__": key, "label.npy.zst": label, "json": meta})
            else:
                writers[split][0].write({"__key__": key, "jpg": jpg, "label.npy.zst": label, "json": meta})
            _advance(bar, split)
    except BaseException:
        for ws in writers.values():
            for w in ws:
                w.abort()
        raise
    for ws in writers.values():
        for w in ws:
            w.close()


def _write_cityscapes(out, tasks, results, bar):
    from csst_data.store.shards import atomic_write_bytes

    for (split, index, *_), (image_png, label_png) in zip(tasks, results):
        cs_split = _CITYSCAPES_SPLIT[split]
        city, stem = cityscapes_name(split, index)
        img_dir = os.path.join(out, "leftImg8bit", cs_split, city)
        os.makedirs(img_dir, exist_ok=True)
        atomic_write_bytes(os.path.join(img_dir, f"{stem}_leftImg8bit.png"), image_png)
        if split != "unlabeled":  # train_extra has images only
            gt_dir = os.path.join(out, "gtFine", cs_split, city)
            os.makedirs(gt_dir, exist_ok=True)
            atomic_write_bytes(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), label_png)
        _advance(bar, split)
