"""The embedded vector store: an in-process index (FAISS flat / HNSW / IVF, or torch) in one file.

Persistence lives here, not in callers: `flush` writes the index and its sidecar atomically
(temp file, fsync, rename; see `mmsearch.vectors.storage`). The kind follows the collection:
``auto`` is exact flat search while that is fast enough and becomes HNSW when a flush finds the
store past `AUTO_EXACT_MAX_VECTORS` (the graph is built from the stored vectors, no catalog read).
A kind the user chose (``--index-kind``) is kept as chosen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mmsearch.errors import EncoderMismatchError, VectorIndexError
from mmsearch.vectors import VectorIndex, choose_kind, create_index, load_index, read_sidecar
from mmsearch.vectors.storage import write_sidecar

log = logging.getLogger(__name__)

REBUILD_BATCH = 65_536
"""Vectors copied per step when an index changes kind."""


class FileVectorStore:
    """A `VectorStore` over one `VectorIndex`, saved to ``path`` on `flush`."""

    def __init__(
        self, path: Path, index: VectorIndex, preference: str = "auto", owner: str | None = None
    ) -> None:
        self.path = Path(path)
        self.index = index
        self.preference = preference  # "auto" or a fixed backend kind
        self.owner = owner  # the id of the catalog this store mirrors (recorded in the sidecar)
        self.dirty = False  # changed since the last flush (or the file is behind the catalog)
        self.level_with: int | None = None  # the catalog generation the saved file mirrors

    # --------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: Path,
        dim: int,
        encoder: str,
        preference: str = "auto",
        expected: int = 0,
        owner: str | None = None,
    ) -> FileVectorStore:
        kind = choose_kind(expected) if preference == "auto" else preference
        return cls(path, create_index(kind, dim, "ip", encoder=encoder), preference, owner)

    @classmethod
    def load(
        cls, path: Path, encoder: str, preference: str = "auto", owner: str | None = None
    ) -> FileVectorStore | None:
        """The saved store, or None when the file is missing, unreadable, or another catalog's
        (then the collection rebuilds it from its own catalog).

        An index built with another encoder is refused: its vectors mean something else.
        """
        if not Path(path).exists():
            return None
        try:
            saved_owner = read_sidecar(path).get("owner") or {}
            recorded = saved_owner.get("collection")
            if owner is not None and recorded is not None and recorded != owner:
                log.warning(
                    "%s belongs to another collection (copied from another home?); rebuilding it "
                    "from this home's catalog",
                    path,
                )
                return None
            index = load_index(path, expect_encoder=encoder)
        except EncoderMismatchError:
            raise
        except VectorIndexError as exc:
            log.warning("rebuilding %s from the catalog: %s", path, exc)
            return None
        store = cls(path, index, preference, owner)
        if owner is not None and recorded == owner and isinstance(saved_owner.get("generation"), int):
            store.level_with = saved_owner["generation"]
        if preference not in ("auto", index.kind):
            store.convert(preference)
        return store

    # ----------------------------------------------------------- VectorStore
    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def kind(self) -> str:
        return self.index.kind

    @property
    def count(self) -> int:
        return self.index.count

    def ids(self) -> np.ndarray:
        return self.index.ids()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add(ids, vectors)
            self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        removed = self.index.remove(ids)
        self.dirty = self.dirty or bool(removed)
        return removed

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, allowed=allowed)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.index.vectors(ids)

    def flush(self, generation: int | None = None) -> None:
        """Apply the size policy, then write the file atomically (only when something changed).

        ``generation`` is the catalog's write generation the store's contents mirror: a reader
        that loads the file while the catalog is still at it skips the O(n) id comparison.
        """
        wanted = choose_kind(self.count) if self.preference == "auto" else self.preference
        if wanted != self.index.kind:
            self.convert(wanted)
        if not self.dirty and self.path.exists():
            if generation is not None and generation != self.level_with and self.owner:
                self._record_level(generation)  # the catalog moved on without touching vectors
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"collection": self.owner, "generation": generation} if self.owner else None
        self.index.save(self.path, owner=owner)
        self.dirty = False
        self.level_with = generation

    def _record_level(self, generation: int) -> None:
        """Rewrite the small sidecar alone (atomically): the saved index mirrors ``generation``."""
        info = read_sidecar(self.path)
        info["owner"] = {"collection": self.owner, "generation": generation}
        write_sidecar(self.path, info)
        self.level_with = generation

    # --------------------------------------------------------------- kinds
    def convert(self, kind: str) -> None:
        """Rebuild the structure as ``kind`` from the vectors it holds (no catalog, no encoder)."""
        old = self.index
        log.info("converting the %s index of %d vectors to %s", old.kind, old.count, kind)
        new = create_index(kind, old.dim, old.metric, expected_count=old.count, encoder=old.encoder)
        ids = np.sort(old.ids())
        for start in range(0, len(ids), REBUILD_BATCH):
            chunk, vecs = old.vectors(ids[start : start + REBUILD_BATCH])
            new.add(chunk, vecs)
        self.index = new
        self.dirty = True
