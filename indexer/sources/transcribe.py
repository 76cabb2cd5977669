"""Speech-to-text backends behind one small interface: samples in, timed segments out.

pocketsphinx runs offline with its bundled English model; faster-whisper is far more accurate
for users who can download its weights. Both are imported lazily and only when used.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexer.sources.chunking import TimedWord, spread_words
from mmsearch.errors import ConfigError, require

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # every backend here takes 16 kHz mono


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: an utterance, a subtitle cue or a whisper segment."""

    start_s: float
    end_s: float
    text: str
    words: tuple[TimedWord, ...] = ()  # per-word times when the backend knows them


class Transcriber(Protocol):
    """Turns 16 kHz mono samples into timed segments; `name` is recorded per asset.

    `transcribe_stream` takes the recording as consecutive chunks and holds only a bounded part
    of it, so memory does not grow with the recording's length.
    """

    name: str

    def transcribe(self, samples: np.ndarray, rate: int) -> list[Segment]: ...

    def transcribe_stream(self, chunks: Iterable[np.ndarray], rate: int) -> list[Segment]: ...


def segment_words(segments: list[Segment]) -> list[TimedWord]:
    """All words in time order; segments without word times share their span evenly."""
    words: list[TimedWord] = []
    for seg in segments:
        words.extend(seg.words or spread_words(seg.text, seg.start_s, seg.end_s))
    return words


def _as_int16(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


def _as_float32(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def _check_rate(rate: int) -> None:
    if rate != SAMPLE_RATE:
        raise ConfigError(
            f"transcribers take {SAMPLE_RATE} Hz audio, not {rate} Hz; resample first"
        )


# pocketsphinx marks silence, fillers and noise with these; alternative pronunciations end in "(2)"
_PS_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")
_PS_VARIANT = re.compile(r"\(\d+\)$")


SILENCE_RMS = 300.0  # int16 RMS (about -40 dBFS): below this a recording holds no speech to find
WHOLE_DECODE_MAX_S = 300.0  # a recording without VAD speech is decoded whole up to this long
LOOKBACK_S = 1.0  # the VAD reports a speech start at most this long after it began


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


class _RecentPcm:
    """The recent part of a recording: samples from absolute index `start` on, older ones dropped."""

    def __init__(self) -> None:
        self.data = np.zeros(0, np.int16)
        self.start = 0  # absolute index of data[0]

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, chunk: np.ndarray) -> None:
        self.data = np.concatenate([self.data, _as_int16(np.asarray(chunk).reshape(-1))])

    def slice(self, lo: int, hi: int) -> np.ndarray:
        lo, hi = max(lo, self.start), min(hi, self.end)
        return self.data[lo - self.start : max(lo, hi) - self.start]

    def drop_before(self, index: int) -> None:
        if index > self.start:
            cut = min(index, self.end) - self.start
            self.data = self.data[cut:].copy()
            self.start += cut


class _Regions:
    """Speech regions as the VAD finds them: padded, overlapping ones joined, long ones cut.

    A region is handed out (to be decoded) once no later speech can join it, so only the audio
    of the region being built has to be kept.
    """

    def __init__(self, pad_s: float, max_s: float) -> None:
        self.pad_s, self.max_s = pad_s, max_s
        self.open: list[float | None] | None = None  # [start, end]; end None while speech goes on
        self.found = False  # any speech at all

    def speech_started(self, t: float) -> list[tuple[float, float]]:
        start = max(0.0, t - self.pad_s)
        self.found = True
        if self.open is not None and (self.open[1] is None or start <= self.open[1]):
            self.open[1] = None  # joins the region being built
            return []
        done = self.close(float("inf"))
        self.open = [start, None]
        return done

    def speech_ended(self, t: float) -> None:
        if self.open is None:  # an end without a start: the VAD began in speech
            self.open = [0.0, None]
        self.open[1] = t + self.pad_s

    def due(self, now: float) -> list[tuple[float, float]]:
        """Regions complete at `now` (seconds read so far); long ongoing speech is cut into pieces."""
        if self.open is None:
            return []
        start, end = self.open
        if end is None:
            pieces = []
            while now - start >= self.max_s + LOOKBACK_S:
                pieces.append((start, start + self.max_s))
                start += self.max_s
            self.open[0] = start
            return pieces
        if now - end > self.pad_s + LOOKBACK_S:
            return self.close(now)
        return []

    def close(self, duration: float) -> list[tuple[float, float]]:
        if self.open is None:
            return []
        start, end = self.open
        self.open = None
        end = duration if end is None else min(end, duration)
        return self._cut(start, end) if end > start else []

    def keep_from(self) -> float | None:
        """The earliest second still needed, or None when nothing is being built."""
        return None if self.open is None else self.open[0]

    def _cut(self, start: float, end: float) -> list[tuple[float, float]]:
        n = max(1, int(np.ceil((end - start) / self.max_s)))
        step = (end - start) / n
        return [(start + k * step, start + (k + 1) * step) for k in range(n)]


class PocketsphinxTranscriber:
    """Offline English ASR: voice-activity detection splits the audio, the decoder times each word.

    The recording is read as a stream: only the speech region being built (at most
    `max_utterance_s`) and a few seconds before it are held, whatever the recording's length.
    """

    name = "pocketsphinx"
    FRAME_RATE = 100  # decoder frames per second (pocketsphinx's default -frate)
    KEEP_S = 5.0  # audio kept behind the VAD's position, for the padding of a region about to start

    def __init__(self, pad_s: float = 0.3, max_utterance_s: float = 40.0) -> None:
        self.pad_s = pad_s  # audio kept around each detected speech region; VAD starts late
        self.max_utterance_s = (
            max_utterance_s  # longer regions are cut, the decoder slows on long ones
        )
        self._decoder: Any = None
        self._lock = threading.Lock()  # one decoder, not thread-safe

    def _get_decoder(self) -> Any:
        if self._decoder is None:
            ps = require("pocketsphinx", "Offline speech recognition", "audio")
            ps.set_loglevel("ERROR")
            self._decoder = ps.Decoder()
        return self._decoder

    def transcribe(self, samples: np.ndarray, rate: int) -> list[Segment]:
        return self.transcribe_stream([samples], rate)

    def transcribe_stream(self, chunks: Iterable[np.ndarray], rate: int) -> list[Segment]:
        _check_rate(rate)
        with self._lock:
            return _PocketsphinxRun(self, self._get_decoder()).run(chunks)

    def _decode(self, decoder: Any, pcm: np.ndarray, offset_s: float) -> Segment | None:
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        decoder.end_utt()
        words = tuple(
            TimedWord(
                _PS_VARIANT.sub("", s.word),
                offset_s + s.start_frame / self.FRAME_RATE,
                offset_s + (s.end_frame + 1) / self.FRAME_RATE,
            )
            for s in decoder.seg()
            if not _PS_FILLER.match(s.word)
        )
        if not words:
            return None
        return Segment(words[0].start_s, words[-1].end_s, " ".join(w.text for w in words), words)


class _PocketsphinxRun:
    """One recording through the VAD and the decoder, chunk by chunk."""

    def __init__(self, owner: PocketsphinxTranscriber, decoder: Any) -> None:
        ps = require("pocketsphinx", "Offline speech recognition", "audio")
        self.owner, self.decoder = owner, decoder
        self.vad = ps.Endpointer(sample_rate=SAMPLE_RATE)
        self.frame = self.vad.frame_bytes // 2  # samples per VAD frame
        self.pcm = _RecentPcm()
        self.regions = _Regions(owner.pad_s, owner.max_utterance_s)
        self.fed = 0  # samples given to the VAD
        self.segments: list[Segment] = []

    def run(self, chunks: Iterable[np.ndarray]) -> list[Segment]:
        for chunk in chunks:
            self.pcm.append(chunk)
            while self.fed + self.frame <= self.pcm.end:
                self._feed(self.pcm.slice(self.fed, self.fed + self.frame), last=False)
            self._decode_all(self.regions.due(self.fed / SAMPLE_RATE))
            self._forget()
        if self.fed < self.pcm.end:  # a last, short frame
            self._feed(self.pcm.slice(self.fed, self.pcm.end), last=True)
        duration = self.pcm.end / SAMPLE_RATE
        self._decode_all(self.regions.close(duration))
        if not self.regions.found and self._whole_decode_wanted():
            # The VAD misses some clean, steady speech (flite voices, seen on an 8 s memo). A
            # short recording with real signal in it is then decoded whole; true silence never
            # is, since the decoder invents words for it.
            log.debug("voice-activity detection found nothing; decoding the whole recording")
            self._decode_all(self.regions._cut(0.0, duration))
        return self.segments

    def _feed(self, frame: np.ndarray, last: bool) -> None:
        was_speech = self.vad.in_speech
        data = frame.tobytes()
        speech = self.vad.end_stream(data) if last else self.vad.process(data)
        self.fed += len(frame)
        if speech is None:
            return
        if not was_speech:
            self._decode_all(self.regions.speech_started(self.vad.speech_start))
        if not self.vad.in_speech:
            self.regions.speech_ended(self.vad.speech_end)

    def _decode_all(self, regions: list[tuple[float, float]]) -> None:
        for start, end in regions:
            chunk = self.pcm.slice(int(start * SAMPLE_RATE), int(end * SAMPLE_RATE))
            segment = self.owner._decode(self.decoder, chunk, start)
            if segment is not None:
                self.segments.append(segment)

    def _whole_decode_wanted(self) -> bool:
        held = self.pcm.data  # the whole recording when it was short enough to keep
        return self.pcm.start == 0 and len(held) > 0 and _rms(held) > SILENCE_RMS

    def _forget(self) -> None:
        """Drop audio no region can need; a short recording without speech yet is kept whole."""
        now = self.fed / SAMPLE_RATE
        if not self.regions.found and now <= WHOLE_DECODE_MAX_S:
            return
        keep = now - self.owner.KEEP_S
        start = self.regions.keep_from()
        if start is not None:
            keep = min(keep, start)
        self.pcm.drop_before(int(max(0.0, keep) * SAMPLE_RATE))


WHISPER_SPAN_S = 600.0  # seconds whisper is given at once (a word on a span's edge may be cut)


def _shifted(segments: list[Segment], offset_s: float) -> list[Segment]:
    """Segments of a later span, moved to their time in the whole recording."""
    if not offset_s:
        return segments
    return [
        Segment(
            s.start_s + offset_s,
            s.end_s + offset_s,
            s.text,
            tuple(TimedWord(w.text, w.start_s + offset_s, w.end_s + offset_s) for w in s.words),
        )
        for s in segments
    ]


class WhisperTranscriber:
    """faster-whisper: multilingual and accurate; needs its weights (downloaded once, then cached)."""

    name = "whisper"

    def __init__(
        self, model_size: str = "base", device: str = "auto", compute_type: str = "default"
    ) -> None:
        self.model_size = (
            model_size  # "tiny", "base", "small", ... or a local CTranslate2 model folder
        )
        self.device = device  # "cpu", "cuda" or "auto"
        self.compute_type = compute_type  # e.g. "int8" on CPU, "float16" on GPU
        self._model: Any = None
        self._lock = threading.Lock()

    def _get_model(self) -> Any:
        if self._model is None:
            fw = require("faster_whisper", "Whisper transcription", "whisper")
            self._model = fw.WhisperModel(
                self.model_size,
                device=self.device,
                compute_type=self.compute_type,
                download_root=str(whisper_cache_dir()),
            )
        return self._model

    def transcribe(self, samples: np.ndarray, rate: int) -> list[Segment]:
        _check_rate(rate)
        with self._lock:
            model = self._get_model()
            raw, _info = model.transcribe(
                _as_float32(samples), word_timestamps=True, vad_filter=True
            )
            return [s for s in (self._segment(r) for r in raw) if s is not None]

    def transcribe_stream(self, chunks: Iterable[np.ndarray], rate: int) -> list[Segment]:
        """Spans of `WHISPER_SPAN_S` at a time, so a long recording is never held whole."""
        _check_rate(rate)
        segments: list[Segment] = []
        offset, held, size = 0.0, [], 0
        for chunk in chunks:
            held.append(chunk)
            size += len(chunk)
            if size >= WHISPER_SPAN_S * rate:
                segments += _shifted(self.transcribe(np.concatenate(held), rate), offset)
                offset, held, size = offset + size / rate, [], 0
        if size:
            segments += _shifted(self.transcribe(np.concatenate(held), rate), offset)
        return segments

    @staticmethod
    def _segment(raw: Any) -> Segment | None:
        text = " ".join(str(raw.text).split())
        if not text:
            return None
        words = tuple(
            TimedWord(w.word.strip(), float(w.start), float(w.end))
            for w in (getattr(raw, "words", None) or ())
            if w.word.strip()
        )
        return Segment(float(raw.start), float(raw.end), text, words)


def whisper_cache_dir() -> Path:
    """Whisper weights live beside the other models mmsearch downloads."""
    from mmsearch.paths import cache_dir

    return cache_dir() / "whisper"


def whisper_ready(model_size: str) -> bool:
    """True when faster-whisper is installed and the model is on disk, so 'auto' never downloads."""
    try:
        utils = require("faster_whisper.utils", "Whisper transcription", "whisper")
    except Exception:  # not installed (or broken install): simply not ready
        return False
    if Path(model_size).is_dir():
        return True
    for cache in (str(whisper_cache_dir()), None):  # ours, then the Hugging Face default
        try:
            utils.download_model(model_size, local_files_only=True, cache_dir=cache)
            return True
        except Exception:  # huggingface_hub raises several kinds for "not cached"
            continue
    return False


_CACHE: dict[tuple, Transcriber] = {}
_CACHE_LOCK = threading.Lock()


def get_transcriber(
    backend: str, whisper_model: str = "base", whisper_device: str = "auto"
) -> Transcriber:
    """One shared transcriber per backend and model in this process, because loading models is slow."""
    key = (backend, whisper_model, whisper_device) if backend == "whisper" else (backend,)
    with _CACHE_LOCK:
        if key not in _CACHE:
            if backend == "pocketsphinx":
                _CACHE[key] = PocketsphinxTranscriber()
            elif backend == "whisper":
                _CACHE[key] = WhisperTranscriber(whisper_model, device=whisper_device)
            else:
                raise ConfigError(
                    f"unknown speech backend {backend!r}; choose pocketsphinx or whisper"
                )
        return _CACHE[key]
