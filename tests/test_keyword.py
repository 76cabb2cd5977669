"""Keyword search: the FTS5 table, its triggers, safe query building and the v2 -> v3 migration."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import MetaData, inspect, text

from mmsearch.catalog import MIGRATIONS, SCHEMA_VERSION, AssetInfo, Catalog, ItemData
from mmsearch.catalog.db import make_engine, writer
from mmsearch.catalog.keyword import fts_match_expression
from mmsearch.catalog.migrations import create_v1_schema
from mmsearch.catalog.schema import Item, sqlite_has_fts5

DIM = 4


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def note(path: Path, *passages: str, kind: str = "text", item_kind: str = "text") -> tuple:
    asset = AssetInfo(path=str(path), kind=kind, size=1, mtime_ns=1, content_hash=str(path))
    return asset, [ItemData(item_kind, None, None, p, vec(i)) for i, p in enumerate(passages)]


@pytest.fixture
def cat(tmp_path: Path):
    with Catalog.open(tmp_path / "catalog.db") as c:
        yield c


def fts_consistent(cat: Catalog) -> None:
    """FTS5's own check that the index matches the items table (raises if not)."""
    with cat.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")


# ------------------------------------------------------------------------- query building
def test_match_expression_quotes_every_word_and_drops_stopwords():
    assert fts_match_expression("The Zanzibar spice market") == '"zanzibar" OR "spice" OR "market"'
    assert fts_match_expression("a-b") == '"b"'  # "a" is a stopword; "-" is never an operator
    assert fts_match_expression('say "hi') == '"say" OR "hi"'
    assert fts_match_expression("NEAR(x y) col:foo bar* ^baz") == (
        '"near" OR "x" OR "y" OR "col" OR "foo" OR "bar" OR "baz"'
    )
    assert fts_match_expression("the who") == '"the" OR "who"'  # only stopwords: keep them
    assert fts_match_expression("Crème brûlée") == '"crème" OR "brûlée"'
    assert fts_match_expression("  -- !!! ") is None
    assert fts_match_expression(" ".join(f"w{i}" for i in range(100))).count(" OR ") == 31


# ------------------------------------------------------------------------- search
def test_exact_rare_word_is_found(cat, tmp_path):
    cat.upsert_asset_with_items(
        *note(
            tmp_path / "trip.txt",
            "We bought cloves in the old market of Zanzibar.",
            "The ferry left at dawn and the sea was calm.",
        )
    )
    cat.upsert_asset_with_items(*note(tmp_path / "other.txt", "The market near home sells bread."))
    hits = cat.keyword_search("zanzibar", 10)
    assert len(hits) == 1
    (rec,) = cat.items_by_ids([hits[0][0]])
    assert "Zanzibar" in rec.text and hits[0][1] > 0  # relevance: higher is better
    # Several words: OR, ranked by bm25 (the passage with both words first).
    ranked = cat.keyword_search("zanzibar market", 10)
    assert [i for i, _ in ranked][0] == hits[0][0] and len(ranked) == 2
    assert ranked[0][1] > ranked[1][1]
    assert len(cat.keyword_search("zanzibar market", 1)) == 1


def test_stemming_matches_word_forms(cat, tmp_path):
    cat.upsert_asset_with_items(*note(tmp_path / "a.txt", "Two circles were pinned up."))
    assert len(cat.keyword_search("circle pinning", 5)) == 1


@pytest.mark.parametrize(
    "query",
    ['"unbalanced', "a-b", "NEAR(x y)", "text:foo", "*", "^", "'; DROP TABLE items; --", "", "  "],
)
def test_hostile_queries_are_harmless(cat, tmp_path, query):
    cat.upsert_asset_with_items(*note(tmp_path / "a.txt", "foo a b x y text drop table"))
    cat.keyword_search(query, 5)  # never a syntax error
    assert cat.item_counts() == {"text": 1}


def test_only_passages_are_keyword_matched(cat, tmp_path):
    cat.upsert_asset_with_items(
        *note(tmp_path / "s.wav", "zanzibar call", kind="audio", item_kind="transcript")
    )
    cat.upsert_asset_with_items(
        *note(tmp_path / "p.jpg", "zanzibar caption", kind="image", item_kind="image")
    )
    hits = cat.keyword_search("zanzibar", 5)
    assert [r.kind for r in cat.items_by_ids([i for i, _ in hits])] == ["transcript"]


# ------------------------------------------------------------------------- triggers
def test_triggers_follow_replace_and_delete(cat, tmp_path):
    path = tmp_path / "n.txt"
    cat.upsert_asset_with_items(*note(path, "first draft mentions aardvark"))
    assert len(cat.keyword_search("aardvark", 5)) == 1
    cat.upsert_asset_with_items(*note(path, "second draft mentions okapi"))
    assert cat.keyword_search("aardvark", 5) == []
    assert len(cat.keyword_search("okapi", 5)) == 1
    cat.upsert_asset_with_items(*note(tmp_path / "p.jpg", None, kind="image", item_kind="image"))
    fts_consistent(cat)
    with cat._write.begin() as s:  # an UPDATE of the text is followed too
        s.execute(Item.__table__.update().where(Item.kind == "text").values(text="now quagga"))
    assert cat.keyword_search("okapi", 5) == [] and len(cat.keyword_search("quagga", 5)) == 1
    cat.delete_assets([path])
    assert cat.keyword_search("quagga", 5) == []
    fts_consistent(cat)


def test_cascade_delete_and_rollback_keep_fts_in_step(cat, tmp_path):
    res = cat.upsert_asset_with_items(*note(tmp_path / "n.txt", "ocelot sighting"))
    with cat._write.begin() as s:  # the asset row alone: ON DELETE CASCADE removes its items
        s.execute(text("DELETE FROM assets WHERE id = :id"), {"id": res.asset_id})
    assert cat.keyword_search("ocelot", 5) == [] and cat.item_ids().size == 0
    with pytest.raises(RuntimeError), cat._write.begin() as s:
        s.execute(
            text(
                "INSERT INTO assets (path, size, mtime_ns, content_hash, kind, indexed_at) "
                "VALUES ('/m', 1, 1, 'h', 'text', 0)"
            )
        )
        s.execute(
            text(
                "INSERT INTO items (asset_id, kind, text, vector) "
                "VALUES (last_insert_rowid(), 'text', 'pangolin', x'00')"
            )
        )
        assert cat.keyword_search("pangolin", 5) == []  # other readers: not committed yet
        raise RuntimeError("crash before commit")
    assert cat.keyword_search("pangolin", 5) == []
    fts_consistent(cat)


# ------------------------------------------------------------------------- schema
def make_v2(db_path: Path):
    """A real version-2 catalog: the frozen v1 baseline plus the v2 step, as shipped."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(db_path)
    create_v1_schema(engine)
    with writer(engine).begin() as conn:
        MIGRATIONS[2](conn)
        conn.execute(text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    return engine


def test_v2_catalog_with_passages_migrates_and_is_keyword_searchable(tmp_path):
    db_path = tmp_path / "home" / "catalog.db"
    engine = make_v2(db_path)
    v2 = MetaData()
    v2.reflect(engine)
    with engine.begin() as conn:
        conn.execute(
            v2.tables["assets"]
            .insert()
            .values(
                id=1,
                path="/old/n.txt",
                size=5,
                mtime_ns=2,
                content_hash="h",
                kind="text",
                indexed_at=3.0,
            )
        )
        for item_id, body in ((5, "Spices from Zanzibar"), (6, "Ferry timetable")):
            conn.execute(
                v2.tables["items"]
                .insert()
                .values(
                    id=item_id, asset_id=1, kind="text", text=body, vector=vec(item_id).tobytes()
                )
            )
    assert "items_fts" not in inspect(engine).get_table_names()
    engine.dispose()

    with Catalog.open(db_path) as c:
        assert c.schema_version == SCHEMA_VERSION and c.has_keyword_index
        assert c.keyword_search("zanzibar", 5)[0][0] == 5  # backfilled by 'rebuild'
        assert [i for i, _ in c.keyword_search("ferry", 5)] == [6]
        c.upsert_asset_with_items(
            *note(tmp_path / "new.txt", "a new zanzibar note")
        )  # triggers live
        assert len(c.keyword_search("zanzibar", 5)) == 2
        assert c.passage_ids().tolist()[:2] == [5, 6]
        fts_consistent(c)


def test_failed_v3_step_leaves_version_2(tmp_path, monkeypatch):
    db_path = tmp_path / "catalog.db"
    engine = make_v2(db_path)

    def broken(conn):
        real(conn)
        raise RuntimeError("power cut")

    real = MIGRATIONS[3]
    monkeypatch.setitem(MIGRATIONS, 3, broken)
    with pytest.raises(RuntimeError):
        Catalog.open(db_path)
    assert "items_fts" not in inspect(engine).get_table_names()  # rolled back with the version
    monkeypatch.setitem(MIGRATIONS, 3, real)
    with Catalog.open(db_path) as c:
        assert c.schema_version == SCHEMA_VERSION and c.has_keyword_index


def test_a_catalog_without_a_keyword_index_finds_nothing_by_keyword(cat, tmp_path):
    fake = SimpleNamespace(dialect=SimpleNamespace(name="postgresql"))
    assert sqlite_has_fts5(fake) is False  # PostgreSQL has its own (tests/test_catalog_pg.py)
    cat.upsert_asset_with_items(*note(tmp_path / "n.txt", "zanzibar"))
    assert [i for i, _ in cat.keyword_search("zanzibar", 5)]
    cat.has_keyword_index = False  # what a SQLite built without FTS5 reports
    assert cat.keyword_search("zanzibar", 5) == []


def test_chinese_passages_are_found_by_chinese_words(tmp_path):
    """unicode61 keeps a run of Chinese characters as one token; the trigram table (3+ characters)
    and LIKE (shorter runs) find words inside it; mixed queries interleave both kinds of match."""
    catalog = Catalog(tmp_path / "c.db")
    catalog.bind_encoder("x", 4)
    vec = np.full(4, 0.5, np.float32)
    texts = ["会议室在三楼", "明天的会议取消了", "a red circle and 红色的圆", "budget review"]
    for i, passage in enumerate(texts, start=1):
        asset = AssetInfo(path=f"/notes/{i}.txt", kind="text", size=1, mtime_ns=1, content_hash=str(i))
        catalog.upsert_asset_with_items(asset, [ItemData("text", None, None, passage, vec)])
    ids = lambda q: [i for i, _ in catalog.keyword_search(q)]  # noqa: E731
    assert ids("会议室") == [1]  # trigram
    assert ids("会议") == [1, 2] and ids("红色") == [3]  # two characters: LIKE
    assert set(ids("三楼 budget")) == {1, 4} and ids("red 会议室")[:2] in ([3, 1], [1, 3])
    assert ids("circle") == [3]
    assert catalog.keyword_search("会议", allowed=np.array([2], np.int64))[0][0] == 2
