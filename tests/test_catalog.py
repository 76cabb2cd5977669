"""Catalog: schema, migrations, store operations, id allocation, WAL isolation, vector bytes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import MetaData, inspect, select
from sqlalchemy.exc import StatementError

from mmsearch.catalog import (
    MIGRATIONS,
    SCHEMA_VERSION,
    AssetInfo,
    AssetState,
    Catalog,
    ItemData,
)
from mmsearch.catalog.db import make_engine
from mmsearch.catalog.migrations import create_v1_schema
from mmsearch.catalog.schema import Asset, Item
from mmsearch.errors import CatalogError, EncoderMismatchError

DIM = 8


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "catalog.db"


@pytest.fixture
def cat(db_path: Path):
    with Catalog.open(db_path) as c:
        yield c


def asset(
    path: Path | str, *, kind: str = "image", h: str = "hash", size: int = 10, **kw
) -> AssetInfo:
    return AssetInfo(
        path=str(path),
        kind=kind,
        size=size,
        mtime_ns=1_500_000_000_123_456_789,
        content_hash=h,
        **kw,
    )


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def items(n: int, kind: str = "image", seed: int = 0) -> list[ItemData]:
    return [ItemData(kind, float(i), float(i + 1), f"t{i}", vec(seed + i)) for i in range(n)]


def schema_shape(engine) -> dict[str, tuple]:
    """Table -> (columns with nullability, index names) for comparing migrated and fresh DBs."""
    insp = inspect(engine)
    return {
        t: (
            sorted((c["name"], c["nullable"]) for c in insp.get_columns(t)),
            sorted(ix["name"] for ix in insp.get_indexes(t)),
        )
        for t in insp.get_table_names()
    }


# ---------------------------------------------------------------- schema and migrations
def test_fresh_catalog_has_current_schema_and_sqlite_settings(cat, db_path):
    assert db_path.exists()
    assert cat.schema_version == SCHEMA_VERSION
    assert cat.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert cat.get_meta("created_at")
    insp = inspect(cat.engine)
    assert {"meta", "folders", "assets", "items"} <= set(insp.get_table_names())
    assert "transcript_backend" in {c["name"] for c in insp.get_columns("assets")}
    assert any(ix["column_names"] == ["content_hash"] for ix in insp.get_indexes("assets"))
    assert any(ix["column_names"] == ["asset_id"] for ix in insp.get_indexes("items"))
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_reopen_keeps_data(db_path):
    with Catalog.open(db_path) as c:
        c.upsert_asset_with_items(asset(db_path.parent / "a.jpg"), items(2))
    with Catalog.open(f"sqlite:///{db_path}") as c:  # a URL works as well as a path
        assert c.item_counts() == {"image": 2}


def test_v1_database_is_migrated_step_by_step(db_path):
    db_path.parent.mkdir(parents=True)
    engine = make_engine(db_path)
    create_v1_schema(engine)
    v1_assets = inspect(engine).get_columns("assets")
    assert "transcript_backend" not in {c["name"] for c in v1_assets}
    v1 = MetaData()
    v1.reflect(engine)
    with engine.begin() as conn:
        conn.execute(
            v1.tables["assets"]
            .insert()
            .values(
                id=1,
                path="/old/a.wav",
                size=5,
                mtime_ns=2,
                content_hash="h1",
                kind="audio",
                indexed_at=3.0,
            )
        )
        conn.execute(
            v1.tables["items"]
            .insert()
            .values(id=7, asset_id=1, kind="transcript", text="hello", vector=vec(1).tobytes())
        )
    engine.dispose()

    with Catalog.open(db_path) as c:
        assert c.schema_version == SCHEMA_VERSION
        assert c.get_meta("schema_version") == str(SCHEMA_VERSION)
        got = c.asset_by_path("/old/a.wav")
        assert got is not None and got.transcript_backend is None and got.content_hash == "h1"
        assert c.items_by_ids([7])[0].text == "hello"
        c.upsert_asset_with_items(
            asset("/old/a.wav", kind="audio", transcript_backend="pocketsphinx"), []
        )
        assert c.asset_by_path("/old/a.wav").transcript_backend == "pocketsphinx"
        migrated = schema_shape(c.engine)
        # a new id after migration must still never reuse 7
        new = c.upsert_asset_with_items(asset("/old/b.jpg"), items(1)).item_ids
        assert new[0] > 7

    fresh_path = db_path.parent / "fresh.db"
    with Catalog.open(fresh_path) as fresh:
        assert schema_shape(fresh.engine) == migrated


def test_failed_migration_step_leaves_previous_version(db_path, monkeypatch):
    db_path.parent.mkdir(parents=True)
    engine = make_engine(db_path)
    create_v1_schema(engine)

    real_step = MIGRATIONS[2]

    def broken(conn):
        real_step(conn)
        raise RuntimeError("power cut")

    monkeypatch.setitem(MIGRATIONS, 2, broken)
    with pytest.raises(RuntimeError):
        Catalog.open(db_path)
    cols = {c["name"] for c in inspect(engine).get_columns("assets")}
    assert "transcript_backend" not in cols  # the ALTER was rolled back with the version bump
    monkeypatch.setitem(MIGRATIONS, 2, real_step)
    with Catalog.open(db_path) as c:
        assert c.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(db_path):
    with Catalog.open(db_path) as c:
        c.set_meta("schema_version", str(SCHEMA_VERSION + 5))
    with pytest.raises(CatalogError) as err:
        Catalog.open(db_path)
    assert str(SCHEMA_VERSION + 5) in str(err.value) and "Upgrade mmsearch" in str(err.value)


def test_foreign_database_is_refused(db_path):
    db_path.parent.mkdir(parents=True)
    engine = make_engine(db_path)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE assets (id INTEGER PRIMARY KEY)")
    with pytest.raises(CatalogError, match="not an mmsearch catalog"):
        Catalog.open(db_path)


# ------------------------------------------------------------------------- store
def test_folders_and_asset_states(cat, tmp_path):
    a, b = tmp_path / "photos", tmp_path / "notes"
    fa = cat.add_folder(a)
    assert cat.add_folder(a) == fa  # idempotent
    fb = cat.add_folder(b)
    assert [f.path for f in cat.list_folders()] == sorted([str(a), str(b)])
    cat.upsert_asset_with_items(asset(a / "1.jpg", folder_id=fa, h="x"), items(1))
    cat.upsert_asset_with_items(
        asset(b / "n.txt", kind="text", folder_id=fb, size=4), items(2, "text")
    )
    assert cat.all_asset_states(a) == {
        str(a / "1.jpg"): AssetState(10, 1_500_000_000_123_456_789, "x")
    }
    assert set(cat.all_asset_states()) == {str(a / "1.jpg"), str(b / "n.txt")}
    assert cat.all_asset_states(tmp_path / "unknown") == {}
    assert cat.asset_counts() == {"image": 1, "text": 1}
    assert cat.item_counts() == {"image": 1, "text": 2}


def test_upsert_stores_metadata_and_replaces_items(cat, tmp_path):
    p = tmp_path / "a.jpg"
    taken = datetime(2021, 7, 4, 12, 30, 5)
    first = cat.upsert_asset_with_items(
        asset(
            p, width=640, height=480, taken_at=taken, camera="Canon EOS", gps_lat=1.5, gps_lon=-2.25
        ),
        [("image", None, None, None, vec(0), b"\xff\xd8thumb")],  # a plain tuple works
    )
    assert first.replaced_ids == [] and len(first.item_ids) == 1
    got = cat.asset_by_path(p)
    assert (got.width, got.height, got.taken_at, got.camera, got.gps_lat, got.gps_lon) == (
        640,
        480,
        taken,
        "Canon EOS",
        1.5,
        -2.25,
    )
    assert got.id == first.asset_id and got.indexed_at > 0
    assert cat.thumbnail(first.item_ids[0]) == b"\xff\xd8thumb"

    second = cat.upsert_asset_with_items(asset(p, h="new", size=99), items(3))
    assert second.asset_id == first.asset_id
    assert second.replaced_ids == first.item_ids
    assert min(second.item_ids) > max(first.item_ids)
    assert cat.items_by_ids(first.item_ids) == []
    got = cat.asset_by_path(p)
    assert (got.content_hash, got.size, got.width) == ("new", 99, None)
    assert cat.item_counts() == {"image": 3}


def test_upsert_validates(cat, tmp_path):
    with pytest.raises(ValueError, match="asset kind"):
        cat.upsert_asset_with_items(asset(tmp_path / "a", kind="pdf"), [])
    with pytest.raises(ValueError, match="item kind"):
        cat.upsert_asset_with_items(
            asset(tmp_path / "a"), [ItemData("frame", None, None, None, vec(0))]
        )
    with pytest.raises(ValueError, match="same dimension"):
        cat.upsert_asset_with_items(
            asset(tmp_path / "a"),
            [ItemData("image", None, None, None, v) for v in (np.ones(3), np.ones(4))],
        )
    assert cat.asset_by_path(tmp_path / "a") is None  # nothing half-written


def test_encoder_binding(cat, tmp_path):
    assert cat.encoder() is None
    cat.bind_encoder("tiny", DIM)
    cat.bind_encoder("tiny", DIM)
    assert cat.encoder() == ("tiny", DIM)
    with pytest.raises(EncoderMismatchError) as err:
        cat.bind_encoder("ViT-B-32", 512)
    assert "tiny" in str(err.value) and "ViT-B-32" in str(err.value)
    with pytest.raises(CatalogError, match="--model tiny"):
        cat.upsert_asset_with_items(
            asset(tmp_path / "a"), [ItemData("image", None, None, None, np.ones(DIM + 1))]
        )


def test_lookup_by_hash_and_move_keeps_items(cat, tmp_path):
    old, new = tmp_path / "a.jpg", tmp_path / "sub" / "b.jpg"
    res = cat.upsert_asset_with_items(asset(old, h="same"), items(2))
    cat.upsert_asset_with_items(asset(tmp_path / "other.jpg", h="different"), items(1))
    assert [a.path for a in cat.assets_by_hash("same")] == [str(old)]
    assert cat.move_asset(old, new, size=11, mtime_ns=9) == res.asset_id
    assert cat.asset_by_path(old) is None
    moved = cat.asset_by_path(new)
    assert (moved.size, moved.mtime_ns, moved.content_hash) == (11, 9, "same")
    assert [r.path for r in cat.items_by_ids(res.item_ids)] == [str(new)] * 2
    with pytest.raises(CatalogError, match="not in the catalog"):
        cat.move_asset(old, tmp_path / "c.jpg")
    with pytest.raises(CatalogError, match="already in the catalog"):
        cat.move_asset(new, tmp_path / "other.jpg")


def test_delete_assets_returns_item_ids(cat, tmp_path):
    a = cat.upsert_asset_with_items(asset(tmp_path / "a.mp4", kind="video"), items(3, "keyframe"))
    b = cat.upsert_asset_with_items(asset(tmp_path / "b.jpg"), items(1))
    removed = cat.delete_assets([tmp_path / "a.mp4", tmp_path / "missing.jpg"])
    assert removed == sorted(a.item_ids)
    assert cat.asset_by_path(tmp_path / "a.mp4") is None
    assert cat.item_ids().tolist() == b.item_ids
    assert cat.delete_assets([]) == []
    with cat.engine.connect() as conn:  # no orphan rows
        assert conn.scalar(select(Item.id).where(Item.asset_id == a.asset_id)) is None


def test_item_ids_are_never_reused(cat, tmp_path):
    first = cat.upsert_asset_with_items(asset(tmp_path / "a.jpg"), items(3)).item_ids
    assert cat.max_item_id() == max(first)
    cat.delete_assets([tmp_path / "a.jpg"])  # the highest ids are gone
    assert cat.max_item_id() == 0
    again = cat.upsert_asset_with_items(asset(tmp_path / "a.jpg"), items(2)).item_ids
    assert min(again) > max(first)


def test_items_by_ids_joins_assets_in_order(cat, tmp_path):
    img = cat.upsert_asset_with_items(
        asset(tmp_path / "a.jpg"), [ItemData("image", None, None, None, vec(1), b"t")]
    )
    aud = cat.upsert_asset_with_items(
        asset(tmp_path / "s.wav", kind="audio", duration_s=12.0),
        [ItemData("transcript", 2.0, 6.5, "hi there", vec(2))],
    )
    rows = cat.items_by_ids([aud.item_ids[0], 999, -1, img.item_ids[0]], with_thumbnails=True)
    assert [r.id for r in rows] == [aud.item_ids[0], img.item_ids[0]]
    t = rows[0]
    assert (t.kind, t.start_s, t.end_s, t.text, t.asset_kind, t.path) == (
        "transcript",
        2.0,
        6.5,
        "hi there",
        "audio",
        str(tmp_path / "s.wav"),
    )
    assert t.asset.duration_s == 12.0 and rows[1].thumbnail == b"t"
    assert cat.items_by_ids(img.item_ids)[0].thumbnail is None  # not loaded unless asked


def test_vectors_roundtrip_exactly(cat, tmp_path):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(1200, DIM)).astype(np.float32)
    vectors[0, :4] = [-0.0, np.float32(1e-42), np.finfo(np.float32).max, np.finfo(np.float32).tiny]
    ids = []
    for i in range(0, 1200, 100):
        ids += cat.upsert_asset_with_items(
            asset(tmp_path / f"{i}.mp4", kind="video"),
            [
                ItemData("keyframe", float(j), None, None, v)
                for j, v in enumerate(vectors[i : i + 100])
            ],
        ).item_ids
    batches = list(cat.iter_vectors(batch=512))
    assert [len(b[0]) for b in batches] == [512, 512, 176]
    got_ids = np.concatenate([b[0] for b in batches])
    got = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(got_ids, ids)
    assert got.dtype == np.float32 and got.tobytes() == vectors.tobytes()  # bit-exact
    found, some = cat.vectors_for([ids[5], 10**9, ids[0]])
    assert found.tolist() == [ids[5], ids[0]]
    assert some.tobytes() == vectors[[5, 0]].tobytes()
    np.testing.assert_array_equal(cat.item_ids(), ids)


def test_reader_sees_committed_data_only(db_path, tmp_path):
    """WAL: a search process reading while the indexer writes sees the last commit, unblocked."""
    with Catalog.open(db_path) as writer_cat, Catalog.open(db_path) as reader_cat:
        writer_cat.upsert_asset_with_items(asset(tmp_path / "committed.jpg"), items(1))
        with writer_cat._write.begin() as s:  # an indexer transaction, mid-way
            s.add(
                Asset(
                    path=str(tmp_path / "pending.jpg"),
                    size=1,
                    mtime_ns=1,
                    content_hash="p",
                    kind="image",
                    indexed_at=1.0,
                )
            )
            s.flush()
            # The reader is neither blocked by the write lock nor shown uncommitted rows.
            assert reader_cat.asset_by_path(tmp_path / "pending.jpg") is None
            assert reader_cat.asset_counts() == {"image": 1}
            assert len(list(reader_cat.iter_vectors())) == 1
        assert reader_cat.asset_by_path(tmp_path / "pending.jpg") is not None
        assert reader_cat.asset_counts() == {"image": 2}


def test_a_batch_upsert_puts_each_vector_patch_grid_and_thumbnail_on_its_own_item(cat, tmp_path):
    """A batch mixing new files and a changed one, with one to three items each: every returned
    item id holds its own vector, patch grid and thumbnail, under its own file, in the order
    given (the rows are inserted in bulk and their ids come back in order)."""
    from mmsearch.catalog import AssetInfo, ItemData

    cat.bind_encoder("test", 4)
    rng = np.random.default_rng(7)

    def picture():
        vector = rng.normal(size=4).astype(np.float32)
        grid = rng.normal(size=(3, 4)).astype(np.float16)
        return ItemData("image", None, None, None, vector, rng.bytes(8), patches=grid)

    def asset(name):
        return AssetInfo(path=str(tmp_path / name), kind="image", size=1, mtime_ns=1, content_hash=name)

    (before,) = cat.upsert_assets([(asset("b.jpg"), [picture()])])  # b changes in the batch
    batch = [(asset(name), [picture() for _ in range(k)]) for name, k in (("a.jpg", 2), ("b.jpg", 3), ("c.jpg", 1), ("d.jpg", 2))]
    results = cat.upsert_assets(batch)
    assert results[1].asset_id == before.asset_id and results[1].replaced_ids == before.item_ids
    for (info, items), result in zip(batch, results, strict=True):
        assert len(result.item_ids) == len(items)
        records = cat.items_by_ids(result.item_ids, with_thumbnails=True)
        assert [Path(r.path) for r in records] == [Path(info.path)] * len(items)
        assert [r.thumbnail for r in records] == [it.thumbnail for it in items]
        ids, vectors = cat.vectors_for(result.item_ids)
        assert ids.tolist() == result.item_ids
        assert np.array_equal(vectors, np.stack([it.vector for it in items]))
        ids, grids = cat.patches_for(result.item_ids)
        assert ids.tolist() == result.item_ids
        assert np.array_equal(grids, np.stack([it.patches for it in items]))


def test_a_batch_of_upserts_is_one_transaction(tmp_path):
    """`upsert_assets` stores many files at once, reports each file's new and replaced ids,
    and stores nothing of a batch that fails."""
    from mmsearch.catalog import AssetInfo, Catalog, ItemData

    cat = Catalog(tmp_path / "c.db")
    cat.bind_encoder("test", 2)

    def asset(name, h):
        return AssetInfo(path=str(tmp_path / name), kind="image", size=1, mtime_ns=1, content_hash=h)

    def item(x):
        return ItemData("image", None, None, None, np.array([x, 1.0], np.float32))

    first = cat.upsert_assets([(asset("a.jpg", "a"), [item(1)]), (asset("b.jpg", "b"), [item(2), item(3)])])
    assert [len(r.item_ids) for r in first] == [1, 2] and all(not r.replaced_ids for r in first)
    generation = cat.generation()
    again = cat.upsert_assets([(asset("b.jpg", "b2"), [item(4)]), (asset("c.jpg", "c"), [item(5)])])
    assert again[0].asset_id == first[1].asset_id and again[0].replaced_ids == first[1].item_ids
    assert again[1].replaced_ids == [] and cat.generation() == generation + 1
    assert sorted(cat.item_ids().tolist()) == sorted(first[0].item_ids + again[0].item_ids + again[1].item_ids)
    bad = AssetInfo(path=str(tmp_path / "d.jpg"), kind="image", size=1, mtime_ns=1, content_hash="d", taken_at="soon")
    with pytest.raises(StatementError, match="DateTime"):  # a date that is not a date
        cat.upsert_assets([(asset("e.jpg", "e"), [item(6)]), (bad, [item(7)])])
    assert cat.asset_by_path(tmp_path / "e.jpg") is None
    with pytest.raises(ValueError, match="same path twice"):
        cat.upsert_assets([(asset("f.jpg", "f"), [item(8)]), (asset("f.jpg", "f"), [item(9)])])
