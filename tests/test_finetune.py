"""Fine-tuning a registry model on a user's captioned folder reports recall before/after and saves a loadable checkpoint."""

import json

import pytest

from mmsearch.models import load_encoder
from mmsearch.synth.media import write_photo_folder
from mmsearch.train.finetune import finetune
from mmsearch.train.loop import LoopConfig

pytestmark = pytest.mark.slow


def test_finetune_learns_a_new_word_and_saves_a_local_checkpoint(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 160, seed=9)
    # The user's own vocabulary: circles are "blickets" in this library.
    rows = [json.loads(line) for line in (photos / "captions.jsonl").read_text().splitlines()]
    with open(tmp_path / "captions.csv", "w") as f:
        f.write("path,caption\n")
        for r in rows:
            f.write(f"{r['path']},\"{r['caption'].replace('circle', 'blicket')}\"\n")
    out = tmp_path / "tuned.safetensors"
    loop = LoopConfig(epochs=12, batch_size=32, lr=5e-4, warmup_steps=10)
    report = finetune("tiny", photos, tmp_path / "captions.csv", out, loop, held_out=0.25)
    assert report.train_images == 120 and report.held_out_images == 40
    assert set(report.recall_before) == {1, 5, 10}
    assert report.recall_after[10] > report.recall_before[10]
    tuned = load_encoder(str(out), device="cpu")
    assert tuned.dim == load_encoder("tiny", device="cpu").dim
