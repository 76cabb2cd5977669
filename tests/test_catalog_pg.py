"""The catalog on PostgreSQL: the SQLite catalog and keyword tests rerun against a throwaway
PostgreSQL 15 cluster (`pg_cluster.py`), plus what only PostgreSQL has: migrations with BYTEA and
BIGSERIAL, the tsvector and pg_trgm GIN indexes, glob filters as regular expressions, SQLSTATE
error messages, the advisory writer lock, the URL recorded in the home, and one index + query
run end to end with the bundled `tiny` model.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import test_catalog as tc
import test_keyword as tk
from sqlalchemy import MetaData, inspect, text

# The store and keyword tests of the SQLite suite, collected again here, where `cat` and
# `db_path` are a catalog on PostgreSQL and its URL.
from test_catalog import (  # noqa: F401
    test_a_batch_upsert_puts_each_vector_patch_grid_and_thumbnail_on_its_own_item,
    test_delete_assets_returns_item_ids,
    test_encoder_binding,
    test_folders_and_asset_states,
    test_item_ids_are_never_reused,
    test_items_by_ids_joins_assets_in_order,
    test_lookup_by_hash_and_move_keeps_items,
    test_newer_schema_is_refused,
    test_reader_sees_committed_data_only,
    test_upsert_stores_metadata_and_replaces_items,
    test_upsert_validates,
    test_vectors_roundtrip_exactly,
)
from test_keyword import (  # noqa: F401
    test_exact_rare_word_is_found,
    test_hostile_queries_are_harmless,
    test_only_passages_are_keyword_matched,
    test_stemming_matches_word_forms,
    test_triggers_follow_replace_and_delete,
)

from mmsearch.catalog import MIGRATIONS, SCHEMA_VERSION, AssetInfo, Catalog, ItemData
from mmsearch.catalog.db import make_engine
from mmsearch.catalog.migrations import create_v1_schema
from mmsearch.catalog.schema import PG_CJK_INDEX, PG_KEYWORD_INDEX
from mmsearch.errors import CatalogError, ConfigError
from mmsearch.query.model import Filters


@pytest.fixture
def db_path(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def cat(pg_url: str):
    with Catalog.open(pg_url) as c:
        yield c


@pytest.fixture(autouse=True)
def _pg_index_check(monkeypatch):
    """The SQLite tests call FTS5's integrity check; here the GIN indexes must be valid."""

    def check(catalog: Catalog) -> None:
        with catalog.engine.connect() as conn:
            valid = conn.exec_driver_sql(
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                f"WHERE c.relname IN ('{PG_KEYWORD_INDEX}', '{PG_CJK_INDEX}')"
            ).all()
        assert sorted(valid) == [(PG_CJK_INDEX, True), (PG_KEYWORD_INDEX, True)]

    monkeypatch.setattr(tk, "fts_consistent", check)


def second_database(pg_cluster, name: str) -> str:
    pg_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg_cluster.admin(f"CREATE DATABASE {name}")
    return pg_cluster.url(name)


# ---------------------------------------------------------------- schema and migrations
def test_fresh_catalog_on_postgresql(cat):
    assert cat.is_postgresql and cat.schema_version == SCHEMA_VERSION
    assert cat.has_keyword_index and cat.has_cjk_index
    insp = inspect(cat.engine)
    ids = {c["name"]: c for c in insp.get_columns("items")}["id"]
    assert str(ids["type"]) == "BIGINT" and "nextval" in str(ids["default"])  # BIGSERIAL
    assert {"meta", "folders", "assets", "items", "feedback", "item_patches", "item_tags"} <= set(
        insp.get_table_names()
    )
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'").scalar()
    assert cat.integrity() == "ok"


def test_v1_database_migrates_on_postgresql_like_a_fresh_one(pg_url, pg_cluster):
    engine = make_engine(pg_url)
    create_v1_schema(engine)
    v1 = MetaData()
    v1.reflect(engine)
    with engine.begin() as conn:
        asset_id = conn.execute(
            v1.tables["assets"].insert().returning(v1.tables["assets"].c.id),
            dict(path="/old/a.wav", size=5, mtime_ns=2, content_hash="h1", kind="audio", indexed_at=3.0),
        ).scalar()
        old_id = conn.execute(
            v1.tables["items"].insert().returning(v1.tables["items"].c.id),
            dict(asset_id=asset_id, kind="transcript", text="zanzibar spices", vector=tc.vec(1).tobytes()),
        ).scalar()
    engine.dispose()

    with Catalog.open(pg_url) as c:
        assert c.schema_version == SCHEMA_VERSION and c.has_keyword_index and c.has_cjk_index
        assert c.items_by_ids([old_id])[0].text == "zanzibar spices"
        assert [i for i, _ in c.keyword_search("zanzibar")] == [old_id]  # indexed by the migration
        new = c.upsert_asset_with_items(tc.asset("/old/b.jpg"), tc.items(1)).item_ids
        assert new[0] > old_id
        c.set_text_vectors([old_id], np.ones((1, 4), np.float32))  # v4's column is BYTEA
        assert c.text_vectors_for([old_id])[1].tolist() == [[1.0] * 4]
        migrated = tc.schema_shape(c.engine)
    with Catalog.open(second_database(pg_cluster, "fresh_for_migration")) as fresh:
        assert tc.schema_shape(fresh.engine) == migrated


def test_a_v9_catalog_gets_its_stored_tsvector_column_and_keeps_finding_words(pg_url):
    """v9 indexed the expression to_tsvector(text), and ranking parsed every matching passage
    again; v10 replaces it with a stored, generated tsvector column and a GIN index on it."""
    with Catalog.open(pg_url) as c:  # a v10 catalog, turned back into what v9 made
        old = c.upsert_asset_with_items(*tk.note(Path("/notes/old.txt"), "zanzibar spices")).item_ids[0]
        with c.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE items DROP COLUMN text_tsv")  # its index goes with it
            conn.exec_driver_sql(
                f"CREATE INDEX {PG_KEYWORD_INDEX} ON items USING GIN "
                "((to_tsvector('english'::regconfig, text))) WHERE text IS NOT NULL"
            )
            conn.exec_driver_sql("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    with Catalog.open(pg_url) as c:
        assert c.schema_version == SCHEMA_VERSION == 10 and c.has_keyword_index
        with c.engine.connect() as conn:
            (definition,) = conn.exec_driver_sql(
                f"SELECT indexdef FROM pg_indexes WHERE indexname = '{PG_KEYWORD_INDEX}'"
            ).scalars()
            stored = conn.exec_driver_sql(
                "SELECT text_tsv::text FROM items WHERE id = %(i)s", {"i": old}
            ).scalar()
        assert "(text_tsv)" in definition and "to_tsvector" not in definition
        assert stored == "'spice':2 'zanzibar':1"  # filled for the rows already there, stemmed
        new = c.upsert_asset_with_items(*tk.note(Path("/notes/new.txt"), "more zanzibar")).item_ids[0]
        assert sorted(i for i, _ in c.keyword_search("zanzibar")) == [old, new]


def test_failed_migration_step_rolls_back_on_postgresql(pg_url, monkeypatch):
    engine = make_engine(pg_url)
    create_v1_schema(engine)
    real = MIGRATIONS[4]

    def broken(conn):
        real(conn)
        raise RuntimeError("power cut")

    monkeypatch.setitem(MIGRATIONS, 4, broken)
    with pytest.raises(RuntimeError):
        Catalog.open(pg_url)
    assert "text_vector" not in {c["name"] for c in inspect(engine).get_columns("items")}
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT value FROM meta WHERE key = 'schema_version'")) == "3"
    monkeypatch.setitem(MIGRATIONS, 4, real)
    with Catalog.open(pg_url) as c:
        assert c.schema_version == SCHEMA_VERSION
    engine.dispose()


# ------------------------------------------------------------------------ store parity
def fill(catalog: Catalog, root: str) -> dict[str, list[int]]:
    """The same small library in any catalog: {relative path: item ids}."""
    from datetime import datetime

    catalog.bind_encoder("x", tc.DIM)
    files = {
        "trips/2023/beach_1.jpg": dict(camera="Canon EOS R5", taken_at=datetime(2023, 7, 1)),
        "trips/2023/city.png": dict(camera="Pixel 8", taken_at=datetime(2023, 8, 2)),
        "trips/2024/beach_2.png": dict(taken_at=datetime(2024, 1, 5), width=4000, height=3000),
        "home/a[1].jpg": {},
        "home/b2.jpg": {},
        "home/notes/todo.txt": dict(kind="text"),
        "weird/x.y(z)+.jpg": {},
    }
    out = {}
    for i, (rel, kw) in enumerate(files.items()):
        kind = kw.pop("kind", "image")
        item_kind = "text" if kind == "text" else "image"
        res = catalog.upsert_asset_with_items(
            AssetInfo(path=f"{root}/{rel}", kind=kind, size=1, mtime_ns=10**18 + i, content_hash=rel, **kw),
            [ItemData(item_kind, None, None, "todo list" if kind == "text" else None, tc.vec(i))],
        )
        out[rel] = res.item_ids
    return out


@pytest.mark.parametrize(
    "filters",
    [
        Filters(paths=("*.png",)),
        Filters(paths=("trips/*/beach*",)),
        Filters(paths=("/lib/home",)),
        Filters(paths=("home/?2.jpg",)),
        Filters(paths=("home/a[[]1].jpg",)),
        Filters(paths=("*/b[^x]*",)),
        Filters(paths=("*x.y(z)+*",)),
        Filters(paths=("/lib/trips/202[3]/*",)),
        Filters(types=frozenset({"text"})),
        Filters(camera="eos"),
        Filters(min_width=1000),
        Filters(tags=("red",)),
    ],
    ids=lambda f: repr(f)[:60],
)
def test_filters_match_sqlite(cat, tmp_path, filters):
    """Every filter selects the same files on PostgreSQL as on SQLite (globs become regexes)."""
    with Catalog.open(tmp_path / "ref.db") as ref:
        got_ids, ref_ids = fill(cat, "/lib"), fill(ref, "/lib")
        for c, ids in ((cat, got_ids), (ref, ref_ids)):
            c.add_tags([(ids["home/b2.jpg"][0], "red", 0.9), (ids["home/a[1].jpg"][0], "blue", 0.8)], 99)
        by_id = lambda ids: {v[0]: k for k, v in ids.items()}  # noqa: E731
        got = sorted(by_id(got_ids)[i] for i in cat.filtered_item_ids(filters))
        want = sorted(by_id(ref_ids)[i] for i in ref.filtered_item_ids(filters))
    assert got == want and got  # and the case is not vacuous


def test_generation_feedback_tags_and_patches(cat, tmp_path):
    cat.bind_encoder("x", tc.DIM)
    g0 = cat.generation()
    patches = np.arange(8, dtype=np.float32).reshape(2, 4)
    res = cat.upsert_asset_with_items(
        tc.asset(tmp_path / "p.jpg"), [ItemData("image", None, None, None, tc.vec(0), None, None, patches)]
    )
    assert cat.generation() == g0 + 1 and cat.patch_shape() == (2, 4)
    ids, got = cat.patches_for(res.item_ids)
    assert ids.tolist() == res.item_ids and got[0].tolist() == patches.tolist()
    cat.add_tags([(res.item_ids[0], "red", 0.7), (10**9, "ghost", 1.0)], res.item_ids[0])
    assert cat.tag_counts() == [("red", 1)] and cat.tags_through() == res.item_ids[0]
    assert cat.tags_of(res.item_ids) == {res.item_ids[0]: [("red", pytest.approx(0.7))]}
    event = cat.add_feedback("ann", res.item_ids[0], 1, "a red thing")
    cat.add_feedback("bob", res.item_ids[0], -1)
    assert [e.id for e in cat.feedback_events("ann")] == [event.id] and cat.feedback_users() == ["ann", "bob"]
    assert cat.feedback_count("ann") == 1 and cat.reset_feedback("ann") == 1
    cat.reset_tags("[colour]\nred\n")
    assert cat.tag_counts() == [] and cat.tag_vocabulary() == "[colour]\nred\n"
    assert cat.generation() == g0 + 3


# ------------------------------------------------------------------------ keyword search
def test_cascade_delete_and_rollback(cat, tmp_path):
    res = cat.upsert_asset_with_items(*tk.note(tmp_path / "n.txt", "ocelot sighting"))
    with cat._write.begin() as s:  # the asset row alone: ON DELETE CASCADE removes its items
        s.execute(text("DELETE FROM assets WHERE id = :id"), {"id": res.asset_id})
    assert cat.keyword_search("ocelot", 5) == [] and cat.item_ids().size == 0
    with pytest.raises(RuntimeError), cat._write.begin() as s:
        asset_id = s.execute(
            text(
                "INSERT INTO assets (path, size, mtime_ns, content_hash, kind, indexed_at) "
                "VALUES ('/m', 1, 1, 'h', 'text', 0) RETURNING id"
            )
        ).scalar()
        s.execute(
            text("INSERT INTO items (asset_id, kind, text, vector) VALUES (:a, 'text', 'pangolin', '\\x00')"),
            {"a": asset_id},
        )
        assert cat.keyword_search("pangolin", 5) == []  # other readers: not committed yet
        raise RuntimeError("crash before commit")
    assert cat.keyword_search("pangolin", 5) == []


def test_keyword_ranking_and_allow_list(cat, tmp_path):
    for name, body in {
        "a": "zanzibar market and more zanzibar",
        "b": "a market",
        "c": "zanzibar",
        "d": "nothing related",
    }.items():
        cat.upsert_asset_with_items(*tk.note(tmp_path / f"{name}.txt", body))
    paths = lambda hits: [Path(r.path).stem for r in cat.items_by_ids([i for i, _ in hits])]  # noqa: E731
    ranked = cat.keyword_search("zanzibar market", 10)
    assert set(paths(ranked)) == {"a", "b", "c"} and paths(ranked)[0] == "a"
    assert all(s > 0 for _, s in ranked) and [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    only = cat.filtered_item_ids(Filters(paths=("*/b.txt",)))
    assert paths(cat.keyword_search("zanzibar market", 10, allowed=only)) == ["b"]
    assert cat.keyword_search("the of and", 10) == []  # only stopwords: nothing to match


def test_chinese_passages_are_found_by_chinese_words(cat):
    cat.bind_encoder("x", 4)
    texts = ["会议室在三楼", "明天的会议取消了", "a red circle and 红色的圆", "budget review"]
    for i, passage in enumerate(texts, start=1):
        asset = AssetInfo(path=f"/notes/{i}.txt", kind="text", size=1, mtime_ns=1, content_hash=str(i))
        cat.upsert_asset_with_items(asset, [ItemData("text", None, None, passage, np.full(4, 0.5, np.float32))])
    first = cat.item_ids()[0] - 1
    ids = lambda q: [int(i - first) for i, _ in cat.keyword_search(q)]  # noqa: E731
    assert ids("会议室") == [1]
    assert ids("会议") == [1, 2] and ids("红色") == [3]
    assert set(ids("三楼 budget")) == {1, 4} and ids("red 会议室")[:2] in ([3, 1], [1, 3])
    assert ids("circle") == [3]
    assert cat.keyword_search("会议", allowed=np.array([first + 2], np.int64))[0][0] == first + 2


def test_gin_indexes_serve_keyword_queries(cat, tmp_path):
    cat.upsert_asset_with_items(*tk.note(tmp_path / "n.txt", "会议室在三楼 zanzibar"))
    with cat.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        words = conn.exec_driver_sql(
            "EXPLAIN SELECT id FROM items WHERE text IS NOT NULL AND "
            "items.text_tsv @@ plainto_tsquery('english'::regconfig, 'zanzibar')"
        ).scalars().all()
        cjk = conn.execute(
            text("EXPLAIN SELECT id FROM items WHERE text LIKE :p"), {"p": "%会议室%"}
        ).scalars().all()
    assert PG_KEYWORD_INDEX in "\n".join(words) and PG_CJK_INDEX in "\n".join(cjk)


# ------------------------------------------------------------------------------ errors
def test_connection_errors_are_explained(pg_cluster, tmp_path):
    with pytest.raises(CatalogError, match="Cannot reach the PostgreSQL catalog.*PGPASSWORD"):
        Catalog.open(f"postgresql://postgres@/x?host={tmp_path}")  # no server there
    with pytest.raises(CatalogError, match="does not exist.*createdb"):
        Catalog.open(pg_cluster.url("no_such_db"))
    with pytest.raises(CatalogError, match="refused the login"):
        Catalog.open(pg_cluster.url("postgres", user="nobody"))
    with pytest.raises(ConfigError, match="Not a database URL"):
        from mmsearch.catalog import location

        location.without_password("postgresql://u@h:notaport/db")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@h/db", "PostgreSQL or SQLite, not mysql"),
        ("mongodb://h/db", "PostgreSQL or SQLite, not mongodb"),
        ("postgresql:/u@h/db", "a scheme is followed by '://'"),  # a typo, not a file path
        ("postgres:u@h/db", "a scheme is followed by '://'"),
    ],
)
def test_a_catalog_url_of_another_database_or_mistyped_is_one_line(
    tmp_path, monkeypatch, url, says
):
    """Not a traceback (no driver for it), nor a SQLite file named after the typo."""
    from typer.testing import CliRunner

    from mmsearch.cli import app

    monkeypatch.chdir(tmp_path)  # where a relative path would be created
    result = CliRunner().invoke(app, ["status", "--home", "h", "--catalog", url])
    assert result.exit_code == 2, result.output  # a usage error, as the CLI gives them
    assert says in " ".join(result.output.split()) and "Traceback" not in result.output
    assert [p.name for p in tmp_path.iterdir()] in ([], ["h"])
    assert not (tmp_path / "h" / "catalog_url").exists()


def test_a_relative_sqlite_path_with_a_colon_is_a_path(tmp_path, monkeypatch):
    from mmsearch.catalog import location

    monkeypatch.chdir(tmp_path)
    location.without_password("backup:2024.db")  # not refused as a mistyped URL
    with Catalog.open("backup:2024.db") as c:
        c.set_meta("marker", "here")
    assert (tmp_path / "backup:2024.db").is_file()


# ------------------------------------------------------------- the home and the writer lock
def test_catalog_url_is_recorded_without_password(pg_url, tmp_path, monkeypatch):
    from mmsearch.store import Collection

    monkeypatch.delenv("MMSEARCH_CATALOG", raising=False)
    with_password = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    home = tmp_path / "home"
    with Collection(home, catalog_url=with_password) as c:
        assert c.catalog.is_postgresql
        c.catalog.set_meta("marker", "here")
    recorded = (home / "catalog_url").read_text()
    assert "s3cret" not in recorded and "postgres@" in recorded
    assert stat.S_IMODE(os.stat(home / "catalog_url").st_mode) == 0o600
    assert not (home / "catalog.db").exists()
    with Collection(home, create=False) as c:  # later commands need not repeat it
        assert c.catalog.get_meta("marker") == "here"
    with pytest.raises(ConfigError, match="keeps its catalog at"):
        Collection(home, catalog_url=pg_url.replace("/t_", "/other_"))
    monkeypatch.setenv("MMSEARCH_CATALOG", pg_url)
    other = tmp_path / "second"
    with Collection(other) as c:
        assert c.catalog.get_meta("marker") == "here"  # $MMSEARCH_CATALOG
    sqlite_home = tmp_path / "sqlite_home"
    monkeypatch.delenv("MMSEARCH_CATALOG")
    Collection(sqlite_home).close()
    with pytest.raises(ConfigError, match="already holds a SQLite catalog"):
        Collection(sqlite_home, catalog_url=pg_url)


def test_one_writer_across_homes_sharing_a_catalog(pg_url, tmp_path):
    """Two homes (two machines) share one catalog: their flocks differ, the advisory lock holds."""
    from mmsearch.store import Collection

    busy = rf"Another `mmsearch index` \(.* pid {os.getpid()}\) is writing to the catalog"
    one = Collection(tmp_path / "m1", catalog_url=pg_url)
    two = Collection(tmp_path / "m2", catalog_url=pg_url)
    try:
        with one.writer(), pytest.raises(ConfigError, match=busy), two.writer():
            pass
        with two.writer():  # released with the first writer
            pass
        # a reader saving its own home's stores needs only its flock, never the catalog's lock
        with one.writer(), two._writer_lock(catalog=False):
            pass
    finally:
        one.close()
        two.close()


def test_a_killed_writer_releases_the_catalog(pg_url, tmp_path):
    """kill -9 of a writer on another machine (another home): the server drops its lock."""
    import signal
    import subprocess
    import sys

    from mmsearch.store import Collection

    script = (
        "import sys, time\n"
        "from mmsearch.store import Collection\n"
        "c = Collection(sys.argv[1], catalog_url=sys.argv[2])\n"
        "with c.writer():\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "far"), pg_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        with Collection(tmp_path / "near", catalog_url=pg_url) as near:
            busy = rf"Another `mmsearch index` \(.* pid {child.pid}\)"
            with pytest.raises(ConfigError, match=busy), near.writer():
                pass
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            for _ in range(50):  # the server notices the closed connection at once, or nearly
                try:
                    with near.writer():
                        break
                except ConfigError:
                    time.sleep(0.1)
            else:
                pytest.fail("the killed writer's lock was never released")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# ------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_index_and_query_end_to_end_on_postgresql(pg_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmsearch import Engine, IndexOptions
    from mmsearch.cli import app
    from mmsearch.synth.media import write_photo_folder

    monkeypatch.delenv("MMSEARCH_CATALOG", raising=False)
    photos = write_photo_folder(tmp_path / "photos", 6, seed=3)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "trip.txt").write_text("We bought cloves in the old market of Zanzibar at dawn.\n")
    (notes / "budget.txt").write_text("The quarterly budget review moved to Thursday.\n")
    (notes / "meeting.txt").write_text("明天的会议取消了，会议室在三楼。\n")
    home = tmp_path / "home"
    with Engine(home, model="tiny", catalog_url=pg_url, device="cpu") as engine:
        summary = engine.index([photos, notes], options=IndexOptions(in_process=True))
        assert summary.skipped == [] and summary.new == 9
        status = engine.status()
        hits = engine.search("zanzibar market", k=3, types=["text"])
        assert hits and Path(hits[0].path).name == "trip.txt"
        chinese = engine.search("会议室", k=3, types=["text"])
        assert chinese and Path(chinese[0].path).name == "meeting.txt"
        pictures = engine.search("a red circle", k=3, types=["image"])
        assert len(pictures) == 3 and all(h.kind == "image" for h in pictures)
    assert status.assets_by_kind == {"image": 6, "text": 3} and status.catalog_health == "ok"
    assert not (home / "catalog.db").exists() and (home / "catalog_url").exists()

    runner = CliRunner()  # the CLI finds the catalog through the home alone
    result = runner.invoke(app, ["query", "--home", str(home), "zanzibar", "--type", "text", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][0])
    assert Path(first["path"]).name == "trip.txt"
    result = runner.invoke(app, ["status", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["assets_by_kind"] == {"image": 6, "text": 3}


@pytest.mark.slow
def test_the_cli_names_all_three_backends_by_url_and_later_commands_find_them(pg_url, tmp_path):
    """`index --catalog postgresql://... --vectors milvus-lite:... --ray local`, as a user types
    it; then `query` and `status` with the home alone (the catalog URL from the home, the store
    from the catalog); and a query asked for another store is refused, not searched empty."""
    import subprocess
    import sys

    from mmsearch.synth.media import write_photo_folder

    photos = write_photo_folder(tmp_path / "photos", 6, seed=8)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMSEARCH_", "RAY_ADDRESS"))}
    env["HF_HUB_OFFLINE"] = "1"

    def cli(*words: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mmsearch.cli", *words]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    done = cli(
        "index", str(photos), "--home", str(home), "--model", "tiny", "--catalog", pg_url,
        "--vectors", "milvus-lite:vectors.db", "--ray", "local", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["new"] == 6 and summary["skipped"] == []
    assert (home / "catalog_url").exists() and (home / "vectors.db").is_dir()
    assert not (home / "catalog.db").exists() and not (home / "index" / "vectors.idx").exists()

    done = cli("query", "a red circle", "--home", str(home), "--type", "image", "-k", "3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    hits = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(hits) == 3 and all(Path(h["path"]).parent == photos for h in hits)
    done = cli("status", "--home", str(home), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads(done.stdout)
    assert status["index_kind"].startswith("milvus") and status["index_count"] == 6

    done = cli("query", "a red circle", "--home", str(home), "--vectors", "faiss", "--json")
    assert done.returncode == 2 and "keeps its vectors in milvus-lite:vectors.db" in " ".join(done.stderr.split())
