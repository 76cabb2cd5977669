"""Recordings become searchable as overlapping transcript windows, each with its time span.

Subtitles beside the file beat speech recognition: they were written by a person (or a better
model) and cost nothing to read. The backend used is recorded per asset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.sources.base import ASSET_AUDIO, TRANSCRIPT, SourceItem, SourceResult
from indexer.sources.chunking import window_timed_words
from indexer.sources.subtitles import sidecar_segments
from indexer.sources.transcribe import (
    SAMPLE_RATE,
    Segment,
    get_transcriber,
    segment_words,
    whisper_ready,
)
from mmsearch.errors import ConfigError, DecodeError, require

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a")
TRANSCRIBERS: tuple[str, ...] = ("auto", "sidecar", "pocketsphinx", "whisper", "none")


@dataclass
class AudioOptions:
    """How speech (in recordings and in videos' sound tracks) becomes transcript items."""

    # "auto": sidecar .srt/.vtt if present, else whisper if installed and its model is cached,
    # else pocketsphinx; or force one of "sidecar", "pocketsphinx", "whisper", "none".
    transcriber: str = "auto"
    whisper_model: str = "base"  # faster-whisper model size or local model folder
    whisper_device: str = "auto"  # "cpu", "cuda" or "auto"
    window_words: int = 30  # at most this many words per transcript item
    window_seconds: float = 20.0  # and at most this long, so one item never spans a long pause
    window_overlap: float = 0.5  # fraction of a window repeated in the next one

    def __post_init__(self) -> None:
        if self.transcriber not in TRANSCRIBERS:
            raise ConfigError(
                f"unknown transcriber {self.transcriber!r}; choose one of {', '.join(TRANSCRIBERS)}"
            )
        if self.window_seconds <= 0:
            raise ConfigError(f"window_seconds must be positive, not {self.window_seconds}")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _open(path: Path):
    av = require("av", "Reading audio", "audio")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{path}: not a readable media file ({_reason(exc)})") from exc


def probe_duration(path: str | Path) -> float:
    """Seconds of audio in the file, from its header; DecodeError if it has no audio stream."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DecodeError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / 1_000_000


def load_audio(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream as mono int16 at `rate` Hz; every format PyAV knows decodes the same way."""
    av = require("av", "Reading audio", "audio")
    path = Path(path)
    pieces: list[np.ndarray] = []
    with _open(path) as container:
        if not container.streams.audio:
            raise DecodeError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                pieces.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            pieces.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise DecodeError(f"{path}: corrupt audio ({_reason(exc)})") from exc
    if not pieces:
        raise DecodeError(f"{path}: the audio stream holds no samples")
    return np.concatenate(pieces).astype(np.int16, copy=False)


def choose_backend(path: Path, opts: AudioOptions) -> tuple[str, list[Segment] | None]:
    """The backend to use and, for a sidecar, its cues already read."""
    if opts.transcriber in ("auto", "sidecar"):
        found = sidecar_segments(path)
        if found is not None:
            log.debug("%s: using sidecar subtitles %s", path, found[1].name)
            return "sidecar", found[0]
        if opts.transcriber == "sidecar":
            raise DecodeError(
                f"{path}: no usable .srt/.vtt subtitles beside it (transcriber='sidecar')"
            )
        return ("whisper" if whisper_ready(opts.whisper_model) else "pocketsphinx"), None
    return opts.transcriber, None


def transcribe_media(
    path: str | Path, opts: AudioOptions, has_audio: bool = True
) -> tuple[list[Segment], str]:
    """Timed speech segments of a recording or video, and the backend that produced them."""
    path = Path(path)
    backend, segments = choose_backend(path, opts)
    if segments is not None or backend == "none":
        return segments or [], backend
    if not has_audio:
        raise DecodeError(f"{path}: no audio stream")
    samples = load_audio(path)
    transcriber = get_transcriber(backend, opts.whisper_model, opts.whisper_device)
    return transcriber.transcribe(samples, SAMPLE_RATE), backend


def transcript_items(segments: list[Segment], opts: AudioOptions) -> list[SourceItem]:
    """Overlapping windows of the transcript, one TRANSCRIPT item each."""
    chunks = window_timed_words(
        segment_words(segments), opts.window_words, opts.window_seconds, opts.window_overlap
    )
    return [SourceItem(TRANSCRIPT, text=c.text, start_s=c.start_s, end_s=c.end_s) for c in chunks]


def read_audio(path: str | Path, opts: AudioOptions | None = None) -> SourceResult:
    """A recording's transcript windows; no speech (or transcriber 'none') is a DecodeError, so it is reported."""
    opts = opts or AudioOptions()
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file")
    duration = probe_duration(path)
    segments, backend = transcribe_media(path, opts)
    items = transcript_items(segments, opts)
    if not items:
        reason = (
            "transcription is off (transcriber='none')" if backend == "none" else "no speech found"
        )
        raise DecodeError(f"{path}: {reason}")
    log.info("%s: %d transcript windows via %s", path.name, len(items), backend)
    duration = duration or max(s.end_s for s in segments)  # header without a length
    return SourceResult(ASSET_AUDIO, items, {"duration_s": duration, "transcript_backend": backend})
