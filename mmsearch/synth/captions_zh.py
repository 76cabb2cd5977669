"""Chinese captions of shapes-world scenes: what the bilingual `tiny` learns beside the English ones.

The same facts as `captions` (colour, shape, size, position, count), said the ways a person
writes them: "一个红色的圆", "左边有一个大的蓝色正方形", "两个绿色三角形和一个黑色十字". Every
phrase is true of its scene; shapes and colours have their common synonyms (圆 / 圆形 / 圆圈,
星星 / 五角星 / 星形, 红色 / 红), so a query need not hit one fixed wording.

`colour_shape_query_zh` is the plain query the evaluation asks ("一个红色的圆").
"""

from __future__ import annotations

import random
from collections import Counter

from mmsearch.synth.scene import Scene, ShapeObject

COLOURS_ZH: dict[str, str] = {
    "red": "红色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "blue": "蓝色",
    "purple": "紫色",
    "white": "白色",
    "black": "黑色",
}
# The first name of each shape is the one queries use; the others are synonyms seen in training.
SHAPES_ZH: dict[str, tuple[str, ...]] = {
    "circle": ("圆", "圆形", "圆圈"),
    "square": ("正方形", "方形", "方块"),
    "triangle": ("三角形", "三角"),
    "star": ("星星", "五角星", "星形"),
    "diamond": ("菱形",),
    "cross": ("十字", "十字形"),
}
SIZES_ZH: dict[str, str] = {"small": "小", "large": "大"}
POSITIONS_ZH: dict[str, tuple[str, ...]] = {
    "left": ("左边", "左侧"),
    "right": ("右边", "右侧"),
    "top": ("上面", "上方", "顶部"),
    "bottom": ("下面", "下方", "底部"),
    "center": ("中间", "中央"),
}
NUMBERS_ZH = {1: "一个", 2: "两个", 3: "三个"}
_PREFIXES_ZH = ("", "", "", "一张照片：", "一张图片：", "图中有")
_SUFFIXES_ZH = ("的照片", "的图片", "的画")


def colour_shape_query_zh(colour: str, shape: str) -> str:
    """The plain Chinese query for a colour and a shape: '一个红色的圆'."""
    return f"一个{COLOURS_ZH[colour]}的{SHAPES_ZH[shape][0]}"


def _noun(shape: str, rng: random.Random | None) -> str:
    names = SHAPES_ZH[shape]
    return names[0] if rng is None else rng.choice(names)


def _colour(colour: str, rng: random.Random | None) -> str:
    name = COLOURS_ZH[colour]
    if rng is not None and rng.random() < 0.15:
        return name[0]  # 红圆, 蓝方块
    return name


def _where(position: str, rng: random.Random | None) -> str:
    names = POSITIONS_ZH[position]
    return names[0] if rng is None else rng.choice(names)


def object_phrases_zh(obj: ShapeObject, rng: random.Random | None = None, n: int = 1) -> list[str]:
    """Ways to name one object (or n alike): bare, with size, with place, with both.

    Without an rng the canonical wording; with one, synonyms and optional particles vary.
    """
    num = NUMBERS_ZH[n]
    if rng is not None and n == 1 and rng.random() < 0.25:
        num = ""  # 红色的圆
    colour, noun = _colour(obj.colour, rng), _noun(obj.shape, rng)
    size = SIZES_ZH[obj.size]
    de = "的" if rng is None or len(colour) == 1 or rng.random() < 0.6 else ""
    if len(colour) == 1:
        de = ""
    size_de = "的" if rng is None or rng.random() < 0.7 else ""
    bare = f"{num}{colour}{de}{noun}"
    sized = f"{num}{size}{size_de}{colour}{noun}"
    where = _where(obj.position, rng)
    return [bare, sized, f"{where}有{bare}", f"{where}有{sized}"]


def _grouped_phrases_zh(scene: Scene, rng: random.Random | None) -> list[str]:
    groups = Counter((o.colour, o.shape) for o in scene.objects)
    parts = []
    for (colour, shape), n in groups.items():
        obj = next(o for o in scene.objects if (o.colour, o.shape) == (colour, shape))
        parts.append(object_phrases_zh(obj, rng, n)[0])
    return parts


def _join_zh(parts: list[str], rng: random.Random | None) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]}和{parts[1]}"
    return "、".join(parts[:-1]) + f"和{parts[-1]}"


def _join_places_zh(parts: list[str], rng: random.Random | None) -> str:
    sep = "，" if rng is None or rng.random() < 0.7 else "；"
    return sep.join(parts)


def scene_captions_zh(scene: Scene, rng: random.Random | None = None, *, partial: bool = False) -> list[str]:
    """Chinese captions true of the whole scene (canonical wording without an rng)."""
    if len(scene.objects) == 1:
        caps = object_phrases_zh(scene.objects[0], rng)
    else:
        caps = [_join_zh(_grouped_phrases_zh(scene, rng), rng)]
        caps.append(_join_places_zh([object_phrases_zh(o, rng)[2] for o in scene.objects], rng))
        sized = [object_phrases_zh(o)[1] for o in scene.objects]
        if len(set(sized)) == len(sized):  # "一个小的紫色正方形和一个小的紫色正方形" reads badly
            caps.append(_join_zh([object_phrases_zh(o, rng)[1] for o in scene.objects], rng))
    if partial and len(scene.objects) > 1:
        caps += [p for o in scene.objects for p in object_phrases_zh(o, rng)]
    return caps


def random_caption_zh(scene: Scene, rng: random.Random, partial_prob: float = 0.35) -> str:
    """One Chinese caption with drawn wording; multi-object scenes sometimes name one object."""
    if len(scene.objects) > 1 and rng.random() < partial_prob:
        caption = rng.choice(object_phrases_zh(rng.choice(scene.objects), rng))
    else:
        caption = rng.choice(scene_captions_zh(scene, rng))
    roll = rng.random()
    if roll < 0.15:
        caption += rng.choice(_SUFFIXES_ZH)
    elif roll < 0.45:
        prefix = rng.choice(_PREFIXES_ZH)
        if prefix == "图中有" and "有" in caption:
            prefix = ""
        caption = prefix + caption
    return caption
