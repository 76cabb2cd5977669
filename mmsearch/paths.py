"""Where mmsearch keeps its data: one function each for the data home and the model cache."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "mmsearch"


def data_home(override: str | os.PathLike[str] | None = None) -> Path:
    """The collection home: an explicit path, else $MMSEARCH_HOME, else the per-user data dir."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("MMSEARCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Where downloaded model weights go: $MMSEARCH_CACHE, else the per-user cache dir."""
    env = os.environ.get("MMSEARCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def models_dir() -> Path:
    """Where fine-tuned models are registered by name: $MMSEARCH_MODELS, else the per-user data dir."""
    env = os.environ.get("MMSEARCH_MODELS")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"


# ---- file paths as catalog text ----------------------------------------------------------------
# POSIX file names are bytes. Python hands names that are not valid UTF-8 over as str with lone
# surrogates (PEP 383 "surrogateescape": byte 0xE9 becomes U+DCE9), and such a str cannot be
# encoded to UTF-8, so SQLite cannot store it. The catalog therefore keeps a *key*: the path with
# each undecodable byte written as \xNN and each literal backslash doubled. The key is lossless
# (`key_path(path_key(p)) == p`), printable, and equal to the path for every valid UTF-8 name
# without a backslash, and it keeps prefixes (a folder's key starts every key inside it).


def path_key(path: str | os.PathLike[str]) -> str:
    """The text the catalog stores for a file path; see the note above."""
    text = os.fspath(path)
    if "\\" not in text and is_utf8(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # any other lone surrogate (not made by os functions)
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def key_path(key: str) -> Path:
    """The file path a catalog key names, ready for `open()`; the inverse of `path_key`.

    A backslash not followed by a known escape is kept as it is, so keys written before this
    scheme (which never held undecodable bytes) still name their files.
    """
    if "\\" not in key:
        return Path(key)
    out, i = [], 0
    while i < len(key):
        ch = key[i]
        if ch == "\\":
            nxt = key[i + 1 : i + 2]
            if nxt == "\\":
                out.append("\\")
                i += 2
                continue
            width = {"x": 2, "u": 4}.get(nxt)
            digits = key[i + 2 : i + 2 + width] if width else ""
            if width and len(digits) == width and _is_hex(digits):
                code = int(digits, 16)
                out.append(chr(0xDC00 + code if nxt == "x" else code))
                i += 2 + width
                continue
        out.append(ch)
        i += 1
    return Path("".join(out))


def is_utf8(text: str) -> bool:
    """Whether a str can be written as UTF-8 (no undecodable file-name bytes in it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_hex(digits: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in digits)
