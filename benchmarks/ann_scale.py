"""Vectors at scale: flat / HNSW / IVF-PQ on clustered synthetic CLIP-like vectors, with
in-distribution (image->image) and shifted (text->image) queries.

    python benchmarks/ann_scale.py --n 1000000 --kinds flat hnsw ivfpq
    python benchmarks/ann_scale.py --n 10000000 --kinds ivfpq --workdir /tmp/ann10m   # ~20 GB disk

The data is made in chunks, never held whole in RAM as float32: a data set of ``n`` 512-d
vectors is written once as float16 to ``--workdir`` (with the exact top-10 of every query,
computed while generating), and reused by later runs with the same size and seed. Each index is
built through the public ``VectorIndex`` API in chunks, saved, loaded again from disk as a query
process would, and searched one query at a time (``FileVectorStore.search``: the ANN structure,
the exact re-score and the id mapping; the query encoder is not included).

**The data.** Real CLIP embeddings are neither isotropic nor one blob: they share a mean
direction, fall into topics and sub-topics, and text embeddings sit apart from image ones (the
"modality gap"). So every vector is ``normalise(0.8 mu + 0.8 c_k + 0.6 s_kj + 0.5 e)`` with
``mu`` one shared direction, ``c_k`` one of ``--clusters`` topic centres (Zipf-sized),
``s_kj`` one of ``--subclusters`` sub-topics per topic and ``e`` noise (all unit vectors):
random pairs have cosine about 0.35, same-topic pairs 0.7, same-sub-topic pairs 0.87.
- *in-distribution queries* are fresh draws from the same law (their best match: cosine ~0.9,
  like image->image);
- *shifted queries* are ``normalise(draw + a g + b n)`` with ``g`` one constant "gap" direction
  (partly against ``mu``), ``n`` fresh noise of weight ``b`` (``--shift-noise``, 0.5 like the
  data's own), and ``a`` calibrated so that the median cosine to the best match is about 0.3, as
  for real text->image queries. ``--shift-noise 2.5`` with a smaller gap is a harsher variant
  (isotropic noise decides the ranking; every index loses recall there).

Reports per index and search setting: build time, single-query p50/p95 for each query kind,
recall@10 against exact search for each, bytes per vector in RAM (computed from the structure,
and the process's anonymous RSS growth when the saved index is loaded) and on disk. Appends to
benchmarks/results/ann_scale.json with the date, the device and the load average.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, percentile_ms, stamp  # noqa: E402

CHUNK = 200_000
TEXT_TO_IMAGE_COSINE = 0.3
"""Median cosine of a text query to its best picture with real CLIP models (vs ~0.9 image->image)."""

SWEEPS = {
    "flat": [{}],
    "hnsw": [{"ef_search": e} for e in (64, 128, 256, 512)],
    "ivfpq": [
        {"nprobe": p, "rescore_factor": r}
        for p in (32, 64, 128)
        for r in (16, 100, 200, 400, 800, 1600, 3200)
    ],
}
"""Search settings measured per kind (the defaults are among them)."""


# ------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Synth:
    """The generative law of the corpus and the queries (seeded, drawn in chunks)."""

    def __init__(self, dim: int, clusters: int, subclusters: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.mu = _unit(rng.standard_normal(dim, dtype=np.float32))
        self.centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
        self.subs = _unit(rng.standard_normal((clusters, subclusters, dim), dtype=np.float32))
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.7  # some topics are much bigger
        self.p = weights / weights.sum()
        self.gap = _unit(rng.standard_normal(dim, dtype=np.float32) - 0.5 * self.mu)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.centres), size=n, p=self.p)
        j = rng.integers(0, self.subs.shape[1], n)
        noise = _unit(rng.standard_normal((n, self.dim), dtype=np.float32))
        x = 0.8 * self.mu + 0.8 * self.centres[k] + 0.6 * self.subs[k, j] + 0.5 * noise
        return _unit(x)

    def shift(self, rng: np.random.Generator, x: np.ndarray, a: float, b: float) -> np.ndarray:
        noise = _unit(rng.standard_normal(x.shape, dtype=np.float32))
        return _unit(x + a * self.gap + b * noise)


def calibrate_shift(synth: Synth, rng: np.random.Generator, noise: float, n: int) -> float:
    """The gap weight ``a`` giving shifted queries a median best-match cosine of ~0.3 against a
    sample of up to 200k vectors (the full corpus's figure is measured and reported separately).

    The gap is mostly one constant direction (Liang et al. 2022, "Mind the Gap": each modality
    sits in its own narrow cone), and a query's own noise is as large as an image's (0.5)."""
    ref = synth.draw(rng, min(200_000, max(20_000, n)))
    base = synth.draw(rng, 200)
    lo, hi = 0.0, 8.0
    for _ in range(20):
        a = (lo + hi) / 2
        q = synth.shift(np.random.default_rng(1), base, a, noise)
        best = float(np.median((q @ ref.T).max(axis=1)))
        lo, hi = (a, hi) if best > TEXT_TO_IMAGE_COSINE else (lo, a)
    return (lo + hi) / 2


def make_dataset(args, work: Path) -> dict:
    """Write ``n`` vectors as float16 (cached), then the queries and the exact top-10 of each
    (cached per query law: a new query law re-reads the corpus, it does not regenerate it)."""
    corpus_key = {"n": args.n, "dim": args.dim, "seed": args.seed, "clusters": args.clusters,
                  "subclusters": args.subclusters, "version": 2}  # fmt: skip
    query_key = {**corpus_key, "queries": args.queries, "shift_noise": args.shift_noise}
    work.mkdir(parents=True, exist_ok=True)
    synth = Synth(args.dim, args.clusters, args.subclusters, args.seed)
    corpus_meta = work / "data.json"
    if not corpus_meta.exists() or json.loads(corpus_meta.read_text()) != corpus_key:
        rng = np.random.default_rng(args.seed + 1)
        t0 = time.perf_counter()
        with open(work / "data.f16", "wb") as f:
            for start in range(0, args.n, CHUNK):
                f.write(synth.draw(rng, min(CHUNK, args.n - start)).astype(np.float16).tobytes())
                _progress(args, f"data {min(start + CHUNK, args.n):,}/{args.n:,} "
                                f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        corpus_meta.write_text(json.dumps(corpus_key))
    tag = "q" + hashlib.sha1(json.dumps(query_key, sort_keys=True).encode()).hexdigest()[:10]
    meta_path = work / f"{tag}.json"
    if meta_path.exists():
        return {**json.loads(meta_path.read_text()), "tag": tag}
    from mmsearch.query.exact import merge_topk

    rng = np.random.default_rng(args.seed + 7)
    a = calibrate_shift(synth, np.random.default_rng(args.seed + 2), args.shift_noise, args.n)
    image_q = synth.draw(rng, args.queries)
    text_q = synth.shift(rng, synth.draw(rng, args.queries), a, args.shift_noise)
    queries = np.concatenate([image_q, text_q])
    best_s = np.full((len(queries), 10), -np.inf, np.float32)
    best_i = np.full((len(queries), 10), -1, np.int64)
    for start, x in read_chunks(work, args.n, args.dim):
        s = queries @ x.T
        cols = np.arange(start, start + len(x), dtype=np.int64)
        best_s, best_i = merge_topk(
            np.concatenate([best_s, s], axis=1),
            np.concatenate([best_i, np.broadcast_to(cols, s.shape)], axis=1),
            10,
        )
        _progress(args, f"exact top-10 {start + len(x):,}/{args.n:,}")
    np.save(work / f"{tag}.queries.npy", queries)
    np.save(work / f"{tag}.truth.npy", best_i)
    half = args.queries
    meta = {
        "key": query_key,
        "shift": {"gap": round(a, 3), "noise": args.shift_noise},
        "best_match_cosine_median": {
            "in_distribution": round(float(np.median(best_s[:half, 0])), 3),
            "shifted": round(float(np.median(best_s[half:, 0])), 3),
        },
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return {**meta, "tag": tag}


def read_chunks(work: Path, n: int, dim: int):
    data = np.memmap(work / "data.f16", dtype=np.float16, mode="r", shape=(n, dim))
    for start in range(0, n, CHUNK):
        yield start, np.asarray(data[start : start + CHUNK], dtype=np.float32)


# ------------------------------------------------------------------------ index
def build(kind: str, args, work: Path) -> tuple[Path, float]:
    """Build ``kind`` over the data set in chunks, saving as the indexer would; returns the
    saved index path and the build time (cached in the work folder with ``--reuse``)."""
    from mmsearch.vectors import create_index

    path = work / kind / "vectors.idx"
    done = work / kind / "build.json"
    if args.reuse and done.exists() and path.exists():
        return path, json.loads(done.read_text())["build_s"]
    shutil.rmtree(work / kind, ignore_errors=True)
    path.parent.mkdir(parents=True)
    index = create_index(kind, args.dim, expected_count=args.n, encoder="synthetic")
    t0 = time.perf_counter()
    since_save = 0
    for start, x in read_chunks(work, args.n, args.dim):
        index.add(np.arange(start, start + len(x), dtype=np.int64), x)
        since_save += len(x)
        if kind == "ivfpq" and since_save >= args.save_every:  # the indexer flushes on schedule
            index.save(path)
            since_save = 0
        _progress(
            args, f"{kind} add {start + len(x):,}/{args.n:,} ({time.perf_counter() - t0:.0f} s)"
        )
    index.save(path)
    build_s = time.perf_counter() - t0
    done.write_text(json.dumps({"build_s": round(build_s, 1), "factory": index.factory}))
    del index
    gc.collect()
    return path, build_s


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def loaded_rss(path: Path, kind: str) -> int:
    """Anonymous memory a fresh process gains by loading the saved index (mapped files are
    page cache, not counted), measured in a child so this process's heap does not blur it."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, sys.argv[3]); from ann_scale import rss_anon; "
        "from mmsearch.store.faiss_store import FileVectorStore; import gc, faiss, numpy; gc.collect(); "
        "b = rss_anon(); s = FileVectorStore.load(sys.argv[1], 'synthetic', preference=sys.argv[2]); "
        "gc.collect(); print(rss_anon() - b)"
    )
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", code, str(path), kind, here], capture_output=True,
                         text=True, check=True, cwd=str(Path(here).parent))  # fmt: skip
    return int(out.stdout.split()[-1])


def tune(index, setting: dict) -> None:
    for name, value in setting.items():
        setattr(index, name, value)


def measure(kind: str, path: Path, build_s: float, args, work: Path, meta: dict) -> list[dict]:
    from mmsearch.query.metrics import knn_recall
    from mmsearch.store.faiss_store import FileVectorStore

    queries = np.load(work / f"{meta['tag']}.queries.npy")
    truth = np.load(work / f"{meta['tag']}.truth.npy")
    half = args.queries
    rss = loaded_rss(path, kind)
    store = FileVectorStore.load(path, "synthetic", preference=kind)
    index = store.index
    n = index.count
    disk = sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith("vectors.idx"))
    rows = []
    for setting in SWEEPS[kind] if args.sweep else [{}]:
        tune(index, setting)
        store.search(queries[:1], 10)  # warm-up
        row = {"kind": kind, "factory": index.factory, "n": n, "dim": args.dim,
               "setting": setting or "default", "build_s": round(build_s, 1)}  # fmt: skip
        for name, sl in (("in_distribution", slice(0, half)), ("shifted", slice(half, None))):
            lat, found = [], []
            for q in queries[sl]:
                t0 = time.perf_counter()
                _, got = store.search(q[None, :], 10)
                lat.append(time.perf_counter() - t0)
                found.append(got[0])
            row[name] = {
                "p50_ms": percentile_ms(lat, 50),
                "p95_ms": percentile_ms(lat, 95),
                "recall_at_10": round(knn_recall(np.array(found), truth[sl], 10), 4),
            }
        row["bytes_per_vector"] = {
            "ram_structure": round(index.memory()["ram"] / n, 1),
            "ram_measured_rss": round(rss / n, 1),
            "disk": round(disk / n, 1),
        }
        row["best_match_cosine_median"] = meta["best_match_cosine_median"]
        row["shift"] = meta["shift"]
        rows.append(stamp(row))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "device"}), flush=True)
    return rows


def _progress(args, line: str) -> None:
    if args.progress:
        with open(args.progress, "a") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"])
    ap.add_argument(
        "--queries", type=int, default=200, help="of each kind (in-distribution, shifted)"
    )
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--subclusters", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--shift-noise",
        type=float,
        default=0.5,
        help="noise weight of shifted queries (the gap weight is calibrated)",
    )
    ap.add_argument("--sweep", action="store_true", help="measure every search setting in SWEEPS")
    ap.add_argument("--save-every", type=int, default=1_000_000, help="vectors between saves")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="data and indexes (default: a temp dir)"
    )
    ap.add_argument("--reuse", action="store_true", help="reuse indexes already built in --workdir")
    ap.add_argument("--keep", action="store_true", help="keep --workdir (always kept when given)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--progress", type=Path, default=None, help="append progress lines here")
    ap.add_argument("--out", type=Path, default=RESULTS / "ann_scale.json")
    args = ap.parse_args(argv)

    from mmsearch.vectors.base import import_faiss

    import_faiss().omp_set_num_threads(args.threads)
    temp = args.workdir is None
    work = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"mmsearch-ann-{os.getpid()}"
    try:
        meta = make_dataset(args, work)
        results = []
        for kind in args.kinds:
            path, build_s = build(kind, args, work)
            results += measure(kind, path, build_s, args, work, meta)
    finally:
        if temp and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"measured on {device_label(results[0]['device'])}, load {results[-1]['load_avg_1m']}")
    append_results(args.out, results)
    return results


if __name__ == "__main__":
    main()
