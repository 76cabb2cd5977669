"""The unchanged re-scan: `mmsearch index` over files it has already indexed, timed as a user runs it.

    python benchmarks/rescan.py                              # 100,000 files; goal: <= 10 s on 2 cores
    python benchmarks/rescan.py --files 2000 --first-index real

Creates N distinct 1x1 PNGs (100 per folder), indexes them once, then times `mmsearch -v index
ROOT --json` in a fresh process (`--runs` times) with nothing changed, and reports whether a
model was loaded (the encoder and sentence model log a line when they load; an unchanged
re-scan must load neither).

`--first-index real` indexes through `Engine.index` (decode, encode with `tiny`, one catalog
transaction per file: minutes for 100k on 2 cores). `direct` (the default above 5,000 files)
writes the state a real index would leave: each file's resolved path, size, mtime_ns and content
hash, its registered folder, and one random unit vector per file, bulk-inserted inside
`Collection.writer()`, which then mirrors the vectors into the store. The test suite checks at
small sizes that a scan sees such a home as unchanged, like a really indexed one.

When a run misses `--goal-s`, the same re-index runs in-process under cProfile and the top
functions by cumulative time are printed and saved. Results are appended to
benchmarks/results/rescan.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, bulk_insert, device_label, stamp  # noqa: E402

DIM = 128  # the tiny encoder's dimension
PER_FOLDER = 1000
MODEL_LOADED = re.compile(r"encoder \S+ ready on|loading text model")
"""Log lines (at -v) that the CLIP encoder or the sentence model printed when they loaded."""


def make_files(root: Path, n: int) -> list[Path]:
    """``n`` distinct 1x1 PNGs (the pixel colour is the file number), reused when already there."""
    from PIL import Image

    paths = [root / f"d{i // PER_FOLDER:03d}" / f"p{i:07d}.png" for i in range(n)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (1, 1), (i & 255, (i >> 8) & 255, (i >> 16) & 255)).save(path)
    return paths


def index_real(home: Path, root: Path) -> dict:
    from mmsearch import Engine

    with Engine(home=home, model="tiny", device="cpu") as engine:
        summary = engine.index([root])
    return {"first_index": "real", "new": summary.new}


def index_direct(home: Path, root: Path, paths: list[Path]) -> dict:
    """The catalog a real first index leaves, written in bulk (see the module docstring)."""
    from indexer.hashing import content_hash
    from indexer.scan import resolve_root
    from mmsearch.catalog.db import writer as write_engine
    from mmsearch.catalog.schema import Asset, Item
    from mmsearch.models import load_encoder
    from mmsearch.store import Collection

    real_root = resolve_root(root)
    with Collection(home) as collection, collection.writer() as w:
        w.bind_encoder("tiny", DIM)
        folder_id = collection.catalog.add_folder(real_root)
        chunks = _file_rows(real_root, root, paths, folder_id, content_hash)
        bulk_insert(write_engine(collection.catalog.engine), Asset, Item, chunks)
        w.rebuild_vectors()
        w.tag_pending(lambda: load_encoder("tiny", device="cpu"))  # as an index run leaves it
    return {"first_index": "direct", "new": len(paths)}


def _file_rows(real_root, root, paths, folder_id, hash_fn, chunk: int = 10_000):
    rng = np.random.default_rng(0)
    for start in range(0, len(paths), chunk):
        assets, items = [], []
        vecs = rng.standard_normal((len(paths[start : start + chunk]), DIM), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for j, path in enumerate(paths[start : start + chunk]):
            i = start + j + 1
            st = path.stat()
            assets.append({
                "id": i, "path": str(real_root / path.relative_to(root)), "folder_id": folder_id,
                "size": st.st_size, "mtime_ns": st.st_mtime_ns, "content_hash": hash_fn(path),
                "kind": "image", "width": 1, "height": 1,
            })  # fmt: skip
            items.append({"id": i, "asset_id": i, "kind": "image", "vector": vecs[j].tobytes()})
        yield assets, items


def cli() -> list[str]:
    """The installed `mmsearch` command next to this interpreter, else the same app via -c."""
    script = Path(sys.executable).with_name("mmsearch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mmsearch.cli import app; app()"]


def timed_reindex(home: Path, root: Path) -> dict:
    """One cold `mmsearch index` run: wall seconds, the summary, and whether a model loaded."""
    cmd = [*cli(), "-v", "index", str(root), "--home", str(home), "--model", "tiny", "--json"]
    env = {**os.environ, "COLUMNS": "200"}
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    return {
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 2),  # user + sys: what the wall time would be with no other load
        "model_loaded": bool(MODEL_LOADED.search(proc.stderr)),
        "unchanged": summary["unchanged"],
        "new": summary["new"],
        "changed": summary["changed"],
        "scan_and_apply_s": round(summary["seconds"], 2),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def profile_reindex(home: Path, root: Path, top: int = 20) -> str:
    """The same re-index in this process under cProfile: the top functions by cumulative time."""
    from mmsearch import Engine

    profiler = cProfile.Profile()
    with Engine(home=home, model="tiny", device="cpu") as engine:
        profiler.enable()
        engine.index([root])
        profiler.disable()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--first-index", choices=("auto", "real", "direct"), default="auto")
    ap.add_argument("--runs", type=int, default=3, help="timed re-index runs")
    ap.add_argument("--goal-s", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true", help="profile even when the goal is met")
    ap.add_argument("--work", type=Path, help="keep the files here (reused by later runs)")
    ap.add_argument("--home", type=Path, help="a home already indexed from these files: reuse it")
    ap.add_argument("--out", type=Path, default=RESULTS / "rescan.json")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-rescan-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / f"files_{args.files}"
    home = args.home or Path(tempfile.mkdtemp(prefix="home-", dir=work))
    t0 = time.perf_counter()
    paths = make_files(root, args.files)
    made_s = time.perf_counter() - t0
    how = args.first_index
    if how == "auto":
        how = "real" if args.files <= 5000 else "direct"
    t0 = time.perf_counter()
    if (home / "catalog.db").exists():
        first = {"first_index": "reused", "new": 0}
    elif how == "real":
        first = index_real(home, root)
    else:
        first = index_direct(home, root, paths)
    first["first_index_s"] = round(time.perf_counter() - t0, 1)
    runs = [timed_reindex(home, root) for _ in range(args.runs)]
    seconds = sorted(r["seconds"] for r in runs)
    cpu = sorted(r["cpu_s"] for r in runs)
    result = stamp({
        "files": args.files, "make_files_s": round(made_s, 1), **first, "runs": runs,
        "best_s": seconds[0], "median_s": seconds[len(seconds) // 2],
        "median_cpu_s": cpu[len(cpu) // 2], "goal_s": args.goal_s,
        "meets_goal": seconds[len(seconds) // 2] <= args.goal_s,
        "model_loaded": any(r["model_loaded"] for r in runs),
    })  # fmt: skip
    print(f"{args.files:,} unchanged files on {device_label(result['device'])}: "
          f"{', '.join(f'{s:.2f} s' for s in seconds)} wall, median {cpu[len(cpu) // 2]:.2f} s CPU "
          f"(goal {args.goal_s} s); load {result['load_avg_1m']}; "
          f"model loaded: {result['model_loaded']}")  # fmt: skip
    if args.profile or not result["meets_goal"]:
        result["profile"] = profile_reindex(home, root)
        print(result["profile"])
    append_results(args.out, [result])
    return result


if __name__ == "__main__":
    main()
