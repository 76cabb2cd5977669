"""Searching while another process indexes: every result resolves, counts only grow, no errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers_index import assert_index_matches_catalog, count_assets, start_script

from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

pytestmark = pytest.mark.slow

N_PHOTOS = 200


def encoder_bound(home) -> bool:
    if count_assets(home) == 0:
        return False
    with Collection(home, create=False) as collection:
        return collection.encoder_name() is not None


def test_search_while_indexing_sees_committed_data_only(tmp_path) -> None:
    photos = write_photo_folder(tmp_path / "photos", N_PHOTOS, seed=21, sizes=((320, 240),))
    home = tmp_path / "home"
    proc = start_script(
        home, [photos], workers=2, batch_size=8, commit_every=5, save_every_s=0.3, throttle=0.01
    )
    rng = np.random.default_rng(0)
    seen: list[int] = []
    try:
        while proc.poll() is None and not encoder_bound(home):
            time.sleep(0.05)
        while proc.poll() is None:
            with Collection(home, create=False) as collection:
                collection.refresh()
                index = collection.vectors
                query = rng.normal(size=(1, index.dim)).astype(np.float32)
                query /= np.linalg.norm(query)
                _, ids = index.search(query, 20)
                found = ids[0][ids[0] >= 0]
                records = collection.catalog.items_by_ids(found)
                assert [r.id for r in records] == found.tolist()  # every hit resolves
                assert all(r.path.startswith(str(photos)) for r in records)
                assert set(index.ids().tolist()) <= set(collection.catalog.item_ids().tolist())
                seen.append(index.count)
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert seen == sorted(seen)  # counts never go down
    assert any(0 < n < N_PHOTOS for n in seen), seen  # searched part-way through
    assert len(seen) >= 3
    assert assert_index_matches_catalog(home).size == N_PHOTOS


def test_server_answers_concurrent_searches_while_an_index_run_adds_files(tmp_path) -> None:
    """The load test at a small size: real server, real index run, concurrent clients, 0 errors."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("load_test", path)
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    row = load_test.run(clients=6, seconds=4, photos=20, added=20, workdir=tmp_path)
    assert row["errors"] == 0, row["first_errors"]
    assert row["requests"] >= 6 and row["index_run_exit"] == 0
