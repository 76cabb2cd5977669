"""Train `tiny-itm`, the cross-modal reranker of `tiny`: ``python -m mmsearch.train.itm``.

Seeded and CPU-sized (about a quarter of an hour on 2 cores): it renders shapes-world scenes in
groups (a scene, its twin one fact away and further one-fact variants, all drawn from the same
random state), takes their patch features from the frozen `tiny` image tower once, and trains a
small cross-attention model to put the pictures a caption describes first. It writes
``tiny-itm.safetensors``, ``itm_config.json``, ``metrics.json`` and ``MODEL_CARD.md`` into
``mmsearch/models/tiny_itm/``.

Each step is a set of small galleries, like the one a reranker sees: a caption true of one
member of a group (a whole-scene caption most of the time, as queries are), scored on every
picture of its group, on pictures CLIP finds close to it (drawn from its nearest neighbours by
`tiny`'s embedding, other groups') and on random pictures, each labelled by the caption
templates' truth. The loss is binary cross-entropy on every (caption, picture) logit plus a
listwise term that puts the row's true pictures above its false ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.synth import random_caption, scene_captions, vocab
from mmsearch.synth.hard_negatives import (
    NEGATIVE_KINDS,
    describes,
    distinguishing_captions,
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

    n_pairs: int = 6000  # rendered groups (a scene, its twin and further one-fact variants)
    data_seed: int = 11
    group: int = 4  # pictures per group
    steps: int = 3200
    batch_groups: int = 32  # groups per step
    rows_per_group: int = 2  # captions per group, each anchored on another member
    random_images: int = 2  # pictures from anywhere scored with every caption
    hard_images: int = 6  # pictures CLIP finds close to the anchor (what reranking sees)
    neighbours: int = 50  # ... drawn from the anchor's nearest pictures by CLIP, other groups'
    whole_caption_prob: float = 0.7  # whole-scene captions (as queries are) vs partial ones
    rank_weight: float = 1.0  # weight of the listwise loss (the true pictures of a row first)
    slot_weight: float = 1.0  # weight of the auxiliary loss: slot i says what lies at place i
    swap_caption_prob: float = 0.5  # whole captions that a colour-swapped member makes false first
    lr: float = 2e-3  # peak AdamW learning rate, after warm-up, then cosine to zero
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
    time_budget_s: float | None = 900.0  # stop training early (and say so) past this


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


def clip_neighbours(pairs: PairSet, m: int, chunk: int = 1024) -> np.ndarray:
    """(n, m): each picture's m nearest pictures by CLIP embedding, outside its own group.

    Reranking sees CLIP's top 50 for a query: pictures CLIP finds alike, the hard part of a
    gallery. Training draws a caption's further negatives from its anchor's neighbours.
    """
    import torch

    emb = torch.from_numpy(pairs.embeddings).float()
    n, g = len(emb), pairs.group
    m = min(m, n - g)
    out = np.empty((n, max(m, 0)), dtype=np.int64)
    if m <= 0:
        return out
    for start in range(0, n, chunk):
        sims = emb[start : start + chunk] @ emb.T
        rows = torch.arange(start, min(start + chunk, n))
        first = rows - rows % g
        local = torch.arange(len(rows))
        for j in range(g):  # hide the picture's own group
            sims[local, first + j] = float("-inf")
        out[start : start + chunk] = sims.topk(m, dim=1).indices.numpy()
    return out


def place_labels(pairs: PairSet) -> np.ndarray:
    """(n, places, 4) int: per picture and place, [present, colour, shape, size] (-1: nothing)."""
    places = vocab.POSITIONS
    out = np.full((len(pairs), len(places), 4), -1, dtype=np.int64)
    out[:, :, 0] = 0
    for i, scene in enumerate(pairs.scenes):
        for o in scene.objects:
            out[i, places.index(o.position)] = (
                1,
                vocab.COLOURS.index(o.colour),
                vocab.SHAPES.index(o.shape),
                vocab.SIZES.index(o.size),
            )
    return out


def sample_rows(
    pairs: PairSet,
    groups: list[int],
    rng: random.Random,
    recipe: ItmRecipe,
    neighbours: np.ndarray | None = None,
) -> tuple[list[str], list[list[int]], list[list[float]]]:
    """One step's rows: (caption, the pictures it is scored on, their truth), a gallery in small.

    For every group two of its scenes take a turn as the anchor; each anchor gives a caption
    true of it that some other member makes false (a whole-scene caption with probability
    `whole_caption_prob`, as queries are, else a partial one), scored on every picture of the
    group, on `hard_images` of the anchor's CLIP `neighbours` and on `random_images` pictures
    drawn from the whole set.
    """
    texts, rows, labels = [], [], []
    scenes, n = pairs.scenes, len(pairs)
    for g in groups:
        members = list(pairs.members(g * pairs.group))
        for anchor in rng.sample(members, recipe.rows_per_group):
            scene = scenes[anchor]
            whole = set(scene_captions(scene))
            telling = sorted(
                {
                    c
                    for m in members
                    if m != anchor
                    for c in distinguishing_captions(scene, scenes[m])
                }
            )
            long = [c for c in telling if c in whole]
            swapped = [m for m in members if _colour_swap(scene, scenes[m])]
            binding = [c for c in long if any(not describes(c, scenes[m]) for m in swapped)]
            if long and rng.random() < recipe.whole_caption_prob:
                if binding and rng.random() < recipe.swap_caption_prob:
                    caption = _prefixed(rng.choice(binding), rng)
                else:
                    caption = _prefixed(rng.choice(long), rng)
            elif telling and rng.random() < 0.8:
                caption = _prefixed(rng.choice(telling), rng)
            else:
                caption = random_caption(scene, rng)
            images = members + [rng.randrange(n) for _ in range(recipe.random_images)]
            if neighbours is not None and neighbours.shape[1]:
                near = neighbours[anchor]
                images += [int(near[rng.randrange(len(near))]) for _ in range(recipe.hard_images)]
            texts.append(caption)
            rows.append(images)
            labels.append([float(describes(caption, scenes[j])) for j in images])
    return texts, rows, labels


def _colour_swap(a, b) -> bool:
    """Whether b is a with its colours reassigned among the same shapes, sizes and places."""
    if a.objects == b.objects or len(a.objects) != len(b.objects):
        return False
    layout = lambda s: sorted((o.shape, o.size, o.position) for o in s.objects)  # noqa: E731
    colours = lambda s: sorted(o.colour for o in s.objects)  # noqa: E731
    return layout(a) == layout(b) and colours(a) == colours(b)


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

    patches = torch.from_numpy(pairs.patches).float()
    # Auxiliary heads (not saved): what each image slot holds, one place per slot.
    sizes = (1, len(vocab.COLOURS), len(vocab.SHAPES), len(vocab.SIZES))
    slot_head = torch.nn.Linear(net.cfg.width, sum(sizes))
    places = torch.from_numpy(place_labels(pairs))
    use_slots = recipe.slot_weight > 0 and net.cfg.image_slots == places.shape[1]
    if use_slots:
        decay = decay + list(slot_head.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
    )
    rng = random.Random(recipe.seed)
    n_groups = len(pairs) // pairs.group
    t0 = time.perf_counter()
    neighbours = clip_neighbours(pairs, recipe.neighbours) if recipe.hard_images else None
    log.info("CLIP neighbours of %d pictures in %.1f s", len(pairs), time.perf_counter() - t0)
    start, losses, window, stopped = time.perf_counter(), [], [], False
    for step in range(recipe.steps):
        groups = [rng.randrange(n_groups) for _ in range(recipe.batch_groups)]
        texts, rows, labels = sample_rows(pairs, groups, rng, recipe, neighbours)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, recipe)
        k = len(rows[0])
        # each caption is encoded once and read by its k pictures (consecutive)
        logits = net(model.tokenizer(texts), patches[torch.tensor(rows).flatten()])
        target = torch.tensor(labels)
        loss = F.binary_cross_entropy_with_logits(logits, target.flatten())
        if recipe.rank_weight:
            # every true picture of a row above every false one: -log(sum_true / sum_all)
            grid = logits.view(-1, k)
            true = grid.masked_fill(target == 0, float("-inf")).logsumexp(1)
            listwise = grid.logsumexp(1) - true
            loss = loss + recipe.rank_weight * listwise[target.sum(1) > 0].mean()
        if use_slots:
            pictures = torch.tensor([j for g in groups for j in pairs.members(g * pairs.group)])
            out = slot_head(net.slot_tokens(patches[pictures])).split(sizes, dim=-1)
            truth = places[pictures]
            present = truth[..., 0] == 1
            aux = F.binary_cross_entropy_with_logits(out[0].squeeze(-1), truth[..., 0].float())
            for head, a in zip(out[1:], range(1, 4)):
                aux = aux + F.cross_entropy(head[present], truth[..., a][present])
            loss = loss + recipe.slot_weight * aux
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
        recipe.n_pairs,
        recipe.data_seed,
        encoder,
        recipe.augment,
        workers=recipe.threads,
        group=recipe.group,
    )
    data_s = time.perf_counter() - t0
    log.info(
        "rendered %d groups of %d and took their patch features in %.0f s",
        recipe.n_pairs,
        recipe.group,
        data_s,
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
        "image_slots": shipped.net.cfg.image_slots,
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

Two stages of pre-norm transformer blocks of width {r["width"]} ({r["heads"]} heads, MLP x{r["mlp_ratio"]}):

1. **text**, once per text: {r["layers"]} self-attention blocks over the caption's tokens;
2. **fusion**, once per (text, picture): a match token and {metrics.get("image_slots", 5)} *image slots* go through
   {r["layers"]} blocks of self-attention over themselves, cross-attention to the text tokens, and an MLP; a
   linear head on the match token gives one logit, and `score` returns its sigmoid. The slots come
   from one joint projection of all {p} layer-normed patch cells (objects straddle the cells), and
   training teaches slot i what lies at the shapes world's place i (an auxiliary loss, see below).

Reranking 50 pictures encodes the query once and runs the fusion over 1 + {metrics.get("image_slots", 5)} tokens per picture.
{metrics["parameters"]:,} parameters, {metrics["weights_bytes"] / 1e6:.2f} MB as float16 safetensors.

## Reproduce

```bash
python -m mmsearch.train.itm        # seeded; writes tiny-itm.safetensors, itm_config.json, metrics.json, MODEL_CARD.md here
```

- Data: {r["n_pairs"]:,} *groups* of {r["group"]} shapes-world scenes (seed {r["data_seed"]}, 1-3 objects): a scene, its
  *twin* one fact away (two objects' colours swapped, one shape changed, an object added or taken
  away (count), objects moved or exchanged (position), a size flipped), the scene with its colours
  swapped between objects whenever it allows that, and further distinct one-fact variants of any
  kind (a colour changed too). All are rendered from the same random state
  (size {r["augment"]["min_side"]}-{r["augment"]["max_side"]} px, aspect up to {r["augment"]["max_aspect"]}, style, shades, blur, noise, JPEG) and letterboxed like the
  encoder's preprocessing; the frozen `tiny` tower turns them into patch features once.
- Rows, drawn afresh each step for {r["batch_groups"]} groups, {r["rows_per_group"]} per group: a caption true of one member
  that another member makes false (a whole-scene caption with probability {r["whole_caption_prob"]}, as queries
  are, and then, with probability {r.get("swap_caption_prob", 0)}, one that the colour-swapped member makes false
  where the group has one; else a partial one), scored on every picture of the group, on {r["hard_images"]} of the {r["neighbours"]} pictures
  `tiny`'s embedding finds nearest the member (other groups': what CLIP's top 50 holds) and on
  {r["random_images"]} random pictures. Truth is the caption templates'
  (`mmsearch.synth.hard_negatives.describes`).
- Objective: binary cross-entropy on every logit, plus {r["rank_weight"]} x a listwise loss per row
  (-log of the true pictures' share of the softmax), plus {r["slot_weight"]} x an auxiliary loss that has slot i
  say whether an object lies at place i and its colour, shape and size (heads not shipped).
  AdamW, lr {r["lr"]}, weight decay {r["weight_decay"]}, {r["warmup_steps"]} warm-up steps then cosine, {t["steps"]} steps{stopped}.
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

Text->image retrieval with and without the reranker is measured by `benchmarks/rerank_itm.py`
(run it after training; its figures for these weights belong below).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the bundled tiny_itm)"
    )
    parser.add_argument(
        "--n-pairs", type=int, default=ItmRecipe.n_pairs, help="groups of scenes to render"
    )
    parser.add_argument("--steps", type=int, default=ItmRecipe.steps)
    parser.add_argument("--n-eval-pairs", type=int, default=ItmRecipe.n_eval_pairs)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=ItmRecipe.time_budget_s,
        help="stop training after this many seconds",
    )
    args = parser.parse_args(argv)
    # Before torch loads OpenMP: on a shared machine a busy-waiting thread starves its partner
    # at every parallel region (two threads then run ~10x slower than one); waiting passively
    # costs nothing when the cores are free.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
