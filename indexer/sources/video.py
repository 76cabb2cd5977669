"""Videos become keyframes (one per shot, more in long shots) plus the transcript of their sound.

Cost scales with the number of sampled frames, not the frame rate: frames are sampled at a low
analysis rate (2 fps by default), decoded once straight to keyframe resolution, and shots are cut
where the picture changes; only the frames chosen as keyframes are kept.

Shot cuts: for two consecutive samples, shrink both to `analysis_width` pixels wide and measure
the *changed share*: the fraction of pixels whose largest channel difference exceeds
`pixel_delta` (0-1 scale). Sample i starts a new shot when its changed share is above
`cut_min_change` and at least `cut_ratio` times the median changed share of the `cut_window`
samples on either side. The floor ignores noise and compression; the ratio ignores steady motion
(a pan changes many pixels in every sample, a cut changes them in one).
"""

from __future__ import annotations

import io
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from indexer.sources.audio import AudioOptions, transcribe_media, transcript_items
from indexer.sources.base import ASSET_VIDEO, KEYFRAME, SourceItem, SourceResult
from indexer.sources.subtitles import find_sidecar
from mmsearch.errors import ConfigError, DecodeError, MissingDependencyError, require

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


@dataclass
class VideoOptions:
    """How keyframes are sampled, cut into shots and kept, and how the sound track is transcribed."""

    analysis_fps: float = 2.0  # frames sampled per second of video for shot detection
    analysis_width: int = 64  # width the samples are shrunk to before comparing them
    pixel_delta: float = 0.12  # a pixel "changed" when a channel moved more than this (0-1 scale)
    cut_min_change: float = 0.02  # a cut needs at least this share of pixels changed ...
    cut_ratio: float = 3.0  # ... and this many times the median change around it
    cut_window: int = 4  # samples on each side that make up "around it"
    min_shot_s: float = 1.0  # a cut this soon after the previous one is ignored (flashes, pans)
    max_gap_s: float = 10.0  # no keyframe covers more than this: long shots get several
    merge_max_change: float = 0.01  # consecutive keyframes differing less than this are merged
    frame_short_side: int = 256  # keyframe image resolution (shorter side, pixels)
    thumbnail_size: int = 160  # longer side of the JPEG thumbnail kept for result pages
    thumbnail_quality: int = 80  # JPEG quality of the thumbnail
    min_coverage: float = (
        0.9  # decoded frames must reach this share of the duration, else "truncated"
    )
    audio: AudioOptions = field(default_factory=AudioOptions)  # the sound track's transcription

    def __post_init__(self) -> None:
        if self.analysis_fps <= 0 or self.max_gap_s <= 0:
            raise ConfigError("analysis_fps and max_gap_s must be positive")
        if self.max_gap_s < 1.0 / self.analysis_fps:
            raise ConfigError(
                f"max_gap_s ({self.max_gap_s}) is shorter than one analysis step (1/{self.analysis_fps} s)"
            )


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the file."""

    width: int
    height: int
    duration_s: float
    fps: float
    has_audio: bool
    stream_end_s: float | None = None  # where the video packets really end; None if unknown


@dataclass
class Sample:
    """One analysed frame: its time, its shrunk copy for comparisons, and the keyframe-size picture."""

    t: float
    small: np.ndarray  # (h, analysis_width, 3) uint8
    frame: np.ndarray | None = None  # (H, W, 3) uint8 at keyframe resolution


@dataclass
class Keyframe:
    """A picture that stands for the span [start_s, end_s] of the video."""

    start_s: float
    end_s: float
    sample: Sample


class _DecoderFailed(Exception):
    """decord could not read this file; PyAV gets a go."""


# ---------------------------------------------------------------------------- shot detection


def changed_share(a: np.ndarray, b: np.ndarray, pixel_delta: float) -> float:
    """Fraction of pixels whose largest channel difference exceeds pixel_delta (0-1 scale)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)
    return float((diff > pixel_delta * 255).mean())


class ShotCutter:
    """Marks each sample as starting a new shot or not, looking `cut_window` samples ahead."""

    def __init__(self, opts: VideoOptions) -> None:
        self.opts = opts
        self.samples: list[Sample] = []
        self.changes: list[float] = []  # changes[i]: sample i vs sample i-1 (0 for the first)
        self.done = 0  # samples already handed out
        self.base = 0  # index of samples[0] in the whole stream

    def push(self, sample: Sample) -> list[tuple[Sample, bool]]:
        if self.samples:
            self.changes.append(
                changed_share(self.samples[-1].small, sample.small, self.opts.pixel_delta)
            )
        else:
            self.changes.append(0.0)
        self.samples.append(sample)
        return self._decide(final=False)

    def finish(self) -> list[tuple[Sample, bool]]:
        return self._decide(final=True)

    def _decide(self, final: bool) -> list[tuple[Sample, bool]]:
        w = self.opts.cut_window
        out = []
        while self.done < self.base + len(self.samples) and (
            final or self.done + w < self.base + len(self.samples)
        ):
            i = self.done - self.base
            out.append((self.samples[i], self._is_cut(i)))
            self.done += 1
        drop = self.done - self.base - max(w, 1)  # keep w decided samples for the next windows
        if drop > 0:
            del self.samples[:drop], self.changes[:drop]
            self.base += drop
        return out

    def _is_cut(self, i: int) -> bool:
        if self.base + i == 0:
            return False
        w = self.opts.cut_window
        lo, hi = max(0, i - w), min(len(self.changes), i + w + 1)
        around = [self.changes[k] for k in range(lo, hi) if k != i and self.base + k > 0]
        baseline = float(np.median(around)) if around else 0.0
        change = self.changes[i]
        return change > self.opts.cut_min_change and change >= self.opts.cut_ratio * (
            baseline + 0.005
        )


class KeyframePicker:
    """Groups decided samples into shots and picks keyframes, holding at most ~2 max_gap_s of frames."""

    def __init__(self, opts: VideoOptions) -> None:
        self.opts = opts
        self.keyframes: list[Keyframe] = []
        self.shot_start = 0.0  # time of the last cut
        self.start = 0.0  # start of the part of the current shot not yet given keyframes
        self.pending: list[Sample] = []  # samples of that part
        self.last: Sample | None = None

    def push(self, sample: Sample, cut: bool) -> None:
        if cut and self.last is not None:
            cut_t = (self.last.t + sample.t) / 2
            if cut_t - self.shot_start >= self.opts.min_shot_s:
                self._close(cut_t)
                self.shot_start = cut_t
        self.pending.append(sample)
        self.last = sample
        g = self.opts.max_gap_s
        if sample.t - self.start >= 2 * g:  # a long shot: hand out one max_gap_s piece now
            piece = [s for s in self.pending if s.t < self.start + g]
            self._emit(self.start, self.start + g, piece)
            self.pending = [s for s in self.pending if s.t >= self.start + g]
            self.start += g

    def finish(self, end_s: float) -> list[Keyframe]:
        """Close the last shot at end_s (or just after the last sample when the length is unknown)."""
        if self.pending:
            last_t = self.pending[-1].t
            # a claimed length far past the last frame is not trusted: the stream ends where it ends
            end = min(end_s, last_t + self.opts.max_gap_s)
            self._close(end if end > last_t else last_t + 1.0 / self.opts.analysis_fps)
        return self.keyframes

    def _close(self, end: float) -> None:
        """End the current shot at `end`: equal pieces no longer than max_gap_s, one keyframe each.

        A piece without samples of its own is covered by its neighbour's keyframe, so the work
        grows with the samples, not with the span (timestamps can jump anywhere).
        """
        n = max(1, math.ceil((end - self.start) / self.opts.max_gap_s - 1e-9))
        step = (end - self.start) / n
        groups: dict[int, list[Sample]] = {}
        for sample in self.pending:
            k = min(n - 1, max(0, int((sample.t - self.start) // step)))
            groups.setdefault(k, []).append(sample)
        keys = sorted(groups)
        for i, k in enumerate(keys):
            lo = self.start + k * step if i else self.start
            hi = self.start + keys[i + 1] * step if i + 1 < len(keys) else end
            self._emit(lo, hi, groups[k])
        self.pending, self.start = [], end

    def _emit(self, lo: float, hi: float, candidates: list[Sample]) -> None:
        if not candidates:
            return
        mid = (lo + hi) / 2
        rep = min(candidates, key=lambda s: abs(s.t - mid))
        prev = self.keyframes[-1] if self.keyframes else None
        if (
            prev is not None
            and hi - prev.start_s <= self.opts.max_gap_s
            and changed_share(prev.sample.small, rep.small, self.opts.pixel_delta)
            < self.opts.merge_max_change
        ):
            prev.end_s = hi  # near-identical to the previous keyframe: one keyframe covers both
            return
        self.keyframes.append(Keyframe(lo, hi, rep))


def select_keyframes(
    samples: Iterable[Sample], duration_s: float, opts: VideoOptions
) -> list[Keyframe]:
    """Keyframes for a stream of samples in time order; frames of unchosen samples are dropped as it goes."""
    cutter, picker = ShotCutter(opts), KeyframePicker(opts)
    for sample in samples:
        for decided, cut in cutter.push(sample):
            picker.push(decided, cut)
    for decided, cut in cutter.finish():
        picker.push(decided, cut)
    return picker.finish(duration_s)


# ---------------------------------------------------------------------------- decoding


def _av_reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _has_video_stream(path: Path) -> bool:
    """Whether the file holds pictures; True where it cannot be opened (`probe_video` then says
    why) or holds no sound either (it says "no video stream")."""
    av = require("av", "Reading videos", "video")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video) or not container.streams.audio
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return True


def probe_video(path: Path) -> VideoInfo:
    """Size, duration, frame rate and whether there is a sound track, from the container header."""
    av = require("av", "Reading videos", "video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{path}: not a readable video ({_av_reason(exc)})") from exc
    with container:
        if not container.streams.video:
            raise DecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = float(container.duration or 0) / 1_000_000
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise DecodeError(f"{path}: video stream has no picture size")
        end = _stream_end(container, stream, duration) if duration > 0 else None
        return VideoInfo(width, height, duration, fps, bool(container.streams.audio), end)


MAX_END_PACKETS = 20_000  # packets read after seeking to the end before giving up on finding it


def _stream_end(container, stream, declared_s: float) -> float | None:
    """Seconds to the last video packet's end, found by seeking to the declared end and reading on.

    The container's duration is only a claim; decoders size tables by it. None when the file
    cannot seek or the end is not reached within MAX_END_PACKETS packets.
    """
    av = require("av", "Reading videos", "video")
    base = stream.time_base
    origin = stream.start_time or 0
    try:
        container.seek(origin + int(declared_s / base), backward=True, stream=stream)
        end = None
        for n, packet in enumerate(container.demux(stream)):
            if n >= MAX_END_PACKETS:
                return None
            if packet.pts is not None:
                tip = packet.pts + (packet.duration or 0)
                end = tip if end is None else max(end, tip)
    except (av.FFmpegError, OverflowError, ValueError):
        return None
    return None if end is None else max(0.0, float((end - origin) * base))


def frame_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at most short_side, aspect kept, both even."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _shrink(frame: np.ndarray, width: int) -> np.ndarray:
    h = max(1, round(frame.shape[0] * width / frame.shape[1]))
    return np.asarray(
        Image.fromarray(frame).resize((width, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )


def _sample_indices(n: int, step: float) -> Iterator[int]:
    """Frame indices about `step` apart, computed as they are needed (n can be absurd)."""
    last = -1
    for k in range(max(1, math.ceil(n / step))):
        idx = min(n - 1, round(k * step))
        if idx > last:
            last = idx
            yield idx


def _batches(values: Iterator[int], size: int) -> Iterator[list[int]]:
    while batch := list(itertools.islice(values, size)):
        yield batch


def _decord_samples(
    path: Path, analysis_fps: float, size: tuple[int, int], small_w: int
) -> Iterator[Sample]:
    """Samples via decord: batched reads of the sampled frame indices, resized while decoding."""
    decord = require("decord", "Reading videos", "video")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=size[0], height=size[1])
        n, fps = len(reader), float(reader.get_avg_fps()) or 25.0
    except Exception as exc:  # decord raises DECORDError / RuntimeError for anything it cannot read
        raise _DecoderFailed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if n <= 0:
        raise _DecoderFailed("no frames")
    step = fps / analysis_fps
    for chunk in _batches(_sample_indices(n, step), 32):
        try:
            frames = reader.get_batch(chunk).asnumpy()
        except Exception as exc:
            raise _DecoderFailed(
                f"frame {chunk[0]}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            ) from exc
        for idx, frame in zip(chunk, frames, strict=True):
            yield Sample(idx / fps, _shrink(frame, small_w), frame)


def _pyav_samples(
    path: Path, analysis_fps: float, size: tuple[int, int], small_w: int
) -> Iterator[Sample]:
    """Samples via PyAV: decodes every frame but converts only the sampled ones."""
    av = require("av", "Reading videos", "video")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin, next_t = None, 0.0
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                origin = frame.time if origin is None else origin
                t = frame.time - origin
                if t + 1e-6 < next_t:
                    continue
                rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                yield Sample(t, _shrink(rgb, small_w), rgb)
                next_t = (math.floor(t * analysis_fps + 1e-6) + 1) / analysis_fps
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: corrupt video data ({_av_reason(exc)})") from exc


def _keyframes_with(
    reader: Callable[[Path, float, tuple[int, int], int], Iterator[Sample]],
    path: Path,
    info: VideoInfo,
    opts: VideoOptions,
) -> list[Keyframe]:
    """Keyframes from one decoder; a file whose frames stop early is reported as truncated."""
    reach = 0.0
    step = max(1.0 / opts.analysis_fps, 1.0 / info.fps)

    def tracked() -> Iterator[Sample]:
        nonlocal reach
        size = frame_size(info.width, info.height, opts.frame_short_side)
        for sample in reader(path, opts.analysis_fps, size, opts.analysis_width):
            reach = sample.t + step
            yield sample

    keyframes = select_keyframes(tracked(), info.duration_s, opts)
    if not keyframes:
        raise DecodeError(f"{path}: no decodable frames")
    if info.duration_s > 0 and reach < opts.min_coverage * info.duration_s:
        raise DecodeError(
            f"{path}: truncated (frames stop at {reach:.1f} s of {info.duration_s:.1f} s)"
        )
    return keyframes


def check_length(path: Path, info: VideoInfo, opts: VideoOptions) -> None:
    """A header claiming far more than the stream holds is truncated or false: refuse it early.

    decord sizes its frame tables by the claimed length (10^8 s is gigabytes), so this runs
    before any decoder opens the file; the same coverage rule as for decoded frames applies.
    """
    if info.stream_end_s is None or info.duration_s <= 0:
        return
    reach = info.stream_end_s + 1.0 / info.fps
    if reach < opts.min_coverage * info.duration_s:
        raise DecodeError(
            f"{path}: truncated or a false length (the stream ends at "
            f"{info.stream_end_s:.1f} s, the header says {info.duration_s:.1f} s)"
        )


def extract_keyframes(path: str | Path, info: VideoInfo, opts: VideoOptions) -> list[Keyframe]:
    """Keyframes via decord, or via PyAV where decord cannot open or read the file."""
    path = Path(path)
    try:
        return _keyframes_with(_decord_samples, path, info, opts)
    except _DecoderFailed as exc:
        log.info("%s: decord failed (%s); decoding with PyAV", path.name, exc)
    except MissingDependencyError:
        log.debug("decord is not installed; decoding %s with PyAV", path.name)
    return _keyframes_with(_pyav_samples, path, info, opts)


# ---------------------------------------------------------------------------- items


def thumbnail_jpeg(image: Image.Image, size: int, quality: int) -> bytes:
    """A small JPEG for result pages, so they never decode the video."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _keyframe_item(kf: Keyframe, opts: VideoOptions) -> SourceItem:
    image = Image.fromarray(np.asarray(kf.sample.frame))
    thumb = thumbnail_jpeg(image, opts.thumbnail_size, opts.thumbnail_quality)
    return SourceItem(KEYFRAME, image=image, start_s=kf.start_s, end_s=kf.end_s, thumbnail=thumb)


def _sound_items(path: Path, info: VideoInfo, opts: VideoOptions, meta: dict) -> list[SourceItem]:
    """Transcript items of the sound track (or sidecar subtitles); no speech just means none."""
    if not info.has_audio and find_sidecar(path) is None:
        return []
    try:
        transcript = transcribe_media(path, opts.audio, has_audio=info.has_audio)
    except DecodeError as exc:
        log.info("%s: keyframes only, no transcript: %s", path.name, exc)
        return []
    meta["transcript_backend"] = transcript.backend
    return transcript_items(transcript.segments, opts.audio)


def frames_at(path: str | Path, times: list[float], short_side: int) -> list[Image.Image]:
    """Frames at these times (seconds, ascending), with the shorter side at most `short_side`:
    one sequential decode (PyAV), each time taking the first frame at or after it."""
    av = require("av", "Reading videos", "video")
    wanted = sorted(times)
    out: list[Image.Image] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            size, origin = None, None
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                origin = frame.time if origin is None else origin
                while len(out) < len(wanted) and frame.time - origin + 1e-3 >= wanted[len(out)]:
                    size = size or frame_size(frame.width, frame.height, short_side)
                    out.append(frame.to_image(width=size[0], height=size[1]))
                if len(out) == len(wanted):
                    break
    except av.FFmpegError as exc:
        raise DecodeError(f"{path}: corrupt video data ({_av_reason(exc)})") from exc
    return out


def read_video(path: str | Path, opts: VideoOptions | None = None) -> SourceResult:
    """Keyframes (image tower) and transcript windows (text tower) of one video file."""
    opts = opts or VideoOptions()
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file")
    if not _has_video_stream(path):  # a sound-only .mp4/.webm (a voice memo): its speech
        from indexer.sources.audio import read_audio

        return read_audio(path, opts.audio)
    info = probe_video(path)
    check_length(path, info, opts)
    keyframes = extract_keyframes(path, info, opts)
    items = [_keyframe_item(kf, opts) for kf in keyframes]
    duration = info.duration_s or (keyframes[-1].end_s if keyframes else 0.0)
    meta: dict = {"width": info.width, "height": info.height, "duration_s": duration}
    items += _sound_items(path, info, opts, meta)
    log.info(
        "%s: %d keyframes, %d transcript windows",
        path.name,
        len(keyframes),
        len(items) - len(keyframes),
    )
    return SourceResult(ASSET_VIDEO, items, meta)
