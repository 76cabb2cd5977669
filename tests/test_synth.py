"""The shapes world is deterministic, uses only its fixed vocabulary, and captions tell the truth."""

import random

import numpy as np
import pytest

from mmsearch.synth import (
    make_example,
    render_scene,
    sample_scene,
    scene_captions,
    single_object_scene,
    vocab,
)
from mmsearch.synth.render import RenderStyle, random_style
from mmsearch.synth.scene import allowed_colours


def test_vocabulary_is_the_published_one():
    assert vocab.COLOURS == ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")
    assert vocab.SHAPES == ("circle", "square", "triangle", "star", "diamond", "cross")
    assert vocab.SIZES == ("small", "large")
    assert vocab.POSITIONS == ("left", "right", "top", "bottom", "center")


def test_same_seed_same_pixels_and_captions():
    a, b = make_example(123, varied_style=True), make_example(123, varied_style=True)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.captions == b.captions and a.labels == b.labels
    c = make_example(124, varied_style=True)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_scenes_use_only_the_vocabulary_and_distinct_positions():
    rng = random.Random(0)
    counts = set()
    for _ in range(500):
        scene = sample_scene(rng)
        counts.add(len(scene.objects))
        positions = [o.position for o in scene.objects]
        assert len(set(positions)) == len(positions)
        for o in scene.objects:
            assert o.colour in vocab.COLOURS and o.shape in vocab.SHAPES
            assert o.size in vocab.SIZES and o.position in vocab.POSITIONS
            assert o.colour in allowed_colours(scene.background), "object has the background's colour"
    assert counts == {1, 2, 3}


def test_captions_name_every_object():
    rng = random.Random(1)
    for _ in range(200):
        scene = sample_scene(rng)
        for caption in scene_captions(scene):
            for o in scene.objects:
                assert o.colour in caption
                assert o.shape in caption or vocab.plural(o.shape) in caption


def test_grouped_captions_count_duplicates():
    scene = sample_scene(random.Random(3), n_objects=2, duplicate_prob=1.0)
    o = scene.objects[0]
    assert f"two {o.colour} {vocab.plural(o.shape)}" in scene_captions(scene)


@pytest.mark.parametrize("colour", vocab.COLOURS)
def test_object_is_drawn_in_its_colour_where_it_says(colour):
    bg = (128, 128, 128)
    scene = single_object_scene(colour, "square", "large", "left", bg)
    img = np.asarray(render_scene(scene, (200, 100), RenderStyle(shade_jitter=0, position_jitter=0, max_rotation=0)))
    centre = img[50, 40].astype(int)  # left anchor is at x = 0.2 * width
    assert np.abs(centre - np.array(vocab.COLOUR_RGB[colour])).max() <= 2
    assert np.abs(img[50, 160].astype(int) - np.array(bg)).max() <= 2  # the right side is background


def test_unknown_vocabulary_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        single_object_scene("magenta", "circle")


def test_varied_sizes_and_aspect_ratios_render():
    rng = random.Random(5)
    for size in [(32, 32), (300, 80), (80, 300), (640, 480)]:
        img = render_scene(sample_scene(rng), size, random_style(rng), rng)
        assert img.size == size and img.mode == "RGB"
