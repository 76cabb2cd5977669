"""Pictures for the HTTP API: decoding uploaded query images and rendering result thumbnails.

Kept free of FastAPI so it can be tested and reused on its own. Both paths bound the work one
request can cause: uploads are capped in bytes (by the app) and in pixels (here), and rendered
thumbnails are small and cached.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mmsearch.errors import QueryError

log = logging.getLogger(__name__)

MAX_QUERY_PIXELS = 100_000_000  # same bound the indexer puts on a photo
THUMBNAIL_SIDE = 320  # longer side of a rendered thumbnail: sharp in a ~200 px grid cell on HiDPI
THUMBNAIL_QUALITY = 80
THUMBNAIL_CACHE = 1024  # rendered thumbnails kept in memory (~15 KB each)

# Types browsers play or show inline; anything else is sent as a download-safe default.
_EXTRA_TYPES = {
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".oga": "audio/ogg",
    ".flac": "audio/flac",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".srt": "text/plain",
    ".vtt": "text/vtt",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".webp": "image/webp",
}


class ThumbnailError(Exception):
    """A thumbnail cannot be rendered from the file (gone, unreadable, not a picture)."""


def decode_upload(data: bytes, filename: str | None) -> Image.Image:
    """An uploaded query picture as RGB, upright; QueryError (a 400) when it is not a picture."""
    name = filename or "the upload"
    if not data:
        raise QueryError(f"{name} is empty: upload a picture (JPEG, PNG, WebP, GIF, BMP or TIFF).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_QUERY_PIXELS:
                raise QueryError(
                    f"{name} has {img.width}x{img.height} pixels, more than the "
                    f"{MAX_QUERY_PIXELS // 1_000_000} MP a query picture may have: send a smaller copy."
                )
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except QueryError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise QueryError(
            f"{name} is not a picture mmsearch can read: upload a JPEG, PNG, WebP, GIF, BMP or TIFF."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise QueryError(f"{name} is a damaged picture ({exc}): upload another copy.") from exc


def jpeg_bytes(
    image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY
) -> bytes:
    """A small JPEG of a picture (shrunk in place): what a result grid needs, not the original's bytes."""
    image.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_thumbnail(path: str | Path) -> bytes:
    """A JPEG thumbnail of an image file, cached by (path, size, mtime) so edits are picked up."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ThumbnailError(
            f"{p} is gone or unreadable ({exc.strerror}); re-index its folder."
        ) from exc
    return _render_cached(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=THUMBNAIL_CACHE)
def _render_cached(path: str, size: int, mtime_ns: int) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_QUERY_PIXELS:
                    raise ThumbnailError(f"{path} is too large to render a thumbnail on the fly.")
                img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEG: decode at reduced scale
                img.load()
                return jpeg_bytes(ImageOps.exif_transpose(img))
    except ThumbnailError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"cannot render a thumbnail of {path}: {exc}") from exc


def media_type(path: str | Path) -> str:
    """The Content-Type to serve a catalog file with, so browsers play or show it inline."""
    suffix = Path(path).suffix.lower()
    return (
        _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    )
