"""One date per asset for filters and sorting: when the picture was taken, else when the file changed."""

from __future__ import annotations

from datetime import datetime


def asset_date_s(taken_at: datetime | str | None, mtime_ns: int | None) -> float | None:
    """POSIX seconds of the camera date (naive EXIF time read as local time), else of the mtime.

    EXIF rarely records a time zone, and a person filtering "after 2024-06-01" means their own
    calendar, so naive dates are local time; mtimes are exact instants.
    """
    if isinstance(taken_at, str):  # raw SQLite text in a migration
        try:
            taken_at = datetime.fromisoformat(taken_at)
        except ValueError:
            taken_at = None
    if isinstance(taken_at, datetime):
        try:
            return taken_at.timestamp()
        except (OverflowError, OSError, ValueError):
            pass
    return None if mtime_ns is None else mtime_ns / 1e9
