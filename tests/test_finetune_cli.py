"""`mmsearch finetune`: recall before/after, a registered model name, and collections that never
mix vectors of two checkpoints (the weights digest recorded at index time)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError, EncoderMismatchError
from mmsearch.models import load_encoder
from mmsearch.synth.media import write_photo_folder
from mmsearch.train.finetune import check_model_name

runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200", **(env or {})})


@pytest.fixture()
def library(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_MODELS", str(tmp_path / "models"))
    photos = write_photo_folder(tmp_path / "photos", 40, seed=12)
    return photos, photos / "captions.jsonl"


def test_finetune_registers_a_model_and_reports_recall(library, tmp_path):
    photos, captions = library
    home = tmp_path / "home"
    assert cli("index", photos, "--home", home, "--model", "tiny").exit_code == 0
    result = cli(
        "finetune", "--images", photos, "--captions", captions, "--name", "my-tiny",
        "--epochs", "2", "--batch-size", "16", "--home", home,
    )
    assert result.exit_code == 0, result.output
    assert "R@1:" in result.output and "R@10:" in result.output and "Registered as 'my-tiny'" in result.output
    assert "index into a new home" in result.output and "--model my-tiny" in result.output
    report = json.loads((tmp_path / "models" / "my-tiny.finetune.json").read_text())
    assert report["train_images"] == 32 and report["held_out_images"] == 8
    assert set(report["recall_before"]) == set(report["recall_after"]) == {"1", "5", "10"}
    assert "my-tiny" in cli("models").output
    tuned = load_encoder("my-tiny", device="cpu")
    assert tuned.name == "my-tiny" and tuned.weights_id != load_encoder("tiny", device="cpu").weights_id
    again = cli("finetune", "--images", photos, "--captions", captions, "--name", "my-tiny", "--epochs", "1")
    assert again.exit_code != 0 and "registered already" in again.output


def test_model_names_for_fine_tunes_are_checked():
    assert check_model_name(" holiday-v2 ") == "holiday-v2"
    for bad in ("tiny", "RN50", "../x", "a/b", ""):
        with pytest.raises(ConfigError):
            check_model_name(bad)


def test_a_collection_refuses_other_weights_under_the_same_name(library, tmp_path):
    photos, captions = library
    home = tmp_path / "home"
    common = ("--images", photos, "--captions", captions, "--name", "mine", "--epochs", "1", "--batch-size", "16")
    assert cli("finetune", *common).exit_code == 0
    with Engine(home, "mine") as e:
        e.index([photos])
        recorded = e.collection.catalog.encoder_weights()
        assert recorded == e.encoder.weights_id
        assert e.search("a red circle", k=3)
    # the same name, retrained: its vectors are not comparable with the stored ones
    assert cli("finetune", *common, "--replace", "--lr", "1e-3").exit_code == 0
    with Engine(home) as e, pytest.raises(EncoderMismatchError, match="other weights of 'mine'"):
        e.search("a red circle", k=3)
    write_photo_folder(photos / "more", 2, seed=13)
    with Engine(home) as e, pytest.raises(EncoderMismatchError, match="other weights"):
        e.index([photos])
