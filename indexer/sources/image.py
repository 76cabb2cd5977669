"""Photos and pictures: one IMAGE item per file, with EXIF date, camera and GPS when present.

Every failure becomes a `DecodeError` with a short reason, so the pipeline can skip and report
the file. Decoding is bounded: files over a byte limit and pictures over a pixel limit are
refused before their pixels are read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from indexer.sources.base import ASSET_IMAGE, IMAGE, SourceItem, SourceResult
from mmsearch.errors import DecodeError

log = logging.getLogger(__name__)

HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
HEIF_INSTALL_HINT = "pip install 'mmsearch[heic]'"


@dataclass(frozen=True)
class ImageLimits:
    """Bounds that keep one hostile or huge file from exhausting a worker's memory."""

    # Refuse pictures with more pixels than this (width * height from the file header).
    # Pillow itself still raises above 2 * Image.MAX_IMAGE_PIXELS (~179 MP); that is reported too.
    max_pixels: int = 100_000_000
    # Refuse files larger than this many bytes without opening them.
    max_bytes: int = 512 * 1024 * 1024


DEFAULT_LIMITS = ImageLimits()

# EXIF tags (numbers from the EXIF 2.3 spec; names kept here so the code reads plainly).
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME, _TAG_ORIENTATION = 0x010F, 0x0110, 0x0132, 0x0112
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
_TAG_DATETIME_ORIGINAL, _TAG_DATETIME_DIGITIZED = 0x9003, 0x9004
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


def read_image(
    path: Path, *, target_size: int | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> SourceResult:
    """Decode one picture to RGB with its metadata; raises DecodeError with a reason if it can't.

    `target_size` is the encoder's input side. When given, JPEGs are decoded at a reduced scale
    (DCT draft, both sides still >= target_size) and every picture is shrunk so its longer side is
    at most 2 * target_size: the encoder only needs ~224 px, and small images are cheap to ship
    between worker processes.
    `meta` width/height are those of the original picture, after EXIF orientation.
    """
    path = Path(path)
    _check_file(path, limits)
    if path.suffix.lower() in HEIF_EXTENSIONS and not _register_heif_opener():
        raise DecodeError(f"{path}: HEIC/HEIF support needs pillow-heif: {HEIF_INSTALL_HINT}")
    with _read_errors(path), open(path, "rb") as fh:
        return _decode(fh, path, target_size, limits)


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """The OS's errors while a picture file is read, as DecodeErrors in the user's words."""
    try:
        yield
    except PermissionError as exc:
        raise DecodeError(f"{path}: permission denied") from exc
    except FileNotFoundError as exc:
        raise DecodeError(f"{path}: file vanished while reading") from exc
    except IsADirectoryError as exc:
        raise DecodeError(f"{path}: is a folder, not an image") from exc


def decode_image_bytes(
    data: bytes, name: str, *, target_size: int | None = None, limits: ImageLimits = DEFAULT_LIMITS
) -> SourceResult:
    """`read_image` for bytes already in memory (an uploaded or downloaded query picture)."""
    import io

    if not data:
        raise DecodeError(f"{name}: empty file")
    if len(data) > limits.max_bytes:
        raise DecodeError(
            f"{name}: too large: {len(data) / 2**20:.0f} MB > limit {limits.max_bytes / 2**20:.0f} MB"
        )
    return _decode(io.BytesIO(data), Path(name), target_size, limits)


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's header tells before its pixels are decoded elsewhere (a batch decoder)."""

    meta: dict[str, Any]  # as `read_image` gives it: EXIF date, camera, GPS, oriented width/height
    orientation: int  # the EXIF orientation (1-8; 1 = as stored), for the decoder to apply
    mode: str  # Pillow's mode of the stored pixels: "RGB", "L", "CMYK", ...


def read_jpeg_file(
    path: Path | str, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[bytearray, JpegHeader | None]:
    """A file's bytes (writable, for a zero-copy tensor) and `read_jpeg_header` of them, with
    `read_image`'s checks and reasons; the header is None when the file is not a JPEG."""
    path = Path(path)
    _check_file(path, limits)
    with _read_errors(path), open(path, "rb", buffering=0) as fh:
        data = bytearray(fh.readall())
    if not data:
        raise DecodeError(f"{path}: empty file")
    return data, read_jpeg_header(data, path, limits)


def read_jpeg_header(
    data: bytes | bytearray, path: Path | str, limits: ImageLimits = DEFAULT_LIMITS
) -> JpegHeader | None:
    """A JPEG's metadata, orientation and colour mode, checked against `limits` as `read_image`
    checks them (raising the same DecodeError); None when the bytes are not a JPEG after all."""
    import io

    path = Path(path)
    if len(data) > limits.max_bytes:
        raise DecodeError(
            f"{path}: file too large: {len(data) / 2**20:.0f} MB > limit {limits.max_bytes / 2**20:.0f} MB"
        )
    img = _open(io.BytesIO(data), path)
    if img.format != "JPEG":
        return None
    _check_pixels(path, *img.size, limits)
    exif = _read_exif(img, path)
    meta = _metadata(exif, path)
    try:
        orientation = int(exif.get(_TAG_ORIENTATION, 1)) if exif is not None else 1
    except (TypeError, ValueError):
        orientation = 1
    if orientation not in range(1, 9):
        orientation = 1  # a malformed tag leaves the picture as stored, as `_transpose` does
    swapped = orientation >= 5  # 5-8 turn the picture a quarter
    meta["width"], meta["height"] = img.size[::-1] if swapped else img.size
    return JpegHeader(meta, orientation, img.mode)


def _check_file(path: Path, limits: ImageLimits) -> None:
    """Refuse empty, missing and oversized files before opening them."""
    try:
        size = path.stat().st_size
    except PermissionError as exc:
        raise DecodeError(f"{path}: permission denied") from exc
    except FileNotFoundError as exc:
        raise DecodeError(f"{path}: file not found") from exc
    if size == 0:
        raise DecodeError(f"{path}: empty file")
    if size > limits.max_bytes:
        raise DecodeError(
            f"{path}: file too large: {size / 2**20:.0f} MB > limit {limits.max_bytes / 2**20:.0f} MB"
        )


def _decode(fh: BinaryIO, path: Path, target_size: int | None, limits: ImageLimits) -> SourceResult:
    img = _open(fh, path)
    stored = img.size  # from the header, before any draft reduction
    _check_pixels(path, *stored, limits)
    meta = _metadata(_read_exif(img, path), path)
    if target_size and img.format == "JPEG":
        # Draft (DCT scaling by 1/2, 1/4 or 1/8) keeps both sides >= target, so the letterbox
        # still only shrinks: a 640x480 JPEG decodes at 320x240 in a third of the time, its
        # encoder input within 0.8 grey levels on average of a full decode (`benchmarks/decode_draft.py`).
        img.draft("RGB", (target_size, target_size))
    _load(img, path)
    oriented = _transpose(img, path)
    # Some plugins (TIFF in Pillow >= 11) orient while loading, so trust what happened, not the tag.
    swapped = oriented.size != img.size
    meta["width"], meta["height"] = stored[::-1] if swapped else stored
    # exif_transpose already returned a detached copy; convert only when the mode needs it.
    rgb = oriented if oriented.mode == "RGB" and oriented is not img else _to_rgb(oriented, path)
    if target_size and max(rgb.size) > 2 * target_size:
        rgb.thumbnail((2 * target_size, 2 * target_size), Image.Resampling.BICUBIC)
    return SourceResult(
        asset_kind=ASSET_IMAGE, items=[SourceItem(kind=IMAGE, image=rgb)], meta=meta
    )


def _open(fh: BinaryIO, path: Path) -> Image.Image:
    """Identify the format from the header; nothing is decoded yet."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked right after) decides; Pillow's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fh)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"{path}: {_bomb_reason(exc)}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(f"{path}: not an image ({_unsupported_hint(path)})") from exc
    except (PermissionError, FileNotFoundError):
        raise
    except Exception as exc:  # corrupt headers raise anything from SyntaxError to struct.error
        raise DecodeError(f"{path}: truncated or corrupt image: {_describe(exc)}") from exc


def _unsupported_hint(path: Path) -> str:
    if path.suffix.lower() == ".avif" and not features.check("avif"):
        return "this Pillow build cannot read AVIF; upgrade Pillow (>= 11.3)"
    return "Pillow does not recognise its contents"


def _bomb_reason(exc: Image.DecompressionBombError) -> str:
    """Pillow's own hard stop (2 * MAX_IMAGE_PIXELS), worded like our limit."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:.3g} megapixels" if found else "too many pixels"
    return f"image too large: {size} > Pillow's limit {2 * Image.MAX_IMAGE_PIXELS / 1e6:.3g}"


def _check_pixels(path: Path, width: int, height: int, limits: ImageLimits) -> None:
    pixels = width * height
    if pixels > limits.max_pixels:
        raise DecodeError(
            f"{path}: image too large: {pixels / 1e6:.3g} megapixels > limit "
            f"{limits.max_pixels / 1e6:.3g} ({width}x{height})"
        )


def _load(img: Image.Image, path: Path) -> None:
    """Decode the pixels; a truncated file must fail here rather than yield a grey half-picture."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated files will not be reported"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"{path}: {_bomb_reason(exc)}") from exc
    except PermissionError:
        raise
    except MemoryError as exc:
        raise DecodeError(f"{path}: image too large: out of memory while decoding") from exc
    except Exception as exc:
        raise DecodeError(f"{path}: truncated or corrupt image: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _transpose(img: Image.Image, path: Path) -> Image.Image:
    """Apply EXIF orientation; a malformed tag leaves the picture as stored rather than failing."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:
        log.debug("%s: ignoring unusable EXIF orientation: %s", path, exc)
        return img


def to_rgb(img: Image.Image, name: str = "picture") -> Image.Image:
    """Any Pillow mode to RGB exactly as indexing does it (transparency on white): every face's one rule."""
    return _to_rgb(img, Path(name))


def _to_rgb(img: Image.Image, path: Path) -> Image.Image:
    """Any Pillow mode to a new RGB image; transparency is composited on white."""
    if img.mode in ("P", "PA") or (img.mode in ("L", "RGB") and "transparency" in img.info):
        img = img.convert("RGBA") if _has_alpha(img) else img.convert("RGB")
    elif img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _wide_grey_to_l(img)
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # a copy even when already RGB, so no file handle is kept
    except ValueError as exc:
        raise DecodeError(f"{path}: unsupported colour mode {img.mode}") from exc


def _has_alpha(img: Image.Image) -> bool:
    return img.mode == "PA" or "transparency" in img.info


def _wide_grey_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit grey to 8-bit by its value range; Pillow's own convert clips everything to white."""
    a = np.asarray(img, dtype=np.float64)
    hi = float(a.max()) if a.size else 0.0
    lo = float(a.min()) if a.size else 0.0
    if img.mode == "F" or hi > 65535 or lo < 0:
        scale_lo, scale_hi = lo, hi  # floats and 32-bit data: stretch what is there
    elif hi > 255:
        scale_lo, scale_hi = 0.0, 65535.0
    else:
        scale_lo, scale_hi = 0.0, 255.0
    span = scale_hi - scale_lo or 1.0
    out = np.clip((a - scale_lo) * (255.0 / span), 0, 255).round().astype(np.uint8)
    return Image.fromarray(out, mode="L")


# ---- metadata ------------------------------------------------------------------------------


def _read_exif(img: Image.Image, path: Path) -> Image.Exif | None:
    try:
        return img.getexif()
    except Exception as exc:
        log.debug("%s: unreadable EXIF: %s", path, exc)
        return None


def _metadata(exif: Image.Exif | None, path: Path) -> dict[str, Any]:
    """taken_at, camera, gps_lat/gps_lon when the file has them; broken EXIF yields what it can."""
    meta: dict[str, Any] = {}
    if exif is None:
        return meta
    for key, fn in (("taken_at", _taken_at), ("camera", _camera), ("gps", _gps)):
        try:
            value = fn(exif)
        except Exception as exc:
            log.debug("%s: ignoring unusable EXIF %s: %s", path, key, exc)
            continue
        if key == "gps" and value is not None:
            meta["gps_lat"], meta["gps_lon"] = value
        elif value is not None:
            meta[key] = value
    return meta


def _taken_at(exif: Image.Exif) -> datetime | None:
    sub = exif.get_ifd(_IFD_EXIF)
    for raw in (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_DATETIME_DIGITIZED)):
        parsed = parse_exif_datetime(raw)
        if parsed is not None:
            return parsed
    return None


def parse_exif_datetime(raw: Any) -> datetime | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (local time, no zone) to a naive datetime; blanks give None."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not isinstance(raw, str):
        return None
    text = raw.strip("\x00 \t")
    # Seconds may be followed by junk or a fraction; cameras with no clock write zeros or blanks.
    for fmt, width in (("%Y:%m:%d %H:%M:%S", 19), ("%Y-%m-%d %H:%M:%S", 19), ("%Y:%m:%d", 10)):
        try:
            return datetime.strptime(text[:width], fmt)
        except ValueError:
            continue
    return None


def _clean(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip("\x00 \t") if value is not None else ""


def _camera(exif: Image.Exif) -> str | None:
    """Make and model joined, without repeating the make when the model already starts with it."""
    make, model = _clean(exif.get(_TAG_MAKE)), _clean(exif.get(_TAG_MODEL))
    if make and model.lower().startswith(make.lower()):
        make = ""
    return " ".join(p for p in (make, model) if p) or None


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    gps = exif.get_ifd(_IFD_GPS)
    if not gps or _GPS_LAT not in gps or _GPS_LON not in gps:
        return None
    lat = _dms_to_degrees(gps[_GPS_LAT], gps.get(_GPS_LAT_REF), negative="S")
    lon = _dms_to_degrees(gps[_GPS_LON], gps.get(_GPS_LON_REF), negative="W")
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    return lat, lon


def _dms_to_degrees(dms: Any, ref: Any, negative: str) -> float | None:
    """Degrees/minutes/seconds rationals and an N/S/E/W reference to signed decimal degrees."""
    parts = [float(x) for x in (dms if isinstance(dms, (tuple, list)) else (dms,))]
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    value = sum(p / 60**i for i, p in enumerate(parts))
    return -value if _clean(ref).upper().startswith(negative) else value


# ---- HEIC / HEIF -----------------------------------------------------------------------------

_heif_registered: bool | None = None  # None: not tried yet


def _register_heif_opener() -> bool:
    """Teach Pillow HEIF on first use (importing pillow-heif is slow); False if it is missing."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered
