"""The catalog: SQLAlchemy schema, step-by-step migrations, and the ``Catalog`` store."""

from mmsearch.catalog.migrations import MIGRATIONS, ensure_schema
from mmsearch.catalog.schema import ASSET_KINDS, ITEM_KINDS, PASSAGE_KINDS, SCHEMA_VERSION
from mmsearch.catalog.store import (
    AssetInfo,
    AssetState,
    Catalog,
    EncoderInfo,
    FeedbackEvent,
    FolderInfo,
    ItemData,
    ItemRecord,
    UpsertResult,
)

__all__ = [
    "ASSET_KINDS",
    "ITEM_KINDS",
    "MIGRATIONS",
    "PASSAGE_KINDS",
    "SCHEMA_VERSION",
    "AssetInfo",
    "AssetState",
    "Catalog",
    "EncoderInfo",
    "FeedbackEvent",
    "FolderInfo",
    "ItemData",
    "ItemRecord",
    "UpsertResult",
    "ensure_schema",
]
