"""Rerankers: MMR diversity (pure function and end to end on a burst of near-identical photos),
the text cross-encoder's loading path with the library mocked, and choosing rerankers by name."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from indexer.pipeline import IndexOptions
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError, ModelUnavailableError
from mmsearch.query.model import Query, Term
from mmsearch.query.rerank import check_names, mmr_order
from mmsearch.synth.media import write_photo_folder


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mmr_demotes_near_duplicates_and_keeps_distinct_items_in_order():
    base = np.eye(4, dtype=np.float32)
    burst = unit(base[0] + 0.01 * np.arange(1, 4)[:, None] * base[1])  # three near copies of row 0
    vectors = np.vstack([base[0], burst, base[2], base[3]])
    relevance = np.array([1.0, 0.99, 0.98, 0.97, 0.6, 0.5])
    order, penalties = mmr_order(relevance, vectors)
    assert order[:3] == [0, 4, 5]  # the distinct items come before the burst
    assert sorted(order[3:]) == [1, 2, 3] and penalties[0] == 0.0 and max(penalties) > 0.9
    distinct = np.eye(6, dtype=np.float32)
    assert mmr_order(relevance, distinct)[0] == list(range(6))  # nothing alike: relevance order
    assert mmr_order(np.array([]), np.empty((0, 3))) == ([], [])
    same = np.zeros((6, 6), bool)
    same[np.ix_([0, 1, 2, 3], [0, 1, 2, 3])] = True  # one video's keyframes: never alike
    assert mmr_order(relevance, vectors, unpenalised=same)[0] == list(range(6))


def test_reranker_names_are_checked():
    assert check_names(("mmr", "itm")) == ("itm", "mmr")
    assert check_names(("none",)) == ()
    with pytest.raises(ConfigError, match="Unknown reranker"):
        check_names(("bm25",))
    with pytest.raises(ConfigError, match="alone"):
        check_names(("none", "mmr"))
    with pytest.raises(ConfigError):
        Query((Term("text", "x"),), rerank=("nope",))


@pytest.fixture(scope="module")
def burst_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("burst")
    photos = write_photo_folder(root / "photos", 40, seed=51)
    first = sorted(photos.glob("*.jpg"))[0]
    for i in range(5):  # a burst: the same scene, slightly brighter each time
        shot = ImageEnhance.Brightness(Image.open(first)).enhance(1.0 + 0.02 * (i + 1))
        shot.save(photos / f"burst_{i}.jpg", quality=92)
    with Engine(root / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
    return root / "home", first


@pytest.mark.slow
def test_a_burst_does_not_fill_the_first_page(burst_home):
    home, first = burst_home
    with Engine(home) as e:
        plain = e.search(image=first, k=10, rerank=("none",))
        diverse = e.search(image=first, k=10)  # mmr is on by default for pictures
    burst_plain = sum("burst_" in h.path for h in plain)
    burst_diverse = sum("burst_" in h.path for h in diverse)
    assert burst_plain == 5 and burst_diverse <= 2
    assert diverse[0].path == plain[0].path  # the best match stays first
    assert all(h.part("mmr") is not None for h in diverse)
    assert all(h.part("mmr") is None for h in plain)


@pytest.mark.slow
def test_cli_rerank_option(burst_home):
    from typer.testing import CliRunner

    from mmsearch.cli import app

    home, first = burst_home
    runner = CliRunner()
    off = runner.invoke(app, ["query", "--image", str(first), "--home", str(home), "-k", "6", "-f", "--rerank", "none"])
    on = runner.invoke(app, ["query", "--image", str(first), "--home", str(home), "-k", "6", "-f"])
    assert off.exit_code == 0 and on.exit_code == 0, off.output + on.output
    assert off.output.count("burst_") == 5 and on.output.count("burst_") <= 2
    bad = runner.invoke(app, ["query", "x", "--home", str(home), "--rerank", "magic"])
    assert bad.exit_code == 2 and "Unknown reranker" in bad.output
    ce = runner.invoke(app, ["query", "x", "--home", str(home), "--rerank", "cross-encoder"])
    assert ce.exit_code == 2 and "MMSEARCH_CROSS_ENCODER" in ce.output


class FakeCrossEncoder:
    calls: list = []

    def __init__(self, name, **kwargs):
        FakeCrossEncoder.calls.append((name, kwargs))
        if "missing" in name:
            raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}")

    def predict(self, pairs, show_progress_bar=False):
        return np.array([float(len(set(q.split()) & set(p.split()))) for q, p in pairs])


def test_cross_encoder_loading_path_with_the_library_mocked(monkeypatch, tmp_path):
    from mmsearch.models.cross_encoder import load_cross_encoder

    fake = types.ModuleType("sentence_transformers")
    fake.CrossEncoder = FakeCrossEncoder
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    monkeypatch.delenv("MMSEARCH_CROSS_ENCODER", raising=False)
    with pytest.raises(ConfigError, match="needs weights"):
        load_cross_encoder(None)
    predict = load_cross_encoder("cross-encoder/ms-marco-MiniLM-L-6-v2")
    name, kwargs = FakeCrossEncoder.calls[-1]
    assert name == "cross-encoder/ms-marco-MiniLM-L-6-v2" and "cross-encoders" in kwargs["cache_folder"]
    assert predict([("red car", "a red car parked"), ("red car", "a blue boat")]).tolist() == [2.0, 0.0]
    folder = tmp_path / "my-ce"
    folder.mkdir()
    load_cross_encoder(str(folder))
    assert FakeCrossEncoder.calls[-1][1]["local_files_only"] is True
    monkeypatch.setenv("MMSEARCH_CROSS_ENCODER", "org/missing-model")
    with pytest.raises(ModelUnavailableError, match="org/missing-model.*local folder"):
        load_cross_encoder(None)


def test_cross_encoder_reorders_passages(monkeypatch, tmp_path):
    """The stage on real passages (the bundled MiniLM for the first stage), the cross-encoder faked."""
    fake = types.ModuleType("sentence_transformers")
    fake.CrossEncoder = FakeCrossEncoder
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("The okapi is a shy forest animal.\n")
    (folder / "b.txt").write_text("Bread and milk for breakfast in the forest.\n")
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([folder], options=IndexOptions(in_process=True))
    import mmsearch.models.cross_encoder as ce

    monkeypatch.setattr(ce, "require", lambda *a: fake)
    with Engine(tmp_path / "home", cross_encoder="some/model") as e:
        hits = e.search("shy okapi forest", k=2, rerank=("cross-encoder",))
    assert [h.part("cross-encoder").rank for h in hits] == [1, 2] and "okapi" in hits[0].text
