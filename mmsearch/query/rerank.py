"""Rerankers: second-stage judges over the top candidates, each reporting its own score part.

Every reranker is a `Stage` (see `mmsearch.query.stages`): it reorders the first
`Query.rerank_depth` candidates (default 50) and leaves the rest in place. They are chosen by
name (`--rerank NAME`, repeatable; `--rerank none` turns every one off); without a choice the
collection's defaults run: `itm` when the collection's model has an image-text matching
companion (`tiny` has `tiny-itm`), then `mmr` for pictures.

- ``mmr``: diversity. Maximal marginal relevance (Carbonell and Goldstein, 1998) with a
  similarity floor: an item's penalty is its similarity to the most similar item already placed,
  counted only above ``MMR_FLOOR``, so near-identical pictures (a burst, consecutive keyframes,
  a resized copy) stop crowding the first page while distinct relevant pictures keep their order:

      mmr(i) = LAMBDA * rel(i) - (1 - LAMBDA) * max_j max(0, (cos(i, j) - FLOOR) / (1 - FLOOR))

  with rel scaled to [0, 1] over the window. Only pictures (images, keyframes) are moved, among
  the places pictures hold; passages keep theirs.
- ``cross-encoder``: a sentence-transformers `CrossEncoder` reads (query, passage) pairs together
  and reorders passages. It needs weights (a local folder, or a hub name with network access);
  without them it is off and says so.
- ``itm``: image-text matching over stored patch features (see `mmsearch.models.itm`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mmsearch.catalog import PASSAGE_KINDS
from mmsearch.errors import ConfigError
from mmsearch.results import ScorePart

if TYPE_CHECKING:
    from mmsearch.query.model import Query
    from mmsearch.query.stages import Candidate, SearchContext

log = logging.getLogger(__name__)

PICTURE_KINDS = frozenset({"image", "keyframe"})
MMR_LAMBDA = 0.5
"""Weight of relevance against novelty in `mmr` (1.0 would be relevance alone)."""
MMR_FLOOR = 0.95
"""Cosine below which two pictures are not penalised as alike (distinct scenes keep their order)."""
RERANK_NAMES = ("itm", "mmr", "cross-encoder")
"""Rerankers by name, in the order they run when several are asked for."""


def mmr_order(
    relevance: np.ndarray, vectors: np.ndarray, *, lam: float = MMR_LAMBDA, floor: float = MMR_FLOOR
) -> tuple[list[int], list[float]]:
    """Greedy MMR order of rows; returns (order, each row's penalty when it was placed).

    ``relevance`` is any score (rescaled to [0, 1] here); ``vectors`` are unit rows.
    """
    n = len(relevance)
    if n == 0:
        return [], []
    rel = np.asarray(relevance, np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    sims = np.asarray(vectors, np.float64) @ np.asarray(vectors, np.float64).T
    alike = np.clip((sims - floor) / (1.0 - floor), 0.0, None)
    penalty = np.zeros(n)
    left = list(range(n))
    order, placed_penalty = [], []
    while left:
        gains = [lam * rel[i] - (1 - lam) * penalty[i] for i in left]
        best = left[int(np.argmax(gains))]
        order.append(best)
        placed_penalty.append(float(penalty[best]))
        left.remove(best)
        penalty = np.maximum(penalty, alike[best])
    return order, placed_penalty


class MmrStage:
    """Diversity among the pictures of the window (see the module docstring)."""

    name = "mmr"

    def __call__(self, query: Query, candidates: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        window = candidates[: query.rerank_depth]
        slots = [i for i, c in enumerate(window) if c.record.kind in PICTURE_KINDS]
        if len(slots) < 2:
            return candidates
        pictures = [window[i] for i in slots]
        ids, vectors = ctx.collection.vectors.vectors(np.array([c.id for c in pictures], np.int64))
        if len(ids) != len(pictures):  # deleted meanwhile: leave the order alone
            return candidates
        order, penalties = mmr_order(np.array([c.relevance for c in pictures]), vectors)
        out = list(window)
        for slot, (row, penalty) in zip(slots, zip(order, penalties)):
            chosen = pictures[row]
            chosen.parts.append(ScorePart("mmr", -penalty, slots.index(slot) + 1))
            out[slot] = chosen
        return out + candidates[len(window) :]


class CrossEncoderStage:
    """Passages reordered by a text cross-encoder reading the query and the passage together."""

    name = "cross-encoder"

    def __init__(self, model: Callable[[list[tuple[str, str]]], np.ndarray]) -> None:
        self.predict = model

    def __call__(self, query: Query, candidates: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        text = " ".join(str(t.value) for t in query.texts if t.positive)
        window = candidates[: query.rerank_depth]
        slots = [i for i, c in enumerate(window) if c.record.kind in PASSAGE_KINDS and c.record.text]
        if not text or len(slots) < 2:
            return candidates
        passages = [window[i] for i in slots]
        scores = np.asarray(self.predict([(text, c.record.text) for c in passages]), np.float64)
        order = np.argsort(-scores, kind="stable")
        out = list(window)
        for rank, (slot, row) in enumerate(zip(slots, order), start=1):
            chosen = passages[int(row)]
            chosen.parts.append(ScorePart("cross-encoder", float(scores[row]), rank))
            out[slot] = chosen
        return out + candidates[len(window) :]


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """The rerankers asked for, in running order; ``none`` alone turns them all off."""
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in RERANK_NAMES]
    if bad or "none" in names:
        raise ConfigError(
            f"Unknown reranker {', '.join(bad) or 'none (with others)'}; choose from "
            f"{', '.join(RERANK_NAMES)}, or --rerank none alone to turn them off."
        )
    return tuple(n for n in RERANK_NAMES if n in names)
