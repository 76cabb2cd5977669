"""Exact top-k by inner product, chunked so memory stays bounded: the ground truth for ANN tests.

Modelled on faiss ``contrib/exhaustive_search.py``: the corpus is scanned in blocks and a running
top-k per query is merged with each block's scores, so peak memory is about
``query_chunk * (chunk + k)`` scores whatever the corpus size.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CHUNK = 65_536
"""Corpus rows scored per block."""

DEFAULT_QUERY_CHUNK = 1_024
"""Queries scored per block."""


def exact_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    chunk: int = DEFAULT_CHUNK,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` corpus rows per query by inner product, exactly, in bounded memory.

    Returns ``(scores float32 (m, k), indices int64 (m, k))`` sorted best first; ties go to the
    lower index so results are deterministic. When the corpus has fewer than ``k`` rows the tail
    is padded with index -1 and score -inf.
    """
    q = _as_matrix(queries, "queries")
    c = _as_matrix(corpus, "corpus")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"queries have dim {q.shape[1]} but the corpus has dim {c.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk < 1 or query_chunk < 1:
        raise ValueError("chunk and query_chunk must be at least 1")
    m = q.shape[0]
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    indices = np.full((m, k), -1, dtype=np.int64)
    for q0 in range(0, m, query_chunk):
        q1 = min(m, q0 + query_chunk)
        scores[q0:q1], indices[q0:q1] = _topk_block(q[q0:q1], c, k, chunk)
    return scores, indices


def _topk_block(q: np.ndarray, c: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Scan the corpus in blocks for one block of queries, keeping a running top-k."""
    best_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    best_i = np.full((q.shape[0], k), -1, dtype=np.int64)
    for c0 in range(0, c.shape[0], chunk):
        block = q @ c[c0 : c0 + chunk].T
        block_i = np.broadcast_to(np.arange(c0, c0 + block.shape[1], dtype=np.int64), block.shape)
        best_s, best_i = merge_topk(
            np.concatenate([best_s, block], axis=1), np.concatenate([best_i, block_i], axis=1), k
        )
    return best_s, best_i


def merge_topk(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` best columns per row, sorted best first (ties: lower id; -1 ids last).

    Shared by the exact search and by the re-scoring step of the approximate backends.
    """
    m, n = scores.shape
    if n > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        ids = np.take_along_axis(ids, part, axis=1)
    # Sort by score descending, then id ascending with padding (-1) after real ids.
    id_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((id_key, -scores), axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    if n < k:
        scores = np.concatenate([scores, np.full((m, k - n), -np.inf, dtype=scores.dtype)], axis=1)
        ids = np.concatenate([ids, np.full((m, k - n), -1, dtype=ids.dtype)], axis=1)
    return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Accept (n, d) or a single (d,) vector as float32 without copying when possible."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    return arr
