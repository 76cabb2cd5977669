"""The catalog tables at the current schema version (SQLAlchemy 2.0 declarative, typed).

File modification times are integer nanoseconds (``os.stat().st_mtime_ns``: floats lose
precision, and the scanner compares for equality); ``added_at`` and ``indexed_at`` are POSIX
seconds; ``taken_at`` is the camera's naive wall-clock time from EXIF, which rarely records a
time zone. Vectors are
stored as little-endian float32 bytes so the ANN index can be rebuilt without re-encoding.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 2
"""Bump with a step in ``migrations.MIGRATIONS`` whenever these tables change."""

ASSET_KINDS = ("image", "video", "audio", "text")
ITEM_KINDS = ("image", "keyframe", "transcript", "text")

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

    items: Mapped[list[Item]] = relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True
    )


class Item(Base):
    """One vector's worth of content; ``id`` is the vector id in the ANN index."""

    __tablename__ = "items"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(_ItemId, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float | None] = mapped_column(Float)
    end_s: Mapped[float | None] = mapped_column(Float)
    text: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)

    asset: Mapped[Asset] = relationship(back_populates="items")
