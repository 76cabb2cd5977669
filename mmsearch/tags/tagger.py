"""Keep a collection's zero-shot tags level with its pictures and its vocabulary.

Run at the end of every `index` (`CollectionWriter.tag_pending`): pictures whose ids are above
the catalog's ``tags_through`` mark are tagged from their stored vectors, a batch per
transaction, so a killed run resumes where it stopped. A new vocabulary (`set_vocabulary`)
forgets every tag and tags the whole collection again, still without re-encoding a picture.
The encoder is loaded only when some picture is waiting (its text tower embeds the vocabulary).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from mmsearch.tags.vocabulary import Vocabulary, default_vocabulary, parse_vocabulary
from mmsearch.tags.zero_shot import cached_tag_matrix, choose_tags

if TYPE_CHECKING:
    from mmsearch.catalog import Catalog
    from mmsearch.models import Encoder
    from mmsearch.tags.zero_shot import ModelRecord

log = logging.getLogger(__name__)

TAG_BATCH = 4096
"""Pictures per transaction."""


def active_vocabulary(catalog: Catalog, model_name: str) -> Vocabulary:
    """The vocabulary recorded in the catalog, else the shipped default for the model."""
    text = catalog.tag_vocabulary()
    if text:
        return parse_vocabulary(text, "the collection's tag vocabulary")
    return default_vocabulary(model_name)


def tag_pending(
    catalog: Catalog, load_encoder: Callable[[], Encoder], known: ModelRecord | None = None
) -> int:
    """Tag the pictures not tagged yet; returns how many were looked at. `known`, a record of
    the model (name, weights_id, precision, device, dim), spares loading it when the tag
    vectors are cached."""
    through = catalog.tags_through()
    waiting, _ = catalog.picture_vectors_after(through, 1)
    if not len(waiting):
        return 0
    encoder = known if known is not None else load_encoder()
    vocabulary = active_vocabulary(catalog, encoder.name)
    if catalog.tag_vocabulary() is None:  # first run: record the default it was tagged with
        catalog.reset_tags(vocabulary.to_text())
        through = 0
    matrix = cached_tag_matrix(encoder, vocabulary, load=load_encoder)
    names, done = vocabulary.names, 0
    while True:
        ids, vectors = catalog.picture_vectors_after(through, TAG_BATCH)
        if not len(ids):
            break
        chosen = choose_tags(vectors, matrix, vocabulary)
        rows = [(int(i), names[t], share) for i, kept in zip(ids, chosen) for t, share in kept]
        through = int(ids[-1])
        catalog.add_tags(rows, through)
        done += len(ids)
    log.info("tagged %d pictures with %d tags", done, len(vocabulary))
    return done


def set_vocabulary(catalog: Catalog, load_encoder: Callable[[], Encoder], vocabulary: Vocabulary) -> int:
    """Use `vocabulary` from now on and tag every picture again (from stored vectors)."""
    catalog.reset_tags(vocabulary.to_text())
    return tag_pending(catalog, load_encoder)
