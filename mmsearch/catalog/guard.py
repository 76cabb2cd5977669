"""Database failures as typed errors with the way out, never raw tracebacks (SQLite's messages,
PostgreSQL's SQLSTATE codes).

Every public `Catalog` method runs inside `database_errors`, so a damaged file, a full disk or a
locked database reaches the CLI and the server as one `CatalogError` naming the catalog and what
to do (see docs/RECOVERY.md).
"""

from __future__ import annotations

import errno
import functools
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from mmsearch.errors import CatalogError, DiskFullError

if TYPE_CHECKING:
    from sqlalchemy.exc import DBAPIError

F = TypeVar("F", bound=Callable[..., Any])

_DAMAGED = ("malformed", "not a database", "file is encrypted", "corrupt", "no such table")


@contextmanager
def database_errors(where: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors, the standard library's sqlite3 errors (the read-only
    `reader`), and a full disk into `CatalogError`s about ``where``."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, where) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise disk_full(where) from exc
        raise
    except Exception as exc:
        # SQLAlchemy's errors, without importing it: if one was raised, it is loaded already
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
            raise translate(exc, where) from exc
        raise


def translate(exc: DBAPIError | sqlite3.Error, where: str) -> CatalogError:
    message = str(getattr(exc, "orig", exc)).strip() or type(exc).__name__
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate or _is_pg_driver(exc):
        return _translate_postgresql(exc, message, sqlstate or "", where)
    low = message.lower()
    if "disk is full" in low or "no space" in low:
        return disk_full(where)
    if any(word in low for word in _DAMAGED):
        return CatalogError(
            f"The catalog at {where} is damaged ({message}). Searching and indexing cannot go on "
            "with it: restore it from a backup, or index into a new home (--home PATH). The vector "
            "index alone cannot restore it (see docs/RECOVERY.md)."
        )
    if "locked" in low or "busy" in low:
        return CatalogError(
            f"The catalog at {where} is locked by another program ({message}); try again when it is done."
        )
    return CatalogError(f"The catalog at {where} failed: {message}.")


def _is_pg_driver(exc: DBAPIError) -> bool:
    module = type(getattr(exc, "orig", None)).__module__ or ""
    return module.startswith(("psycopg", "psycopg2", "pg8000", "asyncpg"))


_PG_HINT = (
    "Check the URL (--catalog or $MMSEARCH_CATALOG, or the home's catalog_url file), that the "
    "server is running and reachable, and the password (PGPASSWORD or ~/.pgpass)."
)


def _translate_postgresql(exc: DBAPIError, message: str, sqlstate: str, where: str) -> CatalogError:
    """PostgreSQL's SQLSTATE classes (and psycopg's connection failures, which have none)."""
    first = " ".join(message.split()) if message else type(exc).__name__
    first = first.split(" HINT:")[0]
    low = message.lower()
    if sqlstate == "53100" or "no space left" in low:
        return disk_full(where)
    if not sqlstate:  # psycopg reports a refused connection without one: read the server's words
        if "password authentication failed" in low or ("role" in low and "does not exist" in low):
            sqlstate = "28000"
        elif "database" in low and "does not exist" in low:
            sqlstate = "3D000"
    if sqlstate.startswith("08") or (not sqlstate and "connect" in low):
        return CatalogError(f"Cannot reach the PostgreSQL catalog at {where} ({first}). {_PG_HINT}")
    if sqlstate.startswith("28"):
        return CatalogError(
            f"The PostgreSQL catalog at {where} refused the login ({first}). {_PG_HINT}"
        )
    if sqlstate == "3D000":
        return CatalogError(
            f"The PostgreSQL database of {where} does not exist ({first}). Create it first "
            "(createdb NAME, or CREATE DATABASE NAME), then run the command again."
        )
    if sqlstate.startswith("42501"):
        return CatalogError(
            f"The PostgreSQL user of {where} lacks a privilege the catalog needs ({first}). Grant "
            "it CREATE on the database (or use its owner)."
        )
    if sqlstate.startswith(("XX001", "XX002")):
        return CatalogError(
            f"The PostgreSQL catalog at {where} is damaged ({first}). Restore the database from a "
            "backup, or index into a new database (see docs/RECOVERY.md)."
        )
    if sqlstate in ("40001", "40P01", "55P03") or sqlstate.startswith("57014"):
        return CatalogError(
            f"The PostgreSQL catalog at {where} is busy with another program ({first}); "
            "try again when it is done."
        )
    if sqlstate == "42P01":  # undefined table: someone dropped part of the catalog
        return CatalogError(
            f"The PostgreSQL catalog at {where} is missing a table ({first}): it is damaged or was "
            "changed by hand. Restore it from a backup, or index into a new database."
        )
    return CatalogError(f"The PostgreSQL catalog at {where} failed: {first}.")


def disk_full(where: str) -> DiskFullError:
    return DiskFullError(
        f"The disk holding {where} is full. Everything committed so far is kept: free some space "
        "and run the same command again to finish."
    )


def guarded(cls: type) -> type:
    """Wrap every public method of a catalog class in `database_errors`."""
    for name, member in list(vars(cls).items()):
        if (
            name.startswith("_")
            or not callable(member)
            or isinstance(member, classmethod | staticmethod)
        ):
            continue
        setattr(cls, name, _wrap(member))
    return cls


def _wrap(method: F) -> F:
    @functools.wraps(method)
    def run(self, *args: Any, **kwargs: Any) -> Any:
        with database_errors(getattr(self, "where", "the catalog")):
            result = method(self, *args, **kwargs)
        if hasattr(result, "__next__"):  # a generator: guard it while it is consumed
            return _guard_iter(result, getattr(self, "where", "the catalog"))
        return result

    return run  # type: ignore[return-value]


def _guard_iter(gen: Iterator[Any], where: str) -> Iterator[Any]:
    with database_errors(where):
        yield from gen
