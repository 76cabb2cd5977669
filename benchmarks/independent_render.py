"""A second shapes-world renderer, for evaluation only: drawn by other code, in other proportions.

`tiny` is trained on `mmsearch.synth.render` (PIL polygons, its own colour table and
proportions). A model that only learned that program's habits would fail on shapes drawn by
anyone else, so its generalisation is measured here, on pictures made by code it never saw:

- **other code:** shapes are rasterised from signed distance functions in numpy (no PIL
  polygons), with an analytic anti-aliased edge of random softness, or a hard edge;
- **other proportions:** a thinner cross (arms 0.16-0.22 of the radius, not 0.30), a narrower
  diamond (half-width 0.40-0.50, not 0.62), a fatter five-point star (inner ratio 0.48-0.55,
  not 0.42), an equilateral triangle, squares with rounded corners, other sizes (20-60% of the
  shorter side) and free positions;
- **other colours:** a palette of named web/paint shades (crimson, tomato, gold, teal-ish green,
  royal blue, orchid...), none of them `vocab.COLOUR_RGB`'s;
- **other looks:** outlines (a darker or black stroke), stroke-only shapes, vertical shading,
  drop shadows, backgrounds with soft vignettes or paper-like texture.

Nothing under `mmsearch/` imports this file (tests/test_independent_render.py checks it): it
lives beside the benchmarks that use it, `benchmarks/tiny_generalization.py`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Shades per colour name: none equals the training renderer's canonical RGB.
PALETTE: dict[str, list[tuple[int, int, int]]] = {
    "red": [(220, 20, 60), (200, 16, 46), (178, 34, 34), (237, 41, 57), (190, 30, 45)],
    "orange": [(255, 140, 0), (255, 117, 24), (237, 145, 33), (255, 127, 39), (230, 110, 20)],
    "yellow": [(255, 215, 0), (250, 235, 60), (255, 221, 51), (238, 210, 2), (255, 239, 100)],
    "green": [(34, 139, 34), (0, 158, 96), (60, 179, 60), (20, 120, 50), (76, 187, 23)],
    "blue": [(65, 105, 225), (0, 71, 171), (30, 90, 200), (15, 82, 186), (50, 120, 230)],
    "purple": [(128, 0, 128), (148, 60, 190), (102, 51, 153), (160, 70, 170), (120, 40, 160)],
    "white": [(255, 255, 255), (245, 245, 240), (250, 248, 255), (240, 240, 240)],
    "black": [(0, 0, 0), (28, 28, 30), (40, 35, 35), (20, 24, 32)],
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")

# Backgrounds: paper, greys, muted tints (dark and light). An object needs this much contrast.
_BACKGROUNDS = [
    (255, 255, 255), (236, 232, 220), (214, 214, 214), (170, 170, 170), (120, 120, 120),
    (70, 70, 70), (25, 25, 25), (222, 235, 247), (240, 228, 214), (225, 240, 225),
    (45, 55, 75), (60, 45, 45), (205, 195, 225),
]
_MIN_CONTRAST = 120.0


@dataclass(frozen=True)
class Drawn:
    """What one rendering shows (for the evaluation's truth) and how it was drawn."""

    colour: str
    shape: str
    rgb: tuple[int, int, int]
    background: tuple[int, int, int]
    style: str  # "fill", "fill+outline" or "outline"


def _dist(a, b) -> float:
    return float(np.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))))


# ------------------------------------------------------------------ signed distance functions
# Each takes local coordinates (x, y) in units of the shape's radius r (arrays) and returns the
# signed distance, negative inside, in the same units.


def _sd_circle(x, y):
    return np.hypot(x, y) - 1.0


def _sd_box(x, y, hx, hy, rounding):
    qx, qy = np.abs(x) - hx + rounding, np.abs(y) - hy + rounding
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    inside = np.minimum(np.maximum(qx, qy), 0)
    return outside + inside - rounding


def _sd_polygon(x, y, pts):
    """Exact signed distance to a simple polygon (winding by crossing count)."""
    d = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        ax, ay = pts[i]
        bx, by = pts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0, 1)
        d = np.minimum(d, np.hypot(wx - ex * t, wy - ey * t))
        crosses = ((ay > y) != (by > y)) & (x < (bx - ax) * (y - ay) / (by - ay + 1e-12) + ax)
        inside ^= crosses
    return np.where(inside, -d, d)


def _shape_sdf(shape: str, x, y, rng: random.Random):
    if shape == "circle":
        return _sd_circle(x, y)
    if shape == "square":
        return _sd_box(x, y, 0.78, 0.78, rng.uniform(0.0, 0.18))
    if shape == "triangle":  # equilateral, centroid at the origin
        pts = [(0.0, -1.0), (math.sqrt(3) / 2, 0.5), (-math.sqrt(3) / 2, 0.5)]
        return _sd_polygon(x, y, pts)
    if shape == "diamond":  # narrower than the training renderer's
        hw = rng.uniform(0.40, 0.50)
        return _sd_polygon(x, y, [(0.0, -1.0), (hw, 0.0), (0.0, 1.0), (-hw, 0.0)])
    if shape == "star":
        inner = rng.uniform(0.48, 0.55)
        pts = []
        for i in range(10):
            rad = 1.0 if i % 2 == 0 else inner
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return _sd_polygon(x, y, pts)
    if shape == "cross":  # thin arms, as a plus sign is often drawn
        t = rng.uniform(0.16, 0.22)
        return np.minimum(_sd_box(x, y, 1.0, t, 0.0), _sd_box(x, y, t, 1.0, 0.0))
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(sd_px, softness: float):
    """Anti-aliased coverage from a signed distance in pixels (softness 0: a hard edge)."""
    if softness <= 0:
        return (sd_px <= 0).astype(np.float32)
    return np.clip(0.5 - sd_px / softness, 0, 1).astype(np.float32)


def _background(rgb, w: int, h: int, rng: random.Random) -> np.ndarray:
    arr = np.empty((h, w, 3), dtype=np.float32)
    arr[:] = rgb
    kind = rng.choice(["plain", "plain", "vignette", "paper"])
    if kind == "vignette":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = np.hypot((xx - w / 2) / w, (yy - h / 2) / h)
        arr *= (1 - rng.uniform(0.1, 0.3) * r * 1.4)[:, :, None]
    elif kind == "paper":  # low-frequency blotches
        gen = np.random.default_rng(rng.randrange(2**32))
        small = gen.normal(0, rng.uniform(4, 10), (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
        big = np.asarray(
            Image.fromarray(small[:, :, 0]).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32
        )
        arr += big[:, :, None]
    return arr


def render_single(
    colour: str, shape: str, rng: random.Random, size: tuple[int, int] | None = None
) -> tuple[Image.Image, Drawn]:
    """One object of the named colour and shape, drawn this renderer's way."""
    if size is None:
        side = rng.choice([160, 192, 224, 256, 320])
        aspect = rng.choice([1.0, 1.0, 4 / 3, 3 / 4, 3 / 2])
        size = (round(side * aspect), side) if aspect >= 1 else (side, round(side / aspect))
    w, h = size
    rgb = rng.choice(PALETTE[colour])
    backgrounds = [b for b in _BACKGROUNDS if _dist(b, rgb) >= _MIN_CONTRAST]
    bg = rng.choice(backgrounds)
    arr = _background(bg, w, h, rng)

    short = min(w, h)
    r = rng.uniform(0.10, 0.30) * short  # radius: diameter 20-60% of the shorter side
    cx = rng.uniform(r + 2, w - r - 2)
    cy = rng.uniform(r + 2, h - r - 2)
    angle = math.radians(rng.uniform(-10, 10))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx + 0.5 - cx, yy + 0.5 - cy
    ca, sa = math.cos(angle), math.sin(angle)
    lx, ly = (xx * ca + yy * sa) / r, (-xx * sa + yy * ca) / r
    sd = _shape_sdf(shape, lx, ly, rng) * r  # back to pixels
    softness = rng.choice([0.0, 1.0, 1.0, 1.5, 2.5])

    style = rng.choices(["fill", "fill+outline", "outline"], weights=[0.55, 0.3, 0.15])[0]
    if style != "outline" and rng.random() < 0.25:  # a soft drop shadow under filled shapes
        off = max(2, round(r * 0.08))
        shadow_sd = np.roll(np.roll(sd, off, axis=0), off, axis=1)
        arr *= 1 - 0.35 * _coverage(shadow_sd, 4.0)[:, :, None]
    fill = np.array(rgb, dtype=np.float32)
    if style != "outline":
        body = _coverage(sd, softness)[:, :, None]
        paint = np.broadcast_to(fill, arr.shape).copy()
        if rng.random() < 0.4:  # vertical shading: lighter at the top, darker at the bottom
            k = rng.uniform(0.08, 0.2)
            paint *= (1 + k * np.clip(-ly, -1, 1))[:, :, None]
        arr = arr * (1 - body) + np.clip(paint, 0, 255) * body
    if style != "fill":
        stroke_w = max(1.5, r * rng.uniform(0.06, 0.12))
        if style == "outline":
            stroke_rgb = fill
        elif colour == "black":
            stroke_rgb = np.array((90, 90, 90), np.float32)
        else:
            stroke_rgb = fill * rng.uniform(0.0, 0.55)
        ring = _coverage(np.abs(sd + stroke_w / 2) - stroke_w / 2, max(softness, 0.8))[:, :, None]
        arr = arr * (1 - ring) + stroke_rgb * ring
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img, Drawn(colour, shape, tuple(rgb), tuple(bg), style)


def single_object_set(n: int, seed: int) -> list[tuple[Image.Image, Drawn]]:
    """n single-object pictures, colours and shapes balanced (cycled), everything else seeded."""
    pairs = [(c, s) for c in PALETTE for s in SHAPES]
    out = []
    for i in range(n):
        rng = random.Random(seed * 1_000_033 + i)
        colour, shape = pairs[i % len(pairs)]
        out.append(render_single(colour, shape, rng))
    return out
