"""Typed search results and status, shared by the Engine, the CLI and the HTTP API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchResult:
    """One hit: an item (image, keyframe, transcript window or text chunk) of one file."""

    rank: int
    score: float  # cosine similarity in the collection's CLIP space (or fused score, see `query`)
    path: str  # the file the item belongs to
    kind: str  # item kind: image, keyframe, transcript, text
    asset_kind: str  # file kind: image, video, audio, text
    item_id: int  # the item's id in the catalog and the vector index
    start: float | None = None  # seconds, for items with a time span
    end: float | None = None
    text: str | None = None  # the matched passage of a transcript or document
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. grouped item ids of one video

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `start`/`end` only where the item has a time span, `text` only where set."""
        d = asdict(self)
        for key in ("start", "end", "text"):
            if d[key] is None:
                del d[key]
        if not d["extra"]:
            del d["extra"]
        return d


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
