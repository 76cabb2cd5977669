"""Speech-to-text backends behind one small interface: samples in, timed segments out.

pocketsphinx runs offline with its bundled English model; faster-whisper is far more accurate
for users who can download its weights. Both are imported lazily and only when used.
"""

from __future__ import annotations

import io
import logging
import re
import threading
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
    """Turns 16 kHz mono samples into timed segments; `name` is recorded per asset."""

    name: str

    def transcribe(self, samples: np.ndarray, rate: int) -> list[Segment]: ...


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


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


class PocketsphinxTranscriber:
    """Offline English ASR: voice-activity detection splits the audio, the decoder times each word."""

    name = "pocketsphinx"
    FRAME_RATE = 100  # decoder frames per second (pocketsphinx's default -frate)

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

    def speech_regions(self, samples: np.ndarray) -> list[tuple[float, float]]:
        """(start, end) seconds of speech, padded, overlapping ones joined, long ones cut."""
        ps = require("pocketsphinx", "Offline speech recognition", "audio")
        duration = len(samples) / SAMPLE_RATE
        regions: list[list[float]] = []
        for seg in ps.Segmenter(sample_rate=SAMPLE_RATE).segment(io.BytesIO(samples.tobytes())):
            start, end = (
                max(0.0, seg.start_time - self.pad_s),
                min(duration, seg.end_time + self.pad_s),
            )
            if regions and start <= regions[-1][1]:
                regions[-1][1] = end
            else:
                regions.append([start, end])
        if not regions and duration > 0 and _rms(samples) > SILENCE_RMS:
            # The VAD misses some clean, steady speech (flite voices, seen on an 8 s memo). A
            # recording with real signal in it is then decoded whole; true silence never is,
            # since the decoder invents words for it.
            log.debug("voice-activity detection found nothing; decoding the whole recording")
            regions = [[0.0, duration]]
        return [piece for start, end in regions for piece in self._cut(start, end)]

    def _cut(self, start: float, end: float) -> list[tuple[float, float]]:
        n = max(1, int(np.ceil((end - start) / self.max_utterance_s)))
        step = (end - start) / n
        return [(start + k * step, start + (k + 1) * step) for k in range(n)]

    def transcribe(self, samples: np.ndarray, rate: int) -> list[Segment]:
        _check_rate(rate)
        pcm = _as_int16(samples)
        with self._lock:
            decoder = self._get_decoder()
            segments = []
            for start, end in self.speech_regions(pcm):
                chunk = pcm[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
                segment = self._decode(decoder, chunk, start)
                if segment is not None:
                    segments.append(segment)
        return segments

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
