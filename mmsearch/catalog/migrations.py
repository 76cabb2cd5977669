"""Versioned schema with step-by-step migrations (after rclip ``db.py::ensure_version``).

A fresh database is created at ``SCHEMA_VERSION`` directly. An older one is migrated one step
at a time, each step in its own transaction together with the new version number, so a crash
mid-upgrade leaves the database at a consistent earlier version that the next open continues
from. A newer database is refused rather than guessed at.

To change the schema: edit ``schema.py``, bump ``SCHEMA_VERSION``, add ``MIGRATIONS[new]``, and
extend the migration test (which checks a migrated database equals a freshly created one).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

from mmsearch.catalog.db import writer
from mmsearch.catalog.kinds import VERSION_KEY
from mmsearch.catalog.schema import (
    SCHEMA_VERSION,
    Base,
    Meta,
    create_cjk_keyword_index,
    create_keyword_index,
)
from mmsearch.errors import CatalogError

log = logging.getLogger(__name__)



def _v1_to_v2(conn: Connection) -> None:
    """v2 records which speech-to-text backend produced an asset's transcript."""
    conn.execute(text("ALTER TABLE assets ADD COLUMN transcript_backend VARCHAR(64)"))


def _v2_to_v3(conn: Connection) -> None:
    """v3 adds the FTS5 keyword index over item text (filled from the existing items) and an
    index on ``items.kind``, so finding passages never scans the vector-laden items table."""
    conn.execute(text("CREATE INDEX ix_items_kind ON items (kind)"))
    create_keyword_index(conn, backfill=True)


def _v3_to_v4(conn: Connection) -> None:
    """v4 adds passage sentence vectors (embedded by the next `index` run) and `assets.date_s`,
    filled here from the camera date or the file's modification time."""
    from mmsearch.catalog.dates import asset_date_s

    _write_meta(conn, "collection_id", uuid.uuid4().hex)
    blob = LargeBinary().compile(dialect=conn.dialect)  # BLOB on SQLite, BYTEA on PostgreSQL
    conn.execute(text(f"ALTER TABLE items ADD COLUMN text_vector {blob}"))
    conn.execute(text("ALTER TABLE assets ADD COLUMN date_s FLOAT"))
    conn.execute(text("CREATE INDEX ix_assets_date_s ON assets (date_s)"))
    rows = conn.execute(text("SELECT id, taken_at, mtime_ns FROM assets")).all()
    for asset_id, taken_at, mtime_ns in rows:
        conn.execute(
            text("UPDATE assets SET date_s = :d WHERE id = :i"),
            {"d": asset_date_s(taken_at, mtime_ns), "i": asset_id},
        )


def _v4_to_v5(conn: Connection) -> None:
    """v5 stores users' feedback on results (personalisation), keyed by content hash."""
    from mmsearch.catalog.schema import Feedback

    Feedback.__table__.create(conn)


def _v5_to_v6(conn: Connection) -> None:
    """v6 stores picture items' patch features for the image-text matching reranker (filled by
    `index` for new files, and for every picture with `index --patches`)."""
    from mmsearch.catalog.schema import ItemPatches

    ItemPatches.__table__.create(conn)


def _v6_to_v7(conn: Connection) -> None:
    """v7 stores pictures' zero-shot tags (filled from stored vectors by the next `index` run)."""
    from mmsearch.catalog.schema import ItemTag

    ItemTag.__table__.create(conn)


def _v7_to_v8(conn: Connection) -> None:
    """v8 records which OCR engine read each picture's words (none yet)."""
    conn.execute(text("ALTER TABLE assets ADD COLUMN ocr_engine VARCHAR(64)"))


def _v8_to_v9(conn: Connection) -> None:
    """v9 adds the trigram keyword index for Chinese and Japanese text (filled from the items)."""
    create_cjk_keyword_index(conn, backfill=True)


def _v9_to_v10(conn: Connection) -> None:
    """v10: on PostgreSQL, keyword search reads a stored ``tsvector`` column with its GIN index
    instead of an index over the expression (adding the column rewrites ``items`` once, the
    vectors with it). SQLite is unchanged."""
    if conn.dialect.name == "postgresql":
        from mmsearch.catalog.schema import PG_KEYWORD_INDEX

        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {PG_KEYWORD_INDEX}")
        create_keyword_index(conn, backfill=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _v1_to_v2,
    3: _v2_to_v3,
    4: _v3_to_v4,
    5: _v4_to_v5,
    6: _v5_to_v6,
    7: _v6_to_v7,
    8: _v7_to_v8,
    9: _v8_to_v9,
    10: _v9_to_v10,
}
"""``MIGRATIONS[v]`` upgrades a database from version ``v - 1`` to ``v``."""


def ensure_schema(engine: Engine) -> int:
    """Create the schema, or migrate it to ``SCHEMA_VERSION``; returns the version now in place."""
    with writer(engine).begin() as conn:
        _serialise(conn)
        version = read_version(conn)
        if version is None:
            _create_current(conn)
            return SCHEMA_VERSION
    _refuse_newer(engine, version)
    while version < SCHEMA_VERSION:
        with writer(engine).begin() as conn:
            _serialise(conn)
            found = read_version(conn)
            if found == version:  # not already migrated by a concurrent process
                log.info("migrating catalog schema from version %d to %d", version, version + 1)
                MIGRATIONS[version + 1](conn)
                _write_meta(conn, VERSION_KEY, str(version + 1))
        version = read_version_of(engine)
    return version


SCHEMA_LOCK_KEY = 0x6D6D7363_0001  # "mmsc" 1: an advisory lock key of its own
"""PostgreSQL: the transaction-level advisory lock that serialises schema creation/migration."""


def _serialise(conn: Connection) -> None:
    """On PostgreSQL, one process at a time creates or migrates the schema (SQLite's BEGIN
    IMMEDIATE does this there); the lock goes with the transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def read_version(conn: Connection) -> int | None:
    """The recorded schema version, or None for an empty database."""
    tables = set(inspect(conn).get_table_names())
    if "meta" not in tables:
        if tables & {"assets", "items", "folders"}:
            raise CatalogError(
                f"The database at {conn.engine.url!r} has tables but no mmsearch version record; "
                "it is not an mmsearch catalog. Point --home at an empty or mmsearch directory."
            )
        return None
    raw = conn.scalar(select(Meta.value).where(Meta.key == VERSION_KEY))
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise CatalogError(
            f"The catalog at {conn.engine.url!r} has an unreadable schema version ({raw!r}). "
            "Re-index into a new home."
        ) from None


def read_version_of(engine: Engine) -> int:
    with engine.connect() as conn:
        version = read_version(conn)
    if version is None:
        raise CatalogError(
            f"The catalog at {engine.url!r} lost its schema version during migration."
        )
    return version


def _refuse_newer(engine: Engine, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"The catalog at {engine.url!r} has schema version {version}, but this mmsearch "
            f"understands up to version {SCHEMA_VERSION}. Upgrade mmsearch (pip install -U mmsearch)."
        )
    if version < 1 or any(v not in MIGRATIONS for v in range(version + 1, SCHEMA_VERSION + 1)):
        raise CatalogError(
            f"The catalog at {engine.url!r} has schema version {version}, which cannot be migrated. "
            "Re-index into a new home."
        )


def _create_current(conn: Connection) -> None:
    Base.metadata.create_all(conn)
    create_keyword_index(conn, backfill=False)
    create_cjk_keyword_index(conn, backfill=False)
    _write_meta(conn, VERSION_KEY, str(SCHEMA_VERSION))
    _write_meta(conn, "collection_id", uuid.uuid4().hex)
    _write_meta(conn, "created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    log.info("created catalog schema version %d at %r", SCHEMA_VERSION, conn.engine.url)


def _write_meta(conn: Connection, key: str, value: str) -> None:
    table = Meta.__table__
    if conn.scalar(select(table.c.key).where(table.c.key == key)) is None:
        conn.execute(table.insert().values(key=key, value=value))
    else:
        conn.execute(table.update().where(table.c.key == key).values(value=value))


def create_v1_schema(engine: Engine) -> None:
    """Create the frozen version-1 baseline (the schema mmsearch first shipped).

    Kept so tests can prove every migration step on a real old database; never edit it.
    """
    md = MetaData()
    Table(
        "meta",
        md,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    Table(
        "folders",
        md,
        Column("id", Integer, primary_key=True),
        Column("path", Text, nullable=False, unique=True),
        Column("added_at", Float, nullable=False),
    )
    Table(
        "assets",
        md,
        Column("id", Integer, primary_key=True),
        Column("path", Text, nullable=False, unique=True),
        Column("folder_id", Integer, ForeignKey("folders.id", ondelete="SET NULL"), index=True),
        Column("size", BigInteger, nullable=False),
        Column("mtime_ns", BigInteger, nullable=False),
        Column("content_hash", String(128), nullable=False, index=True),
        Column("kind", String(16), nullable=False),
        Column("width", Integer),
        Column("height", Integer),
        Column("duration_s", Float),
        Column("taken_at", DateTime),
        Column("camera", Text),
        Column("gps_lat", Float),
        Column("gps_lon", Float),
        Column("indexed_at", Float, nullable=False),
    )
    Table(
        "items",
        md,
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column(
            "asset_id",
            Integer,
            ForeignKey("assets.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("kind", String(16), nullable=False),
        Column("start_s", Float),
        Column("end_s", Float),
        Column("text", Text),
        Column("vector", LargeBinary, nullable=False),
        Column("thumbnail", LargeBinary),
        sqlite_autoincrement=True,
    )
    with writer(engine).begin() as conn:
        md.create_all(conn)
        conn.execute(md.tables["meta"].insert().values(key=VERSION_KEY, value="1"))
