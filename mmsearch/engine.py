"""The `Engine` facade: index folders and search them, for programs, the CLI and the HTTP API.

    from mmsearch import Engine
    with Engine(home="~/my-index", model="tiny") as engine:
        engine.index(["~/photos"])
        for hit in engine.search("a red car", k=5):
            print(hit.rank, hit.score, hit.path)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch import paths
from mmsearch.catalog import PASSAGE_KINDS
from mmsearch.collection import Collection
from mmsearch.errors import ConfigError, MissingDependencyError, QueryError
from mmsearch.query.fusion import Fused, Ranking, reciprocal_rank_fusion
from mmsearch.results import CollectionStatus, FolderStatus, SearchResult

if TYPE_CHECKING:
    from PIL import Image

    from indexer.pipeline import IndexOptions, IndexSummary, ProgressReporter
    from mmsearch.catalog import ItemRecord
    from mmsearch.models import Encoder
    from mmsearch.textsearch import TextEncoder
    from mmsearch.vectors import VectorIndex

log = logging.getLogger(__name__)

# `--type` values are file kinds; each maps to the item kinds it produces.
RESULT_TYPES = ("image", "video", "audio", "text")
GROUP_GAP_S = 5.0  # hits of one file whose spans are this close are shown as one hit
PASSAGE_FILE_KINDS = frozenset({"video", "audio", "text"})  # file kinds that can hold passages
TEXT_MODEL_OFF = "none"  # `text_model` value that turns the sentence model off (CLIP + keywords)
FUSION_WEIGHTS = {"clip": 1.0, "text": 1.0, "keyword": 1.0}
"""RRF weight of each ranker for text queries; equal, as in plain RRF, until evaluation says otherwise."""


class Engine:
    """One collection home and its encoder; opens lazily, safe to use as a context manager."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        model: str | None = None,
        *,
        device: str = "auto",
        index_kind: str = "auto",
        catalog_url: str | None = None,
        text_model: str | os.PathLike[str] | None = None,
    ) -> None:
        self.home = paths.data_home(home)
        self.device = device
        self.index_kind = index_kind
        self._catalog_url = catalog_url
        self._requested_model = model
        self._collection: Collection | None = None
        self._encoder: Encoder | None = None
        self._index: VectorIndex | None = None
        self._index_state: tuple[int, int] | None = None  # (item count, max id) the index mirrors
        # Passage matching: None = the bundled MiniLM if installed, TEXT_MODEL_OFF, or a folder.
        self._text_model = text_model
        self._text_encoder: TextEncoder | None = None
        self._text_index: VectorIndex | None = None
        self._text_state: tuple[int, int] | None = None
        self.fusion_weights = dict(FUSION_WEIGHTS)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the catalog connection; the engine can be reopened by using it again."""
        if self._collection is not None:
            self._collection.close()
        self._collection, self._index, self._index_state = None, None, None
        self._text_index, self._text_state = None, None

    def _open(self, create: bool) -> Collection:
        if self._collection is None:
            self._collection = Collection(self.home, create=create, catalog_url=self._catalog_url)
        return self._collection

    @property
    def model_name(self) -> str:
        """The encoder this engine uses: the one asked for, else the collection's, else the default."""
        from mmsearch.models import DEFAULT_MODEL, resolve

        bound = self._bound_model()
        if self._requested_model is None:
            return bound or DEFAULT_MODEL
        name = resolve(self._requested_model).name
        if bound is not None:
            self._open(create=True).check_encoder(name)
        return name

    def _bound_model(self) -> str | None:
        exists = self._catalog_url is not None or (self.home / "catalog.db").exists()
        return self._open(create=False).encoder_name() if exists else None

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use (so `status` never loads a model)."""
        if self._encoder is None:
            from mmsearch.models import load_encoder

            self._encoder = load_encoder(self.model_name, device=self.device)
        return self._encoder

    # ------------------------------------------------------------------ write path

    def index(
        self,
        folders: Iterable[str | os.PathLike[str]],
        *,
        options: IndexOptions | None = None,
        progress: ProgressReporter | None = None,
    ) -> IndexSummary:
        """Index (or re-index incrementally) folders or files; returns what changed and what was skipped."""
        from indexer.pipeline import IndexOptions, run_index

        roots = [Path(p).expanduser() for p in folders]
        if not roots:
            raise ConfigError("Nothing to index: give at least one folder or file.")
        for root in roots:
            if not root.exists():
                raise ConfigError(f"Cannot index {root}: no such file or folder.")
        encoder = self.encoder  # checks the model against the collection before any work
        collection = self._open(create=True)
        with collection.writer_lock():
            summary = run_index(collection, encoder, roots, options or IndexOptions(), progress)
        self._index, self._index_state = None, None
        self._text_state = None
        self._current_text_index()  # embed new passages now rather than at the first query
        return summary

    def rebuild(self, kind: str | None = None) -> int:
        """Rebuild the vector index from the catalog's stored vectors; returns the vector count."""
        index = self._open(create=False).rebuild_index(kind or self.index_kind)
        self._index, self._index_state = None, None
        return index.count

    # ------------------------------------------------------------------ read path

    def _current_index(self, state: tuple[int, int]) -> VectorIndex:
        """The index level with the catalog's committed `state` (re-synced when the catalog moved)."""
        collection = self._open(create=False)
        if self._index is None:
            self._index = collection.open_index(self.index_kind)
        elif state != self._index_state:
            collection.sync_index(self._index)
        self._index_state = state
        return self._index

    def embed_query(
        self, text: str | None = None, image: str | os.PathLike[str] | Image.Image | None = None
    ) -> np.ndarray:
        """The query vector: a sentence through the text tower, or a picture through the image tower."""
        if (text is None) == (image is None):
            raise QueryError("Give either a text query or a query image (--image PATH), not both or neither.")
        if text is not None:
            if not text.strip():
                raise QueryError("The query is empty: type what you are looking for, e.g. \"a red car\".")
            return self.encoder.encode_texts([text.strip()])[0]
        return self.encoder.encode_images([_load_query_image(image)])[0]

    def search(
        self,
        query: str | None = None,
        k: int = 10,
        *,
        image: str | os.PathLike[str] | Image.Image | None = None,
        types: Sequence[str] | None = None,
        group: bool = True,
    ) -> list[SearchResult]:
        """Top-k results for a text or image query, optionally only some file types, video hits grouped."""
        if k < 1:
            raise QueryError(f"k must be at least 1, not {k}.")
        wanted = _check_types(types)
        self._check_model()
        vector = self.embed_query(query, image)
        state = _catalog_state(self._open(create=False))  # one read serves both indexes
        index = self._current_index(state)
        collection = self._open(create=False)
        fuse = query is not None and self._wants_fusion(collection, wanted)
        fetch = k if not (wanted or group or fuse) else max(4 * k, 50)
        if fuse:
            retrieve = self._fused_retriever(query, vector, index, wanted, state)
        else:

            def retrieve(n: int) -> list[SearchResult]:
                scores, ids = index.search(vector[None, :], min(n, max(index.count, 1)))
                return _resolve(collection, scores[0], ids[0], wanted)

        while True:
            hits = retrieve(fetch)
            if group:
                hits = _group_adjacent(hits)
            if len(hits) >= k or fetch >= index.count:
                break
            fetch *= 4
        return [_with_rank(h, rank) for rank, h in enumerate(hits[:k], start=1)]

    # ------------------------------------------------------------------ passages: text model + keywords

    def _wants_fusion(self, collection: Collection, wanted: set[str] | None) -> bool:
        """Text queries over a collection with passages fuse CLIP, sentence-model and keyword ranks."""
        if wanted is not None and not wanted & PASSAGE_FILE_KINDS:
            return False
        return collection.catalog.passage_count() > 0

    @property
    def text_encoder(self) -> TextEncoder | None:
        """The sentence model for passages (not loaded until used), or None when turned off."""
        if self._text_model is not None and str(self._text_model).lower() == TEXT_MODEL_OFF:
            return None
        if self._text_encoder is None:
            from mmsearch.textsearch import TextEncoder

            self._text_encoder = TextEncoder(self._text_model, device=self.device)
        return self._text_encoder

    def _text_off(self, exc: MissingDependencyError) -> None:
        """Without the optional text extra, run on CLIP and keywords, and say so once.

        A text model the user named is required, not optional: that error propagates.
        """
        if self._text_model is not None:
            raise exc
        log.warning("passage matching with a sentence model is off: %s", exc)
        self._text_model = TEXT_MODEL_OFF

    def _current_text_index(self, state: tuple[int, int] | None = None) -> VectorIndex | None:
        """The passage index level with the catalog's `state` (read if not given); None without passages or a text model."""
        from mmsearch.textsearch import sync_text_index

        collection = self._open(create=False)
        state = state or _catalog_state(collection)
        if state == self._text_state:
            return self._text_index
        encoder = self.text_encoder
        if encoder is None:
            return None
        try:
            self._text_index = sync_text_index(collection, encoder, self._text_index)
        except MissingDependencyError as exc:
            self._text_off(exc)
            return None
        self._text_state = state
        return self._text_index

    def _embed_text_query(self, query: str) -> np.ndarray | None:
        encoder = self.text_encoder
        if encoder is None:
            return None
        try:
            return encoder.encode([query.strip()])[0]
        except MissingDependencyError as exc:
            self._text_off(exc)
            return None

    def _fused_retriever(
        self, query: str, vector: np.ndarray, index: VectorIndex, wanted: set[str] | None,
        state: tuple[int, int],
    ) -> Callable[[int], list[SearchResult]]:
        """A function n -> fused hits from the top n of each ranker (see `_fuse` for the rules)."""
        from mmsearch.textsearch import search_text_index

        collection = self._open(create=False)
        text_index = self._current_text_index(state)
        text_vector = self._embed_text_query(query) if text_index is not None else None

        def retrieve(n: int) -> list[SearchResult]:
            scores, ids = index.search(vector[None, :], min(n, max(index.count, 1)))
            keep = ids[0] >= 0
            lists = {"clip": (ids[0][keep], scores[0][keep])}
            if text_vector is not None:
                t_scores, t_ids = search_text_index(text_index, text_vector, n)
                lists["text"] = (t_ids, t_scores)
            if collection.catalog.has_keyword_index:
                found = collection.catalog.keyword_search(query.strip(), n)
                lists["keyword"] = (
                    np.array([i for i, _ in found], np.int64),
                    np.array([s for _, s in found], np.float32),
                )
            return _fuse(collection, lists, wanted, self.fusion_weights)

        return retrieve

    def _check_model(self) -> None:
        collection = self._open(create=False)
        if collection.encoder_name() is None:
            raise ConfigError(f"The collection at {self.home} is empty: index a folder first (mmsearch index PATH).")
        _ = self.model_name  # raises EncoderMismatchError for another model

    # ------------------------------------------------------------------ status

    def status(self) -> CollectionStatus:
        """Model, folders, counts by kind, index type and disk use, without loading any model."""
        collection = self._open(create=False)
        info = collection.catalog.encoder()
        sidecar = collection.index_info() or {}
        return CollectionStatus(
            home=str(self.home),
            model=info.name if info else None,
            dim=info.dim if info else None,
            folders=[FolderStatus(f.path, f.added_at) for f in collection.catalog.list_folders()],
            assets_by_kind=collection.catalog.asset_counts(),
            items_by_kind=collection.catalog.item_counts(),
            index_kind=sidecar.get("kind"),
            index_count=sidecar.get("count"),
            disk_bytes=collection.disk_bytes(),
        )


def _catalog_state(collection: Collection) -> tuple[int, int]:
    """(item count, max item id): changes on every commit, since ids are never reused."""
    return int(sum(collection.catalog.item_counts().values())), collection.catalog.max_item_id()


def _check_types(types: Sequence[str] | None) -> set[str] | None:
    if not types:
        return None
    bad = [t for t in types if t not in RESULT_TYPES]
    if bad:
        raise QueryError(f"Unknown result type {', '.join(bad)}; choose from {', '.join(RESULT_TYPES)}.")
    return set(types)


def _load_query_image(image: Any) -> Image.Image:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from indexer.sources.image import read_image
    from mmsearch.errors import DecodeError

    try:
        return read_image(Path(image)).items[0].image
    except DecodeError as exc:
        raise QueryError(f"Cannot use {image} as a query image: {exc}") from exc


def _resolve(collection: Collection, scores: np.ndarray, ids: np.ndarray, wanted: set[str] | None) -> list[SearchResult]:
    """Catalog rows for the hits, in score order; ids the catalog no longer has are dropped."""
    keep = ids >= 0
    records = {r.id: r for r in collection.catalog.items_by_ids(ids[keep].tolist())}
    hits = []
    for score, item_id in zip(scores[keep], ids[keep]):
        rec = records.get(int(item_id))
        if rec is None or (wanted and rec.asset_kind not in wanted):
            continue
        hits.append(
            SearchResult(
                rank=0, score=float(score), path=rec.path, kind=rec.kind, asset_kind=rec.asset_kind,
                item_id=rec.id, start=rec.start_s, end=rec.end_s, text=rec.text,
            )
        )
    return hits


def _fuse(
    collection: Collection,
    lists: dict[str, tuple[np.ndarray, np.ndarray]],
    wanted: set[str] | None,
    weights: dict[str, float],
) -> list[SearchResult]:
    """Fuse the rankers' top lists by reciprocal rank (`mmsearch.query.fusion`), best first.

    Rankers: "clip" (every item), "text" (sentence-model cosine, passages) and "keyword" (FTS5
    bm25, passages). CLIP's list is split by modality before fusing: CLIP puts a text query much
    nearer to any passage than to any picture (the modality gap), so a single CLIP list would
    rank every passage above every photo whatever they show. Photos and keyframes are ranked
    among themselves by CLIP (their order is CLIP's), passages by CLIP, the sentence model and
    keywords; each item's score is the weighted mean of 1/(60 + rank) over the rankers that can
    judge it, scaled to (0, 1]. So a photo first for CLIP and a passage first for all three score
    1.0 alike, and passages that only one ranker likes sink. A passage a ranker did not return
    counts 0 there (the keyword list holds only passages sharing a content word with the query);
    a ranker that returned nothing at all abstains.

    ``score`` is that fused score. ``extra`` holds the evidence: ``clip``, ``text`` (cosines) and
    ``keyword`` (bm25, higher is better) for the lists that returned the item, and their ranks
    (``ranks``, 1-based, among items of the same modality for ``clip``).
    """
    every = np.unique(np.concatenate([ids for ids, _ in lists.values()]))
    records = {r.id: r for r in collection.catalog.items_by_ids(every.tolist())}
    is_passage = {i: r.kind in PASSAGE_KINDS for i, r in records.items()}
    rankings: dict[str, Ranking] = {}
    names = {"clip:visual": "clip", "clip:passage": "clip"}
    for name, (ids, scores) in lists.items():
        known = [j for j, i in enumerate(ids.tolist()) if i in records]
        if name == "clip":
            for part, passage in (("clip:visual", False), ("clip:passage", True)):
                sel = [j for j in known if is_passage[int(ids[j])] == passage]
                rankings[part] = Ranking(ids[sel].tolist(), scores[sel].tolist())
        else:
            rankings[name] = Ranking(ids[known].tolist(), scores[known].tolist())
            names[name] = name
    # A ranker that found nothing (no shared words) abstains rather than judging every passage 0.
    passage_judges = ["clip:passage"] + [
        n for n in ("text", "keyword") if n in lists and len(lists[n][0])
    ]

    def covers(item_id: int) -> list[str]:
        if not is_passage[item_id]:
            return ["clip:visual"]
        return passage_judges if records[item_id].text else ["clip:passage"]

    fused = reciprocal_rank_fusion(
        rankings, weights={n: weights.get(names[n], 1.0) for n in rankings}, covers=covers
    )
    evidence: dict[str, dict[int, float]] = {}
    for n, r in rankings.items():
        evidence.setdefault(names[n], {}).update(zip(r.ids, r.scores or ()))
    return [
        _fused_result(f, records[f.id], evidence, names)
        for f in fused
        if not (wanted and records[f.id].asset_kind not in wanted)
    ]


def _fused_result(
    fused: Fused, rec: ItemRecord, evidence: dict[str, dict[int, float]], names: dict[str, str]
) -> SearchResult:
    extra: dict[str, Any] = {"fusion": "rrf", "ranks": {names[n]: r for n, r in fused.ranks.items()}}
    for source, scores in evidence.items():
        if fused.id in scores:
            extra[source] = float(scores[fused.id])
    return SearchResult(
        rank=0, score=float(fused.score), path=rec.path, kind=rec.kind, asset_kind=rec.asset_kind,
        item_id=rec.id, start=rec.start_s, end=rec.end_s, text=rec.text, extra=extra,
    )


def _group_adjacent(hits: list[SearchResult]) -> list[SearchResult]:
    """Fold hits of one file whose time spans touch into its best hit, so one video can't flood the top-k.

    The folded hit keeps the best moment's span and score (the moment to seek to); the folded
    neighbours are listed in `extra["grouped"]` as {item_id, start, end}. Hits arrive best first.
    """
    out: list[SearchResult] = []
    reach: list[tuple[float, float] | None] = []  # time range covered by each kept group
    for hit in hits:
        if hit.start is None:
            out.append(hit)
            reach.append(None)
            continue
        end = hit.end if hit.end is not None else hit.start
        for i, kept in enumerate(out):
            span = reach[i]
            if span is None or kept.path != hit.path or kept.kind != hit.kind:
                continue
            if hit.start <= span[1] + GROUP_GAP_S and span[0] <= end + GROUP_GAP_S:
                member = {"item_id": hit.item_id, "start": hit.start, "end": hit.end}
                out[i] = replace(kept, extra={**kept.extra, "grouped": kept.extra.get("grouped", []) + [member]})
                reach[i] = (min(span[0], hit.start), max(span[1], end))
                break
        else:
            out.append(hit)
            reach.append((hit.start, end))
    return out


def _with_rank(hit: SearchResult, rank: int) -> SearchResult:
    return replace(hit, rank=rank)
