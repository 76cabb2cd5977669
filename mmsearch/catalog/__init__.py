"""The catalog: SQLAlchemy schema, step-by-step migrations, and the ``Catalog`` store.

Names are imported on first use (PEP 562), so asking for the kinds or the records does not load
SQLAlchemy: a search from a cold shell reads a local catalog without it (`reader`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "ASSET_KINDS": "kinds",
    "ITEM_KINDS": "kinds",
    "PASSAGE_KINDS": "kinds",
    "SCHEMA_VERSION": "kinds",
    "AssetInfo": "records",
    "AssetState": "records",
    "EncoderInfo": "records",
    "FeedbackEvent": "records",
    "FolderInfo": "records",
    "ItemData": "records",
    "ItemRecord": "records",
    "UpsertResult": "records",
    "Catalog": "store",
    "MIGRATIONS": "migrations",
    "ensure_schema": "migrations",
}

__all__ = [
    "ASSET_KINDS",
    "AssetInfo",
    "AssetState",
    "Catalog",
    "EncoderInfo",
    "FeedbackEvent",
    "FolderInfo",
    "ITEM_KINDS",
    "ItemData",
    "ItemRecord",
    "MIGRATIONS",
    "PASSAGE_KINDS",
    "SCHEMA_VERSION",
    "UpsertResult",
    "ensure_schema",
]

if TYPE_CHECKING:
    from mmsearch.catalog.kinds import ASSET_KINDS, ITEM_KINDS, PASSAGE_KINDS, SCHEMA_VERSION
    from mmsearch.catalog.migrations import MIGRATIONS, ensure_schema
    from mmsearch.catalog.records import (
        AssetInfo,
        AssetState,
        EncoderInfo,
        FeedbackEvent,
        FolderInfo,
        ItemData,
        ItemRecord,
        UpsertResult,
    )
    from mmsearch.catalog.store import Catalog


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
