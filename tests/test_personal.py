"""Personalisation: the learning on arrays, the bounded shift, feedback kept across moves and
re-indexing, isolation between users, and the CLI's feedback and profile commands."""

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
from mmsearch.query.personal import (
    INFLUENCE,
    MAX_Z,
    fit_logistic,
    learn_profile,
    personal_shift,
    rocchio,
)
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
    assert exported["model"]["kind"] == "rocchio" and len(exported["model"]["weights"]) == 128
    personal = runner.invoke(app, ["query", "a blue square", "--home", str(home), "--user", "cat", "--explain"], env={"COLUMNS": "200"})
    assert "personal" in personal.output
    off = runner.invoke(app, ["query", "a blue square", "--home", str(home), "--user", "cat", "--no-personal", "--explain"], env={"COLUMNS": "200"})
    assert "personal" not in off.output
    reset = runner.invoke(app, ["profile", "reset", "--user", "cat", "--home", str(home)])
    assert reset.exit_code == 0 and "Forgot 1" in reset.output
