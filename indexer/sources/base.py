"""What a source hands the pipeline: one asset's metadata and its items (one vector each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# Item kinds: an item is one vector's worth of content.
IMAGE, KEYFRAME, TRANSCRIPT, TEXT = "image", "keyframe", "transcript", "text"
# Asset kinds: what a file is.
ASSET_IMAGE, ASSET_VIDEO, ASSET_AUDIO, ASSET_TEXT = "image", "video", "audio", "text"


@dataclass
class SourceItem:
    """One item: an image to encode with the image tower, or text to encode with the text tower."""

    kind: str  # IMAGE, KEYFRAME, TRANSCRIPT or TEXT
    image: Image.Image | None = None  # RGB picture for IMAGE/KEYFRAME items
    text: str | None = None  # the passage for TRANSCRIPT/TEXT items
    start_s: float | None = None  # time span within the media file, seconds
    end_s: float | None = None
    thumbnail: bytes | None = None  # small JPEG for keyframes, shown by result pages


@dataclass
class SourceResult:
    """Everything read from one file; `meta` keys match catalog asset columns."""

    asset_kind: str  # ASSET_IMAGE, ASSET_VIDEO, ASSET_AUDIO or ASSET_TEXT
    items: list[SourceItem]
    # width, height, duration_s, taken_at (datetime), camera, gps_lat, gps_lon, transcript_backend
    meta: dict[str, Any] = field(default_factory=dict)
