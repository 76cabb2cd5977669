"""The sqlite3 reader of a local catalog answers a search's questions as the SQLAlchemy
`Catalog` does, hands everything else to it, and keeps SQLAlchemy out of a cold query."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmsearch import Engine, IndexOptions
from mmsearch.catalog.reader import CatalogReader, open_reader
from mmsearch.catalog.store import Catalog
from mmsearch.errors import CatalogError
from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """Pictures (with tags and EXIF-less dates), a text note (a passage with a sentence vector),
    and one user's feedback: every table the reader reads has rows."""
    root = tmp_path_factory.mktemp("reader")
    photos = write_photo_folder(root / "photos", 12, seed=31)
    notes = root / "notes"
    notes.mkdir()
    (notes / "trip.txt").write_text("We walked along the red cliffs at dawn.\n\nThe bus was late.\n")
    home = root / "home"
    with Engine(home, "tiny") as engine:
        engine.index([photos, notes], options=IndexOptions(in_process=True))
        first = engine.search("a red circle", k=3)
        engine.feedback(first[0].item_id, True, user="ann", query="a red circle")
        engine.feedback(first[1].item_id, False, user="ann")
    return home


def test_every_answer_is_the_catalogs(home):
    full = Catalog.open(home / "catalog.db")
    reader = CatalogReader(home / "catalog.db")
    try:
        ids = full.item_ids().tolist()
        asked = [ids[3], -1, ids[0], 10**9, ids[-1], ids[3]]  # order, a negative, a missing id, twice
        assert reader.items_by_ids(asked) == full.items_by_ids(asked)
        assert reader.items_by_ids(ids, with_thumbnails=True) == full.items_by_ids(ids, with_thumbnails=True)
        for key in ("encoder", "encoder_dim", "schema_version", "generation", "collection_id", "nope"):
            assert reader.get_meta(key) == full.get_meta(key)
        assert reader.generation() == full.generation() > 0
        assert reader.encoder() == full.encoder() and reader.encoder_weights() == full.encoder_weights()
        assert reader.collection_id() == full.collection_id() != ""
        assert reader.passage_count() == full.passage_count() > 0
        assert reader.passage_count(["image"]) == full.passage_count(["image"]) == 12
        assert reader.passage_count([]) == full.passage_count([]) == 0
        np.testing.assert_array_equal(reader.text_vector_ids(), full.text_vector_ids())
        tags = reader.tags_of(ids)
        assert tags == full.tags_of(ids) and tags
        want = ids[::-1] + [10**9]
        got_ids, got = reader.patches_for(want)
        full_ids, full_grids = full.patches_for(want)
        np.testing.assert_array_equal(got_ids, full_ids)
        np.testing.assert_array_equal(got, full_grids)
        assert len(got_ids) == 12 and got.dtype == np.float16  # every picture has its grid
        assert reader.patch_shape() == full.patch_shape()
        assert reader.feedback_count("ann") == full.feedback_count("ann") == 2
        assert reader.feedback_count("bob") == 0
        assert reader._full is None  # all of that without SQLAlchemy's catalog
        assert reader.tag_counts() == full.tag_counts()  # anything else: the full catalog answers
        assert reader._full is not None
    finally:
        reader.close()
        full.close()


def test_a_reading_collection_uses_the_reader_and_still_writes(home, tmp_path):
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with Collection(copy, create=False) as collection:
        assert isinstance(collection.catalog, CatalogReader)
        before = collection.catalog.generation()
        item = int(collection.catalog.item_ids()[0])
        collection.catalog.add_feedback("bob", item, 1)  # a write goes to the full catalog
        assert collection.catalog.feedback_count("bob") == 1  # and the reader sees it committed
        assert collection.catalog.generation() >= before
    with Collection(copy) as collection:  # a command that may create or migrate: the Catalog
        assert isinstance(collection.catalog, Catalog)


def test_only_the_current_schema_is_served(home, tmp_path):
    older = tmp_path / "older.db"
    shutil.copy(home / "catalog.db", older)
    with sqlite3.connect(older) as conn:
        conn.execute("UPDATE meta SET value = '8' WHERE key = 'schema_version'")
    assert open_reader(older) is None  # the Catalog migrates (or refuses) it, not the reader
    assert open_reader(tmp_path / "missing.db") is None
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database at all" * 100)
    assert open_reader(broken) is None
    with pytest.raises(CatalogError, match="damaged"):  # and the Catalog says what is wrong
        Catalog.open(broken)


def test_a_locked_catalog_is_a_typed_error(home, tmp_path):
    copy = tmp_path / "locked.db"
    shutil.copy(home / "catalog.db", copy)
    with sqlite3.connect(copy) as conn:  # a rollback journal: an exclusive writer blocks readers
        assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    reader = CatalogReader(copy)
    reader._conn.execute("PRAGMA busy_timeout = 50")
    holder = sqlite3.connect(copy, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(CatalogError, match="locked"):
            reader.generation()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        reader.close()


def test_a_cold_query_of_pictures_never_imports_sqlalchemy(tmp_path):
    """A collection of pictures is searched without SQLAlchemy; one with passages loads it for
    keyword search (FTS5), and that query goes through the full catalog."""
    home = tmp_path / "home"
    with Engine(home, "tiny") as engine:
        engine.index([write_photo_folder(tmp_path / "photos", 6, seed=32)], options=IndexOptions(in_process=True))
    probe = (
        "import runpy, sys, json\n"
        "sys.argv = ['mmsearch', 'query', '--home', sys.argv[1], '--json', 'a red circle']\n"
        "try:\n"
        "    runpy.run_module('mmsearch.cli', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('SQLALCHEMY', json.dumps(sorted(m for m in sys.modules if m.startswith('sqlalchemy'))))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMSEARCH_NO_QUICK_EXIT": "1"}  # the probe prints after the CLI
    done = subprocess.run(
        [sys.executable, "-c", probe, str(home)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.rsplit("SQLALCHEMY", 1)[1])
    assert loaded == []
    assert '"path"' in done.stdout  # and it answered
