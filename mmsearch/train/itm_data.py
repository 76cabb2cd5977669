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
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from mmsearch.synth import Scene, sample_scene
from mmsearch.synth.hard_negatives import NEGATIVE_KINDS, hard_negative, mutate
from mmsearch.train.data import AugmentConfig, augmented_rendering

if TYPE_CHECKING:
    from mmsearch.models import Encoder

OBJECT_COUNT_WEIGHTS = (0.25, 0.45, 0.30)  # 1, 2, 3 objects: binding needs several
# How often each kind of twin is drawn (when the scene allows it): binding colours to shapes is
# what CLIP gets most wrong, and only scenes with two different objects can show it.
KIND_WEIGHTS = {"swap_colours": 2.0, "shape": 1.0, "count": 1.0, "position": 1.5, "size": 1.0}
# Training groups add further one-fact variants of every kind (colour too), as a gallery holds a
# scene beside several near misses, not beside one twin only.
VARIANT_KINDS = ("swap_colours", "colour", "shape", "count", "position", "size")
VARIANT_WEIGHTS = {
    "swap_colours": 2.0,
    "colour": 1.0,
    "shape": 1.0,
    "count": 1.0,
    "position": 1.5,
    "size": 1.5,
}


def sample_pair(rng: random.Random) -> tuple[Scene, Scene]:
    """A scene (1-3 objects) and a twin one fact away from it."""
    kinds = tuple(KIND_WEIGHTS)
    while True:
        n = rng.choices((1, 2, 3), weights=OBJECT_COUNT_WEIGHTS)[0]
        scene = sample_scene(rng, n_objects=n)
        kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
        twin = mutate(scene, kind, rng) or hard_negative(scene, rng, NEGATIVE_KINDS)
        if twin is not None:
            return scene, twin


def sample_group(rng: random.Random, size: int) -> list[Scene]:
    """A scene, its twin (`sample_pair`), then up to `size` - 2 more distinct one-fact variants.

    A group has `size` scenes whenever the scene allows as many distinct variants; otherwise the
    last variants repeat earlier ones (every group has the same size).
    """
    scene, twin = sample_pair(rng)
    group, seen = [scene, twin], {scene.objects, twin.objects}
    # Binding colours to shapes in whole-scene captions is the hardest fact: every group whose
    # scene allows it holds the colour-swapped scene beside it.
    if size > 2:
        for _ in range(4):
            swapped = mutate(scene, "swap_colours", rng)
            if swapped is None or swapped.objects in seen:
                continue
            seen.add(swapped.objects)
            group.append(swapped)
            break
    kinds = VARIANT_KINDS
    for _ in range(40):
        if len(group) >= size:
            break
        kind = rng.choices(kinds, weights=[VARIANT_WEIGHTS[k] for k in kinds])[0]
        other = mutate(scene, kind, rng)
        if other is None or other.objects in seen:
            continue
        seen.add(other.objects)
        group.append(other)
    while len(group) < size:
        group.append(group[1 + (len(group) - 1) % (len(group) - 1)])
    return group


def render_twins(
    scene: Scene, twin: Scene, seed: int, cfg: AugmentConfig
) -> tuple[Image.Image, Image.Image]:
    """Both scenes drawn from the same random state: same size, style, shades and jitter."""
    return (
        augmented_rendering(scene, random.Random(seed), cfg),
        augmented_rendering(twin, random.Random(seed), cfg),
    )


def _render_chunk(
    args: tuple[int, int, int, AugmentConfig, Callable[[Image.Image], np.ndarray], int],
):
    seed, start, stop, cfg, to_array, size = args
    scenes, arrays = [], []
    for i in range(start, stop):
        rng = random.Random(seed * 1_000_003 + i)
        group = sample_group(rng, size)  # size 2: the pair `sample_pair` draws
        state = rng.randrange(2**31)
        for scene in group:  # all drawn from the same random state (see `render_twins`)
            arrays.append(to_array(augmented_rendering(scene, random.Random(state), cfg)))
        scenes += group
    return scenes, np.stack(arrays)


def render_pairs(
    n_pairs: int,
    seed: int,
    to_array: Callable[[Image.Image], np.ndarray],
    cfg: AugmentConfig | None = None,
    workers: int = 2,
    chunk: int = 250,
    group: int = 2,
) -> Iterator[tuple[list[Scene], np.ndarray]]:
    """Chunks of (scenes, uint8 pixels): scene 2i is a scene, 2i + 1 its twin; same seed, same set.

    With `group` > 2, scene g*i is a scene, g*i + 1 its twin and the rest further variants.
    """
    cfg = cfg or AugmentConfig()
    jobs = [
        (seed, s, min(s + chunk, n_pairs), cfg, to_array, group) for s in range(0, n_pairs, chunk)
    ]
    if workers <= 1:
        yield from map(_render_chunk, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_render_chunk, jobs)


@dataclass
class PairSet:
    """Scenes in groups (twin pairs (2i, 2i + 1) by default), patch features (n, P, D) float16, embeddings.

    In a group of g, scene g*i is the drawn scene, g*i + 1 its twin, the rest further variants.
    """

    scenes: list[Scene]
    patches: np.ndarray
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised: what CLIP alone would judge by
    group: int = 2

    def __len__(self) -> int:
        return len(self.scenes)

    def twin_of(self, index: int) -> int:
        """The twin of a pair's scene (and the scene of a twin); in larger groups, of its first."""
        start = index - index % self.group
        return start + 1 if index == start else start

    def members(self, index: int) -> range:
        """Indices of the group the picture belongs to."""
        start = index - index % self.group
        return range(start, start + self.group)


def build_pair_set(
    n_pairs: int,
    seed: int,
    encoder: Encoder,
    cfg: AugmentConfig | None = None,
    workers: int = 2,
    group: int = 2,
) -> PairSet:
    """Render twin pairs (or groups) in worker processes; the encoder turns each chunk into features here."""
    from mmsearch.models.patches import encode_with_patches

    pp = encoder.preprocess
    scenes: list[Scene] = []
    patches, embeddings = [], []
    for chunk_scenes, pixels in render_pairs(n_pairs, seed, pp.to_uint8, cfg, workers, group=group):
        scenes += chunk_scenes
        emb, pat = encode_with_patches(encoder, pp.normalise(pixels))
        embeddings.append(emb)
        patches.append(pat)
    return PairSet(scenes, np.concatenate(patches), np.concatenate(embeddings), group)
