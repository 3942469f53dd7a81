"""Procedural 32x32 RGB landscapes: the image data set of the dual-scale image denoiser.

Every image is drawn from its own generator, `numpy.random.default_rng([seed, index])`, so image
`i` of a set depends only on (seed, i): any prefix, slice or count gives the same pictures, and
a set of another seed is an independent draw of the same distribution (the held-out set of the
Fréchet distance uses seed 1, training seed 0). Nothing here trains, downloads or writes files
(`write_grid` writes only the PNG it is asked for).

A scene is rendered at 4x supersampling (128x128, in linear [0,1] RGB) and box-filtered down to
32x32, so edges are antialiased; single-pixel detail (stars, glints, grass) is then added at the
final resolution. Elements, each with random placement, size and colour jitter:

- time of day (palette): day, golden hour, dusk, night, each a three-stop sky gradient;
- a sun (with a glow) or a moon (full or crescent, with a glow), stars at night and dusk;
- soft horizontal clouds (day, golden hour, dusk);
- 2-4 layered ridges, fractal 1D profiles, hazier towards the horizon (aerial perspective),
  snow caps on tall far peaks by day, pine silhouettes on the nearest ridge sometimes;
- a foreground: a meadow (textured, speckled with grass), or a lake that reflects the sky and
  shows a glitter path under the sun or moon.

Large-scale structure: horizon line, gradient, ridge layers, sun position. Fine detail: stars,
ridge edges, pines, grass texture, ripples. Values: uint8 [N,32,32,3]; `to_model` maps them to
float32 [N,3,32,32] in [-1,1], the model's data space.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
SS = 4                      # supersampling factor
HI = SIZE * SS              # render resolution
PALETTES = ("day", "golden", "dusk", "night")
PALETTE_P = (0.34, 0.22, 0.22, 0.22)


def _c(*rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float64)


def _jitter(rng, col, amount=0.06) -> np.ndarray:
    return np.clip(col * (1 + rng.uniform(-amount, amount, 3)) + rng.uniform(-amount, amount) * 0.3, 0, 1)


def _mix(a, b, w):
    """a*(1-w) + b*w with w broadcast over the colour axis."""
    w = np.asarray(w)[..., None] if np.ndim(w) else w
    return a * (1 - w) + b * w


def _noise1d(rng, n: int, octaves: int, base_cells: int, persistence: float) -> np.ndarray:
    """Fractal value noise on [0,1) sampled at n points (piecewise linear: peaky ridges)."""
    u = (np.arange(n) + 0.5) / n
    out = np.zeros(n)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2 ** o
        knots = rng.uniform(-1, 1, cells + 1)
        out += amp * np.interp(u * cells, np.arange(cells + 1), knots)
        total += amp
        amp *= persistence
    return out / total


def _noise2d(rng, h: int, w: int, cy: int, cx: int) -> np.ndarray:
    """Smooth (bilinear, smoothstep-eased) value noise in [-1,1] of shape [h,w] with cy x cx cells."""
    g = rng.uniform(-1, 1, (cy + 1, cx + 1))
    y = (np.arange(h) + 0.5) / h * cy
    x = (np.arange(w) + 0.5) / w * cx
    y0 = np.minimum(y.astype(int), cy - 1)
    x0 = np.minimum(x.astype(int), cx - 1)
    fy = y - y0
    fx = x - x0
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    a = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    b = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return a * (1 - fy)[:, None] + b * fy[:, None]


def _fbm2d(rng, h, w, cy, cx, octaves=3) -> np.ndarray:
    out, amp, total = np.zeros((h, w)), 1.0, 0.0
    for o in range(octaves):
        out += amp * _noise2d(rng, h, w, cy * 2 ** o, cx * 2 ** o)
        total += amp
        amp *= 0.5
    return out / total


def _palette(rng, kind: str) -> dict:
    """Sky stops (top, middle, horizon), light colour, ridge colours (far, near), ground, water."""
    if kind == "day":
        p = dict(top=_c(0.16, 0.36, 0.78), mid=_c(0.38, 0.62, 0.92), hor=_c(0.78, 0.88, 0.96),
                 light=_c(1.0, 0.98, 0.88), glow=_c(1.0, 0.97, 0.85), far=_c(0.48, 0.60, 0.76),
                 near=_c(0.14, 0.32, 0.18), ground=_c(0.30, 0.52, 0.20), ground2=_c(0.55, 0.62, 0.25),
                 cloud=_c(1.0, 1.0, 1.0))
    elif kind == "golden":
        p = dict(top=_c(0.28, 0.42, 0.70), mid=_c(0.85, 0.62, 0.45), hor=_c(1.0, 0.80, 0.45),
                 light=_c(1.0, 0.92, 0.65), glow=_c(1.0, 0.70, 0.30), far=_c(0.62, 0.46, 0.48),
                 near=_c(0.18, 0.14, 0.12), ground=_c(0.42, 0.36, 0.14), ground2=_c(0.70, 0.50, 0.18),
                 cloud=_c(1.0, 0.78, 0.60))
    elif kind == "dusk":
        p = dict(top=_c(0.10, 0.08, 0.28), mid=_c(0.55, 0.20, 0.42), hor=_c(0.98, 0.50, 0.30),
                 light=_c(1.0, 0.62, 0.35), glow=_c(1.0, 0.40, 0.25), far=_c(0.36, 0.18, 0.36),
                 near=_c(0.06, 0.03, 0.09), ground=_c(0.10, 0.05, 0.10), ground2=_c(0.20, 0.08, 0.14),
                 cloud=_c(0.95, 0.50, 0.50))
    else:  # night
        p = dict(top=_c(0.01, 0.02, 0.07), mid=_c(0.03, 0.06, 0.18), hor=_c(0.10, 0.16, 0.32),
                 light=_c(0.96, 0.96, 0.88), glow=_c(0.45, 0.55, 0.75), far=_c(0.08, 0.11, 0.22),
                 near=_c(0.01, 0.015, 0.04), ground=_c(0.02, 0.04, 0.07), ground2=_c(0.05, 0.08, 0.12),
                 cloud=_c(0.25, 0.30, 0.45))
    # hue / brightness jitter per scene so no two skies are identical
    return {k: _jitter(rng, v, 0.10 if k in ("top", "mid", "hor") else 0.06) for k, v in p.items()}


def _render(rng) -> np.ndarray:
    """One scene, float [32,32,3] in [0,1]."""
    kind = PALETTES[rng.choice(len(PALETTES), p=PALETTE_P)]
    P = _palette(rng, kind)
    n = HI
    v = ((np.arange(n) + 0.5) / n)[:, None]          # 0 top .. 1 bottom
    u = ((np.arange(n) + 0.5) / n)[None, :]
    horizon = rng.uniform(0.48, 0.68)

    # --- sky: three-stop gradient from the top to the horizon
    s = np.clip(v / horizon, 0, 1.2)
    mid_at = rng.uniform(0.45, 0.7)
    w1 = np.clip(s / mid_at, 0, 1)
    w2 = np.clip((s - mid_at) / (1 - mid_at), 0, 1)
    sky = _mix(P["top"], P["mid"], w1 ** 1.2)
    sky = _mix(sky, P["hor"], w2 ** 1.5)
    sky = np.broadcast_to(sky, (n, n, 3)).copy()

    # --- light: sun or moon with glow
    is_night = kind == "night"
    lx = rng.uniform(0.15, 0.85)
    if kind in ("golden", "dusk"):
        ly = horizon - rng.uniform(0.02, 0.20)
        r = rng.uniform(0.06, 0.10)
    elif is_night:
        ly = rng.uniform(0.10, horizon - 0.18)
        r = rng.uniform(0.045, 0.075)
    else:
        ly = rng.uniform(0.08, horizon - 0.2)
        r = rng.uniform(0.04, 0.07)
    d = np.sqrt((u - lx) ** 2 + (v - ly) ** 2)
    glow_r = r * rng.uniform(2.5, 5.0)
    glow = np.exp(-(d / glow_r) ** 2) * {"day": 0.3, "golden": 0.55, "dusk": 0.55, "night": 0.3}[kind]
    wide = np.exp(-(d / (glow_r * 3)) ** 2) * (0.25 if kind in ("golden", "dusk") else 0.12)
    sky = sky + (glow + wide)[..., None] * P["glow"] * (1 - sky * 0.5)

    # stars (night, some dusk): added at 32x32 later, positions fixed now
    stars = []
    if is_night or (kind == "dusk" and rng.random() < 0.6):
        k = rng.integers(12, 40) if is_night else rng.integers(4, 12)
        for _ in range(k):
            sy = rng.uniform(0, horizon * (0.9 if is_night else 0.5))
            stars.append((int(sy * SIZE), int(rng.uniform(0, 1) * SIZE), rng.uniform(0.25, 1.0)))

    # clouds: stretched fbm, soft threshold, lit from the light side
    if kind != "night" and rng.random() < 0.7:
        cov = rng.uniform(0.05, 0.35)
        f = _fbm2d(rng, n, n, 3, 2, octaves=4)
        band = np.exp(-((v - rng.uniform(0.12, horizon - 0.12)) / rng.uniform(0.08, 0.2)) ** 2)
        dens = np.clip((f * 0.5 + 0.5 - (1 - cov)) * 4, 0, 1) * band * rng.uniform(0.5, 0.9)
        shade = _mix(P["cloud"] * 0.75, P["cloud"], np.clip(1.2 - np.abs(u - lx) * 1.5, 0, 1))
        sky = _mix(sky, shade, dens)

    # disc drawn over clouds only when bright (sun) - moon sits in front as well
    disc = (d < r).astype(np.float64)
    if is_night and rng.random() < 0.55:  # crescent: cut by an offset disc
        ang = rng.uniform(0, 2 * np.pi)
        off = r * rng.uniform(0.35, 0.8)
        d2 = np.sqrt((u - lx - off * np.cos(ang)) ** 2 + (v - ly - off * np.sin(ang)) ** 2)
        disc = disc * (d2 >= r)
    if is_night:
        crater = 1 - 0.12 * (_noise2d(rng, n, n, 12, 12) > 0.4)
        light_col = P["light"][None, None, :] * crater[..., None]
    else:
        light_col = P["light"]
    img = _mix(sky, light_col, disc)

    # --- ridges, far to near
    layers = int(rng.integers(2, 5))
    ground_top = horizon + rng.uniform(0.02, 0.06)
    sun_visible_below = ly + r       # for water glitter
    ridge_line = None
    for i in range(layers):
        depth = i / max(layers - 1, 1)                 # 0 far .. 1 near
        base = horizon - 0.02 + depth * (ground_top - horizon + 0.04) + rng.uniform(-0.01, 0.01)
        amp = rng.uniform(0.10, 0.28) * (1 - 0.45 * depth)
        if i == 0 and rng.random() < 0.5:
            amp *= 1.4                                 # tall distant range
        prof = _noise1d(rng, n, octaves=4 + (i == layers - 1), base_cells=int(rng.integers(2, 5)),
                        persistence=rng.uniform(0.35, 0.5))
        if rng.random() < 0.6:                         # ridged: sharp alpine peaks
            prof = 1 - 2 * np.abs(prof)
        prof = (prof - prof.min()) / (np.ptp(prof) + 1e-9)
        top = base - amp * prof                        # y of the ridge per column
        col = _mix(_mix(P["far"], P["hor"], 0.35), P["near"], depth ** 0.8)
        inside = (v >= top[None, :])
        # vertical shading: lighter near the crest, darker below; a lit side by day
        smooth = np.convolve(np.pad(top, 16, mode="edge"), np.ones(33) / 33, mode="valid")
        below = np.clip((v - smooth[None, :]) / 0.25, 0, 1)   # smooth: no streaks under spikes
        slope = np.convolve(np.gradient(top) * n, np.ones(9) / 9, mode="same")[None, :]  # smoothed
        lit = 1.0 + (0.10 if kind == "day" else 0.03) * np.tanh(slope * np.sign(lx - 0.5) * 0.5)
        shade = (1.0 - 0.25 * below) * lit
        layer = np.clip(col * shade[..., None], 0, 1)
        if kind == "day" and i <= 1 and amp > 0.14:   # snow caps
            snow = v < base - amp * rng.uniform(0.55, 0.7)   # above the snow line
            layer = np.where(snow[..., None], _mix(layer, _c(0.96, 0.97, 1.0), 0.85), layer)
        img = np.where(inside[..., None], layer, img)
        ridge_line = top

    # pines on the nearest ridge
    if rng.random() < 0.45 and ridge_line is not None:
        dark = P["near"] * 0.6
        for _ in range(int(rng.integers(3, 12))):
            px = rng.uniform(0.02, 0.98)
            ix = int(px * n)
            h = rng.uniform(0.05, 0.12)
            w = h * rng.uniform(0.25, 0.4)
            base_y = ridge_line[ix] + 0.015
            tri = (v <= base_y) & (v >= base_y - h) & (np.abs(u - px) <= w * (v - (base_y - h)) / h / 2)
            img = np.where(tri[..., None], dark, img)

    # --- foreground
    fg_top = ground_top + rng.uniform(0.08, 0.16)
    meadow = False
    if fg_top < 0.97:
        fg = v >= fg_top
        if rng.random() < 0.45:                        # lake reflecting the sky
            mirror_v = np.clip(2 * fg_top - v, 0, 1)   # reflect the sky about the shoreline
            idx = np.clip((mirror_v * n).astype(int), 0, n - 1)[:, 0]
            refl = sky[idx] * 0.75 + 0.05 * P["hor"]
            ripple = _fbm2d(rng, n, n, 24, 3, octaves=2)
            refl = refl * (1 + 0.10 * ripple[..., None])
            glint_w = r * 0.9
            glint = np.exp(-((u - lx) / glint_w) ** 2) * (ripple > 0.05) * (v > fg_top + 0.01)
            refl = refl + glint[..., None] * P["light"] * 0.7 * (sun_visible_below < fg_top)
            water = _mix(refl, P["ground"] * 0.5, np.clip((v - fg_top) * 0.8, 0, 0.35))
            img = np.where(fg[..., None], water, img)
        else:                                          # meadow / field with texture
            meadow = True
            tex = _fbm2d(rng, n, n, 8, 4, octaves=3)
            rows = np.clip((v - fg_top) / (1 - fg_top + 1e-9), 0, 1)
            col = _mix(P["ground2"], P["ground"], np.clip(0.5 + 0.6 * tex, 0, 1))
            col = col * (0.85 + 0.25 * (1 - rows[..., None]))
            img = np.where(fg[..., None], col, img)

    # --- down to 32x32 (box filter), then single-pixel detail
    small = img.reshape(SIZE, SS, SIZE, SS, 3).mean(axis=(1, 3))
    if stars:
        sky_mask = (np.abs(img - sky).sum(-1) < 1e-6).reshape(SIZE, SS, SIZE, SS).all(axis=(1, 3))
        for sy, sx, b in stars:
            if sky_mask[sy, sx]:
                small[sy, sx] = np.clip(small[sy, sx] + b * _c(0.9, 0.9, 1.0), 0, 1)
    if meadow and not is_night:                        # grass speckle in the meadow rows
        speck = rng.random((SIZE, SIZE)) < 0.10
        ground_rows = (np.arange(SIZE) + 0.5) / SIZE > fg_top + 0.02
        small = np.where((speck & ground_rows[:, None])[..., None], small * rng.uniform(0.7, 1.2), small)
    return np.clip(small, 0, 1)


def render(seed: int, index: int) -> np.ndarray:
    """Image `index` of set `seed`: uint8 [32,32,3]."""
    rng = np.random.default_rng([seed, index])
    return np.round(_render(rng) * 255).astype(np.uint8)


def make(n: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """Images start..start+n-1 of set `seed`: uint8 [n,32,32,3]."""
    return np.stack([render(seed, i) for i in range(start, start + n)])


def to_model(images: np.ndarray) -> np.ndarray:
    """uint8 [N,32,32,3] -> float32 [N,3,32,32] in [-1,1]."""
    return (images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0).astype(np.float32)


def from_model(x: np.ndarray) -> np.ndarray:
    """float [N,3,32,32] in [-1,1] -> uint8 [N,32,32,3] (clipped)."""
    return np.round((np.clip(np.asarray(x, dtype=np.float64), -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def grid(images: np.ndarray, cols: int, scale: int = 3, pad: int = 2) -> np.ndarray:
    """uint8 [N,32,32,3] -> one uint8 picture, each image scaled by `scale` (nearest), on white."""
    n = len(images)
    rows = -(-n // cols)
    s = SIZE * scale
    out = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        big = im.repeat(scale, 0).repeat(scale, 1)
        out[pad + r * (s + pad):pad + r * (s + pad) + s, pad + c * (s + pad):pad + c * (s + pad) + s] = big
    return out


def write_grid(path: Path, images: np.ndarray, cols: int = 16, scale: int = 3) -> None:
    """Atomic PNG of a grid of images."""
    import io
    import os

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grid(images, cols, scale)).save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
