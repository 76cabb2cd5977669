"""`query_latency.py` against the engine before the query-layer redesign (commit 085ccce).

    git worktree add /tmp/old 085ccce
    cd /tmp/old && /work/main/.venv/bin/python /work/main/benchmarks/query_latency_085ccce.py

Run from the old checkout (its `mmsearch` is imported from the current directory); the homes
hold the same synthetic rows as `query_latency.py` (same seed, same 1% folder and video
subsets), bulk-inserted into the old schema. That engine knew no path or date filters, only
`types`, which it applied after the vector search (over-fetching until k hits survived), so only
the `none` and `type` cases exist here. Its vector index was rebuilt from the catalog when an
engine first searched; the warm-up query absorbs that, as in `query_latency.py`.
Rows are appended to benchmarks/results/query_latency.json with ``"api": "085ccce"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import query_latency as ql  # noqa: E402
from _common import RESULTS, append_results, bulk_insert, percentile_ms, set_torch_threads, stamp  # noqa: E402

sys.path.insert(0, str(Path.cwd()))  # the old checkout wins over the one query_latency added


def old_tree() -> Path:
    """The checkout whose `mmsearch` this run measures; refuses to measure the current one."""
    import mmsearch

    root = Path(mmsearch.__file__).resolve().parents[1]
    if root == HERE.parent:
        raise SystemExit("Run this from a checkout of 085ccce (see the docstring), not from main.")
    return root


def build_home(home: Path, n: int) -> dict:
    from mmsearch.catalog.db import writer
    from mmsearch.catalog.schema import Asset, Item
    from mmsearch.catalog.store import Catalog

    began = time.perf_counter()
    with Catalog.open(home / "catalog.db") as catalog:
        catalog.bind_encoder(ql.ENCODER, ql.DIM)
        bulk_insert(writer(catalog.engine), Asset, Item, ql.synthetic_chunks(n))
    return {"build": "bulk", "build_s": round(time.perf_counter() - began, 1)}


def measure(home: Path, k: int, queries: int) -> list[dict]:
    from mmsearch import Engine

    texts = ql.sentences(queries + 1)
    rows = []
    with Engine(home=home, model=ql.ENCODER, device="cpu") as engine:
        for case, types in (("none", None), ("type", ["video"])):
            lat, got, cpu = [], [], 0.0
            for i, text in enumerate(texts):
                t0, c0 = time.perf_counter(), time.process_time()
                results = engine.search(text, k, types=types)
                if i:
                    lat.append(time.perf_counter() - t0)
                    cpu += time.process_time() - c0
                got.append(len(results))
            rows.append({
                "filter": case, "p50_ms": percentile_ms(lat, 50), "p95_ms": percentile_ms(lat, 95),
                "cpu_ms_mean": round(1000 * cpu / len(lat), 2),
                "min_results": min(got), "k_results_every_query": min(got) == k,
                "index": engine._index.kind,
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--work", type=Path, help="keep homes here and reuse them")
    ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default (see _common)")
    ap.add_argument("--out", type=Path, default=RESULTS / "query_latency.json")
    args = ap.parse_args(argv)
    threads = set_torch_threads(args.torch_threads)
    tree = old_tree()
    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-qlat-old-"))
    out = []
    for n in (int(s) for s in args.sizes.split(",")):
        home = work / f"home_{n}_old"
        built = {"build": "reused", "build_s": 0.0}
        if not (home / "catalog.db").exists():
            built = build_home(home, n)
        print(f"{n:>9,} items (old engine at {tree}): {built}", flush=True)
        for row in measure(home, args.k, args.queries):
            out.append(stamp({"api": "085ccce", "model": ql.ENCODER, "items": n, "k": args.k,
                              "queries": args.queries, "torch_threads": threads, **built, **row}))  # fmt: skip
            print(f"  {row['filter']:<5} p50 {row['p50_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms  "
                  f"min results {row['min_results']}", flush=True)  # fmt: skip
    append_results(args.out, out)
    return out


if __name__ == "__main__":
    main()
