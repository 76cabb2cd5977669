"""The ``Catalog`` store: every operation the indexer and the engine need, one transaction each.

The catalog is the truth: item ids are the vector ids in the ANN index, and full-precision
vectors live in ``items.vector`` so the index can always be rebuilt from here. Item ids are
allocated by the database and never reissued (SQLite AUTOINCREMENT, a sequence elsewhere), so a
stale index can never confuse a deleted item with a new one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    Engine,
    bindparam,
    case,
    delete,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import sessionmaker

from mmsearch.catalog.dates import asset_date_s
from mmsearch.catalog.db import make_engine, writer
from mmsearch.catalog.guard import database_errors, guarded
from mmsearch.catalog.keyword import (
    cjk_match_expression,
    cjk_runs,
    fts_match_expression,
    query_terms,
)
from mmsearch.catalog.kinds import (
    COLLECTION_ID_KEY,
    ENCODER_WEIGHTS_KEY,
    GENERATION_KEY,
    PATCH_SHAPE_KEY,
    chunks,
)
from mmsearch.catalog.migrations import ensure_schema
from mmsearch.catalog.records import (
    ASSET_INFO_FIELDS,
    PATCH_DTYPE,
    AssetInfo,
    AssetState,
    EncoderInfo,
    FeedbackEvent,
    FolderInfo,
    ItemData,
    ItemRecord,
    UpsertResult,
    parse_shape,
    patch_arrays,
)
from mmsearch.catalog.schema import (
    ASSET_KINDS,
    CJK_KEYWORD_TABLE,
    ITEM_KINDS,
    KEYWORD_TABLE,
    PASSAGE_KINDS,
    PG_CJK_INDEX,
    PG_KEYWORD_INDEX,
    PG_TS_CONFIG,
    PG_TSVECTOR,
    Asset,
    Feedback,
    Folder,
    Item,
    ItemPatches,
    ItemTag,
    Meta,
)
from mmsearch.errors import CatalogError, EncoderMismatchError, NotFoundError

if TYPE_CHECKING:
    from mmsearch.query.model import Filters

log = logging.getLogger(__name__)

VECTOR_DTYPE = np.dtype("<f4")
"""How vectors are stored: little-endian float32, whatever the machine."""

KEYWORD_FILTER_FETCH = 100_000
"""Matches ranked before an allow-list is applied to keyword search (a bound, not a page size)."""


TAG_VOCABULARY_KEY = "tag_vocabulary"
"""The ``meta`` row with the vocabulary (file form) the collection's tags were chosen from."""

TAGS_THROUGH_KEY = "tags_through"
"""The ``meta`` row with the highest item id tagged against that vocabulary (ids are never reused)."""

_PICTURE_KINDS = ("image", "keyframe")


_READ_BACK = ("id", "indexed_at", "date_s")
_ASSET_FIELDS = tuple(f.name for f in fields(AssetInfo) if f.name not in _READ_BACK)


@guarded
class Catalog:
    """SQL store of folders, assets and items (with their vectors)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        _refuse_truncated(target)
        self.engine: Engine = make_engine(target)
        self.where = self.engine.url.render_as_string(hide_password=True).removeprefix("sqlite:///")
        try:
            with database_errors(self.where):
                self.schema_version = ensure_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(writer(self.engine), expire_on_commit=False)
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        with database_errors(self.where):
            if self.is_postgresql:
                from mmsearch.catalog.schema import pg_keyword_indexes

                with self.engine.connect() as conn:
                    present = pg_keyword_indexes(conn)
                self.has_keyword_index = PG_KEYWORD_INDEX in present
                self.has_cjk_index = PG_CJK_INDEX in present
            else:
                tables = set(inspect(self.engine).get_table_names())
                self.has_keyword_index = KEYWORD_TABLE in tables
                self.has_cjk_index = CJK_KEYWORD_TABLE in tables

    @classmethod
    def open(cls, target: str | os.PathLike[str]) -> Catalog:
        """Open (creating or migrating as needed) the catalog at a URL or SQLite file path."""
        return cls(target)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        with self._read() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str) -> None:
        with self._write.begin() as s:
            s.merge(Meta(key=key, value=value))

    def collection_id(self) -> str:
        """This catalog's identity (made with the schema), recorded by every index that mirrors it."""
        return self.get_meta(COLLECTION_ID_KEY) or ""

    def generation(self) -> int:
        """Committed writes so far: one primary-key lookup tells a reader whether anything changed."""
        return int(self.get_meta(GENERATION_KEY) or 0)

    def encoder(self) -> EncoderInfo | None:
        """The encoder bound to this collection (``bind_encoder``), or None for a new one."""
        with self._read() as s:
            rows = dict(
                s.execute(
                    select(Meta.key, Meta.value).where(Meta.key.in_(("encoder", "encoder_dim")))
                ).all()
            )
        if "encoder" not in rows:
            return None
        return EncoderInfo(rows["encoder"], int(rows.get("encoder_dim", 0)))

    def bind_encoder(self, name: str, dim: int, weights: str | None = None) -> None:
        """Record the collection's encoder (and its weights' digest), or refuse a different one:
        one encoder, one checkpoint per collection."""
        with self._write.begin() as s:
            current = s.get(Meta, "encoder")
            if current is None:
                s.add_all(
                    [Meta(key="encoder", value=name), Meta(key="encoder_dim", value=str(int(dim)))]
                )
            elif current.value != name:
                raise EncoderMismatchError(
                    f"The catalog at {self.url} was built with encoder '{current.value}', but "
                    f"encoder '{name}' was requested. Use --model {current.value}, or re-index "
                    f"into a new home (--home) to use '{name}'."
                )
            if weights is None:
                return
            recorded = s.get(Meta, ENCODER_WEIGHTS_KEY)
            if recorded is None:  # new, or indexed before digests were recorded: from now on
                s.add(Meta(key=ENCODER_WEIGHTS_KEY, value=weights))
            elif recorded.value != weights:
                raise weights_mismatch(name, recorded.value, weights, str(self.url))

    def encoder_weights(self) -> str | None:
        """The digest of the weights the collection's vectors were made with (None: not recorded)."""
        return self.get_meta(ENCODER_WEIGHTS_KEY)

    # --------------------------------------------------------------- folders
    def add_folder(self, path: str | os.PathLike[str]) -> int:
        """Register an indexed root (idempotent); returns its id."""
        p = _abspath(path)
        with self._write.begin() as s:
            found = s.scalar(select(Folder.id).where(Folder.path == p))
            if found is not None:
                return found
            folder = Folder(path=p, added_at=time.time())
            s.add(folder)
            s.flush()
            return folder.id

    def list_folders(self) -> list[FolderInfo]:
        with self._read() as s:
            rows = s.execute(select(Folder.id, Folder.path, Folder.added_at).order_by(Folder.path))
            return [FolderInfo(*r) for r in rows]

    # ---------------------------------------------------------------- assets
    def asset_by_path(self, path: str | os.PathLike[str]) -> AssetInfo | None:
        with self._read() as s:
            asset = s.scalar(select(Asset).where(Asset.path == _abspath(path)))
            return _asset_info(asset) if asset is not None else None

    def assets_by_hash(self, content_hash: str) -> list[AssetInfo]:
        """Assets with these bytes: how the scanner recognises a moved or copied file."""
        with self._read() as s:
            rows = s.scalars(
                select(Asset).where(Asset.content_hash == content_hash).order_by(Asset.id)
            )
            return [_asset_info(a) for a in rows]

    def all_asset_states(
        self, folder: str | os.PathLike[str] | None = None
    ) -> dict[str, AssetState]:
        """``{path: (size, mtime_ns, hash)}`` for one indexed root (or all assets): the scan's baseline."""
        query = select(Asset.path, Asset.size, Asset.mtime_ns, Asset.content_hash)
        if folder is not None:
            query = query.join(Folder, Asset.folder_id == Folder.id).where(
                Folder.path == _abspath(folder)
            )
        with self._read() as s:
            return {
                path: AssetState(size, mtime_ns, h) for path, size, mtime_ns, h in s.execute(query)
            }

    def upsert_asset_with_items(
        self, asset: AssetInfo, items: Sequence[ItemData | tuple]
    ) -> UpsertResult:
        """Store an asset and its items atomically, replacing the asset's previous items.

        New item ids are always fresh; the replaced ids are returned so the caller can remove
        them from the vector index.
        """
        return self.upsert_assets([(asset, items)])[0]

    def upsert_assets(
        self, batch: Sequence[tuple[AssetInfo, Sequence[ItemData | tuple]]]
    ) -> list[UpsertResult]:
        """`upsert_asset_with_items` for many files in one transaction: all of them or none.

        The indexer commits a whole encoder batch this way: one transaction and one insert per
        table instead of one per file (per-file ORM round trips cost more than encoding `tiny`),
        of plain rows rather than ORM objects for the new assets, items and patch grids (a GPU
        run commits thousands of pictures a second: `benchmarks/commit_rate.py`, 4,900 -> 8,500
        a second in batches of 256 on 2 Xeon cores). Paths must be distinct within a batch.
        """
        enc = self.encoder()
        prepared = []
        for asset, items in batch:
            rows = [ItemData(*it) for it in items]
            _check_asset(asset)
            values = {name: getattr(asset, name) for name in _ASSET_FIELDS}
            values["path"] = _abspath(asset.path)
            values["date_s"] = asset_date_s(asset.taken_at, asset.mtime_ns)
            prepared.append((values, rows, self._encode_vectors(rows, enc), *_encode_patches(rows)))
        paths = [p[0]["path"] for p in prepared]
        if len(set(paths)) < len(paths):
            raise ValueError("a batch of upserts names the same path twice")
        if not prepared:
            return []
        with self._write.begin() as s:
            _bump_generation(s)
            for shape in {p[4] for p in prepared if p[4] is not None}:
                _record_patch_shape(s, shape)
            existing = {
                a.path: a
                for chunk in chunks(paths)
                for a in s.scalars(select(Asset).where(Asset.path.in_(chunk)))
            }
            replaced: dict[int, list[int]] = {a.id: [] for a in existing.values()}
            for chunk in chunks(list(replaced)):
                for item_id, asset_id in s.execute(
                    select(Item.id, Item.asset_id).where(Item.asset_id.in_(chunk))
                ):
                    replaced[asset_id].append(item_id)
                s.execute(delete(Item).where(Item.asset_id.in_(chunk)))
            now = time.time()
            asset_ids: dict[str, int] = {}
            fresh = [
                {**values, "indexed_at": now}
                for values, *_ in prepared
                if values["path"] not in existing
            ]
            if fresh:  # one INSERT of the new assets, their ids back (rows, not ORM objects)
                returned = s.execute(insert(Asset).returning(Asset.path, Asset.id), fresh)
                asset_ids.update((path, asset_id) for path, asset_id in returned)
            for values, *_rest in prepared:
                asset_row = existing.get(values["path"])
                if asset_row is not None:  # a changed file keeps its asset id
                    for name, value in values.items():
                        setattr(asset_row, name, value)
                    asset_row.indexed_at = now
                    asset_ids[values["path"]] = asset_row.id
            item_rows = [
                {
                    "asset_id": asset_ids[values["path"]],
                    "kind": r.kind,
                    "start_s": r.start_s,
                    "end_s": r.end_s,
                    "text": r.text,
                    "vector": blob,
                    "thumbnail": r.thumbnail,
                    "text_vector": None
                    if r.text_vector is None
                    else np.asarray(r.text_vector, VECTOR_DTYPE).tobytes(),
                }
                for values, rows, blobs, *_p in prepared
                for r, blob in zip(rows, blobs, strict=True)
            ]
            item_ids: list[int] = []
            if item_rows:  # one INSERT of all the items; ids in the order of the rows
                item_ids = list(
                    s.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True), item_rows)
                )
            patch_blobs = [blob for p in prepared for blob in p[3]]
            patch_rows = [
                {"item_id": item_id, "data": blob}
                for item_id, blob in zip(item_ids, patch_blobs, strict=True)
                if blob is not None
            ]
            if patch_rows:
                s.execute(insert(ItemPatches), patch_rows)
            ids = iter(item_ids)
            results = []
            for values, rows, *_rest in prepared:
                asset_id = asset_ids[values["path"]]
                mine = [next(ids) for _ in rows]
                results.append(UpsertResult(asset_id, mine, replaced.get(asset_id, [])))
            return results

    def move_asset(
        self,
        old_path: str | os.PathLike[str],
        new_path: str | os.PathLike[str],
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
        folder_id: int | None = None,
    ) -> int:
        """Re-point an asset at its new path, keeping its items (and so its vectors and ids)."""
        old, new = _abspath(old_path), _abspath(new_path)
        with self._write.begin() as s:
            _bump_generation(s)
            asset = s.scalar(select(Asset).where(Asset.path == old))
            if asset is None:
                raise CatalogError(f"Cannot move {old}: it is not in the catalog.")
            if old != new and s.scalar(select(Asset.id).where(Asset.path == new)) is not None:
                raise CatalogError(f"Cannot move {old} to {new}: {new} is already in the catalog.")
            asset.path = new
            if size is not None:
                asset.size = size
            if mtime_ns is not None:
                asset.mtime_ns = mtime_ns
                asset.date_s = asset_date_s(asset.taken_at, mtime_ns)
            if folder_id is not None:
                asset.folder_id = folder_id
            return asset.id

    def delete_assets(self, paths: Iterable[str | os.PathLike[str]]) -> list[int]:
        """Forget assets and their items; returns the removed item ids for the vector index."""
        wanted = sorted({_abspath(p) for p in paths})
        removed: list[int] = []
        with self._write.begin() as s:
            _bump_generation(s)
            for chunk in chunks(wanted):
                asset_ids = list(s.scalars(select(Asset.id).where(Asset.path.in_(chunk))))
                if not asset_ids:
                    continue
                removed += s.scalars(select(Item.id).where(Item.asset_id.in_(asset_ids)))
                # Items first: correct even where the database does not enforce ON DELETE CASCADE.
                s.execute(delete(Item).where(Item.asset_id.in_(asset_ids)))
                s.execute(delete(Asset).where(Asset.id.in_(asset_ids)))
        return sorted(removed)

    def asset_counts(self) -> dict[str, int]:
        with self._read() as s:
            return dict(s.execute(select(Asset.kind, func.count()).group_by(Asset.kind)).all())

    # ----------------------------------------------------------------- items
    def item_counts(self) -> dict[str, int]:
        with self._read() as s:
            return dict(s.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())

    def max_item_id(self) -> int:
        """Largest live item id (0 when empty)."""
        with self._read() as s:
            return s.scalar(select(func.max(Item.id))) or 0

    def item_ids(self) -> np.ndarray:
        """Every live item id, sorted: the engine diffs this against the vector index's ids."""
        with self._read() as s:
            return np.fromiter(s.scalars(select(Item.id).order_by(Item.id)), dtype=np.int64)

    def iter_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids int64, vectors float32 (n, dim))`` in id order, for rebuilding an index.

        Each batch is its own short read (keyset pagination), so a long rebuild never holds a
        snapshot open against a running indexer.
        """
        return self._iter_column(Item.vector, batch)

    def vectors_for(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(found ids, vectors)`` in the order asked, skipping unknown ids ("more like this")."""
        return self._vectors_of(Item.vector, ids)

    def _iter_column(self, column: Any, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = -1
        while True:
            with self._read() as s:
                rows = s.execute(
                    select(Item.id, column)
                    .where(Item.id > last, column.is_not(None))
                    .order_by(Item.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, self._decode_vectors(r[1] for r in rows)
            last = int(ids[-1])

    def _vectors_of(self, column: Any, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        order, blobs = self._blobs_of(Item.id, column, ids)
        return np.array(order, dtype=np.int64), self._decode_vectors(blobs)

    def _blobs_of(self, key: Any, column: Any, ids: Iterable[int]) -> tuple[list[int], list[bytes]]:
        """(ids that have a non-NULL `column`, in the order asked; their blobs), in chunks."""
        wanted = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        with self._read() as s:
            for chunk in chunks(sorted(set(wanted))):
                rows = s.execute(select(key, column).where(key.in_(chunk), column.is_not(None)))
                found.update((item_id, blob) for item_id, blob in rows)
        order = [i for i in wanted if i in found]
        return order, [found[i] for i in order]

    def items_by_ids(
        self, ids: Iterable[int], *, with_thumbnails: bool = False
    ) -> list[ItemRecord]:
        """Items joined with their assets, in the order asked; ids deleted meanwhile are skipped."""
        wanted = [int(i) for i in ids if int(i) >= 0]
        cols = [Item.id, Item.kind, Item.start_s, Item.end_s, Item.text]
        if with_thumbnails:
            cols.append(Item.thumbnail)
        n = len(cols)
        by_id: dict[int, ItemRecord] = {}
        with self._read() as s:
            for chunk in chunks(sorted(set(wanted))):
                # the asset's columns, not the ORM entity: no identity map on every search's
                # 50 candidates (about half of this call's time)
                for row in s.execute(
                    select(*cols, *_ASSET_COLUMNS)
                    .join(Asset, Item.asset_id == Asset.id)
                    .where(Item.id.in_(chunk))
                ):
                    asset = AssetInfo(**dict(zip(ASSET_INFO_FIELDS, row[n:], strict=True)))
                    thumb = row[5] if with_thumbnails else None
                    by_id[row[0]] = ItemRecord(row[0], row[1], row[2], row[3], row[4], asset, thumb)
        return [by_id[i] for i in wanted if i in by_id]

    # ------------------------------------------------------------- passages
    def passage_ids(self) -> np.ndarray:
        """Sorted ids of items with text to match (transcript windows, text chunks)."""
        with self._read() as s:
            query = (
                select(Item.id)
                .where(Item.kind.in_(PASSAGE_KINDS), Item.text.is_not(None), Item.text != "")
                .order_by(Item.id)
            )
            return np.fromiter(s.scalars(query), dtype=np.int64)

    def passage_count(self, kinds: Sequence[str] = PASSAGE_KINDS) -> int:
        """How many passage items (of these kinds) there are (an index lookup), so callers can
        skip text models at 0."""
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(Item).where(Item.kind.in_(list(kinds))))

    def texts_for(self, ids: Iterable[int]) -> list[tuple[int, str]]:
        """``(id, text)`` in the order asked, for ids that still exist and have text."""
        wanted = [int(i) for i in ids]
        found: dict[int, str] = {}
        with self._read() as s:
            for chunk in chunks(sorted(set(wanted))):
                rows = s.execute(
                    select(Item.id, Item.text).where(Item.id.in_(chunk), Item.text.is_not(None))
                )
                found.update((item_id, body) for item_id, body in rows)
        return [(i, found[i]) for i in wanted if i in found]

    def keyword_search(
        self, query: str, limit: int = 50, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Passages containing the query's words, best first, as ``(item id, relevance)``.

        Relevance is FTS5's bm25 negated, so higher is better (FTS5 reports lower-is-better).
        Chinese and Japanese runs are looked up in the trigram table (runs of three characters
        or more) or with LIKE (shorter runs); when a query has both kinds of words, the lists
        are interleaved by rank and relevance is 1/rank. ``allowed`` (sorted ids) keeps only
        those items, inside the query. Databases without the FTS5 tables return ``[]``.

        On PostgreSQL the words are matched against the tsvector GIN index and ranked by
        ``ts_rank`` (length-normalised, higher is better), and every Chinese/Japanese run is
        looked up with LIKE, which pg_trgm's GIN index serves for runs of three or more characters.
        """
        if limit < 1 or not self.has_keyword_index:
            return []
        if allowed is not None and not len(allowed):
            return []
        # With an allow-list, rank every match and keep the allowed ones: FTS5 has no id filter
        # that beats its own posting lists, and matches are few next to the vectors.
        fetch = int(limit) if allowed is None else max(int(limit), KEYWORD_FILTER_FETCH)
        lists = []
        if self.is_postgresql:
            terms = query_terms(query)
            if terms:
                lists.append(self._pg_text_search(terms, fetch))
            runs = cjk_runs(query)
            if runs:
                lists.append(self._like_search(runs, fetch))
        match = None if self.is_postgresql else fts_match_expression(query)
        if match is not None:
            lists.append(self._fts_search(KEYWORD_TABLE, match, fetch))
        runs = [] if self.is_postgresql else cjk_runs(query)
        if runs:
            trigram = cjk_match_expression(runs) if self.has_cjk_index else None
            if trigram is not None:
                lists.append(self._fts_search(CJK_KEYWORD_TABLE, trigram, fetch))
            short = [r for r in runs if len(r) < 3 or not self.has_cjk_index]
            if short:
                lists.append(self._like_search(short, fetch))
        if not lists:
            return []
        rows = lists[0] if len(lists) == 1 else _interleave(lists)
        if allowed is not None:
            keep = np.isin(np.array([i for i, _ in rows], np.int64), allowed)
            rows = [r for r, k in zip(rows, keep) if k]
        return rows[: int(limit)]

    def _fts_search(self, table: str, match: str, fetch: int) -> list[tuple[int, float]]:
        statement = text(
            f"SELECT {table}.rowid, bm25({table}) AS b FROM {table} "
            f"JOIN items ON items.id = {table}.rowid "
            f"WHERE {table} MATCH :match AND items.kind IN :kinds "
            f"ORDER BY b, {table}.rowid LIMIT :limit"
        ).bindparams(bindparam("kinds", expanding=True))
        with self._read() as s:
            params = {"match": match, "kinds": list(PASSAGE_KINDS), "limit": fetch}
            return [(int(item_id), -float(bm25)) for item_id, bm25 in s.execute(statement, params)]

    def _pg_text_search(self, terms: list[str], fetch: int) -> list[tuple[int, float]]:
        """PostgreSQL: passages matching any of the words (each a bound ``plainto_tsquery``, so
        nothing typed is tsquery syntax), by ``ts_rank`` normalised by length, then id."""
        names = [f"w{i}" for i in range(len(terms))]
        tsquery = " || ".join(f"plainto_tsquery('{PG_TS_CONFIG}'::regconfig, :{n})" for n in names)
        statement = text(
            f"SELECT items.id, ts_rank({PG_TSVECTOR}, q.q, 1) AS r "
            f"FROM items, (SELECT {tsquery} AS q) AS q "
            f"WHERE items.text IS NOT NULL AND {PG_TSVECTOR} @@ q.q AND items.kind IN :kinds "
            "ORDER BY r DESC, items.id LIMIT :limit"
        ).bindparams(bindparam("kinds", expanding=True))
        params = dict(zip(names, terms, strict=True))
        params.update(kinds=list(PASSAGE_KINDS), limit=fetch)
        with self._read() as s:
            return [(int(i), float(r)) for i, r in s.execute(statement, params)]

    def _like_search(self, runs: list[str], fetch: int) -> list[tuple[int, float]]:
        """Passages containing any of these short runs; those holding more of them first."""
        hits = [Item.text.contains(r, autoescape=True) for r in runs]
        score = sum((case((h, 1), else_=0) for h in hits), start=literal(0))
        with self._read() as s:
            rows = s.execute(
                select(Item.id, score.label("n"))
                .where(Item.kind.in_(PASSAGE_KINDS), or_(*hits))
                .order_by(text("n DESC"), Item.id)
                .limit(fetch)
            ).all()
        return [(int(i), float(n) - rank * 1e-9) for rank, (i, n) in enumerate(rows)]

    def text_vector_state(self) -> tuple[int, int]:
        """(passages with a sentence vector, passages without one)."""
        with self._read() as s:
            rows = dict(
                s.execute(
                    select(Item.text_vector.is_(None), func.count())
                    .where(Item.kind.in_(PASSAGE_KINDS), Item.text.is_not(None), Item.text != "")
                    .group_by(Item.text_vector.is_(None))
                ).all()
            )
        return int(rows.get(False, 0)), int(rows.get(True, 0))

    def passages_without_text_vectors(self, limit: int) -> list[tuple[int, str]]:
        """``(id, text)`` of up to ``limit`` passages still to be embedded by the sentence model."""
        with self._read() as s:
            rows = s.execute(
                select(Item.id, Item.text)
                .where(
                    Item.kind.in_(PASSAGE_KINDS),
                    Item.text.is_not(None),
                    Item.text != "",
                    Item.text_vector.is_(None),
                )
                .order_by(Item.id)
                .limit(limit)
            )
            return [(int(i), t) for i, t in rows]

    def set_text_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Store sentence-model vectors of existing passages (ids deleted meanwhile are ignored)."""
        with self._write.begin() as s:
            _bump_generation(s)
            for item_id, vec in zip(ids, vectors, strict=True):
                s.execute(
                    update(Item)
                    .where(Item.id == int(item_id))
                    .values(text_vector=np.asarray(vec, VECTOR_DTYPE).tobytes())
                )

    def clear_text_vectors(self) -> None:
        """Forget every sentence vector (the text model changed): the next index run re-embeds."""
        with self._write.begin() as s:
            _bump_generation(s)
            s.execute(update(Item).where(Item.text_vector.is_not(None)).values(text_vector=None))

    def text_vector_ids(self) -> np.ndarray:
        """Sorted ids of passages that have a sentence vector: the passage index mirrors these."""
        with self._read() as s:
            query = select(Item.id).where(Item.text_vector.is_not(None)).order_by(Item.id)
            return np.fromiter(s.scalars(query), dtype=np.int64)

    def text_vectors_for(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(found ids, sentence vectors)`` in the order asked, for passages that have one."""
        return self._vectors_of(Item.text_vector, ids)

    def patch_shape(self) -> tuple[int, int] | None:
        """(P, D) of the stored patch features, or None when none were ever stored."""
        return parse_shape(self.get_meta(PATCH_SHAPE_KEY))

    def patches_for(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have patch features, in the order asked; float16 (n, P, D)); others skipped."""
        shape = self.patch_shape()
        order, blobs = (
            self._blobs_of(ItemPatches.item_id, ItemPatches.data, ids) if shape else ([], [])
        )
        return patch_arrays(order, blobs, shape)

    def patch_counts(self) -> tuple[int, int]:
        """(picture items with patch features, picture items without)."""
        with self._read() as s:
            with_patches = s.scalar(select(func.count()).select_from(ItemPatches)) or 0
            pictures = (
                s.scalar(
                    select(func.count()).select_from(Item).where(Item.kind.in_(_PICTURE_KINDS))
                )
                or 0
            )
        return int(with_patches), int(pictures) - int(with_patches)

    def picture_items_of_assets(self, asset_ids) -> dict[int, int]:
        """``{asset id: its picture item id}`` for image files among these assets."""
        wanted = sorted({int(a) for a in asset_ids})
        out: dict[int, int] = {}
        with self._read() as s:
            for chunk in chunks(wanted):
                rows = s.execute(
                    select(Item.asset_id, Item.id).where(
                        Item.asset_id.in_(chunk), Item.kind == "image"
                    )
                )
                out.update((int(a), int(i)) for a, i in rows)
        return out

    def image_paths_without_ocr(self) -> set[str]:
        """Pictures and videos whose words were never read."""
        with self._read() as s:
            rows = s.scalars(
                select(Asset.path).where(
                    Asset.kind.in_(("image", "video")), Asset.ocr_engine.is_(None)
                )
            )
            return set(rows)

    def paths_missing_patches(self) -> set[str]:
        """Paths of assets with a picture item that has no patch features (stored before v6)."""
        with self._read() as s:
            rows = s.scalars(
                select(Asset.path)
                .join(Item, Item.asset_id == Asset.id)
                .outerjoin(ItemPatches, ItemPatches.item_id == Item.id)
                .where(Item.kind.in_(_PICTURE_KINDS), ItemPatches.item_id.is_(None))
                .distinct()
            )
            return set(rows)

    # ------------------------------------------------------------------ tags
    def picture_vectors_after(self, after_id: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of up to `limit` picture items with ids above `after_id`, in id order."""
        with self._read() as s:
            rows = s.execute(
                select(Item.id, Item.vector)
                .where(Item.id > int(after_id), Item.kind.in_(_PICTURE_KINDS))
                .order_by(Item.id)
                .limit(limit)
            ).all()
        ids = np.array([r[0] for r in rows], np.int64)
        return ids, self._decode_vectors(r[1] for r in rows)

    def tags_through(self) -> int:
        return int(self.get_meta(TAGS_THROUGH_KEY) or 0)

    def tag_vocabulary(self) -> str | None:
        """The vocabulary (file form) this collection is tagged with; None before the first run."""
        return self.get_meta(TAG_VOCABULARY_KEY)

    def add_tags(self, rows: Sequence[tuple[int, str, float]], through: int) -> None:
        """Store tags of items up to id `through` (that were present) in one transaction."""
        with self._write.begin() as s:
            _bump_generation(s)
            present = set()
            ids = sorted({int(r[0]) for r in rows})
            for chunk in chunks(ids):
                present.update(s.scalars(select(Item.id).where(Item.id.in_(chunk))))
            kept = [
                {"item_id": int(i), "tag": t, "score": float(v)} for i, t, v in rows if int(i) in present
            ]
            if kept:  # one executemany, not a unit of work over an object per tag
                s.execute(insert(ItemTag), kept)
            s.merge(Meta(key=TAGS_THROUGH_KEY, value=str(int(through))))

    def reset_tags(self, vocabulary_text: str) -> None:
        """Forget every tag and record the vocabulary the next tagging run uses."""
        with self._write.begin() as s:
            _bump_generation(s)
            s.execute(delete(ItemTag))
            s.merge(Meta(key=TAG_VOCABULARY_KEY, value=vocabulary_text))
            s.merge(Meta(key=TAGS_THROUGH_KEY, value="0"))

    def tag_counts(self) -> list[tuple[str, int]]:
        """(tag, pictures carrying it), most common first."""
        with self._read() as s:
            rows = s.execute(
                select(ItemTag.tag, func.count())
                .group_by(ItemTag.tag)
                .order_by(func.count().desc(), ItemTag.tag)
            ).all()
        return [(tag, int(n)) for tag, n in rows]

    def tags_of(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float]]]:
        """``{item id: [(tag, share), ...] best first}`` for the items that have tags."""
        wanted = sorted({int(i) for i in ids})
        out: dict[int, list[tuple[str, float]]] = {}
        with self._read() as s:
            for chunk in chunks(wanted):
                rows = s.execute(
                    select(ItemTag.item_id, ItemTag.tag, ItemTag.score)
                    .where(ItemTag.item_id.in_(chunk))
                    .order_by(ItemTag.item_id, ItemTag.score.desc())
                )
                for item_id, tag, score in rows:
                    out.setdefault(int(item_id), []).append((tag, float(score)))
        return out

    def iter_text_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Like `iter_vectors`, for the sentence vectors of passages."""
        return self._iter_column(Item.text_vector, batch)

    def filtered_item_ids(self, filters: Filters) -> np.ndarray | None:
        """Sorted ids of items whose asset passes ``filters``; None when nothing is filtered.

        The allow-list is pushed down into the vector search (`VectorStore.search(allowed=...)`)
        and into the keyword search, so a filter never post-filters a short list.
        """
        from mmsearch.catalog.filters import asset_conditions

        conditions = asset_conditions(filters, self.engine.dialect.name)
        if not conditions:
            return None
        query = (
            select(Item.id).join(Asset, Item.asset_id == Asset.id).where(*conditions).order_by(Item.id)
        )
        with self._read() as s:
            return np.fromiter(s.scalars(query), dtype=np.int64)

    def item_ids_of_paths(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[int]]:
        """``{absolute path: its item ids}`` for the indexed files among ``paths``."""
        wanted = sorted({_abspath(p) for p in paths})
        out: dict[str, list[int]] = {}
        with self._read() as s:
            for chunk in chunks(wanted):
                rows = s.execute(
                    select(Asset.path, Item.id)
                    .join(Item, Item.asset_id == Asset.id)
                    .where(Asset.path.in_(chunk))
                    .order_by(Item.id)
                )
                for path, item_id in rows:
                    out.setdefault(path, []).append(int(item_id))
        return out

    def integrity(self) -> str:
        """"ok", or what SQLite's quick check found wrong (damaged pages, broken indexes)."""
        if self.engine.dialect.name != "sqlite":
            return "ok"
        with self.engine.connect() as conn:
            rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        return "ok" if rows == ["ok"] else "; ".join(rows[:3])

    # ------------------------------------------------------------- feedback
    def add_feedback(self, user: str, item_id: int, label: int, query: str | None = None) -> FeedbackEvent:
        """Record one judgement of an item, keyed by its file's bytes and its moment."""
        if label not in (1, -1):
            raise ValueError(f"feedback label must be +1 or -1, not {label!r}")
        with self._write.begin() as s:
            row = s.execute(
                select(Asset.content_hash, Item.kind, Item.start_s, Asset.path)
                .join(Item, Item.asset_id == Asset.id)
                .where(Item.id == int(item_id))
            ).first()
            if row is None:
                raise NotFoundError(
                    f"No item {item_id} in this collection (it may have been re-indexed); search "
                    "again and use an id from the new results."
                )
            event = Feedback(
                user=user, content_hash=row[0], item_kind=row[1], start_s=row[2], label=label,
                query=query, created_at=time.time(),
            )  # fmt: skip
            s.add(event)
            s.flush()
            return FeedbackEvent(event.id, user, int(item_id), row[3], label, query, event.created_at)

    def feedback_events(self, user: str) -> list[FeedbackEvent]:
        """A user's judgements, oldest first, each resolved to the item it names today (item id
        and path are None when that file is no longer in the collection)."""
        with self._read() as s:
            rows = s.execute(
                select(Feedback).where(Feedback.user == user).order_by(Feedback.id)
            ).scalars().all()
            out = []
            for f in rows:
                found = s.execute(
                    select(Item.id, Asset.path)
                    .join(Asset, Item.asset_id == Asset.id)
                    .where(Asset.content_hash == f.content_hash, Item.kind == f.item_kind)
                    .where(Item.start_s.is_(None) if f.start_s is None else Item.start_s == f.start_s)
                    .order_by(Item.id)
                    .limit(1)
                ).first()
                out.append(
                    FeedbackEvent(
                        f.id, f.user, found[0] if found else None, found[1] if found else None,
                        f.label, f.query, f.created_at,
                    )
                )  # fmt: skip
            return out

    def feedback_users(self) -> list[str]:
        with self._read() as s:
            return list(s.scalars(select(Feedback.user).distinct().order_by(Feedback.user)))

    def feedback_count(self, user: str) -> int:
        """How many judgements a user gave (one indexed count; decides whether to personalise)."""
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(Feedback).where(Feedback.user == user)))

    def reset_feedback(self, user: str) -> int:
        """Forget everything one user said; returns how many judgements were removed."""
        with self._write.begin() as s:
            return s.execute(delete(Feedback).where(Feedback.user == user)).rowcount or 0

    def thumbnail(self, item_id: int) -> bytes | None:
        with self._read() as s:
            return s.scalar(select(Item.thumbnail).where(Item.id == int(item_id)))

    # --------------------------------------------------------------- helpers
    def _encode_vectors(
        self, rows: Sequence[ItemData], enc: EncoderInfo | None = None
    ) -> list[bytes]:
        """Validate kinds and dims (against `enc`, the bound encoder), then serialise vectors as
        little-endian float32."""
        blobs = []
        for r in rows:
            if r.kind not in ITEM_KINDS:
                raise ValueError(f"item kind must be one of {ITEM_KINDS}, got {r.kind!r}")
            vec = np.asarray(r.vector, dtype=VECTOR_DTYPE).reshape(-1)
            if enc is not None and enc.dim and len(vec) != enc.dim:
                raise CatalogError(
                    f"A {len(vec)}-d vector cannot join this collection of {enc.dim}-d "
                    f"'{enc.name}' vectors. Index with --model {enc.name}, or use a new home."
                )
            blobs.append(vec.tobytes())
        if len({len(b) for b in blobs}) > 1:
            raise ValueError("all vectors of one asset must have the same dimension")
        return blobs

    @staticmethod
    def _decode_vectors(blobs: Iterable[bytes]) -> np.ndarray:
        arrays = [np.frombuffer(b, dtype=VECTOR_DTYPE) for b in blobs]
        if not arrays:
            return np.empty((0, 0), dtype=np.float32)
        if len({len(a) for a in arrays}) > 1:
            raise CatalogError(
                "The catalog holds vectors of different dimensions; re-index into a new home."
            )
        return np.stack(arrays).astype(np.float32)


def _refuse_truncated(target: str | os.PathLike[str]) -> None:
    """A catalog file of 0 bytes was truncated: never mistake it for a new, empty home."""
    text = os.fspath(target)
    if "://" in text:
        return
    path = os.path.expanduser(text)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CatalogError(
            f"The catalog {path} is empty (0 bytes): it was truncated or never written. Restore it "
            "from a backup, or remove the home to start again (see docs/RECOVERY.md)."
        )


def _interleave(lists: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Round-robin over ranked lists, first appearance kept; relevance 1/rank."""
    seen: set[int] = set()
    out: list[tuple[int, float]] = []
    for row in range(max(len(rows) for rows in lists)):
        for rows in lists:
            if row < len(rows) and rows[row][0] not in seen:
                seen.add(rows[row][0])
                out.append((rows[row][0], 1.0 / (len(out) + 1)))
    return out


def weights_mismatch(name: str, recorded: str, now: str, where: str) -> EncoderMismatchError:
    return EncoderMismatchError(
        f"The collection at {where} was indexed with other weights of '{name}' (digest "
        f"{recorded}; the model loaded now is {now}): an updated or re-trained model makes "
        "vectors that cannot be compared with the stored ones. Re-index into a new home "
        f"(mmsearch index FOLDERS --home NEW --model {name}), or use the weights it was built with."
    )


def _encode_patches(rows: Sequence[ItemData]) -> tuple[list[bytes | None], tuple[int, int] | None]:
    """Validate patch features (pictures only, one (P, D) shape, finite) and serialise them."""
    blobs: list[bytes | None] = []
    shapes = set()
    for r in rows:
        if r.patches is None:
            blobs.append(None)
            continue
        if r.kind not in _PICTURE_KINDS:
            raise ValueError(f"only pictures have patch features, not a {r.kind!r} item")
        patches = np.asarray(r.patches)
        if patches.ndim != 2 or not np.isfinite(patches).all():
            raise ValueError(
                f"patch features must be a finite (P, D) array, got shape {patches.shape}"
            )
        shapes.add(patches.shape)
        blobs.append(patches.astype(PATCH_DTYPE).tobytes())
    if len(shapes) > 1:
        raise ValueError(f"the items of one asset have patch features of shapes {sorted(shapes)}")
    return blobs, (shapes.pop() if shapes else None)


def _record_patch_shape(s: Any, shape: tuple[int, int]) -> None:
    """The first patch features fix the collection's shape; another shape is refused."""
    current = s.get(Meta, PATCH_SHAPE_KEY)
    text = f"{shape[0]}x{shape[1]}"
    if current is None:
        s.add(Meta(key=PATCH_SHAPE_KEY, value=text))
    elif parse_shape(current.value) != tuple(shape):
        raise CatalogError(
            f"This collection stores patch features of shape {current.value}, not {text}; "
            "they come from one encoder and grid per collection."
        )


def _bump_generation(s: Any) -> None:
    """Count one more committed write, inside the writing transaction itself."""
    # FOR UPDATE: on PostgreSQL two writing transactions (the indexer and a server's feedback)
    # queue here instead of both reading n and writing n + 1; SQLite's BEGIN IMMEDIATE already does.
    current = s.get(Meta, GENERATION_KEY, with_for_update=True)
    if current is None:
        s.add(Meta(key=GENERATION_KEY, value="1"))
    else:
        current.value = str(int(current.value) + 1)


_ASSET_COLUMNS = tuple(getattr(Asset, name) for name in ASSET_INFO_FIELDS)


def _asset_info(asset: Asset) -> AssetInfo:
    return AssetInfo(**{name: getattr(asset, name) for name in ASSET_INFO_FIELDS})


def _check_asset(asset: AssetInfo) -> None:
    if asset.kind not in ASSET_KINDS:
        raise ValueError(f"asset kind must be one of {ASSET_KINDS}, got {asset.kind!r}")


def _abspath(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))



__all__ = [
    "AssetInfo",
    "FeedbackEvent",
    "AssetState",
    "Catalog",
    "EncoderInfo",
    "FolderInfo",
    "ItemData",
    "ItemRecord",
    "UpsertResult",
]
