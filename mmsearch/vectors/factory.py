"""String-keyed factory and loader for vector backends.

``auto`` follows the collection's size (``choose_kind``):

- **flat** (exact) up to ``AUTO_EXACT_MAX_VECTORS`` (50,000): a brute-force scan of 50k x 512
  floats takes a few milliseconds, so an approximation gains nothing.
- **hnsw** up to ``AUTO_HNSW_MAX_VECTORS`` (2,000,000): no training, incremental adds from an
  empty index, the best recall per millisecond on a CPU; but it holds every float32 vector and
  its graph in RAM, about 2,300 bytes per 512-d vector (4.6 GB at 2M).
- **ivfpq** above that: a padding rotation, IVF over 4-bit PQ fast-scan codes (44 bytes at
  512-d) and an exact re-score of 1,600·k candidates (more past 1M vectors) from a memory-mapped
  float16 file (``mmsearch.vectors.ivfpq``), about 78 bytes per vector in RAM and 1,085 on disk;
  trained once, then incremental, retrained only at 8-fold growth. Measured recall@10 >= 0.95
  for in-distribution and text->image-like (shifted) queries up to 3M vectors.

The thresholds are where RAM, not speed, decides: measured with ``benchmarks/ann_scale.py``
(README, "Vectors at scale"), HNSW and IVF-PQ both answer a 1M query within the latency goal.
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
from mmsearch.vectors.ivfpq import IVFPQIndex
from mmsearch.vectors.torch_index import TorchIndex

log = logging.getLogger(__name__)

AUTO_EXACT_MAX_VECTORS = 50_000
"""``auto`` uses exact search up to this many vectors and HNSW above it."""

AUTO_HNSW_MAX_VECTORS = 2_000_000
"""``auto`` uses HNSW up to this many vectors and IVF-PQ (re-scored from disk) above it."""

BACKENDS: dict[str, type[VectorIndex]] = {
    "flat": FlatIndex,
    "ivf": IVFIndex,
    "hnsw": HNSWIndex,
    "ivfpq": IVFPQIndex,
    "torch": TorchIndex,
}
"""Registered backends by factory key; ``auto`` resolves to one of these."""

INDEX_KINDS = (*BACKENDS, "auto")


def choose_kind(expected_count: int | None) -> str:
    """The backend ``auto`` means for a collection of about ``expected_count`` vectors."""
    if expected_count is None or expected_count <= AUTO_EXACT_MAX_VECTORS:
        return "flat"
    if expected_count <= AUTO_HNSW_MAX_VECTORS:
        return "hnsw"
    return "ivfpq"


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
    if resolved == "ivfpq" and expected_count and "expected" not in opts:
        opts["expected"] = expected_count  # size the inverted lists for what is coming
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
            int(info["dim"]),
            str(info["metric"]),
            {**info.get("options", {}), **overrides},
            arrays,
            path,
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
    index.generation = generation
    return index
