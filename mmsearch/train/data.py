"""Training data from the shapes world: scenes pre-rendered once with heavy augmentation.

Rendering is cheap but not free on two cores, so the images are drawn once (in worker processes)
and each epoch draws fresh captions. Augmentation covers what users' pictures and outside checks
vary: image size and aspect ratio, anti-aliasing, colour shades, backgrounds, JPEG quality 60-95,
blur and noise. Images are letterboxed exactly as the encoder's preprocessing does at query time.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from mmsearch.synth import (
    Scene,
    random_caption,
    random_style,
    render_scene,
    sample_scene,
    varied_style,
)
from mmsearch.synth.captions_zh import random_caption_zh


@dataclass(frozen=True)
class AugmentConfig:
    """How far renderings drift from the canonical drawing."""

    min_side: int = 64  # shorter side of the rendered canvas, before letterboxing
    max_side: int = 192
    max_aspect: float = 1.8  # widest landscape / tallest portrait ratio
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (55, 95)
    blur_prob: float = 0.3
    max_blur: float = 1.2  # Gaussian radius in pixels of the rendered canvas
    noise_prob: float = 0.3
    max_noise: float = 12.0  # grey levels
    variety: bool = False  # varied proportions, outlines, shading and wide shades (`varied_style`)


def augmented_rendering(scene: Scene, rng: random.Random, cfg: AugmentConfig) -> Image.Image:
    """Render a scene at a random size and aspect, then degrade it like a real photo might be."""
    side = rng.randint(cfg.min_side, cfg.max_side)
    aspect = float(np.exp(rng.uniform(-np.log(cfg.max_aspect), np.log(cfg.max_aspect))))
    w, h = (round(side * aspect), side) if aspect >= 1 else (side, round(side / aspect))
    style = varied_style(rng) if cfg.variety else random_style(rng)
    img = render_scene(scene, (w, h), style, rng)
    if rng.random() < cfg.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, cfg.max_blur)))
    if rng.random() < cfg.noise_prob:
        arr = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, rng.uniform(2, cfg.max_noise), arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    if rng.random() < cfg.jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=rng.randint(*cfg.jpeg_quality))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def _render_chunk(args: tuple[int, int, int, AugmentConfig, Callable[[Image.Image], np.ndarray]]):
    seed, start, stop, cfg, to_array = args
    scenes, arrays = [], []
    for i in range(start, stop):
        rng = random.Random(seed * 1_000_003 + i)
        scene = sample_scene(rng)
        scenes.append(scene)
        arrays.append(to_array(augmented_rendering(scene, rng, cfg)))
    return scenes, np.stack(arrays)


@dataclass
class RenderedSet:
    """Scenes and their letterboxed uint8 pixels (n, S, S, 3)."""

    scenes: list[Scene]
    pixels: np.ndarray

    def captions(self, rng: random.Random, zh_prob: float = 0.0) -> list[str]:
        """A fresh caption per scene (template variety differs every epoch); with `zh_prob`,
        that share of them is Chinese (`captions_zh`) instead of English."""
        if not zh_prob:
            return [random_caption(s, rng) for s in self.scenes]
        return [random_caption_zh(s, rng) if rng.random() < zh_prob else random_caption(s, rng) for s in self.scenes]


def render_set(
    n: int,
    seed: int,
    to_array: Callable[[Image.Image], np.ndarray],
    cfg: AugmentConfig | None = None,
    workers: int = 2,
    chunk: int = 500,
) -> RenderedSet:
    """Render n augmented scenes with `workers` processes; same seed, same set."""
    cfg = cfg or AugmentConfig()
    jobs = [(seed, s, min(s + chunk, n), cfg, to_array) for s in range(0, n, chunk)]
    if workers <= 1:
        results = [_render_chunk(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_render_chunk, jobs))
    scenes = [s for r in results for s in r[0]]
    return RenderedSet(scenes, np.concatenate([r[1] for r in results]))
