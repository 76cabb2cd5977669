"""Zero-shot tags from stored vectors: which tags of the vocabulary a picture confidently shows.

Each tag is the mean of its prompts' text embeddings (prompt ensembling), normalised. A picture's
cosine to every tag is turned into a softmax *within each group* of the vocabulary,

    share(t | x) = exp(SCALE * cos(x, t)) / (exp(SCALE * cos(x, b)) + sum_{u in group(t)} exp(SCALE * cos(x, u)))

and the tags whose share is at least ``MIN_SHARE`` are kept, with their share as the score. A
group is a set of alternatives (colours, shapes, scenes): within it the tags compete, so a
picture gets a colour and a shape rather than only the single strongest word; several objects
split a group's share, so a picture of a red circle and a blue square can get red, blue, circle
and square. ``b`` is a background alternative in every group ("a photo.", "a picture." ...):
a group of one tag, or a picture that shows none of a group's tags, is not forced to take one.
``SCALE`` and ``MIN_SHARE`` were chosen on the shapes world's rendered photos
(seed 3; the benchmark's figures come from other seeds: ``benchmarks/tags.py``).

Only stored vectors are read: tagging never re-encodes a picture, so a new vocabulary re-tags a
collection in the time of one matrix product per batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from mmsearch.models import Encoder
    from mmsearch.tags.vocabulary import Vocabulary

log = logging.getLogger(__name__)

SCALE = 50.0
"""Softmax sharpness over cosines (CLIP's own logit scale is about 100; 50 keeps second objects)."""
MIN_SHARE = 0.1
"""Share of its group a tag needs to be kept."""
BACKGROUND_PROMPTS = ("a photo.", "a picture.", "an image.", "a photo of something.")
"""The "none of these" alternative each group's tags compete with."""


class ModelRecord(Protocol):
    """What keys a model's cached tag vectors, known without loading the model
    (`pipeline.KnownEncoder`)."""

    @property
    def name(self) -> str: ...

    @property
    def weights_id(self) -> str: ...

    @property
    def precision(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def dim(self) -> int: ...


def tag_matrix(encoder: Encoder, vocabulary: Vocabulary) -> np.ndarray:
    """(tags + 1, dim) unit rows: each tag's mean prompt embedding, then the background's."""
    texts = [t.texts() for t in vocabulary.tags] + [BACKGROUND_PROMPTS]
    flat = [p for prompts in texts for p in prompts]
    embedded = encoder.encode_texts(flat)
    rows, start = [], 0
    for prompts in texts:
        mean = embedded[start : start + len(prompts)].mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(prompts)
    return np.asarray(rows, np.float32)


MATRIX_FORMAT = 1
"""Part of every cached matrix's key: bump it when `tag_matrix` computes rows differently."""


def cached_tag_matrix(
    encoder: Encoder | ModelRecord, vocabulary: Vocabulary, load: Callable[[], Encoder] | None = None
) -> np.ndarray:
    """`tag_matrix`, kept in the model cache (`$MMSEARCH_CACHE/tags/`) under a key made of the
    checkpoint's digest, the precision and device kind the text tower ran at, and every prompt:
    each `index` run that adds pictures tags them, and embedding a few hundred prompts costs
    seconds with a ViT-B-32 text tower on a CPU. A model without a weights digest (random init)
    is never cached. `encoder` may be only a record of the model (a Ray run's driver does not
    load it): `load` then gives the model, called only when the matrix is not cached."""
    weights = getattr(encoder, "weights_id", "") or ""
    if weights in ("", "random"):
        return tag_matrix(_model(encoder, load), vocabulary)
    try:
        cached = np.load(_cache_path(encoder, weights, vocabulary), allow_pickle=False)
        if cached.ndim == 2 and cached.shape == (len(vocabulary) + 1, encoder.dim):
            return cached.astype(np.float32, copy=False)
    except (OSError, ValueError, EOFError):  # not there yet, or a torn file: compute it again
        pass
    model = _model(encoder, load)
    matrix = tag_matrix(model, vocabulary)
    _save_quietly(_cache_path(model, model.weights_id, vocabulary), matrix)
    return matrix


def _model(encoder: Encoder | ModelRecord, load: Callable[[], Encoder] | None) -> Encoder:
    """The model itself: `encoder` when it is one, else what `load` gives."""
    if hasattr(encoder, "encode_texts"):
        return encoder  # type: ignore[return-value]
    if load is None:
        raise TypeError(f"{encoder!r} is not a model and nothing was given to load one")
    return load()


def _cache_path(encoder: Encoder, weights: str, vocabulary: Vocabulary) -> Path:
    import hashlib

    from mmsearch import paths

    device = str(getattr(encoder, "device", "cpu")).split(":")[0]
    prompts = [p for tag in vocabulary.tags for p in ("\t", *tag.texts())] + list(BACKGROUND_PROMPTS)
    key = "\n".join(
        [str(MATRIX_FORMAT), encoder.name, weights, str(encoder.precision), device, *prompts]
    )
    return paths.cache_dir() / "tags" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"


def _save_quietly(path: Path, matrix: np.ndarray) -> None:
    """Write it whole or not at all (`atomic_write`); a cache that cannot be written costs only
    the next run's recomputation."""
    from mmsearch.vectors.storage import atomic_write

    try:
        atomic_write(path, lambda f: np.save(f, matrix))
    except OSError as exc:
        log.debug("the tag matrix was not cached in %s: %s", path, exc)


def choose_tags(
    vectors: np.ndarray,
    matrix: np.ndarray,
    vocabulary: Vocabulary,
    *,
    scale: float = SCALE,
    min_share: float = MIN_SHARE,
) -> list[list[tuple[int, float]]]:
    """Per picture, the (tag index, share) pairs kept, best first (`matrix` from `tag_matrix`)."""
    cos = np.asarray(vectors, np.float32) @ matrix.T  # (n, T + 1): the last is the background
    shares = np.zeros((len(cos), len(vocabulary)), np.float32)
    for indices in vocabulary.groups.values():
        logits = scale * cos[:, indices + [len(vocabulary)]]
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        shares[:, indices] = (weights / weights.sum(axis=1, keepdims=True))[:, :-1]
    out = []
    for row in shares:
        kept = np.flatnonzero(row >= min_share)
        out.append([(int(i), float(row[i])) for i in kept[np.argsort(-row[kept])]])
    return out
