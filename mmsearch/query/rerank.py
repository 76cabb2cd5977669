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
  the places pictures hold; passages keep theirs. Keyframes of one video are never alike to one
  another: the same scene at another time is another moment (adjacent ones are folded by
  grouping instead).
- ``cross-encoder``: a sentence-transformers `CrossEncoder` reads (query, passage) pairs together
  and reorders passages. It needs weights (a local folder, or a hub name with network access);
  without them it is off and says so.
- ``itm``: image-text matching. An ITM model reads the query's text and each candidate picture
  together and gives a match probability (BLIP's retrieval recipe: CLIP proposes, a
  cross-attention model disposes); the pictures of the window are reordered by it, among the
  places pictures hold. The bundled ``tiny-itm`` reads the patch features stored at index time
  (`Collection.patches`), so it never opens a file; pictures stored without them keep their
  places. A pixel-reading model (BLIP) opens each candidate picture instead (the stored
  thumbnail of a keyframe). It judges plain descriptions only: a query with a word the model
  never learned (`ImageTextMatcher.understands`), or a compound query (pictures, items,
  ``- red``), is left to CLIP.
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
    from mmsearch.catalog import ItemRecord
    from mmsearch.models.itm import ImageTextMatcher
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
    relevance: np.ndarray, vectors: np.ndarray, *, lam: float = MMR_LAMBDA, floor: float = MMR_FLOOR,
    unpenalised: np.ndarray | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy MMR order of rows; returns (order, each row's penalty when it was placed).

    ``relevance`` is any score (rescaled to [0, 1] here); ``vectors`` are unit rows;
    ``unpenalised[i, j]`` true: rows i and j never count as alike.
    """
    n = len(relevance)
    if n == 0:
        return [], []
    rel = np.asarray(relevance, np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    sims = np.asarray(vectors, np.float64) @ np.asarray(vectors, np.float64).T
    alike = np.clip((sims - floor) / (1.0 - floor), 0.0, None)
    if unpenalised is not None:
        alike[unpenalised] = 0.0
    penalty = np.zeros(n)
    placed = np.zeros(n, bool)
    order, placed_penalty = [], []
    for _ in range(n):
        gains = np.where(placed, -np.inf, lam * rel - (1 - lam) * penalty)
        best = int(np.argmax(gains))  # the first of equal gains: the earlier row, as before
        order.append(best)
        placed_penalty.append(float(penalty[best]))
        placed[best] = True
        penalty = np.maximum(penalty, alike[best])
    return order, placed_penalty


def place(
    candidates: list[Candidate], slots: list[int], chosen: list[Candidate]
) -> list[Candidate]:
    """Put `chosen` into `slots`, in order; each takes its slot's order score (`placed`).

    A reranker changes the order of some places, not the scale of the scores: later stages (the
    next reranker, the bounded personal shift) read ``order_score`` and so build on this order,
    while ``score`` stays the item's own (what results show and ``min_score`` means).
    """
    out = list(candidates)
    slot_scores = [candidates[s].order_score for s in slots]
    for slot, score, candidate in zip(slots, slot_scores, chosen, strict=True):
        candidate.placed = score
        out[slot] = candidate
    return out


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
        video = np.array([c.record.path if c.record.kind == "keyframe" else "" for c in pictures])
        same_video = (video[:, None] == video[None, :]) & (video[:, None] != "")
        order, penalties = mmr_order(
            np.array([c.order_score for c in pictures]), vectors, unpenalised=same_video
        )
        for row, penalty, rank in zip(order, penalties, range(1, len(order) + 1)):
            pictures[row].parts.append(ScorePart("mmr", -penalty, rank))
        return place(candidates, slots, [pictures[row] for row in order])


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
        for rank, row in enumerate(order, start=1):
            passages[int(row)].parts.append(ScorePart("cross-encoder", float(scores[row]), rank))
        return place(candidates, slots, [passages[int(r)] for r in order])


class ItmStage:
    """Pictures of the window reordered by an image-text matching model (module docstring)."""

    name = "itm"

    def __init__(self, model: ImageTextMatcher) -> None:
        self.model = model

    def __call__(self, query: Query, candidates: list[Candidate], ctx: SearchContext) -> list[Candidate]:
        text = _description(query)
        window = candidates[: query.rerank_depth]
        slots = [i for i, c in enumerate(window) if c.record.kind in PICTURE_KINDS]
        if not text or len(slots) < 2 or not _understands(self.model, text):
            return candidates
        slots, scores = self._score(text, [window[i] for i in slots], slots, ctx)
        if len(slots) < 2:
            return candidates
        by_slot = {i: window[i] for i in slots}
        pictures = [by_slot[i] for i in slots]
        order = np.argsort(-scores, kind="stable")
        for rank, row in enumerate(order, start=1):
            pictures[int(row)].parts.append(ScorePart("itm", float(scores[row]), rank))
        return place(candidates, slots, [pictures[int(r)] for r in order])

    def _score(
        self, text: str, pictures: list[Candidate], slots: list[int], ctx: SearchContext
    ) -> tuple[list[int], np.ndarray]:
        """(the slots whose pictures could be scored, their match probabilities)."""
        if self.model.input == "patches":
            ids, patches = ctx.collection.patches(np.array([c.id for c in pictures], np.int64))
            have = set(ids.tolist())
            kept = [s for s, c in zip(slots, pictures) if c.id in have]
            row_of = {int(i): r for r, i in enumerate(ids)}
            rows = [row_of[c.id] for c in pictures if c.id in have]
            if len(kept) < 2:
                return kept, np.empty(0)
            return kept, np.asarray(self.model.score_one(text, patches[rows]), np.float64)
        images, kept = [], []
        for slot, c in zip(slots, pictures):
            image = _picture_of(c.record, ctx)
            if image is not None:
                images.append(image)
                kept.append(slot)
        if len(kept) < 2:
            return kept, np.empty(0)
        return kept, np.asarray(self.model.score_one(text, images), np.float64)


def _description(query: Query) -> str:
    """The query's text when the query is one plain description, else "" (no ITM).

    A compound query (a picture, an item, "- red") is vector arithmetic that an ITM
    model cannot read; judging only its words would undo what the other terms asked for.
    """
    if len(query.terms) != 1:
        return ""
    term = query.terms[0]
    if term.kind != "text" or not term.positive:
        return ""
    return str(term.value).strip().strip(" .!?")


def _understands(model: ImageTextMatcher, text: str) -> bool:
    understands = getattr(model, "understands", None)
    return True if understands is None else bool(understands(text))


def _picture_of(record: ItemRecord, ctx: SearchContext):
    """A candidate picture for a pixel-reading ITM model: the file, or a keyframe's thumbnail."""
    from mmsearch.errors import QueryError
    from mmsearch.query.embed import load_query_image

    try:
        if record.kind == "keyframe":
            found = ctx.collection.catalog.items_by_ids([record.id], with_thumbnails=True)
            thumb = found[0].thumbnail if found else None
            return load_query_image(thumb, f"keyframe {record.id}") if thumb else None
        return load_query_image(record.path, record.path)
    except QueryError as exc:  # gone or unreadable since indexing: it keeps its place
        log.info("itm: %s", exc)
        return None


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
