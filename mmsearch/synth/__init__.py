"""The shapes world: a seeded, captioned synthetic world the project trains and tests on.

Scenes hold one to three coloured shapes (fixed vocabulary in `vocab`); `render_scene` draws
them, `scene_captions` describes them, and `media` turns them into photos, videos, speech and notes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from mmsearch.synth import vocab
from mmsearch.synth.captions import random_caption, scene_captions
from mmsearch.synth.render import RenderStyle, random_style, render_scene, varied_style
from mmsearch.synth.scene import Background, Scene, ShapeObject, sample_scene, single_object_scene

__all__ = [
    "Background",
    "Example",
    "RenderStyle",
    "Scene",
    "ShapeObject",
    "make_example",
    "random_caption",
    "random_style",
    "render_scene",
    "sample_scene",
    "scene_captions",
    "single_object_scene",
    "varied_style",
    "vocab",
]


@dataclass
class Example:
    """One rendered scene with its captions and labels."""

    seed: int
    scene: Scene
    image: Image.Image
    captions: list[str]

    @property
    def labels(self) -> dict:
        return self.scene.labels()


def make_example(seed: int, size: tuple[int, int] = (224, 224), varied_style: bool = False) -> Example:
    """The example for a seed: same seed, same scene, same pixels, same captions."""
    rng = random.Random(seed)
    scene = sample_scene(rng)
    style = random_style(rng) if varied_style else RenderStyle()
    image = render_scene(scene, size, style, rng)
    return Example(seed, scene, image, scene_captions(scene))
