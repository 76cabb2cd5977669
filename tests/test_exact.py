"""Exact chunked top-k and the retrieval metrics."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.query.exact import exact_topk, merge_topk
from mmsearch.query.metrics import knn_recall, precision_at_k, recall_at_k


def brute(queries: np.ndarray, corpus: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ corpus.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("chunk,query_chunk", [(1, 1), (7, 3), (64, 1000), (10_000, 5)])
def test_exact_topk_matches_brute_force_for_any_chunking(chunk, query_chunk):
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(257, 16)).astype(np.float32)
    queries = rng.normal(size=(23, 16)).astype(np.float32)
    scores, idx = exact_topk(queries, corpus, 10, chunk=chunk, query_chunk=query_chunk)
    ref_s, ref_i = brute(queries, corpus, 10)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)


def test_exact_topk_pads_when_k_exceeds_corpus():
    corpus = np.eye(3, dtype=np.float32)
    scores, idx = exact_topk(np.array([0.1, 0.9, 0.5], np.float32), corpus, 5, chunk=2)
    np.testing.assert_array_equal(idx, [[1, 2, 0, -1, -1]])
    assert np.isneginf(scores[0, 3:]).all()
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.5, 0.1])


def test_exact_topk_ties_go_to_lower_index():
    corpus = np.ones((6, 2), np.float32)
    _, idx = exact_topk(np.ones((1, 2), np.float32), corpus, 4, chunk=4)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3]])


def test_exact_topk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        exact_topk(np.zeros((1, 3)), np.zeros((4, 2)), 1)
    with pytest.raises(ValueError, match="k must"):
        exact_topk(np.zeros((1, 2)), np.zeros((4, 2)), 0)
    with pytest.raises(ValueError, match="2-D"):
        exact_topk(np.zeros((1, 2, 2)), np.zeros((4, 2)), 1)


def test_exact_topk_empty_corpus():
    scores, idx = exact_topk(np.zeros((2, 4)), np.zeros((0, 4)), 3)
    assert (idx == -1).all() and np.isneginf(scores).all()


def test_merge_topk_keeps_padding_last():
    scores = np.array([[0.5, -np.inf, 0.9]], np.float32)
    ids = np.array([[4, -1, 2]])
    s, i = merge_topk(scores, ids, 3)
    np.testing.assert_array_equal(i, [[2, 4, -1]])


RETRIEVED = np.array([[1, 2, 3], [4, 5, 6], [7, 8, -1]])
RELEVANT = [{3}, {4, 6}, {9}]


def test_recall_at_k():
    assert recall_at_k(RETRIEVED, RELEVANT, [1, 2, 3]) == pytest.approx(
        {1: 1 / 3, 2: 1 / 3, 3: 2 / 3}
    )
    assert recall_at_k(RETRIEVED.tolist(), RELEVANT, 3) == pytest.approx({3: 2 / 3})


def test_precision_at_k():
    got = precision_at_k(RETRIEVED, RELEVANT, [1, 3])
    assert got == pytest.approx({1: 1 / 3, 3: (1 / 3 + 2 / 3 + 0) / 3})


def test_metrics_count_empty_relevance_as_miss_and_ignore_duplicates():
    assert recall_at_k([[1, 1]], [set()], 2) == {2: 0.0}
    assert precision_at_k([[1, 1]], [{1}], 2) == {2: 0.5}


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError):
        recall_at_k(RETRIEVED, RELEVANT[:2], 1)
    with pytest.raises(ValueError):
        precision_at_k(RETRIEVED, RELEVANT, 0)
    with pytest.raises(ValueError):
        knn_recall(RETRIEVED, RETRIEVED[:1], 3)


def test_knn_recall():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [4, 5, 6]])
    assert knn_recall(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert knn_recall(exact, exact, 2) == 1.0
