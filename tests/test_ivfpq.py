"""IVF-PQ with an exact re-score from a memory-mapped float16 file: training, incremental adds,
removal, filters, persistence and crash safety of the row file, and the size policy of ``auto``.

The backend also runs the shared tests of tests/test_vectors.py and tests/test_vector_stores.py
(there below its training size, as an exact index); here it is trained on small data."""

from __future__ import annotations

import numpy as np
import pytest

from mmsearch.errors import VectorIndexError
from mmsearch.query.exact import exact_topk
from mmsearch.query.metrics import knn_recall
from mmsearch.vectors import create_index, load_index, read_sidecar
from mmsearch.vectors import ivfpq as ivfpq_mod
from mmsearch.vectors.rowfile import Float16Rows

DIM = 32


def data(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """Clustered unit vectors with a shared direction (CLIP-like, not isotropic)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim)).astype(np.float32)
    x = 0.8 * np.ones(dim, np.float32) / np.sqrt(dim) + centres[rng.integers(0, 40, n)] / np.sqrt(
        dim
    )
    x = x + 0.35 * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def assert_finds_itself(index, vecs: np.ndarray, ids: np.ndarray) -> None:
    """Each vector's best match is itself (or a near-duplicate scoring the same in float16)."""
    scores, top = index.search(vecs, 10)  # k = 10: 160 candidates re-scored
    assert (top[:, 0] == ids).mean() >= 0.95 and (scores[:, 0] > 0.999).all()


@pytest.fixture
def trained():
    """4,000 vectors, trained at 2,000 (so the second half was added to trained lists)."""
    x = data(4000)
    ids = np.arange(4000, dtype=np.int64) * 3 + 7
    index = create_index("ivfpq", DIM, train_at=2000, nlist=16, pq_m=16)
    index.add(ids[:1000], x[:1000])
    assert not index.trained  # exact until enough vectors are in
    index.add(ids[1000:2000], x[1000:2000])
    assert index.trained
    index.add(ids[2000:], x[2000:])
    return index, ids, x


def test_untrained_is_exact_then_trains(trained):
    index, ids, x = trained
    fresh = create_index("ivfpq", DIM, train_at=2000)
    fresh.add(ids[:500], x[:500])
    assert "untrained" in fresh.factory
    _, found = fresh.search(x[:20], 5)
    _, want = exact_topk(x[:20], x[:500], 5)
    np.testing.assert_array_equal(found, ids[:500][want])
    assert index.factory.startswith("IVF16,PQ16x4fs")


def test_recall_after_rescore_and_rescore_helps(trained):
    index, ids, x = trained
    q = data(4100)[4000:]  # fresh draws of the same law
    _, truth = exact_topk(q, x, 10)
    recall = knn_recall(index.search(q, 10)[1], ids[truth], 10)
    index.rescore_factor = 1  # the raw 4-bit codes' own order
    raw = knn_recall(index.search(q, 10)[1], ids[truth], 10)
    assert recall >= 0.95 and recall > raw, (recall, raw)


def test_padding_rotation_when_pq_m_does_not_divide_dim(tmp_path):
    """pq_m = 12 over 32 dims: a random rotation pads to 36 (what 88 over 512 does at 512-d);
    adds stay incremental, search and persistence go through the rotation."""
    assert ivfpq_mod.default_pq_m(512) == 88 and ivfpq_mod.coded_dim(512, 88) == 528
    x = data(3000, seed=5)
    index = create_index("ivfpq", DIM, train_at=2000, nlist=16, pq_m=12, rescore_factor=60)
    index.add(np.arange(2000), x[:2000])
    assert index.trained and index.factory.startswith("RR36,IVF16,PQ12x4fs")
    structure = index._index
    index.add(np.arange(2000, 3000), x[2000:])
    assert index._index is structure
    q = data(3050)[3000:]
    _, truth = exact_topk(q, x, 10)
    assert knn_recall(index.search(q, 10)[1], truth, 10) >= 0.95
    index.save(tmp_path / "v.idx")
    loaded = load_index(tmp_path / "v.idx")
    assert loaded.factory == index.factory
    np.testing.assert_array_equal(loaded.search(q, 10)[1], index.search(q, 10)[1])


def test_row_scores_match_gathered_rows(tmp_path, monkeypatch):
    """``Float16Rows.scores`` (FAISS float16 kernel, in blocks, file and pending rows) equals the
    gathered rows' inner products, in the order asked."""
    from mmsearch.vectors import rowfile

    monkeypatch.setattr(rowfile, "SCORE_ROWS", 64)  # several blocks, one straddling the file end
    x = data(1000, seed=6)
    rows = Float16Rows(DIM)
    rows.append(x[:700])
    rows.persist(tmp_path / "v.idx", append_in_place=False)
    rows.append(x[700:])  # pending, in RAM
    pick = np.random.default_rng(0).permutation(1000)[:500]
    q = data(1001, seed=7)[1000]
    np.testing.assert_allclose(rows.scores(q, pick), rows.gather(pick) @ q, atol=1e-5)
    assert rows.scores(q, np.empty(0, np.int64)).shape == (0,)


def test_adds_after_training_are_incremental(trained):
    index, ids, x = trained
    structure = index._index
    more = data(500, seed=3)
    new_ids = np.arange(500, dtype=np.int64) + 10**6
    index.add(new_ids, more)
    assert index._index is structure and index.count == 4500  # no retraining, no rebuild
    assert_finds_itself(index, more[:50], new_ids[:50])


def test_retrains_only_after_the_documented_growth(monkeypatch):
    monkeypatch.setattr(ivfpq_mod, "RETRAIN_GROWTH", 2)
    x = data(5000, seed=4)
    index = create_index("ivfpq", DIM, train_at=1000)
    index.add(np.arange(1000), x[:1000])
    first = index._nlist
    index.add(np.arange(1000, 1900), x[1000:1900])
    assert index._nlist == first  # 1.9x: not yet
    index.add(np.arange(1900, 5000), x[1900:])
    assert index._nlist > first  # past 2x (the monkeypatched growth) with more lists wanted
    assert_finds_itself(index, x[::97], np.arange(5000)[::97])


def test_remove_and_upsert(trained):
    index, ids, x = trained
    gone = ids[::4]
    assert index.remove(gone) == len(gone)
    _, found = index.search(x[:200], 10)
    assert not np.isin(found, gone).any() and (found >= 0).all()
    index.add(ids[1:2], x[501:502])  # an upsert moves the id to a new vector
    _, top = index.search(x[501:502], 10)
    assert ids[1] in top[0, :2] and ids[501] in top[0, :2]
    assert index.count == 4000 - len(gone)


def test_filters_are_pushed_down(trained):
    index, ids, x = trained
    rng = np.random.default_rng(2)
    q = data(4020)[4000:]
    for share in (0.05, 0.5):
        allowed = np.sort(rng.choice(ids, int(share * len(ids)), replace=False))
        _, found = index._search_filtered(q, 10, allowed)  # the IVF walk with a selector
        assert np.isin(found, allowed).all() and (found >= 0).all()
        _, want = exact_topk(q, x[np.searchsorted(ids, allowed)], 10)
        assert knn_recall(found, allowed[want], 10) >= 0.9


def test_save_load_roundtrip_maps_the_row_file(trained, tmp_path):
    index, ids, x = trained
    path = tmp_path / "v.idx"
    index.save(path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == "v.idx" and files[1].endswith(".f16") and files[2] == "v.idx.json"
    row_file = tmp_path / files[1]
    assert row_file.stat().st_size == 4000 * DIM * 2  # float16, one row per vector
    loaded = load_index(path)
    assert isinstance(loaded._rows._map, np.memmap) and loaded._rows.pending == 0
    q = data(4030)[4000:]
    np.testing.assert_array_equal(loaded.search(q, 10)[1], index.search(q, 10)[1])
    got_ids, got = loaded.vectors(ids[[5, 9]])
    np.testing.assert_allclose(got, x[[5, 9]], atol=2e-3)
    info = read_sidecar(path)
    assert info["kind"] == "ivfpq" and 0 < info["memory"]["ram"] < 4000 * DIM * 4


def test_saves_append_in_place_and_cut_a_crashed_tail(trained, tmp_path):
    index, ids, x = trained
    path = tmp_path / "v.idx"
    index.save(path)
    row_file = index._rows.path
    # a crash after appending rows but before the container counting them was written
    with open(row_file, "ab") as f:
        f.write(b"\x01" * DIM * 2 * 3)
    loaded = load_index(path)  # the tail is not counted: it loads as saved
    assert loaded.count == 4000
    more = data(10, seed=8)
    loaded.add(np.arange(10, dtype=np.int64) + 10**6, more)
    loaded.save(path)
    assert loaded._rows.path == row_file  # appended to the same file, the junk tail replaced
    assert row_file.stat().st_size == 4010 * DIM * 2
    again = load_index(path)
    assert_finds_itself(again, more, np.arange(10) + 10**6)


def test_another_save_since_loading_gets_a_fresh_row_file(trained, tmp_path):
    """Rows another process may map are never rewritten: a process whose view is older than the
    saved index writes a fresh file (and the container names it)."""
    index, ids, x = trained
    path = tmp_path / "v.idx"
    index.save(path)
    reader = load_index(path)
    index.add(np.array([10**7]), x[:1])
    index.save(path)  # the writer appended a row
    writer_file, size = index._rows.path, index._rows.path.stat().st_size
    reader.add(np.array([10**8]), x[1:2])
    reader.save(path)  # the reader's view is older: it must not append over the writer's row
    assert reader._rows.path != writer_file and not writer_file.exists()
    assert load_index(path).count == 4001
    assert size == 4001 * DIM * 2


def test_compaction_writes_a_fresh_file_and_removes_the_old(trained, tmp_path):
    index, ids, x = trained
    path = tmp_path / "v.idx"
    index.save(path)
    old = index._rows.path
    index.remove(ids[:2100])  # past half dead: rows renumbered
    assert index._nrows == 1900
    index.save(path)
    assert not old.exists() and index._rows.path.exists()
    loaded = load_index(path)
    assert_finds_itself(loaded, x[3000:3010], ids[3000:3010])


def test_missing_or_short_row_file_is_reported(trained, tmp_path):
    index, _, _ = trained
    path = tmp_path / "v.idx"
    index.save(path)
    row_file = index._rows.path
    with open(row_file, "r+b") as f:
        f.truncate(100)
    with pytest.raises(VectorIndexError, match="corrupt"):
        load_index(path)
    row_file.unlink()
    with pytest.raises(VectorIndexError, match="corrupt"):
        load_index(path)


def test_float16_rows_gather_across_file_and_ram(tmp_path):
    rows = Float16Rows(4)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    rows.append(a)
    rows.persist(tmp_path / "i.idx", append_in_place=False)
    rows.append(a + 100)
    got = rows.gather(np.array([[4, 0], [2, 5]]))
    np.testing.assert_array_equal(got[0, 0], a[1] + 100)
    np.testing.assert_array_equal(got[1, 0], a[2])
    shared = rows.path
    rows.keep(np.array([1, 4]))  # renumbering never touches the shared file
    assert shared.stat().st_size == 3 * 4 * 2 and rows.path is None
    np.testing.assert_array_equal(rows.gather(np.array([0, 1])), [a[1], a[1] + 100])


# ----------------------------------------------------------------- the size policy of auto
def test_auto_policy_moves_flat_hnsw_ivfpq(monkeypatch, tmp_path):
    import mmsearch.store.faiss_store as faiss_store
    import mmsearch.vectors.factory as factory

    monkeypatch.setattr(factory, "AUTO_EXACT_MAX_VECTORS", 600)
    monkeypatch.setattr(factory, "AUTO_HNSW_MAX_VECTORS", 1500)
    monkeypatch.setattr(ivfpq_mod, "TRAIN_MIN", 1000)
    monkeypatch.setattr(ivfpq_mod, "TRAIN_PER_LIST", 40)
    assert [factory.choose_kind(n) for n in (600, 601, 1500, 1501)] == [
        "flat", "hnsw", "hnsw", "ivfpq",
    ]  # fmt: skip
    x = data(2500, seed=6)
    store = faiss_store.FileVectorStore.create(tmp_path / "v.idx", DIM, "enc")
    kinds = []
    for start in range(0, 2500, 500):
        store.add(np.arange(start, start + 500), x[start : start + 500])
        store.flush()
        kinds.append(store.kind)
    assert kinds == ["flat", "hnsw", "hnsw", "ivfpq", "ivfpq"]
    assert store.index.trained and store.index.expected == 2000
    again = faiss_store.FileVectorStore.load(tmp_path / "v.idx", "enc")
    assert again.kind == "ivfpq" and again.count == 2500
    assert_finds_itself(again, x[::50], np.arange(2500)[::50])
