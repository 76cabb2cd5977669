"""Database failures as typed errors with the way out, never raw tracebacks.

Every public `Catalog` method runs inside `database_errors`, so a damaged file, a full disk or a
locked database reaches the CLI and the server as one `CatalogError` naming the catalog and what
to do (see docs/RECOVERY.md).
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from mmsearch.errors import CatalogError, DiskFullError

F = TypeVar("F", bound=Callable[..., Any])

_DAMAGED = ("malformed", "not a database", "file is encrypted", "corrupt", "no such table")


@contextmanager
def database_errors(where: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors (and a full disk) into `CatalogError`s about ``where``."""
    try:
        yield
    except DBAPIError as exc:
        raise translate(exc, where) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise disk_full(where) from exc
        raise


def translate(exc: DBAPIError, where: str) -> CatalogError:
    message = str(getattr(exc, "orig", exc)).strip() or type(exc).__name__
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
