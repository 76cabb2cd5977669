"""SubRip (.srt) and WebVTT (.vtt) cues: sidecar transcripts for media, or documents on their own.

One tolerant parser reads both formats: real-world files mix CRLF, BOMs, styling tags, cue
settings and numbering, and a cue we cannot time is skipped instead of failing the file.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

from indexer.sources.transcribe import Segment
from mmsearch.errors import DecodeError

log = logging.getLogger(__name__)

SUBTITLE_EXTENSIONS: tuple[str, ...] = (".srt", ".vtt")

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")  # <i>, <font ...>, <c.yellow>, <v Speaker>, <00:00:01.000>
_ASS_TAG = re.compile(r"\{\\[^}]*\}")  # {\an8} positioning left in some SRT files
_SKIPPED_BLOCKS = ("WEBVTT", "NOTE", "STYLE", "REGION")


def _seconds(h: str | None, m: str, s: str, frac: str | None) -> float:
    return (
        int(h or 0) * 3600
        + int(m) * 60
        + int(s)
        + (int(frac.ljust(3, "0")) / 1000 if frac else 0.0)
    )


def _clean(line: str) -> str:
    return " ".join(html.unescape(_ASS_TAG.sub("", _TAG.sub("", line))).split())


def _parse_block(lines: list[str]) -> Segment | None:
    for k, line in enumerate(lines):
        match = _TIMING.match(line)
        if match:
            g = match.groups()
            start, end = _seconds(*g[:4]), _seconds(*g[4:])
            text = " ".join(t for t in (_clean(x) for x in lines[k + 1 :]) if t)
            if text and end >= start:
                return Segment(start, end, text)
            return None
    return None


def parse_subtitles(text: str) -> list[Segment]:
    """Cues of an SRT or WebVTT text, in time order; untimed or empty cues are dropped."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    segments = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip("\n").split("\n")
        if not lines or lines[0].strip().startswith(_SKIPPED_BLOCKS):
            continue
        segment = _parse_block(lines)
        if segment is not None:
            segments.append(segment)
    return sorted(segments, key=lambda s: s.start_s)


def decode_text_bytes(data: bytes) -> str:
    """UTF-8 (with or without BOM) as most subtitle files are, else cp1252 as old SRTs often are."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def read_subtitle_file(path: str | Path, data: bytes | None = None) -> list[Segment]:
    """Cues of a subtitle file (or of its bytes, already read); empty or cue-less is a DecodeError."""
    path = Path(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DecodeError(f"{path}: cannot read subtitles ({exc.strerror})") from exc
    if not data.strip():
        raise DecodeError(f"{path}: empty file")
    segments = parse_subtitles(decode_text_bytes(data))
    if not segments:
        raise DecodeError(f"{path}: no timed subtitle cues found (not SRT or WebVTT?)")
    return segments


def find_sidecar(media_path: str | Path) -> Path | None:
    """The subtitle file that belongs to a media file: same stem, or stem plus a language tag."""
    media_path = Path(media_path)
    for ext in SUBTITLE_EXTENSIONS:
        for candidate in (media_path.with_suffix(ext), media_path.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    pattern = re.compile(
        re.escape(media_path.stem) + r"\.[A-Za-z]{2,3}(?:[-_][A-Za-z]{2,4})?\.(srt|vtt)$",
        re.IGNORECASE,
    )
    try:
        siblings = sorted(media_path.parent.iterdir())
    except OSError:
        return None
    return next((p for p in siblings if pattern.match(p.name) and p.is_file()), None)


def sidecar_segments(media_path: str | Path) -> tuple[list[Segment], Path] | None:
    """Cues of the media file's sidecar, or None (with the reason logged) when there is no usable one."""
    sidecar = find_sidecar(media_path)
    if sidecar is None:
        return None
    try:
        return read_subtitle_file(sidecar), sidecar
    except DecodeError as exc:
        log.warning("ignoring sidecar subtitles, falling back to speech recognition: %s", exc)
        return None


def media_for_subtitles(path: str | Path) -> Path | None:
    """The video or audio file a subtitle file accompanies, so it is indexed with it, not on its own."""
    from indexer.sources.audio import AUDIO_EXTENSIONS
    from indexer.sources.video import VIDEO_EXTENSIONS

    path = Path(path)
    stems = {path.stem}
    if "." in path.stem:  # movie.en.srt belongs to movie.mp4
        stems.add(path.stem.rsplit(".", 1)[0])
    for stem in stems:
        for ext in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS:
            for candidate in (path.with_name(stem + ext), path.with_name(stem + ext.upper())):
                if candidate.is_file():
                    return candidate
    return None
