"""The shared `VectorStore` test, run on every registered store (and every kind of each store):
a new backend (Milvus, pgvector, ...) registers itself and joins this list.

Milvus runs for real: ``milvus-lite:`` as an embedded folder in the home, ``milvus://`` against
Milvus Lite's gRPC server started in this process (the same protocol a Milvus server speaks)."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.store import VectorStore, open_vector_store
from mmsearch.store.registry import vector_store_schemes
from mmsearch.vectors import BACKENDS

DIM = 16
CASES = [(scheme, kind) for scheme in vector_store_schemes() for kind in sorted(BACKENDS)]
SPECS = {"faiss": "faiss", "milvus-lite": "milvus-lite:vectors.db", "milvus": None}  # None: server


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A Milvus gRPC endpoint (Milvus Lite's server in a thread) for the ``milvus://`` store."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path_factory.mktemp("milvus") / "data"))
    yield f"127.0.0.1:{port}"
    server.stop(grace=0)
    db.close()


def unit(rng, n):
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=CASES, ids=[f"{s}-{k}" for s, k in CASES])
def store_factory(request, tmp_path):
    scheme, kind = request.param
    assert scheme in SPECS, f"add a spec for the new vector store {scheme!r} to SPECS"
    spec = SPECS[scheme]
    if spec is None:  # a server: one collection per test
        address = request.getfixturevalue("milvus_server")
        spec = f"milvus://{address}/t_{request.node.name.split('[')[1].replace('-', '_')[:-1]}"

    def make() -> VectorStore:
        return open_vector_store(
            spec, home=tmp_path, name="vectors", dim=DIM, encoder="test", preference=kind,
            owner="collection-a",
        )  # fmt: skip

    return make


def test_store_add_search_remove_flush_reopen(store_factory):
    rng = np.random.default_rng(3)
    store = store_factory()
    assert isinstance(store, VectorStore) and store.count == 0 and store.dim == DIM
    vecs = unit(rng, 200)
    ids = np.arange(200, dtype=np.int64) * 5 + 7
    store.add(ids, vecs)
    store.add(ids[:10], vecs[:10])  # an upsert: replaying a batch counts once
    assert store.count == 200 and sorted(store.ids().tolist()) == ids.tolist()
    scores, found = store.search(vecs[:5], 3)
    assert found[:, 0].tolist() == ids[:5].tolist() and np.allclose(scores[:, 0], 1, atol=1e-3)
    allowed = ids[100:110]
    _, only = store.search(vecs[:5], 5, allowed=allowed)
    assert np.isin(only, allowed).all() and (only >= 0).all()
    got_ids, got = store.vectors(ids[[3, 1]])
    assert got_ids.tolist() == ids[[3, 1]].tolist() and np.allclose(got, vecs[[3, 1]], atol=1e-3)
    assert store.remove(ids[:50]) == 50 and store.count == 150
    assert store.remove(np.array([999_999])) == 0
    store.flush(generation=7)
    again = store_factory()
    assert again.count == 150 and sorted(again.ids().tolist()) == ids[50:].tolist()
    _, found = again.search(vecs[60:61], 1)
    assert found[0, 0] == ids[60]


def test_a_reader_never_writes_to_a_shared_server_store(milvus_server, tmp_path):
    """Only the writer brings a store other processes share (a Milvus server) level with the
    catalog: a reader with a stale view must not delete what a writer just added, while with an
    in-process store a reader does sync its own copy."""
    from mmsearch.catalog import AssetInfo, ItemData
    from mmsearch.store import Collection

    rng = np.random.default_rng(5)
    for spec, shared in ((f"milvus://{milvus_server}/readers", True), ("faiss", False)):
        home = tmp_path / spec.split(":")[0]
        with Collection(home, vector_store=spec) as c, c.writer() as w:
            w.bind_encoder("test", DIM)
            asset = AssetInfo(path=str(home / "a.png"), kind="image", size=1, mtime_ns=1, content_hash="a")
            w.write(asset, [ItemData("image", None, None, None, unit(rng, 1)[0])])
        with Collection(home) as reader:
            reader.refresh()
            reader.vectors.add(np.array([999], np.int64), unit(rng, 1))  # a writer's fresh vector
            reader._seen_generation = None  # as after the next commit
            reader.refresh()
            assert (999 in reader.vectors.ids().tolist()) is shared, spec


def test_a_fresh_reader_skips_the_id_comparison_only_when_the_file_is_level(tmp_path, monkeypatch):
    """Every committed write bumps the catalog's generation and the saved index records the one
    it mirrors: a new process compares all ids with the catalog (O(n) at cold start) only when
    they differ, e.g. after a writer was killed between its commit and its save."""
    import shutil

    from mmsearch.catalog import AssetInfo, ItemData
    from mmsearch.catalog.store import Catalog
    from mmsearch.store import Collection
    from mmsearch.vectors import read_sidecar

    rng = np.random.default_rng(9)
    home = tmp_path / "home"
    calls: list[int] = []
    real_item_ids = Catalog.item_ids

    def counted(self):
        calls.append(1)
        return real_item_ids(self)

    monkeypatch.setattr(Catalog, "item_ids", counted)

    def add(name: str) -> None:
        with Collection(home) as c, c.writer() as w:
            w.bind_encoder("test", DIM)
            asset = AssetInfo(path=str(home / name), kind="image", size=1, mtime_ns=1, content_hash=name)
            w.write(asset, [ItemData("image", None, None, None, unit(rng, 1)[0])])

    def fresh_reader_count() -> int:
        calls.clear()
        with Collection(home) as reader:
            reader.refresh()
            return reader.vectors.count

    add("a.png")
    add("b.png")
    assert fresh_reader_count() == 2 and calls == []  # level: no comparison

    saved = tmp_path / "saved-index"
    shutil.copytree(home / "index", saved)
    add("c.png")  # committed ...
    shutil.rmtree(home / "index")
    shutil.copytree(saved, home / "index")  # ... but the index file is the one before it
    assert fresh_reader_count() == 3 and calls == [1]  # compared, found c, saved
    assert fresh_reader_count() == 3 and calls == []

    with Collection(home) as c:
        c.catalog.reset_tags("cat\n")  # the catalog moves on; no vector changes
        moved_to = c.catalog.generation()
    assert fresh_reader_count() == 3 and calls == [1]  # compared once, recorded the level ...
    sidecar = read_sidecar(home / "index" / "vectors.idx")
    assert sidecar["owner"]["generation"] == moved_to
    assert fresh_reader_count() == 3 and calls == []  # ... so the next process skips it
