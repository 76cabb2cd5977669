"""Milvus as the vector store, for real (Milvus Lite in the home; the shared store test in
tests/test_vector_stores.py also runs the ``milvus://`` server path)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indexer.pipeline import IndexOptions
from mmsearch import Engine
from mmsearch.errors import ConfigError, MissingDependencyError
from mmsearch.query.model import Filters
from mmsearch.store import milvus_store, open_vector_store
from mmsearch.store.milvus_store import MilvusVectorStore
from mmsearch.synth.media import write_photo_folder

SPEC = "milvus-lite:vectors.db"
FAST = {"rerank": ("none",)}


def _paths(hits):
    return [h.path for h in hits]


def test_engine_on_milvus_lite_indexes_searches_deletes_and_reopens(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 12, seed=71)
    opts = IndexOptions(in_process=True)
    with Engine(tmp_path / "faiss", "tiny") as ref:  # the same collection on the file store
        ref.index([photos], options=opts)
        picture = sorted(photos.glob("*.jpg"))[0]
        ref_text = _paths(ref.search("a red circle", k=5, **FAST))
        ref_image = _paths(ref.search(image=picture, k=3, **FAST))
    home = tmp_path / "home"
    with Engine(home, "tiny", vector_store=SPEC) as e:
        summary = e.index([photos], options=opts)
        assert summary.new == 12
        assert (home / "vectors.db").is_dir() and not (home / "index" / "vectors.idx").exists()
        store = e.collection.vectors
        assert isinstance(store, MilvusVectorStore) and store.count == 12

        assert _paths(e.search("a red circle", k=5, **FAST)) == ref_text  # same as on FAISS
        pngs = e.search("a red circle", k=5, filters=Filters(paths=("*.png",)), **FAST)
        assert pngs and all(h.path.endswith(".png") for h in pngs)
        assert _paths(e.search(image=picture, k=3, **FAST)) == ref_image
        pngs = e.search(image=picture, k=3, filters=Filters(paths=("*.png",)), **FAST)
        assert pngs and all(h.path.endswith(".png") for h in pngs)  # filter pushed into Milvus

        status = e.status()
        assert status.index_kind.startswith("milvus") and status.index_count == 12
        assert status.index_state == "level"

    picture.unlink()
    with Engine(home) as e:  # the store is not named again: the home recorded it
        assert e.collection.vector_store_spec == SPEC
        assert e.index([photos], options=opts).deleted == 1
        assert isinstance(e.collection.vectors, MilvusVectorStore)
        assert e.collection.vectors.count == 11
        hits = e.search("a red circle", k=20, **FAST)
        assert len(hits) == 11 and str(picture.resolve()) not in _paths(hits)
        assert e.status().index_state == "level"


def test_large_allow_lists_and_k_past_milvus_topk_fall_back_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(300, dtype=np.int64) * 3 + 1
    store = open_vector_store(
        SPEC, home=tmp_path, name="vectors", dim=8, encoder="t", preference="flat", owner="c"
    )
    store.add(ids, vecs)
    q = vecs[:4]
    exact = q @ vecs.T

    def best(allowed, k):
        mask = np.isin(ids, allowed)
        s = np.where(mask, exact, -np.inf)
        return ids[np.argsort(-s, axis=1)[:, :k]]

    allowed = ids[::2]
    assert (store.search(q, 7, allowed)[1] == best(allowed, 7)).all()  # one id-in filter
    monkeypatch.setattr(milvus_store, "FILTER_CHUNK", 40)  # 4 filtered searches, merged
    assert (store.search(q, 7, allowed)[1] == best(allowed, 7)).all()
    monkeypatch.setattr(milvus_store, "FILTER_MAX", 50)  # past it: widened search, filtered here
    assert (store.search(q, 7, allowed)[1] == best(allowed, 7)).all()
    monkeypatch.setattr(milvus_store, "MAX_TOPK", 20)  # k past Milvus' limit: exact scoring
    assert store.ids().tolist() == ids.tolist()  # read in id ranges of at most 20 rows
    scores, found = store.search(q, 160, allowed)
    assert (found[:, :150] == best(allowed, 150)).all() and (found[:, 150:] == -1).all()
    _, found = store.search(q, 300)
    assert (found == best(ids, 300)).all()
    store.close()


def test_missing_pymilvus_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmsearch\[milvus\]'"):
        open_vector_store(SPEC, home=tmp_path, name="vectors", dim=8, encoder="t")


def test_bad_specs_and_a_lite_store_held_by_another_process(tmp_path):
    with pytest.raises(ConfigError, match=r"\.db"):
        open_vector_store("milvus-lite:vectors", home=tmp_path, name="v", dim=8, encoder="t")
    with pytest.raises(ConfigError, match="MMSEARCH_MILVUS_TOKEN"):
        open_vector_store("milvus://u:pw@h:1/c", home=tmp_path, name="v", dim=8, encoder="t")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pymilvus import MilvusClient
            MilvusClient({str(tmp_path / "held.db")!r})
            print("open", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match="another process"):
            open_vector_store("milvus-lite:held.db", home=tmp_path, name="v", dim=8, encoder="t")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_store_that_does_not_open_is_not_recorded_and_readers_keep_the_recorded_one(
    tmp_path, monkeypatch
):
    """A spec is recorded only once its store opened (a bad one would break every later
    command); a reader asked for another store than the recorded one (a flag, or
    $MMSEARCH_VECTORS left set) refuses, instead of searching it empty or creating it."""
    photos = write_photo_folder(tmp_path / "photos", 4, seed=72)
    opts = IndexOptions(in_process=True)
    home = tmp_path / "home"
    with Engine(home, "tiny") as e:
        e.index([photos], options=opts)
        hits = _paths(e.search("a red circle", k=3, **FAST))
    with pytest.raises(ConfigError, match="Unknown vector store 'bogus:x'"):
        Engine(home, vector_store="bogus:x").index([photos], options=opts)
    with pytest.raises(ConfigError, match="Unknown vector store"):
        Engine(tmp_path / "new", vector_store="bogus:x").index([photos], options=opts)
    assert not (tmp_path / "new").exists()  # refused before a catalog was made there
    with Engine(home, vector_store="milvus-lite:vectors") as e, pytest.raises(ConfigError, match=r"\.db"):
        e.index([photos], options=opts)  # a known scheme that does not open
    with Engine(home) as e:
        assert e.collection.vector_store_spec is None  # still the file store
        assert _paths(e.search("a red circle", k=3, **FAST)) == hits
    monkeypatch.setenv("MMSEARCH_VECTORS", SPEC)
    with Engine(home) as e, pytest.raises(ConfigError, match="keeps its vectors in faiss, not milvus-lite"):
        e.search("a red circle", k=3, **FAST)
    assert not (home / "vectors.db").exists()  # the reader created nothing
    with Engine(home) as e:  # `index` with the variable set moves the collection there
        e.index([photos], options=opts)
        assert e.collection.vector_store_spec == SPEC and (home / "vectors.db").is_dir()
    monkeypatch.delenv("MMSEARCH_VECTORS")
    with Engine(home) as e:
        assert _paths(e.search("a red circle", k=3, **FAST)) == hits
    for spelling in ("milvus-lite:./vectors.db", f"milvus-lite:{home / 'vectors.db'}"):
        with Engine(home, vector_store=spelling) as e:  # the same store, spelled otherwise
            assert _paths(e.search("a red circle", k=3, **FAST)) == hits
            assert e.collection.catalog.get_meta("vector_store") == SPEC
    with Engine(home, vector_store="faiss") as e, pytest.raises(ConfigError, match="keeps its vectors in milvus-lite"):
        e.status()  # status reads the store too


def test_specs_naming_one_store_in_other_spellings_are_the_same_store(tmp_path):
    from mmsearch.store.registry import same_store

    assert same_store("milvus://h/c", "milvus://h:19530/c/", tmp_path)
    assert not same_store("milvus://h/c", "milvus://h/d", tmp_path)
    assert same_store("milvus-lite:v.db", f"milvus-lite:{tmp_path}/v.db", tmp_path)
    assert not same_store("milvus-lite:v.db", "milvus-lite:w.db", tmp_path)
    assert same_store("faiss", "faiss", tmp_path) and not same_store("faiss", SPEC, tmp_path)
