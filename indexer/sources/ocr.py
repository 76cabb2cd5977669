"""Words inside pictures (screenshots, signs, slides, scanned pages), read with Tesseract.

CLIP sees a sign but cannot read it. With OCR on (`mmsearch index --ocr`), every picture is
also read by Tesseract (Debian's ``tesseract-ocr`` with English and Simplified Chinese data, run
as a subprocess on the full-resolution picture) and the text becomes an ``ocr`` passage of the
file: keyword search, the sentence model and CLIP's text tower rank it like a transcript, and
results fold it into its picture. A video's keyframes are read too (`keyframe_words`), each
at the middle of its span decoded again at up to 1080 px, as ``ocr`` passages at their moment.
It costs time (about 0.3-1 s a picture on one core), so it is
off until asked for, and the choice is remembered by the collection.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from indexer.sources.base import SourceItem
from mmsearch.errors import DecodeError, MissingDependencyError

OCR = "ocr"  # the item kind of recognised text
TESSERACT = "tesseract"
INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
PAGE_MODE = "11"
"""Tesseract's sparse-text mode: finds words anywhere (signs, slides, screenshots). Its automatic
page mode (3) reported "Empty page" for a single line of Chinese on a plain background."""
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}]) +(?=[{_CJK}])")
_WORDISH = re.compile(rf"[0-9A-Za-z\u00c0-\u024f{_CJK}]")


@dataclass(frozen=True)
class OcrOptions:
    """Whether and how pictures are read."""

    enabled: bool = False
    languages: str = "eng+chi_sim"  # Tesseract language data, joined with +
    timeout_s: float = 30.0  # per picture; a picture that takes longer keeps no text
    max_side: int = 2400  # larger pictures are shrunk first (Tesseract's time grows with pixels)
    min_chars: int = 3  # fewer letters or digits than this is noise, not text


@functools.cache
def engine_name() -> str:
    """'tesseract 5.3.0', recorded per file so a better engine can trigger re-reading."""
    found = shutil.which(TESSERACT)
    if found is None:
        raise MissingDependencyError(f"OCR needs Tesseract: {INSTALL_HINT}")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else TESSERACT
    return first.strip()


@functools.cache
def check_languages(languages: str) -> None:
    """Refuse language data Tesseract does not have, with the package that brings it."""
    engine_name()
    out = subprocess.run([TESSERACT, "--list-langs"], capture_output=True, text=True, timeout=30)
    have = set(out.stdout.split()[1:] if out.stdout else ())
    missing = [lang for lang in languages.split("+") if lang not in have]
    if missing:
        packages = " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing)
        raise MissingDependencyError(f"OCR lacks the language data {', '.join(missing)}: apt-get install {packages}")


def clean_text(raw: str, min_chars: int = 3) -> str:
    """Tesseract's output as one line of words: blank and symbol-only lines dropped, CJK
    characters re-joined (Tesseract spaces them apart), whitespace collapsed."""
    lines = []
    for line in raw.splitlines():
        line = " ".join(line.split())
        if len(_WORDISH.findall(line)) >= 2:
            lines.append(_CJK_GAP.sub("", line))
    text = " ".join(lines)
    return text if len(_WORDISH.findall(text)) >= min_chars else ""


def recognise(image: Image.Image, options: OcrOptions = OcrOptions()) -> str:
    """The words in one picture ("" when there are none)."""
    check_languages(options.languages)
    if max(image.size) > options.max_side:
        image = image.copy()
        image.thumbnail((options.max_side, options.max_side))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "PNG")
    try:
        out = subprocess.run(
            [TESSERACT, "stdin", "stdout", "-l", options.languages, "--psm", PAGE_MODE],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=options.timeout_s,
        )
    except subprocess.TimeoutExpired:
        return ""
    if out.returncode != 0:
        message = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DecodeError(f"OCR failed: {message[-1] if message else out.returncode}")
    return clean_text(out.stdout.decode("utf-8", "replace"), options.min_chars)


KEYFRAME_SHORT_SIDE = 1080
"""Keyframes are read again at up to this size for OCR (they are encoded at 256 px)."""


def keyframe_words(path: Path, spans: list[tuple[float, float]], options: OcrOptions) -> list[SourceItem]:
    """The words on a video's keyframes, one ``ocr`` passage per run of keyframes showing the
    same words (a slide held for a minute is one passage spanning that minute)."""
    from indexer.sources.video import frames_at

    if not spans:
        return []
    # the middle of each keyframe's span: its start can fall a sample before the cut
    frames = frames_at(path, [(start + end) / 2 for start, end in spans], KEYFRAME_SHORT_SIDE)
    items: list[SourceItem] = []
    for (start, end), frame in zip(spans, frames):
        text = recognise(frame, options)
        if not text:
            continue
        last = items[-1] if items else None
        if last is not None and last.text == text and last.end_s is not None and start - last.end_s < 1.0:
            last.end_s = end
        else:
            items.append(SourceItem(OCR, text=text, start_s=start, end_s=end))
    return items


def ocr_items(path: Path, options: OcrOptions, limits) -> list[SourceItem]:
    """The picture at full resolution, read: one ``ocr`` passage, or nothing."""
    from indexer.sources.image import read_image

    picture = read_image(path, target_size=None, limits=limits).items[0].image
    text = recognise(picture, options)
    return [SourceItem(OCR, text=text)] if text else []
