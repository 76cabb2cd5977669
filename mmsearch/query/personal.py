"""Personalisation: a user's feedback reorders the top results, with a bounded influence.

Each user's judgements (👍 / 👎 on results, `mmsearch feedback`) are stored in the catalog by
content hash and resolved to today's items; their stored CLIP vectors are the training data.

- **Preference model:** with both good and bad examples, an L2-regularised logistic regression
  on the vectors (refit on every query from the stored events: a few dozen rows, milliseconds);
  with one kind only, Rocchio's profile ``alpha * mean(good) - beta * mean(bad)`` and the cosine
  to it. Both give a preference ``p(x)`` for a candidate vector ``x``.
- **Bounded influence:** within the reranking window (the top `Query.rerank_depth`), each
  candidate's score moves by

      delta(x) = INFLUENCE * n / (n + HALF_AT) * std(scores) * z(p(x))

  where ``n`` is the number of events and ``z`` standardises ``p`` over the window. The shift is
  at most about ``INFLUENCE`` standard deviations of the window's own relevance scores (clipped
  at ``MAX_Z``), so a result far more relevant to the query stays ahead of a preferred but
  barely relevant one; items outside the window are never pulled in.
- **Isolation:** only the query's own user's events are read; a user without events (or
  ``--no-personal``) gets exactly the unpersonalised order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmsearch.results import ScorePart

if TYPE_CHECKING:
    from mmsearch.query.model import Query
    from mmsearch.query.stages import Candidate, SearchContext

INFLUENCE = 3.0
"""Largest score shift, in standard deviations of the window's scores, once feedback is plenty."""
HALF_AT = 5
"""Events after which the influence is half its largest (it grows as feedback accumulates)."""
MAX_Z = 2.0
"""Standardised preferences are clipped here, so one outlier cannot leap over the window."""
ROCCHIO_ALPHA, ROCCHIO_BETA = 1.0, 0.75
L2 = 1.0


@dataclass(frozen=True)
class Profile:
    """What was learned for one user: a direction (Rocchio) or a logistic model, and how much."""

    weights: np.ndarray  # (dim,) the direction scored by inner product
    bias: float
    logistic: bool  # True: p = sigmoid(w.x + b); False: p = cosine(x, w)
    events: int  # judgements it was learned from

    def preference(self, vectors: np.ndarray) -> np.ndarray:
        raw = np.asarray(vectors, np.float64) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-raw)) if self.logistic else raw

    def to_dict(self) -> dict:
        return {
            "kind": "logistic" if self.logistic else "rocchio",
            "events": self.events,
            "bias": self.bias,
            "weights": [round(float(w), 6) for w in self.weights],
        }


def rocchio(good: np.ndarray, bad: np.ndarray, alpha: float = ROCCHIO_ALPHA, beta: float = ROCCHIO_BETA) -> np.ndarray:
    """alpha * mean(good) - beta * mean(bad), unit length (a missing side counts zero)."""
    dim = good.shape[1] if len(good) else bad.shape[1]
    v = np.zeros(dim)
    if len(good):
        v += alpha * np.asarray(good, np.float64).mean(axis=0)
    if len(bad):
        v -= beta * np.asarray(bad, np.float64).mean(axis=0)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 25) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (labels 0/1); returns (w, b)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = l2 * np.eye(d + 1)
    reg[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def learn_profile(good: np.ndarray, bad: np.ndarray) -> Profile | None:
    """The preference model the events support (see the module docstring), or None for none."""
    n = len(good) + len(bad)
    if n == 0:
        return None
    if len(good) and len(bad):
        x = np.vstack([good, bad])
        y = np.concatenate([np.ones(len(good)), np.zeros(len(bad))])
        w, b = fit_logistic(x, y)
        return Profile(w, b, True, n)
    return Profile(rocchio(good, bad), 0.0, False, n)


def personal_shift(scores: np.ndarray, preference: np.ndarray, events: int) -> np.ndarray:
    """How far each score in the window moves (see the module docstring's formula)."""
    if len(scores) < 2:
        return np.zeros(len(scores))
    spread = float(np.std(scores))
    p_std = float(np.std(preference))
    if spread <= 0 or p_std <= 0:
        return np.zeros(len(scores))
    z = np.clip((preference - preference.mean()) / p_std, -MAX_Z, MAX_Z)
    return INFLUENCE * events / (events + HALF_AT) * spread * z


class PersonalStage:
    """Reorders the window by relevance plus the user's bounded preference."""

    name = "personal"

    def __init__(self, user: str, profile: Profile) -> None:
        self.user, self.profile = user, profile

    def __call__(self, query: Query, candidates: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        window = candidates[: query.rerank_depth]
        if len(window) < 2:
            return candidates
        ids, vectors = ctx.collection.vectors.vectors(np.array([c.id for c in window], np.int64))
        if len(ids) != len(window):
            return candidates
        scores = np.array([c.order_score for c in window])
        preference = self.profile.preference(vectors)
        shifted = scores + personal_shift(scores, preference, self.profile.events)
        order = np.argsort(-shifted, kind="stable")
        out = []
        for rank, row in enumerate(order, start=1):
            c = window[int(row)]
            c.parts.append(ScorePart("personal", float(preference[row]), rank))
            out.append(c)
        return out + candidates[len(window) :]


def profile_for(user: str, ctx_collection) -> Profile | None:
    """Learn a user's profile from their events' stored vectors (None without usable events)."""
    events = [e for e in ctx_collection.catalog.feedback_events(user) if e.item_id is not None]
    if not events:
        return None
    ids = np.array([e.item_id for e in events], np.int64)
    found, vectors = ctx_collection.catalog.vectors_for(ids.tolist())
    by_id = dict(zip(found.tolist(), vectors))
    good = [by_id[e.item_id] for e in events if e.label > 0 and e.item_id in by_id]
    bad = [by_id[e.item_id] for e in events if e.label < 0 and e.item_id in by_id]
    dim = vectors.shape[1] if len(vectors) else 0
    return learn_profile(
        np.array(good).reshape(-1, dim), np.array(bad).reshape(-1, dim)
    )
