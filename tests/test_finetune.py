"""Fine-tuning a registry model on a user's captioned folder reports recall before/after and saves a loadable checkpoint."""

import json

import numpy as np
import pytest

from mmsearch.models import load_encoder
from mmsearch.synth.media import write_photo_folder
from mmsearch.train.finetune import finetune
from mmsearch.train.loop import LoopConfig

pytestmark = pytest.mark.slow


def blicket_precision(encoder, photos, rows):
    """R-precision of the made-up word "a blicket" for the images that hold a circle."""
    from PIL import Image

    names = [r["path"] for r in rows]
    circle = np.array([any(o["shape"] == "circle" for o in r["labels"]["objects"]) for r in rows])
    img = encoder.encode_images([Image.open(photos / n).convert("RGB") for n in names])
    top = np.argsort(-(img @ encoder.encode_texts(["a blicket"])[0]))[: circle.sum()]
    return circle[top].mean()


def test_finetune_learns_a_new_word_and_saves_a_local_checkpoint(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 160, seed=9)
    # The user's own vocabulary: circles are "blickets" in this library.
    rows = [json.loads(line) for line in (photos / "captions.jsonl").read_text().splitlines()]
    with open(tmp_path / "captions.csv", "w") as f:
        f.write("path,caption\n")
        for r in rows:
            f.write(f"{r['path']},\"{r['caption'].replace('circle', 'blicket')}\"\n")
    out = tmp_path / "tuned.safetensors"
    loop = LoopConfig(epochs=30, batch_size=32, lr=2e-4, warmup_steps=10)
    report = finetune("tiny", photos, tmp_path / "captions.csv", out, loop, held_out=0.25)
    assert report.train_images == 120 and report.held_out_images == 40
    assert set(report.recall_before) == {1, 5, 10} and set(report.recall_after) == {1, 5, 10}
    assert report.steps == 30 * (120 // 32)

    tuned, base = load_encoder(str(out), device="cpu"), load_encoder("tiny", device="cpu")
    assert tuned.dim == base.dim
    before, after = blicket_precision(base, photos, rows), blicket_precision(tuned, photos, rows)
    assert after > before + 0.15, (before, after)
