"""Train a bundled CLIP on the shapes world: `python -m mmsearch.train.tiny [--model tiny-zh]`.

Seeded and CPU-friendly: a fixed number of steps (so a busy machine takes longer but trains the
same weights), about 25 minutes on 2 cores. It writes `mmsearch/models/<name>/tiny.safetensors`,
`metrics.json` and `MODEL_CARD.md` beside it. Two recipes (`RECIPES`):

- `tiny`: English captions, canonical drawing (the default model of the demo and the tests);
- `tiny-zh`: English and Chinese captions (`mmsearch.synth.captions_zh`), drawn with varied
  proportions, outlines, shading and shades (`mmsearch.synth.render.varied_style`) so it holds on
  other programs' drawings, with a text context of 64 tokens (a Chinese character is 1-3 BPE
  tokens). How well is measured by `benchmarks/tiny_generalization.py` on a renderer training
  never sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mmsearch.train.data import AugmentConfig, augmented_rendering, render_set
from mmsearch.train.evaluate import HeldOutReport, evaluate_held_out
from mmsearch.train.loop import LoopConfig, train_contrastive

log = logging.getLogger(__name__)

HELD_OUT_SEED_BASE = 10**9  # held-out scenes use seeds no training scene can draw


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the weights; recorded in the model card."""

    model: str = "tiny-zh"  # the bundled model name it trains (its architecture from the registry)
    n_train: int = 52_000  # rendered training scenes (captions are redrawn every epoch)
    data_seed: int = 1
    loop: LoopConfig = LoopConfig(epochs=9, batch_size=128, lr=2e-3, warmup_steps=150, seed=0)
    augment: AugmentConfig = AugmentConfig(variety=True)
    zh_prob: float = 0.5  # share of each epoch's captions drawn in Chinese
    n_eval: int = 1000  # held-out scenes for the model card
    threads: int = 2  # torch threads
    render_workers: int = 2


RECIPES: dict[str, TinyRecipe] = {
    "tiny": TinyRecipe(
        model="tiny", n_train=60_000,
        loop=LoopConfig(epochs=5, batch_size=128, lr=2e-3, warmup_steps=150, seed=0),
        augment=AugmentConfig(), zh_prob=0.0,
    ),  # fmt: skip
    "tiny-zh": TinyRecipe(),
}
"""What each bundled model was trained with (`tiny`'s shipped weights predate the bilingual
evaluation columns of its card)."""


def held_out_set(n: int, augment: AugmentConfig | None) -> tuple[list, list]:
    """Held-out scenes and renderings: augmented like training, or canonical single objects."""
    from mmsearch.synth import RenderStyle, render_scene, sample_scene

    scenes, images = [], []
    for i in range(n):
        rng = random.Random(HELD_OUT_SEED_BASE + i)
        if augment is None:
            scene = sample_scene(rng, n_objects=1)
            images.append(render_scene(scene, (224, 224), RenderStyle(), rng))
        else:
            scene = sample_scene(rng)
            images.append(augmented_rendering(scene, rng, augment))
        scenes.append(scene)
    return scenes, images


def evaluate_encoder(encoder, n: int, augment: AugmentConfig) -> dict[str, HeldOutReport]:
    """Held-out figures through the public encoder API, on two renderings of new seeds."""
    reports = {}
    for label, aug in (("augmented_scenes", augment), ("single_objects_224px", None)):
        scenes, images = held_out_set(n, aug)
        reports[label] = evaluate_held_out(encoder.encode_images, encoder.encode_texts, images, scenes, chinese=True)
    return reports


def train_tiny(recipe: TinyRecipe, out: Path | None = None) -> dict:
    """Render, train, evaluate and save; returns the metrics written beside the weights."""
    import torch

    from mmsearch.models import Encoder, build_openclip, save_tiny_weights, tiny_weights_path

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.loop.seed)
    loaded = build_openclip(recipe.model, pretrained=False)
    pp = loaded.preprocess
    load_before = os.getloadavg()
    wall0 = t0 = time.perf_counter()
    data = render_set(recipe.n_train, recipe.data_seed, pp.to_uint8, recipe.augment, workers=recipe.render_workers)
    render_s = time.perf_counter() - t0
    log.info("rendered %d training scenes in %.0f s", recipe.n_train, render_s)
    caption_rng = random.Random(recipe.data_seed)
    result = train_contrastive(
        loaded.model, loaded.tokenizer, data.pixels, lambda _epoch: data.captions(caption_rng, recipe.zh_prob),
        pp.mean, pp.std, recipe.loop,
    )
    load_during = os.getloadavg()
    encoder = Encoder.from_loaded(loaded, device="cpu")
    t1 = time.perf_counter()
    reports = evaluate_encoder(encoder, recipe.n_eval, recipe.augment)
    eval_s = time.perf_counter() - t1
    path = save_tiny_weights(loaded.model, out or tiny_weights_path(recipe.model), recipe.model)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    metrics = {
        "recipe": asdict(recipe),
        "context_length": int(loaded.tokenizer.context_length),
        "render_seconds": round(render_s, 1),
        "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(eval_s, 1),
        "wall_seconds": round(time.perf_counter() - wall0, 1),
        "cpu_seconds": round(cpu_s, 1),  # this process and its render workers, all threads
        "load_average_1m": {"start": round(load_before[0], 2), "end_of_training": round(load_during[0], 2)},
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "epoch_losses": [round(x, 4) for x in result.losses],
        "held_out": {k: asdict(v) for k, v in reports.items()},
        "machine": f"{platform.machine()}, {recipe.threads} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "weights_bytes": path.stat().st_size,
    }
    (path.parent / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    (path.parent / "MODEL_CARD.md").write_text(model_card(metrics))
    return metrics


def _fmt_recall(r: dict) -> str:
    return " / ".join(f"{r[k]:.3f}" for k in sorted(r, key=int))


def _generalization_section(gen: dict | None) -> str:
    if not gen:
        return """## On a renderer it never saw

Not measured for these weights yet: run `python benchmarks/tiny_generalization.py --update-card`.
"""
    ind, own = gen["independent"], gen.get("own_single_objects_224px")
    rows = [
        f"| independent renderer (`benchmarks/independent_render.py`, seed {ind['seed']}) | {ind['n_images']} | "
        f"{ind['en']['p_at_5']:.3f} | {ind['zh']['p_at_5']:.3f} |"
    ]
    if own:
        rows.append(
            f"| own renderer, `single_objects_224px` | {own['n_images']} | {own['en']['p_at_5']:.3f} | {own['zh']['p_at_5']:.3f} |"
        )
    shapes = ", ".join(f"{s} {p:.2f}" for s, p in ind["en"]["by_shape"].items())
    shapes_zh = ", ".join(f"{s} {p:.2f}" for s, p in ind["zh"]["by_shape"].items())
    styles = ", ".join(f"{s} {p:.2f}" for s, p in ind["by_style_en"].items() if p is not None)
    return f"""## On a renderer it never saw

`benchmarks/independent_render.py` draws single objects with other code (signed distance
functions in numpy, not PIL polygons) and other proportions: thin crosses, narrow diamonds,
fat stars, equilateral triangles, rounded squares, its own palette of shades, outlines, shading,
drop shadows and textured backgrounds. No training module imports it (a test checks). The same
48 colour+shape queries are asked in English ("a red circle") and in Chinese ("一个红色的圆").

| held-out set | images | colour+shape P@5, English | colour+shape P@5, Chinese |
| --- | --- | --- | --- |
{chr(10).join(rows)}

Independent renderer by shape: English {shapes}; Chinese {shapes_zh}. By drawing style
(English): {styles}. Measured with `{gen['command']}` (weights `{gen['weights_id']}`).
"""


def _variety_text(augment: dict) -> str:
    if not augment.get("variety"):
        return "Canonical proportions with colour-shade jitter."
    return (
        "Drawn with varied geometry (`varied_style`): cross arms 0.12-0.36 of the radius, diamonds 0.36-0.72\n"
        "  wide, star inner radius 0.34-0.6, triangles of other heights, rounded squares, a slight stretch,\n"
        "  free rotation of circles and stars, wider sizes (a lone large object up to 0.62 of the side, as\n"
        "  other programs draw a single shape big); 30% of objects outlined (a darker edge, or the\n"
        "  outline alone), 35% shaded by a linear ramp, and 60% of pictures with shades drawn from each\n"
        "  colour name's whole hue/saturation/value window."
    )


def model_card(metrics: dict) -> str:
    """The model card: how the weights were made and how well they do on scenes never seen."""
    rows = []
    for label, rep in metrics["held_out"].items():
        zh = rep.get("colour_shape_p_at_5_zh")
        rows.append(
            f"| {label} | {rep['n_images']} | {rep['colour_shape_p_at_5']:.3f} | "
            f"{'-' if zh is None else f'{zh:.3f}'} | "
            f"{_fmt_recall(rep['text_to_image_recall'])} | {_fmt_recall(rep['image_to_text_recall'])} |"
        )
    worst = sorted(metrics["held_out"]["augmented_scenes"]["per_query_p_at_5"].items(), key=lambda kv: kv[1])[:6]
    r = metrics["recipe"]
    load = metrics.get("load_average_1m", {})
    cpu = metrics.get("cpu_seconds")
    timing = (
        f"rendering {metrics['render_seconds']} s, training {metrics['train_seconds']} s, held-out evaluation "
        f"{metrics.get('eval_seconds', '?')} s: {metrics.get('wall_seconds', 0) / 60:.1f} minutes wall in all, "
        f"{cpu} CPU seconds (all threads and render workers; {cpu / 2 / 60:.1f} minutes on 2 idle cores). "
        f"Load average (1 min) {load.get('start')} at the start, {load.get('end_of_training')} at the end of training"
        if cpu
        else f"rendering {metrics['render_seconds']} s, training {metrics['train_seconds']} s"
    )
    name = r.get("model", "tiny")
    from mmsearch.models.registry import BUNDLED

    languages = "**English and Chinese**" if r.get("zh_prob") else "English"
    return f"""# mmsearch `{name}`: model card

A small OpenCLIP model (architecture `{BUNDLED[name]}`: ModifiedResNet image tower at 64 px, 3-layer
text transformer with a context of {metrics.get('context_length', 32)} tokens, 128-d shared space) trained **from scratch by this
project** on its synthetic shapes world, with {languages} captions. It exists so the demo
runs offline and CI's tests check real semantics. It knows colours, shapes, sizes, positions and
counts of simple shapes; it knows nothing about real photos.

## Reproduce

```bash
python -m mmsearch.train.tiny --model {name}   # seeded; writes tiny.safetensors, metrics.json, MODEL_CARD.md here
python benchmarks/tiny_generalization.py --model {name} --update-card  # the independent-renderer figures below
```

- Data: {r['n_train']} shapes-world scenes (seed {r['data_seed']}), 1-3 objects, rendered at random sizes
  ({r['augment']['min_side']}-{r['augment']['max_side']} px, aspect up to {r['augment']['max_aspect']}),
  varied backgrounds, anti-aliasing on/off, blur, noise and JPEG quality
  {r['augment']['jpeg_quality'][0]}-{r['augment']['jpeg_quality'][1]}; letterboxed like the encoder's preprocessing.
  {_variety_text(r['augment'])}
  Captions are redrawn from the templates every epoch, {r.get('zh_prob', 0):.0%} of them in Chinese
  (`mmsearch.synth.captions_zh`: "一个红色的圆", "左边有一个大的蓝色正方形", "两个绿色三角形", with synonyms
  such as 圆形/圆圈, 五角星/星星); for scenes of several objects, 35% of the captions name just one of them
  (as real alt text names the salient thing), so "a blue square" also matches a picture with a
  blue square beside other shapes.
- Objective: symmetric InfoNCE (CLIP loss) in which pairs with identical captions count as positives.
- Optimiser: AdamW, lr {r['loop']['lr']}, weight decay {r['loop']['weight_decay']}, batch {r['loop']['batch_size']},
  {r['loop']['epochs']} epochs = {metrics['steps']} steps{' (STOPPED EARLY by --time-budget)' if metrics.get('stopped_early') else ''} (a fixed number: a busy machine takes longer, not fewer steps),
  {r['loop']['warmup_steps']} warm-up steps then cosine.
- Trained on {metrics['machine']} on {metrics['date']}: {timing}.
  Weights: {metrics['weights_bytes'] / 1e6:.1f} MB (fp32 safetensors).

## Held-out figures on its own renderer (new seeds, through the encoder's encode functions)

- *colour+shape P@5*: mean precision@5 of the 48 queries "a red circle" ... "a black cross" (queries with
  at least 5 true images among the held-out set); the Chinese column asks "一个红色的圆" ... "一个黑色的十字".
- *text->image R@1/5/10*: one English caption per image; a hit is any image the caption truly describes.
- *image->text R@1/5/10*: the same captions as the pool; a hit is any caption true of the image.

| held-out set | images | colour+shape P@5 | Chinese P@5 | text->image R@1/5/10 | image->text R@1/5/10 |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

`augmented_scenes` are drawn like the training data (1-3 objects). `single_objects_224px` are one
object on a varied background, rendered at 224x224 in the canonical style.

Hardest colour+shape queries (augmented scenes): {", ".join(f"{q} {p:.2f}" for q, p in worst)}.

{_generalization_section(metrics.get("generalization"))}
Epoch losses: {metrics['epoch_losses']}.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(RECIPES), default="tiny-zh", help="which bundled model's recipe")
    parser.add_argument("--out", type=Path, default=None, help="weights path (default: the bundled model's)")
    parser.add_argument("--n-train", type=int, default=None, help="override the recipe's scene count")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--n-eval", type=int, default=None)
    parser.add_argument(
        "--time-budget", type=float, default=None,
        help="stop training after this many seconds (experiments only: the recipe trains a fixed number of steps)",
    )
    args = parser.parse_args(argv)
    # OpenMP's default (spin a while, then sleep) is kept: OMP_WAIT_POLICY=PASSIVE made each of a
    # tiny model's thousands of small parallel regions wake its threads, 24% slower a step.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = RECIPES[args.model]
    recipe = replace(
        base,
        n_train=args.n_train or base.n_train,
        loop=replace(base.loop, epochs=args.epochs or base.loop.epochs, time_budget_s=args.time_budget),
        n_eval=args.n_eval or base.n_eval,
    )
    metrics = train_tiny(recipe, args.out)
    print(json.dumps({k: metrics[k] for k in ("steps", "train_seconds", "epoch_losses")}))
    for label, rep in metrics["held_out"].items():
        print(
            label, "colour+shape P@5", round(rep["colour_shape_p_at_5"], 3),
            "Chinese", round(rep["colour_shape_p_at_5_zh"] or 0, 3), "t2i", rep["text_to_image_recall"],
        )


if __name__ == "__main__":
    main()
