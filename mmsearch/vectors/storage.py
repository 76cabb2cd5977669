"""Crash-safe files for vector indexes: atomic writes and the JSON sidecar.

An index is two files: the index itself (``<name>``, an ``.npz`` container) and a sidecar
(``<name>.json``) recording what built it. Both are written atomically (temp file in the same
directory, flush + fsync, ``os.replace``, fsync the directory), index first and sidecar second.
A random ``generation`` token is written into both; a kill between the two renames leaves a
pair whose tokens differ, which ``load_index`` reports instead of silently mixing them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mmsearch.errors import VectorIndexError

log = logging.getLogger(__name__)

INDEX_FORMAT = "mmsearch-vector-index"
INDEX_FORMAT_VERSION = 1
"""Bump when the container or sidecar layout changes; older readers then refuse newer files."""


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of an index file: the same name with ``.json`` appended."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write a file so that readers and crashes only ever see the old or the new whole file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; not possible (nor needed) on Windows."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_generation() -> str:
    """A fresh token tying one index file to its sidecar."""
    return uuid.uuid4().hex


def now_iso() -> str:
    """UTC timestamp for sidecars, readable by people."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_sidecar(path: str | os.PathLike[str], info: dict[str, Any]) -> None:
    """Atomically write the sidecar of the index at ``path``."""
    data = json.dumps(
        {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, **info}, indent=2
    )
    atomic_write(sidecar_path(path), lambda f: f.write(data.encode("utf-8") + b"\n"))


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the sidecar of the index at ``path`` (cheap: no index is loaded)."""
    side = sidecar_path(path)
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VectorIndexError(
            f"The vector index sidecar {side} is missing. Rebuild the index from the catalog "
            "(it holds every vector), or re-index."
        ) from None
    except (OSError, ValueError) as exc:
        raise VectorIndexError(
            f"The vector index sidecar {side} cannot be read ({exc}). Rebuild the index from the catalog."
        ) from exc
    if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
        raise VectorIndexError(f"{side} is not an mmsearch vector index sidecar.")
    version = info.get("format_version")
    if not isinstance(version, int) or version > INDEX_FORMAT_VERSION:
        raise VectorIndexError(
            f"The vector index {path} has format version {version}, newer than this mmsearch "
            f"understands ({INDEX_FORMAT_VERSION}). Upgrade mmsearch, or rebuild the index."
        )
    return info
