"""Where a home's catalog lives: ``catalog.db`` in the home, or a database named by URL.

A URL comes from ``--catalog`` (``Engine(catalog_url=...)``), else ``$MMSEARCH_CATALOG``, else the
home's ``catalog_url`` file, which the first command given a URL writes, so later commands on that
home need not repeat it. A password is never written there: the file holds the URL without it,
and later connections read the password the way libpq does (``PGPASSWORD`` or ``~/.pgpass``).
A home is bound to one catalog: another URL for it is refused, since its vector index files
mirror the catalog they were built from.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from mmsearch.errors import ConfigError

log = logging.getLogger(__name__)

CATALOG_ENV = "MMSEARCH_CATALOG"
CATALOG_URL_FILE = "catalog_url"
SQLITE_FILE = "catalog.db"


def requested_url(explicit: str | None) -> str | None:
    """The URL asked for by the caller, else by ``$MMSEARCH_CATALOG`` (None: neither)."""
    for value in (explicit, os.environ.get(CATALOG_ENV)):
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def recorded_url(home: Path) -> str | None:
    """The URL recorded in the home, or None."""
    path = Path(home) / CATALOG_URL_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.") from exc
    return text or None


def _parsed(url: str) -> Any:
    """SQLAlchemy's reading of a catalog URL (imported here: a home without one never needs it)."""
    from sqlalchemy.engine import make_url

    from mmsearch.catalog.db import to_url

    return make_url(to_url(url))


BACKENDS = ("postgresql", "sqlite")
"""The databases a catalog lives in (its schema, keyword search and single-writer lock)."""

_SCHEME_WITHOUT_SLASHES = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]+:/(?!/)|(?:postgres|postgresql|sqlite|mysql|mariadb|mssql|oracle)(?:\+\w+)?:)",
    re.IGNORECASE,
)
"""``postgresql:/db``, ``postgres:user@host/db`` and the like: a URL mistyped, not a file path
(``backup:2024.db`` is a file; a drive letter is one character)."""


def without_password(url: str) -> str:
    """The URL in the form it is recorded: normalised driver, no password. ConfigError for a
    mistyped URL or a database other than PostgreSQL and SQLite."""
    from sqlalchemy.exc import ArgumentError

    example = "postgresql://USER@HOST:5432/DBNAME, or a path for a SQLite file"
    if "://" not in url and _SCHEME_WITHOUT_SLASHES.match(url):
        raise ConfigError(f"Not a database URL: {url!r} (a scheme is followed by '://'). Example: {example}.")
    try:
        parsed = _parsed(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"Not a database URL: {url!r} ({exc}). Example: {example}.") from None
    if parsed.get_backend_name() not in BACKENDS:
        raise ConfigError(
            f"A catalog lives in PostgreSQL or SQLite, not {parsed.get_backend_name()} "
            f"({url!r}). Example: {example}."
        )
    return parsed._replace(password=None).render_as_string(hide_password=False)


def has_password(url: str) -> bool:
    return _parsed(url).password is not None


def resolve(home: Path, explicit: str | None) -> str | None:
    """The catalog URL to connect with for ``home`` (None: the SQLite file in the home)."""
    home = Path(home)
    requested = requested_url(explicit)
    recorded = recorded_url(home)
    if requested is None:
        return recorded
    wanted = without_password(requested)
    if recorded is not None and wanted != without_password(recorded):
        raise ConfigError(
            f"The home {home} keeps its catalog at {recorded}, not {wanted}. Use another home "
            f"(--home PATH) for another catalog, or delete {home / CATALOG_URL_FILE} (and the "
            "home's index folder) to move this home to the new one."
        )
    if recorded is None and (home / SQLITE_FILE).exists() and _parsed(wanted).get_backend_name() != "sqlite":
        raise ConfigError(
            f"The home {home} already holds a SQLite catalog ({SQLITE_FILE}); a catalog at "
            f"{wanted} needs a home of its own: pass --home NEW_HOME with --catalog."
        )
    return requested


def record(home: Path, url: str) -> None:
    """Write the home's ``catalog_url`` file (without any password), if it is not there yet."""
    path = Path(home) / CATALOG_URL_FILE
    clean = without_password(url)
    if recorded_url(home) == clean:
        return
    if has_password(url):
        log.warning(
            "the catalog's password was not recorded in %s: later commands on this home read it "
            "from PGPASSWORD or ~/.pgpass (or pass --catalog with the full URL again)",
            path,
        )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(clean + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def configured(home: Path, explicit: str | None) -> bool:
    """Whether ``home`` has a catalog to open: a URL (given or recorded) or its SQLite file."""
    home = Path(home)
    return (
        requested_url(explicit) is not None
        or (home / CATALOG_URL_FILE).exists()
        or (home / SQLITE_FILE).exists()
    )
