"""Training and held-out data for the ITM reranker: rendered minimal pairs and their patch features.

Each example is a scene and its *twin*, the same scene one fact away (swapped colours, another
shape, another count, another place, another size; `mmsearch.synth.hard_negatives`), rendered with
the same background, style and jitter so the two pictures differ in that fact only. The frozen
image tower turns both into patch features once (`mmsearch.models.patches`); captions are drawn
afresh every epoch, so the text side never repeats and costs nothing to vary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmsearch.synth import Scene, sample_scene
from mmsearch.synth.hard_negatives import NEGATIVE_KINDS, hard_negative
from mmsearch.train.data import AugmentConfig, augmented_rendering

OBJECT_COUNT_WEIGHTS = (0.25, 0.45, 0.30)  # 1, 2, 3 objects: binding needs several


def sample_pair(rng: random.Random, kinds: tuple[str, ...] = NEGATIVE_KINDS) -> tuple[Scene, Scene]:
    """A scene (1-3 objects) and a twin one fact away from it."""
    while True:
        n = rng.choices((1, 2, 3), weights=OBJECT_COUNT_WEIGHTS)[0]
        scene = sample_scene(rng, n_objects=n)
        twin = hard_negative(scene, rng, kinds)
        if twin is not None:
            return scene, twin


def render_twins(scene: Scene, twin: Scene, seed: int, cfg: AugmentConfig) -> tuple[Image.Image, Image.Image]:
    """Both scenes drawn from the same random state: same size, style, shades and jitter."""
    return (
        augmented_rendering(scene, random.Random(seed), cfg),
        augmented_rendering(twin, random.Random(seed), cfg),
    )


def _render_chunk(args: tuple[int, int, int, AugmentConfig, Callable[[Image.Image], np.ndarray]]):
    seed, start, stop, cfg, to_array = args
    scenes, arrays = [], []
    for i in range(start, stop):
        rng = random.Random(seed * 1_000_003 + i)
        scene, twin = sample_pair(rng)
        for image in render_twins(scene, twin, rng.randrange(2**31), cfg):
            arrays.append(to_array(image))
        scenes += [scene, twin]
    return scenes, np.stack(arrays)


def render_pairs(
    n_pairs: int,
    seed: int,
    to_array: Callable[[Image.Image], np.ndarray],
    cfg: AugmentConfig | None = None,
    workers: int = 2,
    chunk: int = 250,
) -> Iterator[tuple[list[Scene], np.ndarray]]:
    """Chunks of (scenes, uint8 pixels): scene 2i is a scene, 2i + 1 its twin; same seed, same set."""
    cfg = cfg or AugmentConfig()
    jobs = [(seed, s, min(s + chunk, n_pairs), cfg, to_array) for s in range(0, n_pairs, chunk)]
    if workers <= 1:
        yield from map(_render_chunk, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_render_chunk, jobs)


@dataclass
class PairSet:
    """Scenes in twin pairs (2i, 2i + 1) and their patch features (2n, P, D) float16."""

    scenes: list[Scene]
    patches: np.ndarray

    def __len__(self) -> int:
        return len(self.scenes)

    @staticmethod
    def twin_of(index: int) -> int:
        return index ^ 1


def build_pair_set(
    n_pairs: int,
    seed: int,
    features: Callable[[np.ndarray], np.ndarray],
    to_array: Callable[[Image.Image], np.ndarray],
    cfg: AugmentConfig | None = None,
    workers: int = 2,
) -> PairSet:
    """Render twin pairs in worker processes and turn each chunk into patch features here."""
    scenes: list[Scene] = []
    parts = []
    for chunk_scenes, pixels in render_pairs(n_pairs, seed, to_array, cfg, workers):
        scenes += chunk_scenes
        parts.append(features(pixels))
    return PairSet(scenes, np.concatenate(parts))
