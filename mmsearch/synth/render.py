"""Draws shapes-world scenes as PIL images, deterministically from the scene's seed."""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mmsearch.synth import vocab
from mmsearch.synth.scene import Background, Scene, ShapeObject


@dataclass(frozen=True)
class RenderStyle:
    """Knobs that change how a scene looks without changing what it shows."""

    antialias: bool = True  # supersample the shape masks 4x, else hard pixel edges
    shade_jitter: float = 1.0  # 0 draws canonical colours; 1 jitters hue/saturation/value within the name
    position_jitter: float = 0.04  # max shift of an object's centre, as a fraction of the image side
    max_rotation: float = 12.0  # degrees; small, so a square never turns into a diamond
    noise_sigma: float = 10.0  # grey-level noise of "noise" backgrounds
    # Variety for training a model that must hold on other programs' drawings (all off by default,
    # and then nothing else is drawn from the rng, so canonical and `random_style` pixels stay put):
    geometry: bool = False  # vary proportions: cross arm width, diamond width, star points, corners, stretch
    outline_prob: float = 0.0  # chance an object is drawn with an outline (or as an outline only)
    shading_prob: float = 0.0  # chance an object's fill is shaded (a linear light-to-dark ramp)
    wide_shades: bool = False  # draw colours from wide hue/saturation/value windows of their names
    size_spread: float = 0.0  # widen the size fractions by this share of their range on both ends
    lone_max_size: float = 0.0  # a scene's only object, when large, may grow to this share of the
    # side (other programs draw a lone shape big: the independent renderer up to 0.6)


def random_style(rng: random.Random) -> RenderStyle:
    """A varied style for training and robustness tests."""
    return RenderStyle(
        antialias=rng.random() < 0.7,
        shade_jitter=rng.uniform(0.5, 1.2),
        position_jitter=rng.uniform(0.0, 0.06),
        max_rotation=rng.uniform(0.0, 15.0),
        noise_sigma=rng.uniform(4.0, 18.0),
    )


def varied_style(rng: random.Random) -> RenderStyle:
    """`random_style` plus geometry, outline, shading and shade variety: what `tiny` trains on."""
    base = random_style(rng)
    return RenderStyle(
        antialias=base.antialias,
        shade_jitter=base.shade_jitter,
        position_jitter=rng.uniform(0.0, 0.1),
        max_rotation=base.max_rotation,
        noise_sigma=base.noise_sigma,
        geometry=True,
        outline_prob=0.3,
        shading_prob=0.35,
        wide_shades=rng.random() < 0.6,
        size_spread=0.5,
        lone_max_size=0.62,
    )


# Hue windows (degrees), saturation and value ranges that still read as each colour's name.
_SHADE_WINDOWS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((-14.0, 8.0), (0.6, 1.0), (0.62, 1.0)),
    "orange": ((20.0, 37.0), (0.75, 1.0), (0.85, 1.0)),
    "yellow": ((46.0, 60.0), (0.55, 1.0), (0.85, 1.0)),
    "green": ((90.0, 160.0), (0.5, 1.0), (0.42, 0.85)),
    "blue": ((205.0, 235.0), (0.6, 1.0), (0.55, 1.0)),
    "purple": ((265.0, 305.0), (0.45, 1.0), (0.45, 0.85)),
}


def wide_shade(colour: str, rng: random.Random) -> tuple[int, int, int]:
    """A shade drawn from the whole window of a colour name (crimson to firebrick for red)."""
    if colour == "white":
        return _hsv_to_rgb(rng.random(), rng.uniform(0, 0.07), rng.uniform(0.9, 1.0))
    if colour == "black":
        return _hsv_to_rgb(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.0, 0.2))
    (h0, h1), (s0, s1), (v0, v1) = _SHADE_WINDOWS[colour]
    return _hsv_to_rgb((rng.uniform(h0, h1) / 360) % 1.0, rng.uniform(s0, s1), rng.uniform(v0, v1))


def jitter_colour(colour: str, rng: random.Random, amount: float = 1.0) -> tuple[int, int, int]:
    """A shade of the named colour: hue, saturation and value moved within what still reads as the name."""
    if amount <= 0:
        return vocab.COLOUR_RGB[colour]
    r, g, b = (c / 255 for c in vocab.COLOUR_RGB[colour])
    if colour == "white":
        v = 1.0 - rng.uniform(0, 0.1) * amount
        s = rng.uniform(0, 0.06) * amount
        h = rng.random()
        return _hsv_to_rgb(h, s, v)
    if colour == "black":
        v = rng.uniform(0, 0.16) * amount
        return _hsv_to_rgb(rng.random(), rng.uniform(0, 0.3) * amount, v)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    h = (h + rng.uniform(-0.018, 0.018) * amount) % 1.0
    s = min(1.0, max(0.45, s * (1 + rng.uniform(-0.25, 0.1) * amount)))
    v = min(1.0, max(0.45, v * (1 + rng.uniform(-0.2, 0.08) * amount)))
    return _hsv_to_rgb(h, s, v)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


# Canonical proportions (fractions of the radius); `random_proportions` varies them for training.
CANONICAL_PROPORTIONS: dict[str, float] = {
    "square": 0.85,  # half side
    "square_round": 0.0,  # corner radius
    "triangle_half_base": 0.92,
    "triangle_base_y": 0.75,
    "diamond": 0.62,  # half width
    "star_inner": 0.42,
    "cross": 0.3,  # half arm width
    "stretch": 1.0,  # x scale (y scale is its inverse)
}


def random_proportions(rng: random.Random) -> dict[str, float]:
    """Proportions other programs draw with: thin or thick crosses, narrow or wide diamonds..."""
    return {
        "square": rng.uniform(0.72, 0.9),
        "square_round": rng.choice([0.0, 0.0, rng.uniform(0.05, 0.3)]),
        "triangle_half_base": rng.uniform(0.78, 1.0),
        "triangle_base_y": rng.uniform(0.45, 0.8),
        "diamond": rng.uniform(0.36, 0.72),
        "star_inner": rng.uniform(0.34, 0.6),
        "cross": rng.uniform(0.12, 0.36),
        "stretch": float(np.exp(rng.uniform(-0.1, 0.1))),
    }


def _rounded_square(h: float, rr: float) -> list[tuple[float, float]]:
    pts = []
    for (sx, sy), a0 in (((1, 1), 0), ((-1, 1), 90), ((-1, -1), 180), ((1, -1), 270)):
        ccx, ccy = sx * (h - rr), sy * (h - rr)
        for k in range(6):
            a = math.radians(a0 + 90 * k / 5)
            pts.append((ccx + rr * math.cos(a), ccy + rr * math.sin(a)))
    return pts


def shape_polygon(
    shape: str, cx: float, cy: float, d: float, angle: float, proportions: dict[str, float] | None = None
) -> list[tuple[float, float]]:
    """Vertices of a shape of diameter d centred at (cx, cy), rotated by angle degrees."""
    p = proportions or CANONICAL_PROPORTIONS
    r = d / 2
    if shape == "square":
        h = p["square"] * r
        if p["square_round"] > 0:
            pts = _rounded_square(h, p["square_round"] * r)
        else:
            pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":
        b, y = p["triangle_half_base"] * r, p["triangle_base_y"] * r
        pts = [(0, -r), (b, y), (-b, y)]
    elif shape == "diamond":
        pts = [(0, -r), (p["diamond"] * r, 0), (0, r), (-p["diamond"] * r, 0)]
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else p["star_inner"] * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        t = p["cross"] * r
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    elif shape == "circle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(vocab.SHAPES)}")
    if p["stretch"] != 1.0:
        pts = [(x * p["stretch"], y / p["stretch"]) for x, y in pts]
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]


def _background_array(bg: Background, w: int, h: int, style: RenderStyle, rng: random.Random) -> np.ndarray:
    base = np.array(bg.rgb, dtype=np.float32)
    if bg.kind == "gradient":
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = base[None, :] * (1 - t[:, None]) + np.array(bg.rgb2, np.float32)[None, :] * t[:, None]
        arr = np.broadcast_to(ramp[None, :, :], (h, w, 3)) if len(t) == w else np.broadcast_to(ramp[:, None, :], (h, w, 3))
        arr = arr.copy()
    else:
        arr = np.broadcast_to(base, (h, w, 3)).copy()
    if bg.kind == "noise":
        noise_rng = np.random.default_rng(rng.randrange(2**32))
        arr += noise_rng.normal(0, style.noise_sigma, size=(h, w, 1)).astype(np.float32)
    return arr


# Shapes that stay themselves under any rotation (a square turned 45 degrees is a diamond).
_FREE_ROTATION = {"circle": 180.0, "star": 180.0, "triangle": 35.0}


def _object_mask(
    obj: ShapeObject, w: int, h: int, style: RenderStyle, rng: random.Random, alone: bool = False
):
    """The object's coverage (h, w, 1) in [0, 1], and for varied styles its centre and diameter."""
    ss = 4 if style.antialias else 1
    side = min(w, h)
    lo, hi = vocab.SIZE_FRACTIONS[obj.size]
    if style.size_spread:
        lo, hi = lo - style.size_spread * (hi - lo), hi + style.size_spread * (hi - lo)
    if alone and obj.size == "large" and style.lone_max_size > hi:
        hi = style.lone_max_size
    d = rng.uniform(lo, hi) * side
    fx, fy = vocab.POSITION_ANCHORS[obj.position]
    jx = rng.uniform(-1, 1) * style.position_jitter * w
    jy = rng.uniform(-1, 1) * style.position_jitter * h
    # keep the whole object inside the frame
    cx = min(max(fx * w + jx, d / 2 + 1), w - d / 2 - 1)
    cy = min(max(fy * h + jy, d / 2 + 1), h - d / 2 - 1)
    angle = rng.uniform(-style.max_rotation, style.max_rotation)
    proportions = None
    if style.geometry:
        proportions = random_proportions(rng)
        if obj.shape in _FREE_ROTATION:
            angle = rng.uniform(-_FREE_ROTATION[obj.shape], _FREE_ROTATION[obj.shape])
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    if obj.shape == "circle" and (proportions is None or proportions["stretch"] == 1.0):
        draw.ellipse([(cx - d / 2) * ss, (cy - d / 2) * ss, (cx + d / 2) * ss, (cy + d / 2) * ss], fill=255)
    else:
        poly = shape_polygon(obj.shape, cx, cy, d, angle, proportions)
        draw.polygon([(x * ss, y * ss) for x, y in poly], fill=255)
    if ss > 1:
        mask = mask.resize((w, h), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32)[:, :, None] / 255.0, (cx, cy, d)


def _erode(alpha: np.ndarray, px: int) -> np.ndarray:
    """Minimum filter of a (h, w, 1) coverage over a (2px+1)^2 square (separable)."""
    out = alpha[:, :, 0]
    for axis in (0, 1):
        padded = np.pad(out, [(px, px) if a == axis else (0, 0) for a in (0, 1)], constant_values=0)
        n = out.shape[axis]
        out = np.min([np.take(padded, range(k, k + n), axis=axis) for k in range(2 * px + 1)], axis=0)
    return out[:, :, None]


def _paint_varied(
    arr: np.ndarray, obj: ShapeObject, rgb: np.ndarray, alpha: np.ndarray, where, style: RenderStyle, rng: random.Random
) -> np.ndarray:
    """Fill, outline or both, with optional shading (varied styles only)."""
    cx, cy, d = where
    h, w = alpha.shape[:2]
    paint = np.broadcast_to(rgb, arr.shape)
    if style.shading_prob and rng.random() < style.shading_prob:
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        g = np.clip(((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)) / (d / 2), -1, 1)
        paint = np.clip(rgb * (1 + rng.uniform(0.08, 0.25) * g)[:, :, None], 0, 255)
    mode = "fill"
    if style.outline_prob and rng.random() < style.outline_prob:
        mode = rng.choice(["fill+outline", "fill+outline", "outline"])
    if mode == "fill":
        return arr * (1 - alpha) + paint * alpha
    stroke = max(1, round(d * rng.uniform(0.04, 0.09)))
    ring = np.clip(alpha - _erode(alpha, stroke), 0, 1)
    if mode == "outline":
        return arr * (1 - ring) + paint * ring
    arr = arr * (1 - alpha) + paint * alpha
    if obj.colour == "black":
        edge = np.full(3, rng.uniform(70, 140), np.float32)
    else:
        edge = rgb * rng.uniform(0.0, 0.5)
    return arr * (1 - ring) + edge * ring


def render_scene(
    scene: Scene,
    size: tuple[int, int] = (224, 224),
    style: RenderStyle | None = None,
    rng: random.Random | None = None,
) -> Image.Image:
    """Render a scene at (width, height); the same scene, size, style and rng give the same pixels."""
    style = style or RenderStyle()
    rng = rng or random.Random(scene.seed)
    w, h = size
    arr = _background_array(scene.background, w, h, style, rng)
    for obj in scene.objects:
        if style.wide_shades:
            rgb = np.array(wide_shade(obj.colour, rng), dtype=np.float32)
        else:
            rgb = np.array(jitter_colour(obj.colour, rng, style.shade_jitter), dtype=np.float32)
        alpha, where = _object_mask(obj, w, h, style, rng, alone=len(scene.objects) == 1)
        if style.outline_prob or style.shading_prob:
            arr = _paint_varied(arr, obj, rgb, alpha, where, style, rng)
        else:
            arr = arr * (1 - alpha) + rgb * alpha
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
