"""The catalog tables at the current schema version (SQLAlchemy 2.0 declarative, typed).

File modification times are integer nanoseconds (``os.stat().st_mtime_ns``: floats lose
precision, and the scanner compares for equality); ``added_at`` and ``indexed_at`` are POSIX
seconds; ``taken_at`` is the camera's naive wall-clock time from EXIF, which rarely records a
time zone. Vectors are
stored as little-endian float32 bytes so the ANN index can be rebuilt without re-encoding.

v3 adds ``items_fts``, an SQLite FTS5 index over ``items.text`` for keyword search (see
`create_keyword_index`); PostgreSQL gets a tsvector column and its GIN index instead (below). A
SQLite built without FTS5 gets no keyword index, and keyword search there finds nothing
(semantic search is unaffected).

v4 stores each passage's sentence-model vector (``items.text_vector``) beside its CLIP vector,
so the passage index is rebuilt from the catalog like the CLIP index, and gives every asset a
``date_s`` (when the picture was taken, else when the file was modified; POSIX seconds) that
date filters and ``--sort date`` compare. The ``meta`` row ``generation`` counts committed
writes, so a reader learns in one lookup whether anything changed.

v6 adds ``item_patches``: a picture item's compact patch features (float16, P x D, shape in the
``meta`` row ``patch_shape``), read by an image-text matching reranker so it never re-reads files.
A table of its own keeps the items rows small; rows go with their item (ON DELETE CASCADE).

v7 adds ``item_tags``: a picture's zero-shot tags with their share (`mmsearch.tags`), chosen from
stored vectors against the vocabulary recorded in the ``meta`` row ``tag_vocabulary``.

v9 adds ``items_cjk``, a second FTS5 index over ``items.text`` with the trigram tokenizer:
unicode61 keeps a run of Chinese characters as one token, so "会议室" never matched a passage
saying "会议室在三楼"; trigrams match any three characters inside it (`keyword_search`).

On PostgreSQL the same two indexes are GIN indexes on ``items`` itself (`create_keyword_index`,
`create_cjk_keyword_index`): one over ``items.text_tsv``, a stored column PostgreSQL generates as
``to_tsvector('english', text)`` (words, stemmed; searched with ``@@`` and ranked with
``ts_rank``; until v10 the index was over that expression, and ranking parsed each matching
passage again), one over ``text`` with pg_trgm's ``gin_trgm_ops`` (which serves
``LIKE '%会议室%'`` for Chinese and Japanese runs). PostgreSQL keeps them in step with the rows
itself, so no triggers are needed.

v8 adds ``assets.ocr_engine``: which OCR engine read the words of a picture (NULL: not read), so
turning OCR on reads the pictures indexed without it. The words are ``ocr`` passage items.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mmsearch.catalog.kinds import ASSET_KINDS, ITEM_KINDS, PASSAGE_KINDS, SCHEMA_VERSION  # noqa: F401

log = logging.getLogger(__name__)

# SQLite only gives AUTOINCREMENT (never reissue an id) to an INTEGER PRIMARY KEY column.
_ItemId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the collection: schema version, encoder name and dim, created_at."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Folder(Base):
    """A root the user asked to index; scans diff each root against its assets."""

    __tablename__ = "folders"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    added_at: Mapped[float] = mapped_column(Float)


class Asset(Base):
    """One file on disk."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute
    folder_id: Mapped[int | None] = mapped_column(
        ForeignKey("folders.id", ondelete="SET NULL"), index=True
    )
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(128), index=True)  # finds moved files
    kind: Mapped[str] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    camera: Mapped[str | None] = mapped_column(Text)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    # v2: which speech backend wrote the transcript, so a better one can trigger re-transcription.
    transcript_backend: Mapped[str | None] = mapped_column(String(64))
    indexed_at: Mapped[float] = mapped_column(Float)
    # v4: taken_at as POSIX seconds (read as local time), else the file's mtime; date filters.
    date_s: Mapped[float | None] = mapped_column(Float, index=True)
    # v8: the OCR engine that read the picture's words (NULL: not read).
    ocr_engine: Mapped[str | None] = mapped_column(String(64))

    items: Mapped[list[Item]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True
    )


class Item(Base):
    """One vector's worth of content; ``id`` is the vector id in the ANN index."""

    __tablename__ = "items"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(_ItemId, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # v3: passage lookups by kind
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)
    # v4: the sentence model's vector of `text` (passages only; NULL until embedded).
    text_vector: Mapped[bytes | None] = mapped_column(LargeBinary)

    asset: Mapped[Asset] = relationship(back_populates="items")


class ItemPatches(Base):
    """v6: one picture item's patch features, float16 little-endian bytes of shape P x D."""

    __tablename__ = "item_patches"

    item_id: Mapped[int] = mapped_column(
        _ItemId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ItemTag(Base):
    """v7: one zero-shot tag of one picture item, with its share of its group (0..1)."""

    __tablename__ = "item_tags"

    item_id: Mapped[int] = mapped_column(
        _ItemId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    """v5: one user's judgement of one result, tied to the file's bytes (content hash) and the
    moment within it, so it survives moves, renames and re-indexing of unchanged files."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    content_hash: Mapped[str] = mapped_column(String(128), index=True)
    item_kind: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float | None] = mapped_column(Float)  # the moment, for keyframes and windows
    label: Mapped[int] = mapped_column(Integer)  # +1 good, -1 bad
    query: Mapped[str | None] = mapped_column(Text)  # what was searched for, when given
    created_at: Mapped[float] = mapped_column(Float)


KEYWORD_TABLE = "items_fts"
"""The FTS5 table over ``items.text`` (v3)."""

# External content (content='items'): the text is stored once, in items; FTS5 keeps only its
# inverted index. The triggers update it in the same transaction as every item write, so keyword
# search sees exactly the committed items. They run for every item, including the NULL text of
# images (FTS5 indexes nothing for NULL), so the index matches what 'rebuild' would produce.
# The porter stemmer over unicode61 matches "circles" to "circle"; exact words match as well.
def _fts_ddl(table: str, trigger: str, tokenize: str) -> tuple[str, ...]:
    """An external-content FTS5 table over ``items.text`` and the triggers that keep it level."""
    return (
        f"""CREATE VIRTUAL TABLE {table} USING fts5(
            text, content='items', content_rowid='id', tokenize='{tokenize}')""",
        f"""CREATE TRIGGER {trigger}_insert AFTER INSERT ON items BEGIN
            INSERT INTO {table}(rowid, text) VALUES (new.id, new.text);
        END""",
        f"""CREATE TRIGGER {trigger}_delete AFTER DELETE ON items BEGIN
            INSERT INTO {table}({table}, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
        f"""CREATE TRIGGER {trigger}_update AFTER UPDATE OF id, text ON items BEGIN
            INSERT INTO {table}({table}, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO {table}(rowid, text) VALUES (new.id, new.text);
        END""",
    )


_KEYWORD_DDL = _fts_ddl(KEYWORD_TABLE, "items_fts", "porter unicode61 remove_diacritics 2")

CJK_KEYWORD_TABLE = "items_cjk"
"""The FTS5 trigram table over ``items.text`` (v9): substring search for Chinese and Japanese."""

_CJK_KEYWORD_DDL = _fts_ddl(CJK_KEYWORD_TABLE, "items_cjk", "trigram")


PG_KEYWORD_INDEX = "ix_items_text_tsv"
"""PostgreSQL: the GIN index over `PG_TSVECTOR_COLUMN` (partial: passages with text)."""

PG_CJK_INDEX = "ix_items_text_trgm"
"""PostgreSQL: the pg_trgm GIN index over ``items.text`` (LIKE for Chinese and Japanese runs)."""

PG_TS_CONFIG = "english"
"""The text search configuration: the Snowball English stemmer, like FTS5's porter tokenizer."""

PG_TSVECTOR_COLUMN = "text_tsv"
"""PostgreSQL: ``items.text_tsv`` (v10), a passage's stemmed words as a ``tsvector`` column that
PostgreSQL generates from ``text`` and stores, so ranking a match reads it instead of parsing
the passage again (as the expression index of v3-v9 made it do for every matching row)."""

PG_TSVECTOR = f"items.{PG_TSVECTOR_COLUMN}"
"""What keyword queries match (``@@``) and rank (``ts_rank``) on PostgreSQL."""


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _create_pg_keyword_index(conn: Connection) -> bool:
    """The generated tsvector column (filled for every existing row as it is added) and its GIN
    index. The ORM does not map the column: PostgreSQL writes it, and only keyword search reads it."""
    conn.exec_driver_sql(
        f"ALTER TABLE items ADD COLUMN IF NOT EXISTS {PG_TSVECTOR_COLUMN} tsvector GENERATED "
        f"ALWAYS AS (to_tsvector('{PG_TS_CONFIG}'::regconfig, text)) STORED"
    )
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {PG_KEYWORD_INDEX} ON items "
        f"USING GIN ({PG_TSVECTOR_COLUMN}) WHERE text IS NOT NULL"
    )
    return True


def _create_pg_cjk_index(conn: Connection) -> bool:
    """pg_trgm (PostgreSQL contrib, a trusted extension) and its GIN index; False without it.

    Without the extension Chinese keyword search still works (LIKE scans the passages)."""
    from sqlalchemy.exc import DBAPIError

    available = conn.exec_driver_sql(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"
    ).scalar()
    if not available:
        log.info("no trigram index: the pg_trgm extension is not installed on the server")
        return False
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {PG_CJK_INDEX} ON items "
                "USING GIN (text gin_trgm_ops) WHERE text IS NOT NULL"
            )
    except DBAPIError as exc:  # e.g. no CREATE privilege on the database
        log.warning("no trigram index (Chinese keyword search scans instead): %s", exc.orig)
        return False
    return True


def pg_keyword_indexes(conn: Connection) -> set[str]:
    """Names of the keyword indexes present on ``items`` in the current schema (PostgreSQL)."""
    rows = conn.exec_driver_sql(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'items'"
    ).scalars()
    return set(rows) & {PG_KEYWORD_INDEX, PG_CJK_INDEX}


def create_cjk_keyword_index(conn: Connection, *, backfill: bool) -> bool:
    """The trigram table and its triggers (SQLite 3.34+ with FTS5), or pg_trgm's GIN index on
    PostgreSQL; False where unsupported."""
    if _is_pg(conn):
        return _create_pg_cjk_index(conn)
    if not sqlite_has_fts5(conn):
        return False
    major, minor, *_ = (int(p) for p in conn.exec_driver_sql("SELECT sqlite_version()").scalar().split("."))
    if (major, minor) < (3, 34):
        log.info("no Chinese keyword index: the trigram tokenizer needs SQLite 3.34 or later")
        return False
    for statement in _CJK_KEYWORD_DDL:
        conn.exec_driver_sql(statement)
    if backfill:
        conn.exec_driver_sql(f"INSERT INTO {CJK_KEYWORD_TABLE}({CJK_KEYWORD_TABLE}) VALUES ('rebuild')")
    return True


def sqlite_has_fts5(conn: Connection) -> bool:
    """Whether this SQLite was built with FTS5 (every CPython build we know of is); without it a
    SQLite catalog has no keyword index, and keyword search finds nothing."""
    if conn.dialect.name != "sqlite":
        return False
    return bool(conn.exec_driver_sql("SELECT sqlite_compileoption_used('ENABLE_FTS5')").scalar())


def create_keyword_index(conn: Connection, *, backfill: bool) -> bool:
    """Create the FTS5 table and its triggers (and index existing items), or the tsvector GIN
    index on PostgreSQL; False where unsupported."""
    if _is_pg(conn):
        return _create_pg_keyword_index(conn)
    if not sqlite_has_fts5(conn):
        log.info("no keyword index on %s: it needs SQLite with FTS5", conn.dialect.name)
        return False
    for statement in _KEYWORD_DDL:
        conn.exec_driver_sql(statement)
    if backfill:
        conn.exec_driver_sql(f"INSERT INTO {KEYWORD_TABLE}({KEYWORD_TABLE}) VALUES ('rebuild')")
    return True
