"""Train the bundled `tiny` CLIP on the shapes world: `python -m mmsearch.train.tiny`.

Seeded and CPU-friendly: the default run takes about 15 minutes on 2 cores and writes
`mmsearch/models/tiny/tiny.safetensors`, `metrics.json` and `MODEL_CARD.md` beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsearch.train.data import AugmentConfig, augmented_rendering, render_set
from mmsearch.train.evaluate import HeldOutReport, evaluate_held_out
from mmsearch.train.loop import LoopConfig, train_contrastive

log = logging.getLogger(__name__)

HELD_OUT_SEED_BASE = 10**9  # held-out scenes use seeds no training scene can draw


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the weights; recorded in the model card."""

    n_train: int = 60_000  # rendered training scenes (captions are redrawn every epoch)
    data_seed: int = 1
    loop: LoopConfig = LoopConfig(epochs=5, batch_size=128, lr=2e-3, warmup_steps=150, seed=0)
    augment: AugmentConfig = AugmentConfig()
    n_eval: int = 1000  # held-out scenes for the model card
    threads: int = 2


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
        reports[label] = evaluate_held_out(encoder.encode_images, encoder.encode_texts, images, scenes)
    return reports


def train_tiny(recipe: TinyRecipe, out: Path | None = None) -> dict:
    """Render, train, evaluate and save; returns the metrics written beside the weights."""
    import torch

    from mmsearch.models import Encoder, build_openclip, save_tiny_weights, tiny_weights_path

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.loop.seed)
    loaded = build_openclip("tiny", pretrained=False)
    pp = loaded.preprocess
    t0 = time.perf_counter()
    data = render_set(recipe.n_train, recipe.data_seed, pp.to_uint8, recipe.augment, workers=recipe.threads)
    render_s = time.perf_counter() - t0
    log.info("rendered %d training scenes in %.0f s", recipe.n_train, render_s)
    caption_rng = random.Random(recipe.data_seed)
    result = train_contrastive(
        loaded.model, loaded.tokenizer, data.pixels, lambda _epoch: data.captions(caption_rng),
        pp.mean, pp.std, recipe.loop,
    )
    encoder = Encoder.from_loaded(loaded, device="cpu")
    reports = evaluate_encoder(encoder, recipe.n_eval, recipe.augment)
    path = save_tiny_weights(loaded.model, out or tiny_weights_path())
    metrics = {
        "recipe": asdict(recipe),
        "render_seconds": round(render_s, 1),
        "train_seconds": round(result.seconds, 1),
        "steps": result.steps,
        "epoch_losses": [round(x, 4) for x in result.losses],
        "held_out": {k: asdict(v) for k, v in reports.items()},
        "machine": f"{platform.machine()}, {recipe.threads} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "weights_bytes": path.stat().st_size,
    }
    (path.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (path.parent / "MODEL_CARD.md").write_text(model_card(metrics))
    return metrics


def _fmt_recall(r: dict) -> str:
    return " / ".join(f"{r[k]:.3f}" for k in sorted(r, key=int))


def model_card(metrics: dict) -> str:
    """The model card: how the weights were made and how well they do on scenes never seen."""
    rows = []
    for label, rep in metrics["held_out"].items():
        rows.append(
            f"| {label} | {rep['n_images']} | {rep['colour_shape_p_at_5']:.3f} | "
            f"{_fmt_recall(rep['text_to_image_recall'])} | {_fmt_recall(rep['image_to_text_recall'])} |"
        )
    worst = sorted(metrics["held_out"]["augmented_scenes"]["per_query_p_at_5"].items(), key=lambda kv: kv[1])[:6]
    r = metrics["recipe"]
    return f"""# mmsearch `tiny`: model card

A small OpenCLIP model (architecture `mmsearch-tiny`: ModifiedResNet image tower at 64 px, 3-layer
text transformer, 128-d shared space) trained **from scratch by this project** on its synthetic
shapes world. It exists so the demo runs offline and CI's tests check real semantics. It knows
colours, shapes, sizes, positions and counts of simple shapes; it knows nothing about real photos.

## Reproduce

```bash
python -m mmsearch.train.tiny        # seeded; writes tiny.safetensors, metrics.json, MODEL_CARD.md here
```

- Data: {r['n_train']} shapes-world scenes (seed {r['data_seed']}), 1-3 objects, rendered at random sizes
  ({r['augment']['min_side']}-{r['augment']['max_side']} px, aspect up to {r['augment']['max_aspect']}),
  varied backgrounds, colour shades, anti-aliasing on/off, blur, noise and JPEG quality
  {r['augment']['jpeg_quality'][0]}-{r['augment']['jpeg_quality'][1]}; letterboxed like the encoder's preprocessing.
  Captions are redrawn from the templates every epoch; for scenes of several objects, 35% of the
  captions name just one of them (as real alt text names the salient thing), so "a blue square"
  also matches a picture with a blue square beside other shapes.
- Objective: symmetric InfoNCE (CLIP loss) in which pairs with identical captions count as positives.
- Optimiser: AdamW, lr {r['loop']['lr']}, weight decay {r['loop']['weight_decay']}, batch {r['loop']['batch_size']},
  {r['loop']['epochs']} epochs = {metrics['steps']} steps, {r['loop']['warmup_steps']} warm-up steps then cosine.
- Trained on {metrics['machine']} on {metrics['date']}: rendering {metrics['render_seconds']} s,
  training {metrics['train_seconds']} s. Weights: {metrics['weights_bytes'] / 1e6:.1f} MB (fp32 safetensors).

## Held-out figures (new seeds, through `load_encoder("tiny")`'s encode functions)

- *colour+shape P@5*: mean precision@5 of the 48 queries "a red circle" ... "a black cross" (queries with
  at least 5 true images among the held-out set).
- *text->image R@1/5/10*: one caption per image; a hit is any image the caption truly describes.
- *image->text R@1/5/10*: the same captions as the pool; a hit is any caption true of the image.

| held-out set | images | colour+shape P@5 | text->image R@1/5/10 | image->text R@1/5/10 |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

`augmented_scenes` are drawn like the training data (1-3 objects). `single_objects_224px` are one
object on a varied background, rendered at 224x224 in the canonical style.

Hardest colour+shape queries (augmented scenes): {", ".join(f"{q} {p:.2f}" for q, p in worst)}.

Epoch losses: {metrics['epoch_losses']}.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="weights path (default: the bundled tiny)")
    parser.add_argument("--n-train", type=int, default=TinyRecipe.n_train)
    parser.add_argument("--epochs", type=int, default=TinyRecipe.loop.epochs)
    parser.add_argument("--n-eval", type=int, default=TinyRecipe.n_eval)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = TinyRecipe()
    recipe = TinyRecipe(
        n_train=args.n_train,
        loop=LoopConfig(**{**asdict(base.loop), "epochs": args.epochs}),
        n_eval=args.n_eval,
    )
    metrics = train_tiny(recipe, args.out)
    print(json.dumps({k: metrics[k] for k in ("steps", "train_seconds", "epoch_losses")}))
    for label, rep in metrics["held_out"].items():
        print(label, "colour+shape P@5", round(rep["colour_shape_p_at_5"], 3), "t2i", rep["text_to_image_recall"])


if __name__ == "__main__":
    main()
