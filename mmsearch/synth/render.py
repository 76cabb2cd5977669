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


def random_style(rng: random.Random) -> RenderStyle:
    """A varied style for training and robustness tests."""
    return RenderStyle(
        antialias=rng.random() < 0.7,
        shade_jitter=rng.uniform(0.5, 1.2),
        position_jitter=rng.uniform(0.0, 0.06),
        max_rotation=rng.uniform(0.0, 15.0),
        noise_sigma=rng.uniform(4.0, 18.0),
    )


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


def shape_polygon(shape: str, cx: float, cy: float, d: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of diameter d centred at (cx, cy), rotated by angle degrees."""
    r = d / 2
    if shape == "square":
        pts = [(-0.85 * r, -0.85 * r), (0.85 * r, -0.85 * r), (0.85 * r, 0.85 * r), (-0.85 * r, 0.85 * r)]
    elif shape == "triangle":
        pts = [(0, -r), (0.92 * r, 0.75 * r), (-0.92 * r, 0.75 * r)]
    elif shape == "diamond":
        pts = [(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.42 * r
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        t = 0.3 * r
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    elif shape == "circle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(vocab.SHAPES)}")
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


def _object_mask(obj: ShapeObject, w: int, h: int, style: RenderStyle, rng: random.Random) -> np.ndarray:
    ss = 4 if style.antialias else 1
    side = min(w, h)
    lo, hi = vocab.SIZE_FRACTIONS[obj.size]
    d = rng.uniform(lo, hi) * side
    fx, fy = vocab.POSITION_ANCHORS[obj.position]
    jx = rng.uniform(-1, 1) * style.position_jitter * w
    jy = rng.uniform(-1, 1) * style.position_jitter * h
    # keep the whole object inside the frame
    cx = min(max(fx * w + jx, d / 2 + 1), w - d / 2 - 1)
    cy = min(max(fy * h + jy, d / 2 + 1), h - d / 2 - 1)
    angle = rng.uniform(-style.max_rotation, style.max_rotation)
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    if obj.shape == "circle":
        draw.ellipse([(cx - d / 2) * ss, (cy - d / 2) * ss, (cx + d / 2) * ss, (cy + d / 2) * ss], fill=255)
    else:
        draw.polygon([(x * ss, y * ss) for x, y in shape_polygon(obj.shape, cx, cy, d, angle)], fill=255)
    if ss > 1:
        mask = mask.resize((w, h), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32)[:, :, None] / 255.0


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
        rgb = np.array(jitter_colour(obj.colour, rng, style.shade_jitter), dtype=np.float32)
        alpha = _object_mask(obj, w, h, style, rng)
        arr = arr * (1 - alpha) + rgb * alpha
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
