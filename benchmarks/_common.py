"""What every benchmark shares: the measured device, percentiles, and appending results.

Figures mean little without the machine they came from, so each result row carries
`device()`: computed here, never typed in by hand. Results files are JSON lists that only grow,
so earlier runs stay next to new ones for comparison.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
"""Where the benchmarks append their rows by default."""

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
"""CPU features that change how fast vector search and fp32/bf16 inference run."""


def device() -> dict:
    """The machine a figure was measured on: CPU model, cores, matrix flags, and torch's GPU."""
    flags = _cpu_flags()
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "amx": any(f.startswith("amx") for f in flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "flags": [f for f in CPU_FLAGS if f in flags],
        "cuda": _cuda_name(),
    }


def device_label(info: dict) -> str:
    """One line for tables: "Intel Xeon ... (2 cores, AMX)" or the GPU name."""
    extras = [f"{info['usable_cores']} cores"]
    if info["amx"]:
        extras.append("AMX")
    elif info["avx512_bf16"]:
        extras.append("avx512_bf16")
    cpu = f"{info['cpu']} ({', '.join(extras)})"
    return f"{info['cuda']} on {cpu}" if info.get("cuda") else cpu


def set_torch_threads(threads: int) -> int:
    """Use ``threads`` intra-op threads (0: torch's default); returns the number in use.

    On a 2-core machine shared with other work, torch's two OpenMP threads wait on each other for
    every small forward pass: a 1 ms tiny-model text encode can take 300 ms. One thread shows what
    the engine itself costs.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def percentile_ms(seconds: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of durations in seconds, in milliseconds."""
    import numpy as np

    return round(1000 * float(np.percentile(np.asarray(seconds), q)), 2)


def stamp(row: dict) -> dict:
    """``row`` with the date, the device and how busy it was (other processes share the cores)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": device(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **row,
    }


def append_results(path: Path, rows: list[dict]) -> None:
    """Add rows to a JSON list file (a file holding one object becomes a list of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(path.read_text()) if path.exists() else []
    if isinstance(runs, dict):
        runs = [runs]
    path.write_text(json.dumps(runs + rows, indent=2) + "\n")


def print_and_append(result: dict, out: Path) -> dict:
    """Print a result row key by key, append it to ``out`` and say where; returns the row."""
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:{width}} {value}")
    append_results(out, [result])
    print(f"appended to {out}")
    return result


def top_k_agreement(queries, vectors_a, vectors_b, k: int = 10) -> dict:
    """How alike two encodings of the same pictures rank them for the same query vectors: the
    mean overlap of the two top-k sets, the share of identical sets, and the pictures' cosines."""
    import numpy as np

    from mmsearch.query.exact import exact_topk

    k = min(k, len(vectors_a))
    _, top_a = exact_topk(queries, vectors_a, k)
    _, top_b = exact_topk(queries, vectors_b, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_a.tolist(), top_b.tolist())]
    cosine = (vectors_a * vectors_b).sum(1)
    return {
        "queries": len(queries),
        f"top{k}_mean_overlap": round(float(np.mean(overlap)), 4),
        f"top{k}_identical_share": round(float(np.mean([o == 1.0 for o in overlap])), 4),
        "picture_cosine_min": round(float(cosine.min()), 5),
        "picture_cosine_mean": round(float(cosine.mean()), 5),
    }


def measure_and_record(run, report, args) -> dict:
    """The tail every benchmark's main shares: run, stamp, print, say where, append to ``args.out``."""
    result = stamp(run(args))
    report(result)
    print(f"measured on {device_label(result['device'])}, load average {result['load_avg_1m']}")
    append_results(args.out, [result])
    return result


def bulk_insert(engine, asset_table, item_table, chunks) -> None:
    """Insert catalog rows (``(assets, items)`` dicts per chunk) with SQLAlchemy Core.

    Benchmark set-up only: one transaction per chunk, where the indexer's writer takes one per
    file. Fills ``indexed_at`` and, where the schema has it, ``date_s`` (from the mtime).
    """
    from sqlalchemy import insert

    dated = "date_s" in asset_table.__table__.c
    now = time.time()
    for assets, items in chunks:
        for a in assets:
            a["indexed_at"] = now
            if dated:
                a["date_s"] = a["mtime_ns"] / 1e9
        with engine.begin() as conn:
            conn.execute(insert(asset_table), assets)
            conn.execute(insert(item_table), items)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cuda_name() -> str | None:
    """The CUDA device torch sees, or None (no GPU, or torch not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None
