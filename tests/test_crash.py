"""kill -9 at any moment, then index again: the same collection a clean run gives.

Real subprocesses (tests/index_script.py) are killed with SIGKILL part-way through, more than
once, and then run to completion; a second home indexed without interruption is the reference.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_index import (
    assert_index_matches_catalog,
    asset_table,
    count_assets,
    run_script,
    start_script,
    wait_for_assets,
)
from PIL import Image

from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

pytestmark = pytest.mark.slow

N_PHOTOS = 150
# small commits and frequent index saves, so kills land between commits and saves alike;
# a short sleep per committed file keeps the run long enough to be killed part-way
RUN = dict(workers=2, batch_size=8, commit_every=4, save_every_s=0.2, throttle=0.01)


def kill_when(home: Path, at_least: int, photos: Path) -> int:
    proc = start_script(home, [photos], **RUN)
    try:
        wait_for_assets(home, at_least, proc)
        time.sleep(random.uniform(0, 0.2))  # anywhere: mid-batch, mid-commit, mid-save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return count_assets(home)


def assert_same_collection(crashed: Path, clean: Path) -> None:
    """Same assets with the same bytes, one item each, same vectors, same search results."""
    ids_crashed = assert_index_matches_catalog(crashed)
    ids_clean = assert_index_matches_catalog(clean)
    a, b = asset_table(crashed), asset_table(clean)
    assert {p: h for p, (h, _, _) in a.items()} == {p: h for p, (h, _, _) in b.items()}
    assert all(n == 1 for _, n, _ in a.values())  # nothing twice, nothing missing
    assert len(ids_crashed) == len(ids_clean) == len(a)
    with Collection(crashed, create=False) as ca, Collection(clean, create=False) as cb:
        paths = sorted(a)
        va = ca.catalog.vectors_for([a[p][2] for p in paths])[1]
        vb = cb.catalog.vectors_for([b[p][2] for p in paths])[1]
        np.testing.assert_allclose(va, vb, atol=1e-4)  # same seeded weights in every process
        queries = vb[:: max(1, len(paths) // 5)]
        for q in queries:
            sa, ia = ca.vectors.search(q[None], 10)
            sb, ib = cb.vectors.search(q[None], 10)
            pa = [r.path for r in ca.catalog.items_by_ids(ia[0])]
            pb = [r.path for r in cb.catalog.items_by_ids(ib[0])]
            assert pa == pb or np.allclose(sa, sb, atol=1e-4)  # equal, or ties reordered


def test_kill_9_mid_run_then_index_again_equals_a_clean_run(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", N_PHOTOS, seed=11, sizes=((320, 240),))
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"

    first = kill_when(crashed, 10, photos)
    second = kill_when(crashed, first + 40, photos)
    assert 10 <= first < second < N_PHOTOS  # both kills were part-way through
    summary = run_script(crashed, [photos], **RUN)
    assert summary["unchanged"] >= second  # committed files were not redone
    assert summary["new"] == N_PHOTOS - summary["unchanged"] and summary["skipped"] == []
    run_script(clean, [photos], workers=2)
    assert_same_collection(crashed, clean)

    # now the library changes: renames, deletions, edits and additions, and another kill
    files = sorted(p for p in photos.iterdir() if p.suffix in (".jpg", ".png"))
    rng = random.Random(5)
    rng.shuffle(files)
    for i, f in enumerate(files[:8]):
        f.rename(f.with_name(f"renamed_{i}{f.suffix}"))
    for f in files[8:16]:
        f.unlink()
    for i, f in enumerate(files[16:24]):
        Image.new("RGB", (64, 48), (i * 30, 255 - i * 30, 90)).save(f)
    write_photo_folder(photos / "more", 40, seed=12, sizes=((320, 240),))
    (photos / "more" / "captions.jsonl").unlink()

    before = count_assets(crashed)
    killed_at = kill_when(crashed, before + 10, photos)  # deletions first, then edits and new files
    assert killed_at < N_PHOTOS - 8 + 40
    summary = run_script(crashed, [photos], **RUN)
    assert summary["skipped"] == []
    run_script(clean, [photos], workers=2)
    assert_same_collection(crashed, clean)
    assert len(asset_table(crashed)) == N_PHOTOS - 8 + 40


def test_a_lost_or_corrupt_index_file_is_rebuilt_from_the_catalog(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 12, seed=13, sizes=((320, 240),))
    home = tmp_path / "home"
    run_script(home, [photos], workers=1, in_process=True)
    (home / "index" / "vectors.idx").write_bytes(b"garbage")
    summary = run_script(home, [photos], workers=1)
    assert summary["unchanged"] == 12 and summary["new"] == 0
    assert_index_matches_catalog(home)  # the run re-saved an index level with the catalog


def _index_command(photos: Path, home: Path, *extra: str) -> list[str]:
    """`mmsearch index` as a user runs it, with the same random weights in every run."""
    return [sys.executable, "-m", "mmsearch.cli", "index", str(photos), "--home", str(home),
            "--model", "mmsearch-tiny/random", "--workers", "2", "--batch-size", "4", "--json",
            *extra]  # fmt: skip


def _cli_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("MMSEARCH_VECTORS", None)
    return env


def _kill_part_way(command: list[str], home: Path, files: int) -> None:
    """Run the command and SIGKILL it once 20 files are committed; it was killed part-way."""
    proc = subprocess.Popen(command, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_assets(home, 20, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = count_assets(home)
    assert 20 <= killed_at < files, killed_at


def _run(command: list[str]) -> None:
    done = subprocess.run(command, env=_cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kill_9_of_the_real_mmsearch_index_command(tmp_path: Path) -> None:
    """The same invariant through the CLI users run: `mmsearch index` killed mid-run, then run again."""
    n = 600
    photos = write_photo_folder(tmp_path / "photos", n, seed=12, sizes=((320, 240),))
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    _kill_part_way(_index_command(photos, crashed), crashed, n)
    _run(_index_command(photos, crashed))
    _run(_index_command(photos, clean))
    assert_same_collection(crashed, clean)


def test_kill_9_of_an_index_run_onto_milvus_lite(tmp_path: Path) -> None:
    """Crash safety on Milvus as on FAISS: `mmsearch index --vectors milvus-lite:...` killed
    mid-run, then run again, leaves Milvus holding exactly the catalog's items with their
    vectors, and the store is not left locked by the killed run."""
    n = 400
    photos = write_photo_folder(tmp_path / "photos", n, seed=14, sizes=((320, 240),))
    home = tmp_path / "home"
    command = _index_command(photos, home, "--vectors", "milvus-lite:vectors.db")
    _kill_part_way(command, home, n)
    _run(command)
    with Collection(home, create=False) as collection:
        catalog_ids = collection.catalog.item_ids()
        store = collection.vectors
        assert collection.vector_store_spec == "milvus-lite:vectors.db"
        assert len(catalog_ids) == len(asset_table(home)) == n
        np.testing.assert_array_equal(np.sort(store.ids()), catalog_ids)
        _, stored = store.vectors(catalog_ids[:50])
        _, truth = collection.catalog.vectors_for(catalog_ids[:50])
        np.testing.assert_allclose(stored, truth, atol=1e-5)
