"""Personalisation: the learning on arrays (CLIP vectors and patch grids), the bounded,
relevance-gated shift, feedback kept across moves and re-indexing, isolation between users, the
fallback without patch features, and the CLI's feedback and profile commands."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import NotFoundError
from mmsearch.query.model import Query, Term
from mmsearch.query.personal import (
    GATE_POWER,
    INFLUENCE,
    MAX_Z,
    PersonalStage,
    fit_logistic,
    learn_profile,
    personal_shift,
    relevance_gate,
    rocchio,
)
from mmsearch.query.stages import Candidate
from mmsearch.results import ScorePart
from mmsearch.synth.media import write_photo_folder


def test_rocchio_points_toward_good_and_away_from_bad():
    good = np.array([[1.0, 0, 0], [0.8, 0.2, 0]])
    bad = np.array([[0, 0, 1.0]])
    v = rocchio(good, bad)
    assert v[0] > 0.5 and v[2] < 0 and np.isclose(np.linalg.norm(v), 1)
    assert rocchio(good, np.empty((0, 3)))[2] == 0


def test_logistic_separates_and_is_regularised():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = (x[:, 0] > 0).astype(float)
    w, b = fit_logistic(x, y)
    assert w[0] == max(w) and ((x @ w + b > 0) == (y > 0)).mean() >= 0.9
    tiny, _ = fit_logistic(x, y, l2=1e6)
    assert np.abs(tiny).max() < 1e-2  # strong regularisation: almost no opinion
    profile = learn_profile(x[y > 0], x[y == 0])
    assert profile.logistic and profile.events == 40
    assert not learn_profile(x[:3], np.empty((0, 5))).logistic
    assert learn_profile(np.empty((0, 5)), np.empty((0, 5))) is None


def test_the_shift_is_bounded_by_the_windows_own_spread():
    scores = np.linspace(1.0, 0.5, 20)
    preference = np.r_[np.zeros(19), 1e6]  # one extreme outlier
    shift = personal_shift(scores, preference, events=10_000)
    assert np.abs(shift).max() <= INFLUENCE * MAX_Z * np.std(scores) + 1e-9
    few = personal_shift(scores, preference, events=1)
    assert np.abs(few).max() < np.abs(shift).max()  # one judgement moves less than many
    assert not personal_shift(scores, np.ones(20), events=5).any()  # no opinion, no shift


def test_logistic_with_more_columns_than_rows_is_the_full_solution():
    """Solved in the span of the rows (thin SVD), it equals Newton on every column."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 40))
    y = (x[:, 3] + 0.3 * rng.normal(size=12) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=0.3)
    a = np.hstack([x, np.ones((12, 1))])
    full = np.zeros(41)
    reg = 0.3 * np.eye(41)
    reg[-1, -1] = 0
    for _ in range(60):
        p = 1 / (1 + np.exp(-(a @ full)))
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg + 1e-9 * np.eye(41)
        full -= np.linalg.solve(hess, a.T @ (p - y) + reg @ full)
    assert np.allclose(w, full[:-1], atol=1e-8) and np.isclose(b, full[-1], atol=1e-8)


def _scenes(rng, n, kinds, dim=16, cells=4, channels=24):
    """Fake pictures: one object of a kind on the left (cells 0, 2) or right (1, 3) of a 2x2 grid
    over a plain background. The pooled vector says which kind, not where; the grid says both."""
    looks = {k: np.abs(np.random.default_rng(7 + k).normal(size=channels)) for k in range(6)}
    names = {k: np.random.default_rng(70 + k).normal(size=dim) for k in range(6)}
    background = np.full(channels, 0.2)
    left = rng.random(n) < 0.5
    kind = rng.choice(kinds, n)
    grids = np.tile(background, (n, cells, 1))
    for i in range(n):
        for cell in ((0, 2) if left[i] else (1, 3)):
            grids[i, cell] = looks[kind[i]] + 0.05 * rng.normal(size=channels)
    vectors = np.array([names[k] for k in kind]) + 0.1 * rng.normal(size=(n, dim))
    return vectors, grids, left


def _auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean())


def test_patch_grids_teach_where_things_are_and_it_carries_to_unseen_kinds():
    rng = np.random.default_rng(3)
    vectors, grids, left = _scenes(rng, 20, kinds=[0, 1, 2])  # 20 judgements on three kinds
    test_v, test_g, test_left = _scenes(rng, 200, kinds=[3, 4, 5])  # kinds never judged
    with_grids = learn_profile(vectors[left], vectors[~left], grids[left], grids[~left])
    pooled_only = learn_profile(vectors[left], vectors[~left])
    assert with_grids.logistic and with_grids.uses_patches and not pooled_only.uses_patches
    assert with_grids.to_dict()["features"] == ["clip", "patches"]
    assert len(with_grids.weights) == 16 + 4 * 24 and len(pooled_only.weights) == 16
    assert _auc(with_grids.preference(test_v, test_g), test_left) > 0.95
    assert _auc(pooled_only.preference(test_v), test_left) < 0.7  # the pooled vector cannot tell
    # a candidate without a grid gets the judged items' mean grid: no opinion from the grid
    filled = with_grids.phi(test_v[:2], test_g[:1], have=np.array([True, False]))
    assert np.allclose(filled[1, 16:], with_grids.patch_fill)


def test_the_shift_is_gated_by_relevance_upward_only():
    scores = np.linspace(1.0, 0.5, 10)
    preference = np.r_[np.zeros(8), 5.0, -5.0]
    open_gate = personal_shift(scores, preference, events=20)
    gate = np.r_[np.ones(8), 0.0, 0.0]  # the two last ones do not match the query
    gated = personal_shift(scores, preference, events=20, gate=gate)
    assert open_gate[8] > 0 and gated[8] == 0  # preferred but irrelevant: does not climb
    assert gated[9] == open_gate[9] < 0  # disliked: still pushed down
    assert np.allclose(gated[:8], open_gate[:8])
    half = personal_shift(scores, preference, events=20, gate=np.full(10, 0.5))
    assert np.isclose(half[8], 0.5 * open_gate[8])


def _candidate(item, score, itm=None):
    parts = [ScorePart("clip", score, item)]
    if itm is not None:
        parts.append(ScorePart("itm", itm, item))
    return Candidate(_Record(item), score, parts)


class _Record:
    def __init__(self, item):
        self.id, self.kind, self.path, self.text = item, "image", f"{item}.png", None


class _Store:
    def __init__(self, vectors):
        self.rows = vectors

    def vectors(self, ids):
        return np.asarray(ids, np.int64), self.rows[np.asarray(ids)]


class _Collection:
    def __init__(self, vectors, grids=None):
        self.vectors, self.grids = _Store(vectors), grids

    def patches(self, ids):
        if self.grids is None:
            return np.empty(0, np.int64), np.empty((0, 4, 24), np.float16)
        return np.asarray(ids, np.int64), self.grids[np.asarray(ids)]


class _Ctx:
    def __init__(self, collection):
        self.collection = collection


def test_stage_reorders_within_the_matching_band_and_keeps_the_incoming_order_otherwise():
    rng = np.random.default_rng(5)
    vectors, grids, left = _scenes(rng, 60, kinds=[0, 1, 2, 3, 4, 5])
    train = np.arange(20)
    profile = learn_profile(vectors[train][left[train]], vectors[train][~left[train]],
                            grids[train][left[train]], grids[train][~left[train]])
    window = list(range(20, 60))
    matching = {i: (0.001 if i in (20, 21) else 0.99) for i in window}  # 20, 21: not a match
    liked_mismatch = [i for i in (20, 21) if left[i]]
    cands = [_candidate(i, 1.0 - 0.01 * r, matching[i]) for r, i in enumerate(window)]
    query = Query((Term("text", "a thing"),), rerank_depth=50)
    out = PersonalStage("ann", profile)(query, cands, _Ctx(_Collection(vectors, grids)))
    ids = [c.id for c in out]
    top = ids[:10]
    assert all(left[i] for i in top)  # the liked side first ...
    assert not set(liked_mismatch) & set(top)  # ... but never a non-matching picture
    assert [c.order_score for c in out] == sorted((c.order_score for c in out), reverse=True)
    assert all(any(p.source == "personal" for p in c.parts) for c in out)
    assert relevance_gate(cands[:1])[0] == pytest.approx(0.001**GATE_POWER)
    assert relevance_gate([_candidate(1, 0.5)])[0] == 1.0  # no itm score: no gate


@pytest.fixture
def home(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 30, seed=61)
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
    return tmp_path / "home", photos


def test_feedback_survives_moves_and_unchanged_reindexing_and_stays_per_user(home):
    home, photos = home
    with Engine(home) as e:
        plain = e.search("a red circle", k=10, user="ann", rerank=("none",))
        liked = plain[-1]
        e.feedback(liked.item_id, True, user="ann", query="a red circle")
        e.feedback(plain[0].path, False, user="ann")  # by path
        with pytest.raises(NotFoundError):
            e.feedback(10**9, True, user="ann")
        mine = e.search("a red circle", k=10, user="ann", rerank=("none",))
        assert [h.item_id for h in mine] != [h.item_id for h in plain]
        assert e.search("a red circle", k=10, user="bob", rerank=("none",)) == plain  # isolation
        assert e.search("a red circle", k=10, user=None, rerank=("none",)) == plain
    moved = photos / "moved"
    moved.mkdir()
    old = liked.path
    shutil.move(old, moved / "renamed.jpg")
    with Engine(home) as e:
        assert e.index([photos], options=IndexOptions(in_process=True)).moved == 1
        profile = e.profile("ann")
        assert profile["good"] == 1 and profile["unresolved"] == 0
        assert profile["events"][0]["path"] == str((moved / "renamed.jpg").resolve())
        assert e.reset_profile("ann") == 2
        assert e.search("a red circle", k=10, user="ann", rerank=("none",))[0].item_id == plain[0].item_id


def test_cli_feedback_and_profile(home):
    home, photos = home
    runner = CliRunner()
    first = json.loads(
        runner.invoke(app, ["query", "a blue square", "--home", str(home), "--json", "-k", "1"]).output
    )
    ok = runner.invoke(app, ["feedback", str(first["item_id"]), "--good", "--user", "cat", "--home", str(home)])
    assert ok.exit_code == 0 and "good for cat" in ok.output
    bad = runner.invoke(app, ["feedback", "999999", "--bad", "--user", "cat", "--home", str(home)])
    assert bad.exit_code == 2 and "No item 999999" in bad.output
    shown = runner.invoke(app, ["profile", "show", "--user", "cat", "--home", str(home)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "rocchio from 1 judgements" in shown.output
    exported = json.loads(runner.invoke(app, ["profile", "export", "--user", "cat", "--home", str(home)]).output)
    assert exported["model"]["kind"] == "rocchio" and exported["model"]["features"] == ["clip", "patches"]
    assert len(exported["model"]["weights"]) == 128 + 4 * 512  # tiny: 2x2 grid of 512 features
    personal = runner.invoke(app, ["query", "a blue square", "--home", str(home), "--user", "cat", "--explain"], env={"COLUMNS": "200"})
    assert "personal" in personal.output
    off = runner.invoke(app, ["query", "a blue square", "--home", str(home), "--user", "cat", "--no-personal", "--explain"], env={"COLUMNS": "200"})
    assert "personal" not in off.output
    reset = runner.invoke(app, ["profile", "reset", "--user", "cat", "--home", str(home)])
    assert reset.exit_code == 0 and "Forgot 1" in reset.output


def _page(engine, user, query="a red circle"):
    return json.dumps([h.to_dict() for h in engine.search(query, k=10, user=user)])


def test_users_are_isolated_byte_for_byte_and_the_grid_is_used(home):
    home, _ = home
    with Engine(home) as e:
        before_bob = _page(e, "bob")
        nobody = _page(e, None)
        assert before_bob == nobody  # no feedback: exactly the unpersonalised page
        hits = e.search("a red circle", k=20, user="ann")
        for hit in hits[:3]:
            e.feedback(hit.item_id, False, user="ann")
        for hit in hits[-3:]:
            e.feedback(hit.item_id, True, user="ann")
        model = e.profile("ann")["model"]  # phi holds the grid, unless the concepts alone won
        assert model["features"][-2:] == ["clip", "patches"] or model["model"] == "concepts"
        mine = e.search("a red circle", k=10, user="ann")
        assert all(h.part("personal") is not None for h in mine)
        assert _page(e, "ann") != nobody
        assert _page(e, "bob") == before_bob and _page(e, None) == nobody
        e.feedback(hits[5].item_id, True, user="bob")
        assert _page(e, "bob") != before_bob  # bob now has his own order ...
        assert _page(e, "ann") == json.dumps([h.to_dict() for h in mine])  # ... and ann keeps hers


def test_without_patch_features_the_clip_vector_alone_is_learned(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 16, seed=62)
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True, patches=False))
        hits = e.search("a blue square", k=10, user="cy", rerank=("none",))
        e.feedback(hits[0].item_id, False, user="cy")
        e.feedback(hits[-1].item_id, True, user="cy")
        model = e.profile("cy")["model"]
        assert "patches" not in model["features"] and len(model["weights"]) == 128 and model["kind"] == "logistic"
        mine = e.search("a blue square", k=10, user="cy", rerank=("none",))
        assert mine[0].item_id != hits[0].item_id and all(h.part("personal") for h in mine)
