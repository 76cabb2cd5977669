"""Vector indexes: one small interface, FAISS (flat / IVF / HNSW / IVF-PQ) and torch backends, a factory.

Importing this package is cheap: faiss and torch are imported when an index is created.
"""

from mmsearch.vectors.base import METRICS, VectorIndex
from mmsearch.vectors.factory import (
    AUTO_EXACT_MAX_VECTORS,
    AUTO_HNSW_MAX_VECTORS,
    BACKENDS,
    INDEX_KINDS,
    choose_kind,
    create_index,
    load_index,
)
from mmsearch.vectors.storage import INDEX_FORMAT_VERSION, read_sidecar, sidecar_path

__all__ = [
    "AUTO_EXACT_MAX_VECTORS",
    "AUTO_HNSW_MAX_VECTORS",
    "BACKENDS",
    "INDEX_FORMAT_VERSION",
    "INDEX_KINDS",
    "METRICS",
    "VectorIndex",
    "choose_kind",
    "create_index",
    "load_index",
    "read_sidecar",
    "sidecar_path",
]
