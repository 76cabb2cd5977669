"""Vector stores by name or URL scheme: the embedded file store first, others as added modules.

    register_vector_store("milvus", open_milvus_server)   # see the bottom of this module
    open_vector_store("faiss", home=..., name="vectors", dim=512, encoder="tiny")
    open_vector_store("milvus-lite:vectors.db", home=..., name="vectors", dim=512, encoder="tiny")

An opener returns the store as it was last flushed (possibly behind the catalog, or empty);
the collection brings it level with the catalog, so openers never read the catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mmsearch.errors import ConfigError
from mmsearch.store.faiss_store import FileVectorStore
from mmsearch.store.protocols import VectorStore

DEFAULT_VECTOR_STORE = "faiss"


class Opener(Protocol):
    def __call__(
        self,
        spec: str,
        *,
        home: Path,
        name: str,
        dim: int,
        encoder: str,
        preference: str,
        owner: str,
    ) -> VectorStore: ...


_OPENERS: dict[str, Opener] = {}
_CANONICAL: dict[str, Callable[[str, Path], str]] = {}


def register_vector_store(
    scheme: str, opener: Opener, canonical: Callable[[str, Path], str] | None = None
) -> None:
    """Make ``scheme`` (the part of a spec before ``:`` or ``://``) open stores with ``opener``;
    ``canonical(spec, home)`` spells a spec one way for each store it names (default: as given)."""
    _OPENERS[scheme] = opener
    if canonical is not None:
        _CANONICAL[scheme] = canonical


def same_store(spec: str, other: str, home: Path) -> bool:
    """Whether two specs name the same store of a home's collection (``milvus-lite:v.db`` and
    ``milvus-lite:HOME/v.db``; ``milvus://h/c`` and ``milvus://h:19530/c``)."""
    return _canonical(spec, home) == _canonical(other, home)


def _canonical(spec: str, home: Path) -> str:
    spell = _CANONICAL.get(checked_scheme(spec))
    return spell(spec, Path(home)) if spell else spec


def vector_store_schemes() -> list[str]:
    return sorted(_OPENERS)


def checked_scheme(spec: str) -> str:
    """The scheme of a store spec (``milvus`` of ``milvus://HOST:PORT/NAME``); ConfigError for
    one no module registered, before anything is opened or recorded."""
    scheme = spec.split("://", 1)[0].split(":", 1)[0]
    if scheme not in _OPENERS:
        raise ConfigError(
            f"Unknown vector store {spec!r}; known: {', '.join(vector_store_schemes())} "
            "(e.g. faiss, milvus-lite:PATH.db, milvus://HOST:19530/COLLECTION)."
        )
    return scheme


def open_vector_store(
    spec: str | None,
    *,
    home: Path,
    name: str,
    dim: int,
    encoder: str,
    preference: str = "auto",
    owner: str = "",
) -> VectorStore:
    """Open the store a spec names (``faiss`` by default) for one of a collection's indexes.

    ``owner`` is the catalog's id: a store that mirrors another catalog is not trusted.
    """
    spec = spec or DEFAULT_VECTOR_STORE
    opener = _OPENERS[checked_scheme(spec)]
    return opener(
        spec, home=home, name=name, dim=dim, encoder=encoder, preference=preference, owner=owner
    )


def _open_file_store(
    spec: str, *, home: Path, name: str, dim: int, encoder: str, preference: str, owner: str
) -> FileVectorStore:
    path = Path(home) / "index" / f"{name}.idx"
    store = FileVectorStore.load(path, encoder, preference, owner or None)
    if store is None:
        store = FileVectorStore.create(path, dim, encoder, preference, owner=owner or None)
        store.dirty = True
    return store


register_vector_store("faiss", _open_file_store)


def _register_milvus() -> None:
    # imported here, not at the top: the module needs pymilvus only when a store is opened
    from mmsearch.store.milvus_store import (
        LITE_SCHEME,
        SERVER_SCHEME,
        canonical_lite,
        canonical_server,
        open_milvus_lite,
        open_milvus_server,
    )

    register_vector_store(LITE_SCHEME, open_milvus_lite, canonical_lite)  # milvus-lite:PATH.db (in the home)
    register_vector_store(SERVER_SCHEME, open_milvus_server, canonical_server)  # milvus://HOST:PORT/COLLECTION


_register_milvus()

StoreOpener = Callable[..., VectorStore]
