"""Concept features: a few words a user's taste can be said in, for personalisation.

Twenty judgements cannot teach a preference over 2,000 raw features (a CLIP vector and a patch
grid): too many directions explain them equally well, and most do not carry over to the next
search. A taste is usually a few words ("large things", "on the left", "warm colours"), so
`personal.py` first looks for it among a small set of named concepts, each a direction in the
CLIP space, and learns a sparse model over them. A picture's concept features are

    c_k(x) = (cos(v(x), t_k) - mean_k) / std_k

for its stored CLIP vector ``v(x)`` and these directions ``t_k``:

- **the collection's tag vocabulary** (`mmsearch.tags`): each tag's mean prompt embedding, as the
  tagger uses it (``red``, ``circle``; ``beach``, ``dog``): *what* is in the picture;
- **modifiers**: *how* it is shown (``large``, ``small``, ``on the left`` ... ``in the center``;
  for real photos also ``close-up``, ``in the distance``, ``at night``, ``black and white`` ...).
  A modifier is a contrast, so that it measures the modifier and not the subject: the mean
  embedding of the modifier applied to the vocabulary's subject phrases ("a large red circle",
  "a dog on the left") minus the mean embedding of the plain phrases ("a red circle", "a dog"),
  each mean of unit embeddings normalised first. The subjects are the bare phrases of the
  vocabulary's own prompts (articles dropped), or tag names for tags read through templates, at
  most `MAX_SUBJECTS` of them.

``mean_k`` and ``std_k`` standardise each feature over a sample of the collection's stored
vectors (`REFERENCE_SAMPLE` items, evenly spaced by id), so a sparse prior treats every concept
alike. The directions depend only on the model and the vocabulary and are computed once per
process (a few hundred prompts through the text tower); the sample is read when a profile is
learned. Which modifiers: `tiny`'s shapes world knows sizes and positions only
(`SHAPES_MODIFIERS`); every other model gets `GENERAL_MODIFIERS`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mmsearch.models import Encoder
    from mmsearch.tags.vocabulary import Vocabulary

REFERENCE_SAMPLE = 2048
"""Stored vectors read (evenly spaced by id) to standardise the concept features."""
MAX_SUBJECTS = 64
"""Subject phrases a modifier is applied to (evenly spaced over the vocabulary's)."""


@dataclass(frozen=True)
class Modifier:
    """How a picture shows its subject: ``template`` and ``plain`` take the bare subject phrase."""

    name: str
    group: str
    template: str
    plain: str = "{}"


SHAPES_MODIFIERS: tuple[Modifier, ...] = (
    Modifier("large", "size", "large {}"),
    Modifier("small", "size", "small {}"),
    Modifier("on the left", "position", "{} on the left"),
    Modifier("on the right", "position", "{} on the right"),
    Modifier("at the top", "position", "{} at the top"),
    Modifier("at the bottom", "position", "{} at the bottom"),
    Modifier("in the center", "position", "{} in the center"),
)
"""For `tiny`: the shapes world's captions name sizes and positions, nothing else about a view."""

GENERAL_MODIFIERS: tuple[Modifier, ...] = SHAPES_MODIFIERS + (
    Modifier("close-up", "view", "a close-up photo of a {}", "a photo of a {}"),
    Modifier("in the distance", "view", "a photo of a {} in the distance", "a photo of a {}"),
    Modifier("from above", "view", "a photo of a {} from above", "a photo of a {}"),
    Modifier("at night", "light", "a photo of a {} at night", "a photo of a {}"),
    Modifier("bright", "light", "a bright photo of a {}", "a photo of a {}"),
    Modifier("dark", "light", "a dark photo of a {}", "a photo of a {}"),
    Modifier("black and white", "colour", "a black and white photo of a {}", "a photo of a {}"),
    Modifier("colourful", "colour", "a colourful photo of a {}", "a photo of a {}"),
    Modifier("blurry", "quality", "a blurry photo of a {}", "a photo of a {}"),
    Modifier("drawing", "medium", "a drawing of a {}", "a photo of a {}"),
)
"""For real photos: the view, light, colour, sharpness and medium as well."""


def modifiers_for(model_name: str) -> tuple[Modifier, ...]:
    """The shipped modifiers for a model (the same rule as the default tag vocabulary)."""
    from mmsearch.models.registry import is_shapes_model

    return SHAPES_MODIFIERS if is_shapes_model(model_name) else GENERAL_MODIFIERS


_ARTICLE = re.compile(r"\b(a|an) (\w)", re.IGNORECASE)
_LEADING_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


def _articles(text: str) -> str:
    """'a' or 'an' by the next word's first letter; a phrase without a determiner gets one."""
    if not _LEADING_ARTICLE.match(text):
        text = "a " + text
    return _ARTICLE.sub(lambda m: ("an" if m.group(2).lower() in "aeiou" else "a") + " " + m.group(2), text)


def subjects(vocabulary: Vocabulary, limit: int = MAX_SUBJECTS) -> list[str]:
    """Bare subject phrases of a vocabulary: its prompts without their article ("red circle"),
    or the tag's name where it has no prompts of its own; unique, at most ``limit``."""
    seen: dict[str, None] = {}
    for tag in vocabulary.tags:
        for phrase in tag.prompts or (tag.name,):
            bare = _LEADING_ARTICLE.sub("", phrase.strip().rstrip(".")).strip()
            if bare:
                seen.setdefault(bare.lower(), None)
    found = list(seen)
    if len(found) > limit:
        found = [found[int(i)] for i in np.linspace(0, len(found) - 1, limit).round()]
    return found


def _mean_direction(embedded: np.ndarray) -> np.ndarray:
    rows = np.asarray(embedded, np.float64)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    mean = rows.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def concept_directions(
    encoder: Encoder, vocabulary: Vocabulary, modifiers: tuple[Modifier, ...]
) -> tuple[list[str], np.ndarray]:
    """(names, (concepts, dim) directions): the vocabulary's tags, then the modifiers' contrasts."""
    from mmsearch.tags.zero_shot import tag_matrix

    names = [t.name for t in vocabulary.tags]
    rows = list(np.asarray(tag_matrix(encoder, vocabulary), np.float64)[: len(vocabulary)])
    bare = subjects(vocabulary)
    if bare and modifiers:
        texts: list[str] = []
        for m in modifiers:
            texts += [_articles(m.template.format(s)) for s in bare]
            texts += [_articles(m.plain.format(s)) for s in bare]
        embedded = np.asarray(encoder.encode_texts(texts), np.float64)
        n = len(bare)
        for i, m in enumerate(modifiers):
            block = embedded[2 * i * n : 2 * (i + 1) * n]
            rows.append(_mean_direction(block[:n]) - _mean_direction(block[n:]))
            names.append(m.name if m.name not in names else f"{m.name} ({m.group})")
    return names, np.vstack(rows) if rows else np.empty((0, 0))


@dataclass(frozen=True)
class ConceptBasis:
    """Named directions and the standardisation of their cosines (see the module docstring)."""

    names: tuple[str, ...]
    directions: np.ndarray  # (concepts, dim), rows of the CLIP space
    mean: np.ndarray  # (concepts,) over the collection's reference sample
    scale: np.ndarray  # (concepts,) standard deviations there (1 where a feature is constant)

    def __len__(self) -> int:
        return len(self.names)

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """``c(x)`` for each row of ``vectors`` (CLIP vectors, normalised here)."""
        v = np.asarray(vectors, np.float64).reshape(len(vectors), -1)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return (v @ self.directions.T - self.mean) / self.scale


def standardised(names: list[str], directions: np.ndarray, reference: np.ndarray) -> ConceptBasis:
    """A basis whose features have mean 0 and variance 1 over ``reference`` (CLIP vectors)."""
    raw = ConceptBasis(tuple(names), directions, np.zeros(len(names)), np.ones(len(names)))
    if len(reference) < 2:
        return raw
    cos = raw.features(reference)
    std = cos.std(axis=0)
    return ConceptBasis(tuple(names), directions, cos.mean(axis=0), np.where(std > 1e-9, std, 1.0))


_CACHE: dict[tuple, tuple[list[str], np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()


def concept_basis(collection, encoder: Encoder, model_name: str | None = None) -> ConceptBasis | None:
    """The collection's concept basis (its tag vocabulary and the model's modifiers), standardised
    over a sample of its stored vectors; None for an empty collection."""
    from mmsearch.tags.tagger import active_vocabulary

    name = model_name or encoder.name
    vocabulary = active_vocabulary(collection.catalog, name)
    modifiers = modifiers_for(name)
    key = (name, encoder.weights_id, vocabulary.digest(), modifiers)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        cached = concept_directions(encoder, vocabulary, modifiers)
        with _CACHE_LOCK:
            _CACHE[key] = cached
    names, directions = cached
    reference = reference_vectors(collection.catalog)
    if not len(reference) or directions.shape[1:] != reference.shape[1:]:
        return None
    return standardised(names, directions, reference)


def reference_vectors(catalog, limit: int = REFERENCE_SAMPLE) -> np.ndarray:
    """Up to ``limit`` stored vectors, evenly spaced over the catalog's item ids."""
    ids = np.asarray(catalog.item_ids(), np.int64)
    if len(ids) > limit:
        ids = ids[np.linspace(0, len(ids) - 1, limit).round().astype(np.int64)]
    if not len(ids):
        return np.empty((0, 0))
    _, vectors = catalog.vectors_for(ids.tolist())
    return np.asarray(vectors, np.float64)
