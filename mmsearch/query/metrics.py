"""Retrieval metrics as small pure functions, shared by the tests and the benchmarks.

Conventions (as in sentence-transformers ``InformationRetrievalEvaluator`` and faiss
``contrib/evaluation.py``): ``retrieved_ids`` is one ranked list per query, best first, and may be
padded with -1; ``relevant_ids_sets`` holds the set of correct ids per query. A query whose
relevant set is empty counts as a miss, so a broken ground truth cannot inflate a score.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np

Ranked = Sequence[Sequence[int]] | np.ndarray


def recall_at_k(
    retrieved_ids: Ranked,
    relevant_ids_sets: Sequence[Collection[int]],
    ks: int | Iterable[int] = (1, 5, 10),
) -> dict[int, float]:
    """Fraction of queries with at least one relevant id in their top ``k``, for each ``k``.

    This is the "success@k" / "hit rate" used for cross-modal retrieval benchmarks, where each
    caption usually has a single matching image.
    """
    return {
        k: float(np.mean(_per_query(retrieved_ids, relevant_ids_sets, k, _hit))) for k in _ks(ks)
    }


def precision_at_k(
    retrieved_ids: Ranked,
    relevant_ids_sets: Sequence[Collection[int]],
    ks: int | Iterable[int] = (1, 5, 10),
) -> dict[int, float]:
    """Mean over queries of (relevant ids in the top ``k``) / ``k``; padding counts as a miss."""
    return {
        k: float(np.mean(_per_query(retrieved_ids, relevant_ids_sets, k, _precision)))
        for k in _ks(ks)
    }


def knn_recall(approx_ids: Ranked, exact_ids: Ranked, k: int) -> float:
    """Mean overlap |approx top-k ∩ exact top-k| / |exact top-k|: how well an ANN index
    reproduces exact search (the measure the approximate backends are tested against)."""
    approx = _rows(approx_ids)
    exact = _rows(exact_ids)
    if len(approx) != len(exact):
        raise ValueError(f"{len(approx)} approximate result lists but {len(exact)} exact ones")
    if not approx:
        raise ValueError("knn_recall needs at least one query")
    total = 0.0
    for a, e in zip(approx, exact, strict=True):
        truth = {int(i) for i in e[:k] if i >= 0}
        if truth:
            total += len(truth.intersection(int(i) for i in a[:k])) / len(truth)
    return total / len(exact)


def _hit(top: list[int], relevant: Collection[int], k: int) -> float:
    return 1.0 if any(i in relevant for i in top) else 0.0


def _precision(top: list[int], relevant: Collection[int], k: int) -> float:
    return sum(1 for i in top if i in relevant) / k


def _per_query(retrieved: Ranked, relevant: Sequence[Collection[int]], k: int, fn) -> list[float]:
    rows = _rows(retrieved)
    if len(rows) != len(relevant):
        raise ValueError(f"{len(rows)} result lists but {len(relevant)} relevant sets")
    if not rows:
        raise ValueError("metrics need at least one query")
    out = []
    for row, rel in zip(rows, relevant, strict=True):
        # Deduplicate while keeping rank, so a repeated id cannot count twice.
        top = list(dict.fromkeys(int(i) for i in row[:k] if i >= 0))
        out.append(fn(top, rel, k))
    return out


def _rows(ids: Ranked) -> list[Sequence[int]]:
    if isinstance(ids, np.ndarray):
        if ids.ndim != 2:
            raise ValueError(f"result ids must be 2-D (queries, k), got shape {ids.shape}")
        return list(ids.tolist())
    return list(ids)


def _ks(ks: int | Iterable[int]) -> list[int]:
    out = [ks] if isinstance(ks, int) else [int(k) for k in ks]
    if not out or min(out) < 1:
        raise ValueError(f"every k must be at least 1, got {out}")
    return out
