"""The bilingual `tiny-zh` (issue 12): Chinese queries, shapes drawn by another program, the
text context, and refusal of collections indexed with other weights of a bundled model.

The thresholds sit under the shipped weights' measured figures (model card: independent renderer
P@5 0.912 English / 0.958 Chinese on `benchmarks/tiny_generalization.py`'s 960 pictures, the
issue's goal being 0.9; 0.904 / 0.938 on this file's 480 pictures of another seed) by a margin
for the smaller, differently seeded sets here.
"""

import random

import numpy as np
import pytest

from mmsearch.models import load_encoder
from mmsearch.synth import sample_scene, vocab
from mmsearch.train.data import AugmentConfig
from mmsearch.train.evaluate import colour_shape_query, evaluate_held_out

FRESH_SEED = 7 * 10**8
EN_INDEPENDENT_MIN = 0.86
ZH_INDEPENDENT_MIN = 0.88
ZH_OWN_MIN = 0.85
SHIPPED_TINY_ZH_INDEPENDENT = 0.3  # `tiny` (English only) on the same Chinese queries: near chance


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny-zh", device="cpu")


# ---- bilingual, and held on a renderer training never saw ----------------------------------------

INDEPENDENT_TEST_SEED = 31337  # not the benchmark's seed (424242): the card's figures are not re-read here


def _independent_p_at_5(tiny, n: int, seed: int) -> dict[str, float]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from independent_render import single_object_set

    from mmsearch.synth.captions_zh import colour_shape_query_zh
    from mmsearch.train.evaluate import colour_shape_precision

    drawn = single_object_set(n, seed)
    vectors = tiny.encode_images([img for img, _ in drawn])
    truths = [{(d.colour, d.shape)} for _, d in drawn]
    out = {}
    for lang, query in (("en", colour_shape_query), ("zh", colour_shape_query_zh)):
        per_query = colour_shape_precision(tiny.encode_texts, vectors, truths, query)
        out[lang] = float(np.mean(list(per_query.values())))
    return out


def test_tiny_holds_on_shapes_drawn_by_another_program_in_both_languages(tiny):
    """Single objects from benchmarks/independent_render.py (thin crosses, narrow diamonds, other
    shades, outlines): English and Chinese colour+shape queries keep their precision."""
    p = _independent_p_at_5(tiny, 480, INDEPENDENT_TEST_SEED)
    assert p["en"] >= EN_INDEPENDENT_MIN and p["zh"] >= ZH_INDEPENDENT_MIN, p


def test_the_english_tiny_does_not_understand_chinese_so_the_test_above_can_fail():
    p = _independent_p_at_5(load_encoder("tiny", device="cpu"), 240, INDEPENDENT_TEST_SEED)
    assert p["zh"] < SHIPPED_TINY_ZH_INDEPENDENT < ZH_INDEPENDENT_MIN, p


def test_tiny_answers_chinese_queries_on_new_scenes(tiny):
    scenes, images = [], []
    from mmsearch.train.data import augmented_rendering

    for i in range(600):
        rng = random.Random(FRESH_SEED + 50_000 + i)
        scene = sample_scene(rng, n_objects=1)
        scenes.append(scene)
        images.append(augmented_rendering(scene, rng, AugmentConfig()))
    report = evaluate_held_out(tiny.encode_images, tiny.encode_texts, images, scenes, chinese=True)
    assert report.colour_shape_p_at_5_zh >= ZH_OWN_MIN, sorted(report.per_query_p_at_5_zh.items(), key=lambda kv: kv[1])[:8]
    assert report.colour_shape_p_at_5_zh >= report.colour_shape_p_at_5 - 0.05, (
        report.colour_shape_p_at_5_zh, report.colour_shape_p_at_5)


def test_the_text_context_holds_chinese_captions(tiny):
    """open_clip's byte-level BPE spells a Chinese character in 1-3 tokens: the context must hold
    the captions of one and two objects, and every plain query, without cutting them."""
    import open_clip

    from mmsearch.models.registry import ensure_registered
    from mmsearch.synth.captions_zh import colour_shape_query_zh, scene_captions_zh

    ensure_registered()
    context = open_clip.get_model_config("mmsearch-tiny-zh")["text_cfg"]["context_length"]
    tokenize = open_clip.get_tokenizer("mmsearch-tiny-zh", context_length=256)
    texts = [colour_shape_query_zh(c, s) for c in vocab.COLOURS for s in vocab.SHAPES]
    for seed in range(300):
        scene = sample_scene(seed)
        if len(scene.objects) <= 2:
            texts += scene_captions_zh(scene)
    lengths = (tokenize(texts) != 0).sum(1)
    assert int(lengths.max()) <= context, (int(lengths.max()), texts[int(lengths.argmax())])
    # what a 3-layer text tower sees: different queries stay different
    vectors = tiny.encode_texts(texts[:48])
    assert len({tuple(np.round(v, 4)) for v in vectors}) == 48


PREVIOUS_TINY_DIGEST = "0123456789abcdef"  # other weights of the same bundled name


def test_a_collection_indexed_with_other_weights_of_a_bundled_model_must_be_reindexed(tmp_path, tiny):
    """Retrained weights under the same name: a collection whose vectors came from the previous ones gets
    no vector of the new one (indexing more is refused with a message to re-index), and the new
    weights are never used on it. (A text query may still be answered by the previous weights'
    own exported text tower when one is cached: that mixes nothing.)"""
    from mmsearch import Engine, IndexOptions
    from mmsearch.errors import EncoderMismatchError
    from mmsearch.synth.media import write_photo_folder

    assert tiny.weights_id != PREVIOUS_TINY_DIGEST
    photos = write_photo_folder(tmp_path / "photos", 3, seed=4)
    with Engine(tmp_path / "home", "tiny-zh") as e:
        e.index([photos], options=IndexOptions(in_process=True))
        assert e.collection.catalog.encoder_weights() == tiny.weights_id
        e.collection.catalog.set_meta("encoder_weights", PREVIOUS_TINY_DIGEST)  # as an older index left it
    write_photo_folder(photos / "more", 2, seed=5)
    with Engine(tmp_path / "home") as e, pytest.raises(EncoderMismatchError, match="Re-index into a new home"):
        e.index([photos], options=IndexOptions(in_process=True))
    with Engine(tmp_path / "home") as e, pytest.raises(EncoderMismatchError, match="other weights of 'tiny-zh'"):
        _ = e.encoder  # what image queries and indexing embed with


def test_model_card_generalization_figures_match_a_fresh_evaluation(tiny):
    """The card's independent-renderer figures were measured on these weights, not typed."""
    import json
    import sys
    from pathlib import Path

    from mmsearch.models import tiny_weights_path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import tiny_generalization

    card = json.loads((tiny_weights_path("tiny-zh").parent / "metrics.json").read_text())["generalization"]
    assert card["weights_id"] == tiny.weights_id
    fresh = tiny_generalization.evaluate(tiny, card["independent"]["n_images"], 0, card["independent"]["seed"])
    for lang in ("en", "zh"):
        assert fresh["independent"][lang]["p_at_5"] == pytest.approx(card["independent"][lang]["p_at_5"], abs=0.02)
