"""Background of a scene: sky, ground (road, sidewalks, grass), facades, skyline, walls, the ego bonnet."""

from __future__ import annotations

import numpy as np

from csst_demo.classes import (BUILDING, EGO, FENCE, ROAD, SIDEWALK, TERRAIN, VEGETATION, WALL)
from csst_demo.scene import BUILDING_COLORS, CAM, GLASS, PARKING, Scene, frac, smooth_noise

def sky(s: Scene, p: dict) -> None:
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
    clouds = np.clip((smooth_noise(rng, s.h, s.w, 4)[:n] - rng.uniform(0.2, 1.5)) * 0.6, 0, 0.8)[..., None]
    s.color[:n] = grad[:, None, :] * (1 - clouds) + np.float32(238) * clouds
    s.fine[:n] = 1.5
    s.mottle[:n] = 0.02
    p["sky_bottom"] = bottom


def ground(s: Scene, p: dict) -> None:
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
    joints = ((frac(X / 0.9) < 0.07) & (0.9 * s.f / Z > 4)) | ((frac(Z / 0.9) < 0.07) & (0.9 * s.f / Z ** 2 > 4))
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
    white = s.jitter((222, 222, 215), 6, 0.05)
    col[_road_marks(p, X, Z, road)] = white
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



def _road_marks(p, X, Z, road):
    """Mask of the white paint on the road: lane boundaries, edge lines, a zebra crossing."""
    rl, rr, lane = p["rl"], p["rr"], p["lane"]
    marks = np.zeros_like(road)
    dashed = frac(Z / 9.0) < 0.45
    for k in range(p["lanes_left"]):  # lane boundaries; the first one parts the two directions
        line = np.abs(X + lane * (k + 0.5)) < 0.065
        marks |= line if k == 0 and p["solid_centre"] else line & dashed
    edge_r, edge_l = rr - 0.25 - PARKING * p["park_r"], -rl + 0.25 + PARKING * p["park_l"]
    marks |= (np.abs(X - edge_r) < 0.05) | (np.abs(X - edge_l) < 0.05)  # edge lines
    if p["zebra"] is not None:
        marks |= (Z > p["zebra"]) & (Z < p["zebra"] + 2.5) & (frac(X / 1.0) < 0.5)
    return marks & road


def _plane_columns(s, sgn, X):
    """Columns showing the vertical plane at lateral X*sgn, and the depth of each."""
    if sgn < 0:
        cols = np.arange(0, max(int(np.floor(s.vx)), 0))
        dx = s.vx - cols
    else:
        cols = np.arange(min(int(np.ceil(s.vx)), s.w), s.w)
        dx = cols - s.vx
    return cols, s.f * X / np.maximum(dx, 0.5)


def facades(s: Scene, p: dict) -> None:
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
            win = ((frac(u) > 0.5 - g["win_a"] / 2) & (frac(u) < 0.5 + g["win_a"] / 2)
                   & (frac(v) > 0.3) & (frac(v) < 0.3 + g["win_b"] * 0.7)
                   & (yw > 3.0) & (yw < g["height"] - 0.6) & (zw > 0.6) & (zw < g["z1"] - g["z0"] - 0.6))
            # Window brightness varies per window (hash of its floor and column).
            h = ((np.floor(u) * 7919 + np.floor(v) * 104729 + i * 31) % 97) / 97.0
            color[win] = GLASS * (0.6 + 0.9 * h[win, None])
            if g["shop"]:
                shop = (yw > 0.3) & (yw < 2.2) & (frac(zw / 4.0) > 0.15)
                color[shop] = GLASS * 0.7
            top_band = yw > g["height"] - 0.35  # cornice
            color[top_band] *= 0.8
            s.fill((rr, c[cc]), BUILDING, color, fine=3, mottle=0.08, light=s.side_light)


def skyline(s: Scene, p: dict) -> None:
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
            base = BUILDING_COLORS[rng.integers(len(BUILDING_COLORS))] if kind == BUILDING else np.array((62, 98, 42))
            color = 0.55 * base + 0.45 * haze
            s.fill((slice(y0, y1), slice(x0, x1)), kind, color, fine=4 if kind == BUILDING else 8,
                   mottle=0.05 if kind == BUILDING else 0.2)
        x += bw


def walls(s: Scene, p: dict) -> None:
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
            color[(frac(yw / 0.35) < 0.1) | (yw > height - 0.12)] *= 0.78  # block courses, coping
            s.fill((rr, c[cc]), WALL, color, fine=6, mottle=0.12, light=s.side_light)
        else:
            bar = s.jitter(rng.choice([[105, 105, 110], [125, 95, 65], [55, 85, 55]]), 8)
            period = rng.uniform(0.12, 0.3)
            solid = (frac(zw / period) < 0.35) | (yw > height - 0.1) | (np.abs(yw - height * 0.45) < 0.05)
            behind = s.color[rr, c[cc]]
            color = np.where(solid[:, None], bar, 0.5 * behind + 0.5 * bar * 0.6)
            s.fill((rr, c[cc]), FENCE, color, fine=4, mottle=0.05, light=s.side_light)



def ego(s: Scene) -> None:
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
    s.fill(m, EGO, color, fine=2, mottle=0.02)
    s.light[m] = shade[m]
