"""One shared test run against every vector backend (after txtai testann/testdense.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmsearch.errors import ConfigError, EncoderMismatchError, VectorIndexError
from mmsearch.query.exact import exact_topk
from mmsearch.query.metrics import knn_recall
from mmsearch.vectors import (
    AUTO_EXACT_MAX_VECTORS,
    BACKENDS,
    choose_kind,
    create_index,
    load_index,
    read_sidecar,
    sidecar_path,
)

KINDS = sorted(BACKENDS)
DIM = 32


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray) -> np.ndarray:
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def small(kind):
    """An index of 300 vectors with sparse, non-contiguous ids."""
    rng = np.random.default_rng(1)
    vecs = unit(rng, 300)
    ids = np.arange(300, dtype=np.int64) * 7 + 1000
    index = create_index(kind, DIM, encoder="test-enc")
    index.add(ids, vecs)
    return index, ids, vecs


def test_add_search_preserves_ids(small):
    index, ids, vecs = small
    assert index.count == 300 == len(index)
    assert set(index.ids().tolist()) == set(ids.tolist())
    scores, found = index.search(vecs[:50], 1)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert found.shape == (50, 1)
    np.testing.assert_array_equal(found[:, 0], ids[:50])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)


def test_results_sorted_and_single_vector_query(small):
    index, _, vecs = small
    scores, found = index.search(vecs[0], 10)
    assert found.shape == (1, 10)
    assert (np.diff(scores[0]) <= 1e-6).all()
    assert len(set(found[0].tolist())) == 10


def test_exact_backends_match_ground_truth(kind):
    rng = np.random.default_rng(2)
    vecs, queries = unit(rng, 500), unit(rng, 20)
    index = create_index(kind, DIM)
    index.add(np.arange(500), vecs)
    _, truth = exact_topk(queries, vecs, 10)
    scores, found = index.search(queries, 10)
    if index.exact:
        # fp16 storage (the torch backend on CUDA) rounds scores by ~1e-3 and may swap near-ties.
        half = "float16" in index.factory
        assert knn_recall(found, truth, 10) >= (0.97 if half else 0.99)
        np.testing.assert_allclose(
            scores, np.sort(queries @ vecs.T, axis=1)[:, ::-1][:, :10], atol=3e-3 if half else 1e-5
        )
    else:
        assert knn_recall(found, truth, 10) >= 0.9


def test_remove_hides_results(small):
    index, ids, vecs = small
    gone = ids[::2]
    assert index.remove(np.concatenate([gone, [5, 6]])) == len(gone)  # unknown ids are ignored
    assert index.count == 300 - len(gone)
    assert index.remove(gone) == 0
    _, found = index.search(vecs, 10)
    assert not np.isin(found, gone).any()
    kept = ids[1::2]
    _, top = index.search(vecs[1::2], 1)
    np.testing.assert_array_equal(top[:, 0], kept)


def test_remove_most_then_everything(small):
    """Exercises compaction (HNSW tombstone rebuild, IVF store compaction) and the empty state."""
    index, ids, vecs = small
    index.remove(ids[:250])
    _, top = index.search(vecs[250:], 1)
    np.testing.assert_array_equal(top[:, 0], ids[250:])
    index.remove(ids)
    assert index.count == 0
    scores, found = index.search(vecs[:3], 4)
    assert (found == -1).all() and np.isneginf(scores).all()
    index.add(ids[:5], vecs[:5])
    _, top = index.search(vecs[:5], 1)
    np.testing.assert_array_equal(top[:, 0], ids[:5])


def test_add_is_an_upsert(small):
    index, ids, vecs = small
    replacement = -vecs[0:1]
    index.add(ids[:1], replacement)
    assert index.count == 300
    _, top = index.search(replacement, 1)
    assert top[0, 0] == ids[0]
    _, top = index.search(vecs[0:1], 1)
    assert top[0, 0] != ids[0]


def test_search_on_empty_index(kind):
    index = create_index(kind, DIM)
    scores, found = index.search(np.ones((3, DIM), np.float32), 5)
    assert found.shape == scores.shape == (3, 5)
    assert (found == -1).all() and np.isneginf(scores).all()
    assert index.remove([1, 2]) == 0
    assert index.ids().size == 0


def test_k_larger_than_count(kind):
    rng = np.random.default_rng(3)
    vecs = unit(rng, 4)
    index = create_index(kind, DIM)
    index.add([10, 20, 30, 40], vecs)
    scores, found = index.search(vecs[:2], 7)
    assert found.shape == (2, 7)
    assert sorted(found[0, :4].tolist()) == [10, 20, 30, 40]
    assert (found[:, 4:] == -1).all() and np.isneginf(scores[:, 4:]).all()
    assert np.isfinite(scores[:, :4]).all()


def test_bad_input_is_refused(kind):
    index = create_index(kind, DIM)
    with pytest.raises(ValueError):
        index.add([1, 2], np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        index.add([1, 1], np.zeros((2, DIM), np.float32))
    with pytest.raises(ValueError):
        index.add([1], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError):
        index.search(np.zeros((1, DIM - 1), np.float32), 3)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, DIM), np.float32), 0)


def test_save_load_roundtrip(small, tmp_path):
    index, ids, vecs = small
    index.remove(ids[:10])
    path = tmp_path / "vectors.idx"
    index.save(path)
    info = read_sidecar(path)
    assert info["encoder"] == "test-enc" and info["dim"] == DIM and info["metric"] == "ip"
    assert info["count"] == 290 and info["kind"] == index.kind and info["factory"] == index.factory
    assert info["format_version"] >= 1 and info["created_at"] and info["updated_at"]
    # no temp files left behind; an index re-scored from disk has its one row file beside it
    extra = {p.name for p in tmp_path.iterdir()} - {"vectors.idx", "vectors.idx.json"}
    row_files = 1 if index.kind == "ivfpq" else 0
    assert len(extra) == row_files and all(n.endswith(".f16") for n in extra)

    loaded = load_index(path, expect_encoder="test-enc")
    assert type(loaded) is type(index) and loaded.count == 290 and loaded.encoder == "test-enc"
    s1, i1 = index.search(vecs[:20], 5)
    s2, i2 = loaded.search(vecs[:20], 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)

    loaded.remove(ids[10:20])
    loaded.add([1], vecs[:1])
    loaded.save(path)  # overwrite in place
    again = load_index(path)
    assert again.count == 281
    assert read_sidecar(path)["created_at"] == info["created_at"]
    _, top = again.search(vecs[:1], 1)
    assert top[0, 0] == 1


def test_save_load_empty(kind, tmp_path):
    path = tmp_path / "empty.idx"
    create_index(kind, DIM).save(path, encoder="e")
    loaded = load_index(path, expect_encoder="e")
    assert loaded.count == 0
    loaded.add([3], unit(np.random.default_rng(0), 1))
    assert loaded.search(np.ones(DIM, np.float32), 2)[1][0, 0] == 3


def test_encoder_mismatch_is_refused(small, tmp_path):
    index, _, _ = small
    path = tmp_path / "v.idx"
    index.save(path)
    with pytest.raises(EncoderMismatchError) as err:
        load_index(path, expect_encoder="other-enc")
    message = str(err.value)
    assert "test-enc" in message and "other-enc" in message and "--model test-enc" in message


def test_missing_and_corrupt_files(small, tmp_path):
    index, _, _ = small
    with pytest.raises(VectorIndexError, match="missing"):
        load_index(tmp_path / "nope.idx")
    path = tmp_path / "v.idx"
    index.save(path)
    side = sidecar_path(path)
    info = json.loads(side.read_text())

    side.write_text(json.dumps({**info, "count": info["count"] + 1}))
    with pytest.raises(VectorIndexError, match="sidecar records"):
        load_index(path)

    side.write_text(json.dumps({**info, "generation": "stale"}))
    with pytest.raises(VectorIndexError, match="different saves"):
        load_index(path)

    side.write_text(json.dumps({**info, "format_version": 999}))
    with pytest.raises(VectorIndexError, match="newer"):
        load_index(path)

    side.write_text("{not json")
    with pytest.raises(VectorIndexError):
        load_index(path)

    side.write_text(json.dumps(info))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VectorIndexError, match="corrupt"):
        load_index(path)
    path.unlink()
    with pytest.raises(VectorIndexError, match="missing"):
        load_index(path)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "torch"])
def test_faiss_structures_are_read_from_the_container_file_directly(kind, tmp_path):
    """A cold start reads a FAISS structure straight from the container (one copy), not as an
    array copied again into FAISS; the result is the same, and a damaged one is still refused."""
    from mmsearch.vectors.base import StoredBlob, read_container

    rng = np.random.default_rng(11)
    index = create_index(kind, DIM)
    vecs = unit(rng, 300)
    index.add(np.arange(300, dtype=np.int64) + 1, vecs)
    path = tmp_path / "v.idx"
    index.save(path)
    blob = read_container(path)["faiss"]
    assert isinstance(blob, StoredBlob)
    with np.load(path) as npz:
        assert path.read_bytes()[blob.offset : blob.offset + blob.nbytes] == npz["faiss"].tobytes()
    loaded = load_index(path)
    assert loaded.search(vecs[:5], 3)[1].tolist() == index.search(vecs[:5], 3)[1].tolist()

    damaged = bytearray(path.read_bytes())
    damaged[blob.offset : blob.offset + 4] = b"XXXX"  # FAISS's own type tag
    path.write_bytes(bytes(damaged))
    with pytest.raises(VectorIndexError, match="corrupt"):
        load_index(path)


def _is_file_view(index) -> bool:
    from mmsearch.vectors.base import owned_faiss_index

    return owned_faiss_index(index._index) is not index._index


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "torch"])
def test_a_loaded_structure_is_a_view_of_its_file_until_it_changes(kind, tmp_path):
    """Opening maps the vectors from the file (no copy: a cold query opens a 100k store in
    ms); the first add or remove copies them (FAISS aborts the process when a view is resized),
    and nothing is ever written into the file through the view."""
    rng = np.random.default_rng(12)
    vecs = unit(rng, 400)
    ids = np.arange(400, dtype=np.int64) + 1
    index = create_index(kind, DIM)
    index.add(ids[:300], vecs[:300])
    path = tmp_path / "v.idx"
    index.save(path)
    saved = path.read_bytes()

    loaded = load_index(path)
    assert _is_file_view(loaded)
    assert loaded.search(vecs[:5], 3)[1].tolist() == index.search(vecs[:5], 3)[1].tolist()
    loaded.add(ids[300:], vecs[300:])
    assert not _is_file_view(loaded)
    assert loaded.remove(ids[:10]) == 10
    assert path.read_bytes() == saved
    assert loaded.count == 390
    assert loaded.search(vecs[10:400:13], 1)[1][:, 0].tolist() == ids[10:400:13].tolist()

    loaded.save(path)
    again = load_index(path)
    assert _is_file_view(again) and again.count == 390
    again.remove(ids[10:20])  # the first change may be a removal
    assert not _is_file_view(again) and again.count == 380


def test_a_reader_keeps_its_view_when_a_writer_replaces_the_file(tmp_path):
    """Saves replace the file (write, rename), so a reader's mapping keeps the old contents
    whole: it answers from what it opened, and the next open sees the new save."""
    rng = np.random.default_rng(13)
    vecs = unit(rng, 200)
    ids = np.arange(200, dtype=np.int64) + 1
    path = tmp_path / "v.idx"
    first = create_index("flat", DIM)
    first.add(ids[:100], vecs[:100])
    first.save(path)
    reader = load_index(path)
    writer = load_index(path)
    writer.remove(ids[:100])
    writer.add(ids[100:], vecs[100:])
    writer.save(path)
    assert reader.search(vecs[:3], 1)[1][:, 0].tolist() == ids[:3].tolist()
    assert load_index(path).search(vecs[150:153], 1)[1][:, 0].tolist() == ids[150:153].tolist()


def test_an_older_faiss_without_zero_copy_reads_a_copy(tmp_path, monkeypatch):
    import faiss

    rng = np.random.default_rng(14)
    vecs = unit(rng, 50)
    index = create_index("hnsw", DIM)
    index.add(np.arange(50, dtype=np.int64), vecs)
    index.save(tmp_path / "v.idx")
    monkeypatch.delattr(faiss, "ZeroCopyIOReader")
    loaded = load_index(tmp_path / "v.idx")
    assert not _is_file_view(loaded)
    assert loaded.search(vecs[:4], 1)[1][:, 0].tolist() == [0, 1, 2, 3]


def test_factory_errors_and_auto():
    with pytest.raises(ConfigError, match="Unknown vector index kind"):
        create_index("annoy", DIM)
    with pytest.raises(ConfigError, match="metric"):
        create_index("flat", DIM, metric="l2")
    with pytest.raises(ConfigError, match="Bad option"):
        create_index("flat", DIM, nprobe=3)
    assert choose_kind(None) == "flat"
    assert choose_kind(AUTO_EXACT_MAX_VECTORS) == "flat"
    assert choose_kind(AUTO_EXACT_MAX_VECTORS + 1) == "hnsw"
    assert create_index("auto", DIM, expected_count=10).kind == "flat"
    assert create_index("auto", DIM, expected_count=10**6).kind == "hnsw"


def test_import_is_cheap():
    code = "import sys, mmsearch.vectors; print('faiss' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------- approximate backends
APPROX = [k for k in KINDS if not BACKENDS[k].exact]


@pytest.fixture(scope="module")
def recall_data():
    """20k x 64 clustered gaussian vectors (normalised), 200 queries, exact top-10."""
    rng = np.random.default_rng(1234)
    dim = 64
    centers = rng.normal(size=(100, dim)).astype(np.float32)
    corpus = clustered(rng, 20_000, dim, centers)
    queries = clustered(rng, 200, dim, centers)
    ids = np.arange(20_000, dtype=np.int64) * 3 + 5
    _, truth = exact_topk(queries, corpus, 10)
    return corpus, queries, ids, ids[truth]


@pytest.mark.parametrize("approx_kind", APPROX)
def test_approximate_recall_against_exact(approx_kind, recall_data):
    corpus, queries, ids, truth = recall_data
    index = create_index(approx_kind, corpus.shape[1])
    index.add(ids, corpus)
    _, found = index.search(queries, 10)
    recall = knn_recall(found, truth, 10)
    assert recall >= 0.95, f"{index.factory}: recall@10 {recall:.3f}"
    # Remove a fifth (HNSW keeps them as tombstones, below its compaction threshold), including
    # every query's best hit: removed ids never come back and recall holds on what is left.
    removed = np.union1d(ids[::5], truth[:, 0])
    index.remove(removed)
    keep = ~np.isin(ids, removed)
    _, found = index.search(queries, 10)
    assert not np.isin(found, removed).any()
    _, truth_left = exact_topk(queries, corpus[keep], 10)
    recall = knn_recall(found, ids[keep][truth_left], 10)
    assert recall >= 0.95, f"{index.factory} after removal: recall@10 {recall:.3f}"


def test_ivf_rescoring_beats_raw_codes(recall_data):
    corpus, queries, ids, truth = recall_data
    recalls = {}
    for factor in (1, 4):
        index = create_index("ivf", corpus.shape[1], rescore_factor=factor)
        index.add(ids, corpus)
        recalls[factor] = knn_recall(index.search(queries, 10)[1], truth, 10)
    assert recalls[4] >= 0.95 and recalls[4] > recalls[1]


def test_ivf_retrains_as_collection_grows():
    rng = np.random.default_rng(5)
    vecs = unit(rng, 4000)
    index = create_index("ivf", DIM)
    index.add(np.arange(100), vecs[:100])
    first = index.factory
    index.add(np.arange(100, 4000), vecs[100:])
    assert index.factory != first  # more lists for the bigger collection
    _, top = index.search(vecs[::97], 1)
    np.testing.assert_array_equal(top[:, 0], np.arange(4000)[::97])


# ------------------------------------------------------------------ filters pushed down


@pytest.mark.parametrize("share", [0.01, 0.3, 0.9])
def test_allowed_equals_exact_search_restricted_to_the_filter(kind, share, monkeypatch):
    """A filtered search returns the exact top-k of the allowed ids, k of them when there are k."""
    import mmsearch.vectors.base as base

    rng = np.random.default_rng(7)
    vecs = unit(rng, 3000)
    ids = np.arange(3000, dtype=np.int64) * 3 + 11
    index = create_index(kind, DIM)
    index.add(ids, vecs)
    index.remove(ids[::10])  # tombstones too
    live = np.setdiff1d(ids, ids[::10])
    allowed = rng.choice(live, size=max(12, int(share * len(live))), replace=False)
    queries = unit(rng, 20)
    want_s, want_rows = exact_topk(queries, vecs[np.searchsorted(ids, np.sort(allowed))], 10)
    want = np.sort(allowed)[want_rows]
    # Both strategies: exact scoring of the subset, and the structure steered by a selector.
    for subset_max in (base.SUBSET_EXACT_MAX, 0):
        monkeypatch.setattr(base, "SUBSET_EXACT_MAX", subset_max)
        scores, found = index.search(queries, 10, allowed=allowed)
        assert (found >= 0).all(), "a filter that keeps enough ids must still return k results"
        assert np.isin(found, allowed).all()
        if index.exact or subset_max:
            assert (found == want).mean() > 0.99
            np.testing.assert_allclose(scores, want_s, atol=1e-3)
        else:
            assert knn_recall(found, want, 10) >= 0.95


def test_allowed_edge_cases(small):
    index, ids, vecs = small
    scores, found = index.search(vecs[:2], 5, allowed=np.array([], np.int64))
    assert (found == -1).all() and np.isneginf(scores).all()
    scores, found = index.search(vecs[:1], 5, allowed=np.array([ids[3], 999_999_999]))
    assert found[0, 0] == ids[3] and (found[0, 1:] == -1).all()
    got_ids, got = index.vectors(np.array([ids[5], 12345678, ids[2]]))
    assert got_ids.tolist() == [ids[5], ids[2]]
    np.testing.assert_allclose(got, vecs[[5, 2]], atol=1e-3)
