"""Words inside pictures: Tesseract run for real on text rendered with PIL, through the index
and the search (CLI and Engine), remembered per collection, and a clear error without it."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from indexer.sources import ocr
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import MissingDependencyError
from mmsearch.synth.media import write_photo_folder

LATIN = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SIGNS = {
    "budget.png": ("Quarterly budget review", LATIN),
    "gate.png": ("Boarding pass gate 42", LATIN),
    "slide.png": ("Photosynthesis in green leaves", LATIN),
    "room.png": ("会议室在三楼", CJK),
}
runner = CliRunner()


def render(path, text, font_file, size=(720, 300)):
    picture = Image.new("RGB", size, (236, 238, 228))
    ImageDraw.Draw(picture).text((30, 110), text, font=ImageFont.truetype(font_file, 42), fill=(15, 15, 25))
    picture.save(path)


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ocr")
    folder = root / "pictures"
    write_photo_folder(folder, 4, seed=3)  # pictures without words too
    for name, (text, font) in SIGNS.items():
        render(folder / name, text, font)
    return root, folder


def test_clean_text_keeps_words_and_joins_chinese():
    raw = "Quarterly  budget\n\n|| — ~\n会 议 室 在 三 楼\nA\n"
    assert ocr.clean_text(raw) == "Quarterly budget 会议室在三楼"
    assert ocr.clean_text("| ~ =\n") == "" and ocr.clean_text("ab") == ""


def test_tesseract_reads_english_and_chinese(signs):
    _, folder = signs
    for name, (text, _) in SIGNS.items():
        with Image.open(folder / name) as picture:
            assert ocr.recognise(picture) == text
    assert "tesseract" in ocr.engine_name().lower()


def test_index_with_ocr_finds_pictures_by_their_words(signs):
    root, folder = signs
    with Engine(root / "home", "tiny") as e:
        summary = e.index([folder], options=IndexOptions(in_process=True, ocr=True))
        assert summary.ocr_pictures == 8 and summary.ocr_seconds > 0
        for query, name in (("budget review", "budget.png"), ("boarding gate", "gate.png"),
                            ("photosynthesis", "slide.png"), ("会议室", "room.png")):
            hits = e.search(query, k=3, user=None)
            # the words are evidence about the picture: it comes first, carrying them
            assert hits[0].path.endswith(name), (query, [(h.path, h.parts) for h in hits])
            assert hits[0].kind == "image" and hits[0].text == SIGNS[name][0]
            assert hits[0].part("keyword").rank == 1 and hits[0].part("clip") is not None
        paths = [h.path for h in e.search("budget review", k=8, user=None)]
        assert len(paths) == len(set(paths))  # one result per file
        only = e.search("boarding gate", k=3, user=None, types=["image"])
        assert only[0].path.endswith("gate.png")


def test_the_choice_is_remembered_and_turning_it_on_reads_older_pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    render(folder / "a.png", "Invoice number 1234", LATIN)
    with Engine(tmp_path / "home", "tiny") as e:
        assert e.index([folder], options=IndexOptions(in_process=True)).ocr_pictures == 0
        on = e.index([folder], options=IndexOptions(in_process=True, ocr=True))
        assert on.changed == 1 and on.ocr_pictures == 1  # read now, though unchanged
        render(folder / "b.png", "Delivery schedule", LATIN)
        later = e.index([folder], options=IndexOptions(in_process=True))  # remembered: on
        assert later.new == 1 and later.ocr_pictures == 1 and later.unchanged == 1
        assert e.search("delivery schedule", k=1, user=None)[0].path.endswith("b.png")
        render(folder / "c.png", "Warranty card", LATIN)
        off = e.index([folder], options=IndexOptions(in_process=True, ocr=False))
        assert off.new == 1 and off.ocr_pictures == 0


def test_without_tesseract_the_error_says_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "pictures"
    folder.mkdir()
    render(folder / "a.png", "Invoice number 1234", LATIN)
    monkeypatch.setattr(ocr.shutil, "which", lambda _name: None)
    ocr.engine_name.cache_clear()
    ocr.check_languages.cache_clear()
    try:
        with Engine(tmp_path / "home", "tiny") as e, pytest.raises(
            MissingDependencyError, match="apt-get install tesseract-ocr"
        ):
            e.index([folder], options=IndexOptions(in_process=True, ocr=True))
        result = runner.invoke(app, ["index", str(folder), "--home", str(tmp_path / "h2"), "--ocr"])
        assert result.exit_code != 0 and "tesseract-ocr" in result.output
    finally:
        ocr.engine_name.cache_clear()
        ocr.check_languages.cache_clear()


def test_cli_index_ocr_and_query(signs, tmp_path):
    _, folder = signs
    home = tmp_path / "home"
    result = runner.invoke(app, ["index", str(folder), "--home", str(home), "--model", "tiny", "--ocr", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ocr_pictures"] == 8
    found = runner.invoke(app, ["query", "boarding gate", "--home", str(home), "--json", "-k", "3"])
    rows = [json.loads(line) for line in found.output.splitlines() if line.startswith("{")]
    assert rows[0]["path"].endswith("gate.png") and "gate" in rows[0]["text"].lower()
    assert rows[0]["parts"]["keyword"]["rank"] == 1


def write_slides_video(path, slides, seconds=3.0, fps=5, size=(640, 360)):
    """An MP4 showing each slide's words for `seconds`, like a recorded talk."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i, text in enumerate(slides):
            picture = Image.new("RGB", size, (250, 245, 200) if i % 2 else (150, 190, 250))  # a new slide
            ImageDraw.Draw(picture).text((40, 150), text, font=ImageFont.truetype(LATIN, 40), fill=(10, 10, 30))
            frame = np.asarray(picture)
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_words_on_video_keyframes_are_found_at_their_moment(tmp_path):
    folder = tmp_path / "talks"
    folder.mkdir()
    write_slides_video(folder / "talk.mp4", ["Chapter one volcanoes", "Chapter two glaciers"])
    with Engine(tmp_path / "home", "tiny") as e:
        summary = e.index([folder], options=IndexOptions(in_process=True, ocr=True))
        assert summary.ocr_pictures == 1 and not summary.skipped
        hits = e.search("glaciers", k=3, user=None, group=False)
        words = next(h for h in hits if h.kind == "ocr")
        assert words.path.endswith("talk.mp4") and "glaciers" in words.text.lower()
        assert 2.0 <= words.start < 4.0  # the second slide's moment
