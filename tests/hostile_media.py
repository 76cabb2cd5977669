"""Hostile files, generated at test time: small on disk, absurd in what they claim or hold."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

MKV_DURATION_ID = b"\x44\x89\x88"  # Matroska Segment Info "Duration", an 8-byte float follows


def ffmpeg(*args: str) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:  # scripts/setup.sh installs it; a missing tool must not pass silently
        raise RuntimeError("ffmpeg is not installed; run scripts/setup.sh")
    subprocess.run([exe, "-v", "error", "-y", *args], check=True, timeout=300)


def silent_flac(path: Path, seconds: float, rate: int = 16_000) -> Path:
    """Hours of digital silence compress to a few MB of FLAC."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r={rate}:cl=mono",
        "-t",
        str(seconds),
        "-c:a",
        "flac",
        str(path),
    )
    return path


def mkv_claiming(path: Path, claimed_s: float, real_s: float = 3.0) -> Path:
    """A real few-second MKV whose header says it lasts `claimed_s` seconds."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=5",
        "-t",
        str(real_s),
        "-c:v",
        "mpeg4",
        str(path),
    )
    data = bytearray(path.read_bytes())
    at = data.find(MKV_DURATION_ID)
    if at < 0:
        raise RuntimeError(f"{path}: no 8-byte Duration element to patch")
    # Duration counts TimecodeScale units, milliseconds by default
    data[at + 3 : at + 11] = struct.pack(">d", claimed_s * 1000.0)
    path.write_bytes(bytes(data))
    return path


WORDS = [
    "red",
    "green",
    "blue",
    "circle",
    "square",
    "star",
    "left",
    "right",
    "top",
    "bottom",
    "large",
    "small",
    "the",
    "a",
    "is",
    "on",
    "at",
]


def huge_note(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Sentences of shapes-world words, paragraph after paragraph, up to the size asked."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    with path.open("w", encoding="utf-8") as out:
        size = 0
        while size < target:
            sentences = (" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(6))
            paragraph = " ".join(sentences) + "\n\n"
            out.write(paragraph)
            size += len(paragraph)
    return path


def many_page_pdf(path: Path, pages: int) -> Path:
    """A PDF of `pages` pages, one line of text each."""
    from test_text_source import make_pdf

    path.write_bytes(
        make_pdf([[f"page {n}: a red circle on the left"] for n in range(1, pages + 1)])
    )
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """The first part of a file, as a cut-off download leaves it."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst
