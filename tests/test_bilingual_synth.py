"""Chinese captions of the shapes world, and the varied drawing `tiny` trains on."""

import random
import re

import numpy as np

from mmsearch.synth import (
    RenderStyle,
    render_scene,
    sample_scene,
    single_object_scene,
    varied_style,
    vocab,
)
from mmsearch.synth.captions_zh import (
    COLOURS_ZH,
    NUMBERS_ZH,
    SHAPES_ZH,
    colour_shape_query_zh,
    random_caption_zh,
    scene_captions_zh,
)
from mmsearch.synth.render import CANONICAL_PROPORTIONS, random_proportions, shape_polygon
from mmsearch.train.data import RenderedSet

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_the_plain_chinese_queries():
    assert colour_shape_query_zh("red", "circle") == "一个红色的圆"
    assert colour_shape_query_zh("blue", "square") == "一个蓝色的正方形"
    assert len({colour_shape_query_zh(c, s) for c in vocab.COLOURS for s in vocab.SHAPES}) == 48


def test_the_issues_examples_are_among_the_captions():
    scene = sample_scene(0)
    one = scene.__class__((single_object_scene("blue", "square", "large", "left").objects[0],), scene.background)
    assert "左边有一个大的蓝色正方形" in scene_captions_zh(one)
    red = single_object_scene("red", "circle")
    assert "一个红色的圆" in scene_captions_zh(red)
    two = single_object_scene("green", "triangle", "small", "left")
    two = two.__class__(two.objects + (two.objects[0].__class__("green", "triangle", "small", "right"),), two.background)
    assert "两个绿色的三角形" in scene_captions_zh(two)


def test_every_chinese_caption_is_true_of_its_scene():
    rng = random.Random(5)
    for seed in range(400):
        scene = sample_scene(seed)
        caption = random_caption_zh(scene, rng)
        # it names a colour and a shape of the scene, and no colour the scene lacks
        named_colours = {c for c, zh in COLOURS_ZH.items() if zh in caption or re.search(zh[0] + "(?!色)", caption)}
        assert named_colours and named_colours <= {o.colour for o in scene.objects}, (caption, scene.objects)
        shapes = {o.shape for o in scene.objects}
        assert any(name in caption for s in shapes for name in SHAPES_ZH[s]), (caption, scene.objects)
        # a count says as many as there are
        for n, word in NUMBERS_ZH.items():
            if n > 1 and word in caption:
                assert any(sum((o.colour, o.shape) == (p.colour, p.shape) for p in scene.objects) == n for o in scene.objects)


def test_epoch_captions_mix_the_languages_only_when_asked():
    scenes = [sample_scene(s) for s in range(300)]
    data = RenderedSet(scenes, np.zeros((300, 1, 1, 3), np.uint8))
    english = data.captions(random.Random(1))
    assert not any(CJK.search(c) for c in english)
    mixed = data.captions(random.Random(1), zh_prob=0.5)
    share = sum(bool(CJK.search(c)) for c in mixed) / len(mixed)
    assert 0.4 < share < 0.6


def test_varied_style_changes_proportions_not_the_canonical_drawing():
    rng = random.Random(3)
    cross_widths = {round(random_proportions(rng)["cross"], 2) for _ in range(50)}
    assert min(cross_widths) < 0.2 < CANONICAL_PROPORTIONS["cross"] < max(cross_widths)
    assert shape_polygon("diamond", 0, 0, 2, 0) == [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    # canonical pictures are what they always were: the same seed gives the same pixels twice
    scene = sample_scene(11)
    a = render_scene(scene, (96, 96), RenderStyle(), random.Random(1))
    b = render_scene(scene, (96, 96), RenderStyle(), random.Random(1))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    # varied pictures differ in drawing from canonical ones of the same scene and rng
    rng1, rng2 = random.Random(2), random.Random(2)
    style = varied_style(rng1)
    assert style.geometry and style.outline_prob > 0
    assert not np.array_equal(
        np.asarray(render_scene(scene, (96, 96), style, rng1)),
        np.asarray(render_scene(scene, (96, 96), RenderStyle(), rng2)),
    )


def test_outlined_objects_keep_their_colour_at_the_edge():
    style = RenderStyle(outline_prob=1.0, shade_jitter=0, position_jitter=0, max_rotation=0)
    hits = 0
    for seed in range(20):
        img = np.asarray(render_scene(single_object_scene("blue", "square"), (120, 120), style, random.Random(seed)))
        blue = np.linalg.norm(img.astype(float) - vocab.COLOUR_RGB["blue"], axis=-1) < 40
        hits += blue.sum() > 50
    assert hits == 20
