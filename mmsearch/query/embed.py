"""Query terms to vectors: the CLIP vector of the whole query, and what the passage rankers need.

How a compound query combines (rclip's and Marqo's rule): every term is embedded and normalised,
multiplied by its signed weight, summed, and the sum normalised again,

    q = normalise( sum_i  w_i * normalise(v_i) )

so "2:red car + beach.jpg - night" is twice "red car", plus the picture, minus "night". Image
terms that name an indexed file, and `--like` items, use the vectors stored in the collection
(nothing is re-encoded), and those items are left out of their own results.

The passage rankers see only the text terms: the sentence model combines them by the same rule
(a negative text term pushes passages away), and keyword search matches the positive terms'
words (a negative term's words cannot make a passage match).
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmsearch.errors import DecodeError, NotFoundError, QueryError
from mmsearch.query.model import Query, Term, image_path

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch.models import Encoder
    from mmsearch.models.sentence import TextEncoder
    from mmsearch.store import Collection

log = logging.getLogger(__name__)

URL_MAX_BYTES = 20 * 2**20
"""Largest picture fetched for an ``http(s)://`` term."""
URL_TIMEOUT_S = 10.0
"""Seconds a URL term may take to answer and to arrive."""
QUERY_MAX_PIXELS = 40_000_000
"""Query pictures with more pixels are refused before they are decoded (a decompression bomb)."""


@dataclass
class EmbeddedQuery:
    """A query's vectors and what the rankers and stages need to know about it."""

    clip: np.ndarray  # (dim,) unit vector of the whole query
    sentence: np.ndarray | None = None  # (dim',) unit vector of the text terms, sentence model
    keywords: str = ""  # the positive text terms' words, for keyword search
    exclude: frozenset[int] = field(default_factory=frozenset)  # query items themselves


def combine(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """normalise(sum w_i * normalise(v_i)); a sum that cancels out is a query error."""
    total = np.zeros_like(np.asarray(vectors[0], np.float32))
    for vec, weight in zip(vectors, weights, strict=True):
        vec = np.asarray(vec, np.float32)
        norm = float(np.linalg.norm(vec))
        if norm > 0:
            total += weight * vec / norm
    norm = float(np.linalg.norm(total))
    if not np.isfinite(norm) or norm < 1e-6:
        raise QueryError("The query's terms cancel each other out: change a weight or a term.")
    return (total / norm).astype(np.float32)


def embed_query(
    query: Query,
    collection: Collection,
    encoder: Callable[[], Encoder],
    text_encoder: Callable[[], TextEncoder | None],
    *,
    passages: bool = True,
) -> EmbeddedQuery:
    """Embed every term (stored vectors where the collection has them) and combine them.

    ``passages`` says whether the passage rankers will run; only then is the sentence model used.
    """
    vectors, weights, exclude = [], [], set()
    for term in query.terms:
        vec, items = term_vector(term, collection, encoder)
        vectors.append(vec)
        weights.append(term.weight)
        exclude |= items
    embedded = EmbeddedQuery(combine(vectors, weights))
    if query.exclude_query_items:
        embedded.exclude = frozenset(exclude)
    texts = query.texts
    if texts and passages:
        embedded.keywords = " ".join(str(t.value).strip() for t in texts if t.positive)
        model = text_encoder()
        if model is not None:
            sentence = model.encode([str(t.value).strip() for t in texts])
            embedded.sentence = combine(list(sentence), [t.weight for t in texts])
    return embedded


def term_vector(
    term: Term, collection: Collection, encoder: Callable[[], Encoder]
) -> tuple[np.ndarray, frozenset[int]]:
    """One term's CLIP vector, and the collection items it stands for (to leave out of results)."""
    if term.kind == "text":
        return encoder().encode_texts([str(term.value).strip()])[0], frozenset()
    if term.kind == "item":
        ids = [_item_id(term.value)]
        return _stored(collection, ids, f"item {term.value}"), frozenset(ids)
    if term.kind == "url":
        return _encode_picture(encoder, fetch_url(str(term.value)), str(term.value)), frozenset()
    path = image_path(term.value)
    if path is not None:
        indexed = collection.catalog.item_ids_of_paths([path])
        ids = next(iter(indexed.values()), [])
        if ids:  # an indexed file: its stored vectors, nothing re-encoded
            return _stored(collection, ids, str(path)), frozenset(ids)
    return _encode_picture(encoder, term.value, term.label()), frozenset()


def _item_id(value: object) -> int:
    try:
        item_id = int(str(value).strip())
    except ValueError:
        raise QueryError(
            f"--like takes an item id (a number from a result), not {value!r}."
        ) from None
    if not 0 <= item_id < 2**63:
        raise QueryError(f"No item {item_id} in this collection.")
    return item_id


def _stored(collection: Collection, ids: list[int], what: str) -> np.ndarray:
    found, vectors = collection.catalog.vectors_for(ids)
    if not len(found):
        raise NotFoundError(
            f"No item {ids[0]} in this collection (it may have been re-indexed); "
            "search again and use an id from the new results."
            if what.startswith("item ")
            else f"{what} is in the catalog but has no stored vectors; re-index its folder."
        )
    return combine(list(vectors), [1.0] * len(vectors))


def _encode_picture(encoder: Callable[[], Encoder], value: object, label: str) -> np.ndarray:
    model = encoder()
    image = load_query_image(value, label, target_size=model.image_size)
    return model.encode_images([image])[0]


def load_query_image(value: object, label: str, *, target_size: int | None = None) -> Image.Image:
    """Every face's one way to read a query picture: the indexer's decoder, with query limits.

    Paths, bytes (uploads, downloads) and PIL images all come out RGB with transparency on
    white, exactly as the same file is read when indexed, so a picture finds itself.
    """
    from indexer.sources.image import ImageLimits, decode_image_bytes, read_image

    limits = ImageLimits(max_pixels=QUERY_MAX_PIXELS, max_bytes=URL_MAX_BYTES)
    try:
        if isinstance(value, bytes):
            return (
                decode_image_bytes(value, label, target_size=target_size, limits=limits)
                .items[0]
                .image
            )
        if isinstance(value, str | os.PathLike):
            path = Path(value).expanduser()
            if not path.exists():
                raise QueryError(f"The query picture {path} does not exist.")
            return read_image(path, target_size=target_size, limits=limits).items[0].image
    except DecodeError as exc:
        raise QueryError(f"Cannot use {label} as a query picture: {exc}") from exc
    from PIL import Image

    if isinstance(value, Image.Image):
        from indexer.sources.image import to_rgb

        return to_rgb(value, label)
    raise QueryError(f"Cannot use {type(value).__name__} as a query picture.")


def fetch_url(
    url: str, *, timeout_s: float = URL_TIMEOUT_S, max_bytes: int = URL_MAX_BYTES
) -> bytes:
    """Download a query picture with a size and time limit; offline it fails with a clear error."""
    if not url.lower().startswith(("http://", "https://")):
        raise QueryError(f"Only http(s):// addresses can be fetched, not {url!r}.")
    import http.client

    try:
        request = urllib.request.Request(url, headers={"User-Agent": "mmsearch"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise QueryError(
                    f"{url} is {int(declared) / 2**20:.0f} MB; query pictures are limited to {max_bytes // 2**20} MB."
                )
            data = response.read(max_bytes + 1)
    except QueryError:
        raise
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)  # http.client.InvalidURL: a malformed host or port
        raise QueryError(
            f"Cannot fetch {url}: {reason}. Check the address and the network, or download the "
            "picture and give its path."
        ) from exc
    if len(data) > max_bytes:
        raise QueryError(
            f"{url} is larger than {max_bytes // 2**20} MB; query pictures are limited to that."
        )
    return data
