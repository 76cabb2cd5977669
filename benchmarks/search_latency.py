"""Vector search latency and throughput per index backend on seeded random unit vectors.

    python benchmarks/search_latency.py --n 200000 --dim 512 --kinds flat hnsw torch
    python benchmarks/search_latency.py --n 1000000 --dim 512 --kinds torch   # GPU host: torch runs fp16 on CUDA

Reports build time, single-query latency (p50/p90), batched queries/s, and recall@10 against
exact search. Appends to benchmarks/results/search_latency.json with the date and device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, stamp  # noqa: E402


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> list[dict]:
    from mmsearch.query.exact import exact_topk
    from mmsearch.query.metrics import knn_recall
    from mmsearch.vectors import create_index

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf", "torch"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=RESULTS / "search_latency.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    # clustered data, like real embeddings: 1000 centres plus noise
    centres = unit(rng, 1000, args.dim)
    corpus = centres[rng.integers(0, 1000, args.n)] + 0.35 * unit(rng, args.n, args.dim)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[rng.integers(0, args.n, args.queries)] + 0.1 * unit(
        rng, args.queries, args.dim
    )
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    _, truth = exact_topk(queries, corpus, 10)
    ids = np.arange(args.n, dtype=np.int64)
    results = []
    for kind in args.kinds:
        index = create_index(kind, args.dim, expected_count=args.n)
        t0 = time.perf_counter()
        index.add(ids, corpus)
        build = time.perf_counter() - t0
        index.search(queries[:1], 10)
        lat = []
        found = []
        for q in queries:
            t0 = time.perf_counter()
            _, got = index.search(q[None, :], 10)
            lat.append(time.perf_counter() - t0)
            found.append(got[0])
        lat.sort()
        big = np.repeat(queries, max(1, args.batch // len(queries) + 1), axis=0)[: args.batch]
        t0 = time.perf_counter()
        index.search(big, 10)
        qps = len(big) / (time.perf_counter() - t0)
        device = getattr(index, "device", "cpu")
        results.append(
            stamp(
                {
                    "ran_on": str(device),
                    "kind": kind,
                    "factory": index.factory,
                    "n": args.n,
                    "dim": args.dim,
                    "build_s": round(build, 2),
                    "single_query_ms_p50": round(1000 * lat[len(lat) // 2], 3),
                    "single_query_ms_p90": round(1000 * lat[int(len(lat) * 0.9)], 3),
                    "batched_queries_per_s": round(qps, 1),
                    "recall_at_10_vs_exact": round(knn_recall(np.array(found), truth, 10), 4),
                }
            )
        )
        print(json.dumps(results[-1]))
    print(f"device: {device_label(results[0]['device'])}")
    append_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
