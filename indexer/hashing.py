"""Content hashes: how a moved or renamed file is recognised and keeps its vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_NAME = "blake2b-256"  # recorded so a future change of algorithm can be detected
_CHUNK = 1 << 20


def content_hash(path: Path | str, chunk_size: int = _CHUNK) -> str:
    """Hex BLAKE2b-256 of the file's bytes, read in chunks so large videos never sit in memory.

    Raises OSError (e.g. PermissionError, FileNotFoundError) like `open` does.
    """
    digest = hashlib.blake2b(digest_size=32)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def bytes_hash(data: bytes) -> str:
    """`content_hash` of bytes already read: the same digest as of the file holding them."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()
