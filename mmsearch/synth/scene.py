"""Scenes of the shapes world: what is where, sampled from a seed."""

from __future__ import annotations

import colorsys
import random
from dataclasses import asdict, dataclass, field

from mmsearch.synth import vocab


@dataclass(frozen=True)
class ShapeObject:
    """One object in a scene, described by its vocabulary attributes."""

    colour: str  # one of vocab.COLOURS
    shape: str  # one of vocab.SHAPES
    size: str  # one of vocab.SIZES
    position: str  # one of vocab.POSITIONS


@dataclass(frozen=True)
class Background:
    """How the canvas behind the objects is painted."""

    kind: str  # "plain", "gradient" or "noise"
    rgb: tuple[int, int, int]  # main colour
    rgb2: tuple[int, int, int]  # second colour of a gradient (same as rgb otherwise)


@dataclass(frozen=True)
class Scene:
    """A background and one to three objects at distinct positions."""

    objects: tuple[ShapeObject, ...]
    background: Background
    seed: int = 0  # the seed that drew it; renderings use it for shade jitter
    extra: dict = field(default_factory=dict, compare=False)

    def labels(self) -> dict:
        """Attribute labels for evaluation and test oracles."""
        return {"objects": [asdict(o) for o in self.objects], "background": asdict(self.background)}


# Background colours are drawn from neutrals and pale/dark tints; objects never share the
# background's colour (rgb distance check), so every object stays visible and nameable.
_NEUTRALS = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 200, 200), (60, 60, 60)]
_MIN_CONTRAST = 110.0


def _distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5


def random_background_rgb(rng: random.Random) -> tuple[int, int, int]:
    """A background colour: a neutral, a random grey, or a random tint (pale or dark)."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(_NEUTRALS)
    if roll < 0.55:
        g = rng.randint(0, 255)
        return (g, g, g)
    h = rng.random()
    s = rng.uniform(0.05, 0.45)
    v = rng.choice([rng.uniform(0.8, 1.0), rng.uniform(0.1, 0.35)])
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def allowed_colours(background: Background) -> list[str]:
    """Object colours that stand out from every colour used by the background."""
    bg = {background.rgb, background.rgb2}
    return [
        c for c in vocab.COLOURS if all(_distance(vocab.COLOUR_RGB[c], b) >= _MIN_CONTRAST for b in bg)
    ]


def sample_background(rng: random.Random) -> Background:
    kind = rng.choices(["plain", "gradient", "noise"], weights=[0.5, 0.3, 0.2])[0]
    rgb = random_background_rgb(rng)
    if kind == "gradient":
        # a gentle gradient: the second colour stays near the first so contrast rules hold
        rgb2 = tuple(max(0, min(255, c + rng.randint(-50, 50))) for c in rgb)
    else:
        rgb2 = rgb
    return Background(kind, rgb, rgb2)  # type: ignore[arg-type]


def sample_scene(
    rng: random.Random | int,
    n_objects: int | None = None,
    *,
    duplicate_prob: float = 0.25,
) -> Scene:
    """Draw a scene; with `duplicate_prob` a multi-object scene repeats one colour+shape ("two blue squares")."""
    if isinstance(rng, int):
        seed = rng
        rng = random.Random(rng)
    else:
        seed = rng.randrange(2**31)
    n = n_objects or rng.choices([1, 2, 3], weights=[0.5, 0.3, 0.2])[0]
    if not vocab.MIN_OBJECTS <= n <= vocab.MAX_OBJECTS:
        raise ValueError(f"a scene has {vocab.MIN_OBJECTS}..{vocab.MAX_OBJECTS} objects, not {n}")
    while True:
        background = sample_background(rng)
        colours = allowed_colours(background)
        if len(colours) >= 4:
            break
    positions = rng.sample(vocab.POSITIONS, n)
    if n > 1 and rng.random() < duplicate_prob:
        colour, shape, size = rng.choice(colours), rng.choice(vocab.SHAPES), rng.choice(vocab.SIZES)
        objects = [ShapeObject(colour, shape, size, p) for p in positions]
    else:
        objects = [
            ShapeObject(rng.choice(colours), rng.choice(vocab.SHAPES), rng.choice(vocab.SIZES), p)
            for p in positions
        ]
    # two large objects at neighbouring anchors would overlap; shrink all but one
    if sum(o.size == "large" for o in objects) > 1:
        keep = next(i for i, o in enumerate(objects) if o.size == "large")
        objects = [
            o if i == keep or o.size == "small" else ShapeObject(o.colour, o.shape, "small", o.position)
            for i, o in enumerate(objects)
        ]
    return Scene(tuple(objects), background, seed)


def single_object_scene(
    colour: str, shape: str, size: str = "large", position: str = "center", background_rgb=(255, 255, 255)
) -> Scene:
    """A hand-specified one-object scene on a plain background (tests, videos, demos)."""
    for name, value, allowed in (
        ("colour", colour, vocab.COLOURS),
        ("shape", shape, vocab.SHAPES),
        ("size", size, vocab.SIZES),
        ("position", position, vocab.POSITIONS),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
    bg = Background("plain", tuple(background_rgb), tuple(background_rgb))  # type: ignore[arg-type]
    return Scene((ShapeObject(colour, shape, size, position),), bg, 0)
