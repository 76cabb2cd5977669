"""The catalog's names without its schema: kinds, the schema version, the ``meta`` rows' keys,
and how many ids go into one ``IN (...)`` clause.

Kept apart from `mmsearch.catalog.schema` (SQLAlchemy's declarative tables) so the query path,
which needs them on every search (`mmsearch.catalog.reader`), does not import SQLAlchemy, and so
the `Catalog` and the reader use the same names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

SCHEMA_VERSION = 10
"""Bump with a step in ``migrations.MIGRATIONS`` whenever the tables in ``schema`` change."""

ASSET_KINDS = ("image", "video", "audio", "text")
ITEM_KINDS = ("image", "keyframe", "transcript", "text", "ocr")
PASSAGE_KINDS = ("transcript", "text", "ocr")  # items with a passage: text-model and keyword matched

VERSION_KEY = "schema_version"
"""The ``meta`` row with the schema version."""

COLLECTION_ID_KEY = "collection_id"
"""The ``meta`` row naming this catalog, so an index copied from another home is recognised."""

GENERATION_KEY = "generation"
"""The ``meta`` row counting committed writes (bumped in the same transaction as each write)."""

ENCODER_WEIGHTS_KEY = "encoder_weights"
"""The ``meta`` row with the digest of the encoder's weights file (`Encoder.weights_id`)."""

PATCH_SHAPE_KEY = "patch_shape"
"""The ``meta`` row with the shape of every stored item's patch features, as ``"P x D"``."""

IN_CHUNK = 500
"""Ids or paths per ``IN (...)`` clause; stays under every backend's bound-parameter limit."""


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in runs of at most ``size``, one ``IN (...)`` clause each."""
    for i in range(0, len(values), size):
        yield values[i : i + size]
