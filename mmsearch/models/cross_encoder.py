"""A text cross-encoder for reranking passages (sentence-transformers `CrossEncoder`).

Nothing ships one offline, so it is off unless a user names weights: a local folder, or a hub
name such as ``cross-encoder/ms-marco-MiniLM-L-6-v2`` fetched once into the cache when the
network allows (``--cross-encoder`` or ``$MMSEARCH_CROSS_ENCODER``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmsearch import paths
from mmsearch.errors import ConfigError, ModelUnavailableError, require

ENV = "MMSEARCH_CROSS_ENCODER"
SUGGESTED = "cross-encoder/ms-marco-MiniLM-L-6-v2"


def cross_encoder_name(name: str | None = None) -> str | None:
    """The cross-encoder asked for (argument, else the environment), or None: reranker off."""
    return name or os.environ.get(ENV) or None


def load_cross_encoder(name: str | None = None, device: str = "cpu") -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """``predict(pairs) -> scores`` of the named cross-encoder; a clear error when it can't load."""
    chosen = cross_encoder_name(name)
    if chosen is None:
        raise ConfigError(
            "The cross-encoder reranker needs weights, and none ship with mmsearch: pass "
            f"--cross-encoder NAME_OR_FOLDER or set ${ENV} (e.g. {SUGGESTED}, downloaded once "
            "with network access)."
        )
    st = require("sentence_transformers", "The cross-encoder reranker", "text")
    folder = Path(chosen).expanduser()
    local = folder.is_dir()
    try:
        model = st.CrossEncoder(
            str(folder) if local else chosen,
            device=None if device == "auto" else device,
            cache_folder=str(paths.cache_dir() / "cross-encoders"),
            local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1",
        )
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"Cannot load the cross-encoder {chosen!r} ({exc}). Offline, give a local folder "
            f"that holds its files, or run once with network access to cache it; or drop "
            "--rerank cross-encoder."
        ) from exc

    def predict(pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.asarray(model.predict(pairs, show_progress_bar=False), dtype=np.float32)

    return predict
