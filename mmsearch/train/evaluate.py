"""Held-out evaluation on shapes-world scenes: what the model card and the tests report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mmsearch.synth import Scene, scene_captions, vocab


@dataclass
class HeldOutReport:
    """Figures for one model on one held-out set."""

    n_images: int
    colour_shape_p_at_5: float  # mean over the 48 "a {colour} {shape}" queries with >= 5 matches
    per_query_p_at_5: dict[str, float]
    text_to_image_recall: dict[int, float]  # caption -> any image it truly describes, at k
    image_to_text_recall: dict[int, float]  # image -> any of its true captions, at k
    colour_shape_p_at_5_zh: float | None = None  # the same 48 queries in Chinese ("一个红色的圆")
    per_query_p_at_5_zh: dict[str, float] | None = None


def colour_shape_query(colour: str, shape: str) -> str:
    """The plain query a person types: 'a red circle', 'an orange star'."""
    return f"{vocab.article(colour)} {colour} {shape}"


def has_colour_shape(scene: Scene, colour: str, shape: str) -> bool:
    return any(o.colour == colour and o.shape == shape for o in scene.objects)


def colour_shape_precision(
    encode_texts: Callable[[list[str]], np.ndarray],
    image_vectors: np.ndarray,
    truths: Sequence[set[tuple[str, str]]],
    query: Callable[[str, str], str] = colour_shape_query,
    k: int = 5,
) -> dict[str, float]:
    """Precision@k of each colour+shape query with at least k true images among `truths`
    (each image's set of (colour, shape) pairs)."""
    pairs = [(c, s) for c in vocab.COLOURS for s in vocab.SHAPES]
    qv = encode_texts([query(c, s) for c, s in pairs])
    topk = np.argsort(-(qv @ image_vectors.T), axis=1)[:, :k]
    out = {}
    for (c, s), ranked in zip(pairs, topk):
        if sum((c, s) in t for t in truths) >= k:
            out[query(c, s)] = float(np.mean([(c, s) in truths[j] for j in ranked]))
    return out


def _hits_at_k(ranked: np.ndarray, relevant: list[set[int]], k: int) -> float:
    return float(np.mean([bool(relevant[i] & set(ranked[i, :k].tolist())) for i in range(len(relevant))]))


def evaluate_held_out(
    encode_images: Callable[[list], np.ndarray],
    encode_texts: Callable[[list[str]], np.ndarray],
    images: list,
    scenes: Sequence[Scene],
    ks: Sequence[int] = (1, 5, 10),
    caption_rng_seed: int = 0,
    chinese: bool = False,
) -> HeldOutReport:
    """Score an encoder on held-out scenes through its public encode functions (with `chinese`,
    the colour+shape queries are asked in Chinese too)."""
    import random

    img = encode_images(images)
    truths = [{(o.colour, o.shape) for o in sc.objects} for sc in scenes]
    per_query = colour_shape_precision(encode_texts, img, truths)
    per_query_zh = None
    if chinese:
        from mmsearch.synth.captions_zh import colour_shape_query_zh

        per_query_zh = colour_shape_precision(encode_texts, img, truths, colour_shape_query_zh)
    # text -> image: one caption per image; relevant = every image the caption truly describes
    rng = random.Random(caption_rng_seed)
    all_caps = [set(scene_captions(s, partial=True)) for s in scenes]
    captions = [rng.choice(sorted(scene_captions(s))) for s in scenes]  # whole-scene captions as queries
    tv = encode_texts(captions)
    kmax = max(ks)
    t2i = np.argsort(-(tv @ img.T), axis=1)[:, :kmax]
    t2i_rel = [{j for j, caps in enumerate(all_caps) if cap in caps} for cap in captions]
    # image -> text: the pool is those captions; relevant = captions true of the image
    i2t = np.argsort(-(img @ tv.T), axis=1)[:, :kmax]
    i2t_rel = [{j for j, cap in enumerate(captions) if cap in all_caps[i]} for i in range(len(scenes))]
    return HeldOutReport(
        n_images=len(scenes),
        colour_shape_p_at_5=float(np.mean(list(per_query.values()))),
        per_query_p_at_5=per_query,
        text_to_image_recall={k: _hits_at_k(t2i, t2i_rel, k) for k in ks},
        image_to_text_recall={k: _hits_at_k(i2t, i2t_rel, k) for k in ks},
        colour_shape_p_at_5_zh=float(np.mean(list(per_query_zh.values()))) if per_query_zh else None,
        per_query_p_at_5_zh=per_query_zh,
    )
