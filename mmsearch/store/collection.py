"""A collection home: the ONLY writer of the catalog, the CLIP vector store and the passage store.

Layout of a home with the embedded backends:

    <home>/catalog.db             SQLite catalog: folders, assets, items with their vectors (truth)
    <home>/index/vectors.idx      the CLIP vector store (+ .json sidecar), derived and rebuildable
    <home>/index/text.idx         the passage store (sentence-model vectors), derived and rebuildable
    <home>/writer.lock            the single-writer lock
    <home>/catalog_url            (instead of catalog.db) the URL of a PostgreSQL catalog, no password

With a PostgreSQL catalog (`--catalog postgresql://...`, `$MMSEARCH_CATALOG`) several machines
can share one catalog, each with a home of its own for the derived stores; the writer lock is
then also a PostgreSQL advisory lock, so one writer at a time holds across machines.

Writers go through `Collection.writer()`, which takes the lock, validates every vector before
anything is committed, commits catalog rows first and then applies the same change to the
stores, and flushes the stores atomically. A crash between a commit and a flush leaves a store
behind the catalog, never ahead of it; `refresh` (readers) and `writer` (the next run) bring it
level from the catalog's stored vectors. Readers never write: they only mirror committed data,
and learn whether anything changed from the catalog's write generation (one row lookup).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.catalog import PASSAGE_KINDS, ItemData
from mmsearch.catalog.guard import database_errors
from mmsearch.errors import (
    CatalogError,
    ConfigError,
    EncoderMismatchError,
    InvalidVectorError,
    MissingDependencyError,
)
from mmsearch.store.protocols import VectorStore
from mmsearch.store.registry import (
    DEFAULT_VECTOR_STORE,
    checked_scheme,
    open_vector_store,
    same_store,
)
from mmsearch.store.rwlock import ReadWriteLock
from mmsearch.vectors import INDEX_KINDS

if TYPE_CHECKING:
    from mmsearch.catalog import AssetInfo, UpsertResult
    from mmsearch.models import Encoder
    from mmsearch.models.sentence import TextEncoder
    from mmsearch.tags.vocabulary import Vocabulary
    from mmsearch.tags.zero_shot import ModelRecord

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.db"
WRITER_LOCK_FILE = "writer.lock"
CLIP_STORE = "vectors"
TEXT_STORE = "text"
INDEX_KIND_KEY = "index_kind"  # meta: the user's index kind ("auto" unless chosen)
VECTOR_STORE_KEY = "vector_store"  # meta: which vector store backend holds the vectors
VECTOR_STORE_ENV = "MMSEARCH_VECTORS"  # the store to use when none is given (then recorded)
TEXT_MODEL_KEY = "text_model"  # meta: the sentence model that embedded the passages
SYNC_BATCH = 8192
BACKFILL_BATCH = 256  # passages embedded per transaction when catching up


@dataclass(frozen=True)
class SyncReport:
    """How far a store was behind the catalog."""

    added: int
    removed: int


class Collection:
    """One home: opens the catalog, binds the encoder, and owns every write to it."""

    def __init__(
        self,
        home: Path,
        *,
        create: bool = True,
        catalog_url: str | None = None,
        index_kind: str | None = None,
        vector_store: str | None = None,
    ) -> None:
        from mmsearch.catalog import location

        self.home = Path(home)
        catalog_url = location.resolve(self.home, catalog_url)
        if not create and catalog_url is None and not (self.home / CATALOG_FILE).exists():
            raise ConfigError(
                f"No mmsearch collection at {self.home}. Index a folder first: "
                f"mmsearch index PATH (or pass --home / set MMSEARCH_HOME to another home)."
            )
        if index_kind is not None and index_kind not in INDEX_KINDS:
            raise ConfigError(
                f"Unknown vector index kind {index_kind!r}; choose one of: {', '.join(INDEX_KINDS)}."
            )
        self._requested_store = vector_store or os.environ.get(VECTOR_STORE_ENV) or None
        if self._requested_store is not None:
            checked_scheme(self._requested_store)  # before anything is created or recorded
        self.home.mkdir(parents=True, exist_ok=True)
        self.catalog = _open_catalog(self.home, catalog_url, create)
        if catalog_url is not None:
            try:
                location.record(self.home, catalog_url)
            except BaseException:
                self.catalog.close()
                raise
        self.catalog_url = catalog_url  # None: the SQLite file in the home
        self._requested_kind = index_kind
        self._vectors: VectorStore | None = None
        self._passages: VectorStore | None = None
        self._seen_generation: int | None = None  # the catalog generation the stores mirror
        self._derived: dict[object, object] = {}  # `derived` values, for `_derived_at`
        self._derived_at: int | None = None
        self._lock = ReadWriteLock()  # searches read the stores; catching up writes them

    def close(self) -> None:
        self.catalog.close()
        for store in (self._vectors, self._passages):
            _close_store(store)
        self._vectors = self._passages = None
        self._seen_generation = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ settings
    @property
    def index_kind(self) -> str:
        """The kind the user chose for this home (saved by `index`/`rebuild`), else ``auto``."""
        return self._requested_kind or self.catalog.get_meta(INDEX_KIND_KEY) or "auto"

    @property
    def vector_store_spec(self) -> str | None:
        return self._requested_store or self.catalog.get_meta(VECTOR_STORE_KEY)

    def _recorded_store_if_other_asked(self) -> str | None:
        """The recorded store's spec when another one is asked for (a flag, or
        ``$MMSEARCH_VECTORS``), else None."""
        requested = self._requested_store
        recorded = self.catalog.get_meta(VECTOR_STORE_KEY) or DEFAULT_VECTOR_STORE
        if requested is None or same_store(requested, recorded, self.home):
            return None
        return recorded

    def _check_store_to_read(self) -> None:
        """Readers search the store the collection's writer recorded. Another one asked for (a
        flag, or ``$MMSEARCH_VECTORS`` left set from another collection) is refused: it would be
        searched empty, or created on a shared server. ``index --vectors`` moves a collection."""
        recorded = self._recorded_store_if_other_asked()
        if recorded is not None:
            requested = self._requested_store
            raise ConfigError(
                f"The collection at {self.home} keeps its vectors in {recorded}, not "
                f"{requested} (from --vectors or ${VECTOR_STORE_ENV}). Search without it, or move "
                f"the vectors there first: mmsearch index PATH --vectors {requested}."
            )

    def text_model_name(self) -> str | None:
        """The sentence model the passages were embedded with, or None (none yet, or off)."""
        return self.catalog.get_meta(TEXT_MODEL_KEY)

    # ------------------------------------------------------- encoder binding
    def encoder_name(self) -> str | None:
        """The encoder this collection was built with, or None for a new, empty collection."""
        info = self._derived.get("encoder") if self._derived_at == self._seen_generation else None
        if info is None:
            info = self.catalog.encoder()
            if info is not None:  # bound once for good; an empty answer may change without a write
                self.derived("encoder", lambda: info)
        return info.name if info else None

    def derived(self, key: object, compute: Callable[[], Any]) -> Any:
        """A value computed from the catalog, kept until the next committed write that `refresh`
        sees (each write bumps the generation): a search asks the same questions each time
        (the encoder, whether there are passages) and they cost a SQL round trip each."""
        if self._seen_generation is None:
            return compute()
        if self._derived_at != self._seen_generation:
            self._derived, self._derived_at = {}, self._seen_generation
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def check_weights(self, name: str, weights: str) -> None:
        """Refuse to search with a checkpoint other than the one the vectors were made with."""
        from mmsearch.catalog.store import weights_mismatch

        recorded = self.catalog.encoder_weights()
        if recorded is not None and recorded != weights:
            raise weights_mismatch(name, recorded, weights, str(self.home))

    def check_encoder(self, name: str) -> None:
        bound = self.encoder_name()
        if bound is not None and bound != name:
            raise EncoderMismatchError(
                f"This collection ({self.home}) was indexed with the encoder '{bound}', not '{name}'. "
                f"Use --model {bound}, or index into a new home (--home PATH) to use '{name}'."
            )

    # ------------------------------------------------------------- reading
    def refresh(self) -> int:
        """Mirror the committed catalog in memory (nothing is written); returns its generation.

        Costs one row lookup when nothing changed since the last call. Thread-safe: catching up
        waits for searches in `reading()` to finish and holds new ones back meanwhile.
        """
        generation = self.catalog.generation()
        if generation == self._seen_generation and self._vectors is not None:
            return generation
        with self._lock.writing():
            if generation == self._seen_generation and self._vectors is not None:
                return generation  # another thread caught up meanwhile
            return self._catch_up(generation)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the in-memory stores steady while searching them (many readers at once)."""
        with self._lock.reading():
            yield

    def _catch_up(self, generation: int) -> int:
        info = self.catalog.encoder()
        if info is None:
            raise ConfigError(
                f"The collection at {self.home} is empty: index a folder first (mmsearch index PATH)."
            )
        if self._vectors is None:
            self._check_store_to_read()
            self._vectors = self._open_store(CLIP_STORE, info.dim, info.name)
        if not is_shared(self._vectors) and not _saved_level_with(self._vectors, generation):
            sync_store(self._vectors, self.catalog.item_ids(), self.catalog.vectors_for)
        self._passages = self._refresh_passages(self._passages, reader=True)
        self._seen_generation = generation
        self._save_if_free()
        return generation

    def _save_if_free(self) -> None:
        """A reader that had to bring a saved store level saves it, when no writer is at work,
        so the next process starts level instead of catching up again (under the writer lock)."""
        stores = [
            s
            for s in (self._vectors, self._passages)
            if getattr(s, "dirty", False) or _records_level(s, self._seen_generation)
        ]
        if not stores:
            return
        try:
            with self._writer_lock(catalog=False), database_errors(str(self.home)):
                for store in stores:
                    # what this reader caught up to, not the catalog's generation now: a writer
                    # may have committed since, and the file must not claim its changes
                    store.flush(generation=self._seen_generation)
        except ConfigError:  # a writer holds the lock: it saves when it finishes
            return
        except (CatalogError, OSError) as exc:
            log.warning("could not save the caught-up vector index: %s", exc)

    @property
    def vectors(self) -> VectorStore:
        """The CLIP vector store, level with the catalog as of the last `refresh`."""
        if self._vectors is None:
            self.refresh()
        assert self._vectors is not None
        return self._vectors

    @property
    def passages(self) -> VectorStore | None:
        """The passage store (sentence-model vectors), or None when no passage has one."""
        if self._vectors is None:
            self.refresh()
        return self._passages

    def _refresh_passages(
        self, store: VectorStore | None, *, reader: bool = False
    ) -> VectorStore | None:
        model = self.text_model_name()
        if model is None:  # no passage was ever embedded: no scan of the items for their ids
            return None
        ids = self.catalog.text_vector_ids()
        if not len(ids):
            return None
        if store is None:
            found, first = self.catalog.text_vectors_for(ids[:1])
            store = self._open_store(TEXT_STORE, first.shape[1], model, kind="flat")
        if not (reader and is_shared(store)):
            sync_store(store, ids, self.catalog.text_vectors_for)
        return store

    def patches(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored patch features of these items: (ids that have them, float16 (n, P, D))."""
        return self.catalog.patches_for(ids)

    def _open_store(
        self, name: str, dim: int, encoder: str, kind: str | None = None
    ) -> VectorStore:
        return open_vector_store(
            self.vector_store_spec,
            home=self.home,
            name=name,
            dim=dim,
            encoder=encoder,
            preference=kind or self.index_kind,
            owner=self.catalog.collection_id(),
        )

    # ------------------------------------------------------------- writing
    @contextmanager
    def writer(self, text_encoder: TextEncoder | None = None) -> Iterator[CollectionWriter]:
        """The one way to change the collection: under the single-writer lock, flushed at the end.

        ``text_encoder`` embeds passages as they are written (None: passages get no sentence
        vector, and keyword and CLIP matching still work).
        """
        with self._writer_lock():
            writer = CollectionWriter(self, text_encoder)
            try:
                writer.open()
                yield writer
            except BaseException:
                writer.flush_quietly()  # the catalog is committed; stores catch up next time
                raise
            else:
                writer.finish()
            finally:
                self._seen_generation = None  # readers in this process re-mirror

    def rebuild(self, kind: str | None = None) -> VectorStore:
        """Rebuild the CLIP store from the catalog's vectors (no re-encoding), as ``kind``."""
        if kind is not None:
            if kind not in INDEX_KINDS:
                raise ConfigError(
                    f"Unknown vector index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}."
                )
            self._requested_kind = kind
        with self.writer() as writer:
            writer.rebuild_vectors()
        return self.vectors

    @contextmanager
    def _writer_lock(self, *, catalog: bool = True) -> Iterator[None]:
        """Hold the home's single-writer lock; another writer is refused with a message.

        An OS file lock (flock) is released by the kernel when its process dies, so a killed run
        never leaves the home locked. ``catalog``: with a PostgreSQL catalog, also its advisory
        lock (a reader saving its home's own stores needs only the flock).
        """
        try:
            import fcntl
        except ImportError:  # no flock on this platform: only the catalog's lock
            with self._catalog_writer_lock(catalog):
                yield
            return
        path = self.home / WRITER_LOCK_FILE
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"Another `mmsearch index` ({holder}) is writing to {self.home}. Wait for it to "
                    f"finish, or index into another home (--home PATH). Searching works meanwhile."
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                with self._catalog_writer_lock(catalog):
                    yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _catalog_writer_lock(self, wanted: bool = True) -> Iterator[None]:
        """On PostgreSQL, also the catalog's advisory lock: writers on other machines share the
        catalog but not this home's flock. SQLite catalogs live in the home: the flock suffices."""
        if not wanted or not self.catalog.is_postgresql:
            yield
            return
        from mmsearch.catalog.locks import WriterBusy, writer_lock

        try:
            with database_errors(self.catalog.where), writer_lock(
                self.catalog.engine, self.catalog.collection_id()
            ):
                yield
        except WriterBusy as busy:
            raise ConfigError(
                f"Another `mmsearch index` ({busy.holder}) is writing to the catalog at "
                f"{self.catalog.where}. Wait for it to finish, or index into another catalog "
                "(--home PATH --catalog URL). Searching works meanwhile."
            ) from None

    # -------------------------------------------------------------- feedback
    def record_feedback(self, user: str, item_id: int, good: bool, query: str | None = None):
        """Store one user's judgement of a result (a catalog row; the stores are untouched)."""
        return self.catalog.add_feedback(user, item_id, 1 if good else -1, query)

    # ---------------------------------------------------------------- status
    def index_info(self) -> dict | None:
        """The saved CLIP index's sidecar, for status pages (a store other than the file store
        describes itself: ``info()``, read from the store)."""
        from mmsearch.errors import VectorIndexError
        from mmsearch.vectors import read_sidecar

        self._check_store_to_read()
        spec = self.vector_store_spec
        if spec and spec != DEFAULT_VECTOR_STORE:
            info = self.catalog.encoder()
            if info is None:
                return None
            if self._vectors is None:
                self._vectors = self._open_store(CLIP_STORE, info.dim, info.name)
            describe = getattr(self._vectors, "info", None)
            return describe() if describe else None
        path = self.home / "index" / f"{CLIP_STORE}.idx"
        if not path.exists():
            return None
        try:
            return read_sidecar(path)
        except VectorIndexError:
            return None

    def index_state(self, sidecar: dict | None = None) -> str:
        """How the saved CLIP index stands against the catalog, read from its sidecar alone:
        "level", "behind" (a search or index run catches it up and saves it), "missing"
        (rebuilt from the catalog when needed) or "foreign" (another home's; it will be rebuilt)."""
        sidecar = self.index_info() if sidecar is None else sidecar
        if not sidecar:
            return "missing" if self.encoder_name() else "level"
        owner = sidecar.get("owner") or {}
        mine = self.catalog.collection_id()
        if owner.get("collection") and mine and owner["collection"] != mine:
            return "foreign"
        if owner.get("generation") == self.catalog.generation():
            return "level"
        count = sum(self.catalog.item_counts().values())
        return "level" if sidecar.get("count") == count and not owner else "behind"

    def disk_bytes(self) -> int:
        """Bytes used by the home (catalog, WAL, index files)."""
        total = 0
        for root, _dirs, files in os.walk(self.home):
            for name in files:
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass
        return total


class CollectionWriter:
    """Writes one batch of changes at a time: catalog first, then the stores; flushed on schedule."""

    def __init__(self, collection: Collection, text_encoder: TextEncoder | None) -> None:
        self.collection = collection
        self.catalog = collection.catalog
        self.text_encoder = text_encoder
        self.vectors: VectorStore | None = None
        self.passages: VectorStore | None = None
        self.behind = False  # a store was missing or behind the catalog when opened
        self.last_flush = time.monotonic()
        self.flush_cost = 0.0

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Load the stores level with the catalog; record the user's index kind."""
        c = self.collection
        sweep_temporaries(c.home / "index")
        if c._requested_kind and c._requested_kind != self.catalog.get_meta(INDEX_KIND_KEY):
            self.catalog.set_meta(INDEX_KIND_KEY, c._requested_kind)
        if self.text_encoder is not None:
            recorded = c.text_model_name()
            if recorded != self.text_encoder.name:
                if recorded is not None:
                    log.warning(
                        "passages were embedded with %s; re-embedding them with %s",
                        recorded,
                        self.text_encoder.name,
                    )
                    self.catalog.clear_text_vectors()
                    _remove_store_file(c.home, TEXT_STORE)
                self.catalog.set_meta(TEXT_MODEL_KEY, self.text_encoder.name)
        info = self.catalog.encoder()
        if info is not None:
            self._open_stores(info.dim, info.name)

    def bind_encoder(self, name: str, dim: int, weights: str | None = None) -> None:
        """Record the collection's encoder on first use; refuse another one (or other weights)."""
        self.catalog.bind_encoder(name, dim, weights)
        if self.vectors is None:
            self._open_stores(dim, name)

    def _open_stores(self, dim: int, name: str) -> None:
        c = self.collection
        self.vectors = c._open_store(CLIP_STORE, dim, name)
        report = sync_store(self.vectors, self.catalog.item_ids(), self.catalog.vectors_for)
        self._record_store()  # level with the catalog now: readers of a server store never sync
        self.behind = bool(report.added or report.removed) or getattr(self.vectors, "dirty", False)
        self.passages = c._refresh_passages(None)
        self.backfill_passages()

    def _record_store(self) -> None:
        """Record the store asked for, once it has opened: later commands use it without the
        flag, and a spec that does not open is never recorded (it would break them)."""
        c = self.collection
        if c._recorded_store_if_other_asked() is not None:
            self.catalog.set_meta(VECTOR_STORE_KEY, c._requested_store)

    def finish(self) -> None:
        self.flush()

    def flush(self) -> None:
        """Make the stores durable (atomic file writes for the embedded store)."""
        began = time.monotonic()
        generation = self.catalog.generation()
        with database_errors(str(self.collection.home)):  # a full disk: one typed error
            for store in (self.vectors, self.passages):
                if store is not None:
                    store.flush(generation=generation)
        self.last_flush = time.monotonic()
        self.flush_cost = self.last_flush - began

    def maybe_flush(self, every_s: float) -> None:
        """Flush on schedule; a large store is flushed less often than its flush time allows."""
        if time.monotonic() - self.last_flush >= max(every_s, 5 * self.flush_cost):
            self.flush()

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            log.warning("could not save the vector index (the next run rebuilds it): %s", exc)

    # --------------------------------------------------------------- changes
    def write(self, asset: AssetInfo, items: Sequence[ItemData]) -> UpsertResult:
        """Store one file and its items atomically, replacing what it had before."""
        return self.write_many([(asset, items)])[0]

    def write_many(
        self, batch: Sequence[tuple[AssetInfo, Sequence[ItemData]]]
    ) -> list[UpsertResult]:
        """Store many files in one catalog transaction (all or none), then their vectors.

        Every file's vectors are validated before anything is committed, so a bad one fails
        the batch with `InvalidVectorError` naming it and nothing of the batch is stored."""
        if self.vectors is None:
            raise ConfigError("Bind the collection's encoder before writing items.")
        if not batch:
            return []
        prepared, vectors = [], []
        for asset, items in batch:
            rows = [ItemData(*it) for it in items]
            vectors.append(validate_vectors([r.vector for r in rows], self.vectors.dim, asset.path))
            prepared.append((asset, rows))
        prepared = self._with_text_vectors_of(prepared)
        results = self.catalog.upsert_assets(prepared)
        self._drop([i for r in results for i in r.replaced_ids])
        self.vectors.add(
            np.asarray([i for r in results for i in r.item_ids], np.int64), np.concatenate(vectors)
        )
        self._add_passages(
            [i for r in results for i in r.item_ids], [row for _a, rows in prepared for row in rows]
        )
        return results

    def _with_text_vectors_of(
        self, batch: list[tuple[AssetInfo, list[ItemData]]]
    ) -> list[tuple[AssetInfo, list[ItemData]]]:
        """Sentence vectors for the passages of a whole batch, in one call of the model."""
        flat = self._with_text_vectors([row for _a, rows in batch for row in rows])
        out, start = [], 0
        for asset, rows in batch:
            out.append((asset, flat[start : start + len(rows)]))
            start += len(rows)
        return out

    def delete(self, paths: Sequence[str]) -> list[int]:
        """Forget files; returns the item ids removed."""
        removed = self.catalog.delete_assets(paths)
        self._drop(removed)
        return removed

    def move(self, old: str, new: str, *, size: int, mtime_ns: int, folder_id: int | None) -> None:
        """A file moved (same bytes): its items, vectors and ids are kept."""
        self.catalog.move_asset(old, new, size=size, mtime_ns=mtime_ns, folder_id=folder_id)

    def touch(self, path: str, *, size: int, mtime_ns: int) -> None:
        """A file's time changed but not its bytes."""
        self.catalog.move_asset(path, path, size=size, mtime_ns=mtime_ns)

    def tag_pending(self, load_encoder: Callable[[], Encoder], known: ModelRecord | None = None) -> int:
        """Zero-shot tags for pictures not tagged yet (`mmsearch.tags.tagger`); `known`, a record
        of the model, spares loading it when the tag vectors are cached."""
        from mmsearch.tags.tagger import tag_pending

        return tag_pending(self.catalog, load_encoder, known)

    def set_tag_vocabulary(self, vocabulary: Vocabulary, load_encoder: Callable[[], Encoder]) -> int:
        """Tag every picture again against a new vocabulary, from stored vectors."""
        from mmsearch.tags.tagger import set_vocabulary

        return set_vocabulary(self.catalog, load_encoder, vocabulary)

    def rebuild_vectors(self) -> None:
        """Replace the CLIP store with a fresh one built from the catalog's stored vectors."""
        info = self.catalog.encoder()
        if info is None:
            raise ConfigError(
                f"The collection at {self.collection.home} is empty: index a folder first."
            )
        _remove_store_file(self.collection.home, CLIP_STORE)
        _close_store(self.vectors)
        self.vectors = self.collection._open_store(CLIP_STORE, info.dim, info.name)
        clear = getattr(self.vectors, "clear", None)  # a server-side store is emptied instead
        if clear is not None:
            clear()
        sync_store(self.vectors, self.catalog.item_ids(), self.catalog.vectors_for)
        self._record_store()

    def backfill_passages(self) -> int:
        """Embed passages that have no sentence vector yet (older homes, a changed text model)."""
        if self.text_encoder is None:
            return 0
        done = 0
        while True:
            todo = self.catalog.passages_without_text_vectors(BACKFILL_BATCH)
            if not todo:
                return done
            vectors = self._embed([t for _, t in todo])
            if vectors is None:
                return done
            ids = [i for i, _ in todo]
            self.catalog.set_text_vectors(ids, vectors)
            self._ensure_passages(vectors.shape[1])
            self.passages.add(np.asarray(ids, np.int64), vectors)
            done += len(ids)
            if done == len(todo):
                log.info("embedding passages that have no sentence vector yet")

    # ------------------------------------------------------------- helpers
    def _drop(self, ids: Sequence[int]) -> None:
        if ids:
            arr = np.asarray(ids, np.int64)
            self.vectors.remove(arr)
            if self.passages is not None:
                self.passages.remove(arr)

    def _with_text_vectors(self, rows: list[ItemData]) -> list[ItemData]:
        wanted = [
            i for i, r in enumerate(rows)
            if r.kind in PASSAGE_KINDS and r.text and r.text_vector is None
        ]  # fmt: skip
        if not wanted or self.text_encoder is None:
            return rows
        vectors = self._embed([rows[i].text for i in wanted])
        if vectors is None:
            return rows
        out = list(rows)
        for i, vec in zip(wanted, vectors, strict=True):
            out[i] = out[i]._replace(text_vector=vec)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray | None:
        try:
            vectors = self.text_encoder.encode(texts)
        except MissingDependencyError as exc:
            log.warning(
                "passages get no sentence vectors (keyword and CLIP matching still work): %s", exc
            )
            self.text_encoder = None
            return None
        return validate_vectors(list(vectors), vectors.shape[1], "passages")

    def _add_passages(self, item_ids: list[int], rows: list[ItemData]) -> None:
        pairs = [(i, r.text_vector) for i, r in zip(item_ids, rows) if r.text_vector is not None]
        if not pairs:
            return
        vecs = np.stack([np.asarray(v, np.float32) for _, v in pairs])
        self._ensure_passages(vecs.shape[1])
        self.passages.add(np.asarray([i for i, _ in pairs], np.int64), vecs)

    def _ensure_passages(self, dim: int) -> None:
        if self.passages is None:
            model = self.collection.text_model_name() or "unknown"
            self.passages = self.collection._open_store(TEXT_STORE, dim, model, kind="flat")


def validate_vectors(vectors: Sequence[np.ndarray], dim: int, source: str) -> np.ndarray:
    """Stack vectors as float32 ``(n, dim)``; refuse NaN/inf and wrong shapes before any commit."""
    try:
        arr = np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors])
    except ValueError as exc:
        raise InvalidVectorError(f"Vectors of {source} have different lengths: {exc}") from exc
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidVectorError(
            f"Vectors of {source} have shape {arr.shape}, but this collection holds {dim}-d vectors."
        )
    if not np.isfinite(arr).all():
        raise InvalidVectorError(
            f"The encoder produced NaN or infinite values for {source}; nothing of it was stored."
        )
    return arr


def is_shared(store: VectorStore | None) -> bool:
    """A store other processes write too (a Milvus server): only the writer brings it level
    with the catalog, so a reader working from a stale catalog view never deletes fresh vectors."""
    return bool(getattr(store, "shared", False))


def _saved_level_with(store: VectorStore, generation: int) -> bool:
    """The store is its saved file, unchanged, and the file mirrors this catalog generation
    (every committed write bumps it), so comparing all ids with the catalog would find nothing."""
    return not getattr(store, "dirty", True) and getattr(store, "level_with", None) == generation


def _records_level(store: VectorStore | None, generation: int) -> bool:
    """The saved file is unchanged but mirrors an older generation: its sidecar is worth a
    rewrite (the catalog moved on without touching vectors, e.g. tags), so the next process
    skips the id comparison."""
    level = getattr(store, "level_with", None)
    return hasattr(store, "level_with") and level != generation


def sync_store(
    store: VectorStore,
    catalog_ids: np.ndarray,
    fetch: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
) -> SyncReport:
    """Add what the catalog has and the store lacks; drop ids the catalog no longer has."""
    store_ids = np.sort(store.ids())
    missing = np.setdiff1d(catalog_ids, store_ids, assume_unique=True)
    extra = np.setdiff1d(store_ids, catalog_ids, assume_unique=True)
    if len(extra):
        store.remove(extra)
    for start in range(0, len(missing), SYNC_BATCH):
        ids, vectors = fetch(missing[start : start + SYNC_BATCH].tolist())
        if len(ids):
            store.add(ids, vectors)
    if len(missing) or len(extra):
        log.info("vector store synced with the catalog: +%d -%d", len(missing), len(extra))
    return SyncReport(int(len(missing)), int(len(extra)))


def sweep_temporaries(folder: Path) -> int:
    """Remove temporary files a killed save left behind (only ever done under the writer lock)."""
    removed = 0
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d temporary files left by an interrupted save", removed)
    return removed


def _open_catalog(home: Path, url: str | None, create: bool) -> Any:
    """The home's catalog: for a command that only reads a local one (``create=False``), the
    sqlite3 `CatalogReader`, which opens the SQLAlchemy `Catalog` only when something beyond a
    search's reads is asked; otherwise the `Catalog` itself (creating or migrating the schema)."""
    if not create and url is None:
        from mmsearch.catalog.reader import open_reader

        reader = open_reader(home / CATALOG_FILE)
        if reader is not None:
            return reader
    from mmsearch.catalog.store import Catalog

    return Catalog.open(url or (home / CATALOG_FILE))


def _remove_store_file(home: Path, name: str) -> None:
    """Delete a file store: its container, its sidecar and any float16 row files (IVF-PQ's
    re-scoring rows, ``NAME.idx.TOKEN.f16``), which a store of another kind would never clean."""
    folder = home / "index"
    for path in (folder / f"{name}.idx", folder / f"{name}.idx.json", *folder.glob(f"{name}.idx.*.f16")):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _close_store(store: VectorStore | None) -> None:
    """Release a store that holds a connection (Milvus); file stores have nothing to release."""
    close = getattr(store, "close", None)
    if close is not None:
        close()
