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
