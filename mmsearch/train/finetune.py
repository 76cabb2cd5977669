"""Fine-tune any registry model on a user's captioned images, with recall@k before and after.

    python -m mmsearch.train.finetune --model tiny --images my_photos/ --captions captions.csv --out tuned.safetensors

The images are split by file into train and held-out parts (seeded); recall@1/5/10 of
text->image on the held-out part is reported before and after training. The result is a local
checkpoint that `load_encoder("/path/tuned.safetensors")` (or `--model` on the CLI) loads.
`mmsearch finetune ... --name NAME` (`register_finetune`) saves it among the registered models,
so `--model NAME` finds it, with the report beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmsearch.errors import ConfigError
from mmsearch.train.captions import read_captions
from mmsearch.train.loop import LoopConfig, train_contrastive

log = logging.getLogger(__name__)
KS = (1, 5, 10)
# Gentle defaults: pretrained weights need small steps, or they forget what they knew.
FINETUNE_LOOP = LoopConfig(epochs=5, batch_size=32, lr=5e-5, warmup_steps=10)


@dataclass
class FinetuneReport:
    model: str
    train_images: int
    held_out_images: int
    recall_before: dict[int, float]  # held-out text->image recall@k before training
    recall_after: dict[int, float]
    steps: int
    seconds: float
    saved_to: str


def _split(rows: list[dict], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    images = sorted({r["path"] for r in rows})
    random.Random(seed).shuffle(images)
    n_held = max(1, round(len(images) * held_out))
    if len(images) - n_held < 2:
        raise ConfigError(f"Need at least {n_held + 2} captioned images to fine-tune with a held-out split; got {len(images)}.")
    return images[n_held:], images[:n_held]


def held_out_recall(encoder, pixels: dict[str, np.ndarray], captions: dict[str, list[str]], images: list[str]) -> dict[int, float]:
    """Text->image recall@k: each caption's hit is its own image (ties to identical captions count)."""
    from mmsearch.query.exact import exact_topk
    from mmsearch.query.metrics import recall_at_k

    img = encoder.encode_images(np.stack([pixels[p].transpose(2, 0, 1) for p in images]).astype(np.float32))
    pos = {p: i for i, p in enumerate(images)}
    by_caption: dict[str, set[int]] = defaultdict(set)
    for p in images:
        for c in captions[p]:
            by_caption[c].add(pos[p])
    queries = sorted(by_caption)
    _, ranked = exact_topk(encoder.encode_texts(queries), img, max(KS))
    return recall_at_k(ranked, [by_caption[q] for q in queries], KS)


def finetune(
    model: str,
    images_dir: Path,
    captions_file: Path,
    out: Path,
    loop: LoopConfig = FINETUNE_LOOP,
    held_out: float = 0.2,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FinetuneReport:
    """Load a registry model's weights, train contrastively on the folder, save a local checkpoint."""
    from PIL import Image

    from mmsearch.models import Encoder, build_openclip, save_weights

    loaded = build_openclip(model, pretrained=True)
    if not loaded.spec.arch:
        raise ConfigError(f"Fine-tuning {model} is not supported yet: its architecture name is unknown.")
    rows = read_captions(captions_file)
    train_imgs, held_imgs = _split(rows, held_out, seed)
    captions: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        captions[r["path"]].append(r["caption"])
    pp = loaded.preprocess
    pixels = {}
    for p in train_imgs + held_imgs:
        with Image.open(images_dir / p) as im:
            pixels[p] = pp.to_uint8(im)
    encoder = Encoder.from_loaded(loaded, device="cpu")
    before = held_out_recall(encoder, pixels, captions, held_imgs)
    # one (image, caption) pair per caption row of the training images
    pairs = [(p, c) for p in train_imgs for c in captions[p]]
    if len(pairs) < loop.batch_size:
        loop = LoopConfig(**{**asdict(loop), "batch_size": len(pairs)})
    train_pixels = np.stack([pixels[p] for p, _ in pairs])
    result = train_contrastive(
        loaded.model, loaded.tokenizer, train_pixels, lambda _e: [c for _, c in pairs], pp.mean, pp.std, loop,
        on_epoch=on_epoch,
    )
    after = held_out_recall(Encoder.from_loaded(loaded, device="cpu"), pixels, captions, held_imgs)
    saved = save_weights(loaded.model, out, loaded.spec.arch)
    return FinetuneReport(model, len(train_imgs), len(held_imgs), before, after, result.steps, round(result.seconds, 1), str(saved))


def check_model_name(name: str) -> str:
    """A name to register a fine-tune under: not a built-in name, no path characters."""
    import re

    from mmsearch.models.registry import TINY, known_architectures

    clean = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", clean) or clean.endswith(".safetensors"):
        raise ConfigError(
            f"{name!r} cannot name a model: use letters, digits, '-', '_' or '.', up to 64 characters."
        )
    if clean == TINY or clean in known_architectures():
        raise ConfigError(f"{clean!r} is a built-in model name; choose another for your fine-tune.")
    return clean


def register_finetune(
    name: str,
    model: str,
    images_dir: Path,
    captions_file: Path,
    loop: LoopConfig = FINETUNE_LOOP,
    *,
    held_out: float = 0.2,
    replace: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FinetuneReport:
    """Fine-tune and save as the registered model `name` (weights + NAME.finetune.json report)."""
    from mmsearch.paths import models_dir

    name = check_model_name(name)
    target = models_dir() / f"{name}.safetensors"
    if target.exists() and not replace:
        raise ConfigError(
            f"A model named {name!r} is registered already ({target}); choose another name, or "
            "replace it (collections indexed with it must then be re-indexed)."
        )
    report = finetune(model, images_dir, captions_file, target, loop, held_out, on_epoch=on_epoch)
    report.saved_to = str(target)
    (models_dir() / f"{name}.finetune.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--captions", type=Path, default=None, help="CSV or JSONL (default IMAGES/captions.jsonl)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loop = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=10)
    report = finetune(args.model, args.images, args.captions or args.images / "captions.jsonl", args.out, loop)
    print(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    main()
