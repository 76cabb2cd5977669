"""Full-precision copies of an index's rows in a memory-mapped float16 file beside the index.

An approximate index with lossy codes (IVF-PQ) re-scores its top candidates exactly; the exact
vectors are here, not in RAM and not in the catalog: ``<index>.<token>.f16`` is a headerless
``(rows, dim)`` float16 array, row ``r`` holding the vector of the index's row ``r``. The
operating system pages in the few rows a query re-scores (``rescore_factor * k`` of them).

Crash safety follows the index container (see ``mmsearch.vectors.storage``):
- the file only grows: rows added since the last save wait in RAM and are appended (then
  fsync'd) *before* the container that counts them is written, so a saved container never
  counts a row the file lacks; a tail a crash left past the saved count is cut off by the next
  save, and no saved container refers to it;
- rows are never rewritten in place, so a process that mapped the file keeps reading what it
  loaded. When the rows are renumbered (compaction, retraining) or another process saved the
  index since this one loaded it, the save writes a fresh file under a new token (temp file,
  fsync, rename) and removes the old one after the container names the new one (a process that
  still maps it keeps its pages).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DTYPE = np.dtype(np.float16)
COPY_ROWS = 65_536
"""Rows copied per step when a fresh file is written (bounds the RAM a rewrite takes)."""

SCORE_ROWS = 2048
"""Rows scored per step by ``Float16Rows.scores`` (2 MB at 512-d: stays in cache)."""


class Float16Rows:
    """Row-addressed float16 vectors: the first ``saved`` rows memory-mapped from a file, the
    rows added since in RAM until the next ``persist``."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.path: Path | None = None  # the file the saved rows are in
        self.saved = 0  # rows in the file that a saved container counts
        self._map: np.ndarray | None = None  # read-only memmap of the saved rows
        self._pending = np.empty((0, self.dim), DTYPE)  # rows saved+0.. in RAM (capacity-doubled)
        self._npending = 0

    # ------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self.saved + self._npending

    @property
    def pending(self) -> int:
        """Rows held in RAM until the next save."""
        return self._npending

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of ``rows`` (any shape), shaped ``rows.shape + (dim,)``."""
        rows = np.asarray(rows, np.int64)
        flat = rows.reshape(-1)
        out = np.empty((len(flat), self.dim), np.float32)
        in_file = flat < self.saved
        if in_file.any():
            wanted = flat[in_file]
            order = np.argsort(wanted, kind="stable")  # page in the file in order
            got = np.empty((len(wanted), self.dim), np.float32)
            got[order] = self._map[wanted[order]]
            out[in_file] = got
        if not in_file.all():
            out[~in_file] = self._pending[flat[~in_file] - self.saved]
        return out.reshape(*rows.shape, self.dim)

    def scores(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of one float32 ``query`` with ``rows`` (1-d), straight from the float16
        rows, ``SCORE_ROWS`` at a time in file order: FAISS's SIMD float16 kernel scores them
        without a float32 copy (numpy's float16 conversion alone takes ~3.5 ms per 4,000 rows of
        512-d; this takes about 1)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty(len(rows), np.float32)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")  # page in the file in order, pending rows last
        ordered = rows[order]
        split = int(np.searchsorted(ordered, self.saved))
        scorer = _Float16Scorer(self.dim, query)
        for start in range(0, len(rows), SCORE_ROWS):
            stop = min(start + SCORE_ROWS, len(rows))
            part = ordered[start:stop]
            if stop <= split:
                half = np.take(self._map, part, axis=0)
            elif start >= split:
                half = self._pending[part - self.saved]
            else:
                half = np.concatenate(
                    [np.take(self._map, part[: split - start], axis=0),
                     self._pending[part[split - start :] - self.saved]]
                )  # fmt: skip
            out[order[start:stop]] = scorer(half)
        return out

    def chunks(self, rows: np.ndarray, size: int = COPY_ROWS):
        """float32 vectors of ``rows`` (1-d), ``size`` at a time: a full scan in bounded RAM."""
        for start in range(0, len(rows), size):
            yield self.gather(rows[start : start + size])

    # ------------------------------------------------------------- writing
    def append(self, vectors: np.ndarray) -> None:
        """Add rows at the end (held in RAM until ``persist``)."""
        n = len(vectors)
        needed = self._npending + n
        if len(self._pending) < needed:
            grown = np.empty((max(needed, 2 * len(self._pending), 1024), self.dim), DTYPE)
            grown[: self._npending] = self._pending[: self._npending]
            self._pending = grown
        self._pending[self._npending : needed] = vectors
        self._npending = needed

    def keep(self, live_rows: np.ndarray) -> None:
        """Renumber: keep only ``live_rows`` (sorted), as rows 0..n-1. The kept rows move to RAM
        and the next ``persist`` writes them to a fresh file (the old one is never rewritten)."""
        kept = np.empty((len(live_rows), self.dim), DTYPE)
        for start in range(0, len(live_rows), COPY_ROWS):
            chunk = live_rows[start : start + COPY_ROWS]
            kept[start : start + len(chunk)] = self.gather(chunk)
        self._map, self.path, self.saved = None, None, 0  # never truncate the shared file
        self._pending, self._npending = kept, len(kept)

    def persist(self, index_path: Path, *, append_in_place: bool) -> Path | None:
        """Make every row durable beside the index at ``index_path``; returns the file (None when
        there are no rows). Call before writing the container that counts them."""
        index_path = Path(index_path)
        if not len(self):
            self._map, self.path, self.saved = None, None, 0
            return None
        if append_in_place and self._belongs_to(index_path) and self.path.exists():
            self._append_to_file()
        else:
            self._write_fresh(index_path)
        self.saved += self._npending
        self._pending, self._npending = np.empty((0, self.dim), DTYPE), 0
        self._remap()
        return self.path

    def open(self, path: Path, rows: int) -> None:
        """Map the first ``rows`` rows of ``path`` (a file shorter than that is corrupt)."""
        path = Path(path)
        size = path.stat().st_size if path.exists() else -1
        if size < rows * self.dim * DTYPE.itemsize:
            raise ValueError(
                f"the row file {path} holds {max(size, 0)} bytes, fewer than the {rows} rows the "
                "index counts"
            )
        self.path, self.saved = path, int(rows)
        self._pending, self._npending = np.empty((0, self.dim), DTYPE), 0
        self._remap()

    def remove_others(self, index_path: Path) -> None:
        """Delete row files of this index other than the current one (old generations, or files a
        crash left before their container was written). Only under the writer lock."""
        index_path = Path(index_path)
        for other in index_path.parent.glob(f"{index_path.name}.*.f16"):
            if self.path is None or other.name != self.path.name:
                with contextlib.suppress(OSError):
                    other.unlink()
                    log.debug("removed the old row file %s", other)

    def nbytes_ram(self) -> int:
        """Bytes this object holds in process memory (the mapped file is page cache)."""
        return int(self._pending.nbytes)

    def nbytes_disk(self) -> int:
        return self.saved * self.dim * DTYPE.itemsize

    # ------------------------------------------------------------- helpers
    def _belongs_to(self, index_path: Path) -> bool:
        return (
            self.path is not None
            and self.path.parent == index_path.parent
            and self.path.name.startswith(index_path.name + ".")
        )

    def _append_to_file(self) -> None:
        rowbytes = self.dim * DTYPE.itemsize
        with open(self.path, "r+b") as f:
            f.truncate(self.saved * rowbytes)  # a tail no saved container counts (a crash's)
            f.seek(self.saved * rowbytes)
            f.write(self._pending[: self._npending].tobytes())
            f.flush()
            os.fsync(f.fileno())

    def _write_fresh(self, index_path: Path) -> None:
        target = index_path.with_name(f"{index_path.name}.{uuid.uuid4().hex[:12]}.f16")
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                for start in range(0, self.saved, COPY_ROWS):
                    f.write(np.asarray(self._map[start : start + COPY_ROWS]).tobytes())
                f.write(self._pending[: self._npending].tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(target.parent)
        self.path = target

    def _remap(self) -> None:
        self._map = (
            np.memmap(self.path, dtype=DTYPE, mode="r", shape=(self.saved, self.dim))
            if self.saved
            else None
        )


class _Float16Scorer:
    """``half @ query`` for float16 rows ``half`` (n, dim) and one float32 ``query`` (dim,), by a
    FAISS float16 flat index over the rows (reused between blocks: its buffer is kept)."""

    def __init__(self, dim: int, query: np.ndarray) -> None:
        from mmsearch.vectors.base import import_faiss

        faiss = import_faiss()
        self.flat = faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        self.query = np.ascontiguousarray(query, np.float32).reshape(1, dim)

    def __call__(self, half: np.ndarray) -> np.ndarray:
        n = len(half)
        self.flat.reset()
        self.flat.add_sa_codes(np.ascontiguousarray(half, DTYPE).view(np.uint8).reshape(n, -1))
        top, order = self.flat.search(self.query, n)
        out = np.empty(n, np.float32)
        out[order[0]] = top[0]
        return out


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
