"""What an index run reports back: counts, skipped files with reasons, and a progress hook.

The library never prints; the CLI turns an `IndexSummary` into a table and passes a rich-based
`ProgressReporter`. Both are plain types so programs and tests can use them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SkippedFile:
    """A file (or folder) that was not indexed, and why; shown to the user, never fatal."""

    path: str  # absolute path as scanned
    reason: str  # short and human: "empty file", "decoder crashed (killed by SIGSEGV)", ...


@dataclass(frozen=True)
class TruncatedFile:
    """A file indexed only in part because it passed a limit (passages per file, PDF pages)."""

    path: str  # absolute path as scanned
    note: str  # what was kept, naming the option: "kept the first 5,000 passages (max_passages)"


@dataclass
class StageTiming:
    """Where an index run's time went, for one stage: how long, over how many items.

    `seconds` is wall time in the main process, except for "decode", where it is the time the
    worker processes spent, summed over them (`workers` ran at once), and for "encode" in a Ray
    run, the actors' forward passes summed over them."""

    seconds: float = 0.0
    items: int = 0  # files for "scan", pictures and passages for the others
    workers: int = 1

    @property
    def items_per_second(self) -> float:
        """Items through this stage per second of its own time (per worker for "decode")."""
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass
class IndexSummary:
    """Counts of one run; new/changed count files that were indexed, failures are in `skipped`."""

    new: int = 0  # files indexed for the first time
    changed: int = 0  # known files whose bytes changed, re-encoded (their old items replaced)
    moved: int = 0  # known files found at a new path by content hash: re-pointed, not re-encoded
    deleted: int = 0  # known files gone from disk (or now indexed with their media file)
    unchanged: int = 0  # same size and mtime: not read at all
    touched: int = 0  # new mtime, same bytes: only the catalog row was updated
    skipped: list[SkippedFile] = field(default_factory=list)  # bad input, unreadable paths
    items_added: int = 0  # vectors added to the catalog and the index
    items_removed: int = 0  # vectors removed (replaced by a re-encode, or of deleted files)
    seconds: float = 0.0  # wall-clock time of the run
    per_kind: dict[str, int] = field(default_factory=dict)  # files indexed per asset kind
    kept: int = 0  # known files under folders that could not be read: left as they were
    truncated: list[TruncatedFile] = field(default_factory=list)  # indexed in part, with a note
    tagged: int = 0  # pictures given zero-shot tags from their stored vectors
    tag_seconds: float = 0.0  # time spent tagging (part of `seconds`)
    ocr_pictures: int = 0  # pictures and videos whose words were read (index --ocr)
    ocr_seconds: float = 0.0  # worker time spent reading them (spread over the workers)
    stages: dict[str, StageTiming] = field(default_factory=dict)  # scan, decode, encode, commit
    device_decoded: int = 0  # JPEGs decoded in batches on the encoder's device (`jpeg_decoder`)

    @property
    def indexed(self) -> int:
        """Files decoded and encoded in this run."""
        return self.new + self.changed

    def files_per_second(self) -> float:
        """Indexing throughput: files decoded and encoded per second of the run."""
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def stage(self, name: str) -> StageTiming:
        """The timing of one stage, created empty on first use."""
        return self.stages.setdefault(name, StageTiming())

    def stage_rates(self) -> dict[str, float]:
        """Items per second of each stage's own time: which stage limits the run."""
        return {n: round(t.items_per_second, 1) for n, t in self.stages.items() if t.items}


class ProgressReporter(Protocol):
    """Told how many files will be decoded, then of each one finished (indexed or skipped)."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """The reporter used when the caller passes none."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


__all__ = ["IndexSummary", "StageTiming", "NoProgress", "ProgressReporter", "SkippedFile", "TruncatedFile"]
