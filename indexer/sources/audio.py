"""Recordings become searchable as overlapping transcript windows, each with its time span.

Subtitles beside the file beat speech recognition: they were written by a person (or a better
model) and cost nothing to read. The backend used is recorded per asset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
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


AUDIO_WINDOW_S = 30.0  # seconds decoded and handed on at a time: memory does not grow with length


class AudioStream:
    """A file's first audio stream as consecutive windows of mono int16 at `rate` Hz.

    Decoding happens as the windows are read, so an hours-long recording never sits in memory;
    `seconds` says how much audio was really decoded (headers can claim any length).
    """

    def __init__(
        self, path: str | Path, rate: int = SAMPLE_RATE, window_s: float = AUDIO_WINDOW_S
    ) -> None:
        self.path, self.rate = Path(path), rate
        self.window = max(1, int(window_s * rate))  # samples per window (the last may be shorter)
        self.samples = 0  # samples handed out so far
        self.offset_s = 0.0  # when the audio starts in the file's timeline (a video's audio may start late)

    @property
    def seconds(self) -> float:
        return self.samples / self.rate

    def __iter__(self) -> Iterator[np.ndarray]:
        self.samples = 0
        for window in self._windows(self._pieces()):
            self.samples += len(window)
            yield window
        if self.samples == 0:
            raise DecodeError(f"{self.path}: the audio stream holds no samples")

    def _pieces(self) -> Iterator[np.ndarray]:
        av = require("av", "Reading audio", "audio")
        with _open(self.path) as container:
            if not container.streams.audio:
                raise DecodeError(f"{self.path}: no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            frames = container.decode(container.streams.audio[0])
            first = True
            while True:
                try:
                    frame = next(frames, None)
                    out = resampler.resample(frame)
                except av.FFmpegError as exc:
                    raise DecodeError(f"{self.path}: corrupt audio ({_reason(exc)})") from exc
                if first and frame is not None:
                    first = False
                    self.offset_s = _start_in_file(container, frame, av.time_base)
                yield from (f.to_ndarray().reshape(-1).astype(np.int16, copy=False) for f in out)
                if frame is None:
                    return

    def _windows(self, pieces: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        held: list[np.ndarray] = []
        size = 0
        for piece in pieces:
            held.append(piece)
            size += len(piece)
            if size >= self.window:
                joined = np.concatenate(held)
                for lo in range(0, size - self.window + 1, self.window):
                    yield joined[lo : lo + self.window]
                rest = joined[size - size % self.window :]
                held, size = ([rest], len(rest)) if len(rest) else ([], 0)
        if size:
            yield np.concatenate(held)


MIN_OFFSET_S = 0.05
"""Audio that starts later than this in its file shifts the transcript's times (encoders' usual
priming delays of a few tens of milliseconds do not)."""


def _start_in_file(container, frame, time_base: int) -> float:
    """Seconds from the file's start (its earliest stream) to this first audio frame: players
    start the sound there, so a transcript's times count from the file's start too."""
    if frame.pts is None or frame.time_base is None:
        return 0.0
    begins = container.start_time / time_base if container.start_time is not None else 0.0
    return max(0.0, float(frame.pts * frame.time_base) - begins)


def load_audio(path: str | Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The whole first audio stream as mono int16 at `rate` Hz; for short clips (tests, queries)."""
    return np.concatenate(list(AudioStream(path, rate)))


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


@dataclass
class Transcript:
    """Timed speech of one file, the backend that produced it, and the seconds of audio decoded."""

    segments: list[Segment]
    backend: str
    decoded_s: float | None = None  # None when no audio was decoded (sidecar subtitles, 'none')


def transcribe_media(path: str | Path, opts: AudioOptions, has_audio: bool = True) -> Transcript:
    """Timed speech segments of a recording or video, streamed window by window through ASR."""
    path = Path(path)
    backend, segments = choose_backend(path, opts)
    if segments is not None or backend == "none":
        return Transcript(segments or [], backend)
    if not has_audio:
        raise DecodeError(f"{path}: no audio stream")
    transcriber = get_transcriber(backend, opts.whisper_model, opts.whisper_device)
    stream = AudioStream(path)
    segments = transcriber.transcribe_stream(stream, SAMPLE_RATE)
    if stream.offset_s > MIN_OFFSET_S:
        segments = [_shifted(s, stream.offset_s) for s in segments]
    return Transcript(segments, backend, stream.offset_s + stream.seconds)


def _shifted(segment: Segment, by: float) -> Segment:
    words = tuple(replace(w, start_s=w.start_s + by, end_s=w.end_s + by) for w in segment.words)
    return replace(segment, start_s=segment.start_s + by, end_s=segment.end_s + by, words=words)


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
    declared = probe_duration(path)
    transcript = transcribe_media(path, opts)
    items = transcript_items(transcript.segments, opts)
    if not items:
        reason = (
            "transcription is off (transcriber='none')"
            if transcript.backend == "none"
            else "no speech found"
        )
        raise DecodeError(f"{path}: {reason}")
    log.info("%s: %d transcript windows via %s", path.name, len(items), transcript.backend)
    # what was decoded beats the header, which can claim any length
    duration = transcript.decoded_s or declared or max(s.end_s for s in transcript.segments)
    meta = {"duration_s": duration, "transcript_backend": transcript.backend}
    return SourceResult(ASSET_AUDIO, items, meta)
