"""The catalog's vocabulary of kinds and its schema version, without the schema itself.

Kept apart from `mmsearch.catalog.schema` (SQLAlchemy's declarative tables) so the query path,
which needs these names on every search, does not import SQLAlchemy to learn them.
"""

from __future__ import annotations

SCHEMA_VERSION = 9
"""Bump with a step in ``migrations.MIGRATIONS`` whenever the tables in ``schema`` change."""

ASSET_KINDS = ("image", "video", "audio", "text")
ITEM_KINDS = ("image", "keyframe", "transcript", "text", "ocr")
PASSAGE_KINDS = ("transcript", "text", "ocr")  # items with a passage: text-model and keyword matched
