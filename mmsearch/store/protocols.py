"""The backend interfaces the read and write paths are written against.

A new backend (Milvus, pgvector, ...) is a module that implements one of these and registers a
name or URL scheme in `mmsearch.store.registry`; nothing else changes. The shared backend tests
(`tests/test_vector_stores.py`) run against every registered vector store.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorStore(Protocol):
    """Vectors under the catalog's item ids, searchable by inner product (cosine on unit vectors)."""

    dim: int

    @property
    def kind(self) -> str:
        """What structure serves searches (``flat``, ``hnsw``, ``milvus``...), for status pages."""

    @property
    def count(self) -> int:
        """Live vectors."""

    def ids(self) -> np.ndarray:
        """Every live id (int64): how the collection diffs the store against the catalog."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors under their ids (an upsert, so a replayed batch counts once)."""

    def remove(self, ids: np.ndarray) -> int:
        """Drop ids (unknown ones are ignored); returns how many were present."""

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` per query among ``allowed`` ids (all when None): ``(scores, ids)``, padded -1."""

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(present ids, vectors)`` in the order asked."""

    def flush(self, generation: int | None = None) -> None:
        """Make every change so far durable (a file store writes atomically; a server persists).

        ``generation`` is the catalog write generation the store is now level with."""


@runtime_checkable
class KeywordIndex(Protocol):
    """Exact-word search over passages (FTS5 on SQLite), best first as ``(item id, relevance)``."""

    def keyword_search(
        self, query: str, limit: int = 50, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]: ...
