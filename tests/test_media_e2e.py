"""One folder of photos, videos, recordings and notes; one query finds each kind (real tiny, pocketsphinx, MiniLM)."""

import json

import pytest
from typer.testing import CliRunner

from mmsearch import Engine
from mmsearch.cli import app
from mmsearch.synth import single_object_scene
from mmsearch.synth.media import speak, write_photo_folder, write_silence, write_video

pytestmark = pytest.mark.slow
GREY = (128, 128, 128)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    lib = root / "library"
    write_photo_folder(lib / "photos", 12, seed=21)
    (lib / "clips").mkdir(parents=True)
    # the red circle is on screen only from 4 s to 7 s
    write_video(
        lib / "clips" / "board.mp4",
        [
            (single_object_scene("blue", "square", "large", "center", GREY), 4.0),
            (single_object_scene("red", "circle", "large", "center", GREY), 3.0),
            (single_object_scene("green", "star", "large", "center", GREY), 3.0),
        ],
        size=(320, 240),
        fps=10,
    )
    rec = lib / "recordings"
    rec.mkdir()
    speak("a yellow star at the top of the board", rec / "memo_star.wav")
    speak("the red circle is on the left", rec / "memo_circle.wav")
    # the sidecar says something the speech doesn't: it must win over the recogniser
    speak("the blue square is in the center", rec / "interview.wav")
    (rec / "interview.srt").write_text(
        "1\n00:00:00,000 --> 00:00:02,500\nour guest describes a lighthouse on a rocky island\n"
    )
    notes = lib / "notes"
    notes.mkdir()
    (notes / "studio.md").write_text(
        "# Studio diary\n\nMonday we repainted the shelves and sorted the paper stock.\n\n"
        "Tuesday we pinned a large crimson disc to the cork board beside the window.\n\n"
        "Wednesday the printer jammed twice and we ordered more toner.\n"
    )
    (notes / "groceries.txt").write_text("Milk, eggs, flour and a bag of oranges for the weekend.\n")
    # bad input of every new kind: reported and skipped, never fatal
    bad = lib / "bad"
    bad.mkdir()
    good_mp4 = (lib / "clips" / "board.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(good_mp4[: len(good_mp4) // 3])
    (bad / "no_audio_stream.mp3").write_bytes(b"this is not audio at all" * 10)
    write_silence(bad / "silent.wav", 2.0)
    (bad / "empty.srt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 8)
    home = root / "home"
    with Engine(home=home, model="tiny") as engine:
        summary = engine.index([lib])
    return lib, home, summary


def test_bad_media_is_reported_and_skipped(library):
    lib, _, summary = library
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in summary.skipped}
    for name in ("truncated.mp4", "no_audio_stream.mp3", "silent.wav", "empty.srt", "binary.txt"):
        assert name in skipped, (name, skipped)
        assert skipped[name]


def test_status_counts_items_per_kind(library):
    _, home, _ = library
    with Engine(home=home) as engine:
        st = engine.status()
    assert st.assets_by_kind["image"] == 12 and st.assets_by_kind["video"] == 1
    assert st.assets_by_kind["audio"] == 3 and st.assets_by_kind["text"] == 2
    assert {"image", "keyframe", "transcript", "text"} <= set(st.items_by_kind)


def test_video_moment_of_the_red_circle(library):
    _, home, _ = library
    with Engine(home=home) as engine:
        hits = engine.search("a red circle", k=3, types=["video"])
    assert hits and hits[0].kind == "keyframe"
    assert hits[0].start >= 4.0 - 0.5 and hits[0].end <= 7.0 + 0.5, hits[0]


def test_spoken_caption_is_found_by_its_words(library):
    _, home, _ = library
    with Engine(home=home) as engine:
        hits = engine.search("yellow star", k=3, types=["audio"])
    assert hits[0].path.endswith("memo_star.wav") and hits[0].kind == "transcript"
    assert "star" in hits[0].text and hits[0].start is not None


def test_sidecar_subtitles_win_over_speech_recognition(library):
    lib, home, _ = library
    with Engine(home=home) as engine:
        hits = engine.search("lighthouse on an island", k=3, types=["audio"])
        asset = engine._open(create=False).catalog.asset_by_path(str((lib / "recordings" / "interview.wav").resolve()))
    assert hits[0].path.endswith("interview.wav") and "lighthouse" in hits[0].text
    assert asset.transcript_backend == "sidecar"


def test_note_is_found_by_a_paraphrase(library):
    _, home, _ = library
    with Engine(home=home) as engine:
        hits = engine.search("someone attached a big red circle to the noticeboard", k=3, types=["text"])
    assert hits[0].path.endswith("studio.md") and "crimson disc" in hits[0].text


def test_one_query_ranks_kinds_together_and_json_carries_spans_and_text(library):
    _, home, _ = library
    result = CliRunner().invoke(app, ["query", "the red circle", "--home", str(home), "-k", "20", "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    kinds = {h["asset_kind"] for h in hits}
    assert {"image", "video", "audio"} <= kinds
    for h in hits:
        if h["kind"] in ("keyframe", "transcript"):
            assert "start" in h and "end" in h
        if h["kind"] in ("transcript", "text"):
            assert h["text"]
    table = CliRunner().invoke(app, ["query", "a red circle", "--home", str(home), "--type", "video"])
    assert "00:00:0" in table.output and "–" in table.output


def test_the_same_scene_later_in_a_video_is_the_next_moment_and_each_file_seeks_to_its_match(tmp_path):
    """With the default rerankers, `mmr` took the second appearance of a scene for a near-copy
    of the first and moved it below an unrelated scene, and grouping then sent the user to the
    neighbouring scene of another file (a red circle for "a blue square")."""
    from indexer.pipeline import IndexOptions

    s = single_object_scene
    blue = s("blue", "square")
    videos = tmp_path / "videos"
    videos.mkdir()
    long = write_video(videos / "long.mp4", [(blue, 5), (s("red", "circle"), 12), (s("green", "triangle"), 13), (blue, 5)], seed=1)
    a = write_video(videos / "a.mp4", [(s("red", "circle"), 3), (blue, 3), (s("green", "triangle"), 3)], seed=2)
    write_video(videos / "c.mp4", [(blue, 2), (s("orange", "cross"), 4), (blue, 2)], seed=3)
    with Engine(tmp_path / "home", "tiny") as engine:
        engine.index([videos], options=IndexOptions(in_process=True))
        hits = engine.search("a blue square", k=10, user=None)
    in_long = [h for h in hits if h.path.endswith("long.mp4")]
    assert [round(h.start) for h in in_long[:2]] == [round(long[0][0]), round(long[3][0])]
    (in_a,) = [h for h in hits if h.path.endswith("a.mp4")]
    assert a[1][0] - 0.5 <= in_a.start < a[1][1]  # the blue square's moment, not the red circle's


def test_a_sound_only_mp4_is_indexed_as_a_recording(tmp_path):
    """A voice memo saved as .mp4 (sound, no pictures) was skipped as "no video stream", its
    speech lost; the same bytes named .m4a were transcribed."""
    import shutil
    import subprocess

    from indexer.pipeline import IndexOptions

    memos = tmp_path / "memos"
    memos.mkdir()
    wav = speak("the wooden boat sailed at dawn", tmp_path / "memo.wav")
    subprocess.run(
        [shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(memos / "memo.mp4")],
        check=True,
    )
    with Engine(tmp_path / "home", "tiny") as engine:
        summary = engine.index([memos], options=IndexOptions(in_process=True))
        assert summary.skipped == [] and summary.new == 1
        hits = engine.search("wooden boat", k=3, types=["audio"])
    assert hits and hits[0].path.endswith("memo.mp4") and hits[0].kind == "transcript"


def test_a_copied_video_is_one_duplicate_group_not_one_per_keyframe(tmp_path):
    """Two copies of a video of three scenes were listed three times (once per shared keyframe)."""
    import shutil

    from indexer.pipeline import IndexOptions

    s = single_object_scene
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", [(s("red", "circle"), 3), (s("blue", "square"), 3), (s("green", "triangle"), 3)], seed=1)
    shutil.copy(videos / "a.mp4", videos / "a_copy.mp4")
    with Engine(tmp_path / "home", "tiny") as engine:
        engine.index([videos], options=IndexOptions(in_process=True))
        groups = engine.duplicates(0.95, ("video",))
    assert [sorted(p.rsplit("/", 1)[-1] for p in g.paths) for g in groups] == [["a.mp4", "a_copy.mp4"]]
