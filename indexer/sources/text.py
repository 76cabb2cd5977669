"""Notes, Markdown, PDFs and stand-alone subtitle files become overlapping passages (TEXT items).

Passages are what a person would quote: a few sentences, ending where paragraphs end when that
keeps them near the target length. A PDF passage names its page; a subtitle passage keeps its time span.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from indexer.sources.base import ASSET_TEXT, TEXT, SourceItem, SourceResult
from indexer.sources.chunking import iter_chunks, spread_words, window_timed_words
from indexer.sources.subtitles import (
    SUBTITLE_EXTENSIONS,
    media_for_subtitles,
    read_subtitle_file,
)
from mmsearch.errors import ConfigError, DecodeError, require

log = logging.getLogger(__name__)

PLAIN_EXTENSIONS: tuple[str, ...] = (".txt", ".text")
MARKDOWN_EXTENSIONS: tuple[str, ...] = (".md", ".markdown")
PDF_EXTENSIONS: tuple[str, ...] = (".pdf",)
TEXT_EXTENSIONS: tuple[str, ...] = (
    PLAIN_EXTENSIONS + MARKDOWN_EXTENSIONS + PDF_EXTENSIONS + SUBTITLE_EXTENSIONS
)


@dataclass
class TextOptions:
    """How documents are cut into passages."""

    chunk_words: int = 100  # target passage length in words (ends at a sentence end)
    chunk_overlap: float = 0.25  # fraction of a passage repeated at the start of the next
    subtitle_window_words: int = (
        30  # stand-alone subtitle files: words per passage, like transcripts
    )
    subtitle_window_seconds: float = 20.0  # ... and at most this many seconds per passage
    max_bytes: int = 50_000_000  # larger files are skipped as "too large" (logs, dumps)
    # One file may not flood the index (a 49 MB note is 130,000 passages): past these limits the
    # rest of the file is left out, and the run reports the file as truncated.
    max_passages: int = 5_000  # passages kept per file (about 375,000 words at the defaults)
    max_pdf_pages: int = 1_000  # PDF pages read per file

    def __post_init__(self) -> None:
        if self.chunk_words < 10:
            raise ConfigError(f"chunk_words should be at least 10, not {self.chunk_words}")
        if not 0.0 <= self.chunk_overlap < 1.0:
            raise ConfigError(f"chunk_overlap is a fraction in [0, 1), not {self.chunk_overlap}")
        if self.max_passages < 1 or self.max_pdf_pages < 1:
            raise ConfigError("max_passages and max_pdf_pages must be at least 1")


class _Budget:
    """Passages still allowed in one file, and a note once some were left out."""

    def __init__(self, opts: TextOptions) -> None:
        self.left = opts.max_passages
        self.notes: list[str] = []

    def take(self, passages: Iterator[str], opts: TextOptions) -> list[str]:
        kept = list(itertools.islice(passages, self.left))
        self.left -= len(kept)
        if self.left == 0 and next(passages, None) is not None:
            self.left_out(opts)
        return kept

    def left_out(self, opts: TextOptions) -> None:
        """Text remains that the limit leaves out."""
        if not self.notes:
            self.notes.append(f"kept the first {opts.max_passages:,} passages (max_passages)")

    @property
    def full(self) -> bool:
        return self.left <= 0


def _read_bytes(path: Path, opts: TextOptions) -> bytes:
    try:
        size = path.stat().st_size
        if size == 0:
            raise DecodeError(f"{path}: empty file")
        if size > opts.max_bytes:
            raise DecodeError(f"{path}: too large for a text document ({size:,} bytes > max_bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc.strerror})") from exc


def _printable_share(text: str) -> float:
    if not text:
        return 1.0
    good = sum(ch.isprintable() or ch in "\n\r\t\f" for ch in text)
    return good / len(text)


LEGACY_ENCODINGS = ("cp1252", "gb18030", "big5", "shift_jis", "euc_kr", "euc_jp")
"""What a document that is not UTF-8 is tried as (`charset_normalizer` picks, on its first 64 KB):
Western Windows text, and the Chinese, Japanese and Korean encodings older editors save in.
cp1250 and the like are left out: on Western text they tie with cp1252 and garble its accents."""
WIDE_ENCODINGS = ("utf_16_le", "utf_16_be")
"""UTF-16 without a byte-order mark (every other byte NUL for Latin text)."""


def decode_text(data: bytes, path: Path) -> str:
    """Bytes to text; a NUL byte that is not UTF-16, or unprintable text, means a binary file."""
    sample = data[:65536]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with BOM legitimately holds NULs
        text = data.decode("utf-16", errors="replace")
    elif b"\x00" in sample:
        encoding = _detected(sample, WIDE_ENCODINGS)
        if encoding is None:
            raise DecodeError(f"{path}: binary file, not text")
        text = data.decode(encoding, errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode(_detected(sample, LEGACY_ENCODINGS) or "cp1252", errors="replace")
    if _printable_share(text[:65536]) < 0.95:
        raise DecodeError(f"{path}: binary file, not text")
    return text


def _detected(sample: bytes, encodings: tuple[str, ...]) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=list(encodings)).best()
    return best.encoding if best is not None else None


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)  # YAML front matter
_MD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.MULTILINE), r)
    for p, r in (
        (r"^```.*$|^~~~.*$", ""),  # code fence lines (the code itself stays)
        (r"<!--.*?-->", ""),  # comments
        (r"!\[([^\]]*)\]\([^)]*\)", r"\1"),  # images -> alt text
        (r"\[([^\]]+)\]\([^)]*\)", r"\1"),  # links -> link text
        (r"^\s*\[[^\]]+\]:\s+\S+.*$", ""),  # reference link definitions
        (r"\[([^\]]+)\]\[[^\]]*\]", r"\1"),  # reference links
        (r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", r"\1"),  # heading markers
        (r"^\s{0,3}(?:[-*_]\s*){3,}$", ""),  # horizontal rules
        (r"^\s*>\s?", ""),  # block quotes
        (r"^\s*(?:[-*+]|\d+[.)])\s+", ""),  # list markers
        (r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$", ""),  # table separator rows
        (r"\|", " "),  # table cell borders
        (r"(\*\*|__)(.+?)\1", r"\2"),  # bold
        (r"(?<![\w*])[*_](\S(?:.*?\S)?)[*_](?![\w*])", r"\1"),  # italics
        (r"~~(.+?)~~", r"\1"),  # strikethrough
        (r"`([^`]+)`", r"\1"),  # inline code
        (r"<[^>\n]+>", ""),  # inline HTML tags
    )
)


def strip_markdown(text: str) -> str:
    """Markdown to plain prose, lightly: markup goes, words stay, so passages read (and embed) as text."""
    text = _FRONT_MATTER.sub("", text.replace("\r\n", "\n"), count=1)
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return text


def _passages(text: str, opts: TextOptions, budget: _Budget, prefix: str = "") -> list[SourceItem]:
    chunks = iter_chunks(text, opts.chunk_words, opts.chunk_overlap)
    return [SourceItem(TEXT, text=prefix + c) for c in budget.take(chunks, opts)]


def _read_plain(path: Path, opts: TextOptions, budget: _Budget, markdown: bool) -> list[SourceItem]:
    text = decode_text(_read_bytes(path, opts), path)
    return _passages(strip_markdown(text) if markdown else text, opts, budget)


def _read_subtitles(path: Path, opts: TextOptions, budget: _Budget) -> list[SourceItem]:
    media = media_for_subtitles(path)
    if media is not None:
        raise DecodeError(f"{path}: subtitles of {media.name}; they are indexed with that file")
    cues = read_subtitle_file(path, _read_bytes(path, opts))
    words = [w for cue in cues for w in spread_words(cue.text, cue.start_s, cue.end_s)]
    chunks = window_timed_words(
        words, opts.subtitle_window_words, opts.subtitle_window_seconds, 0.5
    )
    items = [SourceItem(TEXT, text=c.text, start_s=c.start_s, end_s=c.end_s) for c in chunks]
    kept = budget.take(iter(items), opts)  # the cues are small: the file is at most max_bytes
    return items[: len(kept)]


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf's WARNING records off while it opens a file (errors still pass)."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_pdf(path: Path, opts: TextOptions, budget: _Budget) -> tuple[list[SourceItem], int]:
    pypdf = require("pypdf", "Reading PDF documents", "text")
    _read_bytes(path, opts)  # size checks
    items: list[SourceItem] = []
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DecodeError(f"{path}: encrypted PDF (needs a password)")
        n_pages = len(reader.pages)
        for n in range(min(n_pages, opts.max_pdf_pages)):
            if budget.full:  # pages remain
                budget.left_out(opts)
                break
            text = reader.pages[n].extract_text() or ""
            items += _passages(text, opts, budget, f"[page {n + 1}] ")
    except DecodeError:
        raise
    except (
        Exception
    ) as exc:  # pypdf raises many kinds (PdfReadError, KeyError, ValueError...) on damage
        raise DecodeError(f"{path}: unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if n_pages > opts.max_pdf_pages and not budget.full:
        budget.notes.append(
            f"read the first {opts.max_pdf_pages:,} of {n_pages:,} pages (max_pdf_pages)"
        )
    if not items:
        raise DecodeError(f"{path}: PDF has no extractable text (scanned pages need OCR)")
    return items, n_pages


def read_text(path: str | Path, opts: TextOptions | None = None) -> SourceResult:
    """A document's passages as TEXT items; binary, empty or text-less files are DecodeErrors.

    A file past `max_passages` or `max_pdf_pages` keeps its beginning; `meta["truncated"]` says
    what was left out, and the run lists it.
    """
    opts = opts or TextOptions()
    path = Path(path)
    ext = path.suffix.lower()
    budget = _Budget(opts)
    if ext in PDF_EXTENSIONS:
        with _quiet_pypdf():  # its warnings on damaged files ("EOF marker not found") broke into
            items, n_pages = _read_pdf(path, opts, budget)  # the progress display; damage is a skip reason
        log.debug("%s: %d pages", path.name, n_pages)
    elif ext in SUBTITLE_EXTENSIONS:
        items = _read_subtitles(path, opts, budget)
    else:
        items = _read_plain(path, opts, budget, markdown=ext in MARKDOWN_EXTENSIONS)
    if not items:
        raise DecodeError(f"{path}: no text in it")
    meta = {}
    if budget.notes:
        meta["truncated"] = "; ".join(budget.notes)
        log.warning("%s: truncated: %s", path, meta["truncated"])
    log.info("%s: %d passages", path.name, len(items))
    return SourceResult(ASSET_TEXT, items, meta)
