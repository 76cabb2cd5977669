"""Audio source: real speech is transcribed offline, subtitles win over ASR, and bad files are refused."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest

from indexer.sources import transcribe
from indexer.sources.audio import (
    AUDIO_EXTENSIONS,
    AudioOptions,
    AudioStream,
    load_audio,
    read_audio,
)
from indexer.sources.base import ASSET_AUDIO, TRANSCRIPT
from indexer.sources.chunking import TimedWord, window_timed_words
from indexer.sources.subtitles import find_sidecar, parse_subtitles
from indexer.sources.transcribe import (
    PocketsphinxTranscriber,
    Segment,
    WhisperTranscriber,
    segment_words,
    whisper_ready,
)
from mmsearch.errors import ConfigError, DecodeError, MissingDependencyError
from mmsearch.synth.media import speak, write_silence, write_video

SENTENCE = "a red circle on the left. the yellow star is at the top"


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    return speak(SENTENCE, tmp_path_factory.mktemp("audio") / "speech.wav")


def convert(wav: Path, dst: Path, codec: str, rate: int, fmt: str) -> Path:
    """Re-encode a WAV with PyAV (the same library users' files are decoded with)."""
    with av.open(str(wav)) as src, av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=rate)
        for frame in src.decode(audio=0):
            for piece in resampler.resample(frame):
                out.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return dst


def words_of(result) -> set[str]:
    return {w for item in result.items for w in item.text.lower().replace(".", " ").split()}


def test_pocketsphinx_transcribes_flite_speech(speech_wav):
    result = read_audio(speech_wav)
    assert result.asset_kind == ASSET_AUDIO
    assert result.meta["transcript_backend"] == "pocketsphinx"
    assert result.meta["duration_s"] == pytest.approx(
        len(load_audio(speech_wav)) / 16_000, abs=0.05
    )
    # colour and shape words come through reliably; articles and "is" do not
    assert {"red", "circle", "yellow", "left", "top"} <= words_of(result)
    for item in result.items:
        assert (
            item.kind == TRANSCRIPT
            and 0.0 <= item.start_s < item.end_s <= result.meta["duration_s"] + 0.5
        )


def test_word_times_place_speech_where_it_is(speech_wav, tmp_path):
    """Silence before the speech shifts every word by its length."""
    pcm = load_audio(speech_wav)
    padded = np.concatenate([np.zeros(3 * 16_000, np.int16), pcm])
    segments = PocketsphinxTranscriber().transcribe(padded, 16_000)
    red = next(w for s in segments for w in s.words if w.text == "red")
    assert 3.0 < red.start_s < 4.0 and red.end_s > red.start_s


def test_streamed_chunks_find_speech_after_a_long_silence(speech_wav):
    """Fed in small chunks, silence is dropped as it goes, yet speech 400 s in is found in place."""
    pcm = load_audio(speech_wav)
    rate = 16_000
    recording = np.concatenate([np.zeros(400 * rate, np.int16), pcm, np.zeros(5 * rate, np.int16)])
    chunks = (recording[lo : lo + 7_777] for lo in range(0, len(recording), 7_777))
    streamed = PocketsphinxTranscriber().transcribe_stream(chunks, rate)
    whole = PocketsphinxTranscriber().transcribe(recording, rate)
    assert [s.text for s in streamed] == [s.text for s in whole]
    red = next(w for s in streamed for w in s.words if w.text == "red")
    assert 400.0 < red.start_s < 401.5


def test_audio_stream_hands_out_fixed_windows_and_counts_what_it_decoded(tmp_path):
    path = write_silence(tmp_path / "quiet.wav", 7.25)
    stream = AudioStream(path, window_s=2.0)
    sizes = [len(w) for w in stream]
    assert sizes == [32_000, 32_000, 32_000, 20_000]
    assert stream.seconds == pytest.approx(7.25)


@pytest.mark.parametrize(
    ("ext", "codec", "rate", "fmt"),
    [
        (".mp3", "libmp3lame", 16_000, "s16p"),
        (".flac", "flac", 16_000, "s16"),
        (".ogg", "libopus", 48_000, "s16"),
        (".m4a", "aac", 16_000, "fltp"),
    ],
)
def test_compressed_formats_decode_to_the_same_audio(speech_wav, tmp_path, ext, codec, rate, fmt):
    assert ext in AUDIO_EXTENSIONS
    path = convert(speech_wav, tmp_path / f"speech{ext}", codec, rate, fmt)
    reference = load_audio(speech_wav)
    samples = load_audio(path)
    assert samples.dtype == np.int16
    assert abs(len(samples) - len(reference)) < 0.15 * 16_000  # codec padding only
    n = min(len(samples), len(reference))
    loudness = float(np.abs(samples[:n].astype(np.float32)).mean())
    assert loudness > 0.5 * float(np.abs(reference.astype(np.float32)).mean())


def test_every_format_transcribes(speech_wav, tmp_path):
    for ext, codec, rate, fmt in [
        (".mp3", "libmp3lame", 16_000, "s16p"),
        (".ogg", "libopus", 48_000, "s16"),
        (".m4a", "aac", 16_000, "fltp"),
    ]:
        result = read_audio(convert(speech_wav, tmp_path / f"s{ext}", codec, rate, fmt))
        assert {"red", "circle"} <= words_of(result), ext


def test_sidecar_subtitles_win_over_speech_recognition(speech_wav, tmp_path):
    path = tmp_path / "talk.wav"
    path.write_bytes(speech_wav.read_bytes())
    path.with_suffix(".srt").write_bytes(
        b"\xef\xbb\xbf1\r\n00:00:00,500 --> 00:00:02,000\r\n<i>A purple diamond</i>\r\n\r\n"
        b"2\r\n00:00:02,000 --> 00:00:03,250\r\n{\\an8}at the bottom\r\n"
    )
    result = read_audio(path)
    assert result.meta["transcript_backend"] == "sidecar"
    (item,) = result.items
    assert (item.text, item.start_s, item.end_s) == ("A purple diamond at the bottom", 0.5, 3.25)


def test_empty_sidecar_falls_back_to_asr_and_says_why(speech_wav, tmp_path, caplog):
    path = tmp_path / "talk.wav"
    path.write_bytes(speech_wav.read_bytes())
    path.with_suffix(".vtt").touch()
    with caplog.at_level("WARNING"):
        result = read_audio(path)
    assert result.meta["transcript_backend"] == "pocketsphinx"
    assert "talk.vtt: empty file" in caplog.text
    assert "circle" in words_of(result)


def test_explicit_backends(speech_wav, tmp_path):
    path = tmp_path / "talk.wav"
    path.write_bytes(speech_wav.read_bytes())
    path.with_suffix(".srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nsubtitle text\n")
    assert (
        read_audio(path, AudioOptions(transcriber="pocketsphinx")).meta["transcript_backend"]
        == "pocketsphinx"
    )
    with pytest.raises(DecodeError, match="transcriber='none'"):
        read_audio(path, AudioOptions(transcriber="none"))
    path.with_suffix(".srt").unlink()
    with pytest.raises(DecodeError, match="no usable .srt/.vtt"):
        read_audio(path, AudioOptions(transcriber="sidecar"))
    with pytest.raises(ConfigError, match="unknown transcriber"):
        AudioOptions(transcriber="google")


def test_silence_is_reported_as_no_speech(tmp_path):
    with pytest.raises(DecodeError, match="no speech found"):
        read_audio(write_silence(tmp_path / "quiet.wav", 3.0))


def test_files_without_audio_are_decode_errors(tmp_path):
    from mmsearch.synth import single_object_scene

    video = tmp_path / "mute.mp4"
    write_video(video, [(single_object_scene("red", "circle"), 1.0)])
    with pytest.raises(DecodeError, match="no audio stream"):
        read_audio(video)
    fake = tmp_path / "song.mp3"
    fake.write_text("these are lyrics, not audio\n" * 20)
    with pytest.raises(DecodeError, match="song.mp3: not a readable media file"):
        read_audio(fake)
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(DecodeError, match="empty file"):
        read_audio(empty)


def test_transcript_windows_overlap_by_half():
    words = [TimedWord(f"w{i}", i * 0.5, i * 0.5 + 0.4) for i in range(70)]
    chunks = window_timed_words(words, max_words=30, max_seconds=60.0, overlap=0.5)
    assert [c.text.split()[0] for c in chunks] == ["w0", "w15", "w30", "w45"]
    assert all(len(c.text.split()) <= 30 for c in chunks)
    assert (chunks[1].start_s, chunks[1].end_s) == (7.5, 22.4)
    assert chunks[-1].text.split()[-1] == "w69"


def test_transcript_windows_break_at_long_pauses():
    words = [TimedWord("before", 0.0, 0.5), TimedWord("after", 100.0, 100.5)]
    chunks = window_timed_words(words, max_words=30, max_seconds=20.0, overlap=0.5)
    assert [(c.text, c.start_s, c.end_s) for c in chunks] == [
        ("before", 0.0, 0.5),
        ("after", 100.0, 100.5),
    ]


def test_segments_without_word_times_share_their_span():
    words = segment_words([Segment(10.0, 12.0, "four words right here")])
    assert [(w.start_s, w.end_s) for w in words] == [
        (10.0, 10.5),
        (10.5, 11.0),
        (11.0, 11.5),
        (11.5, 12.0),
    ]


def test_subtitle_parser_reads_webvtt_quirks():
    vtt = (
        "WEBVTT - made by hand\n\nNOTE a comment\nspanning lines\n\nSTYLE\n::cue { color: yellow }\n\n"
        "intro\n00:01.000 --> 00:02.500 align:start position:10%\n<v Roger>Hello &amp; <c.loud>welcome</c>\n\n"
        "01:00:00.000 --> 01:00:01.000\n<00:00:00.500>timed <b>words</b>\n\n"
        "broken --> cue\nno times here\n\n"
        "00:00:03.000 --> 00:00:04.000\n\n"
    )
    cues = parse_subtitles(vtt)
    assert [(c.start_s, c.end_s, c.text) for c in cues] == [
        (1.0, 2.5, "Hello & welcome"),
        (3600.0, 3601.0, "timed words"),
    ]


def test_sidecar_lookup(tmp_path):
    media = tmp_path / "holiday.mp4"
    assert find_sidecar(media) is None
    (tmp_path / "holiday.en.srt").write_text("x")
    assert find_sidecar(media) == tmp_path / "holiday.en.srt"
    (tmp_path / "holiday.vtt").write_text("x")
    assert find_sidecar(media) == tmp_path / "holiday.vtt"  # exact stem first


class _FakeWord:
    def __init__(self, word: str, start: float, end: float) -> None:
        self.word, self.start, self.end, self.probability = word, start, end, 0.9


class _FakeSegment:
    def __init__(self, start, end, text, words):
        self.start, self.end, self.text, self.words = start, end, text, words


class _FakeWhisperModel:
    """Stands in for faster_whisper.WhisperModel, whose weights cannot be downloaded here."""

    calls: list = []

    def __init__(
        self, model_size_or_path, device="auto", compute_type="default", download_root=None
    ):
        self.calls.append(("init", model_size_or_path, device))

    def transcribe(self, audio, **kwargs):
        self.calls.append(("transcribe", audio.dtype, kwargs.get("word_timestamps")))
        segments = iter(
            [
                _FakeSegment(
                    0.0,
                    1.5,
                    " A green cross.",
                    [
                        _FakeWord(" A", 0.0, 0.2),
                        _FakeWord(" green", 0.2, 0.8),
                        _FakeWord(" cross.", 0.8, 1.5),
                    ],
                ),
                _FakeSegment(2.0, 3.0, "   ", []),
            ]
        )
        return segments, types.SimpleNamespace(language="en")


@pytest.fixture
def fake_whisper(monkeypatch):
    module = types.ModuleType("faster_whisper")
    module.WhisperModel = _FakeWhisperModel
    monkeypatch.setitem(sys.modules, "faster_whisper", module)
    monkeypatch.setattr(transcribe, "_CACHE", {})
    _FakeWhisperModel.calls = []
    return module


def test_whisper_adapter_maps_segments_and_words(fake_whisper):
    segments = WhisperTranscriber("small", device="cpu").transcribe(
        np.zeros(16_000, np.int16), 16_000
    )
    assert segments == [
        Segment(
            0.0,
            1.5,
            "A green cross.",
            (TimedWord("A", 0.0, 0.2), TimedWord("green", 0.2, 0.8), TimedWord("cross.", 0.8, 1.5)),
        )
    ]
    assert _FakeWhisperModel.calls == [("init", "small", "cpu"), ("transcribe", np.float32, True)]


def test_auto_picks_whisper_when_its_model_is_cached(fake_whisper, speech_wav, monkeypatch):
    import indexer.sources.audio as audio

    monkeypatch.setattr(audio, "whisper_ready", lambda model: True)
    result = read_audio(speech_wav)
    assert result.meta["transcript_backend"] == "whisper"
    assert [i.text for i in result.items] == ["A green cross."]


def test_whisper_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import now fails
    monkeypatch.setitem(sys.modules, "faster_whisper.utils", None)
    assert whisper_ready("base") is False
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmsearch\[whisper\]'"):
        WhisperTranscriber().transcribe(np.zeros(10, np.int16), 16_000)


def test_speech_the_voice_detector_misses_is_still_transcribed(tmp_path, monkeypatch):
    """pocketsphinx's VAD found nothing in a clean 8 s flite memo once; real signal is then decoded whole."""
    import pocketsphinx

    from mmsearch.synth.media import speak, write_silence

    class DeafEndpointer:
        frame_bytes, in_speech = 960, False

        def __init__(self, *args, **kwargs):
            pass

        def process(self, _frame):
            return None

        end_stream = process

    monkeypatch.setattr(pocketsphinx, "Endpointer", DeafEndpointer)
    spoken = read_audio(speak("a yellow star at the top", tmp_path / "memo.wav"))
    assert "star" in " ".join(item.text for item in spoken.items)
    with pytest.raises(DecodeError, match="no speech"):
        read_audio(write_silence(tmp_path / "silent.wav", 2.0))


def test_a_videos_sound_that_starts_late_is_transcribed_at_its_time_in_the_file(speech_wav, tmp_path):
    """A video whose audio stream starts 2 s in (as ffmpeg's -itsoffset, or cameras, make them):
    its transcript counted from the audio's own first sample, 2 s early."""
    import shutil
    import subprocess

    from indexer.sources.audio import transcribe_media
    from mmsearch.synth import single_object_scene

    clip = tmp_path / "picture.mp4"
    write_video(clip, [(single_object_scene("red", "circle"), 8)])
    late = tmp_path / "late.mp4"
    subprocess.run(
        [shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-i", str(clip), "-itsoffset", "2",
         "-i", str(speech_wav), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
         str(late)],
        check=True,
    )  # fmt: skip
    alone = transcribe_media(speech_wav, AudioOptions())
    in_video = transcribe_media(late, AudioOptions())
    assert alone.segments and in_video.segments
    shift = in_video.segments[0].start_s - alone.segments[0].start_s
    assert 1.7 < shift < 2.3, (alone.segments[0], in_video.segments[0])
    words = [w for s in in_video.segments for w in s.words]
    assert all(w.start_s >= 1.7 for w in words)
