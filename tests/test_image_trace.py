"""The traced image tower: made by the first index run of a checkpoint, then loaded alone (no
open_clip) by the next runs, with the same vectors; anything it cannot do loads the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_index import vectors_by_path

from indexer.pipeline import IndexOptions
from mmsearch.engine import Engine
from mmsearch.models import load_encoder, resolve
from mmsearch.models.image_trace import (
    MODULE_FILE,
    open_traced,
    save_traced,
    trace_dir,
    weights_file,
)
from mmsearch.synth.media import write_photo_folder

REPO = Path(__file__).resolve().parent.parent
OPTIONS = IndexOptions(in_process=True, patches=False)  # patch features need the whole model

SECOND_RUN = """
import json, sys
from indexer.pipeline import IndexOptions
from mmsearch.engine import Engine
with Engine(sys.argv[1], "tiny") as engine:
    summary = engine.index([sys.argv[2]], options=IndexOptions(in_process=True, patches=False))
    encoder = engine.encoder
    report = {"new": summary.new, "tagged": summary.tagged, "loaded": encoder.loaded,
              "open_clip": "open_clip" in sys.modules}
    report["hits"] = len(engine.search("a red circle", k=3))  # texts still work
print(json.dumps(report))
"""


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MMSEARCH_CACHE", str(folder))
    return folder


def test_the_next_index_run_loads_only_the_traced_tower_and_stores_the_samevectors_by_path(
    tmp_path: Path, cache: Path
):
    photos = write_photo_folder(tmp_path / "photos", 12, seed=41)
    with Engine(tmp_path / "first", "tiny") as engine:
        engine.index([photos], options=OPTIONS)
        weights_id = engine.encoder.weights_id
    spec = resolve("tiny")
    assert (trace_dir(spec, weights_id, "auto") / MODULE_FILE).is_file()
    env = {**os.environ, "MMSEARCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SECOND_RUN, str(tmp_path / "second"), str(photos)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"new": 12, "tagged": 12, "loaded": False, "open_clip": False, "hits": 3}
    first, second = vectors_by_path(tmp_path / "first"), vectors_by_path(tmp_path / "second")
    assert first.keys() == second.keys()
    for path in first:
        np.testing.assert_allclose(first[path], second[path], atol=1e-5)


def test_a_traced_encoder_loads_the_model_for_texts(tmp_path: Path, cache: Path):
    eager = load_encoder("tiny", device="cpu")
    assert save_traced(eager)
    traced = load_encoder("tiny", device="cpu", lazy=True).load_image_tower()
    assert not traced.loaded and traced.dim == eager.dim and traced.preprocess == eager.preprocess
    assert traced.weights_id == eager.weights_id and traced.precision == eager.precision
    pixels = np.random.default_rng(3).normal(size=(5, 3, *eager.preprocess.size))
    import torch

    batch = torch.from_numpy(pixels.astype(np.float32))
    np.testing.assert_allclose(traced.encode_images(batch), eager.encode_images(batch), atol=1e-5)
    assert not traced.loaded
    np.testing.assert_allclose(
        traced.encode_texts(["a red circle"]), eager.encode_texts(["a red circle"])
    )
    assert traced.loaded  # texts needed the whole model


def test_traces_are_skipped_where_they_do_not_apply_and_a_damaged_one_is_not_used(
    tmp_path: Path, cache: Path, monkeypatch
):
    assert weights_file(resolve("ViT-B-32/random")) is None  # random weights: nothing to key on
    encoder = load_encoder("tiny", device="cpu")
    encoder.precision = "int8"  # as a quantised ViT runs: its dynamic int8 linears are not traced
    assert not save_traced(encoder)
    encoder.precision = "fp32"
    assert save_traced(encoder)
    assert open_traced(encoder.spec, "auto") is not None
    monkeypatch.setenv("MMSEARCH_IMAGE_TOWER", "eager")
    assert open_traced(encoder.spec, "auto") is None
    monkeypatch.delenv("MMSEARCH_IMAGE_TOWER")
    assert open_traced(encoder.spec, "fp32") is None  # made for "auto": another key
    (trace_dir(encoder.spec, encoder.weights_id, "auto") / MODULE_FILE).write_bytes(b"damaged")
    assert open_traced(encoder.spec, "auto") is None
    assert load_encoder("tiny", device="cpu", lazy=True).load_image_tower().loaded  # eager instead
