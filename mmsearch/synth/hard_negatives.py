"""Hard negatives: scenes one fact away from a given one, and the captions that tell them apart.

A dual encoder like CLIP scores "a red circle and a blue square" and "a blue circle and a red
square" alike. An image-text matching model learns the difference only if it is shown such
minimal pairs, so the training data and the reranking benchmark draw them from here:

==================  =================================================================
kind                what changes (nothing else does)
==================  =================================================================
``swap_colours``    two objects of different shapes exchange their colours
``colour``          one object takes another colour the background allows
``shape``           one object becomes another shape
``count``           a copy of an object is added, or one object is taken away
``position``        two objects exchange places, or one moves to a free place
``size``            one object turns small <-> large (another large one turns small)
==================  =================================================================

Truth is the caption templates' truth: a caption describes a scene when it is one of the
scene's own captions, whole or partial (`scene_captions(scene, partial=True)`), whatever its
prefix ("a photo of ..."). So "two blue squares" is false of three blue squares, and "a red
circle" is true of any scene that holds a red circle.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

from mmsearch.synth import vocab
from mmsearch.synth.captions import scene_captions
from mmsearch.synth.scene import Scene, ShapeObject, allowed_colours

NEGATIVE_KINDS: tuple[str, ...] = ("swap_colours", "colour", "shape", "count", "position", "size")

_PREFIXES = ("a photo of ", "a picture of ", "an image of ", "a drawing of ")


@lru_cache(maxsize=262144)
def caption_key(caption: str) -> str:
    """What truth is judged on: the caption's object phrases in sorted order, without a prefix.

    "a photo of a red circle and a blue square" and "a blue square and a red circle" say the
    same, though the templates write the objects in the scene's order only.
    """
    text = " ".join(caption.lower().split())
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    phrases = [p.strip() for part in text.split(", ") for p in part.split(" and ")]
    return " and ".join(sorted(phrases))


@lru_cache(maxsize=65536)
def _true_keys(objects: tuple[ShapeObject, ...]) -> frozenset[str]:
    scene = Scene(objects, background=None)  # type: ignore[arg-type]  # captions ignore it
    return frozenset(caption_key(c) for c in scene_captions(scene, partial=True))


def true_captions(scene: Scene) -> frozenset[str]:
    """Every caption (without prefix) that truthfully describes the scene, whole or partial."""
    return _true_keys(scene.objects)


def describes(caption: str, scene: Scene) -> bool:
    """Whether the caption is true of the scene, by the caption templates' truth."""
    return caption_key(caption) in true_captions(scene)


def distinguishing_captions(scene: Scene, other: Scene) -> list[str]:
    """Captions of `scene` that are false of `other`: whole-scene ones first, then partial ones."""
    return list(_distinguishing(scene.objects, other.objects))


@lru_cache(maxsize=262144)
def _distinguishing(
    objects: tuple[ShapeObject, ...], others: tuple[ShapeObject, ...]
) -> tuple[str, ...]:
    false_of_other = _true_keys(others)
    captions = scene_captions(Scene(objects, background=None), partial=True)  # type: ignore[arg-type]
    return tuple(c for c in captions if caption_key(c) not in false_of_other)


def mutate(scene: Scene, kind: str, rng: random.Random) -> Scene | None:
    """The scene with one fact of `kind` changed, or None when the scene has no such change."""
    if kind not in _MUTATIONS:
        raise ValueError(
            f"unknown hard-negative kind {kind!r}; choose one of {', '.join(NEGATIVE_KINDS)}"
        )
    objects = _MUTATIONS[kind](scene, rng)
    if objects is None:
        return None
    twin = replace(scene, objects=tuple(_at_most_one_large(objects)), extra={"negative": kind})
    return twin if true_captions(twin) != true_captions(scene) else None


def hard_negative(
    scene: Scene, rng: random.Random, kinds: tuple[str, ...] = NEGATIVE_KINDS
) -> Scene | None:
    """A twin of the scene one fact away, of a random kind that applies to it."""
    order = list(kinds)
    rng.shuffle(order)
    for kind in order:
        twin = mutate(scene, kind, rng)
        if twin is not None:
            return twin
    return None


# ---------------------------------------------------------------- the mutations


def _swap_colours(scene: Scene, rng: random.Random) -> list[ShapeObject] | None:
    objects = scene.objects
    pairs = [
        (i, j)
        for i in range(len(objects))
        for j in range(i + 1, len(objects))
        if objects[i].colour != objects[j].colour and objects[i].shape != objects[j].shape
    ]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    out = list(objects)
    out[i] = replace(objects[i], colour=objects[j].colour)
    out[j] = replace(objects[j], colour=objects[i].colour)
    return out


def _colour(scene: Scene, rng: random.Random) -> list[ShapeObject] | None:
    objects = scene.objects
    i = rng.randrange(len(objects))
    choices = [c for c in allowed_colours(scene.background) if c != objects[i].colour]
    if not choices:
        return None
    out = list(objects)
    out[i] = replace(objects[i], colour=rng.choice(choices))
    return out


def _shape(scene: Scene, rng: random.Random) -> list[ShapeObject]:
    objects = scene.objects
    i = rng.randrange(len(objects))
    out = list(objects)
    out[i] = replace(
        objects[i], shape=rng.choice([s for s in vocab.SHAPES if s != objects[i].shape])
    )
    return out


def _count(scene: Scene, rng: random.Random) -> list[ShapeObject] | None:
    objects = scene.objects
    can_add = len(objects) < vocab.MAX_OBJECTS
    can_remove = len(objects) > vocab.MIN_OBJECTS
    if can_add and (not can_remove or rng.random() < 0.5):
        source = rng.choice(objects)
        free = [p for p in vocab.POSITIONS if p not in {o.position for o in objects}]
        return [*objects, replace(source, size="small", position=rng.choice(free))]
    if can_remove:
        out = list(objects)
        out.pop(rng.randrange(len(out)))
        return out
    return None


def _position(scene: Scene, rng: random.Random) -> list[ShapeObject]:
    objects = scene.objects
    pairs = [
        (i, j)
        for i in range(len(objects))
        for j in range(i + 1, len(objects))
        if replace(objects[i], position="") != replace(objects[j], position="")
    ]
    out = list(objects)
    if pairs and rng.random() < 0.6:
        i, j = rng.choice(pairs)
        out[i] = replace(objects[i], position=objects[j].position)
        out[j] = replace(objects[j], position=objects[i].position)
        return out
    i = rng.randrange(len(objects))
    free = [p for p in vocab.POSITIONS if p not in {o.position for o in objects}]
    out[i] = replace(objects[i], position=rng.choice(free))
    return out


def _size(scene: Scene, rng: random.Random) -> list[ShapeObject]:
    objects = scene.objects
    i = rng.randrange(len(objects))
    out = list(objects)
    if objects[i].size == "large":
        out[i] = replace(objects[i], size="small")
        return out
    out = [replace(o, size="small") for o in objects]  # the large one, if any, gives way
    out[i] = replace(objects[i], size="large")
    return out


def _at_most_one_large(objects: list[ShapeObject]) -> list[ShapeObject]:
    """Two large objects at neighbouring anchors would overlap (the rule `sample_scene` keeps)."""
    seen = False
    out = []
    for o in objects:
        if o.size == "large" and seen:
            o = replace(o, size="small")
        seen = seen or o.size == "large"
        out.append(o)
    return out


_MUTATIONS: dict[str, Callable[[Scene, random.Random], list[ShapeObject] | None]] = {
    "swap_colours": _swap_colours,
    "colour": _colour,
    "shape": _shape,
    "count": _count,
    "position": _position,
    "size": _size,
}
