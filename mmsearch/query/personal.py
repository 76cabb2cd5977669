"""Personalisation: a user's feedback reorders the top results, with a bounded influence.

Each user's judgements (👍 / 👎 on results, `mmsearch feedback`) are stored in the catalog by
content hash and resolved to today's items; their stored features are the training data.

- **Features:** ``phi(x) = [unit(v), unit(flat(P))]``: the item's CLIP vector ``v`` and, where
  the collection stores them (pictures indexed with a model that has an ITM companion, e.g.
  `tiny`: a 2x2 grid of 512 trunk features), its patch grid ``P`` flattened, each block scaled to
  unit length so both weigh the same. The pooled vector says what is in a picture; the grid also
  says where and how big (a user who likes "things on the left" or "large objects"). A
  collection without patch features, or a user whose judged items lack them, uses ``unit(v)``
  alone; a candidate without them gets the judged items' mean patch block (no opinion).
- **Preference model:** with both good and bad examples, an L2-regularised logistic regression
  ``m(x) = w . phi(x) + b`` (penalty ``L2 * |w|^2 / 2``, the bias free), refit whenever the
  user's events change. Fewer rows than dimensions, so it is solved exactly in the span of the
  rows (thin SVD, then Newton in at most n dimensions: milliseconds). With one kind only,
  Rocchio's profile ``ALPHA * mean(good) - BETA * mean(bad)`` and ``m(x) = cos(phi(x), profile)``.
- **Concepts first, when they carry over:** 20 judgements rarely pin down a preference among
  2,000 raw features, and the ridge model learns what the judged pictures have in common (often
  the subjects of the queries they were judged under) rather than the taste. So where the
  engine can embed text, each item also has concept features ``c(x)``: its CLIP vector's
  standardised cosines to the collection's tag vocabulary and to modifier contrasts ("large",
  "small", "on the left" ...; `mmsearch.query.concepts`). A sparse model ``c(x) . u + a``
  (L1-regularised logistic regression, ``CONCEPT_L1``; most weights exactly 0) says a taste in a
  few words. Three candidate models compete (`choose_model`): the concepts alone, ``phi``
  alone, and both (the ``phi`` model fitted with the concept model's log-odds as a fixed
  offset, so it learns only what the concepts left unexplained); the one whose held-out
  judgements are ordered best wins, held out one query at a time (the queries the judgements
  were given under; one judgement at a time where fewer than two queries are named). A taste
  for colours stays with ``phi``; one for size goes to the concepts. The concepts kept are
  shown by ``mmsearch profile export`` (``model.concepts``).
- **Bounded, relevance-gated influence:** within the reranking window (the top
  `Query.rerank_depth`, in the order the rerankers left it, `Candidate.order_score`), each
  candidate's order score moves by

      shift(x) = INFLUENCE * n / (n + HALF_AT) * std(s) * clip(z(m(x)), -MAX_Z, MAX_Z)
      delta(x) = shift(x) * g(x)   if shift(x) > 0,   else shift(x)

  where ``s`` are the window's order scores, ``n`` the number of events and ``z`` standardises
  ``m`` over the window. ``g(x)`` in [0, 1] is the candidate's relevance gate: the image-text
  matching probability the `itm` stage gave it (``ScorePart("itm", p, rank)``), raised to
  ``GATE_POWER``, so a preferred but non-matching picture cannot climb; without an itm score
  (another model, a passage, a compound query, `--rerank none`) ``g = 1``. A move is therefore at
  most ``INFLUENCE * MAX_Z`` standard deviations of the window's own scores, upward only as far
  as the candidate matches the query, and nothing outside the window is pulled in.
- **Isolation:** only the query's own user's events are read; a user without events (or
  ``--no-personal``) gets exactly the unpersonalised order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mmsearch.errors import MmsearchError
from mmsearch.query.concepts import ConceptBasis
from mmsearch.query.rerank import place
from mmsearch.results import ScorePart

if TYPE_CHECKING:
    from collections.abc import Callable

    from mmsearch.models import Encoder
    from mmsearch.query.model import Query
    from mmsearch.query.stages import Candidate, SearchContext

log = logging.getLogger(__name__)

INFLUENCE = 3.0
"""Largest score shift, in standard deviations of the window's scores, once feedback is plenty."""
HALF_AT = 5
"""Events after which the influence is half its largest (it grows as feedback accumulates)."""
MAX_Z = 2.0
"""Standardised preferences are clipped here, so one outlier cannot leap over the window."""
GATE_POWER = 4.0
"""The itm probability is raised to this power before it scales an upward move (0.9 -> 0.66)."""
ROCCHIO_ALPHA, ROCCHIO_BETA = 1.0, 0.75
L2 = 0.01
"""Ridge penalty of the logistic model on unit-length feature blocks (chosen by leaving one
training shape out in the shapes world; the held-out shapes were not used)."""
CONCEPT_L1 = 0.12
"""Lasso penalty (on the mean log loss) of the concept model on standardised concept features.
Chosen with simulated users (`benchmarks/personalization.py`) on seven photo sets (seeds 7, 11,
12, 21, 33, 44, 2024), replaying their 20 judgements: the held-out queries' preference share
rises from 0.005 to a plateau at 0.12-0.2 and collapses at 0.3 (every weight 0); the sets
measured in the README were not used."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def features(vectors: np.ndarray, patches: np.ndarray | None = None) -> np.ndarray:
    """``phi``: unit CLIP vectors, then (when given) unit flattened patch grids, side by side."""
    blocks = [_unit(vectors)]
    if patches is not None:
        blocks.append(_unit(patches))
    return np.hstack(blocks)


@dataclass(frozen=True)
class Profile:
    """What was learned for one user: a direction (Rocchio) or a logistic model, and how much."""

    weights: np.ndarray  # (dim,) the direction scored by inner product with phi(x)
    bias: float
    logistic: bool  # True: m = w.phi + b (p = sigmoid(m)); False: m = cosine(phi, w)
    events: int  # judgements it was learned from
    patch_fill: np.ndarray | None = field(default=None)  # mean patch block of the judged items
    concepts: ConceptBasis | None = field(default=None)  # the concept stage's basis, if it ran
    concept_weights: np.ndarray | None = field(default=None)  # (concepts,) sparse
    concept_bias: float = 0.0
    model: str = "features"  # which of MODELS was chosen ("features" without a concept basis)

    @property
    def uses_patches(self) -> bool:
        return self.patch_fill is not None

    @property
    def uses_concepts(self) -> bool:
        return self.concepts is not None and self.concept_weights is not None

    def concept_margin(self, vectors: np.ndarray) -> np.ndarray:
        """The concept model's log-odds ``c(x) . u + a`` (zeros without a concept model)."""
        if not self.uses_concepts:
            return np.zeros(len(vectors))
        return self.concepts.features(vectors) @ self.concept_weights + self.concept_bias

    def score(
        self, vectors: np.ndarray, patches: np.ndarray | None = None, have: np.ndarray | None = None
    ) -> np.ndarray:
        """``m(x)`` of candidates from their CLIP vectors (and patch grids, where ``have``)."""
        return self.concept_margin(vectors) + self.margin(self.phi(vectors, patches, have))

    def phi(self, vectors: np.ndarray, patches: np.ndarray | None = None, have: np.ndarray | None = None) -> np.ndarray:
        """Features of candidates; rows whose ``have`` is False get the profile's patch fill."""
        v = _unit(vectors)
        if self.patch_fill is None:
            return v
        block = np.tile(self.patch_fill, (len(v), 1))
        if patches is not None and len(patches):
            mask = np.ones(len(v), bool) if have is None else np.asarray(have, bool)
            block[mask] = _unit(patches)
        return np.hstack([v, block])

    def margin(self, phi: np.ndarray) -> np.ndarray:
        """``m(x)``: the logistic model's log-odds, or Rocchio's cosine."""
        raw = np.asarray(phi, np.float64) @ self.weights
        if self.logistic:
            return raw + self.bias
        norms = np.linalg.norm(phi, axis=1)
        return raw / np.where(norms > 0, norms, 1.0)

    def preference(self, vectors: np.ndarray, patches: np.ndarray | None = None) -> np.ndarray:
        """``p(x)``: sigmoid(m) for the logistic model, the cosine for Rocchio."""
        m = self.score(vectors, patches)
        return 1.0 / (1.0 + np.exp(-m)) if self.logistic else m

    def to_dict(self) -> dict:
        dim = len(self.weights) - (len(self.patch_fill) if self.patch_fill is not None else 0)
        out = {
            "kind": "logistic" if self.logistic else "rocchio",
            "events": self.events,
            "model": self.model,
            "features": (["concepts"] if self.uses_concepts else [])
            + ([] if self.model == "concepts" else ["clip"] + (["patches"] if self.uses_patches else [])),
            "clip_dim": dim,
            "bias": self.bias,
            "weights": [round(float(w), 6) for w in self.weights],
        }
        if self.uses_concepts:
            out["concepts"] = self.concepts_learned()
            out["concept_bias"] = round(self.concept_bias, 6)
        return out

    def concepts_learned(self) -> dict[str, float]:
        """The concepts the sparse model kept, by weight (log-odds per standard deviation),
        strongest first: what the user's judgements say in words."""
        if not self.uses_concepts:
            return {}
        kept = [(n, float(w)) for n, w in zip(self.concepts.names, self.concept_weights) if w != 0]
        return {n: round(w, 4) for n, w in sorted(kept, key=lambda nw: -abs(nw[1]))}


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


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float | None = None, steps: int = 50, offset: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (labels 0/1, the bias unpenalised); returns (w, b).

    ``offset`` (one log-odds per row, default 0) is added to ``x @ w + b`` and kept fixed: the
    model then learns only what the offset's model left unexplained.

    The optimum's ``w`` lies in the span of the rows (a component orthogonal to every row changes
    no prediction and only adds penalty), so with fewer rows than columns it is solved in the
    coordinates of a thin SVD ``x = U S Vt``: Newton's method on ``U S`` (n columns at most),
    then ``w = Vt.T @ w_small``. Exact, and milliseconds for 20 rows of 2,176 features.
    """
    l2 = L2 if l2 is None else l2
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    basis = None
    if d > n:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        keep = s > s.max() * 1e-10 if len(s) and s.max() > 0 else np.zeros(len(s), bool)
        basis = vt[keep]
        x = x @ basis.T
        d = x.shape[1]
    a = np.hstack([x, np.ones((n, 1))])
    fixed = np.zeros(n) if offset is None else np.asarray(offset, np.float64)
    w = np.zeros(d + 1)
    reg = l2 * np.eye(d + 1)
    reg[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ w + fixed)))
        grad = a.T @ (p - y) + reg @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a + reg + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[:-1] if basis is None else basis.T @ w[:-1]
    return weights, float(w[-1])


def fit_sparse_logistic(
    x: np.ndarray, y: np.ndarray, l1: float | None = None, steps: int = 5000, tol: float = 1e-7
) -> tuple[np.ndarray, float]:
    """L1-regularised logistic regression: minimises ``mean(log loss) + l1 * |w|_1`` (the bias
    free) by accelerated proximal gradient (FISTA with adaptive restart, step ``1/L``,
    ``L = |[x 1]|_2^2 / 4n``).

    The L1 prior keeps only the few features the judgements need: most weights are exactly 0.
    """
    l1 = CONCEPT_L1 if l1 is None else l1
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    lipschitz = max(0.25 * float(np.linalg.norm(a, 2)) ** 2 / n, 1e-12)
    w = np.zeros(d + 1)
    z, t = w.copy(), 1.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a @ z)))
        nxt = z - (a.T @ (p - y)) / n / lipschitz
        nxt[:-1] = np.sign(nxt[:-1]) * np.maximum(np.abs(nxt[:-1]) - np.asarray(l1) / lipschitz, 0.0)
        if float((z - nxt) @ (nxt - w)) > 0:  # momentum points uphill: restart it
            t = 1.0
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = nxt + (t - 1.0) / t_next * (nxt - w)
        moved = float(np.abs(nxt - w).max())
        w, t = nxt, t_next
        if moved < tol:
            break
    return w[:-1], float(w[-1])


def learn_profile(
    good: np.ndarray, bad: np.ndarray, good_patches: np.ndarray | None = None,
    bad_patches: np.ndarray | None = None, concepts: ConceptBasis | None = None,
    groups: list | None = None,
) -> Profile | None:
    """The preference model the events support (see the module docstring), or None for none.

    ``good``/``bad`` are CLIP vectors; the patch grids, when given for every judged item, join
    them as the second feature block. With a concept basis and both kinds of judgement, a
    sparse model over the concepts is fitted first and the logistic model on ``phi`` learns
    what it left unexplained (its log-odds are the offset).
    """
    n = len(good) + len(bad)
    if n == 0:
        return None
    if good_patches is not None and bad_patches is not None:
        x_good, x_bad = features(good, good_patches), features(bad, bad_patches)
        fill = _unit(np.concatenate([good_patches, bad_patches])).mean(axis=0)
    else:
        x_good, x_bad = features(good), features(bad)
        fill = None
    if len(good) and len(bad):
        x = np.vstack([x_good, x_bad])
        y = np.concatenate([np.ones(len(good)), np.zeros(len(bad))])
        if concepts is not None and len(concepts):
            c = concepts.features(np.vstack([np.asarray(good).reshape(len(good), -1), np.asarray(bad).reshape(len(bad), -1)]))
            kind = choose_model(c, x, y, groups)
            if kind == "concepts":
                u, a = fit_sparse_logistic(c, y)
                return Profile(np.zeros(x.shape[1]), 0.0, True, n, fill, concepts, u, a, "concepts")
            if kind == "both":
                u, a = fit_sparse_logistic(c, y)
                w, b = fit_logistic(x, y, offset=c @ u + a)
                return Profile(w, b, True, n, fill, concepts, u, a, "both")
        w, b = fit_logistic(x, y)
        return Profile(w, b, True, n, fill)
    return Profile(rocchio(x_good, x_bad), 0.0, False, n, fill)


MODELS = ("both", "features", "concepts")
"""The candidate models, in the order that wins a tie: concepts then ``phi`` on what they left
unexplained, ``phi`` alone (the model without concepts), the concepts alone."""


def _fit_margin(kind: str, c: np.ndarray, x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """One candidate model fitted on the ``train`` rows; its log-odds on the ``test`` rows."""
    if kind == "features":
        w, b = fit_logistic(x[train], y[train])
        return x[test] @ w + b
    u, a = fit_sparse_logistic(c[train], y[train])
    m = c @ u + a
    if kind == "concepts":
        return m[test]
    w, b = fit_logistic(x[train], y[train], offset=m[train])
    return m[test] + x[test] @ w + b


def _pairwise(m: np.ndarray, y: np.ndarray) -> float | None:
    """The share of (good, bad) pairs ordered right (ties half): AUC; None without both kinds."""
    pos, neg = m[y > 0], m[y <= 0]
    if not len(pos) or not len(neg):
        return None
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def choose_model(c: np.ndarray, x: np.ndarray, y: np.ndarray, groups: list | None = None) -> str:
    """Which of `MODELS` carries over best to judgements it did not see, by the mean AUC of its
    held-out folds: one fold per query the judgements were given under (leave one query out,
    where at least two queries are named), else one per judgement (leave one out, the held-out
    log-odds pooled). ``c``: concept features, ``x``: ``phi``, ``y``: 1 good, 0 bad."""
    keys = list(groups) if groups is not None else [None] * len(y)
    named = sorted({k for k in keys if k})
    folds = [np.array([k == g for k in keys]) for g in named] if len(named) >= 2 else [np.eye(len(y), dtype=bool)[i] for i in range(len(y))]
    best, best_score = MODELS[0], -1.0
    for kind in MODELS:
        scores, pooled_m, pooled_y = [], [], []
        for test in folds:
            train = ~test
            if not test.any() or len(set(y[train])) < 2:
                continue
            m = _fit_margin(kind, c, x, y, train, test)
            auc = _pairwise(m, y[test])
            if auc is not None:
                scores.append(auc)
            pooled_m.append(m)
            pooled_y.append(y[test])
        if not scores and pooled_m:
            pooled = _pairwise(np.concatenate(pooled_m), np.concatenate(pooled_y))
            scores = [pooled] if pooled is not None else []
        score = float(np.mean(scores)) if scores else -1.0
        if score > best_score + 1e-9:
            best, best_score = kind, score
    return best


def personal_shift(
    scores: np.ndarray, preference: np.ndarray, events: int, gate: np.ndarray | None = None
) -> np.ndarray:
    """How far each score in the window moves (see the module docstring's formula)."""
    if len(scores) < 2:
        return np.zeros(len(scores))
    spread = float(np.std(scores))
    p_std = float(np.std(preference))
    if spread <= 0 or p_std <= 0:
        return np.zeros(len(scores))
    z = np.clip((preference - preference.mean()) / p_std, -MAX_Z, MAX_Z)
    shift = INFLUENCE * events / (events + HALF_AT) * spread * z
    if gate is not None:
        shift = np.where(shift > 0, shift * np.clip(gate, 0.0, 1.0), shift)
    return shift


def relevance_gate(candidates: list[Candidate]) -> np.ndarray:
    """``g``: each candidate's itm probability to the power GATE_POWER, 1 where none was given."""
    gate = np.ones(len(candidates))
    for i, c in enumerate(candidates):
        part = next((p for p in c.parts if p.source == "itm"), None)
        if part is not None:
            gate[i] = float(np.clip(part.score, 0.0, 1.0)) ** GATE_POWER
    return gate


class PersonalStage:
    """Reorders the window by relevance plus the user's bounded, relevance-gated preference."""

    name = "personal"

    def __init__(self, user: str, profile: Profile) -> None:
        self.user, self.profile = user, profile

    def __call__(self, query: Query, candidates: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        window = candidates[: query.rerank_depth]
        if len(window) < 2:
            return candidates
        wanted = np.array([c.id for c in window], np.int64)
        ids, vectors = ctx.collection.vectors.vectors(wanted)
        if len(ids) != len(window):
            return candidates
        patches, have = None, None
        if self.profile.uses_patches:
            found, patches = _patches(ctx.collection, wanted)
            have = np.isin(wanted, found)
        margin = self.profile.score(vectors, patches, have)
        shown = 1.0 / (1.0 + np.exp(-margin)) if self.profile.logistic else margin
        scores = np.array([c.order_score for c in window])
        shifted = scores + personal_shift(scores, margin, self.profile.events, relevance_gate(window))
        order = np.argsort(-shifted, kind="stable")
        out = []
        for rank, row in enumerate(order, start=1):
            c = window[int(row)]
            c.parts.append(ScorePart("personal", float(shown[row]), rank))
            out.append(c)
        return place(candidates, list(range(len(window))), out)


def _patches(collection, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids that have patch features, their grids in that order), or nothing for a collection
    that stores none."""
    read = getattr(collection, "patches", None)
    if read is None:
        return np.empty(0, np.int64), None
    found, grids = read(ids)
    return np.asarray(found, np.int64), (grids if len(found) else None)


def profile_for(user: str, ctx_collection, encoder: Callable[[], Encoder] | None = None) -> Profile | None:
    """Learn a user's profile from their events' stored vectors, and patch features where every
    judged item has them (None without usable events). ``encoder`` (called only when the user
    has good and bad judgements) gives the text tower for the concept basis; without it, or
    when it cannot be loaded, no concept model is learned."""
    events = [e for e in ctx_collection.catalog.feedback_events(user) if e.item_id is not None]
    if not events:
        return None
    ids = np.array([e.item_id for e in events], np.int64)
    found, vectors = ctx_collection.catalog.vectors_for(ids.tolist())
    by_id = dict(zip(found.tolist(), vectors))
    good_ids = [e.item_id for e in events if e.label > 0 and e.item_id in by_id]
    bad_ids = [e.item_id for e in events if e.label < 0 and e.item_id in by_id]
    dim = vectors.shape[1] if len(vectors) else 0
    good = np.array([by_id[i] for i in good_ids]).reshape(-1, dim)
    bad = np.array([by_id[i] for i in bad_ids]).reshape(-1, dim)
    good_p = bad_p = None
    p_found, grids = _patches(ctx_collection, np.array(good_ids + bad_ids, np.int64))
    if grids is not None and len(p_found) == len(good_ids) + len(bad_ids):
        grid_of = dict(zip(p_found.tolist(), grids))
        shape = grids.shape[1:]
        good_p = np.array([grid_of[i] for i in good_ids]).reshape(-1, *shape)
        bad_p = np.array([grid_of[i] for i in bad_ids]).reshape(-1, *shape)
    basis = None
    if encoder is not None and len(good) and len(bad):
        basis = _concepts(ctx_collection, encoder)
    query_of = {e.item_id: e.query for e in events}
    groups = [query_of.get(i) for i in good_ids + bad_ids]
    return learn_profile(good, bad, good_p, bad_p, basis, groups)


def _concepts(collection, encoder: Callable[[], Encoder]) -> ConceptBasis | None:
    """The collection's concept basis, or None (logged) where the model cannot give one."""
    from mmsearch.query.concepts import concept_basis

    try:
        return concept_basis(collection, encoder())
    except MmsearchError as exc:
        log.warning("personalisation without concepts: %s", exc)
        return None
