"""Forward passes over decoded files: each item's vector (and patch grid) from the encoder.

Its own module so that a Ray encoding actor imports only this, the workers' types and the
encoder: not the pipeline, the catalog or SQLAlchemy, which cost each actor ~0.3 s of start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from indexer.workers import PICTURE_KINDS, Decoded
from mmsearch.models.preprocess import stack_uint8

if TYPE_CHECKING:
    from mmsearch.models import Encoder

Encoded = tuple[np.ndarray, "np.ndarray | None"]  # an item's vector and its patch features


def is_encoded(decoded: Decoded) -> bool:
    """Whether the file's items came back with their vectors (encoded by a Ray actor)."""
    return bool(decoded.items) and all(it.vector is not None for it in decoded.items)


def encode_files(
    encoder: Encoder, files: Sequence[Decoded], batch_size: int, store_patches: bool
) -> list[list[Encoded]]:
    """Forward passes of `batch_size` items per tower; each file's items' (vector, patches).

    Pictures are normalised one batch at a time, so a long video's keyframes never sit in memory
    as float; with patch features on, the same forward pass also gives each picture's grid.
    """
    pictures = [it.pixels for d in files for it in d.items if it.kind in PICTURE_KINDS]
    texts = [it.text or "" for d in files for it in d.items if it.kind not in PICTURE_KINDS]
    picture_out: list[Encoded] = []
    for start in range(0, len(pictures), batch_size):
        batch = encoder.preprocess.normalise(stack_uint8(pictures[start : start + batch_size]))
        if store_patches:
            from mmsearch.models.patches import encode_with_patches

            vectors, patches = encode_with_patches(encoder, batch)
            picture_out.extend(zip(vectors, patches))
        else:
            picture_out.extend(
                (v, None) for v in encoder.encode_images(batch, batch_size=batch_size)
            )
    text_out = [
        (v, None) for v in (encoder.encode_texts(texts, batch_size=batch_size) if texts else ())
    ]
    pictures_it, texts_it = iter(picture_out), iter(text_out)
    return [
        [next(pictures_it if it.kind in PICTURE_KINDS else texts_it) for it in d.items]
        for d in files
    ]
