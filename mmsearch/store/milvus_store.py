"""Milvus as the vector store: an embedded Milvus Lite folder in the home, or a Milvus server.

    --vectors milvus-lite:PATH                 Milvus Lite data (PATH ends in .db; relative: in the home)
    --vectors milvus://HOST:PORT/COLLECTION    a Milvus server ($MMSEARCH_MILVUS_TOKEN: its token)

Each of a collection's stores (``vectors``: CLIP, ``text``: passages) is one Milvus collection
(``mmsearch_vectors`` in a Lite file; ``COLLECTION_vectors`` on a server) with the catalog's item
ids as its INT64 primary key (no auto id) and an inner-product index over unit vectors (cosine).
A metadata collection (``mmsearch_meta`` / ``COLLECTION_meta``) holds, per store, which catalog
(``owner``) and encoder it mirrors and the catalog write generation it was last flushed at: how
the collection tells whether the store is level with the catalog (`MilvusVectorStore.info`).

Writes reach Milvus at once (upserts and deletes); `flush` asks Milvus to persist them and
records the generation. Milvus Lite holds its folder for one process at a time (a file lock):
searching from one process while another indexes needs a Milvus server.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

LITE_SCHEME = "milvus-lite"
SERVER_SCHEME = "milvus"
TOKEN_ENV = "MMSEARCH_MILVUS_TOKEN"
DEFAULT_LITE_PATH = "milvus.db"

MAX_TOPK = 16_384
"""Milvus refuses a search (or a query page) asking for more results than this."""
FILTER_CHUNK = 4_096
"""Ids per ``id in [...]`` expression; an allow-list is searched chunk by chunk and merged."""
FILTER_MAX = 20_000
"""Allow-lists up to this size are pushed into Milvus as filters (in `FILTER_CHUNK` pieces);
larger ones are searched unfiltered with a wider k and filtered here, and scored exactly (their
vectors fetched) when that does not find k of them."""
WRITE_BATCH = 2_048
"""Rows per upsert / get request (well under gRPC's message size for 1024-d float32)."""
META_DIM = 2  # Milvus collections need a vector field; the metadata's is a placeholder

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INDEX_TYPES = {"flat": "FLAT", "torch": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}

# Milvus Lite: one embedded server per folder per process; stores opened on it are counted so
# the last one closed releases the folder (and its lock) for other processes.
_lite_users: dict[str, int] = {}
_lite_guard = threading.Lock()


def _pymilvus():
    try:
        import pymilvus
    except ImportError as exc:
        raise MissingDependencyError(
            "The Milvus vector store needs pymilvus (and milvus-lite for milvus-lite: files): "
            "pip install 'mmsearch[milvus]'  (or: pip install pymilvus milvus-lite)"
        ) from exc
    return pymilvus


class MilvusVectorStore:
    """A `VectorStore` in one Milvus collection, described by a row of the metadata collection."""

    def __init__(
        self,
        client: Any,
        *,
        collection: str,
        meta_collection: str,
        dim: int,
        encoder: str,
        preference: str,
        owner: str,
        where: str,
        lite_path: str | None = None,
        shared: bool = False,
    ) -> None:
        self.client = client
        self.collection = collection
        self.meta_collection = meta_collection
        self.dim = int(dim)
        self.encoder = encoder
        self.owner = owner or None
        self.where = where  # for messages: the Lite folder or the server URL
        self.lite_path = lite_path
        self.shared = shared  # a server other processes use: readers never write to it
        self.dirty = False  # changed since the last flush (the recorded generation is stale)
        self._generation: int | None = None
        self._index_type = "FLAT"
        self._open(preference, shared)

    # --------------------------------------------------------------- opening
    def _open(self, preference: str, shared: bool) -> None:
        self._ensure_meta()
        meta = self._read_meta()
        exists = self.client.has_collection(self.collection)
        if exists and meta is not None:
            reason = self._mismatch(meta)
            if reason and shared and reason.startswith("owner"):
                raise ConfigError(
                    f"The Milvus collection {self.collection} at {self.where} mirrors another "
                    f"catalog ({meta.get('owner')}), not this one ({self.owner}). Name another "
                    f"collection in the URL (milvus://HOST:PORT/OTHER)."
                )
            if reason:
                log.warning(
                    "%s at %s: %s; rebuilding it from the catalog",
                    self.collection,
                    self.where,
                    reason,
                )
                self.client.drop_collection(self.collection)
                exists = False
        elif exists:  # no description: not ours, or a crash between create and the first flush
            fields = self.client.describe_collection(self.collection).get("fields", [])
            names = {f.get("name") for f in fields}
            if names != {"id", "vector"}:
                raise ConfigError(
                    f"The Milvus collection {self.collection} at {self.where} was not made by "
                    f"mmsearch (fields {sorted(names)}); name another collection."
                )
        if not exists:
            self._create(preference)
            meta = None
            self.dirty = True
        else:
            self._index_type = (meta or {}).get("index_type", self._index_type)
            self._generation = (meta or {}).get("generation")
            self.client.load_collection(self.collection)
        if meta is None:
            self._write_meta()

    def _mismatch(self, meta: dict) -> str | None:
        if self.owner and meta.get("owner") and meta["owner"] != self.owner:
            return f"owner {meta['owner']} is another catalog"
        if meta.get("dim") != self.dim:
            return f"it holds {meta.get('dim')}-d vectors, not {self.dim}-d"
        if meta.get("encoder") != self.encoder:
            return f"it was built with the encoder {meta.get('encoder')!r}, not {self.encoder!r}"
        return None

    def _create(self, preference: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        self._index_type = _INDEX_TYPES.get(
            preference, "AUTOINDEX" if self.lite_path is None else "FLAT"
        )
        params = {"M": 16, "efConstruction": 200} if self._index_type == "HNSW" else {}
        if self._index_type == "IVF_FLAT":
            params = {"nlist": 128}
        index = self.client.prepare_index_params()
        index.add_index(
            field_name="vector", index_type=self._index_type, metric_type="IP", params=params
        )
        self.client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )

    def _ensure_meta(self) -> None:
        if self.client.has_collection(self.meta_collection):
            self.client.load_collection(self.meta_collection)
            return
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("info", DataType.VARCHAR, max_length=8192)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=META_DIM)
        index = self.client.prepare_index_params()
        index.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        self.client.create_collection(
            self.meta_collection, schema=schema, index_params=index, consistency_level="Strong"
        )

    def _read_meta(self) -> dict | None:
        rows = self.client.get(self.meta_collection, ids=[self.collection], output_fields=["info"])
        if not rows:
            return None
        try:
            return json.loads(rows[0]["info"])
        except (ValueError, KeyError, TypeError):
            return None

    def _write_meta(self) -> None:
        info = {
            "owner": self.owner,
            "encoder": self.encoder,
            "dim": self.dim,
            "index_type": self._index_type,
            "generation": self._generation,
            "count": self.count,
        }
        self.client.upsert(
            self.meta_collection,
            [{"name": self.collection, "info": json.dumps(info), "v": [0.0] * META_DIM}],
        )

    # ----------------------------------------------------------- VectorStore
    @property
    def kind(self) -> str:
        return f"milvus-{self._index_type.lower()}"

    @property
    def count(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self) -> np.ndarray:
        """Every id, read as id ranges of at most `MAX_TOPK` rows: a full page is split in two
        and read again (Milvus caps a query's limit and does not return rows in id order)."""
        out: list[np.ndarray] = []
        ranges = [(-(2**63), 2**63 - 1)]  # [lo, hi)
        while ranges:
            lo, hi = ranges.pop()
            rows = self.client.query(
                self.collection,
                filter=f"id >= {lo} and id < {hi}",
                output_fields=["id"],
                limit=MAX_TOPK,
            )
            if len(rows) < MAX_TOPK or hi - lo <= 1:
                out.append(np.fromiter((int(r["id"]) for r in rows), np.int64, len(rows)))
                continue
            mid = lo + (hi - lo) // 2
            ranges += [(lo, mid), (mid, hi)]
        return np.unique(np.concatenate(out)) if out else np.empty(0, np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), -1)
        if not len(ids):
            return
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors are {vectors.shape[1]}-d, this store holds {self.dim}-d")
        for start in range(0, len(ids), WRITE_BATCH):
            rows = [
                {"id": int(i), "vector": v}
                for i, v in zip(
                    ids[start : start + WRITE_BATCH].tolist(),
                    vectors[start : start + WRITE_BATCH].tolist(),
                )
            ]
            self.client.upsert(self.collection, rows)
        self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        removed = 0
        for start in range(0, len(ids), FILTER_CHUNK):
            present = self._present(ids[start : start + FILTER_CHUNK])
            if present:
                self.client.delete(self.collection, ids=present)
                removed += len(present)
        self.dirty = self.dirty or bool(removed)
        return removed

    def _present(self, ids: np.ndarray) -> list[int]:
        if not len(ids):
            return []
        rows = self.client.query(
            self.collection, filter=_in(ids), output_fields=["id"], limit=len(ids)
        )
        return [int(r["id"]) for r in rows]

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, np.int64).reshape(-1)
        found: dict[int, list[float]] = {}
        unique = np.unique(ids)
        for start in range(0, len(unique), WRITE_BATCH):
            chunk = unique[start : start + WRITE_BATCH].tolist()
            for row in self.client.get(self.collection, ids=chunk, output_fields=["vector"]):
                found[int(row["id"])] = row["vector"]
        present = np.asarray([i for i in ids.tolist() if i in found], np.int64)
        if not len(present):
            return present, np.empty((0, self.dim), np.float32)
        vecs = np.asarray([found[i] for i in present.tolist()], np.float32)
        return present, vecs

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        if q.shape[1] != self.dim:
            raise ValueError(f"queries are {q.shape[1]}-d, this store holds {self.dim}-d")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if not len(q):
            return _empty(0, k)
        if allowed is None:
            if k > MAX_TOPK:  # past Milvus' topk: score every vector here
                return self._exact(q, k, self.ids())
            return self._search(q, k, None)
        allowed = np.unique(np.asarray(allowed, np.int64).reshape(-1))
        if not len(allowed):
            return _empty(len(q), k)
        if len(allowed) <= FILTER_MAX and k <= MAX_TOPK:
            # pushed into Milvus: each chunk's best k among its ids, merged
            parts = [
                self._search(q, k, _in(allowed[s : s + FILTER_CHUNK]))
                for s in range(0, len(allowed), FILTER_CHUNK)
            ]
            return _merge(parts, k)
        total = self.count
        if k <= MAX_TOPK and total:
            wide = min(MAX_TOPK, max(k, int(np.ceil(k * total / len(allowed) * 1.5))))
            scores, found = self._search(q, wide, None)
            keep = np.isin(found, allowed) & (found >= 0)
            if (keep.sum(axis=1) >= min(k, len(allowed))).all():
                return _take(scores, found, keep, k)
        return self._exact(q, k, allowed)

    def _search(self, q: np.ndarray, k: int, expr: str | None) -> tuple[np.ndarray, np.ndarray]:
        limit = min(k, MAX_TOPK)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self._index_type == "HNSW":
            params["params"] = {"ef": max(64, limit)}
        elif self._index_type == "IVF_FLAT":
            params["params"] = {"nprobe": 128}  # every list: exact, and filters never starve
        result = self.client.search(
            self.collection,
            data=q.tolist(),
            limit=limit,
            filter=expr or "",
            output_fields=["id"],
            search_params=params,
            anns_field="vector",
        )
        scores, ids = _empty(len(q), k)
        for row, hits in enumerate(result):
            for col, hit in enumerate(list(hits)[:k]):
                ids[row, col] = int(hit["id"])
                scores[row, col] = float(hit["distance"])
        return scores, ids

    def _exact(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score exactly these ids' vectors (fetched in batches), best ``k`` kept as we go."""
        best = _empty(len(q), k)
        for start in range(0, len(ids), MAX_TOPK):
            present, vecs = self.vectors(ids[start : start + MAX_TOPK])
            if not len(present):
                continue
            s = q @ vecs.T
            best = _merge([best, (s.astype(np.float32), np.broadcast_to(present, s.shape))], k)
        return best

    def flush(self, generation: int | None = None) -> None:
        """Ask Milvus to persist what was written, then record the generation it is level with."""
        if not self.dirty and (generation is None or generation == self._generation):
            return
        self.client.flush(self.collection)
        if generation is not None:
            self._generation = generation
        self._write_meta()
        self.client.flush(self.meta_collection)
        self.dirty = False

    # ------------------------------------------------------------ extras
    def info(self) -> dict:
        """A sidecar-like description for status pages: kind, count, owner and the generation
        last recorded (by any process: read from the metadata collection)."""
        self._generation = (self._read_meta() or {}).get("generation", self._generation)
        return {
            "kind": self.kind,
            "count": self.count,
            "encoder": self.encoder,
            "dim": self.dim,
            "owner": {"collection": self.owner, "generation": self._generation},
        }

    def clear(self) -> None:
        """Drop every vector (a rebuild from the catalog follows)."""
        self.client.drop_collection(self.collection)
        self._create(_preference_of(self._index_type))
        self._generation = None
        self.dirty = True

    def close(self) -> None:
        """Release the connection; the last store closed on a Milvus Lite folder frees it."""
        if self.client is None:
            return
        client, self.client = self.client, None
        if self.lite_path is None:
            try:
                client.close()
            except Exception:
                pass
            return
        with _lite_guard:
            _lite_users[self.lite_path] = _lite_users.get(self.lite_path, 1) - 1
            last = _lite_users[self.lite_path] <= 0
            if last:
                del _lite_users[self.lite_path]
        try:
            client.close()
        except Exception:
            pass
        if last:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.lite_path)


# ------------------------------------------------------------------ helpers
def _preference_of(index_type: str) -> str:
    return {"HNSW": "hnsw", "IVF_FLAT": "ivf"}.get(index_type, "flat")


def _in(ids: np.ndarray) -> str:
    return f"id in [{','.join(str(int(i)) for i in ids)}]"


def _empty(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64)


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    scores = np.where(ids >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out_s = np.take_along_axis(scores, order, axis=1)
    out_i = np.take_along_axis(ids, order, axis=1)
    if out_s.shape[1] < k:
        pad_s, pad_i = _empty(len(out_s), k - out_s.shape[1])
        out_s, out_i = np.hstack([out_s, pad_s]), np.hstack([out_i, pad_i])
    out_i = np.where(np.isfinite(out_s), out_i, -1)
    return out_s.astype(np.float32), out_i.astype(np.int64)


def _take(scores: np.ndarray, ids: np.ndarray, keep: np.ndarray, k: int):
    return _merge([(np.where(keep, scores, -np.inf), np.where(keep, ids, -1))], k)


def _lite_client(path: Path) -> tuple[Any, str]:
    pymilvus = _pymilvus()
    try:
        import milvus_lite  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "milvus-lite: stores need Milvus Lite: pip install 'mmsearch[milvus]'  "
            "(or: pip install milvus-lite)"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.abspath(path)
    try:
        client = pymilvus.MilvusClient(uri=str(path))
    except Exception as exc:
        if _locked_elsewhere(Path(key)):
            raise ConfigError(
                f"The Milvus Lite store {path} is open in another process (Milvus Lite allows "
                f"one at a time; an `mmsearch serve` or `index` holds it). Stop it, or use a "
                f"Milvus server (--vectors milvus://HOST:PORT/COLLECTION) to search while indexing."
            ) from None
        raise ConfigError(f"Could not open the Milvus Lite store {path}: {exc}") from exc
    with _lite_guard:
        _lite_users[key] = _lite_users.get(key, 0) + 1
    return client, key


def _locked_elsewhere(folder: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    lock = folder / "LOCK"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def parse_server(spec: str) -> tuple[str, str]:
    """``milvus://HOST:PORT/COLLECTION`` -> (``http://HOST:PORT``, collection prefix)."""
    from urllib.parse import urlsplit

    parts = urlsplit(spec)
    if parts.password or parts.username:
        raise ConfigError(
            f"Put the Milvus credentials in ${TOKEN_ENV} (USER:PASSWORD or an API key), not in "
            "the URL: the URL is recorded in the home."
        )
    prefix = parts.path.strip("/") or "mmsearch"
    if not parts.hostname or not _NAME.match(prefix):
        raise ConfigError(
            f"Bad Milvus URL {spec!r}: use milvus://HOST:PORT/COLLECTION (COLLECTION: letters, "
            "digits and _, not starting with a digit)."
        )
    return f"http://{parts.hostname}:{parts.port or 19530}", prefix


def lite_path(spec: str, home: Path) -> Path:
    """The folder a ``milvus-lite:PATH.db`` spec names (a relative PATH is in the home)."""
    raw = spec.split(":", 1)[1] if ":" in spec else ""
    path = Path(os.path.expanduser(raw or DEFAULT_LITE_PATH))
    if not path.suffix == ".db":
        raise ConfigError(f"A Milvus Lite store is a path ending in .db, not {raw!r}.")
    return path if path.is_absolute() else Path(home) / path


def canonical_lite(spec: str, home: Path) -> str:
    return f"{LITE_SCHEME}:{lite_path(spec, home).resolve()}"


def canonical_server(spec: str, home: Path) -> str:
    uri, prefix = parse_server(spec)
    return f"{uri}/{prefix}"


def open_milvus_lite(
    spec: str, *, home: Path, name: str, dim: int, encoder: str, preference: str, owner: str
) -> MilvusVectorStore:
    path = lite_path(spec, home)
    client, key = _lite_client(path)
    try:
        return MilvusVectorStore(
            client, collection=f"mmsearch_{name}", meta_collection="mmsearch_meta", dim=dim,
            encoder=encoder, preference=preference, owner=owner, where=str(path), lite_path=key,
        )  # fmt: skip
    except BaseException:
        with _lite_guard:
            _lite_users[key] -= 1
        raise


def open_milvus_server(
    spec: str, *, home: Path, name: str, dim: int, encoder: str, preference: str, owner: str
) -> MilvusVectorStore:
    pymilvus = _pymilvus()
    uri, prefix = parse_server(spec)
    try:
        client = pymilvus.MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""))
    except Exception as exc:
        raise ConfigError(f"Could not reach the Milvus server at {uri}: {exc}") from exc
    return MilvusVectorStore(
        client, collection=f"{prefix}_{name}", meta_collection=f"{prefix}_meta", dim=dim,
        encoder=encoder, preference=preference, owner=owner, where=uri, shared=True,
    )  # fmt: skip
