"""mmsearch: cross-modal semantic search over photos, videos, recordings and notes.

`from mmsearch import Engine` is the embedded API; `mmsearch` on the command line is its CLI.
Every public type is importable from here. Imports are lazy so that `mmsearch --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Engine": "mmsearch.engine",
    "MmsearchError": "mmsearch.errors",
    "SearchResult": "mmsearch.results",
    "SearchResults": "mmsearch.results",
    "ScorePart": "mmsearch.results",
    "Moment": "mmsearch.results",
    "CollectionStatus": "mmsearch.results",
    "Query": "mmsearch.query.model",
    "Term": "mmsearch.query.model",
    "Filters": "mmsearch.query.model",
    "IndexOptions": "indexer.pipeline",
    "IndexSummary": "indexer.summary",
    "SkippedFile": "indexer.summary",
    "DuplicateGroup": "mmsearch.duplicates",
}
__all__ = [
    "CollectionStatus",
    "DuplicateGroup",
    "Engine",
    "Filters",
    "IndexOptions",
    "IndexSummary",
    "MmsearchError",
    "Moment",
    "Query",
    "ScorePart",
    "SearchResult",
    "SearchResults",
    "SkippedFile",
    "Term",
    "__version__",
]

if TYPE_CHECKING:
    from indexer.pipeline import IndexOptions
    from indexer.summary import IndexSummary, SkippedFile
    from mmsearch.duplicates import DuplicateGroup
    from mmsearch.engine import Engine
    from mmsearch.errors import MmsearchError
    from mmsearch.query.model import Filters, Query, Term
    from mmsearch.results import CollectionStatus, Moment, ScorePart, SearchResult, SearchResults


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
