"""Train `tiny-itm`, the cross-modal reranker of `tiny`: ``python -m mmsearch.train.itm``.

Seeded and CPU-sized: it renders shapes-world scenes in twin pairs (one fact apart), takes their
patch features from the frozen `tiny` image tower once, and trains a small cross-attention model
to tell true captions from hard negatives. It writes ``tiny-itm.safetensors``,
``itm_config.json``, ``metrics.json`` and ``MODEL_CARD.md`` into ``mmsearch/models/tiny_itm/``.

Every image is shown, per step, with

- a true caption (half the time one that its twin makes false), labelled 1;
- that same caption on the twin's picture, labelled by truth (0 when it names the changed fact);
- a hard negative caption: the caption of a fresh one-fact mutation of the scene, false of it;
- the caption of a random other scene, labelled by truth (easy negatives keep the scale honest).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import platform
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.synth import random_caption, vocab
from mmsearch.synth.hard_negatives import (
    NEGATIVE_KINDS,
    describes,
    distinguishing_captions,
    hard_negative,
)
from mmsearch.train.data import AugmentConfig
from mmsearch.train.itm_data import PairSet, build_pair_set

log = logging.getLogger(__name__)

HELD_OUT_SEED = 2_000_000_007  # model-card pairs; training draws seeds far below this
ENCODER = "tiny"
TOKENIZER = "mmsearch-tiny"
_PREFIXES = ("", "", "", "a photo of ", "a picture of ", "an image of ", "a drawing of ")


@dataclass(frozen=True)
class ItmRecipe:
    """Everything that determines the weights; recorded in the model card."""

    n_pairs: int = 12_000  # rendered twin pairs (two pictures each)
    data_seed: int = 11
    steps: int = 4000
    batch_images: int = 64  # pictures per step; each brings about four (text, picture) examples
    lr: float = 1e-3  # peak AdamW learning rate, after warm-up, then cosine to zero
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    n_eval_pairs: int = 1000  # held-out twin pairs for the model card
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    time_budget_s: float | None = None  # stop training early (and say so) past this


# ---------------------------------------------------------------- vocabulary and examples


def shapes_world_texts() -> list[str]:
    """Every word and phrase the caption templates can produce (the model's vocabulary source)."""
    words = [
        *vocab.COLOURS,
        *vocab.SHAPES,
        *(vocab.plural(s) for s in vocab.SHAPES),
        *vocab.SIZES,
        *(vocab.position_phrase(p) for p in vocab.POSITIONS),
        *vocab.NUMBER_WORDS.values(),
        "a",
        "an",
        "and",
        ",",
        *(p.strip() for p in _PREFIXES if p),
    ]
    phrases = [
        f"{vocab.article(c)} {size} {c} {s} {vocab.position_phrase(p)}, {n} {c} {vocab.plural(s)}"
        for c, s, size, p, n in itertools.product(
            vocab.COLOURS, vocab.SHAPES, vocab.SIZES, vocab.POSITIONS, vocab.NUMBER_WORDS.values()
        )
    ]
    return words + phrases


def build_vocab(tokenizer) -> tuple[int, ...]:
    """Sorted tokenizer ids of the shapes-world texts (start and end of text included)."""
    ids = set()
    texts = shapes_world_texts()
    for start in range(0, len(texts), 512):
        ids.update(tokenizer(texts[start : start + 512]).flatten().tolist())
    ids.discard(0)  # open_clip pads with 0
    return tuple(sorted(ids))


def _prefixed(caption: str, rng: random.Random) -> str:
    if caption.startswith(("a photo", "a picture")):
        return caption
    return rng.choice(_PREFIXES) + caption


def sample_examples(
    pairs: PairSet, images: list[int], rng: random.Random
) -> tuple[list[str], list[int], list[float]]:
    """(texts, picture indices, labels) for one step; see the module doc."""
    texts, index, labels = [], [], []

    def add(text: str, j: int, label: float) -> None:
        texts.append(text)
        index.append(j)
        labels.append(label)

    scenes = pairs.scenes
    for j in images:
        scene, twin_index = scenes[j], pairs.twin_of(j)
        twin = scenes[twin_index]
        telling = distinguishing_captions(scene, twin)
        caption = (
            _prefixed(rng.choice(telling), rng)
            if telling and rng.random() < 0.5
            else random_caption(scene, rng)
        )
        add(caption, j, 1.0)
        add(caption, twin_index, float(describes(caption, twin)))
        other = hard_negative(scene, rng)
        false = distinguishing_captions(other, scene) if other is not None else []
        if false:
            add(_prefixed(rng.choice(false), rng), j, 0.0)
        stranger = random_caption(scenes[rng.randrange(len(scenes))], rng)
        add(stranger, j, float(describes(stranger, scene)))
    return texts, index, labels


# ---------------------------------------------------------------- training


def _lr_at(step: int, recipe: ItmRecipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_net(model, pairs: PairSet, recipe: ItmRecipe) -> dict:
    """Optimise `model.net` in place on the twin pairs; returns the loss curve and timing."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    net = model.net.train().requires_grad_(True)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
    )
    patches = torch.from_numpy(pairs.patches)
    rng = random.Random(recipe.seed)
    start, losses, window, stopped = time.perf_counter(), [], [], False
    for step in range(recipe.steps):
        images = [rng.randrange(len(pairs)) for _ in range(recipe.batch_images)]
        texts, index, labels = sample_examples(pairs, images, rng)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        logits = net(model.tokenizer(texts), patches[index].float())
        loss = F.binary_cross_entropy_with_logits(logits, torch.tensor(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
        opt.step()
        window.append(loss.item())
        if (step + 1) % 500 == 0 or step + 1 == recipe.steps:
            losses.append(round(float(np.mean(window)), 4))
            window = []
            log.info(
                "step %d/%d loss %.4f (%.0f s)",
                step + 1,
                recipe.steps,
                losses[-1],
                time.perf_counter() - start,
            )
        if recipe.time_budget_s and time.perf_counter() - start > recipe.time_budget_s:
            stopped = True
            log.warning(
                "time budget of %.0f s reached after %d steps; stopping early",
                recipe.time_budget_s,
                step + 1,
            )
            break
    net.eval().requires_grad_(False)
    return {
        "steps": step + 1,
        "seconds": round(time.perf_counter() - start, 1),
        "losses_per_500_steps": losses,
        "stopped_early": stopped,
    }


# ---------------------------------------------------------------- held-out evaluation


def evaluate_pairs(model, pairs: PairSet, text_encoder=None, seed: int = 0) -> dict:
    """Pairwise accuracy on held-out twin pairs, per kind of twin, for the ITM and (given) CLIP.

    - *image side*: a caption true of the scene and false of its twin scores higher on the scene
      (what reranking pictures for one query needs);
    - *text side*: on the scene, a true caption scores higher than a caption of the twin that is
      false of the scene (true caption vs its hard negative).
    """
    rng = random.Random(seed)
    rows = []  # (kind, side, caption_a, image_a, caption_b, image_b): a should beat b
    for i in range(0, len(pairs), 2):
        scene, twin = pairs.scenes[i], pairs.scenes[i + 1]
        kind = twin.extra.get("negative", "?")
        true = distinguishing_captions(scene, twin)
        false = distinguishing_captions(twin, scene)
        if true:
            caption = rng.choice(true)
            rows.append((kind, "image_side", caption, i, caption, i + 1))
            if false:
                rows.append((kind, "text_side", caption, i, rng.choice(false), i))
    judges = {"itm": lambda t, j: model.score(t, pairs.patches[j])}
    if text_encoder is not None:
        judges["clip"] = lambda t, j: np.sum(
            text_encoder.encode_texts(t) * pairs.embeddings[j], axis=1
        )
    report: dict = {}
    for judge, score in judges.items():
        a = score([r[2] for r in rows], [r[3] for r in rows])
        b = score([r[4] for r in rows], [r[5] for r in rows])
        wins = defaultdict(list)
        for row, x, y in zip(rows, a, b):
            wins[(row[1], row[0])].append(float(x > y))
            wins[(row[1], "all")].append(float(x > y))
        report[judge] = {
            side: {
                kind: round(float(np.mean(v)), 4)
                for (s, kind), v in sorted(wins.items())
                if s == side
            }
            for side in ("image_side", "text_side")
        }
    report["n_pairs"] = {
        kind: sum(1 for r in rows if r[0] == kind and r[1] == "image_side")
        for kind in NEGATIVE_KINDS
    }
    return report


# ---------------------------------------------------------------- the whole run


def train_itm(recipe: ItmRecipe, out: Path | None = None) -> dict:
    """Render, extract, train, save, reload and evaluate; returns the metrics written beside the weights."""
    import torch

    from mmsearch.models import load_encoder
    from mmsearch.models.itm import (
        TINY_ITM,
        TINY_ITM_DIR,
        ItmConfig,
        build_itm,
        load_itm,
        open_clip_tokenizer,
        save_itm,
    )
    from mmsearch.models.patches import DEFAULT_GRID, bytes_per_item

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    wall = time.perf_counter()
    encoder = load_encoder(ENCODER, device="cpu")
    t0 = time.perf_counter()
    pairs = build_pair_set(
        recipe.n_pairs, recipe.data_seed, encoder, recipe.augment, workers=recipe.threads
    )
    data_s = time.perf_counter() - t0
    log.info(
        "rendered %d twin pairs and took their patch features in %.0f s", recipe.n_pairs, data_s
    )
    config = ItmConfig(
        name=TINY_ITM,
        encoder=ENCODER,
        tokenizer=TOKENIZER,
        patch_grid=DEFAULT_GRID,
        patch_tokens=pairs.patches.shape[1],
        patch_dim=pairs.patches.shape[2],
        vocab=build_vocab(open_clip_tokenizer(TOKENIZER)),
        width=recipe.width,
        layers=recipe.layers,
        heads=recipe.heads,
        mlp_ratio=recipe.mlp_ratio,
    )
    model = build_itm(config)
    training = train_net(model, pairs, recipe)
    folder = Path(out or TINY_ITM_DIR)
    weights = save_itm(model, folder)
    shipped = load_itm(
        str(folder) if out else TINY_ITM
    )  # figures come from the saved float16 weights
    t0 = time.perf_counter()
    held_out = build_pair_set(
        recipe.n_eval_pairs, HELD_OUT_SEED, encoder, recipe.augment, workers=recipe.threads
    )
    report = evaluate_pairs(shipped, held_out, encoder, seed=recipe.seed)
    eval_s = time.perf_counter() - t0
    metrics = {
        "recipe": asdict(recipe),
        "data_seconds": round(data_s, 1),
        "training": training,
        "eval_seconds": round(eval_s, 1),
        "total_seconds": round(time.perf_counter() - wall, 1),
        "held_out": report,
        "patch_shape": list(shipped.patch_shape),
        "patch_bytes_per_item": bytes_per_item(shipped.patch_shape),
        "parameters": sum(p.numel() for p in shipped.net.parameters()),
        "vocab_size": len(config.vocab),
        "weights_bytes": weights.stat().st_size,
        "machine": f"{platform.machine()}, {recipe.threads} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card(metrics))
    return metrics


def _row(label: str, figures: dict) -> str:
    return (
        f"| {label} | "
        + " | ".join(f"{figures.get(k, float('nan')):.3f}" for k in (*NEGATIVE_KINDS, "all"))
        + " |"
    )


def model_card(metrics: dict) -> str:
    """How the weights were made and how well they tell minimal pairs apart on new scenes."""
    r, t, h = metrics["recipe"], metrics["training"], metrics["held_out"]
    header = (
        "| judge | "
        + " | ".join((*NEGATIVE_KINDS, "all"))
        + " |\n|"
        + " --- |" * (len(NEGATIVE_KINDS) + 2)
    )
    tables = []
    for side, what in (
        ("image_side", "one caption, the scene vs its twin (what reranking pictures needs)"),
        ("text_side", "one picture, its true caption vs the twin's caption (false of it)"),
    ):
        rows = "\n".join(
            _row(f"`{j}`" if j == "clip" else "`tiny-itm`", h[j][side])
            for j in ("clip", "itm")
            if j in h
        )
        tables.append(f"**{side.replace('_', ' ')}**: {what}.\n\n{header}\n{rows}")
    p, d = metrics["patch_shape"]
    stopped = " (stopped early by the time budget)" if t["stopped_early"] else ""
    return f"""# mmsearch `tiny-itm`: model card

The cross-modal reranker of the bundled `tiny` CLIP: a small image-text matching (ITM) model,
trained **from scratch by this project** on its synthetic shapes world. CLIP scores "a red circle
and a blue square" and "a blue circle and a red square" alike; `tiny-itm` reads the text and the
picture together and says which one matches. It knows what `tiny` knows (colours, shapes, sizes,
positions, counts of simple shapes) and nothing about real photos.

## What it reads

- **Picture:** `tiny`'s patch features, stored per item at index time
  (`mmsearch.models.patches.encode_with_patches`, the same forward pass as the embedding): the
  image trunk's final 2 x 2 feature map before the attention pool, P = {p} tokens of D = {d}
  channels, **{metrics["patch_bytes_per_item"]:,} bytes per item** in float16. Reranking never re-reads a file.
- **Text:** `tiny`'s tokenizer (open_clip BPE, context 32), mapped onto the {metrics["vocab_size"]} token ids the
  shapes-world captions use; any other word reads as one "unknown" token.

## Architecture

{r["layers"]} fusion blocks of width {r["width"]} ({r["heads"]} heads, MLP x{r["mlp_ratio"]}): text self-attention, then
cross-attention from the text tokens to the {p} projected patch tokens, then an MLP (pre-norm, the
BLIP/ALBEF fusion layer at a small size); a linear head on the start-of-text token gives one
match logit, and `score` returns its sigmoid. {metrics["parameters"]:,} parameters,
{metrics["weights_bytes"] / 1e6:.2f} MB as float16 safetensors.

## Reproduce

```bash
python -m mmsearch.train.itm        # seeded; writes tiny-itm.safetensors, itm_config.json, metrics.json, MODEL_CARD.md here
```

- Data: {r["n_pairs"]:,} *twin pairs* of shapes-world scenes (seed {r["data_seed"]}, 1-3 objects), each a scene and the
  same scene one fact away: two objects' colours swapped, one shape changed, an object added or
  taken away (count), objects moved or exchanged (position), a size flipped. Both are rendered
  from the same random state (size {r["augment"]["min_side"]}-{r["augment"]["max_side"]} px, aspect up to {r["augment"]["max_aspect"]}, style, shades, blur,
  noise, JPEG) and letterboxed like the encoder's preprocessing; the frozen `tiny` tower turns them
  into patch features once.
- Examples, drawn afresh each step for {r["batch_images"]} pictures: a true caption (half the time one its twin
  makes false) -> 1; the same caption on the twin -> its truth; the caption of a fresh one-fact
  mutation of the scene -> 0; a random other scene's caption -> its truth. Truth is the caption
  templates' (`mmsearch.synth.hard_negatives.describes`).
- Objective: binary cross-entropy on the match logit. AdamW, lr {r["lr"]}, weight decay {r["weight_decay"]},
  {r["warmup_steps"]} warm-up steps then cosine, {t["steps"]} steps{stopped}.
- Run on {metrics["machine"]} on {metrics["date"]}, a machine shared with other work:
  data {metrics["data_seconds"]} s, training {t["seconds"]} s, held-out evaluation {metrics["eval_seconds"]} s,
  **{metrics["total_seconds"] / 60:.1f} minutes in all**.
  Loss per 500 steps: {t["losses_per_500_steps"]}.

## Held-out figures

{r["n_eval_pairs"]:,} new twin pairs (seeds no training pair draws), rendered like the training data, scored
through `load_itm("tiny-itm")` from the saved weights; `clip` is `tiny`'s cosine similarity.
Pairwise accuracy (0.5 is chance), by the kind of fact the twin changes:

{tables[0]}

{tables[1]}

Text->image retrieval with and without the reranker is measured by `benchmarks/rerank_itm.py`.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the bundled tiny_itm)"
    )
    parser.add_argument("--n-pairs", type=int, default=ItmRecipe.n_pairs)
    parser.add_argument("--steps", type=int, default=ItmRecipe.steps)
    parser.add_argument("--n-eval-pairs", type=int, default=ItmRecipe.n_eval_pairs)
    parser.add_argument(
        "--time-budget", type=float, default=None, help="stop training after this many seconds"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    recipe = ItmRecipe(
        n_pairs=args.n_pairs,
        steps=args.steps,
        n_eval_pairs=args.n_eval_pairs,
        time_budget_s=args.time_budget,
    )
    metrics = train_itm(recipe, args.out)
    print(json.dumps({"training": metrics["training"], "total_seconds": metrics["total_seconds"]}))
    for judge in ("clip", "itm"):
        print(judge, json.dumps(metrics["held_out"][judge]))


if __name__ == "__main__":
    main()
