"""What a search asks for, as plain typed data: weighted terms, filters, paging, options.

Every face builds one of these (the CLI through `mmsearch.query.parse`, the HTTP API from its
parameters, programs directly) and `mmsearch.query.stages` runs it, so the faces cannot drift.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mmsearch.errors import QueryError

if TYPE_CHECKING:
    from PIL import Image

TermKind = Literal["text", "image", "url", "item"]
RESULT_TYPES = ("image", "video", "audio", "text")
"""File kinds a search can be limited to (`--type`)."""
SORTS = ("relevance", "date", "-date")
"""`relevance` (default); `date` oldest first and `-date` newest first, among the relevant hits."""
MAX_K = 1000
"""Most results one query returns (a page of a person's screen is far fewer)."""


def posix_seconds(value: object, name: str) -> float | None:
    """A date filter's bound as POSIX seconds: a number of them, a `date` or `datetime` (local
    time when naive), or an ISO date or date-time string, as ``--after`` takes them."""
    from datetime import date, datetime

    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None if value is None else float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise QueryError(
                f"{name} takes an ISO date like 2024-06-01 (or 2024-06-01T18:30), not {value!r}."
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        return value.timestamp()
    raise QueryError(f"{name} takes a date, a datetime, an ISO date string or POSIX seconds, not {value!r}.")


@dataclass(frozen=True)
class Term:
    """One part of a compound query: what it is, how much it counts, and its sign.

    ``value`` is the text, an image (a path, its bytes, or a PIL image), an ``http(s)://`` URL,
    or an item id.
    ``weight`` is signed: a negative weight pushes results away from the term ("- night").
    """

    kind: TermKind
    value: str | int | bytes | os.PathLike[str] | Image.Image
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("text", "image", "url", "item"):
            raise QueryError(f"Unknown query term kind {self.kind!r}.")
        if not isinstance(self.weight, int | float) or self.weight != self.weight:
            raise QueryError(f"A term's weight must be a number, not {self.weight!r}.")
        if self.weight == 0:
            raise QueryError(f"The term {self.label()} has weight 0: drop it or give it a weight.")
        if self.kind == "text" and not str(self.value).strip():
            raise QueryError(
                'A text term is empty: type what you are looking for, e.g. "a red car".'
            )

    @property
    def positive(self) -> bool:
        return self.weight > 0

    def label(self) -> str:
        """How the term reads back to a person (tables, JSON, errors)."""
        sign = "-" if self.weight < 0 else ""
        scale = abs(self.weight)
        prefix = "" if scale == 1 else f"{scale:g}:"
        if self.kind == "item":
            body = f"item {self.value}"
        elif self.kind == "image" and not isinstance(self.value, str | os.PathLike):
            body = "picture"
        else:
            body = str(self.value)
        return f"{sign}{prefix}{body}"


@dataclass(frozen=True)
class Filters:
    """Conditions on files, pushed down into SQL and the vector search (never a post-filter)."""

    types: frozenset[str] = frozenset()  # file kinds: image, video, audio, text; empty = all
    paths: tuple[str, ...] = ()  # globs on the path (a glob without "/" matches the file name)
    after: float | None = None  # date taken, else modified: POSIX seconds, inclusive
    before: float | None = None  # exclusive
    min_width: int | None = None  # pixels (images and videos)
    min_height: int | None = None
    camera: str | None = None  # substring of the camera make/model, case-insensitive
    min_duration: float | None = None  # seconds (videos and recordings)
    max_duration: float | None = None
    exclude_items: frozenset[int] = frozenset()  # query pictures and `--like` items themselves
    tags: tuple[str, ...] = ()  # zero-shot tags a picture must all have (`mmsearch tags`)

    def __post_init__(self) -> None:
        for name in ("types", "paths", "tags"):  # one string is one value, not its letters
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, (getattr(self, name),))
        object.__setattr__(self, "types", frozenset(self.types))
        object.__setattr__(self, "paths", tuple(self.paths))
        object.__setattr__(self, "after", posix_seconds(self.after, "after"))
        object.__setattr__(self, "before", posix_seconds(self.before, "before"))
        object.__setattr__(
            self, "tags", tuple(dict.fromkeys(" ".join(t.split()).lower() for t in self.tags if t.strip()))
        )
        bad = sorted(set(self.types) - set(RESULT_TYPES))
        if bad:
            raise QueryError(
                f"Unknown result type {', '.join(bad)}; choose from {', '.join(RESULT_TYPES)}."
            )
        for name in ("min_width", "min_height", "min_duration", "max_duration"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise QueryError(f"{name.replace('_', ' ')} cannot be negative ({value}).")
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise QueryError("The after date must be earlier than the before date: no file can match both.")
        if (
            self.min_duration is not None
            and self.max_duration is not None
            and self.min_duration > self.max_duration
        ):
            raise QueryError("The minimum duration is longer than the maximum: nothing can match.")

    @property
    def on_assets(self) -> bool:
        """Whether any condition needs the catalog (everything but the item exclusions)."""
        return any(
            (
                self.types,
                self.paths,
                self.after is not None,
                self.before is not None,
                self.min_width is not None,
                self.min_height is not None,
                self.camera,
                self.min_duration is not None,
                self.max_duration is not None,
                self.tags,
            )
        )


@dataclass(frozen=True)
class Query:
    """A whole search: terms, filters, how many results from where, and the result options."""

    terms: tuple[Term, ...]
    filters: Filters = field(default_factory=Filters)
    k: int = 10
    offset: int = 0
    sort: str = "relevance"
    pool: int = 50  # `sort` orders this many of the most relevant results (or the cut-off set)
    cutoff: str | None = None  # None, "auto" (a score gap after the top hits)
    min_score: float | None = None  # drop results whose CLIP cosine is below this
    group: bool = True  # fold adjacent moments of one video/recording into its best one
    explain: bool = False  # keep every ranker's score part (always computed; shown on request)
    rerank: tuple[str, ...] | None = None  # reranker names; None = the collection's defaults
    rerank_depth: int = 50  # candidates the rerankers and the personaliser reorder
    user: str | None = None  # whose feedback personalises the order; None = nobody's
    exclude_query_items: bool = True  # query pictures and liked items never return themselves

    def __post_init__(self) -> None:
        if not self.terms:
            raise QueryError(
                'Nothing to search for: give a text ("a red car"), a picture or an item to search '
                "like (the CLI's --image and --like; over HTTP q=, /api/search/image and like=)."
            )
        if not any(t.positive for t in self.terms):
            raise QueryError('Every term is negative: say what you want too, e.g. "beach" - night.')
        if isinstance(self.rerank, str):
            object.__setattr__(self, "rerank", (self.rerank,))
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise QueryError(f"k must be a whole number between 1 and {MAX_K}, not {self.k!r}.")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise QueryError(f"offset must be 0 or more, not {self.offset}.")
        if not isinstance(self.pool, int) or not 1 <= self.pool <= MAX_K:
            raise QueryError(f"The sort pool must be between 1 and {MAX_K}, not {self.pool}.")
        if not isinstance(self.rerank_depth, int) or not 1 <= self.rerank_depth <= MAX_K:
            raise QueryError(f"The rerank depth must be between 1 and {MAX_K}, not {self.rerank_depth}.")
        if self.rerank is not None:
            from mmsearch.query.rerank import check_names

            object.__setattr__(self, "rerank", check_names(tuple(self.rerank)))
        if self.sort not in SORTS:
            raise QueryError(f"Unknown sort {self.sort!r}; choose from {', '.join(SORTS)}.")
        if self.cutoff not in (None, "auto"):
            raise QueryError(f"Unknown cut-off {self.cutoff!r}; use 'auto' or leave it out.")

    @property
    def texts(self) -> list[Term]:
        return [t for t in self.terms if t.kind == "text"]

    @property
    def text_only(self) -> bool:
        return all(t.kind == "text" for t in self.terms)

    def describe(self) -> str:
        """The query as a person would type it, for titles and logs."""
        return " ".join(
            (t.label() if i == 0 or t.weight < 0 else f"+ {t.label()}").replace(
                "-", "- ", 1 if t.weight < 0 else 0
            )
            for i, t in enumerate(self.terms)
        )


def text_query(text: str, **options: object) -> Query:
    """The common case: one sentence."""
    return Query((Term("text", text),), **options)  # type: ignore[arg-type]


def image_path(value: object) -> Path | None:
    """The path of an image term given as a path, else None (PIL images and bytes have none)."""
    if isinstance(value, str | os.PathLike):
        return Path(value).expanduser()
    return None
