"""One entry point for the benchmarks: run suites at chosen sizes, append results, draw plots.

    python benchmarks/run.py --suite ingest,query,ann --sizes 100000,1000000
    python benchmarks/run.py --plots-only                 # redraw from benchmarks/results/*.json

Suites (each appends to its own benchmarks/results/*.json with the date, the device and the
load average, through benchmarks/_common.py):
- ``ingest``: ``index_rates.py`` (images, videos, recordings, notes through ``Engine.index``);
- ``query``: ``search_latency.py`` per size (flat, HNSW, IVF-PQ on clustered vectors);
- ``ann``: ``ann_scale.py`` per size (in-distribution and shifted queries, every search setting).

Plots (PNG, matplotlib) go to ``benchmarks/plots/``:
- ``latency_vs_size.png``: single-query p50 against collection size, per index kind;
- ``recall_vs_latency.png``: recall@10 against p50 per index kind and search setting, for
  in-distribution and shifted queries;
- ``images_per_s.png``: whole-run indexing images/s per system, from the peers harness table
  (``../shared/peers/README.md``, "Last runs") or ``--peers`` JSON files of ``{system:
  images/s}``, one panel per file (per machine).
Each figure says the machine and the load it was measured under.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, device_label  # noqa: E402

PLOTS = Path(__file__).resolve().parent / "plots"
PEERS_README = Path(__file__).resolve().parents[2] / "shared" / "peers" / "README.md"
SUITES = ("ingest", "query", "ann")


def run_suites(suites: list[str], sizes: list[int], args) -> None:
    for suite in suites:
        if suite == "ingest":
            import index_rates

            index_rates.main(
                ["--photos", str(args.photos), "--out", str(args.results / "index_rates.json")]
            )
        elif suite == "query":
            import search_latency

            for n in sizes:
                search_latency.main(
                    ["--n", str(n), "--dim", str(args.dim), "--kinds", *args.kinds,
                     "--queries", str(args.queries), "--out", str(args.results / "search_latency.json")]
                )  # fmt: skip
        elif suite == "ann":
            import ann_scale

            for n in sizes:
                ann_scale.main(
                    ["--n", str(n), "--dim", str(args.dim), "--kinds", *args.kinds,
                     "--queries", str(args.queries), "--sweep",
                     "--out", str(args.results / "ann_scale.json")]
                )  # fmt: skip
        else:
            raise SystemExit(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")


# ------------------------------------------------------------------------- plots
def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return data if isinstance(data, list) else [data]


def _where(rows: list[dict]) -> str:
    """'measured on <device>, load a-b' for a figure's caption (the rows that made it)."""
    devices = {device_label(r["device"]) for r in rows if isinstance(r.get("device"), dict)}
    loads = [r["load_avg_1m"] for r in rows if "load_avg_1m" in r]
    text = "; ".join(sorted(devices)) or "device not recorded"
    if loads:
        text += f"; load average {min(loads):.1f}-{max(loads):.1f} (shared cores)"
    return text


def plot_latency_vs_size(results: Path, out: Path) -> Path | None:
    rows = [r for r in _rows(results / "search_latency.json") if isinstance(r.get("device"), dict)]
    ann = [r for r in _rows(results / "ann_scale.json") if r.get("setting") == "default"]
    series: dict[str, dict[int, float]] = {}
    for r in rows:
        series.setdefault(f"{r['kind']} (search_latency)", {})[r["n"]] = r["single_query_ms_p50"]
    for r in ann:
        series.setdefault(f"{r['kind']} (ann_scale, shifted)", {})[r["n"]] = r["shifted"]["p50_ms"]
    if not series:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="vectors (512-d)", ylabel="single-query p50 (ms)")
    ax.set_title("Vector search latency vs collection size", fontsize=11)
    ax.text(0, -0.18, _where(rows + ann), transform=ax.transAxes, fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "latency_vs_size.png")


def plot_recall_vs_latency(results: Path, out: Path) -> Path | None:
    rows = [r for r in _rows(results / "ann_scale.json") if "in_distribution" in r]
    if not rows:
        return None
    import matplotlib.pyplot as plt

    n = max(r["n"] for r in rows)
    rows = [r for r in rows if r["n"] == n]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (kind, qkind), marker in zip(
        [(k, q) for k in sorted({r["kind"] for r in rows}) for q in ("in_distribution", "shifted")],
        "osodsd^v",
        strict=False,
    ):
        pts = sorted(
            (r[qkind]["p50_ms"], r[qkind]["recall_at_10"]) for r in rows if r["kind"] == kind
        )
        ax.plot(*zip(*pts, strict=True), marker=marker, linestyle=":", label=f"{kind}, {qkind}")
    ax.axhline(0.95, color="grey", linewidth=0.8)
    ax.set(xscale="log", xlabel="single-query p50 (ms)", ylabel="recall@10 vs exact")
    ax.set_title(f"Recall vs latency per index kind, {n:,} vectors", fontsize=11)
    ax.text(0, -0.18, _where(rows), transform=ax.transAxes, fontsize=7)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "recall_vs_latency.png")


def peers_from_readme(path: Path) -> dict[str, float]:
    """``{system: images/s}`` from the first "| what | images/s |" table of the peers README."""
    if not path.exists():
        return {}
    text = path.read_text()
    start = text.find("| what | images/s |")
    if start < 0:
        return {}
    found = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        what, value = [c.strip() for c in line.strip("|").split("|")[:2]]
        number = re.search(r"\d+(\.\d+)?", value)
        if number and "decode only" not in what:
            found[re.sub(r"[`*]", "", what.split(":")[0].split("(")[0]).strip()] = float(number[0])
    return found


def plot_images_per_s(panels: list[tuple[dict[str, float], str]], out: Path) -> Path | None:
    """One horizontal bar chart per machine: ``panels`` holds ``({system: images/s}, source)``,
    where a ``_machine`` key in the rates names the panel."""
    panels = [(rates, source) for rates, source in panels if rates]
    if not panels:
        return None
    import matplotlib.pyplot as plt

    heights = [0.5 * len([k for k in rates if not k.startswith("_")]) + 1.5 for rates, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, sum(heights)), gridspec_kw={"height_ratios": heights})
    for ax, (rates, source) in zip(list(axes) if len(panels) > 1 else [axes], panels, strict=True):
        peers = {k: float(v) for k, v in rates.items() if not k.startswith("_")}
        names = sorted(peers, key=peers.get)
        ax.barh(names, [peers[n] for n in names], color=["C1" if "mmsearch" in n else "C0" for n in names])
        for i, name in enumerate(names):
            ax.text(peers[name], i, f" {peers[name]:g}", va="center", fontsize=8)
        ax.set_xlabel("images/s, whole run (1,000 JPEGs, ViT-B-32)")
        ax.set_title(rates.get("_machine", "Indexing throughput per system"), fontsize=10)
        ax.text(0, -0.35, f"source: {source}", transform=ax.transAxes, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    return _save(fig, out / "images_per_s.png")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def draw_plots(results: Path, out: Path, peers_json: list[Path] | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    if peers_json:
        panels = [(json.loads(p.read_text()), str(p)) for p in peers_json]
    else:
        panels = [(peers_from_readme(PEERS_README), "shared/peers/README.md (Last runs)")]
    drawn = [
        plot_latency_vs_size(results, out),
        plot_recall_vs_latency(results, out),
        plot_images_per_s(panels, out),
    ]
    return [p for p in drawn if p is not None]


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="query,ann", help=f"comma-separated: {','.join(SUITES)}")
    ap.add_argument("--sizes", default="100000", help="comma-separated vector counts")
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--photos", type=int, default=300, help="ingest suite: photos to index")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--plots", type=Path, default=PLOTS)
    ap.add_argument(
        "--peers", type=Path, nargs="+", default=None,
        help="JSON files of {system: images/s}, one panel each (a '_machine' key titles it)",
    )  # fmt: skip
    ap.add_argument("--plots-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.plots_only:
        suites = [s for s in args.suite.split(",") if s]
        run_suites(suites, [int(s) for s in args.sizes.split(",") if s], args)
    drawn = draw_plots(args.results, args.plots, args.peers)
    for path in drawn:
        print(f"plot: {path}")
    return drawn


if __name__ == "__main__":
    main()
