"""The read path as a list of stages over candidates:

    embed -> allow-list (filters, in SQL) -> candidates per ranker (allow-list pushed down)
          -> fuse -> rerank -> personalize -> min score -> group -> cut-off -> sort -> page

Each stage is a small function or a `Stage` object; a new capability (a reranker, a
personaliser) is a new stage, not an edit of a long function. Every ranker and stage reports
its own `ScorePart`, so results can explain their place (`--explain`).

Filters are never applied after the fact: the catalog turns them into an id allow-list, which
the vector stores and keyword search honour inside their own search, so a filter that keeps 1%
of the collection still returns k results. The only loop left widens the candidate depth when
grouping folded many moments of one video into one result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mmsearch.catalog import PASSAGE_KINDS
from mmsearch.query.cutoff import score_gap_cutoff
from mmsearch.query.embed import EmbeddedQuery, embed_query
from mmsearch.query.fusion import Ranking, reciprocal_rank_fusion
from mmsearch.query.group import group_adjacent
from mmsearch.query.model import Query
from mmsearch.results import Moment, ScorePart, SearchResult, SearchResults

if TYPE_CHECKING:
    from mmsearch.catalog import ItemRecord
    from mmsearch.models import Encoder
    from mmsearch.models.sentence import TextEncoder
    from mmsearch.store import Collection

log = logging.getLogger(__name__)

PASSAGE_FILE_KINDS = frozenset({"video", "audio", "text", "image"})
"""File kinds that can hold passages (transcripts, text chunks, words read in pictures)."""
FUSION_WEIGHTS = {"clip": 1.0, "text": 1.0, "keyword": 1.0}
"""RRF weight of each ranker for text queries; equal, as in plain RRF, until evaluation says otherwise."""

TEXT_MIN_SCORE = 0.2
"""The sentence model's cosine below which it does not vouch for a passage. It ranks every
passage, so in a collection of a few notes an unrelated one was its first and, fused, tied the
best picture (a shopping list first for "red"). With the bundled all-MiniLM-L6-v2, ten queries
against six notes (2026-12-03): a query and the note it is about 0.30-0.61, one-word "red" and a
note about a red car 0.19, unrelated pairs -0.05-0.23 (all but two under 0.2; "a red circle" and
a shopping list 0.19). A passage under the floor still counts through CLIP and keywords (the
red-car note is found by its word)."""
MIN_DEPTH = 50
"""Candidates each ranker returns at least (the reranking window)."""
_MISSING = object()
MAX_CUTOFF_SCAN = 100
"""Results examined for the score gap of `--cutoff auto`."""


@dataclass
class Candidate:
    """One item on its way through the stages."""

    record: ItemRecord
    score: float
    parts: list[ScorePart] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    placed: float | None = None  # the score of the place a reranker moved it to

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def order_score(self) -> float:
        """What later stages order by: its own `score`, or its place's once a reranker moved it,
        so each stage builds on the order the previous one chose (`score` stays the item's own)."""
        return self.score if self.placed is None else self.placed

    @property
    def relevance(self) -> float:
        """The CLIP cosine to the query: the one absolute score every item has, whatever the
        fused rank, so `min_score`, `--count` and the cut-off mean the same on every query."""
        part = next((p for p in self.parts if p.source == "clip"), None)
        return part.score if part is not None else float("-inf")


class Stage(Protocol):
    """A step that reorders or rescores candidates and says what it did in their `parts`."""

    name: str

    def __call__(
        self, query: Query, candidates: list[Candidate], ctx: SearchContext
    ) -> list[Candidate]: ...


@dataclass
class SearchContext:
    """What the stages run against: the collection, lazily loaded models, and the stage lists."""

    collection: Collection
    encoder: Callable[[], Encoder]
    text_encoder: Callable[[], TextEncoder | None]
    fusion_weights: dict[str, float] = field(default_factory=lambda: dict(FUSION_WEIGHTS))
    reranker: Callable[[str], Stage | None] = lambda _name: None  # a reranker by name (None: unavailable)
    default_rerank: tuple[str, ...] = ("mmr",)  # run when a query names none
    personalizer: Callable[[Query], Stage | None] = lambda _query: None  # the query user's, if any
    unavailable: Callable[[str], str] = lambda _name: ""  # why a reranker cannot run here
    _allowed: dict[tuple, np.ndarray | None] = field(default_factory=dict)


def run_query(query: Query, ctx: SearchContext) -> SearchResults:
    """Run every stage for one query; returns one page of typed results."""
    started = time.perf_counter()
    generation = ctx.collection.refresh()
    with ctx.collection.reading():
        return _run(query, ctx, generation, started)


def _run(query: Query, ctx: SearchContext, generation: int, started: float) -> SearchResults:
    embedded = embed_query(
        query, ctx.collection, ctx.encoder, ctx.text_encoder,
        passages=_wants_passages(query, ctx.collection),
    )  # fmt: skip
    allowed = allow_list(query, generation, ctx)
    available = ctx.collection.vectors.count if allowed is None else len(allowed)
    wanted = query.offset + query.k
    if query.sort != "relevance":
        wanted = max(wanted, query.pool)
    if query.cutoff:
        wanted = max(wanted, MAX_CUTOFF_SCAN)
    depth = max(MIN_DEPTH, 4 * wanted)
    while True:
        lists = candidate_lists(query, embedded, allowed, depth, ctx)
        hits = fuse(lists, ctx)
        add_missing_clip_scores(hits, embedded, ctx)
        stages = stages_for(query, ctx)
        for stage in stages:
            hits = stage(query, hits, ctx)
        if query.min_score is not None:
            hits = [h for h in hits if h.relevance >= query.min_score]
        if stages:
            settle_scores(hits[: query.rerank_depth])
        if query.group:
            hits = group_adjacent(hits)
        if len(hits) >= wanted or depth >= available:
            break
        depth *= 4
    if query.cutoff == "auto":
        hits = relevance_cutoff(hits)
    if query.sort != "relevance":
        pool = hits if query.cutoff else hits[: max(query.pool, query.offset + query.k)]
        hits = sort_by_date(pool, newest_first=query.sort == "-date")
    page = hits[query.offset : query.offset + query.k]
    tags = ctx.collection.catalog.tags_of(c.id for c in page)
    results = [
        to_result(c, rank, tuple(t for t, _ in tags.get(c.id, ())))
        for rank, c in enumerate(page, start=query.offset + 1)
    ]
    took = (time.perf_counter() - started) * 1000
    return SearchResults(results, query=query, took_ms=took)


def count_matches(query: Query, ctx: SearchContext) -> int:
    """How many items have a CLIP cosine of at least `query.min_score` (within the filters),
    the same score `min_score` compares in a search."""
    if query.min_score is None:
        from mmsearch.errors import QueryError

        raise QueryError(
            "Counting needs a score to count above: give a minimum score (--min-score; over "
            "HTTP min_score=)."
        )
    generation = ctx.collection.refresh()
    with ctx.collection.reading():
        return _count(query, ctx, generation)


def _count(query: Query, ctx: SearchContext, generation: int) -> int:
    embedded = embed_query(query, ctx.collection, ctx.encoder, ctx.text_encoder, passages=False)
    allowed = allow_list(query, generation, ctx)
    store = ctx.collection.vectors
    total = store.count if allowed is None else len(allowed)
    k = min(total, 256)
    while k:
        scores, ids = store.search(embedded.clip[None, :], k, allowed)
        above = int(((scores[0] >= query.min_score) & (ids[0] >= 0)).sum())
        if above < k or k >= total:
            return above - len(embedded.exclude & set(ids[0][:above].tolist()))
        k = min(total, k * 4)
    return 0


# ------------------------------------------------------------------------- stages


def stages_for(query: Query, ctx: SearchContext) -> list[Stage]:
    """The rerankers this query runs (its own choice, else the defaults that are available),
    then the personaliser of its user."""
    stages: list[Stage] = []
    for name in ctx.default_rerank if query.rerank is None else query.rerank:
        stage = ctx.reranker(name)
        if stage is None and query.rerank is not None:
            from mmsearch.errors import ConfigError

            why = ctx.unavailable(name)
            raise ConfigError(
                f"The {name} reranker is not available for this collection"
                + (f": {why}" if why else ".")
            )
        if stage is not None:
            stages.append(stage)
    personal = ctx.personalizer(query)
    return stages + ([personal] if personal is not None else [])


def allow_list(query: Query, generation: int, ctx: SearchContext) -> np.ndarray | None:
    """The ids the filters allow (sorted), or None for no filter; cached per catalog generation."""
    filters = query.filters
    if not filters.on_assets:
        return None
    key = (generation, filters)
    found = ctx._allowed.get(key, _MISSING)
    if found is _MISSING:  # searches run in threads: never read a key another one may clear
        found = ctx.collection.catalog.filtered_item_ids(filters)
        if len(ctx._allowed) > 32:
            ctx._allowed.clear()
        ctx._allowed[key] = found
    return found


def candidate_lists(
    query: Query,
    embedded: EmbeddedQuery,
    allowed: np.ndarray | None,
    depth: int,
    ctx: SearchContext,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each ranker's top ``depth`` as ``(ids, scores)``, best first, the allow-list pushed down."""
    collection = ctx.collection
    skip = embedded.exclude
    scores, ids = collection.vectors.search(embedded.clip[None, :], depth + len(skip), allowed)
    lists = {"clip": _clean(ids[0], scores[0], skip, depth)}
    if not _wants_passages(query, collection):
        return lists
    passages = collection.passages
    usable = passages is not None and passages.count and embedded.sentence is not None
    if usable and embedded.sentence.shape[0] == passages.dim:
        t_scores, t_ids = passages.search(embedded.sentence[None, :], depth + len(skip), allowed)
        vouched = t_scores[0] >= TEXT_MIN_SCORE  # may leave none: the ranker still judged them
        lists["text"] = _clean(t_ids[0][vouched], t_scores[0][vouched], skip, depth)
    if embedded.keywords and collection.catalog.has_keyword_index:
        found = collection.catalog.keyword_search(embedded.keywords, depth + len(skip), allowed)
        ids_k = np.array([i for i, _ in found], np.int64)
        lists["keyword"] = _clean(ids_k, np.array([s for _, s in found], np.float32), skip, depth)
    return lists


def fuse(lists: dict[str, tuple[np.ndarray, np.ndarray]], ctx: SearchContext) -> list[Candidate]:
    """One list of candidates, best first, with every ranker's score part.

    CLIP alone: its cosine order. With passage rankers: reciprocal-rank fusion, see `rrf_fuse`.
    """
    every = np.unique(np.concatenate([ids for ids, _ in lists.values()]))
    records = {r.id: r for r in ctx.collection.catalog.items_by_ids(every.tolist())}
    if set(lists) == {"clip"}:
        ids, scores = lists["clip"]
        out = []
        for rank, (item_id, score) in enumerate(zip(ids.tolist(), scores.tolist()), start=1):
            rec = records.get(item_id)
            if rec is not None:  # deleted since the search: dropped
                out.append(Candidate(rec, float(score), [ScorePart("clip", float(score), rank)]))
        return out
    lists, records = words_onto_pictures(lists, records, ctx.collection.catalog)
    return rrf_fuse(lists, records, ctx.fusion_weights)


def words_onto_pictures(
    lists: dict[str, tuple[np.ndarray, np.ndarray]],
    records: dict[int, ItemRecord],
    catalog,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[int, ItemRecord]]:
    """The words read in a picture (``ocr`` passages of image files) are evidence about the
    picture itself (a video's words stay passages at their moment).

    Their ranks in the word rankers (sentence model, keywords) become the picture's ranks, the
    picture's record carries the words as its text, and the passage leaves the lists (CLIP judges
    the picture by its pixels). Together with `rrf_fuse` counting those rankers as judges of
    every picture whose words were read, a picture found by its words, by the sentence model
    and by CLIP outranks a picture only CLIP liked, as a passage would.
    """
    words = {i: r for i, r in records.items() if r.kind == "ocr" and r.asset.kind == "image"}
    if not words:
        return lists, records
    picture_of = catalog.picture_items_of_assets({r.asset.id for r in words.values()})
    onto = {i: picture_of[r.asset.id] for i, r in words.items() if r.asset.id in picture_of}
    missing = [p for p in set(onto.values()) if p not in records]
    records = {**records, **{r.id: r for r in catalog.items_by_ids(missing)}}
    for word_id, picture in onto.items():
        records[picture] = replace(records[picture], text=words[word_id].text)
    out = {}
    for name, (ids, scores) in lists.items():
        keep, seen = [], set()
        for item, score in zip(ids.tolist(), scores.tolist()):
            if item in words:
                if name == "clip" or item not in onto:
                    continue  # CLIP judges the picture by its pixels; a gone picture: nothing
                item = onto[item]
            if item not in seen:
                seen.add(item)
                keep.append((item, score))
        out[name] = (
            np.array([i for i, _ in keep], np.int64),
            np.array([s for _, s in keep], np.float32),
        )
    return out, records


def rrf_fuse(
    lists: dict[str, tuple[np.ndarray, np.ndarray]],
    records: dict[int, ItemRecord],
    weights: dict[str, float],
) -> list[Candidate]:
    """Fuse the rankers' lists by reciprocal rank (`mmsearch.query.fusion`), best first.

    Rankers: "clip" (every item), "text" (sentence-model cosine, passages) and "keyword" (FTS5
    bm25, passages). CLIP's list is split by modality before fusing: CLIP puts a text query much
    nearer to any passage than to any picture (the modality gap), so a single CLIP list would
    rank every passage above every photo whatever they show. Photos and keyframes are ranked
    among themselves by CLIP (their order is CLIP's), passages by CLIP, the sentence model and
    keywords; each item's score is the weighted mean of 1/(60 + rank) over the rankers that can
    judge it, scaled to (0, 1]. So a photo first for CLIP and a passage first for all three score
    1.0 alike, and passages that only one ranker likes sink. A passage a ranker did not return
    counts 0 there (the sentence model returns only passages above `TEXT_MIN_SCORE`); the keyword
    ranker abstains when no passage has the words.
    """
    is_passage = {i: r.kind in PASSAGE_KINDS for i, r in records.items()}
    rankings: dict[str, Ranking] = {}
    source_of = {"clip:visual": "clip", "clip:passage": "clip"}
    for name, (ids, scores) in lists.items():
        known = [j for j, i in enumerate(ids.tolist()) if i in records]
        if name == "clip":
            for part, passage in (("clip:visual", False), ("clip:passage", True)):
                sel = [j for j in known if is_passage[int(ids[j])] == passage]
                rankings[part] = Ranking(ids[sel].tolist(), scores[sel].tolist())
        else:
            rankings[name] = Ranking(ids[known].tolist(), scores[known].tolist())
            source_of[name] = name
    passage_judges = ["clip:passage"] + [  # keywords abstain when nothing matched the words
        n for n in ("text", "keyword") if n in lists and (n == "text" or len(lists[n][0]))
    ]

    word_judges = passage_judges[1:]

    def covers(item_id: int) -> list[str]:
        if not is_passage[item_id]:  # a picture; its words, when they were read, are judged too
            read = records[item_id].asset.ocr_engine is not None
            return ["clip:visual", *word_judges] if read else ["clip:visual"]
        return passage_judges if records[item_id].text else ["clip:passage"]

    fused = reciprocal_rank_fusion(
        rankings, weights={n: weights.get(source_of[n], 1.0) for n in rankings}, covers=covers
    )
    score_of = {n: dict(zip(r.ids, r.scores or ())) for n, r in rankings.items()}
    out = []
    for f in fused:
        parts = [
            ScorePart(source_of[n], float(score_of[n][f.id]), rank) for n, rank in f.ranks.items()
        ]
        parts.append(ScorePart("rrf", float(f.score)))
        out.append(Candidate(records[f.id], float(f.score), parts))
    return out


def add_missing_clip_scores(
    hits: list[Candidate], embedded: EmbeddedQuery, ctx: SearchContext
) -> None:
    """Give every candidate its CLIP cosine (passages found only by words or the sentence model
    have none yet), from the stored vectors: nothing is re-encoded."""
    missing = [h for h in hits if h.relevance == float("-inf")]
    if not missing:
        return
    ids, vectors = ctx.collection.vectors.vectors(np.array([h.id for h in missing], np.int64))
    score_of = dict(zip(ids.tolist(), (vectors @ embedded.clip).tolist()))
    for h in missing:
        if h.id in score_of:
            h.parts.insert(0, ScorePart("clip", float(score_of[h.id])))


def relevance_cutoff(hits: list[Candidate]) -> list[Candidate]:
    """Keep the results above the score gap after the top hits, judged on CLIP cosines.

    Pictures and passages are judged apart: CLIP scores text much nearer a text query than any
    picture (the modality gap), so one gap over both would only separate the modalities. The
    order of `hits` is kept.
    """
    keep: set[int] = set()
    for passage in (False, True):
        group = sorted(
            (h for h in hits if (h.record.kind in PASSAGE_KINDS) == passage),
            key=lambda h: -h.relevance,
        )
        n = score_gap_cutoff([h.relevance for h in group])
        keep |= {h.id for h in group[:n]}
    return [h for h in hits if h.id in keep]


def sort_by_date(hits: list[Candidate], *, newest_first: bool) -> list[Candidate]:
    """The relevant results in date order (taken, else modified); undated ones last."""
    dated = [h for h in hits if h.record.asset.date_s is not None]
    undated = [h for h in hits if h.record.asset.date_s is None]
    dated.sort(key=lambda h: h.record.asset.date_s, reverse=newest_first)
    return dated + undated


def settle_scores(window: list[Candidate]) -> None:
    """After the rerankers, the window's scores in the order they chose: the same values,
    handed out best first, so shown scores always fall down the page (each result's own CLIP
    cosine stays in its ``clip`` part, and is what ``min_score`` compares)."""
    for candidate, score in zip(window, sorted((c.score for c in window), reverse=True)):
        candidate.score = score


def to_result(c: Candidate, rank: int, tags: tuple[str, ...] = ()) -> SearchResult:
    rec = c.record
    return SearchResult(
        rank=rank, score=c.score, path=rec.path, kind=rec.kind, asset_kind=rec.asset_kind,
        item_id=rec.id, start=rec.start_s, end=rec.end_s, text=rec.text, date=rec.asset.date_s,
        parts=tuple(c.parts), moments=tuple(c.moments), tags=tags,
    )  # fmt: skip


def _wants_passages(query: Query, collection: Collection) -> bool:
    """Text terms over a collection with passages (within the type filter) consult passage rankers."""
    if not query.texts:
        return False
    types = query.filters.types
    if types and not types & PASSAGE_FILE_KINDS:
        return False
    kinds = ("ocr",) if types and types <= {"image"} else None  # pictures: words read in them
    count = collection.derived(
        ("passages", kinds),
        lambda: collection.catalog.passage_count(kinds) if kinds else collection.catalog.passage_count(),
    )
    return count > 0


def _clean(
    ids: np.ndarray, scores: np.ndarray, skip: frozenset[int], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop padding and the query's own items; keep the best ``depth``."""
    keep = ids >= 0
    if skip:
        keep &= ~np.isin(ids, np.fromiter(skip, np.int64))
    return ids[keep][:depth], scores[keep][:depth]


__all__ = ["Candidate", "SearchContext", "Stage", "count_matches", "run_query"]
