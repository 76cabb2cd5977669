"""Cutting long text and timed speech into overlapping passages, one vector each.

Overlap keeps a phrase that straddles a boundary findable in at least one passage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from mmsearch.errors import ConfigError


@dataclass(frozen=True)
class TimedWord:
    """One spoken (or subtitled) word with its time span in seconds."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Chunk:
    """One passage; times are set for speech and subtitles, None for documents."""

    text: str
    start_s: float | None = None
    end_s: float | None = None


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def spread_words(text: str, start_s: float, end_s: float) -> list[TimedWord]:
    """Give each word of a cue an even share of its span, for sources without word timings."""
    words = text.split()
    if not words:
        return []
    step = max(end_s - start_s, 0.0) / len(words)
    return [TimedWord(w, start_s + i * step, start_s + (i + 1) * step) for i, w in enumerate(words)]


def window_timed_words(
    words: list[TimedWord], max_words: int = 30, max_seconds: float = 20.0, overlap: float = 0.5
) -> list[Chunk]:
    """Overlapping windows of at most max_words words and max_seconds seconds.

    A long pause ends a window by the time limit, so one window never spans unrelated speech.
    """
    _check_window(max_words, overlap)
    chunks: list[Chunk] = []
    i, n = 0, len(words)
    while i < n:
        j = i + 1
        while j < n and j - i < max_words and words[j].end_s - words[i].start_s <= max_seconds:
            j += 1
        window = words[i:j]
        chunks.append(Chunk(" ".join(w.text for w in window), window[0].start_s, window[-1].end_s))
        if j >= n:
            break
        i += max(1, math.floor((j - i) * (1.0 - overlap)))
    return chunks


@dataclass
class _Unit:
    """A sentence (or a piece of an overlong one) and whether a paragraph ends after it."""

    words: list[str]
    ends_paragraph: bool = False


def _paragraphs(text: str) -> Iterator[str]:
    """Paragraphs one at a time, so a huge text is never split into one big list."""
    at = 0
    for brk in _PARAGRAPH_BREAK.finditer(text):
        yield text[at : brk.start()]
        at = brk.end()
    yield text[at:]


def _units(text: str, max_words: int) -> Iterator[_Unit]:
    for paragraph in _paragraphs(text):
        sentences = [s.split() for s in _SENTENCE_END.split(paragraph.strip())]
        pieces = [
            _Unit(words[k : k + max_words])
            for words in sentences
            for k in range(0, len(words), max_words)
            if words
        ]
        if pieces:
            pieces[-1].ends_paragraph = True
            yield from pieces


def _tail(units: list[_Unit], budget: int) -> list[_Unit]:
    """The trailing sentences that fit the overlap budget, else the last words of the last one."""
    tail: list[_Unit] = []
    total = 0
    for unit in reversed(units):
        if total + len(unit.words) > budget:
            break
        tail.insert(0, unit)
        total += len(unit.words)
    if not tail and budget > 0 and units:
        tail = [_Unit(units[-1].words[-budget:])]
    return tail


def chunk_text(text: str, target_words: int = 100, overlap: float = 0.25) -> list[str]:
    """Passages of about target_words words that end at sentence ends and, when full enough, paragraph ends.

    Each passage starts with the last sentences (about `overlap` of a passage) of the one before.
    """
    return list(iter_chunks(text, target_words, overlap))


def iter_chunks(text: str, target_words: int = 100, overlap: float = 0.25) -> Iterator[str]:
    """`chunk_text` one passage at a time: a caller that wants only the first N stops the work there."""
    _check_window(target_words, overlap)
    budget = int(target_words * overlap)
    current: list[_Unit] = []
    fresh = 0  # units in `current` that no earlier passage holds
    for unit in _units(text, target_words):
        if fresh and _count(current) + len(unit.words) > target_words:
            yield " ".join(w for u in current for w in u.words)
            current, fresh = _tail(current, budget), 0
        while current and _count(current) + len(unit.words) > target_words:
            current.pop(0)  # carried overlap gives way to new text
        current.append(unit)
        fresh += 1
        if unit.ends_paragraph and _count(current) >= 0.6 * target_words:
            yield " ".join(w for u in current for w in u.words)
            current, fresh = _tail(current, budget), 0
    if fresh:
        yield " ".join(w for u in current for w in u.words)


def _count(units: list[_Unit]) -> int:
    return sum(len(u.words) for u in units)


def _check_window(size: int, overlap: float) -> None:
    if size < 1:
        raise ConfigError(f"a passage needs at least one word, not {size}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap is a fraction in [0, 1), not {overlap}")
