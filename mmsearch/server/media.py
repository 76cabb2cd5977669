"""Pictures for the HTTP API: decoding uploaded query images and rendering result thumbnails.

Kept free of FastAPI so it can be tested and reused on its own. Every path bounds the work one
request can cause: uploads are capped in bytes (by the app) and in pixels (here, from the header,
before decoding), decodes run at most MAX_CONCURRENT_DECODES at once, and rendered thumbnails are
small and cached. Files are opened for serving only through `open_indexed`, which refuses
anything that is not the regular file the catalog indexed, inside a registered folder.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import os
import stat
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from indexer.sources.image import to_rgb
from mmsearch.errors import MmsearchError, QueryError

log = logging.getLogger(__name__)

MAX_DECODE_PIXELS = 40_000_000  # pixels a picture may have once JPEG draft scaling is applied
QUERY_SIDE = 1024  # a query picture is shrunk to this side at once; encoders look at 224-448 px
MAX_CONCURRENT_DECODES = 2  # pictures decoded at once (uploads and thumbnails together)
DECODE_WAIT_S = 30.0  # how long a request waits for a decoding slot before a 503
THUMBNAIL_SIDE = 320  # longer side of a rendered thumbnail: sharp in a ~200 px grid cell on HiDPI
THUMBNAIL_QUALITY = 80
THUMBNAIL_CACHE = 1024  # rendered thumbnails kept in memory (~15 KB each)

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO put in a file's place must not hang the open
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DECODE_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)

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


class FileRefused(Exception):
    """The catalog's file may not be served as it is now; `status` is the HTTP answer (403 or 404)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class DecodeBusy(MmsearchError):
    """Every picture-decoding slot stayed busy for too long: the server is overloaded (503)."""


@dataclass(frozen=True)
class IndexedFile:
    """A file as the catalog knows it: served only while it is still this file, in these folders."""

    path: str  # the catalog key (absolute, links resolved when it was indexed)
    roots: tuple[str, ...]  # the registered folders
    size: int  # bytes, when it was indexed
    mtime_ns: int  # modification time, when it was indexed


@dataclass(frozen=True)
class OpenedFile:
    """An open, checked file: `fd` is the caller's to close."""

    fd: int
    stat: os.stat_result
    real_path: str


def open_indexed(file: IndexedFile) -> OpenedFile:
    """Open a catalog file for serving, or say why not (FileRefused).

    The file must be a regular file whose real path lies under a registered folder's real path,
    with the size and mtime it was indexed with. A link swapped in for the last component is
    not followed (O_NOFOLLOW), and the opened descriptor's own path is checked again, so a link
    swapped in for a folder between the check and the open is caught too.
    """
    roots = [os.path.realpath(r) for r in file.roots]
    real = os.path.realpath(file.path)
    if not _inside(real, roots):
        raise FileRefused(
            f"{file.path} now lies outside the indexed folders; it is not served.", 403
        )
    try:
        fd = os.open(real, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(
            f"{file.path} is no longer there ({exc.strerror}); re-index its folder.", 404
        ) from exc
    try:
        return OpenedFile(fd, _check_opened(fd, file, roots), real)
    except BaseException:
        os.close(fd)
        raise


def _check_opened(fd: int, file: IndexedFile, roots: list[str]) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{file.path} is not a regular file any more; it is not served.", 403)
    opened = _fd_path(fd)
    if opened is not None and not _inside(opened, roots):
        raise FileRefused(
            f"{file.path} now lies outside the indexed folders; it is not served.", 403
        )
    if (st.st_size, st.st_mtime_ns) != (file.size, file.mtime_ns):
        raise FileRefused(f"{file.path} changed since it was indexed; re-index its folder.", 404)
    return st


def fd_url_path(fd: int) -> str | None:
    """A path that opens the very file behind `fd` (Linux /proc, BSD/macOS /dev/fd), if there is one."""
    for base in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(base):
            return f"{base}/{fd}"
    return None


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (macOS): the realpath check before the open stands alone
        return None


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def decode_upload(data: bytes, filename: str | None) -> Image.Image:
    """An uploaded query picture as RGB, upright, at most QUERY_SIDE a side; QueryError (400) if refused."""
    name = filename or "the upload"
    if not data:
        raise QueryError(f"{name} is empty: upload a picture (JPEG, PNG, WebP, GIF, BMP or TIFF).")
    try:
        return _decode_bounded(io.BytesIO(data), QUERY_SIDE)
    except _TooLarge as exc:
        raise QueryError(
            f"{name} has {exc.width}x{exc.height} pixels, more than the "
            f"{MAX_DECODE_PIXELS // 1_000_000} MP a query picture may have: send a smaller copy."
        ) from exc
    except Image.DecompressionBombError as exc:  # its header claims more pixels than Pillow opens
        raise QueryError(
            f"{name} is too large a picture ({exc}): send a smaller copy."
        ) from exc
    except UnidentifiedImageError as exc:
        raise QueryError(
            f"{name} is not a picture mmsearch can read: upload a JPEG, PNG, WebP, GIF, BMP or TIFF."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise QueryError(f"{name} is a damaged picture ({exc}): upload another copy.") from exc


class _TooLarge(Exception):
    def __init__(self, width: int, height: int) -> None:
        super().__init__(f"{width}x{height}")
        self.width, self.height = width, height


def _decode_bounded(fp: BinaryIO, side: int) -> Image.Image:
    """Decode a picture at no more than about `side` a side, refusing huge ones from the header.

    The size is read from the header before any pixel is decoded; JPEGs are decoded at 1/2 to 1/8
    scale (`draft`), so a phone photo costs a fraction of its full size. At most
    MAX_CONCURRENT_DECODES decodes run at once, which bounds what a burst of requests can take.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(fp) as img:
            img.draft("RGB", (side, side))
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise _TooLarge(img.width, img.height)
            with _decode_slot():
                img.load()
                img.thumbnail((side, side), Image.Resampling.BICUBIC)
                return to_rgb(ImageOps.exif_transpose(img))  # transparency on white, as indexed


@contextmanager
def _decode_slot() -> Iterator[None]:
    if not _DECODE_SLOTS.acquire(timeout=DECODE_WAIT_S):
        raise DecodeBusy(
            f"The server is busy decoding other pictures (waited {DECODE_WAIT_S:.0f} s): try again."
        )
    try:
        yield
    finally:
        _DECODE_SLOTS.release()


def jpeg_bytes(
    image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY
) -> bytes:
    """A small JPEG of a picture (shrunk in place): what a result grid needs, not the original's bytes."""
    image.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_thumbnail(file: IndexedFile) -> bytes:
    """A JPEG thumbnail of an indexed image file, checked like a download (FileRefused) and cached."""
    opened = open_indexed(file)
    with os.fdopen(opened.fd, "rb") as fh:
        key = (opened.real_path, opened.stat.st_size, opened.stat.st_mtime_ns)
        cached = _THUMBNAILS.get(key)
        if cached is not None:
            return cached
        data = _render(fh, file.path)
    _THUMBNAILS.put(key, data)
    return data


def _render(fh: BinaryIO, path: str) -> bytes:
    try:
        return jpeg_bytes(_decode_bounded(fh, THUMBNAIL_SIDE))
    except _TooLarge as exc:
        raise ThumbnailError(f"{path} is too large to render a thumbnail on the fly.") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"cannot render a thumbnail of {path}: {exc}") from exc


class _LruCache:
    """A small thread-safe LRU of rendered thumbnails."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
            return self._data.get(key)

    def put(self, key: tuple[str, int, int], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


_THUMBNAILS = _LruCache(THUMBNAIL_CACHE)


def media_type(path: str | Path) -> str:
    """The Content-Type to serve a catalog file with, so browsers play or show it inline."""
    suffix = Path(path).suffix.lower()
    return (
        _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    )
