"""A local catalog read through the standard library, for the questions every search asks.

Importing SQLAlchemy and building the ORM costs a cold ``mmsearch query`` 0.3-0.5 s on two cores,
more than the search itself. A search of a local SQLite catalog asks a handful of questions (the
encoder, the generation, the results' rows, their tags, whether the user gave feedback), so
`CatalogReader` answers those with ``sqlite3`` and opens the full `Catalog` (SQLAlchemy) the first
time anything else is asked, a write included, and from then on hands every other call to it.
Its answers are the `Catalog`'s, row for row (tests/test_catalog_reader.py compares them).

It serves only a catalog at the current schema version: an older one (to migrate), a newer one
(to refuse) or a missing one is left to the full `Catalog`, which says what to do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.catalog.guard import database_errors
from mmsearch.catalog.kinds import (
    COLLECTION_ID_KEY,
    ENCODER_WEIGHTS_KEY,
    GENERATION_KEY,
    PASSAGE_KINDS,
    PATCH_SHAPE_KEY,
    SCHEMA_VERSION,
    VERSION_KEY,
    chunks,
)
from mmsearch.catalog.records import (
    ASSET_INFO_FIELDS,
    AssetInfo,
    EncoderInfo,
    ItemRecord,
    parse_shape,
    patch_arrays,
)

if TYPE_CHECKING:
    from mmsearch.catalog.store import Catalog

BUSY_TIMEOUT_S = 30.0
"""How long a read waits for a writer's lock (as `mmsearch.catalog.db`'s connections do)."""



class NotServed(Exception):
    """This catalog is not one the reader serves (no file, another schema version)."""


class CatalogReader:
    """Read-only answers from a local SQLite catalog; the full `Catalog` for everything else."""

    is_postgresql = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.where = str(self.path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise NotServed(f"no catalog file at {self.path}")
        self._lock = threading.Lock()  # one connection, shared by a server's threads
        self._full: Catalog | None = None
        with database_errors(self.where):
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                version = self._meta_now(VERSION_KEY)
            except sqlite3.Error:
                self._conn.close()
                raise NotServed(f"{self.path} has no readable schema version") from None
        if version != str(SCHEMA_VERSION):
            self._conn.close()
            raise NotServed(f"{self.path} is at schema version {version}, not {SCHEMA_VERSION}")
        self.schema_version = SCHEMA_VERSION

    # ------------------------------------------------------------ the full catalog
    @property
    def full(self) -> Catalog:
        """The SQLAlchemy `Catalog` of the same file, opened on first use."""
        if self._full is None:
            from mmsearch.catalog.store import Catalog

            with self._lock:
                if self._full is None:
                    self._full = Catalog.open(self.path)
        return self._full

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_full", "_conn", "_lock"):
            raise AttributeError(name)
        return getattr(self.full, name)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        self._conn.close()
        if self._full is not None:
            self._full.close()

    def __enter__(self) -> CatalogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads
    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (a consistent snapshot across its statements), errors typed."""
        with self._lock, database_errors(self.where):
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _meta_now(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_meta(self, key: str) -> str | None:
        with self._read():
            return self._meta_now(key)

    def collection_id(self) -> str:
        return self.get_meta(COLLECTION_ID_KEY) or ""

    def generation(self) -> int:
        return int(self.get_meta(GENERATION_KEY) or 0)

    def encoder(self) -> EncoderInfo | None:
        with self._read() as conn:
            rows = dict(
                conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('encoder', 'encoder_dim')"
                ).fetchall()
            )
        if "encoder" not in rows:
            return None
        return EncoderInfo(rows["encoder"], int(rows.get("encoder_dim", 0)))

    def encoder_weights(self) -> str | None:
        return self.get_meta(ENCODER_WEIGHTS_KEY)

    def items_by_ids(self, ids: Iterable[int], *, with_thumbnails: bool = False) -> list[ItemRecord]:
        """Items joined with their assets, in the order asked; ids deleted meanwhile are skipped."""
        wanted = [int(i) for i in ids if int(i) >= 0]
        item_cols = ["items.id", "items.kind", "items.start_s", "items.end_s", "items.text"]
        if with_thumbnails:
            item_cols.append("items.thumbnail")
        n = len(item_cols)
        columns = ", ".join(item_cols + [f"assets.{name}" for name in ASSET_INFO_FIELDS])
        by_id: dict[int, ItemRecord] = {}
        with self._read() as conn:
            for chunk in chunks(sorted(set(wanted))):
                marks = ", ".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {columns} FROM items JOIN assets ON items.asset_id = assets.id "
                    f"WHERE items.id IN ({marks})",
                    chunk,
                ):
                    asset = AssetInfo(**_asset_values(row[n:]))
                    thumb = row[5] if with_thumbnails else None
                    by_id[row[0]] = ItemRecord(row[0], row[1], row[2], row[3], row[4], asset, thumb)
        return [by_id[i] for i in wanted if i in by_id]

    def passage_count(self, kinds: Sequence[str] = PASSAGE_KINDS) -> int:
        kinds = list(kinds)
        if not kinds:
            return 0
        with self._read() as conn:
            marks = ", ".join("?" * len(kinds))
            return int(conn.execute(f"SELECT count(*) FROM items WHERE kind IN ({marks})", kinds).fetchone()[0])

    def text_vector_ids(self) -> np.ndarray:
        with self._read() as conn:
            rows = conn.execute("SELECT id FROM items WHERE text_vector IS NOT NULL ORDER BY id")
            return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def tags_of(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        wanted = sorted({int(i) for i in ids})
        out: dict[int, list[tuple[str, float]]] = {}
        with self._read() as conn:
            for chunk in chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                for item_id, tag, score in conn.execute(
                    f"SELECT item_id, tag, score FROM item_tags WHERE item_id IN ({marks}) "
                    "ORDER BY item_id, score DESC",
                    chunk,
                ):
                    out.setdefault(int(item_id), []).append((tag, float(score)))
        return out

    def patch_shape(self) -> tuple[int, int] | None:
        return parse_shape(self.get_meta(PATCH_SHAPE_KEY))

    def patches_for(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have patch features, in the order asked; float16 (n, P, D)); others skipped."""
        wanted = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        with self._read() as conn:
            shape = parse_shape(self._meta_now(PATCH_SHAPE_KEY))
            for chunk in chunks(sorted(set(wanted)) if shape else []):
                marks = ", ".join("?" * len(chunk))
                found.update(
                    conn.execute(
                        f"SELECT item_id, data FROM item_patches WHERE item_id IN ({marks}) "
                        "AND data IS NOT NULL",
                        chunk,
                    ).fetchall()
                )
        order = [i for i in wanted if i in found]
        return patch_arrays(order, [found[i] for i in order], shape)

    def feedback_count(self, user: str) -> int:
        with self._read() as conn:
            return int(conn.execute('SELECT count(*) FROM feedback WHERE "user" = ?', (user,)).fetchone()[0])


def open_reader(path: Path) -> CatalogReader | None:
    """A reader for the SQLite catalog at ``path``, or None where only the full `Catalog` will do."""
    try:
        return CatalogReader(path)
    except NotServed:
        return None


def _asset_values(values: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(ASSET_INFO_FIELDS, values, strict=True))
    taken = out.get("taken_at")
    if isinstance(taken, str):  # SQLAlchemy stores SQLite DATETIME as ISO text
        out["taken_at"] = datetime.fromisoformat(taken)
    return out
