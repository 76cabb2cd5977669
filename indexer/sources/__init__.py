"""Which source reads which file: a registry from file extension to (asset kind, reader).

Readers are named as "module:function" strings and imported only when first used, so listing
the supported extensions never imports a video or speech library. Each modality registers its
extensions in its own marked block below; a reader takes a `Path` and returns a `SourceResult`.
The pipeline calls image readers as `reader(path, target_size=..., limits=ImageLimits)` and the
others as `reader(path, options)` with their kind's options (VideoOptions, AudioOptions,
TextOptions).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from indexer.sources.base import ASSET_AUDIO, ASSET_IMAGE, ASSET_TEXT, ASSET_VIDEO, SourceResult

__all__ = [
    "ASSET_AUDIO",
    "ASSET_IMAGE",
    "ASSET_TEXT",
    "ASSET_VIDEO",
    "SOURCES",
    "SourceSpec",
    "extensions",
    "load_reader",
    "register",
    "spec_for",
]

Reader = Callable[..., SourceResult]


@dataclass(frozen=True)
class SourceSpec:
    """How files with one extension become items."""

    asset_kind: str  # ASSET_IMAGE, ASSET_VIDEO, ASSET_AUDIO or ASSET_TEXT
    reader: str  # "package.module:function", imported lazily by load_reader()


# Lower-case extension with its dot (".jpg") -> spec. Filled by register() calls below.
SOURCES: dict[str, SourceSpec] = {}


def _norm_ext(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


def register(exts: Iterable[str], asset_kind: str, reader: str) -> None:
    """Claim extensions for a reader; a second claim on the same extension is a programming error."""
    for ext in map(_norm_ext, exts):
        old = SOURCES.get(ext)
        if old is not None and old != SourceSpec(asset_kind, reader):
            raise ValueError(f"extension {ext} is already registered to {old.reader}")
        SOURCES[ext] = SourceSpec(asset_kind, reader)


def extensions(asset_kind: str | None = None) -> frozenset[str]:
    """Extensions (lower case, with dot) the scanner should pick up, optionally of one kind."""
    return frozenset(
        e for e, s in SOURCES.items() if asset_kind is None or s.asset_kind == asset_kind
    )


def spec_for(path: Path | str) -> SourceSpec | None:
    """The spec for a file by its extension (case-insensitive), or None if no source reads it."""
    return SOURCES.get(Path(path).suffix.lower())


@cache
def load_reader(reader: str) -> Reader:
    """Import a "module:function" reader; cached so workers import each module once."""
    module, _, func = reader.partition(":")
    return getattr(importlib.import_module(module), func)


# ---- image: indexer/sources/image.py -------------------------------------------------------
# HEIC/HEIF and AVIF are listed even when their decoder is missing, so such files are reported
# with the package to install instead of being silently ignored.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".dib",
    ".tif", ".tiff", ".heic", ".heif", ".avif",
)  # fmt: skip
register(IMAGE_EXTENSIONS, ASSET_IMAGE, "indexer.sources.image:read_image")

# ---- video: indexer/sources/video.py (register its extensions here) -------------------------
from indexer.sources.video import VIDEO_EXTENSIONS  # noqa: E402  (cheap: decoders load on use)

register(VIDEO_EXTENSIONS, ASSET_VIDEO, "indexer.sources.video:read_video")

# ---- audio: indexer/sources/audio.py (register its extensions here) -------------------------
from indexer.sources.audio import AUDIO_EXTENSIONS  # noqa: E402

register(AUDIO_EXTENSIONS, ASSET_AUDIO, "indexer.sources.audio:read_audio")

# ---- text: indexer/sources/text.py (register its extensions here) ---------------------------
# .srt/.vtt beside a video or recording are read with it; the pipeline leaves those out quietly.
from indexer.sources.text import TEXT_EXTENSIONS  # noqa: E402

register(TEXT_EXTENSIONS, ASSET_TEXT, "indexer.sources.text:read_text")
