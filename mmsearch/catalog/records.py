"""What the catalog stores and returns, as plain records (no SQLAlchemy): the read path builds
them from rows without importing the ORM (`mmsearch.catalog.reader`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import NamedTuple

import numpy as np

from mmsearch.errors import CatalogError

PATCH_DTYPE = np.dtype("<f2")
"""How patch features are stored: little-endian float16 (4 KB per item for P x D = 4 x 512)."""


@dataclass(frozen=True)
class AssetInfo:
    """An asset's fields: passed in by the indexer, and returned (with ``id``) by lookups."""

    path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str
    folder_id: int | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    taken_at: datetime | None = None
    camera: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    transcript_backend: str | None = None
    ocr_engine: str | None = None  # the OCR engine that read its words (pictures, with --ocr)
    id: int | None = None  # set when read back
    indexed_at: float | None = None  # set when read back
    date_s: float | None = None  # set when read back: taken_at, else mtime (POSIX seconds)




ASSET_INFO_FIELDS = tuple(f.name for f in fields(AssetInfo))
"""`AssetInfo`'s fields, in order: the asset columns a lookup selects."""


class ItemData(NamedTuple):
    """One item to store; plain ``(kind, start, end, text, vector, thumbnail)`` tuples work too."""

    kind: str
    start_s: float | None
    end_s: float | None
    text: str | None
    vector: np.ndarray
    thumbnail: bytes | None = None
    text_vector: np.ndarray | None = None  # a passage's sentence-model vector
    patches: np.ndarray | None = None  # a picture's patch features (P, D), for the ITM reranker


@dataclass(frozen=True)
class ItemRecord:
    """An item joined with its asset, as search results need it."""

    id: int
    kind: str
    start_s: float | None
    end_s: float | None
    text: str | None
    asset: AssetInfo
    thumbnail: bytes | None = None

    @property
    def path(self) -> str:
        return self.asset.path

    @property
    def asset_kind(self) -> str:
        return self.asset.kind


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert changed: the vector index must add ``item_ids`` and drop ``replaced_ids``."""

    asset_id: int
    item_ids: list[int]
    replaced_ids: list[int]


class AssetState(NamedTuple):
    """What the scanner compares to decide whether a file changed."""

    size: int
    mtime_ns: int
    content_hash: str


class FeedbackEvent(NamedTuple):
    """One judgement as a user gave it, resolved to today's item (None when the file is gone)."""

    id: int
    user: str
    item_id: int | None
    path: str | None
    label: int  # +1 good, -1 bad
    query: str | None
    created_at: float


class FolderInfo(NamedTuple):
    id: int
    path: str
    added_at: float


class EncoderInfo(NamedTuple):
    name: str
    dim: int


def parse_shape(value: str | None) -> tuple[int, int] | None:
    """``"P x D"`` (the `kinds.PATCH_SHAPE_KEY` row) as ``(P, D)``; None when none were stored."""
    if not value:
        return None
    p, d = value.split("x")
    return int(p), int(d)


def patch_arrays(
    order: list[int], blobs: list[bytes], shape: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Stored patch blobs as (ids, float16 (n, P, D)); a blob of another size is refused."""
    if not order or shape is None:
        return np.empty(0, np.int64), np.empty((0, *(shape or (0, 0))), np.float16)
    size = shape[0] * shape[1] * PATCH_DTYPE.itemsize
    if any(len(blob) != size for blob in blobs):
        raise CatalogError(
            "The catalog holds patch features of another shape than its patch_shape record; "
            "run `mmsearch index --patches` on the folders to store them again."
        )
    data = np.frombuffer(b"".join(blobs), dtype=PATCH_DTYPE)
    return np.array(order, np.int64), data.reshape(len(order), *shape).astype(np.float16)
