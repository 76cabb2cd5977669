"""A text query from a cold shell, and the server's text-query latency, at 100,000 items.

    python benchmarks/query_cold.py                           # tiny, 100,000 items
    python benchmarks/query_cold.py --model ViT-B-32/random   # the default model's architecture

The home holds ``--n`` synthetic pictures (random unit vectors in a real catalog and vector
store, bound to the model and its weights digest, as `query_latency.py` builds them; no media
files), and the model's text tower (and, for `tiny`, `tiny-itm`) is exported as an index run
would. Then:

- **cold CLI:** ``--runs`` fresh ``mmsearch query --home HOME "a red car"`` processes, timed from
  start to exit (a warm page cache: the first run is dropped), with the text tower through
  onnxruntime (the default) and through torch (``MMSEARCH_TEXT_RUNTIME=torch``, the path before
  the export existed);
- **rclip:** the same query with rclip 3.3 (``rclip --no-indexing -f -t 10``) over a database of
  as many synthetic 512-d vectors, when the peers harness has built its venv and model files
  (``../shared/peers/ingest_bench.sh --setup-only``; ``$PEERS_DIR``, else ``peers/`` in the temp
  folder); its ONNX files are random-init ViT-B-32-256;
- **same results:** the top 10 of ``--check`` queries through onnxruntime and through torch;
- **server:** p50/p95 of ``GET /api/search?q=...`` on the app (``TestClient``, warm, in process)
  over ``--server-queries`` distinct sentences, with the default rerankers.

Results are appended to benchmarks/results/query_cold.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, bulk_insert, measure_and_record, percentile_ms  # noqa: E402
from query_latency import BASE_MTIME_S, CHUNK, STEP_S, sentences  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUERY = "a red car"
RCLIP_DIM = 512
CHECK_QUERIES = (
    "a red car", "a red circle", "a large yellow star on the left", "a small blue square",
    "a green triangle on a beach", "two purple diamonds", "a photo of a dog", "红色的圆",
)  # fmt: skip


def chunks(n: int, dim: int, seed: int = 0):
    """Catalog rows for ``n`` pictures with random unit ``dim``-d vectors, `CHUNK` at a time."""
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng([seed, start])
        vecs = rng.standard_normal((stop - start, dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        assets = [
            {"id": i + 1, "path": f"/bench/d{i % 97:02d}/f{i:07d}.jpg", "size": 1000 + i,
             "mtime_ns": (BASE_MTIME_S + i * STEP_S) * 10**9, "content_hash": f"{i:064x}",
             "kind": "image", "duration_s": None, "width": 64, "height": 48}
            for i in range(start, stop)
        ]  # fmt: skip
        items = [
            {"id": i + 1, "asset_id": i + 1, "kind": "image", "start_s": None, "end_s": None,
             "vector": vec.astype("<f4").tobytes()}
            for i, vec in zip(range(start, stop), vecs, strict=True)
        ]  # fmt: skip
        yield assets, items


def build_home(home: Path, n: int, model: str) -> dict:
    """The synthetic home, and the exports an index run would leave (text tower, tiny-itm)."""
    from mmsearch.catalog.db import writer as write_engine
    from mmsearch.catalog.schema import Asset, Item
    from mmsearch.models import load_encoder
    from mmsearch.models.itm import itm_for_encoder
    from mmsearch.models.itm_onnx import load_itm_for_search
    from mmsearch.models.text_onnx import export_text_tower
    from mmsearch.store import Collection

    began = time.perf_counter()
    encoder = load_encoder(model, device="cpu", precision="fp32")
    built = home / ".query_cold-built"  # written last: a build killed midway starts again
    if not built.exists():
        shutil.rmtree(home, ignore_errors=True)
        with Collection(home) as collection, collection.writer() as w:
            w.bind_encoder(encoder.name, encoder.dim, encoder.weights_id)
            bulk_insert(
                write_engine(collection.catalog.engine), Asset, Item, chunks(n, encoder.dim)
            )
            w.rebuild_vectors()
        built.write_text("ok\n")
    tower = export_text_tower(encoder)
    itm = itm_for_encoder(encoder.name)
    if itm:
        load_itm_for_search(itm)
    with Collection(home, create=False) as collection:
        collection.refresh()
        kind, count = collection.vectors.kind, collection.vectors.count
    return {
        "build_s": round(time.perf_counter() - began, 1), "index": kind, "count": count,
        "exported": tower is not None, "prefix_export": bool(tower and tower.prefix),
    }  # fmt: skip


def timed_runs(cmd: list[str], runs: int, env: dict, cwd: Path) -> dict:
    """Wall seconds of ``runs`` fresh processes (one more first, dropped: it fills the page cache),
    and the CPU seconds each used (user + system, children included): on cores shared with other
    work the wall time swings with their load, the CPU time much less."""
    times, cpu = [], []
    for i in range(runs + 1):
        began = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd
        )
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - began
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stdout and proc.stdout.close()
        proc.stderr and proc.stderr.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-1500:]}")
        if i:
            times.append(took)
            cpu.append(usage.ru_utime + usage.ru_stime)
    return {
        "runs": runs, "median_s": round(statistics.median(times), 3),
        "p90_s": round(float(np.percentile(times, 90)), 3), "min_s": round(min(times), 3),
        "cpu_median_s": round(statistics.median(cpu), 3), "all_s": [round(t, 3) for t in times],
    }  # fmt: skip


def cold_cli(home: Path, runs: int, runtime: str) -> dict:
    # as an installed package runs: its modules' bytecode cached (a sandbox may forbid writing it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"MMSEARCH_TEXT_RUNTIME": runtime, "HF_HUB_OFFLINE": "1"})
    cmd = [str(REPO / ".venv" / "bin" / "mmsearch"), "query", "--home", str(home), QUERY]
    return timed_runs(cmd, runs, env, REPO)


def peers_dir() -> Path:
    return Path(os.environ.get("PEERS_DIR") or Path(tempfile.gettempdir()) / "peers")


def rclip_cold(n: int, runs: int, work: Path) -> dict:
    """rclip's query over ``n`` synthetic vectors, or why it was not run."""
    peers = peers_dir()
    rclip, models = peers / "venv-rclip" / "bin" / "rclip", peers / "rclip_models"
    model_dir = next(models.glob("ViT-B-32-256*"), None) if models.is_dir() else None
    if not rclip.exists() or model_dir is None or not (models / "tokenizer").is_dir():
        return {
            "skipped": f"no rclip venv or model files under {peers}; run ../shared/peers/ingest_bench.sh --setup-only"
        }
    datadir, pictures = work / "rclip_datadir", work / "rclip_pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    if not (datadir / "db.sqlite3").exists():
        datadir.mkdir(parents=True, exist_ok=True)
        for link in (model_dir, models / "tokenizer"):
            (datadir / link.name).symlink_to(link)
        fill = (
            "import sys, numpy as np\nfrom rclip.db import DB\n"
            "db = DB(sys.argv[1]); folder, n, dim = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
            "rng = np.random.default_rng(0)\n"
            "for i in range(n):\n"
            "    v = rng.standard_normal(dim).astype(np.float32); v /= np.linalg.norm(v)\n"
            "    db.upsert_image({'filepath': f'{folder}/f{i:07d}.jpg', 'modified_at': 1.6e9, 'size': 1000,"
            " 'vector': v.tobytes(), 'hash': None, 'deleted': None, 'indexing': None}, commit=False)\n"
            "db.commit(); db.close()\n"
        )
        python = peers / "venv-rclip" / "bin" / "python"
        subprocess.run(
            [
                str(python),
                "-c",
                fill,
                str(datadir / "db.sqlite3"),
                str(pictures),
                str(n),
                str(RCLIP_DIM),
            ],
            check=True,
        )
    env = {**os.environ, "RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
    out = timed_runs([str(rclip), "--no-indexing", "-f", "-t", "10", QUERY], runs, env, pictures)
    return {**out, "model": model_dir.name}


def same_results(home: Path) -> dict:
    """Top-10 item ids of each check query through onnxruntime (an fp32 export) and through
    torch in fp32 (must be identical), and through torch at the engine's default precision
    (bf16 for big models on a bf16 CPU: random-weight models and synthetic vectors leave many
    near-ties, so bf16 rounding alone reorders them)."""
    from mmsearch.engine import Engine

    tops = {}
    for label, runtime, precision in (
        ("onnx", "onnx", "auto"), ("torch_fp32", "torch", "fp32"), ("torch_auto", "torch", "auto"),
    ):  # fmt: skip
        os.environ["MMSEARCH_TEXT_RUNTIME"] = runtime
        with Engine(home, precision=precision) as engine:
            tops[label] = {q: [h.item_id for h in engine.search(q, k=10)] for q in CHECK_QUERIES}
    os.environ.pop("MMSEARCH_TEXT_RUNTIME")
    same = sum(tops["onnx"][q] == tops["torch_fp32"][q] for q in CHECK_QUERIES)
    same_auto = sum(tops["onnx"][q] == tops["torch_auto"][q] for q in CHECK_QUERIES)
    return {
        "queries": len(CHECK_QUERIES), "identical_top10": same,
        "identical_top10_vs_default_precision": same_auto,
    }  # fmt: skip


def server_latency(home: Path, queries: int) -> dict:
    from fastapi.testclient import TestClient

    from mmsearch.server import create_app

    texts = sentences(queries + 1)
    times = []
    with TestClient(create_app(home, warm=True), base_url="http://127.0.0.1") as client:
        for i, text in enumerate(texts):
            began = time.perf_counter()
            response = client.get("/api/search", params={"q": text})
            took = time.perf_counter() - began
            if response.status_code != 200 or len(response.json()["results"]) != 10:
                raise RuntimeError(f"search {text!r} answered {response.status_code}")
            if i:  # the first one warms the caches
                times.append(took)
    return {
        "queries": queries,
        "p50_ms": percentile_ms(times, 50),
        "p95_ms": percentile_ms(times, 95),
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    home = work / f"home-{args.model.replace('/', '_')}-{args.n}"
    row = {"benchmark": "query_cold", "model": args.model, "n": args.n, "query": QUERY}
    row["home"] = build_home(home, args.n, args.model)
    row["same_results"] = same_results(home)
    row["cli_onnx"] = cold_cli(home, args.runs, "onnx")
    row["cli_torch"] = cold_cli(home, args.torch_runs, "torch")
    row["rclip"] = rclip_cold(args.n, args.runs, work) if args.rclip else {"skipped": "--no-rclip"}
    row["server"] = server_latency(home, args.server_queries)
    row["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
    return row


def report(row: dict) -> None:
    def line(name: str, r: dict) -> str:
        if "skipped" in r:
            return f"{name:>16}: skipped ({r['skipped']})"
        return (
            f"{name:>16}: median {r['median_s']:.3f} s, p90 {r['p90_s']:.3f} s, min {r['min_s']:.3f} s,"
            f" CPU {r['cpu_median_s']:.3f} s ({r['runs']} runs)"
        )

    print(f"{row['model']}, {row['n']:,} items ({row['home']['index']}), query {row['query']!r}")
    print(line("mmsearch (onnx)", row["cli_onnx"]))
    print(line("mmsearch (torch)", row["cli_torch"]))
    print(line("rclip", row["rclip"]))
    same = row["same_results"]
    print(
        f"identical top-10 onnx vs torch fp32: {same['identical_top10']}/{same['queries']} queries; "
        f"vs torch at the default precision: {same.get('identical_top10_vs_default_precision')}"
    )
    print(f"server text query: p50 {row['server']['p50_ms']} ms, p95 {row['server']['p95_ms']} ms")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10, help="cold processes timed per system")
    parser.add_argument("--torch-runs", type=int, default=3, help="cold processes through torch")
    parser.add_argument("--server-queries", type=int, default=200)
    parser.add_argument("--no-rclip", dest="rclip", action="store_false")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mmsearch-query-cold"))
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    parser.add_argument("--out", type=Path, default=RESULTS / "query_cold.json")
    args = parser.parse_args(argv)
    if args.fresh:
        shutil.rmtree(args.work, ignore_errors=True)
    return measure_and_record(run, report, args)


if __name__ == "__main__":
    main()
