"""Video source: shots become keyframes at the right times, long shots get several, bad files are refused."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from hostile_media import mkv_claiming
from PIL import Image

from indexer.sources.base import ASSET_VIDEO, KEYFRAME, TRANSCRIPT
from indexer.sources.video import (
    VIDEO_EXTENSIONS,
    Sample,
    VideoOptions,
    probe_video,
    read_video,
    select_keyframes,
)
from mmsearch.errors import DecodeError, MissingDependencyError
from mmsearch.synth import render_scene, single_object_scene
from mmsearch.synth.media import speak, write_video

GREY = (128, 128, 128)
SIZE = (320, 240)


def scene(colour: str, shape: str):
    return single_object_scene(colour, shape, "large", "center", background_rgb=GREY)


def three_shots() -> list:
    """Blue square 0-4 s, red circle 4-7 s, green star 7-10 s."""
    return [
        (scene("blue", "square"), 4.0),
        (scene("red", "circle"), 3.0),
        (scene("green", "star"), 3.0),
    ]


def encode_video(
    path: Path, segments, codec: str, fps: int = 10, audio_wav: Path | None = None
) -> None:
    """Write scenes with any PyAV codec/container (write_video only makes H.264 MP4), optionally with sound."""
    frames = [
        np.asarray(render_scene(s, SIZE)) for s, secs in segments for _ in range(round(secs * fps))
    ]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        sound = out.add_stream("aac", rate=16_000, layout="mono") if audio_wav else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=16_000)
            with av.open(str(audio_wav)) as src:
                for frame in src.decode(audio=0):
                    for piece in resampler.resample(frame):
                        out.mux(sound.encode(piece))
            out.mux(sound.encode(None))


def centre_rgb(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    h, w, _ = a.shape
    return a[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3].reshape(-1, 3).mean(axis=0)


def is_mostly_red(image: Image.Image) -> bool:
    r, g, b = centre_rgb(image)
    return r > 150 and g < 90 and b < 90


def keyframes(result):
    return [i for i in result.items if i.kind == KEYFRAME]


@pytest.fixture(scope="module")
def shots_mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "shots.mp4"
    write_video(path, three_shots(), size=SIZE, fps=10)
    return path


def test_red_circle_shot_gets_its_own_keyframe(shots_mp4):
    result = read_video(shots_mp4)
    assert result.asset_kind == ASSET_VIDEO
    assert result.meta == {"width": 320, "height": 240, "duration_s": pytest.approx(10.0)}
    frames = keyframes(result)
    red = [k for k in frames if is_mostly_red(k.image)]
    assert len(red) == 1
    assert 3.5 <= red[0].start_s < red[0].end_s <= 7.5
    assert red[0].start_s == pytest.approx(4.0, abs=0.5) and red[0].end_s == pytest.approx(
        7.0, abs=0.5
    )
    # spans tile the video in order, with no transcript for a silent file
    assert [k.start_s for k in frames][0] == 0.0 and frames[-1].end_s == pytest.approx(10.0)
    assert all(a.end_s == b.start_s for a, b in zip(frames, frames[1:], strict=False))
    assert all(i.kind == KEYFRAME for i in result.items)


def test_keyframe_images_and_thumbnails(shots_mp4):
    item = keyframes(read_video(shots_mp4, VideoOptions(frame_short_side=120)))[0]
    assert item.image.mode == "RGB" and min(item.image.size) == 120
    thumb = Image.open(io.BytesIO(item.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 160


def test_long_static_shot_gets_a_keyframe_every_max_gap(tmp_path):
    path = tmp_path / "static.mp4"
    write_video(path, [(scene("yellow", "triangle"), 30.0)], size=SIZE, fps=5)
    frames = keyframes(read_video(path, VideoOptions(max_gap_s=8.0)))
    assert len(frames) == 4  # ceil(30 / 8)
    assert all(k.end_s - k.start_s <= 8.0 + 1e-6 for k in frames)
    assert frames[0].start_s == 0.0 and frames[-1].end_s == pytest.approx(30.0)
    mids = [(k.start_s + k.end_s) / 2 for k in frames]
    assert max(b - a for a, b in zip(mids, mids[1:], strict=False)) <= 8.0


def test_near_identical_shots_are_merged(tmp_path):
    """A flash between two takes of the same view cuts the shot, but one keyframe covers both."""
    black = single_object_scene("white", "cross", "small", "center", background_rgb=(0, 0, 0))
    path = tmp_path / "flash.mp4"
    write_video(
        path,
        [(scene("purple", "diamond"), 3.0), (black, 0.2), (scene("purple", "diamond"), 3.0)],
        size=SIZE,
    )
    merged = keyframes(read_video(path))
    assert len(merged) == 1 and merged[0].start_s == 0.0 and merged[0].end_s == pytest.approx(6.2)
    unmerged = keyframes(read_video(path, VideoOptions(merge_max_change=0.0)))
    assert len(unmerged) == 2  # the cut was seen; merging removed the duplicate


def _moving_bar(n: int, fps: float) -> list[Sample]:
    """A bar sliding across the frame: every sample differs from the last, none is a cut."""
    samples = []
    for k in range(n):
        small = np.full((36, 64, 3), 90, np.uint8)
        x = (k * 3) % 60
        small[:, x : x + 4] = 250
        samples.append(Sample(k / fps, small, small))
    return samples


def test_steady_motion_is_not_a_cut_but_a_real_cut_is():
    opts = VideoOptions(max_gap_s=100.0)
    samples = _moving_bar(40, 2.0)
    assert len(select_keyframes(samples, 20.0, opts)) == 1
    for s in samples[20:]:  # everything changes colour halfway: a cut at 9.75 s
        s.small = 255 - s.small
    frames = select_keyframes(samples, 20.0, opts)
    assert [(k.start_s, k.end_s) for k in frames] == [(0.0, 9.75), (9.75, 20.0)]


@pytest.mark.parametrize(
    ("ext", "codec"),
    [(".mov", "libx264"), (".mkv", "libx264"), (".webm", "libvpx-vp9"), (".avi", "mpeg4")],
)
def test_container_formats(tmp_path, ext, codec):
    assert ext in VIDEO_EXTENSIONS
    path = tmp_path / f"clip{ext}"
    encode_video(path, three_shots(), codec)
    frames = keyframes(read_video(path))
    assert len(frames) == 3
    assert is_mostly_red(frames[1].image) and frames[1].start_s == pytest.approx(4.0, abs=0.5)


def test_pyav_fallback_when_decord_fails(shots_mp4, monkeypatch, caplog):
    import decord

    def broken(*args, **kwargs):
        raise RuntimeError("decord cannot open this")

    opts = VideoOptions(frame_short_side=120)
    expected = [(k.start_s, k.end_s) for k in keyframes(read_video(shots_mp4, opts))]
    monkeypatch.setattr(decord, "VideoReader", broken)
    with caplog.at_level("INFO", logger="indexer.sources.video"):
        frames = keyframes(read_video(shots_mp4, opts))
    assert "decoding with PyAV" in caplog.text
    assert [(k.start_s, k.end_s) for k in frames] == expected
    assert is_mostly_red(frames[1].image) and frames[1].image.size == (160, 120)


def test_without_decord_pyav_does_the_work_and_without_av_the_error_says_what_to_install(
    shots_mp4, monkeypatch
):
    monkeypatch.setitem(sys.modules, "decord", None)  # import now fails
    assert len(keyframes(read_video(shots_mp4))) == 3
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmsearch\[video\]'"):
        read_video(shots_mp4)


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _faststart(src: Path, dst: Path) -> Path:
    """Remux with the index (moov) first, so a cut file still opens and its frames just stop."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def test_truncated_mp4_is_a_decode_error(shots_mp4, tmp_path):
    with pytest.raises(DecodeError, match="not a readable video"):
        read_video(_truncate(shots_mp4, tmp_path / "cut.mp4"))
    front = _faststart(shots_mp4, tmp_path / "front.mp4")
    assert len(keyframes(read_video(front))) == 3
    with pytest.raises(DecodeError, match="truncated"):
        read_video(_truncate(front, tmp_path / "front_cut.mp4"))


def test_empty_and_non_video_files_are_decode_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(DecodeError, match="empty file"):
        read_video(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(DecodeError, match="notes.mp4"):
        read_video(text)
    with pytest.raises(DecodeError):
        read_video(tmp_path / "missing.mp4")


def test_sidecar_subtitles_give_a_silent_video_a_transcript(shots_mp4, tmp_path):
    path = tmp_path / "shots.mp4"
    path.write_bytes(shots_mp4.read_bytes())
    path.with_suffix(".srt").write_text("1\n00:00:04,000 --> 00:00:07,000\nLook, a red circle!\n")
    result = read_video(path)
    assert result.meta["transcript_backend"] == "sidecar"
    (line,) = [i for i in result.items if i.kind == TRANSCRIPT]
    assert (line.text, line.start_s, line.end_s) == ("Look, a red circle!", 4.0, 7.0)


def test_speech_in_the_sound_track_is_transcribed(tmp_path):
    wav = speak("a red circle on the left", tmp_path / "speech.wav")
    path = tmp_path / "talk.mp4"
    encode_video(path, [(scene("red", "circle"), 3.0)], "libx264", audio_wav=wav)
    result = read_video(path)
    assert result.meta["transcript_backend"] == "pocketsphinx"
    text = " ".join(i.text for i in result.items if i.kind == TRANSCRIPT)
    assert "red" in text and "circle" in text
    assert len(keyframes(result)) == 1


def test_sample_times_follow_the_analysis_rate(shots_mp4):
    from indexer.sources.video import _decord_samples

    samples = list(_decord_samples(shots_mp4, 2.0, (160, 120), 32))
    assert [s.t for s in samples] == [k / 2 for k in range(20)]
    assert samples[0].frame.shape == (120, 160, 3) and samples[0].small.shape == (24, 32, 3)


def test_a_header_claiming_1e8_seconds_is_checked_against_the_stream(tmp_path):
    """decord sizes its tables by the claimed length (gigabytes); the stream's real end decides."""
    honest = mkv_claiming(tmp_path / "honest.mkv", 3.0)
    liar = mkv_claiming(tmp_path / "liar.mkv", 1e8)
    info = probe_video(liar)
    assert info.duration_s == pytest.approx(1e8) and info.stream_end_s == pytest.approx(
        3.0, abs=0.3
    )
    with pytest.raises(DecodeError, match="false length.*ends at 3.0 s"):
        read_video(liar)
    assert read_video(honest).meta["duration_s"] == pytest.approx(3.0, abs=0.3)


def test_a_timestamp_jump_does_not_become_millions_of_keyframes():
    """A frame stamped 10^6 s after the others: keyframes follow the samples, not the span."""
    small = np.zeros((3, 8, 3), np.uint8)
    samples = [Sample(t, small, small) for t in (0.0, 0.5, 1.0, 1e6)]
    keyframes = select_keyframes(iter(samples), 1e6 + 1.0, VideoOptions())
    assert 1 <= len(keyframes) <= 4
    assert keyframes[0].start_s == 0.0 and keyframes[-1].end_s <= 1e6 + 10.0
