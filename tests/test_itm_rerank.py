"""The itm reranker wired through: patch features stored at index time (catalog v6), the stage
over them, and every face (Engine, CLI, HTTP). The model itself is tested in test_itm.py."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from mmsearch.catalog import ItemData
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError
from mmsearch.models import itm as itm_module
from mmsearch.query.model import Filters, Query, Term
from mmsearch.query.rerank import ItmStage, place
from mmsearch.query.stages import Candidate
from mmsearch.results import ScorePart
from mmsearch.server import create_app
from mmsearch.synth.hard_negatives import describes
from mmsearch.synth.media import write_photo_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from rerank_itm import query_for  # noqa: E402  (the benchmark's held-out compositional queries)

from mmsearch.synth.hard_negatives import NEGATIVE_KINDS  # noqa: E402
from mmsearch.train.data import AugmentConfig, augmented_rendering  # noqa: E402

PAIRS = 40  # eight of each kind of fact CLIP is weak at
runner = CliRunner()


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Each pair in its own folder: a scene and its twin one fact away, rendered alike, and a
    query true only of the scene (the benchmark's held-out recipe, other seeds)."""
    root = tmp_path_factory.mktemp("twins")
    pairs = []
    for p in range(PAIRS):
        rng = random.Random(7_000_000 + p)
        text, scene, distractors = query_for(NEGATIVE_KINDS[p % len(NEGATIVE_KINDS)], rng)
        twin = distractors[0]
        assert describes(text, scene) and not describes(text, twin)
        state = rng.randrange(2**31)
        folder = root / "pairs" / f"p{p:02d}"
        folder.mkdir(parents=True)
        for name, s in (("true", scene), ("twin", twin)):
            augmented_rendering(s, random.Random(state), AugmentConfig()).save(folder / f"{name}.png")
        pairs.append((text, folder))
    home = root / "home"
    with Engine(home, "tiny") as e:
        summary = e.index([root / "pairs"], options=IndexOptions(in_process=True))
    assert summary.new == 2 * PAIRS and not summary.skipped
    return home, pairs


def true_first(engine: Engine, text: str, folder: Path, rerank: tuple[str, ...]) -> bool:
    """Whether the search ranks the described picture above its twin (the pair's folder only)."""
    hits = engine.search(text, k=2, filters=Filters(paths=(str(folder),)), rerank=rerank, user=None)
    assert len(hits) == 2
    return Path(hits[0].path).name == "true.png"


def test_patch_features_are_stored_with_the_vectors_in_one_pass(twins):
    home, _ = twins
    with Engine(home) as e:
        catalog = e.collection.catalog
        assert catalog.patch_shape() == (4, 512)
        assert catalog.patch_counts() == (2 * PAIRS, 0)
        ids = catalog.item_ids()[:6]
        found, patches = e.collection.patches(ids)
        assert found.tolist() == list(ids) and patches.shape == (6, 4, 512)
        assert patches.dtype == np.float16 and np.isfinite(patches).all()
        # the stored CLIP vector is what encode_images gives for the same file
        record = catalog.items_by_ids([int(ids[0])])[0]
        from PIL import Image

        again = e.encoder.encode_images([Image.open(record.path).convert("RGB")])[0]
        _, stored = catalog.vectors_for([int(ids[0])])
        assert float(again @ stored[0]) > 0.999
        st = e.status()
        assert (st.itm, st.patches_stored, st.patches_missing, st.patch_bytes_per_item) == (
            "tiny-itm", 2 * PAIRS, 0, 4096)


def test_itm_puts_the_picture_the_words_describe_first_more_often_than_clip(twins):
    home, pairs = twins
    with Engine(home) as e:
        clip = sum(true_first(e, text, folder, ("none",)) for text, folder in pairs)
        itm = sum(true_first(e, text, folder, ("itm",)) for text, folder in pairs)
    # tiny-itm's held-out pairwise accuracy is about 0.94, CLIP's about 0.8 (its model card)
    assert itm >= 0.8 * PAIRS and itm > clip, (itm, clip)


def test_the_default_rerankers_include_itm_and_explain_it(twins):
    home, pairs = twins
    with Engine(home) as e:
        hits = e.search(pairs[0][0], k=5, user=None)
        assert all("itm" in {p.source for p in h.parts} for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        plain = e.search("a red car", k=5, user=None)  # "car": a word tiny-itm never learned
        assert not any(p.source == "itm" for h in plain for p in h.parts)


def test_itm_can_be_turned_off_and_says_why_when_asked_for(twins, monkeypatch):
    home, pairs = twins
    with Engine(home, itm="none") as e:
        hits = e.search(pairs[0][0], k=3, user=None)
        assert not any(p.source == "itm" for h in hits for p in h.parts)
        with pytest.raises(ConfigError, match="turned off"):
            e.search(pairs[0][0], k=3, rerank=("itm",))
    monkeypatch.setattr(itm_module, "ITM_COMPANIONS", {})
    with Engine(home) as e:
        with pytest.raises(ConfigError, match="no image-text matching companion"):
            e.search(pairs[0][0], k=3, rerank=("itm",))
        assert e.status().itm is None


def test_no_patches_then_backfill_with_patches(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 6, seed=9)
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True, patches=False))
        assert e.collection.catalog.patch_counts() == (0, 6)
        assert e.status().patches_missing == 6
        hits = e.search("a red circle", k=3, user=None)  # itm has nothing to read: CLIP order
        assert not any(p.source == "itm" for h in hits for p in h.parts)
        again = e.index([photos], options=IndexOptions(in_process=True))  # auto: no backfill
        assert again.changed == 0 and e.collection.catalog.patch_counts() == (0, 6)
        filled = e.index([photos], options=IndexOptions(in_process=True, patches=True))
        assert filled.changed == 6 and e.collection.catalog.patch_counts() == (6, 0)
        gone = sorted(photos.glob("*.jpg"))[0]
        gone.unlink()
        e.index([photos], options=IndexOptions(in_process=True))
        assert e.collection.catalog.patch_counts() == (5, 0)  # its rows went with its item
        with e.collection.catalog._read() as s:
            from sqlalchemy import text

            assert s.execute(text("SELECT count(*) FROM item_patches")).scalar() == 5


def test_patches_are_validated_before_anything_is_stored(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 2, seed=2)
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
        catalog = e.collection.catalog
        asset = catalog.asset_by_path(sorted(photos.glob("*.jpg"))[0])
        vec = np.ones(e.encoder.dim, np.float32) / np.sqrt(e.encoder.dim)
        before = catalog.generation()
        for bad, match in (
            (np.full((4, 512), np.nan, np.float16), "finite"),
            (np.zeros((2, 512), np.float16), "shape"),
        ):
            with pytest.raises((ValueError, ConfigError, Exception), match=match):
                catalog.upsert_asset_with_items(asset, [ItemData("image", None, None, None, vec, patches=bad)])
        with pytest.raises(ValueError, match="only pictures"):
            catalog.upsert_asset_with_items(
                asset, [ItemData("text", None, None, "x", vec, patches=np.zeros((4, 512)))])
        assert catalog.generation() == before and catalog.patch_counts() == (2, 0)


# ------------------------------------------------------------------ the stage, with fakes


class _Record:
    def __init__(self, id, kind, path="x.png"):
        self.id, self.kind, self.path, self.text = id, kind, path, None


def _Candidate(id, kind, score):
    return Candidate(_Record(id, kind), score, [ScorePart("clip", score, id)])


class _Collection:
    def __init__(self, stored):
        self.stored = stored  # id -> patches

    def patches(self, ids):
        have = [int(i) for i in ids if int(i) in self.stored]
        return np.array(have, np.int64), np.array([self.stored[i] for i in have]).reshape(-1, 1, 1)


class _Ctx:
    def __init__(self, stored):
        self.collection = _Collection(stored)


class _FakeItm:
    input = "patches"
    name = "fake"

    def understands(self, text):
        return "unknown" not in text

    def score_one(self, text, patches):
        self.seen = text
        return patches.reshape(-1).astype(np.float32)


def _query(text, depth=50):
    return Query((Term("text", text),), rerank_depth=depth)


def test_itm_stage_reorders_pictures_only_among_their_places():
    cands = [_Candidate(1, "image", 0.9), _Candidate(2, "text", 0.8), _Candidate(3, "image", 0.7),
             _Candidate(4, "keyframe", 0.6), _Candidate(5, "image", 0.5)]
    model = _FakeItm()
    ctx = _Ctx({1: 0.1, 3: 0.9, 4: 0.5})  # 5 has no stored patches: it keeps its place
    out = ItmStage(model)(_query("a red circle."), cands, ctx)
    assert [c.id for c in out] == [3, 2, 4, 1, 5] and model.seen == "a red circle"
    assert [c.order_score for c in out] == [0.9, 0.8, 0.7, 0.6, 0.5]  # places keep their scores
    assert [c.score for c in out] == [0.7, 0.8, 0.6, 0.9, 0.5]  # each keeps its own
    assert [(p.score, p.rank) for p in out[0].parts if p.source == "itm"] == [(pytest.approx(0.9), 1)]
    assert not any(p.source == "itm" for p in out[-1].parts)
    untouched = ItmStage(model)(_query("an unknown thing"), list(cands), ctx)
    assert [c.id for c in untouched] == [1, 2, 3, 4, 5]
    compound = Query((Term("text", "a red circle"), Term("text", "red", -1.0)))
    assert [c.id for c in ItmStage(model)(compound, list(cands), ctx)] == [1, 2, 3, 4, 5]
    weighted = Query((Term("text", "a red circle", 2.0),))  # one term: its weight is only scale
    assert [c.id for c in ItmStage(model)(weighted, list(cands), ctx)][0] == 3
    shallow = ItmStage(model)(_query("a red circle", depth=2), list(cands), ctx)
    assert [c.id for c in shallow] == [1, 2, 3, 4, 5]  # one picture in the window: nothing to do


def test_place_keeps_the_slot_scores():
    cands = [_Candidate(i, "image", s) for i, s in ((1, 3.0), (2, 2.0), (3, 1.0))]
    out = place(cands, [0, 2], [cands[2], cands[0]])
    assert [c.id for c in out] == [3, 2, 1] and [c.order_score for c in out] == [3.0, 2.0, 1.0]
    assert [c.score for c in out] == [1.0, 2.0, 3.0]


def test_a_pixel_reading_model_gets_the_pictures(tmp_path, monkeypatch):
    photos = write_photo_folder(tmp_path / "photos", 4, seed=4)

    class Pixels:
        input, name = "pixels", "fake-blip"

        def score_one(self, text, images):
            self.sizes = [im.size for im in images]
            return np.arange(len(images), dtype=np.float32)  # the last candidate best

    fake = Pixels()
    monkeypatch.setattr(itm_module, "load_itm", lambda name, device="cpu": fake)
    with Engine(tmp_path / "home", "tiny", itm="Salesforce/blip-itm-base-coco") as e:
        e.index([photos], options=IndexOptions(in_process=True))
        plain = e.search("a red circle", k=4, rerank=("none",), user=None)
        hits = e.search("a red circle", k=4, rerank=("itm",), user=None)
    assert len(fake.sizes) == 4 and all(w > 0 for w, _ in fake.sizes)
    assert [h.path for h in hits] == [h.path for h in plain][::-1]


# ------------------------------------------------------------------ the CLI and HTTP faces


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def test_cli_faces(twins):
    home, pairs = twins
    text = pairs[1][0]
    result = cli("query", text, "--home", home, "--json", "-k", "3", "--rerank", "itm")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert rows and all("itm" in row["parts"] for row in rows)
    off = cli("query", text, "--home", home, "--rerank", "itm", "--itm-model", "none")
    assert off.exit_code != 0 and "turned off" in off.output
    status = cli("status", "--home", home)
    assert "tiny-itm" in status.output and "4,096 bytes" in status.output
    explained = cli("query", text, "--home", home, "--explain", "-k", "2")
    assert "itm" in explained.output


def test_http_faces(twins):
    home, pairs = twins
    engine = Engine(home)
    with TestClient(create_app(engine_factory=lambda: engine), base_url="http://127.0.0.1") as c:
        st = c.get("/api/status").json()
        assert st["itm"] == "tiny-itm" and st["patches_stored"] == 2 * PAIRS
        body = c.get("/api/search", params={"q": pairs[2][0], "k": 3, "rerank": "itm"}).json()
        assert all("itm" in hit["parts"] for hit in body["results"])
        plain = c.get("/api/search", params={"q": pairs[2][0], "k": 3, "rerank": "none"}).json()
        assert not any("itm" in hit["parts"] for hit in plain["results"])
    engine.close()
