"""The `Engine` facade: index folders and search them, for programs, the CLI and the HTTP API.

    from mmsearch import Engine
    with Engine(home="~/my-index", model="tiny") as engine:
        engine.index(["~/photos"])
        for hit in engine.search("a red car", k=5):
            print(hit.rank, hit.score, hit.path)

The engine holds no query logic: it builds a `Query` (`mmsearch.query.model`), runs the stages
(`mmsearch.query.stages`) against its `Collection` (`mmsearch.store`), and returns typed results.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch import paths
from mmsearch.errors import ConfigError, MissingDependencyError, QueryError
from mmsearch.query.model import Filters, Query, Term
from mmsearch.query.stages import SearchContext, count_matches, run_query
from mmsearch.results import CollectionStatus, FolderStatus, SearchResults
from mmsearch.store import Collection

if TYPE_CHECKING:

    from indexer.pipeline import ExpectedEncoder, IndexOptions, IndexSummary, ProgressReporter
    from mmsearch.catalog import FeedbackEvent
    from mmsearch.duplicates import DuplicateGroup
    from mmsearch.models import Encoder
    from mmsearch.models.sentence import TextEncoder
    from mmsearch.models.text_onnx import QueryEncoder
    from mmsearch.query.stages import Stage
    from mmsearch.tags.vocabulary import Vocabulary

log = logging.getLogger(__name__)

TEXT_MODEL_OFF = "none"
ITM_OFF = "none"
"""`itm` value that turns the image-text matching reranker off."""
"""`text_model` value that turns the sentence model off (CLIP + keywords only)."""

ImageInput = "str | os.PathLike[str] | bytes | Image.Image"


class Engine:
    """One collection home and its encoder; opens lazily, safe to use as a context manager."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        model: str | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        index_kind: str | None = None,
        catalog_url: str | None = None,
        vector_store: str | None = None,
        text_model: str | os.PathLike[str] | None = None,
        cross_encoder: str | None = None,
        itm: str | None = None,
    ) -> None:
        self.home = paths.data_home(home)
        self._cross_encoder_name = cross_encoder  # None: $MMSEARCH_CROSS_ENCODER, else off
        self._itm_name = itm  # None: $MMSEARCH_ITM, else the encoder's companion; "none": off
        self._rerankers: dict[str, Stage | None] = {}
        self._unavailable: dict[str, str] = {}  # reranker -> why it cannot run here
        self._profiles: dict[str, tuple] = {}  # user -> ((user, events, generation), Profile)
        self.device = device
        self.precision = precision  # "auto": fp16 on CUDA; big models: bf16 on a bf16 CPU, else int8 ViT
        self._index_kind = index_kind  # None: the kind saved in the home (default auto)
        self._catalog_url = catalog_url
        self._vector_store = vector_store
        self._requested_model = model
        self._text_model = text_model  # None: the home's, else the bundled MiniLM; "none": off
        self._collection: Collection | None = None
        self._encoder: Encoder | None = None
        self._query_encoder_: QueryEncoder | None = None
        self._text_encoder: TextEncoder | None = None
        self._context: SearchContext | None = None
        self._loading = threading.RLock()  # one thread loads a model; the others wait for it

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the catalog connection; the engine can be reopened by using it again."""
        if self._collection is not None:
            self._collection.close()
        self._collection, self._context = None, None

    @property
    def collection(self) -> Collection:
        """The collection (opened on first use); readers only read it, `index` writes it."""
        return self._open(create=False)

    def _open(self, create: bool) -> Collection:
        with self._loading:
            return self._open_locked(create)

    def _open_locked(self, create: bool) -> Collection:
        if self._collection is None:
            self._collection = Collection(
                self.home,
                create=create,
                catalog_url=self._catalog_url,
                index_kind=self._index_kind,
                vector_store=self._vector_store,
            )
        return self._collection

    def _exists(self) -> bool:
        from mmsearch.catalog import location

        # a URL given, in $MMSEARCH_CATALOG or recorded in the home, or the home's catalog.db
        return location.configured(self.home, self._catalog_url)

    @property
    def model_name(self) -> str:
        """The encoder this engine uses: the one asked for, else the collection's, else the default."""
        from mmsearch.models import DEFAULT_MODEL, resolve

        bound = self._open(create=False).encoder_name() if self._exists() else None
        if self._requested_model is None:
            return bound or DEFAULT_MODEL
        name = resolve(self._requested_model).name
        if bound is not None:
            self._open(create=True).check_encoder(name)
        return name

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, loaded on first use (so `status` never loads a model)."""
        with self._loading:
            if self._encoder is None:
                from mmsearch.models import load_encoder

                encoder = load_encoder(
                    self.model_name, device=self.device, precision=self.precision, lazy=True
                ).load_image_tower()  # the rest of the model loads when first needed
                if self._exists():
                    self._open(create=False).check_weights(encoder.name, encoder.weights_id)
                self._encoder = encoder
        return self._encoder

    @property
    def text_encoder(self) -> TextEncoder | None:
        """The sentence model for passages (loaded when first used), or None when turned off."""
        choice = self._text_model
        if choice is not None and str(choice).lower() == TEXT_MODEL_OFF:
            return None
        with self._loading:
            if self._text_encoder is None:
                from mmsearch.models.sentence import TextEncoder

                if choice is None and self._exists():
                    choice = self._open(create=False).text_model_name()
                self._text_encoder = TextEncoder(choice, device=self.device)
        return self._text_encoder

    def _query_text_encoder(self) -> TextEncoder | None:
        """The sentence model for a query, or None (off, or not installed: said once)."""
        encoder = self.text_encoder
        if encoder is None:
            return None
        try:
            _ = encoder.dim  # loads it, so a missing package is found here
        except MissingDependencyError as exc:
            if self._text_model is not None:
                raise
            log.warning("passage matching with a sentence model is off: %s", exc)
            self._text_model = TEXT_MODEL_OFF
            return None
        return encoder

    # ------------------------------------------------------------------ write path

    def index(
        self,
        folders: Iterable[str | os.PathLike[str]],
        *,
        options: IndexOptions | None = None,
        progress: ProgressReporter | None = None,
    ) -> IndexSummary:
        """Index (or re-index incrementally) folders or files; returns what changed and what was skipped.

        The model is loaded only when some file needs encoding.
        """
        from indexer.pipeline import IndexOptions, run_index

        if isinstance(folders, str | os.PathLike):  # one folder, not its letters
            folders = [folders]
        if options is not None and not isinstance(options, IndexOptions):
            raise ConfigError(
                f"options is an IndexOptions (from mmsearch import IndexOptions), not {type(options).__name__}."
            )
        roots = [Path(p).expanduser() for p in folders]
        if not roots:
            raise ConfigError("Nothing to index: give at least one folder or file.")
        for root in roots:
            if not root.exists():
                raise ConfigError(f"Cannot index {root}: no such file or folder.")
        _ = self.model_name  # refuses another model before any work, without loading it
        collection = self._open(create=True)
        with collection.writer(self.text_encoder) as writer:
            summary = run_index(
                writer,
                lambda: self.encoder,
                roots,
                options or IndexOptions(),
                progress,
                expected=self._expected_encoder(),
            )
        if self._encoder is not None and self._encoder.loaded:  # while the model is in memory
            self._export_for_queries()
        return summary

    def _expected_encoder(self) -> ExpectedEncoder:
        """The encoder as known without loading it, its input where its JSON tells (decoding,
        and Ray's actors, can then start while the model loads)."""
        from indexer.pipeline import ExpectedEncoder
        from mmsearch.models import resolve
        from mmsearch.models.openclip_loader import expected_preprocess

        spec = resolve(self.model_name)
        return ExpectedEncoder(spec, self.precision, expected_preprocess(spec), self.device)

    def _export_for_queries(self) -> None:
        """Export what a text search runs (the text tower, the ITM reranker) once per checkpoint,
        so searches need no torch (`mmsearch.models.text_onnx`, `mmsearch.models.itm_onnx`), and
        trace the image tower, so index runs need no open_clip (`mmsearch.models.image_trace`)."""
        from mmsearch.errors import MmsearchError
        from mmsearch.models.image_trace import save_traced
        from mmsearch.models.text_onnx import export_text_tower

        export_text_tower(self.encoder)
        save_traced(self.encoder)  # the next index run loads only this (`image_trace`)
        try:
            self._reranker("itm")  # loading it exports it
        except MmsearchError as exc:  # an unusable ITM model is reported when a search asks for it
            log.debug("the itm reranker was not prepared: %s", exc)

    def rebuild(self, kind: str | None = None) -> int:
        """Rebuild the vector index from the catalog's stored vectors (saved as the home's kind)."""
        return self._open(create=False).rebuild(kind).count

    # ------------------------------------------------------------------ read path

    def search(
        self,
        query: str | Query | Sequence[Term] | None = None,
        k: int = 10,
        *,
        image: ImageInput | None = None,
        like: int | str | os.PathLike[str] | None = None,
        types: Sequence[str] | None = None,
        filters: Filters | None = None,
        group: bool = True,
        **options: Any,
    ) -> SearchResults:
        """Top-k results for a text, picture, item or compound query.

        ``query`` is a sentence, a `Query`, or a list of `Term`s; ``image`` and ``like`` add a
        picture and an indexed item (its id, or the path of an indexed file) as positive terms.
        ``options`` are `Query` fields: ``offset``, ``sort``, ``cutoff``, ``min_score``, ...
        """
        q = self.build_query(
            query, k, image=image, like=like, types=types, filters=filters, group=group, **options
        )
        return run_query(q, self._search_context())

    def count(self, query: str | Query | Sequence[Term], min_score: float, **kw: Any) -> int:
        """How many items score at least ``min_score`` for a query (CLIP cosine, within filters)."""
        q = self.build_query(query, 1, min_score=min_score, **kw)
        return count_matches(q, self._search_context())

    def build_query(
        self,
        query: str | Query | Sequence[Term] | None = None,
        k: int = 10,
        *,
        image: ImageInput | None = None,
        like: int | str | os.PathLike[str] | Sequence[int | str] | None = None,
        types: Sequence[str] | None = None,
        filters: Filters | None = None,
        **options: Any,
    ) -> Query:
        """The `Query` the other arguments describe (the same rules on every face)."""
        if isinstance(query, Query):
            return query
        terms: list[Term] = []
        if isinstance(query, str):
            terms.append(Term("text", query))
        elif query is not None:
            if not isinstance(query, list | tuple) or not all(isinstance(t, Term) for t in query):
                raise QueryError(
                    f"A query is a text, a Query or a list of Terms, not {type(query).__name__}."
                )
            terms.extend(query)
        if image is not None:
            terms.append(Term("image", image))
        if like is not None:
            likes = like if isinstance(like, list | tuple) else [like]
            terms.extend(_like_term(x) for x in likes)
        filters = filters or Filters()
        if types:
            filters = Filters(**{**filters.__dict__, "types": types})  # one string: one type
        known = {f.name for f in dataclass_fields(Query)} - {"terms", "filters", "k"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise QueryError(f"Unknown search option {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return Query(tuple(terms), filters, k=k, **options)

    def _search_context(self) -> SearchContext:
        collection = self._open(create=False)
        if collection.encoder_name() is None:
            raise ConfigError(
                f"The collection at {self.home} is empty: index a folder first (mmsearch index PATH)."
            )
        _ = self.model_name  # EncoderMismatchError for another model
        with self._loading:
            if self._context is None or self._context.collection is not collection:
                self._context = SearchContext(
                    collection,
                    self._query_encoder,
                    self._query_text_encoder,
                    reranker=self._reranker,
                    default_rerank=self._default_rerank(),
                    personalizer=self._personalizer,
                    unavailable=lambda name: self._unavailable.get(name, ""),
                )
            return self._context

    def _query_encoder(self) -> QueryEncoder:
        """What searches embed with: texts through the exported text tower (no torch) when the
        collection's checkpoint has one, pictures through `encoder` (`mmsearch.models.text_onnx`)."""
        with self._loading:
            if self._query_encoder_ is None:
                from mmsearch.models.text_onnx import QueryEncoder

                weights = self._open(create=False).catalog.encoder_weights()
                self._query_encoder_ = QueryEncoder(self.model_name, weights, lambda: self.encoder)
            return self._query_encoder_

    def warm(self) -> None:
        """Load what a text search needs now (the exported text tower, else the encoder; the
        default rerankers), so the first search does not pay for it."""
        encoder = self._query_encoder()
        encoder.prepack = True  # many queries to come: faster passes for a slower start
        if encoder.text_tower() is None:
            _ = self.encoder
        self._default_rerank()

    def _personalizer(self, query: Query) -> Stage | None:
        """The query user's personal reranker, or None (no user, or no feedback from them)."""
        if not query.user:
            return None
        from mmsearch.query.personal import PersonalStage, profile_for

        collection = self._open(create=False)
        count = collection.catalog.feedback_count(query.user)
        if not count:
            return None
        key = (query.user, count, collection.catalog.generation())
        with self._loading:
            cached = self._profiles.get(query.user)
            if cached is None or cached[0] != key:
                cached = (key, profile_for(query.user, collection, self._query_encoder))
                self._profiles[query.user] = cached
        profile = cached[1]
        return PersonalStage(query.user, profile) if profile is not None else None

    # ------------------------------------------------------------------ tags

    def tags(self) -> list[tuple[str, int]]:
        """(tag, pictures carrying it), most common first."""
        return self._open(create=False).catalog.tag_counts()

    def tag_vocabulary(self) -> Vocabulary:
        """The vocabulary the collection is tagged with (the model's default before any run)."""
        from mmsearch.tags.tagger import active_vocabulary

        return active_vocabulary(self._open(create=False).catalog, self.model_name)

    def use_tag_vocabulary(
        self, vocabulary: Vocabulary | str | os.PathLike[str], *, extend: bool = False
    ) -> int:
        """Tag with another vocabulary (a `Vocabulary` or a file), or add it to the current one
        (`extend`); every picture is tagged again from its stored vector, none is re-encoded.
        Returns the pictures tagged."""
        from mmsearch.tags.vocabulary import Vocabulary, load_vocabulary

        chosen = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
        if extend:
            chosen = self.tag_vocabulary().extended(chosen)
        collection = self._open(create=False)
        with collection.writer(None) as writer:
            return writer.set_tag_vocabulary(chosen, lambda: self.encoder)

    def add_tags(self, names: Sequence[str], *, group: str | None = None, prompts: Sequence[str] = ()) -> int:
        """Add tags (read through the prompt templates, or `prompts`) and re-tag."""
        from mmsearch.tags.vocabulary import DEFAULT_GROUP, Vocabulary, make_tag

        new = Vocabulary(tuple(make_tag(n, group or DEFAULT_GROUP, prompts) for n in names))
        return self.use_tag_vocabulary(new, extend=True)

    def remove_tags(self, names: Sequence[str]) -> int:
        """Drop tags from the vocabulary and re-tag."""
        from mmsearch.tags.vocabulary import make_tag

        clean = [make_tag(n).name for n in names]
        return self.use_tag_vocabulary(self.tag_vocabulary().without(clean))

    # ------------------------------------------------------------------ feedback

    def feedback(
        self, item: int | str | os.PathLike[str], good: bool, *, user: str | None = None,
        query: str | None = None,
    ) -> FeedbackEvent:
        """Record 👍 (good) or 👎 for an item (an id, or an indexed file's path) for one user."""
        collection = self._open(create=False)
        item_id = self._item_id(item)
        return collection.record_feedback(user or default_user(), item_id, good, query)

    def profile(self, user: str | None = None) -> dict:
        """What was learned for a user: the events (resolved to today's files) and the model."""
        from mmsearch.query.personal import profile_for

        user = user or default_user()
        collection = self._open(create=False)
        events = collection.catalog.feedback_events(user)
        learned = profile_for(user, collection, lambda: self.encoder)
        return {
            "user": user,
            "events": [e._asdict() for e in events],
            "good": sum(e.label > 0 for e in events),
            "bad": sum(e.label < 0 for e in events),
            "unresolved": sum(e.item_id is None for e in events),
            "model": learned.to_dict() if learned is not None else None,
        }

    def reset_profile(self, user: str | None = None) -> int:
        """Forget one user's feedback; returns how many judgements were removed."""
        return self._open(create=False).catalog.reset_feedback(user or default_user())

    def _item_id(self, item: int | str | os.PathLike[str]) -> int:
        if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            return int(item)
        found = self._open(create=False).catalog.item_ids_of_paths([Path(item).expanduser()])
        if not found:
            raise QueryError(f"{item} is not an indexed file; give an item id from a result or an indexed path.")
        return next(iter(found.values()))[0]

    def _default_rerank(self) -> tuple[str, ...]:
        """Image-text matching when the model has a companion for it, then diversity."""
        return (("itm",) if self._reranker("itm") is not None else ()) + ("mmr",)

    def _reranker(self, name: str) -> Stage | None:
        """A reranker by name, made once; None when it cannot run here (said once in the log)."""
        with self._loading:
            if name not in self._rerankers:
                self._rerankers[name] = self._make_reranker(name)
            return self._rerankers[name]

    def _make_reranker(self, name: str) -> Stage | None:
        from mmsearch.query import rerank

        if name == "mmr":
            return rerank.MmrStage()
        if name == "cross-encoder":
            from mmsearch.models.cross_encoder import load_cross_encoder

            return rerank.CrossEncoderStage(load_cross_encoder(self._cross_encoder_name, self.device))
        if name == "itm":
            model = self._itm_model()
            return rerank.ItmStage(model) if model is not None else None
        return None

    def _asked_itm(self) -> str | None:
        """The ITM model named by `Engine(itm=)` or $MMSEARCH_ITM (``ITM_OFF`` turns it off)."""
        asked = (self._itm_name or os.environ.get("MMSEARCH_ITM") or "").strip()
        return ITM_OFF if asked.lower() == ITM_OFF else asked or None

    def _itm_model(self) -> Any:
        """The image-text matching model asked for, else the encoder's companion, else None."""
        from mmsearch.errors import ModelError
        from mmsearch.models.itm import itm_for_encoder
        from mmsearch.models.itm_onnx import load_itm_for_search

        asked = self._asked_itm()
        if asked == ITM_OFF:
            self._unavailable["itm"] = "it is turned off (itm=none)"
            return None
        name = asked or itm_for_encoder(self.model_name)
        if name is None:
            self._unavailable["itm"] = (
                f"the model {self.model_name!r} has no image-text matching companion; name one "
                "with --itm-model (e.g. Salesforce/blip-itm-base-coco)"
            )
            return None
        try:
            model = load_itm_for_search(name, device=self.device if self.device != "auto" else "cpu")
        except ModelError as exc:  # missing or damaged weights: search still works without it
            if asked is not None:
                raise
            log.warning("the itm reranker is off: %s", exc)
            self._unavailable["itm"] = str(exc)
            return None
        reads = getattr(model, "encoder", None)
        if model.input == "patches" and reads != self.model_name:
            raise ConfigError(
                f"The ITM model {name!r} reads the patch features of {reads!r}, but this "
                f"collection was indexed with {self.model_name!r}."
            )
        return model

    def duplicates(
        self, threshold: float = 0.95, types: Sequence[str] = ("image",)
    ) -> list[DuplicateGroup]:
        """Groups of near-identical files (bursts, re-encodes, resized copies), largest first."""
        from mmsearch.duplicates import find_duplicates

        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise QueryError(f"The threshold is a cosine similarity (a number), not {threshold!r}.")
        collection = self._open(create=False)
        collection.refresh()
        kinds = frozenset((types,) if isinstance(types, str) else types)
        return find_duplicates(collection, threshold=threshold, types=kinds)

    # ------------------------------------------------------------------ status

    def status(self) -> CollectionStatus:
        """Model, folders, counts by kind, index type and disk use, without loading any model."""
        collection = self._open(create=False)
        info = collection.catalog.encoder()
        sidecar = collection.index_info() or {}
        return CollectionStatus(
            home=str(self.home),
            model=info.name if info else None,
            dim=info.dim if info else None,
            folders=[FolderStatus(f.path, f.added_at) for f in collection.catalog.list_folders()],
            assets_by_kind=collection.catalog.asset_counts(),
            items_by_kind=collection.catalog.item_counts(),
            index_kind=sidecar.get("kind"),
            index_count=sidecar.get("count"),
            disk_bytes=collection.disk_bytes(),
            catalog_health=collection.catalog.integrity(),
            index_state=collection.index_state(sidecar),
            **self._patch_status(info.name if info else None),
        )

    def _patch_status(self, model: str | None) -> dict[str, Any]:
        """Patch features stored and the default ITM model, by name only (no model is loaded)."""
        from mmsearch.models.itm import itm_for_encoder
        from mmsearch.models.patches import bytes_per_item

        catalog = self._open(create=False).catalog
        stored, missing = catalog.patch_counts()
        shape = catalog.patch_shape()
        asked = self._asked_itm()
        return {
            "patches_stored": stored,
            "patches_missing": missing,
            "patch_bytes_per_item": bytes_per_item(shape) if shape else None,
            "itm": None if asked == ITM_OFF else asked or itm_for_encoder(model or ""),
        }


def default_user() -> str:
    """Whose feedback personalises results when no user is named: the operating-system user."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "default"


def _like_term(like: int | str | os.PathLike[str]) -> Term:
    """`--like`: an item id, or the path of an indexed file (its stored vectors)."""
    if isinstance(like, int) or (isinstance(like, str) and like.strip().isdigit()):
        return Term("item", int(like))
    return Term("image", like)
