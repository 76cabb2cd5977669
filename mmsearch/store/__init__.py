"""The collection's storage: one writer (`Collection.writer`) over the catalog and vector stores."""

from mmsearch.store.collection import Collection, CollectionWriter, sync_store, validate_vectors
from mmsearch.store.protocols import KeywordIndex, VectorStore
from mmsearch.store.registry import open_vector_store, register_vector_store

__all__ = [
    "Collection",
    "CollectionWriter",
    "KeywordIndex",
    "VectorStore",
    "open_vector_store",
    "register_vector_store",
    "sync_store",
    "validate_vectors",
]
