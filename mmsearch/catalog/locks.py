"""The single-writer rule across machines: a PostgreSQL session advisory lock.

A home's ``writer.lock`` (an flock) keeps two writers on one machine apart; a catalog shared by
several machines needs a lock they all see. `writer_lock` holds ``pg_try_advisory_lock`` on one
dedicated connection (autocommit, so no transaction stays open) for the writer's lifetime. The
server drops it when that connection ends, so a killed writer never leaves the catalog locked.
The holder names itself in ``application_name``, so a refused writer can say who holds it.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

WRITER_APPLICATION = "mmsearch writer"


class WriterBusy(Exception):
    """Another writer holds the catalog's advisory lock; ``holder`` says who, when known."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def writer_lock_key(collection_id: str) -> int:
    """A signed 64-bit advisory lock key for this collection's writer."""
    digest = hashlib.blake2b(f"mmsearch-writer:{collection_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def writer_lock(engine: Engine, collection_id: str) -> Iterator[None]:
    """Hold the PostgreSQL writer lock of this collection, or raise `WriterBusy` at once."""
    key = writer_lock_key(collection_id)
    name = f"{WRITER_APPLICATION} {socket.gethostname()} pid {os.getpid()}"[:63]
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise WriterBusy(_holder(conn, key))
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        conn.close()


def _holder(conn, key: int) -> str:
    """The holder's application name (``mmsearch writer HOST pid N``), else its server pid."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        text(
            "SELECT a.application_name, l.pid FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return "another process"
    app, pid = row
    if app and app.startswith(WRITER_APPLICATION):
        return app.removeprefix(WRITER_APPLICATION).strip()
    return f"server pid {pid}"
