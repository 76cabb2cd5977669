"""`Filters` as SQL conditions on assets (and item tags), written with SQLAlchemy expressions (no string SQL)."""

from __future__ import annotations

import fnmatch
import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from mmsearch.catalog.schema import Asset, Item, ItemTag

if TYPE_CHECKING:
    from mmsearch.query.model import Filters

GLOB_CHARS = frozenset("*?[")


def asset_conditions(filters: Filters, dialect: str) -> list[Any]:
    """The WHERE conditions on `Asset` that ``filters`` asks for (empty: no condition)."""
    out: list[Any] = []
    if filters.types:
        out.append(Asset.kind.in_(sorted(filters.types)))
    if filters.paths:
        out.append(or_(*(_path_condition(p, dialect) for p in filters.paths)))
    if filters.after is not None:
        out.append(Asset.date_s >= filters.after)
    if filters.before is not None:
        out.append(Asset.date_s < filters.before)
    if filters.min_width is not None:
        out.append(Asset.width >= filters.min_width)
    if filters.min_height is not None:
        out.append(Asset.height >= filters.min_height)
    if filters.camera:
        out.append(func.lower(Asset.camera).contains(filters.camera.lower(), autoescape=True))
    if filters.min_duration is not None:
        out.append(Asset.duration_s >= filters.min_duration)
    if filters.max_duration is not None:
        out.append(Asset.duration_s <= filters.max_duration)
    for tag in filters.tags:  # items (joined with their assets) that carry every tag
        out.append(Item.id.in_(select(ItemTag.item_id).where(ItemTag.tag == tag)))
    return out


def path_pattern(raw: str) -> str:
    """The glob a `--path` value means, against absolute paths.

    ``~/Pictures/2023`` (no wildcard) is a folder: everything under it, or that file itself.
    ``*.png`` or ``IMG_*`` (no slash) matches file names anywhere. ``trips/*/beach*`` (relative,
    with a slash) matches that tail of any path. Absolute globs are taken as they are.
    """
    text = os.path.expanduser(raw.strip())
    if not text:
        return "*"
    if not GLOB_CHARS & set(text):
        if os.path.isabs(text) or os.path.exists(text):
            return os.path.abspath(text).rstrip("/") + "*"
        return "*/" + text.strip("/") + "*"
    if "/" not in text:
        return "*/" + text
    if not os.path.isabs(text):
        return "*/" + text.lstrip("./")
    return text


def _path_condition(raw: str, dialect: str) -> Any:
    pattern = path_pattern(raw)
    if pattern.endswith("*") and not GLOB_CHARS & set(pattern[:-1]) and pattern.startswith("/"):
        folder = pattern[:-1]  # a folder (or file) prefix: exact match or below it
        return or_(
            Asset.path == folder, Asset.path.startswith(folder.rstrip("/") + "/", autoescape=True)
        )
    if dialect == "sqlite":
        return Asset.path.op("GLOB")(pattern)
    if dialect == "postgresql":
        return Asset.path.op("~")(glob_to_posix_regex(pattern))
    return Asset.path.regexp_match(fnmatch.translate(pattern))


_REGEX_SPECIAL = frozenset("\\.^$|()[]{}*+?")


def glob_to_posix_regex(pattern: str) -> str:
    """SQLite GLOB semantics as a PostgreSQL regular expression (for ``~``), anchored.

    ``*`` is any run of characters (``/`` included, as GLOB), ``?`` one character, ``[abc]``,
    ``[a-z]`` and ``[^abc]`` a class (``!`` is not a negation in GLOB, so not here either);
    everything else is literal. (Python's
    `fnmatch.translate` writes ``(?s:...)\\Z``, which PostgreSQL's regex engine rejects.)
    """
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append("\\[")
            else:
                body = pattern[i + 1 : j]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append("\\" + c if c in _REGEX_SPECIAL else c)
        i += 1
    out.append("$")
    return "".join(out)


__all__ = ["asset_conditions", "glob_to_posix_regex", "path_pattern"]
