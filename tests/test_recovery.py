"""Recovery (issue 9, items 9-12): damaged and truncated catalogs, interrupted saves, an index
behind its catalog, and a full disk, each as one line with the way out, never a traceback."""

from __future__ import annotations

import errno
import shutil

import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import CatalogError
from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery")
    photos = write_photo_folder(root / "photos", 12, seed=8)
    with Engine(root / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
    return root / "home", photos


@pytest.fixture
def home(built, tmp_path):
    copy = tmp_path / "home"
    shutil.copytree(built[0], copy)
    return copy


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in result.output


def test_a_file_that_is_not_a_database_gives_one_line(home):
    (home / "catalog.db").write_bytes(b"this is not sqlite" * 200)
    for f in home.glob("catalog.db-*"):
        f.unlink()
    one_line_error(cli("query", "a red circle", "--home", home), 6, "damaged", "backup")
    one_line_error(cli("status", "--home", home), 6, "damaged")


def test_a_zero_byte_catalog_is_not_a_new_home(home, monkeypatch):
    import mmsearch.models as models

    monkeypatch.setattr(models, "load_encoder", lambda *a, **k: pytest.fail("tried to load a model"))
    (home / "catalog.db").write_bytes(b"")
    for f in home.glob("catalog.db-*"):
        f.unlink()
    for args in (("status",), ("query", "a red circle"), ("index", home.parent)):
        one_line_error(cli(*args, "--home", home), 6, "0 bytes")
    with pytest.raises(CatalogError, match="0 bytes"):
        Collection(home)


def test_damaged_pages_are_found_by_status(home):
    db = home / "catalog.db"
    with Engine(home) as e:  # fold the WAL into the file first
        e.collection.catalog.engine.dispose()
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, page):  # scribble over every page but the first two
        data[offset + 100 : offset + 400] = b"\xff" * 300
    db.write_bytes(bytes(data))
    result = cli("status", "--home", home)
    assert result.exit_code == 6 and "Traceback" not in result.output, result.output
    assert "damaged" in result.output or "malformed" in result.output


def test_interrupted_save_temporaries_are_swept_by_the_next_writer(home, built):
    leftover = home / "index" / ".vectors.idx.0123456789abcdef.tmp"
    leftover.write_bytes(b"x" * 1000)
    with Engine(home) as e:
        e.index([built[1]], options=IndexOptions(in_process=True))
    assert not leftover.exists()


def test_a_reader_saves_the_index_it_had_to_catch_up(home):
    (home / "index" / "vectors.idx").unlink()
    (home / "index" / "vectors.idx.json").unlink()
    assert cli("status", "--home", home, "--json").exit_code == 0
    with Engine(home) as e:
        assert e.status().index_state == "missing"
    assert cli("query", "a red circle", "--home", home).exit_code == 0
    assert (home / "index" / "vectors.idx").exists()
    with Engine(home) as e:
        assert e.status().index_state == "level"


def test_disk_full_is_one_line_keeps_the_data_and_releases_the_lock(home, built, tmp_path, monkeypatch):
    import mmsearch.vectors.storage as storage

    more = write_photo_folder(tmp_path / "more", 3, seed=9)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "atomic_write", full)
    result = cli("index", more, "--home", home, "--workers", "1")
    one_line_error(result, 8, "full", "free some space")
    monkeypatch.undo()
    with Engine(home) as e:
        assert e.status().assets_by_kind["image"] == 15  # the committed files are kept
        with e.collection.writer():  # the lock was released
            pass
