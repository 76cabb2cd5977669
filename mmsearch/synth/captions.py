"""Natural-English captions for scenes, with template variety."""

from __future__ import annotations

import random
from collections import Counter

from mmsearch.synth import vocab
from mmsearch.synth.scene import Scene, ShapeObject

_PREFIXES = ("", "", "", "a photo of ", "a picture of ", "an image of ", "a drawing of ")


def _with_article(phrase: str) -> str:
    return f"{vocab.article(phrase)} {phrase}"


def object_phrases(obj: ShapeObject) -> list[str]:
    """Ways to name one object, from bare ("a red circle") to full ("a large red circle on the left")."""
    cs = f"{obj.colour} {obj.shape}"
    scs = f"{obj.size} {cs}"
    where = vocab.position_phrase(obj.position)
    return [
        _with_article(cs),
        _with_article(scs),
        f"{_with_article(cs)} {where}",
        f"{_with_article(scs)} {where}",
    ]


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} and {parts[1]}"
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _grouped_phrases(scene: Scene) -> list[str]:
    """One phrase per colour+shape group: 'two blue squares', 'a green triangle'."""
    groups = Counter((o.colour, o.shape) for o in scene.objects)
    parts = []
    for (colour, shape), n in groups.items():
        parts.append(_with_article(f"{colour} {shape}") if n == 1 else f"{vocab.NUMBER_WORDS[n]} {colour} {vocab.plural(shape)}")
    return parts


def partial_captions(scene: Scene) -> list[str]:
    """Captions naming one object of a multi-object scene, as real alt text names the salient thing.

    They teach that "a blue square" matches every picture that has a blue square in it, not only
    pictures of a lone blue square.
    """
    if len(scene.objects) == 1:
        return []
    return sorted({phrase for o in scene.objects for phrase in object_phrases(o)})


def scene_captions(scene: Scene, *, partial: bool = False) -> list[str]:
    """Every caption template that truthfully describes the whole scene (deterministic order).

    With `partial`, captions that name only one of its objects are included too.
    """
    captions: list[str] = []
    if len(scene.objects) == 1:
        for phrase in object_phrases(scene.objects[0]):
            captions.extend(prefix + phrase for prefix in ("", "a photo of ", "a picture of "))
    else:
        grouped = _join(_grouped_phrases(scene))
        captions += [grouped, "a photo of " + grouped, "a picture of " + grouped]
        for form in (2, 1):  # "a red circle on the left and ...", "a large red circle and ..."
            phrases = [object_phrases(o)[form] for o in scene.objects]
            if len(set(phrases)) == len(phrases):  # "a small square, a small square" reads badly
                captions.append(_join(phrases))
    return captions + (partial_captions(scene) if partial else [])


PARTIAL_CAPTION_PROB = 0.35  # share of multi-object training captions that name one object


def random_caption(scene: Scene, rng: random.Random) -> str:
    """One caption drawn from the scene's templates, with a random prefix for variety."""
    partial = partial_captions(scene)
    pool = partial if partial and rng.random() < PARTIAL_CAPTION_PROB else scene_captions(scene)
    caption = rng.choice(pool)
    if not caption.startswith(("a photo", "a picture")):
        caption = rng.choice(_PREFIXES) + caption
    return caption


def count_phrase(n: int, colour: str, shape: str) -> str:
    """'one red circle' / 'three red circles': used by counting queries."""
    noun = shape if n == 1 else vocab.plural(shape)
    return f"{vocab.NUMBER_WORDS[n]} {colour} {noun}"
