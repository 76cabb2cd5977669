"""A collection home on disk: the catalog (truth) and the vector index (derived, rebuildable).

Layout of a home:

    <home>/catalog.db          SQLite catalog: folders, assets, items with full-precision vectors
    <home>/index/vectors.idx   the ANN index, written atomically
    <home>/index/vectors.idx.json   its sidecar (encoder, dim, metric, kind, count, version)

The catalog is committed first and the index saved after, so a crash can leave the index behind
the catalog but never ahead of what a reader can resolve. `open_index` loads the saved index
and brings it level with the catalog (adds missing vectors from the catalog, drops ids the
catalog no longer has), so every search sees exactly the committed catalog.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsearch.catalog import Catalog
from mmsearch.errors import ConfigError, EncoderMismatchError, VectorIndexError
from mmsearch.vectors import VectorIndex, choose_kind, create_index, load_index, read_sidecar

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.db"
INDEX_FILE = "index/vectors.idx"
WRITER_LOCK_FILE = "writer.lock"


@dataclass(frozen=True)
class SyncReport:
    """How far the saved index was behind the catalog."""

    added: int
    removed: int


class Collection:
    """One home: opens the catalog, binds the encoder, and keeps the index level with the catalog."""

    def __init__(self, home: Path, *, create: bool = True, catalog_url: str | None = None) -> None:
        self.home = Path(home)
        if not create and catalog_url is None and not (self.home / CATALOG_FILE).exists():
            raise ConfigError(
                f"No mmsearch collection at {self.home}. Index a folder first: "
                f"mmsearch index PATH (or pass --home / set MMSEARCH_HOME to another home)."
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog.open(catalog_url or (self.home / CATALOG_FILE))

    @property
    def index_path(self) -> Path:
        return self.home / INDEX_FILE

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the home's single-writer lock; another `index` run on the same home is refused.

        An OS file lock (flock) is released by the kernel when its process dies, so a killed run
        never leaves the home locked.
        """
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unguarded, as before
            yield
            return
        path = self.home / WRITER_LOCK_FILE
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"Another `mmsearch index` ({holder}) is writing to {self.home}. Wait for it to "
                    f"finish, or index into another home (--home PATH). Searching works meanwhile."
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ encoder binding

    def encoder_name(self) -> str | None:
        """The encoder this collection was built with, or None for a new, empty collection."""
        info = self.catalog.encoder()
        return info.name if info else None

    def bind_encoder(self, name: str, dim: int) -> None:
        """Record the encoder on first use; refuse another one later (one encoder per collection)."""
        self.catalog.bind_encoder(name, dim)

    def check_encoder(self, name: str) -> None:
        bound = self.encoder_name()
        if bound is not None and bound != name:
            raise EncoderMismatchError(
                f"This collection ({self.home}) was indexed with the encoder '{bound}', not '{name}'. "
                f"Use --model {bound}, or index into a new home (--home PATH) to use '{name}'."
            )

    # ------------------------------------------------------------------ index

    def open_index(self, kind: str = "auto") -> VectorIndex:
        """The saved index brought level with the catalog, or a new one built from the catalog."""
        return self.open_index_reporting(kind)[0]

    def open_index_reporting(self, kind: str = "auto") -> tuple[VectorIndex, bool]:
        """`open_index`, plus whether the saved file was missing, unreadable or behind the catalog.

        An index run re-saves such a file at its end even when it changes nothing, so later opens
        need no sync.
        """
        info = self.catalog.encoder()
        if info is None:
            raise ConfigError(f"The collection at {self.home} is empty: index a folder first.")
        index = None
        if self.index_path.exists():
            try:
                index = load_index(self.index_path, expect_encoder=info.name)
            except EncoderMismatchError:
                raise
            except VectorIndexError as exc:
                log.warning("rebuilding the vector index from the catalog: %s", exc)
        if index is None or (kind not in ("auto", index.kind)):
            return self.rebuild_index(kind, save=False), True
        report = self.sync_index(index)
        return index, bool(report.added or report.removed)

    def new_index(self, kind: str = "auto", expected: int | None = None) -> VectorIndex:
        info = self.catalog.encoder()
        if info is None:
            raise ConfigError(f"The collection at {self.home} has no encoder yet.")
        if kind == "auto":
            kind = choose_kind(expected)
        return create_index(kind, info.dim, "ip", expected_count=expected, encoder=info.name)

    def sync_index(self, index: VectorIndex) -> SyncReport:
        """Add vectors the catalog has and the index lacks; drop ids the catalog no longer has."""
        catalog_ids = self.catalog.item_ids()
        index_ids = index.ids()
        missing = np.setdiff1d(catalog_ids, index_ids, assume_unique=True)
        extra = np.setdiff1d(index_ids, catalog_ids, assume_unique=True)
        if len(extra):
            index.remove(extra)
        for start in range(0, len(missing), 8192):
            ids, vectors = self.catalog.vectors_for(missing[start : start + 8192].tolist())
            index.add(ids, vectors)
        if len(missing) or len(extra):
            log.info("index synced with catalog: +%d -%d", len(missing), len(extra))
        return SyncReport(int(len(missing)), int(len(extra)))

    def rebuild_index(self, kind: str = "auto", *, save: bool = True) -> VectorIndex:
        """Build a fresh index from the catalog's stored vectors (no re-encoding)."""
        count = int(sum(self.catalog.item_counts().values()))
        index = self.new_index(kind, expected=count)
        for ids, vectors in self.catalog.iter_vectors():
            index.add(ids, vectors)
        if save:
            self.save_index(index)
        return index

    def save_index(self, index: VectorIndex) -> None:
        """Write the index and its sidecar atomically under the home."""
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        index.save(self.index_path, encoder=self.encoder_name())

    def index_info(self) -> dict | None:
        """The saved index's sidecar, for status pages."""
        if not self.index_path.exists():
            return None
        try:
            return read_sidecar(self.index_path)
        except VectorIndexError:
            return None

    def disk_bytes(self) -> int:
        """Bytes used by the home (catalog, WAL, index files)."""
        total = 0
        for root, _dirs, files in os.walk(self.home):
            for name in files:
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass
        return total
