"""A test-only source for ".crashy" files, importable in decode workers (tests/ is on sys.path).

A file starting with CRASH ends its process the way a segfaulting decoder would; SEGV really
segfaults; any other file becomes a flat picture of the colour in its first three bytes.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from PIL import Image

from indexer.sources.base import ASSET_IMAGE, IMAGE, SourceItem, SourceResult

log = logging.getLogger("crashy_reader")

EXTENSION = ".crashy"
READER = "crashy_reader:read_crashy"


def read_crashy(path: Path, **_options: object) -> SourceResult:
    data = Path(path).read_bytes()
    if data.startswith(b"CRASH"):
        os._exit(3)
    if data.startswith(b"SEGV"):
        ctypes.string_at(0)  # a real segmentation fault
    log.warning("crashy reader read %s in process %d", Path(path).name, os.getpid())
    colour = tuple(data[:3].ljust(3, b"\0"))
    image = Image.new("RGB", (48, 32), colour)
    return SourceResult(ASSET_IMAGE, [SourceItem(IMAGE, image=image)], {"width": 48, "height": 32})


def write_crashy(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path
