"""Text source: documents become overlapping passages; PDFs keep pages, subtitles keep times, binaries are refused."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from indexer.sources.base import ASSET_TEXT, TEXT
from indexer.sources.chunking import chunk_text
from indexer.sources.text import TEXT_EXTENSIONS, TextOptions, read_text, strip_markdown
from mmsearch.errors import ConfigError, DecodeError
from mmsearch.synth import sample_scene
from mmsearch.synth.media import write_note


def numbered_text(sentence_lengths: list[list[int]]) -> str:
    """Paragraphs of sentences made of numbered words (w0 w1 ...), so positions are easy to check."""
    k, paragraphs = 0, []
    for lengths in sentence_lengths:
        sentences = []
        for n in lengths:
            sentences.append(" ".join(f"w{k + i}" for i in range(n)) + ".")
            k += n
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def numbers(passage: str) -> list[int]:
    return [int(w.strip(".")[1:]) for w in passage.split()]


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF written by hand: one Helvetica text line per string, one page per list."""
    objects: list[str] = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for lines in pages:
        escaped = (
            line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines
        )
        body = (
            "BT /F1 12 Tf 14 TL 72 720 Td "
            + " ".join(f"({line}) Tj T*" for line in escaped)
            + " ET"
        )
        objects.append(f"<< /Length {len(body)} >>\nstream\n{body}\nendstream")
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def test_chunks_overlap_and_cover_every_word():
    text = numbered_text([[12] * 30])  # one long paragraph, 360 words in 12-word sentences
    chunks = chunk_text(text, target_words=100, overlap=0.25)
    seen = [numbers(c) for c in chunks]
    assert sorted({n for s in seen for n in s}) == list(range(360))
    for prev, nxt in zip(seen, seen[1:], strict=False):
        shared = set(prev) & set(nxt)
        assert 12 <= len(shared) <= 25  # about a quarter, in whole sentences
        assert nxt[: len(shared)] == prev[-len(shared) :]
    assert all(len(s) <= 100 for s in seen)
    assert all(c.endswith(".") for c in chunks)  # passages end at sentence ends


def test_chunks_end_at_paragraphs_when_full_enough():
    text = numbered_text([[20, 20, 30], [20, 20], [15]])  # paragraphs of 70, 40 and 15 words
    chunks = chunk_text(text, target_words=100, overlap=0.25)
    assert numbers(chunks[0])[-1] == 69  # the first paragraph alone (70 >= 60% of 100)
    # the last sentence (30 words) is longer than the overlap budget, so its last 25 words carry over
    assert (numbers(chunks[1])[0], numbers(chunks[1])[-1]) == (
        45,
        109,
    )  # ... then the second paragraph
    assert (numbers(chunks[2])[0], numbers(chunks[2])[-1]) == (
        90,
        124,
    )  # its last sentence, the third


def test_overlong_sentences_are_split_and_options_are_checked():
    chunks = chunk_text(" ".join(f"w{i}" for i in range(250)), target_words=100, overlap=0.2)
    assert all(len(c.split()) <= 100 for c in chunks)
    assert numbers(chunks[-1])[-1] == 249
    with pytest.raises(ConfigError):
        chunk_text("x", target_words=100, overlap=1.0)
    with pytest.raises(ConfigError):
        TextOptions(chunk_words=0)


def test_plain_note(tmp_path):
    rng = random.Random(4)
    paragraphs = write_note(
        tmp_path / "note.txt", [sample_scene(rng) for _ in range(8)], seed=4, filler=3
    )
    result = read_text(tmp_path / "note.txt", TextOptions(chunk_words=40))
    assert result.asset_kind == ASSET_TEXT and result.meta == {}
    assert len(result.items) >= 3
    assert all(i.kind == TEXT and i.start_s is None and i.image is None for i in result.items)
    joined = " ".join(i.text for i in result.items)
    for paragraph in paragraphs:
        assert paragraph.split(".")[0] in joined


def test_markdown_is_stripped(tmp_path):
    path = tmp_path / "readme.md"
    path.write_text(
        "---\ntitle: shapes\n---\n# The *Red* Circle\n\nSee [the board](http://x.org/board) and "
        "![a **blue** square](img.png).\n\n> quoted `code`\n\n- item one\n- item __two__\n\n"
        "| colour | shape |\n|---|---|\n| red | circle |\n\n```python\nprint('kept')\n```\n<!-- hidden -->\n"
    )
    (item,) = read_text(path).items
    assert item.text == (
        "The Red Circle See the board and a blue square. quoted code item one item two "
        "colour shape red circle print('kept')"
    )
    assert strip_markdown("snake_case_name and 2*3*4") == "snake_case_name and 2*3*4"


def test_pdf_passages_name_their_page(tmp_path):
    path = tmp_path / "doc.pdf"
    path.write_bytes(
        make_pdf(
            [
                ["A red circle (large) sits on the left.", "Nothing else."],
                [],
                ["Page three: a blue square."],
            ]
        )
    )
    result = read_text(path)
    assert [i.text for i in result.items] == [
        "[page 1] A red circle (large) sits on the left. Nothing else.",
        "[page 3] Page three: a blue square.",
    ]


def test_pdf_without_text_and_broken_pdf(tmp_path, caplog):
    blank = tmp_path / "scan.pdf"
    blank.write_bytes(make_pdf([[], []]))
    with pytest.raises(DecodeError, match="no extractable text"):
        read_text(blank)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    with pytest.raises(DecodeError, match="broken.pdf"):
        read_text(broken)
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(b"%PDF-1.4\ngarbage")
    with caplog.at_level(logging.WARNING), pytest.raises(DecodeError, match="cut.pdf"):
        read_text(cut)
    # pypdf's own warnings ("EOF marker not found") broke into the progress display
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]


def test_binary_and_empty_files_are_refused(tmp_path):
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DecodeError, match="binary file, not text"):
        read_text(binary)
    noise = tmp_path / "noise.txt"
    rng = random.Random(0)
    noise.write_bytes(bytes(rng.randrange(1, 256) for _ in range(4000)))  # no NULs, not text either
    with pytest.raises(DecodeError, match="binary file, not text"):
        read_text(noise)
    for name in ("empty.txt", "empty.srt", "empty.md"):
        (tmp_path / name).touch()
        with pytest.raises(DecodeError, match="empty file"):
            read_text(tmp_path / name)


def test_legacy_and_utf16_encodings_are_read(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Café crème, naïve façade.".encode("cp1252"))
    assert read_text(latin).items[0].text == "Café crème, naïve façade."
    wide = tmp_path / "wide.txt"
    wide.write_text("A green star.", encoding="utf-16")
    assert read_text(wide).items[0].text == "A green star."
    # without a byte-order mark, and Chinese from an older editor (both were skipped or garbled)
    bare = tmp_path / "bare.txt"
    bare.write_bytes("The submarine surfaced near the glacier at dawn.".encode("utf-16-le"))
    assert read_text(bare).items[0].text == "The submarine surfaced near the glacier at dawn."
    chinese = "老师说图书馆周末不开门，同学们改在公园里读书。"
    for encoding in ("gbk", "big5"):
        legacy = tmp_path / f"{encoding}.txt"
        legacy.write_bytes(chinese.encode(encoding, errors="ignore"))
        assert read_text(legacy).items[0].text == chinese.encode(encoding, errors="ignore").decode(encoding)
    german = tmp_path / "german.txt"
    german.write_bytes("Die Straße ist schön; Größe über alles. “Zitat” – Ende…".encode("cp1252"))
    assert read_text(german).items[0].text == "Die Straße ist schön; Größe über alles. “Zitat” – Ende…"


def test_standalone_subtitles_are_timed_text(tmp_path):
    path = tmp_path / "lecture.srt"
    cues = [
        f"{k + 1}\n00:00:{2 * k:02d},000 --> 00:00:{2 * k + 2:02d},000\nword{k}a word{k}b\n"
        for k in range(25)
    ]
    path.write_text("\n".join(cues))
    result = read_text(path, TextOptions(subtitle_window_words=20))
    assert result.asset_kind == ASSET_TEXT
    first, second = result.items[:2]
    assert (first.start_s, first.end_s) == (0.0, 20.0) and first.text.split()[:2] == [
        "word0a",
        "word0b",
    ]
    assert second.start_s == 10.0  # half-window overlap
    assert result.items[-1].end_s == 50.0


def test_subtitles_beside_media_belong_to_the_media(tmp_path):
    (tmp_path / "talk.mp3").write_bytes(b"ID3")
    path = tmp_path / "talk.en.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    with pytest.raises(DecodeError, match="subtitles of talk.mp3"):
        read_text(path)


def test_extensions():
    assert {".txt", ".md", ".srt", ".vtt", ".pdf"} <= set(TEXT_EXTENSIONS)
    assert all(ext.startswith(".") and ext == ext.lower() for ext in TEXT_EXTENSIONS)


def test_missing_file(tmp_path: Path):
    with pytest.raises(DecodeError, match="cannot read"):
        read_text(tmp_path / "gone.txt")


def test_a_long_note_keeps_max_passages_and_says_so(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(numbered_text([[10] * 8] * 40))  # 40 paragraphs of 80 words: 40 passages
    whole = read_text(path)
    assert len(whole.items) == 40 and "truncated" not in whole.meta
    capped = read_text(path, TextOptions(max_passages=7))
    assert [i.text for i in capped.items] == [i.text for i in whole.items[:7]]
    assert capped.meta["truncated"] == "kept the first 7 passages (max_passages)"
    exact = read_text(path, TextOptions(max_passages=40))  # at the limit: nothing left out
    assert "truncated" not in exact.meta


def test_a_pdf_past_max_pdf_pages_keeps_its_first_pages_and_says_so(tmp_path):
    path = tmp_path / "tome.pdf"
    path.write_bytes(make_pdf([[f"Page {n} holds a green star."] for n in range(1, 31)]))
    result = read_text(path, TextOptions(max_pdf_pages=5))
    assert [i.text.split("]")[0] for i in result.items] == [f"[page {n}" for n in range(1, 6)]
    assert result.meta["truncated"] == "read the first 5 of 30 pages (max_pdf_pages)"
    capped = read_text(path, TextOptions(max_passages=3))
    assert len(capped.items) == 3 and "max_passages" in capped.meta["truncated"]
    with pytest.raises(ConfigError, match="max_passages"):
        TextOptions(max_passages=0)
