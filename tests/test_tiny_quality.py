"""The bundled `tiny` model is really trained: held-out colour+shape precision through the encoder API."""

import random

import numpy as np
import pytest

from mmsearch.models import load_encoder
from mmsearch.synth import RenderStyle, render_scene, sample_scene, single_object_scene, vocab
from mmsearch.train.data import AugmentConfig
from mmsearch.train.evaluate import colour_shape_query, evaluate_held_out
from mmsearch.train.tiny import held_out_set

# Seeds far from the training range (1_000_003 .. 1_060_002) and from the model card's held-out set.
FRESH_SEED = 7 * 10**8


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny", device="cpu")


def test_tiny_reaches_colour_shape_precision_on_new_scenes(tiny):
    scenes, images = [], []
    for i in range(1000):  # the model card's held-out size: P@5 needs enough true images per query
        rng = random.Random(FRESH_SEED + i)
        scene = sample_scene(rng)
        scenes.append(scene)
        from mmsearch.train.data import augmented_rendering

        images.append(augmented_rendering(scene, rng, AugmentConfig()))
    report = evaluate_held_out(tiny.encode_images, tiny.encode_texts, images, scenes)
    assert report.colour_shape_p_at_5 >= 0.9, sorted(report.per_query_p_at_5.items(), key=lambda kv: kv[1])[:8]


def test_tiny_names_single_objects_drawn_plainly(tiny):
    """One object, canonical drawing, plain white background: the query for it ranks it first among all 48."""
    hits = 0
    total = 0
    queries = [(c, s) for c in vocab.COLOURS for s in vocab.SHAPES if c != "white"]
    text = tiny.encode_texts([colour_shape_query(c, s) for c, s in queries])
    for size in ("large", "small"):
        images = [render_scene(single_object_scene(c, s, size, "center"), (256, 192), RenderStyle()) for c, s in queries]
        img = tiny.encode_images(images)
        best = np.argmax(text @ img.T, axis=1)
        hits += int((best == np.arange(len(queries))).sum())
        total += len(queries)
    assert hits / total >= 0.8, f"{hits}/{total}"


def test_model_card_figures_match_a_fresh_evaluation(tiny):
    """The shipped metrics were computed, not typed: re-evaluating the card's held-out set gives them back."""
    import json

    from mmsearch.models import tiny_weights_path

    metrics = json.loads((tiny_weights_path().parent / "metrics.json").read_text())
    card = metrics["held_out"]["single_objects_224px"]
    scenes, images = held_out_set(card["n_images"], None)
    report = evaluate_held_out(tiny.encode_images, tiny.encode_texts, images, scenes)
    assert report.colour_shape_p_at_5 == pytest.approx(card["colour_shape_p_at_5"], abs=0.02)
