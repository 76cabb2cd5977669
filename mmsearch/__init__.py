"""mmsearch: cross-modal semantic search over photos, videos, recordings and notes.

`from mmsearch import Engine` is the embedded API; `mmsearch` on the command line is its CLI.
Imports are lazy so that `mmsearch --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Engine", "MmsearchError", "SearchResult", "__version__"]

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.errors import MmsearchError
    from mmsearch.results import SearchResult


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from mmsearch.engine import Engine

        return Engine
    if name == "MmsearchError":
        from mmsearch.errors import MmsearchError

        return MmsearchError
    if name == "SearchResult":
        from mmsearch.results import SearchResult

        return SearchResult
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")
