"""Shared by the pipeline, crash and concurrency tests: a seeded encoder, checks, a script runner."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from mmsearch.store import Collection
from mmsearch.vectors import load_index

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("index_script.py")
ENCODER = "mmsearch-tiny/random"
SEED = 0  # random init is seeded, so every process builds the same weights


@cache
def tiny_encoder():
    """The tiny architecture with seeded random weights: plumbing, not semantics."""
    import torch

    from mmsearch.models import load_encoder

    state = torch.random.get_rng_state()
    torch.manual_seed(SEED)
    try:
        return load_encoder(ENCODER)
    finally:
        torch.random.set_rng_state(state)


@dataclass
class RecordingProgress:
    """A ProgressReporter that remembers what it was told: how many files were decoded."""

    starts: list[tuple[int, str]] = field(default_factory=list)
    advanced: int = 0
    finished: int = 0

    def start(self, total: int, description: str) -> None:
        self.starts.append((total, description))

    def advance(self, n: int = 1) -> None:
        self.advanced += n

    def finish(self) -> None:
        self.finished += 1

    @property
    def total(self) -> int:
        return sum(t for t, _ in self.starts)


def assert_index_matches_catalog(home: Path) -> np.ndarray:
    """The saved index file holds exactly the catalog's item ids (no sync needed); returns them."""
    with Collection(home, create=False) as collection:
        catalog_ids = collection.catalog.item_ids()
        saved = load_index(collection.home / "index" / "vectors.idx")
        index_ids = np.sort(saved.ids())
    assert len(catalog_ids) == len(np.unique(catalog_ids))
    np.testing.assert_array_equal(index_ids, catalog_ids)
    return catalog_ids


def vectors_by_path(home: Path) -> dict[str, np.ndarray]:
    """Each stored item's vector by its file's path (one item per file: pictures)."""
    with Collection(home, create=False) as collection:
        ids, vectors = collection.catalog.vectors_for(collection.catalog.item_ids())
        records = collection.catalog.items_by_ids(ids)
    return {r.path: v for r, v in zip(records, vectors)}


def asset_table(home: Path) -> dict[str, tuple[str, int, int]]:
    """{path: (content_hash, item count, first item id)} straight from SQLite, for comparisons."""
    with sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT a.path, a.content_hash, count(i.id), min(i.id) FROM assets a "
            "LEFT JOIN items i ON i.asset_id = a.id GROUP BY a.id"
        ).fetchall()
        orphans = db.execute(
            "SELECT count(*) FROM items WHERE asset_id NOT IN (SELECT id FROM assets)"
        ).fetchone()[0]
    db.close()
    assert orphans == 0, "items without an asset"
    return {path: (digest, n, first) for path, digest, n, first in rows}


def count_assets(home: Path) -> int:
    """Committed assets, read without the catalog code (so polling never writes or migrates)."""
    db_path = home / "catalog.db"
    if not db_path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM assets").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def script_command(home: Path, roots: list[Path], **options: object) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), str(home), *map(str, roots)]
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_script(home: Path, roots: list[Path], **options: object) -> subprocess.Popen:
    """Index in a real subprocess (tests/index_script.py); its summary is JSON on stdout."""
    return subprocess.Popen(
        script_command(home, roots, **options),
        cwd=REPO,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_script(home: Path, roots: list[Path], timeout: float = 300, **options: object) -> dict:
    proc = start_script(home, roots, **options)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"index script failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def wait_for_assets(home: Path, at_least: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Poll the catalog until `at_least` assets are committed; fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count_assets(home)
        if n >= at_least:
            return n
        if proc.poll() is not None:
            raise AssertionError(
                f"the index run ended (rc {proc.returncode}) with {n} assets, "
                f"before {at_least}:\n{proc.stderr.read()[-3000:] if proc.stderr else ''}"
            )
        time.sleep(0.02)
    raise AssertionError(f"fewer than {at_least} assets after {timeout} s")
