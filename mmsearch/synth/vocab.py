"""The fixed vocabulary of the shapes world; other parts of the project and outside tests rely on it."""

from __future__ import annotations

# Each colour's canonical RGB; renderings jitter shades around it so "red" covers many reds.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 220, 35),
    "green": (40, 165, 55),
    "blue": (35, 80, 215),
    "purple": (135, 50, 175),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
MIN_OBJECTS, MAX_OBJECTS = 1, 3

# Where each named position puts an object's centre, as fractions of width and height.
POSITION_ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "center": (0.5, 0.5),
}
# Object diameter as a fraction of the image's shorter side.
SIZE_FRACTIONS: dict[str, tuple[float, float]] = {"small": (0.18, 0.24), "large": (0.36, 0.44)}

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def plural(shape: str) -> str:
    """English plural of a shape noun ("cross" -> "crosses")."""
    return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[0] in "aeiou" else "a"


def position_phrase(position: str) -> str:
    """How a caption says where an object is: 'on the left', 'at the top', 'in the center'."""
    return {
        "left": "on the left",
        "right": "on the right",
        "top": "at the top",
        "bottom": "at the bottom",
        "center": "in the center",
    }[position]
