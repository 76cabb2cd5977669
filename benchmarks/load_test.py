"""Load test of the HTTP server on loopback: concurrent clients searching while `index` adds files.

    python benchmarks/load_test.py                      # 50 clients for 30 s, 200 photos + 200 added
    python benchmarks/load_test.py --clients 10 --seconds 5 --photos 40 --added 40

Starts a real `mmsearch serve` (loopback only) on a freshly indexed home, starts a real
`mmsearch index` that adds more files to the same home, and runs the clients (threads with
httpx) until the time is up: every request counts, bounded in number and time. Prints and
appends queries/s, p50/p95 latency and the errors (any non-200 answer or failed request).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, device_label, percentile_ms, stamp  # noqa: E402

QUERIES = (
    "a red circle",
    "a blue square",
    "two green triangles",
    "a large yellow star",
    "a purple diamond",
)
MAX_REQUESTS = 100_000  # a hard bound on the number of requests, whatever the time says


def mmsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmsearch.cli", *args]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        mmsearch("serve", "--home", str(home), "--host", "127.0.0.1", "--port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line or "")
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the server did not start")


def run(clients: int, seconds: float, photos: int, added: int, workdir: Path) -> dict:
    import httpx

    from mmsearch.synth.media import write_photo_folder

    home = workdir / "home"
    first = write_photo_folder(workdir / "photos", photos, seed=1)
    subprocess.run(
        mmsearch("index", str(first), "--home", str(home), "--model", "tiny"),
        check=True,
        capture_output=True,
    )
    more = write_photo_folder(workdir / "more", added, seed=2)
    server, url = start_server(home)
    with httpx.Client(base_url=url, timeout=300) as http:  # the model loads before the clock starts
        http.get("/api/search", params={"q": QUERIES[0], "k": 10}).raise_for_status()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    count = [0]
    try:
        indexer = subprocess.Popen(
            mmsearch("index", str(more), "--home", str(home), "--workers", "1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        stop = 0.0

        def client(n: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                i = n
                while time.monotonic() < stop:
                    with lock:
                        if count[0] >= MAX_REQUESTS:
                            return
                        count[0] += 1
                    began = time.perf_counter()
                    try:
                        r = http.get(
                            "/api/search", params={"q": QUERIES[i % len(QUERIES)], "k": 10}
                        )
                        ok = r.status_code == 200 and len(r.json()["results"]) == 10
                        problem = None if ok else f"{r.status_code}: {r.text[:120]}"
                    except httpx.HTTPError as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                    took = time.perf_counter() - began
                    with lock:
                        latencies.append(took)
                        if problem:
                            errors.append(problem)
                    i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        began = time.monotonic()
        stop = began + seconds
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        indexed = indexer.wait(timeout=600)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "queries_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
        "errors": len(errors),
        "first_errors": errors[:5],
        "index_run_exit": indexed,
        "photos": photos,
        "added_during_test": added,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--added", type=int, default=200)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results/load_test.json)",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        row = run(args.clients, args.seconds, args.photos, args.added, Path(tmp))
    row = stamp(row)
    print(
        f"{device_label(row['device'])}: {row['clients']} clients for {row['seconds']} s while indexing "
        f"{row['added_during_test']} files: {row['requests']} requests, {row['queries_per_s']} queries/s, "
        f"p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, {row['errors']} errors"
    )
    append_results(args.out or RESULTS / "load_test.json", [row])
    return row


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
