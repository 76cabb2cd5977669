"""The evaluation-only renderer: independent of training, deterministic, and drawing what it says."""

import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import independent_render  # noqa: E402

_IMPORT = re.compile(r"^\s*(from\s+\S*independent_render\S*\s+import|import\s+\S*independent_render)", re.M)


def test_no_training_or_library_module_imports_the_independent_renderer():
    """Held-out means held out: nothing under mmsearch/ can draw its training data with it."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "mmsearch").rglob("*.py")
        if _IMPORT.search(p.read_text()) or "import_module(\"independent_render" in p.read_text()
    ]
    assert offenders == []
    code = (
        "import sys\n"
        "import mmsearch.train.tiny, mmsearch.train.data, mmsearch.train.loop, mmsearch.train.evaluate\n"
        "import mmsearch.train.itm, mmsearch.train.itm_data, mmsearch.synth, mmsearch.synth.captions_zh\n"
        "print(sorted(m for m in sys.modules if 'independent' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_same_seed_same_pictures_and_balanced_labels():
    a = independent_render.single_object_set(48, seed=3)
    b = independent_render.single_object_set(48, seed=3)
    assert all(np.array_equal(np.asarray(x[0]), np.asarray(y[0])) for x, y in zip(a, b))
    assert {(d.colour, d.shape) for _, d in a} == {
        (c, s) for c in independent_render.PALETTE for s in independent_render.SHAPES
    }


def test_it_draws_the_named_colour_on_a_contrasting_background():
    for i in range(30):
        rng = random.Random(i)
        colour = list(independent_render.PALETTE)[i % 8]
        img, drawn = independent_render.render_single(colour, "square", rng, size=(160, 120))
        arr = np.asarray(img, dtype=np.float32).reshape(-1, 3)
        near = np.linalg.norm(arr - np.array(drawn.rgb, np.float32), axis=1) < 40
        assert near.sum() > 20, (colour, drawn)  # the object is there, in its shade
        assert np.linalg.norm(np.subtract(drawn.rgb, drawn.background)) >= 120


def _area_per_squared_radius(img, rgb) -> float:
    """Pixels of the object's colour over its squared half-height (a centred, near-upright shape)."""
    arr = np.linalg.norm(np.asarray(img, np.float32) - np.array(rgb, np.float32), axis=-1) < 80
    ys, _ = np.nonzero(arr)
    r = (ys.max() - ys.min() + 1) / 2
    return arr.sum() / r**2


def test_its_cross_is_thinner_and_its_diamond_narrower_than_the_training_renderers():
    """Other proportions, measured on the pictures: the area a shape covers per squared radius."""
    from mmsearch.synth import RenderStyle, render_scene, single_object_scene, vocab

    for shape in ("cross", "diamond"):
        own = render_scene(
            single_object_scene("red", shape, "large", "center", (255, 255, 255)),
            (200, 200),
            RenderStyle(shade_jitter=0, position_jitter=0, max_rotation=0),
        )
        own_area = _area_per_squared_radius(own, vocab.COLOUR_RGB["red"])
        areas = []
        for seed in range(40):
            img, drawn = independent_render.render_single("red", shape, random.Random(seed), size=(200, 200))
            if drawn.style == "fill":
                areas.append(_area_per_squared_radius(img, drawn.rgb))
        assert len(areas) >= 10 and np.median(areas) < 0.85 * own_area, (shape, np.median(areas), own_area)
