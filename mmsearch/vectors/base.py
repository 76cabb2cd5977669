"""The small interface every vector backend implements (after txtai ``ann/base.py``).

Ids are the catalog's item ids (int64). Vectors are float32 and, with metric "ip", expected to
be L2-normalised so that inner product is cosine similarity. ``add`` is an upsert: an id that is
already present is replaced, so replaying a batch after a crash never counts a vector twice.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmsearch.errors import ConfigError, MissingDependencyError, VectorIndexError
from mmsearch.vectors import storage

log = logging.getLogger(__name__)

METRICS = ("ip",)
"""Supported metrics. "ip" on L2-normalised vectors is cosine, which is what CLIP is trained for."""

SUBSET_EXACT_MAX = 20_000
"""A filter that allows at most this many ids is answered by scoring exactly those vectors:
cheaper than steering an ANN structure around a sparse allow-list, and exact by construction."""


class VectorIndex(ABC):
    """An id-addressed set of vectors searchable by inner product."""

    kind: ClassVar[str]
    """The factory key of the backend ("flat", "ivf", "hnsw", "torch")."""

    exact: ClassVar[bool]
    """Whether search returns the true top-k (used by tests and by ``auto``)."""

    def __init__(self, dim: int, metric: str = "ip", *, encoder: str | None = None) -> None:
        if not isinstance(dim, int | np.integer) or dim < 1:
            raise ConfigError(f"Vector dimension must be a positive integer, got {dim!r}.")
        if metric not in METRICS:
            raise ConfigError(f"Unsupported metric {metric!r}; supported: {', '.join(METRICS)}.")
        self.dim = int(dim)
        self.metric = metric
        self.encoder = encoder
        self.created_at: str | None = None
        self.generation: str | None = None  # the save this object was loaded from or last wrote

    # ----------------------------------------------------------------- public API
    @property
    @abstractmethod
    def count(self) -> int:
        """Number of live vectors."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """All live ids (int64, any order); lets the engine diff the index against the catalog."""

    @property
    def factory(self) -> str:
        """A short description of the structure (a FAISS factory string where one applies)."""
        return self.kind

    def options(self) -> dict[str, Any]:
        """JSON-able constructor options, recorded in the sidecar."""
        return {}

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under their catalog ids, replacing any that already exist."""
        ids, vectors = _check_add(ids, vectors, self.dim)
        if not len(ids):
            return
        self._before_change()
        present = self._contains(ids)
        if present.any():
            self._remove(ids[present])
        self._add(ids, vectors)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (unknown ids are ignored); returns how many were removed."""
        ids = np.unique(_as_ids(ids))
        if not len(ids) or not self.count:
            return 0
        present = self._contains(ids)
        if not present.any():
            return 0
        self._before_change()
        self._remove(ids[present])
        return int(present.sum())

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` per query: ``(scores float32 (m, k), ids int64 (m, k))``, best first,
        padded with id -1 and score -inf when fewer than ``k`` vectors exist.

        ``allowed`` restricts the search to these ids (a filter pushed down): the answer is the
        best ``k`` among them, never a post-filtered shorter list. Unknown ids are ignored.
        """
        q = _as_queries(queries, self.dim)
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if not self.count or not len(q):
            return empty_result(len(q), k)
        if allowed is None:
            return self._search(q, k)
        ids = np.unique(_as_ids(allowed))
        ids = ids[self._contains(ids)] if len(ids) else ids
        if not len(ids):
            return empty_result(len(q), k)
        if len(ids) == self.count:
            return self._search(q, k)
        if len(ids) <= SUBSET_EXACT_MAX:
            return self._search_subset(q, k, ids)
        return self._search_filtered(q, k, ids)

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(present ids, their vectors)`` for the ids this index holds, in the order asked."""
        ids = _as_ids(ids)
        ids = ids[self._contains(ids)] if len(ids) else ids
        if not len(ids):
            return ids, np.empty((0, self.dim), np.float32)
        return ids, np.ascontiguousarray(self._vectors(ids), dtype=np.float32)

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        encoder: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> None:
        """Write the index and its sidecar atomically (see ``mmsearch.vectors.storage``).

        ``owner`` is recorded in the sidecar: which catalog (id and write generation) the index
        mirrors, so an index copied from another home is recognised and not trusted.
        """
        if encoder is not None:
            self.encoder = encoder
        generation = storage.new_generation()
        arrays = self._state()
        arrays["__generation__"] = np.array(generation)

        def write(f) -> None:
            np.savez(f, **arrays)

        storage.atomic_write(path, write)
        self.generation = generation
        now = storage.now_iso()
        self.created_at = self.created_at or now
        storage.write_sidecar(
            path,
            {
                "kind": self.kind,
                "factory": self.factory,
                "encoder": self.encoder,
                "dim": self.dim,
                "metric": self.metric,
                "count": self.count,
                "options": self.options(),
                "memory": self.memory(),
                "generation": generation,
                "created_at": self.created_at,
                "updated_at": now,
                **({"owner": owner} if owner else {}),
            },
        )
        log.debug("saved %s index with %d vectors to %s", self.kind, self.count, path)

    @classmethod
    def from_state(
        cls,
        dim: int,
        metric: str,
        options: dict[str, Any],
        arrays: dict[str, np.ndarray],
        path: Path | None = None,
    ) -> VectorIndex:
        """Rebuild an index from the arrays its ``_state`` wrote (``path``: the container they
        came from, for backends that keep files beside it)."""
        index = cls(dim, metric, **options)
        index._source_path = path
        index._load_state(arrays)
        return index

    _source_path: Path | None = None

    def memory(self) -> dict[str, int]:
        """Bytes held in process memory by the structure (``ram``), for status and benchmarks."""
        return {"ram": self._ram_bytes()}

    def _ram_bytes(self) -> int:
        return 4 * self.dim * self.count  # float32 vectors; backends with codes say better

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.factory} dim={self.dim} count={self.count}>"

    # --------------------------------------------------------- backend hooks
    def _before_change(self) -> None:
        """Called before any add or remove: backends whose structure may be a read-only view of
        their file (`read_faiss_index`) take their own copy here."""
        return None

    @abstractmethod
    def _contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these (unique) ids are present."""

    @abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ids that are known to be new."""

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> None:
        """Remove ids that are known to be present."""

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search a non-empty index."""

    @abstractmethod
    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of present ids, ``(n, dim)``, in the order given."""

    def _search_subset(
        self, q: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` among a small set of present ids."""
        from mmsearch.query.exact import exact_topk

        scores, rows = exact_topk(q, self._vectors(ids), min(k, len(ids)))
        found = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
        return pad_results(scores, found, k)

    def _search_filtered(
        self, q: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` among a large set of present ids; backends steer their structure with it."""
        return self._search_subset(q, k, ids)

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Arrays that fully describe the index, for the container file."""

    @abstractmethod
    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of ``_state``."""


BLOB_MEMBERS = frozenset({"faiss"})
"""Container members holding a serialized FAISS structure: read by FAISS straight from the file
(`StoredBlob`), not loaded as an array and copied again into FAISS (3x slower at cold start)."""


class StoredBlob:
    """Where a serialized FAISS structure lies in an index container (an uncompressed zip)."""

    def __init__(self, path: Path, offset: int, nbytes: int) -> None:
        self.path, self.offset, self.nbytes = path, offset, nbytes

    def map_index(self, faiss: Any) -> Any:
        """The structure with its vectors left in the file, memory-mapped (FAISS's zero-copy
        read): a 100,000 x 512 HNSW opens in 10 ms instead of 160 ms, and the page cache is
        shared between processes. Such a structure must not change (see `owned_faiss_index`)."""
        if not hasattr(faiss, "ZeroCopyIOReader"):  # faiss < 1.11
            return self.read_index(faiss)
        mapping = np.memmap(self.path, np.uint8, mode="r", offset=self.offset, shape=(self.nbytes,))
        index = faiss.read_index(
            faiss.ZeroCopyIOReader(faiss.swig_ptr(mapping), self.nbytes), faiss.IO_FLAG_MMAP_IFC
        )
        index.referenced_objects = [mapping]  # lives as long as the index; marks it a view
        return index

    def read_index(self, faiss: Any) -> Any:
        """Let FAISS read the structure from the file in large blocks (one copy, no array)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = [self.nbytes]

            def read(n: int) -> bytes:
                chunk = f.read(min(n, left[0]))
                left[0] -= len(chunk)
                return chunk

            return faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 24))


def read_faiss_index(stored: np.ndarray | StoredBlob) -> Any:
    """A FAISS structure from a container member (as `read_container` returned it); from a
    file, a view of it (`StoredBlob.map_index`) that `owned_faiss_index` copies before a change."""
    faiss = import_faiss()
    if isinstance(stored, StoredBlob):
        return stored.map_index(faiss)
    return faiss.deserialize_index(stored)


def owned_faiss_index(index: Any) -> Any:
    """``index`` itself, or a copy in its own memory when it is a view of a file: FAISS aborts
    the whole process when a viewed structure grows or shrinks."""
    held = getattr(index, "referenced_objects", None) or ()
    if not any(isinstance(obj, np.memmap) for obj in held):
        return index
    faiss = import_faiss()
    return faiss.deserialize_index(faiss.serialize_index(index))


def _stored_blob(path: Path, zf: Any, name: str) -> StoredBlob | None:
    """The member ``name``.npy as a `StoredBlob` when it is a stored (uncompressed) 1-d uint8
    array, else None (then it is read as an array, the older and always-correct way)."""
    import struct
    import zipfile

    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        data_at = f.tell()
    if len(shape) != 1 or fortran or dtype != np.uint8 or data_at - start + shape[0] != info.file_size:
        return None
    return StoredBlob(path, data_at, int(shape[0]))


def read_container(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an index container, turning any failure into a VectorIndexError: arrays in memory,
    FAISS structures (`BLOB_MEMBERS`) as `StoredBlob`s for `read_faiss_index`."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays: dict[str, Any] = {}
            for name in npz.files:
                blob = _stored_blob(p, npz.zip, name) if name in BLOB_MEMBERS else None
                arrays[name] = blob if blob is not None else npz[name]
            return arrays
    except FileNotFoundError:
        raise VectorIndexError(
            f"The vector index {p} is missing. Rebuild it from the catalog, or re-index."
        ) from None
    except Exception as exc:  # zip, npy and OS errors all mean the same thing here
        raise VectorIndexError(
            f"The vector index {p} is corrupt or unreadable ({exc}). Rebuild it from the catalog."
        ) from exc


def import_faiss():
    """Import faiss lazily, so ``import mmsearch.vectors`` stays cheap."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError(
            "Vector search needs FAISS, which is not installed. Install it with: pip install faiss-cpu"
        ) from exc
    return faiss


def pad_results(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalise backend output: float32/int64, score -inf where id is -1, padded to ``k`` columns."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.where(ids < 0, -np.inf, np.asarray(scores, dtype=np.float32)).astype(np.float32)
    missing = k - ids.shape[1]
    if missing > 0:
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
    return scores, ids


def empty_result(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The padded answer for queries against nothing."""
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


class IdMap:
    """Sorted id -> row lookup in two int64 arrays (16 bytes per id, no Python objects),
    so a million-vector index does not carry a million-entry dict."""

    def __init__(self, ids: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        ids = np.empty(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        rows = ids.copy() if rows is None else np.asarray(rows, np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids, self._rows = ids[order], rows[order]

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, rows); rows are meaningless where not found."""
        if not len(self._ids):
            return np.zeros(len(ids), bool), np.zeros(len(ids), np.int64)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return self._ids[pos] == ids, self._rows[pos]

    def insert(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Insert new (absent, unique) ids."""
        order = np.argsort(ids, kind="stable")
        ids, rows = ids[order], rows[order]
        pos = np.searchsorted(self._ids, ids)
        self._ids = np.insert(self._ids, pos, ids)
        self._rows = np.insert(self._rows, pos, rows)

    def delete(self, ids: np.ndarray) -> np.ndarray:
        """Delete present ids; returns their rows."""
        pos = np.searchsorted(self._ids, ids)
        rows = self._rows[pos]
        keep = np.ones(len(self._ids), bool)
        keep[pos] = False
        self._ids, self._rows = self._ids[keep], self._rows[keep]
        return rows


def _as_ids(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_add(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = _as_ids(ids)
    vecs = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if vecs.ndim == 1 and vecs.size == 0:
        vecs = vecs.reshape(0, dim)
    if vecs.ndim != 2 or vecs.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vecs.shape}")
    if len(ids) != len(vecs):
        raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
    if (ids < 0).any():
        raise ValueError("ids must be non-negative (-1 marks padding in results)")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids passed to add() must be unique")
    if not np.isfinite(vecs).all():
        raise ValueError("vectors contain NaN or infinity")
    return ids, vecs


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (m, {dim}), got {q.shape}")
    return q
