"""Reciprocal-rank fusion as a pure function: the formula, weights, ties, missing lists, coverage."""

from __future__ import annotations

import pytest

from mmsearch.query.fusion import RRF_K, Ranking, ranks_of, reciprocal_rank_fusion


def ids(fused) -> list[int]:
    return [f.id for f in fused]


def test_plain_rrf_matches_the_formula():
    fused = reciprocal_rank_fusion({"a": [1, 2, 3], "b": [3, 1]}, normalise=False)
    want = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61}
    assert ids(fused) == [1, 3, 2]
    for f in fused:
        assert f.score == pytest.approx(want[f.id])
    assert fused[0].ranks == {"a": 1, "b": 2} and fused[2].ranks == {"a": 2}


def test_agreement_beats_one_rankers_first_place():
    # k=60 damps the head: second place in both lists beats first place in one.
    fused = reciprocal_rank_fusion({"a": [7, 5], "b": [8, 5]})
    assert ids(fused)[0] == 5


def test_normalised_scores_lie_in_unit_interval():
    fused = reciprocal_rank_fusion({"a": [1, 2], "b": [1, 2]})
    assert fused[0].score == pytest.approx(1.0)  # first everywhere
    assert all(0 < f.score <= 1 for f in fused)
    raw = reciprocal_rank_fusion({"a": [1, 2], "b": [1, 2]}, normalise=False)
    assert [f.score / raw[0].score for f in raw] == pytest.approx([f.score for f in fused])


def test_weights_change_the_winner():
    lists = {"clip": [1, 2], "text": [2, 1]}
    assert ids(reciprocal_rank_fusion(lists, weights={"clip": 2.0}))[0] == 1
    assert ids(reciprocal_rank_fusion(lists, weights={"text": 2.0}))[0] == 2
    zero = reciprocal_rank_fusion({"a": [1], "b": [2]}, weights={"b": 0.0})
    assert ids(zero) == [1]  # an item only a zero-weight ranker returned is dropped
    with pytest.raises(ValueError, match="not in the fusion"):
        reciprocal_rank_fusion(lists, weights={"keyword": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        reciprocal_rank_fusion(lists, weights={"clip": -1.0})


def test_missing_and_empty_lists():
    assert reciprocal_rank_fusion({}) == []
    assert reciprocal_rank_fusion({"a": [], "b": []}) == []
    fused = reciprocal_rank_fusion({"a": [4, 5], "b": []})
    assert ids(fused) == [4, 5] and fused[0].ranks == {"a": 1}


def test_equal_input_scores_share_a_rank():
    assert ranks_of(Ranking([1, 2, 3, 4], [0.9, 0.5, 0.5, 0.1])) == {1: 1, 2: 2, 3: 2, 4: 4}
    assert ranks_of([3, 3, 9]) == {3: 1, 9: 3}  # a repeated id keeps its best rank
    with pytest.raises(ValueError, match="scores"):
        ranks_of(Ranking([1, 2], [0.5]))
    # Tied CLIP scores must not decide between 2 and 3; the other ranker does.
    fused = reciprocal_rank_fusion(
        {"clip": Ranking([2, 3], [0.4, 0.4]), "text": Ranking([3, 2], [0.9, 0.8])}
    )
    assert ids(fused) == [3, 2]


def test_output_ties_are_deterministic():
    # Same score: the item in more lists first, then the best single rank, then first seen.
    fused = reciprocal_rank_fusion({"a": [1, 2], "b": [2, 1]})
    assert fused[0].score == fused[1].score and ids(fused) == [1, 2]
    fused = reciprocal_rank_fusion({"a": [10], "b": [20]})
    assert ids(fused) == [10, 20]
    assert ids(reciprocal_rank_fusion({"b": [20], "a": [10]})) == [20, 10]


def test_coverage_compares_items_that_different_rankers_can_judge():
    # A photo (only CLIP can judge it) ranked first by CLIP scores like a passage ranked
    # first by every ranker that can judge passages; a plain sum would favour the passage.
    lists = {"clip": [100, 1], "text": [1, 2], "keyword": [1]}
    photos = {100}

    def covers(item):
        return ["clip"] if item in photos else ["clip", "text", "keyword"]

    plain = reciprocal_rank_fusion(lists)
    assert ids(plain)[0] == 1  # summing: the passage wins on coverage alone
    fused = {f.id: f for f in reciprocal_rank_fusion(lists, covers=covers)}
    assert fused[100].score == pytest.approx(1.0)
    # The passage is second for CLIP: mean of 1/62, 1/61, 1/61, scaled by 61.
    assert fused[1].score == pytest.approx((1 / 62 + 2 / 61) / 3 * 61)
    # Passage 2 is missing from the keyword list: that ranker counts it as 0.
    assert fused[2].score == pytest.approx((1 / 62) / 3 * 61)


def test_items_only_returned_by_rankers_that_cannot_judge_them_are_dropped():
    fused = reciprocal_rank_fusion({"clip": [1], "text": [2]}, covers=lambda i: ["clip"])
    assert ids(fused) == [1]


def test_k_constant():
    assert RRF_K == 60
    fused = reciprocal_rank_fusion({"a": [1, 2]}, k=0, normalise=False)
    assert [f.score for f in fused] == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError):
        reciprocal_rank_fusion({"a": [1]}, k=-1)


def test_grouping_folds_neighbouring_moments_into_the_best_one():
    from mmsearch.catalog import AssetInfo, ItemRecord
    from mmsearch.query.group import group_adjacent
    from mmsearch.query.stages import Candidate

    def hit(item_id, score, start, end, path="/v.mp4"):
        asset = AssetInfo(path=path, kind="video", size=1, mtime_ns=1, content_hash=path)
        return Candidate(ItemRecord(item_id, "keyframe", start, end, None, asset), score)

    hits = [hit(2, 0.9, 4.0, 7.0), hit(1, 0.5, 0.0, 4.0), hit(3, 0.4, 7.0, 10.0), hit(9, 0.3, 60.0, 64.0), hit(5, 0.2, 0, 4, "/w.mp4")]
    grouped = group_adjacent(hits)
    assert [(g.id, g.record.start_s, g.record.end_s) for g in grouped] == [(2, 4.0, 7.0), (9, 60.0, 64.0), (5, 0, 4)]
    assert [m.item_id for m in grouped[0].moments] == [1, 3]


def test_a_groups_moment_to_seek_to_is_its_closest_keyframe():
    """After a reranker moved a keyframe down (mmr, for a near-copy of another file's scene),
    its neighbour came first and became the moment to seek to: the red circle for "a blue
    square". The closest keyframe (its CLIP cosine) is the moment now, at the group's place."""
    from mmsearch.catalog import AssetInfo, ItemRecord
    from mmsearch.query.group import group_adjacent
    from mmsearch.query.stages import Candidate
    from mmsearch.results import ScorePart

    def hit(item_id, score, clip, start, end):
        asset = AssetInfo(path="/a.mp4", kind="video", size=1, mtime_ns=1, content_hash="a")
        rec = ItemRecord(item_id, "keyframe", start, end, None, asset)
        return Candidate(rec, score, [ScorePart("clip", clip, 1)])

    red, blue = hit(1, 0.9, 0.30, 0.0, 3.0), hit(2, 0.5, 0.69, 3.0, 6.0)  # red placed first
    (group,) = group_adjacent([red, blue])
    assert (group.id, group.record.start_s, group.score) == (2, 3.0, 0.9)
    assert [m.item_id for m in group.moments] == [1]
