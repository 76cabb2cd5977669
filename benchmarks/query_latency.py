"""End-to-end query latency through `Engine.search`: text encode, filters, vector search, results.

    python benchmarks/query_latency.py                      # 10k and 100k items, tiny model, CPU
    python benchmarks/query_latency.py --sizes 1000000      # the 1M run (builds for several minutes)

Each size gets a home of synthetic assets with random unit 128-d vectors bound to the `tiny`
encoder (no media files exist; a query only needs the catalog and the vector store). Every 100th
asset lies in a folder named `trip`, another 1% are videos, and modification times are spread
evenly, so each selective filter keeps 1% of the collection:

- `none`:  no filter;
- `path`:  `--path 'trip/*'` (the same glob every query, so the allow-list is cached after one);
- `date`:  a 1% date window, a different one for every query (never cached);
- `type`:  `--type video`.

Queries are 50 distinct sentences encoded by `tiny` on CPU, so a figure is what a person waits
for minus process start-up. p50/p95 exclude one warm-up query per filter (model load, store
open). `cpu_ms_mean` is the process CPU per query: on a machine shared with other work the
wall percentiles swing with its load, the CPU time much less (`--torch-threads 1` keeps torch's
two OpenMP threads from waiting on each other). Every filtered query must still return k
results. Results are appended to benchmarks/results/query_latency.json; `query_latency_085ccce.py`
measures the engine before the query-layer redesign on the same rows.

Homes up to `--writer-max` items are written asset by asset through `Collection.writer()`, as the
indexer does; larger ones are bulk-inserted into the catalog inside the writer's lock and then
mirrored into the vector store by `CollectionWriter.rebuild_vectors()` (one transaction per asset
runs at a few hundred assets/s on 2 cores: 45 minutes for 1M). The query path is the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS,
    append_results,
    bulk_insert,
    device_label,
    percentile_ms,
    set_torch_threads,
    stamp,
)

DIM = 128  # the tiny encoder's dimension
ENCODER = "tiny"
BASE_MTIME_S = 1_600_000_000  # 2020-09-13: the first synthetic file's modification time
STEP_S = 60  # asset i was modified at BASE + i * STEP
CHUNK = 20_000  # assets generated and bulk-inserted per step
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink")
SHAPES = ("circle", "square", "triangle", "star", "car")


def sentences(n: int) -> list[str]:
    """Distinct query sentences, so no answer can come from a cache."""
    places = ("on a beach", "in a field", "at night", "in the snow", "indoors")
    out = [f"a {c} {s} {p}" for p in places for s in SHAPES for c in COLOURS]
    return [out[i % len(out)] + ("" if i < len(out) else f" number {i}") for i in range(n)]


def synthetic_chunks(n: int, seed: int = 0) -> Iterator[tuple[list[dict], list[dict]]]:
    """Catalog rows for ``n`` assets of one item each, as plain dicts (ids 1..n), ``CHUNK`` at a time."""
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng([seed, start])
        vecs = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        assets, items = [], []
        for i, vec in zip(range(start, stop), vecs, strict=True):
            video = i % 100 == 50
            folder = "trip" if i % 100 == 0 else f"d{i % 97:02d}"
            assets.append({
                "id": i + 1, "path": f"/bench/{folder}/f{i:07d}.{'mp4' if video else 'jpg'}",
                "size": 1000 + i, "mtime_ns": (BASE_MTIME_S + i * STEP_S) * 10**9,
                "content_hash": f"{i:064x}", "kind": "video" if video else "image",
                "duration_s": 10.0 if video else None, "width": 64, "height": 48,
            })  # fmt: skip
            items.append({
                "id": i + 1, "asset_id": i + 1, "kind": "keyframe" if video else "image",
                "start_s": 0.0 if video else None, "end_s": 2.0 if video else None,
                "vector": vec.astype("<f4").tobytes(),
            })  # fmt: skip
        yield assets, items


def build_home(home: Path, n: int, *, index_kind: str, writer_max: int) -> dict:
    """A home of ``n`` synthetic items; returns how it was built and how long it took."""
    from mmsearch.catalog import AssetInfo, ItemData
    from mmsearch.catalog.db import writer as write_engine
    from mmsearch.catalog.schema import Asset, Item
    from mmsearch.store import Collection

    began = time.perf_counter()
    method = "writer" if n <= writer_max else "bulk"
    with Collection(home, index_kind=index_kind) as collection:
        with collection.writer() as w:
            w.bind_encoder(ENCODER, DIM)
            if method == "bulk":
                bulk_insert(
                    write_engine(collection.catalog.engine), Asset, Item, synthetic_chunks(n)
                )
                w.rebuild_vectors()
            else:
                for assets, items in synthetic_chunks(n):
                    for a, it in zip(assets, items, strict=True):
                        w.write(_asset_info(AssetInfo, a), [_item_data(ItemData, it)])
        kind = collection.vectors.kind
        count = collection.vectors.count
    return {
        "build": method,
        "build_s": round(time.perf_counter() - began, 1),
        "index": kind,
        "count": count,
    }


def _asset_info(cls, a: dict):
    fields = {k: v for k, v in a.items() if k != "id"}
    return cls(**fields)


def _item_data(cls, it: dict):
    vec = np.frombuffer(it["vector"], "<f4")
    return cls(it["kind"], it["start_s"], it["end_s"], None, vec)


def filter_cases(n: int, queries: int) -> dict[str, list[dict]]:
    """Per case, the `Engine.search` keyword arguments of each query (1% selective filters)."""
    from mmsearch.query.model import Filters

    window = max(1, n // 100) * STEP_S
    rng = np.random.default_rng(1)
    starts = rng.integers(0, max(1, n * STEP_S - window), queries + 1)
    return {
        "none": [{}] * (queries + 1),
        "path": [{"filters": Filters(paths=("trip/*",))}] * (queries + 1),
        "date": [
            {"filters": Filters(after=BASE_MTIME_S + s, before=BASE_MTIME_S + s + window)}
            for s in starts.tolist()
        ],
        "type": [{"types": ["video"]}] * (queries + 1),
    }


def measure(
    home: Path, n: int, k: int, queries: int, rerank: tuple[str, ...] | None = None
) -> list[dict]:
    """p50/p95 per filter case through a fresh `Engine`, with the text-encode share."""
    from mmsearch import Engine

    texts = sentences(queries + 1)
    rows = []
    with Engine(home=home, model=ENCODER, device="cpu") as engine:
        for case, kwargs in filter_cases(n, queries).items():
            lat, got, cpu = [], [], 0.0
            for i, (text, kw) in enumerate(zip(texts, kwargs, strict=True)):
                t0, c0 = time.perf_counter(), time.process_time()
                results = engine.search(text, k, rerank=rerank, **kw)
                if i:  # the first query of each case is the warm-up
                    lat.append(time.perf_counter() - t0)
                    cpu += time.process_time() - c0
                got.append(len(results))
            rows.append({
                "filter": case, "p50_ms": percentile_ms(lat, 50), "p95_ms": percentile_ms(lat, 95),
                "cpu_ms_mean": round(1000 * cpu / len(lat), 2),
                "min_results": min(got), "k_results_every_query": min(got) == k,
            })  # fmt: skip
        encode = []
        for text in texts[1:]:
            t0 = time.perf_counter()
            engine.encoder.encode_texts([text])
            encode.append(time.perf_counter() - t0)
    for row in rows:
        row["text_encode_p50_ms"] = percentile_ms(encode, 50)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", default="10000,100000", help="comma-separated item counts (1000000 on request)"
    )
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument(
        "--index-kind", default="auto", help="auto (flat, HNSW past 50,000), flat, hnsw, ivf, torch"
    )
    ap.add_argument(
        "--writer-max", type=int, default=20_000, help="build larger homes by bulk insert"
    )
    ap.add_argument(
        "--work", type=Path, help="keep homes here and reuse them (default: a temp dir)"
    )
    ap.add_argument(
        "--rerank", help="reranker names, comma-separated ('none': off; default: the collection's)"
    )
    ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default (see _common)")
    ap.add_argument("--out", type=Path, default=RESULTS / "query_latency.json")
    args = ap.parse_args(argv)
    threads = set_torch_threads(args.torch_threads)

    work = args.work or Path(tempfile.mkdtemp(prefix="mmsearch-qlat-"))
    out = []
    for n in (int(s) for s in args.sizes.split(",")):
        home = work / f"home_{n}_{args.index_kind}"
        built = reuse(home, n) or build_home(
            home, n, index_kind=args.index_kind, writer_max=args.writer_max
        )
        print(f"{n:>9,} items: {built}", flush=True)
        rerank = tuple(args.rerank.split(",")) if args.rerank else None
        for row in measure(home, n, args.k, args.queries, rerank):
            out.append(stamp({"api": "Engine.search", "model": ENCODER, "items": n, "k": args.k,
                              "queries": args.queries, "torch_threads": threads, "rerank": args.rerank or "default", **built, **row}))  # fmt: skip
            print(f"  {row['filter']:<5} p50 {row['p50_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms  "
                  f"min results {row['min_results']}", flush=True)  # fmt: skip
    if out:
        print(f"device: {device_label(out[0]['device'])}")
    append_results(args.out, out)
    return out


def reuse(home: Path, n: int) -> dict | None:
    """A home kept from an earlier run with the same size, or None."""
    if not (home / "catalog.db").exists():
        return None
    from mmsearch.store import Collection

    with Collection(home, create=False) as collection:
        store = collection.vectors
        if store.count != n:
            return None
        return {"build": "reused", "build_s": 0.0, "index": store.kind, "count": store.count}


if __name__ == "__main__":
    main()
