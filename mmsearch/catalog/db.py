"""Engines for the catalog: SQLite (the default, a file in the home) or PostgreSQL (by URL).

SQLite gets WAL journaling (readers never block the writer and see committed data only), a busy
timeout (a second writer waits instead of failing), foreign keys on, and explicit transactions:
pysqlite's own lazy BEGIN is switched off so DDL is transactional (migrations are all-or-nothing)
and writers can take the write lock up front with BEGIN IMMEDIATE, which avoids the deadlock of
two readers both upgrading to writers.

PostgreSQL (``postgresql://user@host/db``, psycopg 3) runs at READ COMMITTED: readers never block
writers there either. The single writer is guarded by an advisory lock (`mmsearch.catalog.locks`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another writer's lock before giving up."""

_BEGIN_OPTION = "mmsearch_sqlite_begin"


PG_DRIVER = "postgresql+psycopg"
"""The driver a plain ``postgresql://`` (or ``postgres://``) URL is given: psycopg 3."""

CONNECT_TIMEOUT_S = 10
"""How long a PostgreSQL connection attempt waits for an unreachable server."""


def to_url(target: str | os.PathLike[str]) -> str:
    """A URL for a URL or a plain file path (a path becomes ``sqlite:///<absolute path>``).

    ``postgresql://`` and ``postgres://`` name psycopg 3 (the driver mmsearch installs); a URL
    with an explicit driver (``postgresql+psycopg2://``) is kept as it is.
    """
    text = os.fspath(target)
    if "://" in text:
        for prefix in ("postgresql://", "postgres://"):
            if text.startswith(prefix):
                return PG_DRIVER + "://" + text[len(prefix) :]
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def make_engine(target: str | os.PathLike[str]) -> Engine:
    """Create an engine for the catalog; SQLite connections are configured as described above."""
    url = make_url(to_url(target))
    if url.get_backend_name() == "postgresql":
        if url.get_driver_name() == "psycopg":
            from mmsearch.errors import require

            require("psycopg", "A PostgreSQL catalog", "postgres")
        args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_driver_name() == "psycopg" else {}
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def is_postgresql(bind) -> bool:
    """Whether an engine or connection talks to PostgreSQL."""
    return bind.dialect.name == "postgresql"


def writer(engine: Engine) -> Engine:
    """The same engine, but SQLite transactions take the write lock at BEGIN."""
    return engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})


def _on_sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves in _on_sqlite_begin
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _on_sqlite_begin(conn) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
