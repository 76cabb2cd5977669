"""Builders for real image files, good and bad, written into a test's tmp_path.

Plain functions (not fixtures) so any test module can `from fixtures_media import ...`.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")

NOBODY = 65534  # uid/gid used to drop root in run_unprivileged()


def make_exif(
    *,
    orientation: int | None = None,
    taken_at: datetime | None = None,
    make: str | None = None,
    model: str | None = None,
    gps: tuple[float, float] | None = None,
) -> Image.Exif:
    """An EXIF block with the given fields; GPS goes into its own IFD as degrees/minutes/seconds."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if make is not None:
        exif[0x010F] = make
    if model is not None:
        exif[0x0110] = model
    if taken_at is not None:
        exif.get_ifd(0x8769)[0x9003] = taken_at.strftime("%Y:%m:%d %H:%M:%S")
    if gps is not None:
        lat, lon = gps
        ifd = exif.get_ifd(0x8825)
        ifd[1], ifd[2] = ("N" if lat >= 0 else "S"), _dms(abs(lat))
        ifd[3], ifd[4] = ("E" if lon >= 0 else "W"), _dms(abs(lon))
    return exif


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 4)
    return float(degrees), float(minutes), seconds


def quadrant_image(size: tuple[int, int] = (64, 32), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: any rotation or flip is visible in the corners."""
    w, h = size
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 0, 255), (w // 2, 0, w, h))
    return img.convert(mode) if mode != "RGB" else img


def write_image(
    path: Path,
    img: Image.Image | None = None,
    *,
    exif: Image.Exif | None = None,
    **save_kwargs: Any,
) -> Path:
    """Save `img` (default: a quadrant picture) in the format named by the path's extension."""
    img = img if img is not None else quadrant_image()
    if exif is not None:
        save_kwargs["exif"] = exif
    img.save(path, **save_kwargs)
    return path


def write_animated_gif(path: Path, colours: list[tuple[int, int, int]], size=(32, 32)) -> Path:
    """An animated GIF with one flat colour per frame."""
    frames = [Image.new("RGB", size, c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def jpeg_bytes(size: tuple[int, int] = (256, 256), quality: int = 90) -> bytes:
    """A real JPEG with detail in it, so cutting it in half really truncates entropy data."""
    img = Image.effect_noise(size, 64).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_truncated_jpeg(path: Path) -> Path:
    data = jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text_as(path: Path) -> Path:
    """A text file wearing an image extension."""
    path.write_text("this is not a picture, just some notes\n" * 20)
    return path


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width` x `height`: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def write_bad_corpus(folder: Path) -> dict[str, Path]:
    """One file per kind of bad input an image source must reject with a reason."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "empty": write_empty(folder / "empty.jpg"),
        "truncated": write_truncated_jpeg(folder / "truncated.jpg"),
        "not_an_image": write_text_as(folder / "notes.png"),
        "bomb": write_png_header_only(folder / "bomb.png", 30_000, 30_000),
    }


def run_unprivileged(fn: Callable[[], T]) -> T:
    """Run `fn` in a forked child that cannot bypass file permissions, and return its result.

    Tests often run as root, where chmod 000 blocks nothing; the child drops to nobody first.
    The result (or the child's exception, as text) comes back pickled through a pipe.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            payload: tuple[str, Any] = ("ok", fn())
        except BaseException as exc:  # report everything, the parent decides
            payload = ("error", f"{type(exc).__name__}: {exc}")
        with os.fdopen(write_fd, "wb") as out:
            pickle.dump(payload, out)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status != "ok":
        raise AssertionError(f"unprivileged child failed: {value}")
    return value


@contextmanager
def unprivileged_tmp_dir() -> Iterator[Path]:
    """A temp folder an unprivileged child can reach (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="mmsearch-test-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for folder, subfolders, _ in os.walk(path):  # undo any chmod 000 before removing
            for name in subfolders:
                os.chmod(os.path.join(folder, name), 0o755)
        shutil.rmtree(path)
