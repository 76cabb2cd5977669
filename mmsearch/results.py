"""Typed search results and status, shared by the Engine, the CLI and the HTTP API."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ScorePart:
    """What one ranker or stage said about a result: its own score and the rank it gave."""

    source: str  # "clip", "text" (sentence model), "keyword", a reranker's or personaliser's name
    score: float  # that source's own scale: a cosine, a negated bm25, a model's probability
    rank: int | None = None  # 1-based rank in that source's list (among the same modality for clip)


@dataclass(frozen=True)
class Moment:
    """A neighbouring moment of the same video or recording, folded into a grouped result."""

    item_id: int
    start: float | None
    end: float | None


@dataclass(frozen=True)
class SearchResult:
    """One hit: an item (image, keyframe, transcript window or text chunk) of one file."""

    rank: int
    score: float  # the score that orders results (CLIP cosine or fused, handed out in the
    # order the rerankers chose; each ranker's own score is in `parts`)
    path: str  # the file the item belongs to
    kind: str  # item kind: image, keyframe, transcript, text
    asset_kind: str  # file kind: image, video, audio, text
    item_id: int  # the item's id in the catalog and the vector index
    start: float | None = None  # seconds, for items with a time span
    end: float | None = None
    text: str | None = None  # the matched passage of a transcript or document
    date: float | None = None  # when taken (else modified), POSIX seconds
    parts: tuple[ScorePart, ...] = ()  # who said what: rankers first, then later stages
    moments: tuple[Moment, ...] = ()  # neighbouring moments folded into this one
    tags: tuple[str, ...] = ()  # the picture's zero-shot tags, most confident first

    def part(self, source: str) -> ScorePart | None:
        """The score part of one source, or None when it did not judge this result."""
        return next((p for p in self.parts if p.source == source), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the one shape of the CLI's --json and the HTTP API.

        `start`/`end` only where the item has a time span, `text` only where set; `parts` as
        ``{source: {score, rank}}``; `moments` only for grouped results.
        """
        d = asdict(self)
        for key in ("start", "end", "text", "date"):
            if d[key] is None:
                del d[key]
        d["parts"] = {p.source: {"score": p.score, "rank": p.rank} for p in self.parts}
        d["tags"] = list(self.tags)
        if self.moments:
            d["moments"] = [asdict(m) for m in self.moments]
        else:
            del d["moments"]
        return d


class SearchResults(list[SearchResult]):
    """One page of results (a list), with the query that produced it and what it cost."""

    def __init__(
        self,
        hits: list[SearchResult],
        *,
        query: Any = None,
        took_ms: float = 0.0,
        count: int | None = None,
    ) -> None:
        super().__init__(hits)
        self.query = query  # the `Query` that was run
        self.took_ms = took_ms
        self.count = count  # results scoring at least `min_score`, when counted


@dataclass(frozen=True)
class FolderStatus:
    path: str
    added_at: float


@dataclass(frozen=True)
class CollectionStatus:
    """What `mmsearch status` shows: model, folders, counts by kind, index type, disk used."""

    home: str
    model: str | None
    dim: int | None
    folders: list[FolderStatus]
    assets_by_kind: dict[str, int]
    items_by_kind: dict[str, int]
    index_kind: str | None
    index_count: int | None
    disk_bytes: int
    catalog_health: str = "ok"  # "ok", or what the integrity check found
    index_state: str = "level"  # "level", "behind", "missing", "foreign" (another home's)
    patches_stored: int = 0  # pictures with patch features (what the itm reranker reads)
    patches_missing: int = 0  # pictures stored without them (`index --patches` adds them)
    patch_bytes_per_item: int | None = None  # stored size of one picture's patch features
    itm: str | None = None  # the image-text matching model that reranks by default, if any

    @property
    def healthy(self) -> bool:
        return self.catalog_health == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
