"""What `index --ray local` costs over a plain `index` run on the same machine and files.

    python benchmarks/ray_overhead.py                                  # tiny, 600 rendered photos
    python benchmarks/ray_overhead.py --images /tmp/peers/images/seed1234 \\
        --model ViT-B-32@/tmp/peers/ckpt/open_clip_ViT-B-32_randinit_seed0.pt
    python benchmarks/ray_overhead.py --cluster running ...            # `ray start` once, --ray auto

Each run is a whole `mmsearch index` command from a cold shell into a fresh home (start-up, model
loads, tagging included), plain and with Ray, alternating, `--repeat` times each. With
`--cluster local` (the default) each Ray run is `--ray local`: it starts and stops its own Ray
instance, which the timing includes. With `--cluster running` a Ray head is started once on this
machine (`ray start --head`, untimed, as a user's cluster is already up), one untimed `--ray
auto` run of `--warmup` files starts Ray Data's helper actors (a cluster's first dataset does;
they stay up), and each timed run is `--ray auto`, which connects to it. Reports the median
wall time of each and the overhead (ray / plain - 1), and checks that both homes hold the same
items. Appends to benchmarks/results/ray_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, append_results, stamp  # noqa: E402

OMP_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Set for every run and the Ray head (`--omp-wait default` empties it): OpenMP threads that
sleep at once instead of spinning a while after each parallel region."""


def _index(images: Path, home: Path, model: str, ray: str | None) -> tuple[float, dict]:
    shutil.rmtree(home, ignore_errors=True)
    command = [sys.executable, "-m", "mmsearch.cli", "index", str(images), "--home", str(home)]
    command += ["--model", model, "--json"] + (["--ray", ray] if ray else [])
    env = {**os.environ, **OMP_ENV}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    return wall, summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, help="a folder of pictures (default: render --photos)")
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_overhead.json")
    ap.add_argument(
        "--cluster", choices=("local", "running"), default="local",
        help="local: each run starts its own Ray (--ray local); running: one `ray start --head` first (--ray auto)",
    )  # fmt: skip
    ap.add_argument(
        "--omp-wait", choices=("passive", "default"), default="passive",
        help="passive: OMP_WAIT_POLICY=PASSIVE for every run (the figures before 2026-12-03); default: OpenMP's own",
    )  # fmt: skip
    ap.add_argument(
        "--warmup", type=int, default=32,
        help="with --cluster running: files of one untimed Ray run first (0: none, as before 2026-12-03)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.omp_wait == "default":
        OMP_ENV.clear()
        os.environ.pop("OMP_WAIT_POLICY", None)
    ray_flag = "local" if args.cluster == "local" else "auto"
    if args.cluster == "running":
        _ray_cli("start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false", "--disable-usage-stats")
    try:
        return _measure(args, ray_flag)
    finally:
        if args.cluster == "running":
            _ray_cli("stop", "--force")


def _warm_up(images: Path, work: Path, model: str, files: int) -> float:
    """One untimed `--ray auto` run of a few of the files: a cluster's first dataset also starts
    Ray Data's own helper actors, which stay up for the next runs (a user's running cluster
    has them already)."""
    few = work / "warmup-files"
    few.mkdir(parents=True, exist_ok=True)
    pictures = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))[:files]
    for picture in pictures:  # copies: links out of the folder are not followed by `index`
        shutil.copy2(picture, few / picture.name)
    wall, summary = _index(few, work / "warmup-home", model, ray="auto")
    if summary["new"] != len(pictures):
        raise SystemExit(
            f"the warm-up run indexed {summary['new']} of {len(pictures)} files; "
            f"skipped: {summary['skipped']}"
        )
    return wall


def _ray_cli(*words: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), *words], check=True, capture_output=True, env={**os.environ, **OMP_ENV})


def _measure(args: argparse.Namespace, ray_flag: str) -> dict:

    work = Path(tempfile.mkdtemp(prefix="mmsearch-ray-"))
    images = args.images
    if images is None:
        from mmsearch.synth.media import write_photo_folder

        images = write_photo_folder(work / "photos", args.photos, seed=31)
    warmup = None
    if args.cluster == "running" and args.warmup:
        warmup = _warm_up(images, work, args.model, args.warmup)
        print(f"warm-up {warmup:7.1f} s  (untimed: {args.warmup} files, the cluster's first dataset)")
    walls: dict[str, list[float]] = {"plain": [], "ray": []}
    summaries: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name in ("plain", "ray"):
            wall, summary = _index(images, work / name, args.model, ray=ray_flag if name == "ray" else None)
            walls[name].append(wall)
            summaries[name] = summary
            print(f"{name:6} {wall:7.1f} s  {summary['new']} files, {summary['items_added']} items")
    plain, ray = statistics.median(walls["plain"]), statistics.median(walls["ray"])
    same = all(summaries["plain"][k] == summaries["ray"][k] for k in ("new", "items_added"))
    result = stamp(
        {
            "model": args.model,
            "cluster": args.cluster,
            "omp_wait_policy": OMP_ENV.get("OMP_WAIT_POLICY", "default"),
            "warmup_files": args.warmup if warmup is not None else 0,
            "warmup_ray_wall_s": None if warmup is None else round(warmup, 2),
            "ray_flag": f"--ray {ray_flag}",
            "images": str(images),
            "files": summaries["plain"]["new"],
            "plain_wall_s": [round(w, 2) for w in walls["plain"]],
            "ray_wall_s": [round(w, 2) for w in walls["ray"]],
            "plain_median_s": round(plain, 2),
            "ray_median_s": round(ray, 2),
            "overhead": round(ray / plain - 1, 4),
            "same_items": same,
            "plain_stage_rates": summaries["plain"].get("stage_rates"),
        }
    )
    print(f"plain {plain:.1f} s, --ray {ray_flag} {ray:.1f} s: overhead {100 * (ray / plain - 1):+.1f}%")
    append_results(args.out, [result])
    print(f"appended to {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
