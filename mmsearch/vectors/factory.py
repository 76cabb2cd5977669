"""String-keyed factory and loader for vector backends.

``auto`` picks exact ``flat`` search up to ``AUTO_EXACT_MAX_VECTORS`` and ``hnsw`` above it.
Below the threshold a brute-force scan of 50k x 512 floats takes a few milliseconds on one core,
so there is nothing to gain from an approximation. Above it HNSW is preferred over IVF because
it needs no training (IVF centroids fit the data present at build time and drift as a personal
collection grows), it accepts incremental adds from an empty index, and it gives the best
recall per millisecond on CPU; its costs, a slower build and tombstone-based removal, matter
less for a collection that is indexed once and queried often.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mmsearch.errors import ConfigError, EncoderMismatchError, VectorIndexError
from mmsearch.vectors import storage
from mmsearch.vectors.approx import HNSWIndex, IVFIndex
from mmsearch.vectors.base import VectorIndex, read_container
from mmsearch.vectors.flat import FlatIndex
from mmsearch.vectors.torch_index import TorchIndex

log = logging.getLogger(__name__)

AUTO_EXACT_MAX_VECTORS = 50_000
"""``auto`` uses exact search up to this many vectors and HNSW above it."""

BACKENDS: dict[str, type[VectorIndex]] = {
    "flat": FlatIndex,
    "ivf": IVFIndex,
    "hnsw": HNSWIndex,
    "torch": TorchIndex,
}
"""Registered backends by factory key; ``auto`` resolves to one of these."""

INDEX_KINDS = (*BACKENDS, "auto")


def choose_kind(expected_count: int | None) -> str:
    """The backend ``auto`` means for a collection of about ``expected_count`` vectors."""
    if expected_count is not None and expected_count > AUTO_EXACT_MAX_VECTORS:
        return "hnsw"
    return "flat"


def create_index(
    kind: str,
    dim: int,
    metric: str = "ip",
    *,
    expected_count: int | None = None,
    encoder: str | None = None,
    **opts: Any,
) -> VectorIndex:
    """Make an empty index of the named kind; ``expected_count`` only informs ``auto``."""
    resolved = choose_kind(expected_count) if kind == "auto" else kind
    try:
        cls = BACKENDS[resolved]
    except KeyError:
        raise ConfigError(
            f"Unknown vector index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}."
        ) from None
    if kind == "auto":
        log.info("auto index for ~%s vectors: %s", expected_count, resolved)
    try:
        return cls(dim, metric, encoder=encoder, **opts)
    except TypeError as exc:  # an option the backend does not take
        raise ConfigError(f"Bad option for the {resolved!r} vector index: {exc}") from exc


def load_index(
    path: str | os.PathLike[str], expect_encoder: str | None = None, **overrides: Any
) -> VectorIndex:
    """Load an index saved by ``VectorIndex.save`` and check it against its sidecar.

    ``overrides`` replace recorded options (e.g. ``device="cpu"`` for the torch backend).
    """
    path = Path(path)
    info = storage.read_sidecar(path)
    recorded = info.get("encoder")
    if expect_encoder is not None and recorded is not None and recorded != expect_encoder:
        raise EncoderMismatchError(
            f"The vector index {path} was built with encoder '{recorded}', but encoder "
            f"'{expect_encoder}' was requested. Use --model {recorded} to search this collection, "
            f"or re-index into a new home (--home) to use '{expect_encoder}'."
        )
    kind = info.get("kind")
    if kind not in BACKENDS:
        raise VectorIndexError(
            f"The vector index {path} has unknown kind {kind!r}; upgrade mmsearch or rebuild it."
        )
    arrays = read_container(path)
    generation = str(arrays.pop("__generation__", ""))
    if generation != info.get("generation"):
        raise VectorIndexError(
            f"The vector index {path} and its sidecar come from different saves (interrupted write?). "
            "Rebuild the index from the catalog."
        )
    try:
        index = BACKENDS[kind].from_state(
            int(info["dim"]), str(info["metric"]), {**info.get("options", {}), **overrides}, arrays
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise VectorIndexError(
            f"The vector index {path} is corrupt ({exc}). Rebuild it from the catalog."
        ) from exc
    if index.count != info.get("count"):
        raise VectorIndexError(
            f"The vector index {path} holds {index.count} vectors but its sidecar records "
            f"{info.get('count')}. Rebuild the index from the catalog."
        )
    index.encoder = recorded
    index.created_at = info.get("created_at")
    return index
